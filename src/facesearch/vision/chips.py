"""The face chip kept for every face: the face warped by a similarity transform so that its
landmarks fall on a fixed template, 256 px a side with a wide margin. It is the face crop
shown to reviewers and what `facesearch reembed` describes again with another embedder, so
that changing models never needs the original photo: any embedder's own alignment (a 112 px
ArcFace-template chip, dlib's 150 px chip) fits inside it.
"""

from __future__ import annotations

import numpy as np

from facesearch.types import Box, Detection

# ArcFace's five-point template for a 112 px chip: eye centres (image left first), nose tip,
# mouth corners. SFace and most ONNX face models are trained on it.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
FACE_CHIP_SIZE = 256
# The ArcFace template 1.25x larger, centred: eyes about 44 px apart, a 58 px margin around
# the 140 px template square, wider than dlib's 0.25 padding needs.
FACE_CHIP_TEMPLATE = ARCFACE_112 * 1.25 + (FACE_CHIP_SIZE - 112 * 1.25) / 2


def similarity(points: np.ndarray, template: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity transform (rotation, uniform scale, shift) taking
    points onto template (Umeyama's method); points may be the first 3 or all 5."""
    src = np.asarray(points, dtype=np.float64)
    dst = np.asarray(template, dtype=np.float64)[: len(src)]
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s, d = src - src_mean, dst - dst_mean
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sigma) @ sign) / s.var(0).sum()
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def warp(pixels: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.warpAffine(pixels, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def face_chip(pixels: np.ndarray, detection: Detection) -> tuple[np.ndarray, dict]:
    """The face chip of a detection with landmarks, and its geometry: the detection's box and
    landmarks in the chip's pixels, from which every embedder aligns."""
    matrix = similarity(np.array(detection.landmarks), FACE_CHIP_TEMPLATE)
    chip = warp(pixels, matrix, FACE_CHIP_SIZE)
    # The box as the detector would have drawn it on the upright face: its centre mapped,
    # its sides scaled.
    b = detection.box
    (cx, cy), = apply(matrix, [[(b.left + b.right) / 2, (b.top + b.bottom) / 2]])
    scale = float(np.hypot(*matrix[:, 0]))
    half_w, half_h = b.width * scale / 2, b.height * scale / 2
    box = [cx - half_w, cy - half_h, cx + half_w, cy + half_h]
    landmarks = [[round(float(x), 2), round(float(y), 2)]
                 for x, y in apply(matrix, detection.landmarks)]
    return chip, {"box": [round(v, 2) for v in box], "landmarks": landmarks}


def chip_detection(geometry: dict) -> Detection:
    """The detection, in the chip's pixels, that a stored face chip was made from."""
    left, top, right, bottom = geometry["box"]
    box = Box(max(0, int(round(left))), max(0, int(round(top))),
              min(FACE_CHIP_SIZE, int(round(right))), min(FACE_CHIP_SIZE, int(round(bottom))))
    return Detection(box, 1.0, tuple((float(x), float(y)) for x, y in geometry["landmarks"]))
