"""A face's quality record: size, sharpness, pose from the landmarks, detector confidence.

Pose is estimated geometrically from landmarks, as if the face were seen from afar
(orthographic projection):

- roll: the eye line's angle to the horizontal, the eyes found by dlib's five-point predictor
  for every face: YuNet's own eye landmarks barely follow a face turned in the photo's plane
  (photos of three LFW faces turned by 20 degrees moved them by 2 to 13 degrees; dlib's moved
  by 19 to 21), so a rolled face would pass for an upright one.
- yaw (from YuNet's five landmarks: eye centres, nose tip, mouth corners): turning the head by yaw moves the nose tip, which stands NOSE_DEPTH eye-distances in
  front of the eyes, sideways by NOSE_DEPTH x sin(yaw) while the eye line shortens by
  cos(yaw): the nose's offset from the eyes' midpoint, in (projected) eye distances, is
  NOSE_DEPTH x tan(yaw).
- pitch (from the same five): nodding moves the nose tip up or down between the eye line and the mouth line; its
  height there, a fraction of the eye-to-mouth distance, is NOSE_HEIGHT when level and falls
  by NOSE_DEPTH_OF_MOUTH_LINE x tan(pitch) (the mouth corners are taken to lie in the eyes'
  plane: they stand a few millimetres in front of it, against the nose's 30 or more).

The constants were fitted on YuNet's landmarks of 940 LFW faces (the central face of up to
two photos of every eighth person): NOSE_HEIGHT is their median nose height (LFW's photos are
mostly level); NOSE_DEPTH is fitted, by least squares over the 797 faces within 0.06 of that
height, from a second and independent cue of yaw: the eye line shortens against the
eye-to-mouth distance as cos(yaw), so their ratio is q0 / sqrt(1 + (offset / NOSE_DEPTH)^2)
(fit: q0 1.03, NOSE_DEPTH 0.45, residual 0.07; the median ratios of offset bins agree
within 0.02). Angles past about 60 degrees are beyond what five points can tell (the far eye
is hidden and guessed).

dlib's five-point predictor (the landmarks of the HOG and CNN detectors) gives eye corners and
the base of the nose, not its tip, and no mouth: those faces get a roll only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from facesearch.types import Box, FaceQuality

NOSE_HEIGHT = 0.56  # the nose tip's height between eye line (0) and mouth line (1), level
NOSE_DEPTH = 0.45  # the nose tip in front of the eyes, in eye distances
# The same depth in eye-to-mouth distances: NOSE_DEPTH x the frontal eye/mouth ratio (1.03).
NOSE_DEPTH_OF_MOUTH_LINE = 0.46
# Laplacian variance at which sharpness is 0.5 (LFW's subjects score 0.07 to 0.5, median 0.21).
SHARPNESS_HALF = 200.0


def sharpness(chip: np.ndarray) -> float:
    """Sharpness in [0, 1): the variance v of the Laplacian of the grey face chip's centre
    (vision.chips, 256 px), as v / (v + 200).

    A relative figure, higher is sharper: blurred faces and small faces (their chip is
    upscaled) score lower than sharp ones of the same collection."""
    margin = chip.shape[0] // 5  # the face, without the chip's margin
    grey = chip[margin:-margin, margin:-margin].astype(np.float32).mean(axis=2)
    lap = (
        grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    )
    variance = float(lap.var())
    return variance / (variance + SHARPNESS_HALF)


def pose(landmarks: Sequence[tuple[float, float]],
         eyes: Sequence[tuple[float, float]]) -> tuple[float | None, float | None, float]:
    """(yaw, pitch, roll) in degrees (image coordinates, y down): roll from the eye centres
    eyes (dlib's predictor), positive when the face leans clockwise in the image; yaw and
    pitch from a detector's five landmarks (eyes, nose tip, mouth corners), yaw positive when
    the nose points to the image's right, pitch when the face looks up, None for fewer
    points (dlib's eyes and nose base)."""
    (left_x, left_y), (right_x, right_y) = eyes
    roll = round(math.degrees(math.atan2(right_y - left_y, right_x - left_x)), 1)
    if len(landmarks) < 5:
        return None, None, roll
    points = np.asarray(landmarks, dtype=np.float64)
    across = points[1] - points[0]
    eye_distance = float(np.hypot(*across))
    if eye_distance == 0:
        return None, None, roll
    # Coordinates along the landmarks' own eye line (x) and across it (y, down), from the
    # eyes' midpoint: nose and mouth are measured in the frame the landmarks were found in.
    unit = across / eye_distance
    normal = np.array([-unit[1], unit[0]])
    middle = (points[0] + points[1]) / 2
    nose = points[2] - middle
    mouth = (points[3] + points[4]) / 2 - middle
    nose_x, nose_y, mouth_y = float(nose @ unit), float(nose @ normal), float(mouth @ normal)
    yaw = round(math.degrees(math.atan(nose_x / eye_distance / NOSE_DEPTH)), 1)
    if mouth_y <= 0:
        return yaw, None, roll
    pitch = math.degrees(math.atan((NOSE_HEIGHT - nose_y / mouth_y) / NOSE_DEPTH_OF_MOUTH_LINE))
    return yaw, round(pitch, 1), roll


def face_quality(box: Box, confidence: float, landmarks: Sequence[tuple[float, float]],
                 eyes: Sequence[tuple[float, float]], chip: np.ndarray) -> FaceQuality:
    """The quality record of a face found at box (in the pixels it was found in), with the
    detector's confidence, its landmarks, its eye centres by dlib's predictor, and its face
    chip."""
    yaw, pitch, roll = pose(landmarks, eyes)
    return FaceQuality(face_pixels=min(box.width, box.height), sharpness=round(sharpness(chip), 4),
                       confidence=round(float(confidence), 4), yaw=yaw, pitch=pitch, roll=roll)
