"""eval lfw's descriptors come from the configured detector and embedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facesearch.config import Settings
from facesearch.evaluation.lfw import describe_all, list_images
from tests.conftest import LFW

PHOTOS = 40  # among LFW's first 40 photos by name, HOG misses at least one face


def test_lfw_descriptors_follow_the_configured_pipeline_and_fill_in_a_central_box(tmp_path: Path) -> None:
    paths = list_images(LFW)[0][:PHOTOS]
    cache = tmp_path / "descriptors.npz"
    hog = describe_all(Settings(home=tmp_path, workers=1, detector="hog", embedder="dlib-resnet"),
                       LFW, paths, cache, lambda line: None)
    assert str(hog["pipeline"]) == "hog + dlib-resnet"
    assert 0 < hog["found"].sum() < PHOTOS  # the rest described in a central box
    for variant in ("plain", "mirrored"):
        assert hog[variant].shape == (PHOTOS, 128)
        assert np.allclose(np.linalg.norm(hog[variant], axis=1), 1, atol=1e-5)
    # Another embedder on the same cache file describes again rather than reuse dlib's.
    sface = describe_all(Settings(home=tmp_path, workers=1, detector="hog", embedder="sface"),
                         LFW, paths, cache, lambda line: None)
    assert str(sface["pipeline"]) == "hog + sface"
    assert (sface["found"] == hog["found"]).all()
    assert not np.allclose(sface["plain"], hog["plain"], atol=0.1)
