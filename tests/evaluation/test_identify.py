"""eval identify: the fixed split, rank-1 against a brute-force search, and real distractors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facesearch.calibration import cut_off, load_calibration
from facesearch.config import Settings
from facesearch.imaging import decode_for_analysis
from facesearch.service import FaceSearchService
from facesearch.vision import FaceAnalyzer
from tests.evaluation.conftest import PIPELINE

FACESEARCH = str(Path(sys.executable).parent / "facesearch")


def brute_force(folder: Path, settings: Settings) -> dict:
    """The split rule and a search over every face, recomputed photo by photo."""
    analyzer = FaceAnalyzer(settings)

    def faces(photo: Path, mirror: bool) -> list:
        return analyzer.analyse([decode_for_analysis(photo.read_bytes(), settings).pixels], mirror)[0]

    gallery, probes = [], []
    no_face = {"probes": 0, "gallery": 0}
    for person in sorted(p.name for p in folder.iterdir()):
        photos = sorted((folder / person).glob("*.jpg"))
        if len(photos) >= 3:
            found = faces(photos[0], settings.mirror_probe)
            no_face["probes"] += not found
            probes.append((person, found[0].embedding if found else None))
            photos = photos[1:]
        for photo in photos:
            found = faces(photo, settings.mirror_gallery)
            no_face["gallery"] += not found
            gallery.extend((person, f.embedding) for f in found)
    vectors = np.stack([v for _, v in gallery])
    hits = [vector is not None and gallery[int(np.argmin(np.linalg.norm(vectors - vector, axis=1)))][0] == person
            for person, vector in probes]
    return {"probes": len(probes), "no_face": no_face, "rank1": float(np.mean(hits)),
            "gallery_faces": len(gallery)}


def test_eval_identify_follows_the_split_and_agrees_with_a_brute_force_search(
        people_dir: tuple[Path, list], tmp_path: Path) -> None:
    folder, chosen = people_dir
    env = {**os.environ, "FACESEARCH_DETECTOR": PIPELINE["detector"],
           "FACESEARCH_EMBEDDER": PIPELINE["embedder"], "FACESEARCH_WORKERS": "1"}
    done = subprocess.run([FACESEARCH, "--data", str(tmp_path / "data"), "eval", "identify", str(folder),
                           "--json"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    expected = brute_force(folder, Settings(home=tmp_path / "data", workers=1, **PIPELINE))
    single = report["single"]
    # Each person with 3+ photos gives one probe; the rest of the photos are the gallery.
    assert single["probes"] == sum(n >= 3 for _, n in chosen) == expected["probes"] == 8
    assert report["gallery_photos"] == sum(chosen_n for _, chosen_n in chosen) - 8
    assert report["distractor_people"] == 4
    assert single["no_face"] == expected["no_face"]
    assert report["gallery_faces"] == expected["gallery_faces"]
    assert 0.0 <= single["rank1"] <= single["rank10"] <= 1.0
    assert single["rank1"] == pytest.approx(expected["rank1"])
    assert report["images_per_second"] > 0 and report["images_per_second_per_core"] > 0


def test_people_limit_takes_the_first_people_by_name(people_dir: tuple[Path, list],
                                                     eval_settings: Settings) -> None:
    folder, chosen = people_dir
    service = FaceSearchService(eval_settings)
    try:
        report = service.evaluate_identify(folder, lambda line: None, limit_people=5)
    finally:
        service.close()
    first = sorted(chosen)[:5]
    assert report["people"] == 5 and report["single"]["probes"] == sum(n >= 3 for _, n in first)


def test_real_distractors_only_lower_rank1_and_expected_false_matches_follow_the_calibration(
        people_dir: tuple[Path, list], fairface_dir: Path, eval_settings: Settings) -> None:
    folder, _ = people_dir
    service = FaceSearchService(eval_settings)
    try:
        report = service.evaluate_identify(folder, lambda line: None, distractors=fairface_dir)
    finally:
        service.close()
    added = report["distractors"]
    curve = added["curve"]
    assert added["photos"] == 30 and added["no_face"] < 30
    assert curve[0]["distractors"] == 0 and curve[0]["rank1"] == report["single"]["rank1"]
    assert curve[-1]["distractors"] == added["faces"] > 0
    calibration = load_calibration(PIPELINE["embedder"])
    for point in curve:
        assert point["gallery_faces"] == report["gallery_faces"] + point["distractors"]
        cutoff = cut_off(calibration, eval_settings.search_false_matches, point["gallery_faces"],
                         eval_settings.false_match_ceiling)[0]
        assert point["cutoff"] == pytest.approx(cutoff, abs=1e-4)
        assert point["expected_false_matches"] == pytest.approx(
            calibration.false_match_probability(cutoff) * point["gallery_faces"])
        assert point["measured_false_matches"] >= 0
    # More strangers in the gallery can push a person's own face down, never up.
    assert all(a["rank1"] >= b["rank1"] for a, b in zip(curve, curve[1:]))
