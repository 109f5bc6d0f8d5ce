"""Face analysis: detect on a downscaled copy, align on full resolution, describe in batches."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from facesearch.config import Settings
from facesearch.errors import InvalidRequest
from facesearch.imaging import downscale, encode_jpeg
from facesearch.types import Box, Detection, Face
from facesearch.vision.base import Detector, Embedder
from facesearch.vision.chips import chip_detection, face_chip
from facesearch.vision.quality import face_quality

DETECTORS = ("yunet", "hog", "cnn", "hog+cnn")
EMBEDDERS = ("sface", "dlib-resnet", "fused")
# Weights of dlib-resnet and sface in the fused descriptor (squared distances add up with
# them): chosen on LFW View 2 by bench/models.sh.
FUSED_WEIGHTS = (0.5, 0.5)


def make_detector(name: str, settings: Settings | None = None) -> Detector:
    """The detector called name; unknown names fail loudly rather than fall back."""
    if name == "yunet":
        from facesearch.vision.onnx_models import YuNetDetector, YuNetOrtDetector

        settings = settings or Settings()
        if settings.device == "cuda":  # OpenCV's pip wheel has no CUDA; ONNX Runtime's has
            return YuNetOrtDetector(settings.model_dir, settings.device)
        return YuNetDetector(settings.model_dir)
    from facesearch.vision import dlib_models

    factories = {
        "hog": dlib_models.HogDetector,
        "cnn": dlib_models.CnnDetector,
        "hog+cnn": dlib_models.HogThenCnnDetector,
    }
    if name not in factories:
        raise InvalidRequest(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    return factories[name]()


@lru_cache(maxsize=64)
def embedder_name(setting: str) -> str:
    """The name an embedder setting's descriptors are recorded and calibrated under: a
    built-in name, or a manifest's own "name" (which must change when its model does)."""
    if not setting.endswith(".json"):
        return setting
    try:
        return str(json.loads(Path(setting).read_text())["name"])
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidRequest(f"cannot read the model manifest {setting}: {exc}") from None


def make_embedder(name: str, settings: Settings | None = None) -> Embedder:
    """The embedder called name, or the one a manifest file at that path describes."""
    settings = settings or Settings()
    from facesearch.vision import onnx_models

    if name == "dlib-resnet":
        from facesearch.vision.dlib_models import DlibResNetEmbedder

        return DlibResNetEmbedder()
    if name == "sface":
        return onnx_models.OnnxEmbedder(onnx_models.builtin_manifest("sface", settings.model_dir),
                                        settings.device)
    if name == "fused":
        parts = [make_embedder("dlib-resnet", settings), make_embedder("sface", settings)]
        return onnx_models.FusedEmbedder(parts, list(FUSED_WEIGHTS))
    if name.endswith(".json"):
        manifest = onnx_models.Manifest.from_file(Path(name), settings.model_dir)
        if manifest.name in EMBEDDERS:
            raise InvalidRequest(f"a manifest may not take the built-in name {manifest.name!r}")
        return onnx_models.OnnxEmbedder(manifest, settings.device)
    raise InvalidRequest(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)} "
                         "or give the path of a model manifest (.json)")


class FaceAnalyzer:
    """Turns decoded images into Faces with the configured detector and embedder."""

    def __init__(self, settings: Settings, detector: Detector | None = None,
                 embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.detector = detector or make_detector(settings.detector, settings)
        self.embedder = embedder or make_embedder(settings.embedder, settings)
        self._landmarker = None  # dlib's 5-point predictor: landmarks where a detector has none, eye lines

    def detect(self, pixels: np.ndarray) -> list[Detection]:
        """Faces of at least min_face_size, in full-resolution coordinates, largest first.

        The detector sees a copy no larger than detect_max_side: large photos are
        downscaled, small ones upsampled (up to `upsample` doublings) while they fit."""
        small, factor = downscale(pixels, self.settings.detect_max_side)
        found = self.detector.detect(small, self.upsample_passes(max(small.shape[:2])))
        height, width = pixels.shape[:2]
        detections = []
        for d in found:
            box = d.box.scaled(factor) if factor != 1.0 else d.box
            if box.width < self.settings.min_face_size:
                continue
            # Clip to the image: detectors may report boxes that overhang the border.
            box = Box(max(0, box.left), max(0, box.top), min(width, box.right),
                      min(height, box.bottom))
            points = d.landmarks and tuple((x * factor, y * factor) for x, y in d.landmarks)
            if box.width > 0 and box.height > 0:
                detections.append(Detection(box, d.score, points))
        return sorted(detections, key=lambda d: -d.box.width * d.box.height)

    def upsample_passes(self, longest_side: int) -> int:
        """Doublings for an image of this size: up to `upsample`, while within detect_max_side."""
        passes = 0
        limit = self.settings.detect_max_side
        while passes < self.settings.upsample and longest_side * 2 ** (passes + 1) <= limit:
            passes += 1
        return passes

    def analyse(self, images: Sequence[np.ndarray], mirror: bool) -> list[list[Face]]:
        """Every face of every image; descriptors of all their chips computed as one batch.

        mirror: average each chip's descriptor with its mirror image's (twice the time)."""
        per_image = [(pixels, self.detect(pixels)) for pixels in images]
        return self.describe(per_image, mirror)

    def describe(self, per_image: Sequence[tuple[np.ndarray, list[Detection]]],
                 mirror: bool) -> list[list[Face]]:
        """Faces of detections, described as one batch; each keeps its face chip
        (vision.chips) as its crop."""
        results: list[list[Face]] = []
        aligned = []
        for pixels, detections in per_image:
            faces = []
            for d in detections:
                d = self._with_landmarks(pixels, d)
                chip, geometry = face_chip(pixels, d)
                aligned.append(self.embedder.align(pixels, d).chip)
                # The eye line from dlib's predictor: YuNet's eye landmarks barely follow a
                # face turned in the image's plane (a photo turned 20° moved them 2° to 13°).
                eyes = self.landmarker.points(pixels, d.box)[:2]
                faces.append(Face(box=d.box, score=d.score, landmarks=list(d.landmarks),
                                  quality=face_quality(d.box, d.score, d.landmarks, eyes, chip),
                                  embedding=np.zeros(0, np.float32),
                                  chip_jpeg=encode_jpeg(chip), chip_geometry=geometry,
                                  embedder=self.embedder.name))
            results.append(faces)
        vectors = self._descriptors(aligned, mirror)
        for face, vector in zip((f for faces in results for f in faces), vectors):
            face.embedding = vector
        return results

    def describe_chips(self, chips: Sequence[tuple[np.ndarray, dict | None]],
                       mirror: bool) -> np.ndarray:
        """Descriptors of stored face chips (re-embedding), aligned from their geometry. A
        chip kept before geometry was recorded (dlib's aligned chip, the face filling its
        middle) is detected again, or taken as that middle when the detector finds nothing."""
        aligned = []
        for chip, geometry in chips:
            if geometry is not None:
                detection = chip_detection(geometry)
            else:
                found = sorted(self.detector.detect(chip, 0), key=lambda d: -d.box.width)
                side = chip.shape[0]
                detection = self._with_landmarks(chip, found[0] if found else Detection(
                    Box(side // 6, side // 6, side - side // 6, side - side // 6), 0.0))
            aligned.append(self.embedder.align(chip, detection).chip)
        return self._descriptors(aligned, mirror)

    def _with_landmarks(self, pixels: np.ndarray, detection: Detection) -> Detection:
        """The detection with landmarks: its own, or eyes and nose from dlib's predictor."""
        if detection.landmarks is not None:
            return detection
        return Detection(detection.box, detection.score, self.landmarker.points(pixels, detection.box))

    @property
    def landmarker(self):  # noqa: ANN201 - dlib_models.FivePointLandmarker, imported lazily
        if self._landmarker is None:
            from facesearch.vision.dlib_models import FivePointLandmarker

            self._landmarker = FivePointLandmarker()
        return self._landmarker

    def _descriptors(self, chips: list[np.ndarray], mirror: bool) -> np.ndarray:
        batch = max(1, self.settings.embed_batch)
        parts = []
        for start in range(0, len(chips), batch):
            group = chips[start:start + batch]
            if mirror:
                both = self.embedder.describe(group + [self.embedder.flip(c) for c in group])
                parts.append((both[: len(group)] + both[len(group):]) / 2)
            else:
                parts.append(self.embedder.describe(group))
        if not parts:
            return np.zeros((0, self.embedder.dimension), dtype=np.float32)
        return unit_length(np.concatenate(parts))


def unit_length(vectors: np.ndarray) -> np.ndarray:
    """Scale descriptors to length 1. dlib's have lengths of about 1.42 +- 0.07; dropping that
    spread measured +0.1 point of LFW accuracy. Distances then lie in [0, 2]."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)

