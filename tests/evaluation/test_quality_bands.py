"""Accuracy by probe quality band (evaluation.quality): band labels and per-band rank figures."""

from __future__ import annotations

import numpy as np

from facesearch.config import Settings
from facesearch.evaluation.quality import BLURS, SCALES, band_of, by_quality, run_quality, weakest_band
from facesearch.types import FaceQuality


def quality(pixels: int, yaw: float | None = None) -> FaceQuality:
    return FaceQuality(face_pixels=pixels, sharpness=0.3, confidence=0.93, yaw=yaw, pitch=None, roll=0.0)


def test_bands_are_labelled_by_their_edges_and_pose_by_its_size() -> None:
    assert band_of("face_pixels", 23) == "0-24" and band_of("face_pixels", 24) == "24-32"
    assert band_of("face_pixels", 500) == "80+"
    assert band_of("yaw", -50) == band_of("yaw", 50) == "45-60"


def test_rank_figures_are_per_band_and_faceless_probes_are_in_none() -> None:
    qualities = [quality(20), quality(20), quality(100, yaw=-40), quality(100, yaw=5), None]
    ranks = np.array([1, 30, 1, 5, 10**9])
    report = by_quality(qualities, ranks)
    assert report["face_pixels"] == [
        {"band": "0-24", "probes": 2, "rank1": 0.5, "rank10": 0.5},
        {"band": "80+", "probes": 2, "rank1": 0.5, "rank10": 1.0}]
    # Probes without a yaw (HOG's faces) are in no yaw band.
    assert [(r["band"], r["probes"]) for r in report["yaw"]] == [("0-15", 1), ("30-45", 1)]
    assert report["pitch"] == []


def test_a_probe_is_bounded_by_its_worst_measured_band() -> None:
    figures = {"by_quality": {
        "face_pixels": [{"band": "0-24", "probes": 50, "rank1": 0.6, "rank10": 0.8},
                        {"band": "80+", "probes": 50, "rank1": 0.97, "rank10": 0.99}],
        "yaw": [{"band": "30-45", "probes": 50, "rank1": 0.9, "rank10": 0.95},
                {"band": "45-60", "probes": 3, "rank1": 0.0, "rank10": 0.0}]}}
    assert weakest_band(figures, quality(20, yaw=40)) == ("face_pixels", figures["by_quality"]["face_pixels"][0])
    assert weakest_band(figures, quality(100, yaw=40))[0] == "yaw"
    # A band of too few probes is not quoted.
    assert weakest_band(figures, quality(100, yaw=50))[0] == "face_pixels"


def test_eval_quality_bands_the_probes_and_their_smaller_copies(people_dir, tmp_path) -> None:
    """Real YuNet + SFace on 8 LFW probe people: the degraded copies fill the small bands."""
    folder, chosen = people_dir
    settings = Settings(home=tmp_path / "data", workers=1)
    report = run_quality(settings, folder, lambda line: None, copies_every=4)
    probed = sum(n >= 3 for _, n in chosen)
    copies = len(SCALES) + len(BLURS)
    assert report["original_probes"] == probed
    assert report["degraded_copies"] == copies * len(range(0, probed, 4))
    sizes = {row["band"]: row["probes"] for row in report["by_quality"]["face_pixels"]}
    # The originals' faces are about 93 px; the 0.2 and 0.27 copies' under 32 px.
    assert sizes["80+"] >= probed - report["no_face"]
    assert sizes.get("0-24", 0) + sizes.get("24-32", 0) >= 2
    assert all(0 <= row["rank1"] <= row["rank10"] <= 1
               for rows in report["by_quality"].values() for row in rows)
