"""Plain dataclasses that cross module boundaries; no dlib or FAISS types leave vision/ or index/."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Box:
    """A face rectangle in original-image pixels, half-open: [left, right) x [top, bottom)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def scaled(self, factor: float) -> "Box":
        return Box(*(int(round(v * factor)) for v in (self.left, self.top, self.right, self.bottom)))


@dataclass(frozen=True)
class Detection:
    """What a detector found: a box, a confidence (YuNet score, HOG SVM margin or MMOD score)
    and, from detectors that give them, five landmarks: eye centres (image left first), nose
    tip, mouth corners (image left first)."""

    box: Box
    score: float
    landmarks: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class FaceQuality:
    """How well a face can be searched (vision.quality): its box's shorter side in the
    original photo's pixels; sharpness in [0, 1) (the face chip's Laplacian variance v as
    v / (v + 200)); the detector's confidence (YuNet's score in [0.7, 1], HOG's SVM margin,
    MMOD's score); yaw, pitch and roll in degrees from the landmarks, None where the
    detector's landmarks cannot tell (HOG and CNN faces have a roll only)."""

    face_pixels: int
    sharpness: float
    confidence: float
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None


@dataclass
class Face:
    """One analysed face: where it is, how good it is, and its descriptor."""

    box: Box
    score: float
    landmarks: list[tuple[int, int]]
    quality: FaceQuality
    embedding: np.ndarray  # float32, unit length, the embedder's dimension
    chip_jpeg: bytes  # the face chip (vision.chips), JPEG-encoded, kept as the face crop
    # In the chip's pixels: the box and landmarks that re-describe it with any embedder.
    chip_geometry: dict | None = None
    embedder: str = ""  # the name of the model that made embedding


@dataclass
class Candidate:
    """One ranked search result: an investigative lead, never an identification."""

    rank: int
    face_id: int
    distance: float
    false_match_probability: float
    image_id: int
    image_sha256: str
    location: str
    page_url: str | None
    source: str
    jurisdiction: str
    collected_at: str
    crop_path: str
    box: Box
    # false_match_probability x faces searched: strangers expected at least this close here.
    expected_false_matches: float
    band: str  # strong, moderate or weak, by expected_false_matches (calibration.band)
    candidate_id: int | None = None  # its row in the case's candidate list, once stored


@dataclass(frozen=True)
class CutOff:
    """A distance cut-off and what it is worth: comparing one face with `faces` others, about
    target_false_matches strangers are expected within it (false_match_probability each)."""

    distance: float
    false_match_probability: float
    target_false_matches: float
    faces: int


@dataclass
class ProbeResult:
    """The candidates for one face of a probe photo."""

    probe_face: int
    box: Box
    quality: FaceQuality
    cut_off: CutOff  # the candidate cut-off this face was searched with
    candidates: list[Candidate] = field(default_factory=list)
    # Each quality measure below its minimum, in plain words (service.quality).
    quality_warnings: list[str] = field(default_factory=list)
    # How probes of this quality fared in the evaluation (evaluation.quality), in plain words.
    quality_bound: str = ""


@dataclass(frozen=True)
class Actor:
    """Who asks: recorded with every audited action. The CLI acts as the local OS user, with
    the operator role, in the organisation "local"; the web app as an authenticated user."""

    name: str
    role: str = "operator"
    user_id: int | None = None
    organisation_id: int | None = None
    organisation: str = ""
    client: str = "cli"  # the client's address for web requests
    # "full" once every factor the user owes is given; "code" or "enrol" after a password alone
    # (service/signin.py): such an actor may do nothing but complete its log-in.
    stage: str = "full"
