"""The vector index interface: ids are face ids from the metadata store."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

import numpy as np


class VectorIndex(ABC):
    """Nearest neighbours by Euclidean distance over (id, vector) pairs."""

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors (float32, (n, d)) under new int64 ids (to replace one, remove it first)."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> int:
        """Physically remove ids; returns how many were present."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int,
               jurisdictions: Iterable[str] = ()) -> tuple[np.ndarray, np.ndarray]:
        """For each query, up to k (distances, ids), nearest first; missing slots have id -1
        and distance inf. jurisdictions, if given, is a hint: an index that holds each face's
        jurisdiction (Milvus) returns only faces of those; the others (FAISS, NumPy) ignore it,
        and the service filters every index's results by jurisdiction after the query."""

    @abstractmethod
    def __len__(self) -> int: ...
