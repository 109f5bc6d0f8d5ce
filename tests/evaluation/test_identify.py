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
from facesearch.evaluation.identify import split_folder
from facesearch.fusion import RULE
from facesearch.imaging import decode_for_analysis
from facesearch.service import FaceSearchService
from facesearch.vision import FaceAnalyzer
from tests.evaluation.conftest import PIPELINE

FACESEARCH = str(Path(sys.executable).parent / "facesearch")


def brute_force(folder: Path, settings: Settings) -> dict:
    """The split rules and a search over every face, recomputed photo by photo: "single"
    (first photo probes) and "multi" (the first two of three photos, the first three of
    more, as one probe: the mean of their largest faces' distances to a gallery face)."""
    analyzer = FaceAnalyzer(settings)

    def faces(photo: Path, mirror: bool) -> list:
        return analyzer.analyse([decode_for_analysis(photo.read_bytes(), settings).pixels], mirror)[0]

    def rank1(probes: list, gallery: list) -> float:
        """probes: (person, their photos' descriptors, or None)."""
        vectors = np.stack([v for _, v in gallery])
        return float(np.mean([
            photos is not None and gallery[int(np.argmin(np.mean(
                [np.linalg.norm(vectors - photo, axis=1) for photo in photos], axis=0)))][0] == person
            for person, photos in probes]))

    gallery, probes, multi_gallery, multi_probes = [], [], [], []
    no_face = {"probes": 0, "gallery": 0}
    for person in sorted(p.name for p in folder.iterdir()):
        photos = sorted((folder / person).glob("*.jpg"))
        used = 0
        if len(photos) >= 3:
            used = 2 if len(photos) == 3 else 3
            found = [faces(photo, settings.mirror_probe) for photo in photos[:used]]
            no_face["probes"] += not found[0]
            probes.append((person, [found[0][0].embedding] if found[0] else None))
            multi_probes.append((person, [f[0].embedding for f in found if f] or None))
        for number, photo in enumerate(photos):
            found = faces(photo, settings.mirror_gallery)
            if number >= (1 if used else 0):
                no_face["gallery"] += not found
                gallery.extend((person, f.embedding) for f in found)
            if number >= used:
                multi_gallery.extend((person, f.embedding) for f in found)
    return {"probes": len(probes), "no_face": no_face, "rank1": rank1(probes, gallery),
            "gallery_faces": len(gallery), "multi_rank1": rank1(multi_probes, multi_gallery),
            "multi_gallery_faces": len(multi_gallery)}


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
    multi = report["multi"]
    # The same people probe, with two photos (three photos) or three (four or more).
    assert multi["probes"] == 8 and multi["rule"] == RULE
    assert multi["probe_photos"] == {"2": sum(n == 3 for _, n in chosen),
                                     "3": sum(n >= 4 for _, n in chosen)}
    assert multi["gallery_photos"] == sum(n - (2 if n == 3 else 3 if n > 3 else 0) for _, n in chosen)
    assert multi["gallery_faces"] == expected["multi_gallery_faces"]
    assert multi["rank1"] == pytest.approx(expected["multi_rank1"])
    assert set(multi["rules"]) == {"best", "mean", "template"}
    assert multi["rank1"] == multi["rules"][RULE]["rank1"]
    assert multi["rank1_margin"] == pytest.approx(multi["rank1"] - multi["single_same_gallery"]["rank1"])
    assert set(multi["no_face"]) == {"probes", "probe_photos", "gallery"}


def test_the_multi_photo_split_keeps_a_photo_of_each_probe_person_in_the_gallery(tmp_path: Path) -> None:
    for person, photos in {"ann": 3, "bob": 4, "cid": 6, "dee": 2, "eve": 1}.items():
        (tmp_path / person).mkdir()
        for n in range(photos):
            (tmp_path / person / f"{person}_{n:04d}.jpg").write_bytes(b"")
    split = split_folder(tmp_path)
    probes = {split.people[person]: [Path(p).name for p in photos] for photos, person in split.multi_probes}
    assert probes == {"ann": ["ann_0000.jpg", "ann_0001.jpg"],
                      "bob": ["bob_0000.jpg", "bob_0001.jpg", "bob_0002.jpg"],
                      "cid": ["cid_0000.jpg", "cid_0001.jpg", "cid_0002.jpg"]}
    gallery = sorted(Path(p).name for p, _ in split.multi_gallery)
    assert gallery == ["ann_0002.jpg", "bob_0003.jpg", "cid_0003.jpg", "cid_0004.jpg", "cid_0005.jpg",
                       "dee_0000.jpg", "dee_0001.jpg", "eve_0000.jpg"]
    # The single-photo split of the same folder is unchanged: one probe photo each.
    assert [Path(p).name for p, _ in split.probes] == ["ann_0000.jpg", "bob_0000.jpg", "cid_0000.jpg"]


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
