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
    """What a detector found: a box and a detector confidence (HOG SVM margin or MMOD score)."""

    box: Box
    score: float


@dataclass
class Face:
    """One analysed face: where it is, how good it is, and its descriptor."""

    box: Box
    score: float
    landmarks: list[tuple[int, int]]
    quality: float
    embedding: np.ndarray  # float32, shape (128,), unit-free Euclidean space
    chip_jpeg: bytes  # the aligned 150 px chip, JPEG-encoded, kept as the face crop


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
    candidate_id: int | None = None  # its row in the case's candidate list, once stored


@dataclass
class ProbeResult:
    """The candidates for one face of a probe photo."""

    probe_face: int
    box: Box
    quality: float
    candidates: list[Candidate] = field(default_factory=list)


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
