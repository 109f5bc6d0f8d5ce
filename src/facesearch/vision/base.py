"""Small interfaces for the two model roles, so another model family can be added beside dlib."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from facesearch.types import Detection


class Model(ABC):
    """Loads its weights once, on first use, under a lock; subclasses only say how."""

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    @abstractmethod
    def _load(self) -> Any: ...


class Detector(Model):
    """Finds faces. Boxes are in the pixel coordinates of the array it is given."""

    @abstractmethod
    def detect(self, pixels: np.ndarray, upsample: int) -> list[Detection]:
        """upsample: passes that each double the image first, to find faces half as small."""


@dataclass
class AlignedFace:
    chip: Any  # uint8 (size, size, 3), the face warped to the model's pose (a tuple if fused)
    landmarks: list[tuple[int, int]]  # in the pixel coordinates of the source image


class Embedder(Model):
    """Aligns a detected face to a chip and turns chips into descriptors."""

    name: str  # recorded with every descriptor, so that descriptors of two models never mix
    dimension: int

    @abstractmethod
    def align(self, pixels: np.ndarray, detection: Detection) -> AlignedFace: ...

    def flip(self, chip: Any) -> Any:
        """The chip mirrored left to right (mirror-averaged descriptors)."""
        return chip[:, ::-1]

    @abstractmethod
    def describe(self, chips: list[np.ndarray]) -> np.ndarray:
        """Raw descriptors for a batch of chips: float32, shape (len(chips), dimension)."""
