"""Calibration: distances to false-match probabilities and back, cut-offs set by expected false
matches at a gallery's size, and the bands."""

from __future__ import annotations

import numpy as np
import pytest

from facesearch.calibration import (
    Calibration,
    band,
    calibration_path,
    cut_off,
    load_calibration,
)
from facesearch.errors import FacesearchError


@pytest.fixture(scope="module")
def dlib() -> Calibration:
    return load_calibration("dlib-resnet")


@pytest.mark.parametrize("probability", [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1])
def test_distance_at_is_the_largest_grid_distance_at_or_under_the_probability(dlib, probability):
    distance = dlib.distance_at(probability)
    assert dlib.false_match_probability(distance) <= probability
    step = float(dlib.distances[1] - dlib.distances[0])
    assert dlib.false_match_probability(distance + step) > probability


def test_distance_at_grows_with_the_probability_allowed(dlib):
    distances = [dlib.distance_at(p) for p in (1e-6, 1e-4, 1e-2)]
    assert distances == sorted(distances) and len(set(distances)) == 3


def test_a_probability_rarer_than_the_calibration_measured_lets_nothing_pass(dlib):
    assert dlib.distance_at(0.5 / dlib.pairs) == 0.0


def test_distance_at_on_a_hand_made_grid():
    calibration = Calibration(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.0, 0.001, 0.01, 0.1]),
                              pairs=10_000)
    assert calibration.distance_at(0.01) == 0.3
    assert calibration.distance_at(0.009) == 0.2
    assert calibration.distance_at(0.0001) == 0.1  # cdf 0 there: floored at 1/pairs = 1e-4
    assert calibration.distance_at(1.0) == 0.4


def test_the_cut_off_tightens_as_the_gallery_grows(dlib):
    small, _ = cut_off(dlib, 1.0, 1_000, 0.01)
    large, probability = cut_off(dlib, 1.0, 1_000_000, 0.01)
    assert large < small
    assert probability == pytest.approx(1e-6)
    # About one stranger expected inside it among a million faces, not the 26,000 of 0.45.
    assert dlib.false_match_probability(large) * 1_000_000 <= 1.0
    assert dlib.false_match_probability(0.45) * 1_000_000 > 20_000


def test_a_tiny_gallery_gets_no_looser_cut_off_than_the_ceiling(dlib):
    distance, probability = cut_off(dlib, 1.0, 3, 0.01)
    assert probability == 0.01
    assert distance == dlib.distance_at(0.01) < 0.45
    assert cut_off(dlib, 1.0, 0, 0.01) == (distance, probability)  # an empty gallery too
    assert cut_off(dlib, 10.0, 3, 1.0)[0] == 2.0  # with a ceiling of 1, every distance can pass


def test_a_smaller_target_gives_a_stricter_cut_off(dlib):
    assert cut_off(dlib, 0.01, 10_000, 0.01)[0] < cut_off(dlib, 1.0, 10_000, 0.01)[0]


@pytest.mark.parametrize("expected,name", [
    (0.0, "strong"), (0.0099, "strong"), (0.01, "moderate"), (0.5, "moderate"),
    (0.999, "moderate"), (1.0, "weak"), (26_000.0, "weak"),
])
def test_bands_by_expected_false_matches(expected, name):
    assert band(expected) == name


def test_an_embedder_without_a_calibration_is_refused_by_name():
    with pytest.raises(FacesearchError) as caught:
        load_calibration("no-such-embedder")
    assert "no-such-embedder" in caught.value.message
    assert "--write-calibration" in caught.value.message


@pytest.mark.parametrize("name", ["../calibration", "a/b", "", "/etc/passwd", ".hidden"])
def test_an_embedder_name_cannot_reach_outside_the_calibration_folder(name):
    with pytest.raises(FacesearchError):
        calibration_path(name)


def test_the_calibration_ships_in_its_per_embedder_folder():
    path = calibration_path("dlib-resnet")
    assert path.parent.name == "calibration" and path.is_file()
