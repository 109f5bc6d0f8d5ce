"""eval demographics on a small real subset: groups, pair counts, worst/best ratios, files,
and the record of processing's citation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from tests.conftest import LFW, OPERATOR
from tests.evaluation.conftest import FAIRFACE

FAIRFACE_PHOTOS = 60
LFW_PEOPLE = 40
PROBABILITY = 0.05  # ratios need 1 / 0.05 = 20 pairs a group: reachable with 60 photos


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, dict]:
    settings = Settings(home=tmp_path_factory.mktemp("data"), workers=1, detector="hog",
                        embedder="dlib-resnet")
    service = FaceSearchService(settings)
    try:
        before = service.record_of_processing(OPERATOR)
        report = service.evaluate_demographics(FAIRFACE, LFW, tmp_path_factory.mktemp("results"),
                                               lambda line: None, PROBABILITY, limit=FAIRFACE_PHOTOS)
        after = service.record_of_processing(OPERATOR)
    finally:
        service.close()
    return report, before, after


def test_every_fairface_group_has_its_impostor_pairs_and_rate(run: tuple[dict, dict, dict]) -> None:
    report = run[0]
    with open(FAIRFACE / "labels.csv", newline="") as file:
        rows = list(csv.DictReader(file))[:FAIRFACE_PHOTOS]
    for dimension in ("race", "gender", "age"):
        groups = report["fairface"][dimension]["groups"]
        assert set(groups) == {row[dimension] for row in rows}
        for name, group in groups.items():
            assert group["photos"] == sum(row[dimension] == name for row in rows)
            faces = group["photos"] - group["no_face"]
            assert group["pairs"] == faces * (faces - 1) // 2  # every pair of different photos
            if group["pairs"]:
                assert group["false_match_rate"] == group["false_matches"] / group["pairs"]


def test_worst_to_best_ratio_is_computed_from_the_groups_with_enough_pairs(
        run: tuple[dict, dict, dict]) -> None:
    report = run[0]
    compared = 0
    for dimension in ("race", "gender", "age"):
        result = report["fairface"][dimension]
        rates = {g: e["false_match_rate"] for g, e in result["groups"].items() if e["pairs"] >= 20}
        assert result["min_pairs"] == 20
        assert set(result["too_few_pairs"]) == set(result["groups"]) - set(rates)
        if len(rates) < 2:
            assert result["ratio"] is None
            continue
        compared += 1
        worst, best = max(rates.values()), min(rates.values())
        assert rates[result["worst"]] == worst and rates[result["best"]] == best
        floor = best or 1 / result["groups"][result["best"]]["pairs"]
        assert result["ratio"] == pytest.approx(worst / floor)
        assert result["best_floored_at_one_error"] == (best == 0)
    assert compared >= 2  # gender and race groups of 60 photos reach 20 pairs


def test_lfw_gender_rates_count_genuine_and_impostor_pairs_within_each_gender(
        run: tuple[dict, dict, dict]) -> None:
    lfw = run[0]["lfw_gender"]
    assert set(lfw["groups"]) == {"female", "male"}
    for group in lfw["groups"].values():
        assert group["people"] >= 1 and group["photos"] >= group["people"]
        assert 0 <= group["false_match_rate"] <= 1 and group["impostor_pairs"] > 0
    genders = {g: e["false_match_rate"] for g, e in lfw["groups"].items()}
    if lfw["false_match_rate"]["ratio"] is not None:
        assert lfw["false_match_rate"]["worst"] == max(genders, key=genders.get)


def test_the_report_and_plot_are_written_and_the_record_of_processing_cites_them(
        run: tuple[dict, dict, dict]) -> None:
    report, before, after = run
    json_path, png_path = (Path(p) for p in report["written"])
    assert json.loads(json_path.read_text())["headline"] == report["headline"]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(before["demographic_evaluation"], str)  # none recorded yet
    cited = after["demographic_evaluation"]
    assert cited["report"] == str(json_path.resolve()) and cited["embedder"] == "dlib-resnet"
    assert cited["date"] == report["date"] and cited["subset"] is True
    if report["headline"]["ratio"] is not None:
        assert str(report["headline"]["ratio"]) in cited["headline"]
