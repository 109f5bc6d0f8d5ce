"""eval cluster: the measures on hand-made labels (computed by hand), the cannot-link constraint
on real LFW photos with two or three faces, and a quick run of the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facesearch.calibration import load_calibration
from facesearch.clustering import cluster, max_distance_for
from facesearch.config import Settings
from facesearch.evaluation.cluster import (
    bcubed,
    incremental,
    measure,
    merged_images,
    pairwise,
    singletons_apart,
    true_identities,
)
from facesearch.evaluation.pipeline import PhotoJob, analyse_photos
from tests.conftest import LFW, lfw_photos

FACESEARCH = str(Path(sys.executable).parent / "facesearch")
# Photos in which YuNet finds two or three faces, and other photos of the same people.
CROWDED = ["Ali_Naimi", "Al_Gore"]


def test_bcubed_and_pairwise_of_a_known_clustering() -> None:
    # Faces a..e: clusters {a, b, c, d}, {e}; people {a, b}, {c, d}, {e}.
    labels = np.array([0, 0, 0, 0, 1])
    truth = np.array([0, 0, 1, 1, 2])
    # BCubed precision: a..d each share their cluster of 4 with 2 of their person: 2/4; e: 1/1.
    # Recall: every face's person lies wholly in its cluster.
    assert bcubed(labels, truth)[0] == pytest.approx((4 * 0.5 + 1) / 5)
    assert bcubed(labels, truth)[1] == pytest.approx(1.0)
    # Pairwise: 6 pairs put together, 2 of them one person (a-b, c-d); both true pairs found.
    assert pairwise(labels, truth) == pytest.approx((2 / 6, 1.0))
    # The other way round: everyone alone.
    assert bcubed(np.arange(5), truth) == pytest.approx((1.0, (0.5 * 4 + 1) / 5))
    assert pairwise(np.arange(5), truth) == pytest.approx((1.0, 0.0))


def test_unassigned_faces_are_identities_of_their_own_and_merges_are_counted_per_photo() -> None:
    assert list(singletons_apart(np.array([-1, 0, -1, 0]))) == [1, 0, 2, 0]
    assert bcubed(singletons_apart(np.array([-1, -1])), np.array([7, 7])) == pytest.approx((1.0, 0.5))
    photos = np.array([5, 5, 6, 7, 7])
    assert merged_images(np.array([0, 0, 0, -1, -1]), photos) == 1  # photo 5
    assert merged_images(np.array([0, 1, 0, 2, 2]), photos) == 1  # photo 7 only
    assert merged_images(np.array([0, 1, 0, -1, -1]), photos) == 0


def test_only_the_central_face_is_the_named_person() -> None:
    truth = true_identities(np.array([0, 0, 1]), np.array([True, False, True]), np.array([3, 4]))
    assert truth[0] == 3 and truth[2] == 4 and truth[1] not in (3, 4)


def test_no_two_faces_of_one_real_photo_are_ever_one_identity(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "data", workers=1)
    paths = [p for name in CROWDED for p in lfw_photos(name)]
    described = analyse_photos([PhotoJob(str(p), (False,)) for p in paths], settings)
    vectors = np.concatenate([d.vectors[False] for d in described if d.found])
    photos = np.concatenate([np.full(d.found, n) for n, d in enumerate(described) if d.found])
    assert np.bincount(photos).max() >= 3  # photos with two and three faces are among them
    # Every face within reach of every other: without the constraint, one identity of all.
    labels = cluster(photos, vectors, max_distance=2.01, min_faces=1)
    assert merged_images(labels, photos) == 0
    assert (labels >= 0).all() and len(set(labels)) >= np.bincount(photos).max()
    # At the default distance too, and the two people are told apart.
    central = np.concatenate([np.arange(d.found) == np.argmin(d.offsets) for d in described if d.found])
    people = np.array([CROWDED.index(p.parent.name) for p in paths])
    distance = max_distance_for(load_calibration("sface"), settings.identity_false_match_probability)
    result = measure(cluster(photos, vectors, distance, settings.identity_min_faces),
                     true_identities(photos, central, people), photos)
    assert result["images_with_merged_faces"] == 0
    assert result["bcubed_precision"] >= 0.9 and result["pairwise_recall"] >= 0.5
    # Ingest's assignment, photo batch by photo batch, keeps them apart too, even with every
    # face within reach.
    for batch in (1, 8):
        assigned = incremental(photos, vectors, 2.01, 1, batch_photos=batch)
        assert merged_images(assigned, photos) == 0 and (assigned >= 0).all()


def test_eval_cluster_prints_the_measures_and_the_curve(tmp_path: Path) -> None:
    run = subprocess.run(
        [FACESEARCH, "--data", str(tmp_path / "data"), "eval", "cluster", "--lfw-dir", str(LFW),
         "--output", str(tmp_path / "results"), "--limit-people", "12", "--json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "FACESEARCH_WORKERS": "1"})
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    for key in ("bcubed_precision", "bcubed_recall", "pairwise_precision", "pairwise_recall",
                "identities", "images_with_merged_faces"):
        assert key in report and all(key in row for row in report["curve"])
    assert report["images_with_merged_faces"] == 0
    assert report["people"] == 12
    assert report["default"]["false_match_probability"] == Settings().identity_false_match_probability
    assert [row["min_faces"] for row in report["by_min_faces"]] == [1, 2, 3, 4]
    assert report["incremental"]["images_with_merged_faces"] == 0
    assert all("bcubed_precision" in row["named_faces"] for row in report["curve"])
    probabilities = [row["false_match_probability"] for row in report["curve"]]
    assert probabilities == sorted(probabilities) and len(probabilities) >= 5
    # A looser distance never groups fewer faces together.
    recalls = [row["bcubed_recall"] for row in report["curve"]]
    assert recalls == sorted(recalls)
