"""How large an image the detector sees: downscaled when large, upsampled while it fits."""

from __future__ import annotations

import numpy as np

from facesearch.config import Settings
from facesearch.types import Box, Detection
from facesearch.vision import FaceAnalyzer


class RecordingDetector:
    """Finds one face in the middle of whatever it is shown, and records what that was."""

    def __init__(self) -> None:
        self.seen: list[tuple[tuple[int, int], int]] = []

    def detect(self, pixels: np.ndarray, upsample: int) -> list[Detection]:
        height, width = pixels.shape[:2]
        self.seen.append(((width, height), upsample))
        return [Detection(Box(width // 4, height // 4, 3 * width // 4, 3 * height // 4), 1.0)]


def analyzer(**settings) -> tuple[FaceAnalyzer, RecordingDetector]:
    detector = RecordingDetector()
    return FaceAnalyzer(Settings(**settings), detector=detector, embedder=object()), detector


def test_small_images_are_upsampled_only_while_they_fit_the_detection_size() -> None:
    fa, detector = analyzer(upsample=2, detect_max_side=1600)
    for side in (250, 300, 500, 1000):
        fa.detect(np.zeros((side, side, 3), np.uint8))
    assert [passes for _, passes in detector.seen] == [2, 2, 1, 0]


def test_large_images_are_detected_downscaled_and_boxed_in_full_resolution() -> None:
    fa, detector = analyzer(detect_max_side=1000)
    found = fa.detect(np.zeros((3000, 4000, 3), np.uint8))
    assert detector.seen == [((1000, 750), 0)]
    assert found[0].box == Box(1000, 748, 3000, 2248)


def test_faces_under_the_minimum_size_are_dropped_after_rescaling() -> None:
    # The detector's box is 500 px wide at 1/4 scale: 2000 px in the original.
    fa, _ = analyzer(detect_max_side=1000, min_face_size=2100)
    assert fa.detect(np.zeros((3000, 4000, 3), np.uint8)) == []
    fa, _ = analyzer(detect_max_side=1000, min_face_size=1900)
    assert len(fa.detect(np.zeros((3000, 4000, 3), np.uint8))) == 1
