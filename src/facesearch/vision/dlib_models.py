"""dlib's public-domain models, shipped by face_recognition_models: HOG, MMOD, 5-point, ResNet.

dlib's 68-point predictor is never loaded: its training data forbids commercial use.
"""

from __future__ import annotations

import os

# One BLAS thread per process, set before dlib loads OpenBLAS: parallelism comes from worker
# processes, and OpenBLAS threads competing for busy cores slowed descriptors 4x here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import dlib  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from facesearch.types import Box, Detection  # noqa: E402
from facesearch.vision.base import AlignedFace, Detector, Embedder, Model  # noqa: E402
from facesearch.vision.registry import model_path  # noqa: E402

# dlib's files come from the face_recognition_models package: no model directory needed.
_PACKAGED = Path()

CHIP_SIZE = 150  # the ResNet descriptor's input size
CHIP_PADDING = 0.25  # dlib's default border around the aligned face


def _box(rect: "dlib.rectangle") -> Box:
    return Box(rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)


class HogDetector(Detector):
    """dlib's HOG + linear SVM frontal face detector: fast, finds faces of about 80 px and up
    per upsampling pass (each pass halves that)."""

    def _load(self) -> "dlib.fhog_object_detector":
        return dlib.get_frontal_face_detector()

    def detect(self, pixels: np.ndarray, upsample: int) -> list[Detection]:
        # HOG on luminance: a fifth faster than on RGB here, and it found as many LFW faces.
        grey = np.asarray(Image.fromarray(pixels).convert("L")) if pixels.ndim == 3 else pixels
        rects, scores, _ = self.model.run(grey, upsample, 0.0)
        return [Detection(_box(r), float(s)) for r, s in zip(rects, scores)]


class CnnDetector(Detector):
    """dlib's MMOD CNN detector: more poses and occlusions, about 10x slower than HOG."""

    def _load(self) -> "dlib.cnn_face_detection_model_v1":
        return dlib.cnn_face_detection_model_v1(str(model_path("dlib-mmod", _PACKAGED)))

    def detect(self, pixels: np.ndarray, upsample: int) -> list[Detection]:
        return [Detection(_box(d.rect), float(d.confidence)) for d in self.model(pixels, upsample)]


class HogThenCnnDetector(Detector):
    """HOG everywhere, the CNN only on images where HOG finds nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.hog = HogDetector()
        self.cnn = CnnDetector()

    def _load(self) -> None:
        return None

    def detect(self, pixels: np.ndarray, upsample: int) -> list[Detection]:
        return self.hog.detect(pixels, upsample) or self.cnn.detect(pixels, upsample)


class FivePointLandmarker(Model):
    """dlib's 5-point landmark predictor alone: eye corners and the base of the nose."""

    def _load(self) -> "dlib.shape_predictor":
        return dlib.shape_predictor(str(model_path("dlib-5-point", _PACKAGED)))

    def points(self, pixels: np.ndarray, box: Box) -> tuple[tuple[float, float], ...]:
        """Eye centres (image left first) and nose base in the box: landmarks for detectors
        that give none (the first three points of the face chip's template), and the eye
        line of every face (vision.quality's roll)."""
        shape = self.model(pixels, dlib.rectangle(box.left, box.top, box.right - 1, box.bottom - 1))
        p = [(float(q.x), float(q.y)) for q in shape.parts()]
        # Points 0-1 and 2-3 are the corners of one eye each, point 4 is under the nose.
        eyes = sorted([((p[0][0] + p[1][0]) / 2, (p[0][1] + p[1][1]) / 2),
                       ((p[2][0] + p[3][0]) / 2, (p[2][1] + p[3][1]) / 2)])
        return (eyes[0], eyes[1], p[4])


class DlibResNetEmbedder(Embedder):
    """dlib's ResNet face descriptor (128-d; raw descriptors of one person lie under about 0.6),
    on chips aligned with the 5-point landmark predictor."""

    name = "dlib-resnet"
    dimension = 128

    def _load(self) -> tuple["dlib.shape_predictor", "dlib.face_recognition_model_v1"]:
        return (
            dlib.shape_predictor(str(model_path("dlib-5-point", _PACKAGED))),
            dlib.face_recognition_model_v1(str(model_path("dlib-resnet", _PACKAGED))),
        )

    def align(self, pixels: np.ndarray, detection: Detection) -> AlignedFace:
        predictor, _ = self.model
        b = detection.box
        shape = predictor(pixels, dlib.rectangle(b.left, b.top, b.right - 1, b.bottom - 1))
        chip = dlib.get_face_chip(pixels, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        landmarks = [(p.x, p.y) for p in shape.parts()]
        return AlignedFace(chip=np.asarray(chip), landmarks=landmarks)

    def describe(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, self.dimension), dtype=np.float32)
        _, net = self.model
        vectors = net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32)
