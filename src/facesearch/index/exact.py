"""A plain NumPy linear scan: the reference that the FAISS index is tested and benchmarked against."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from facesearch.index.base import VectorIndex


class NumpyExactIndex(VectorIndex):
    def __init__(self, dimension: int) -> None:
        self.ids = np.zeros(0, dtype=np.int64)
        self.vectors = np.zeros((0, dimension), dtype=np.float32)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.ids = np.concatenate([self.ids, np.asarray(ids, dtype=np.int64)])
        self.vectors = np.concatenate([self.vectors, np.asarray(vectors, dtype=np.float32)])

    def remove(self, ids: np.ndarray) -> int:
        keep = ~np.isin(self.ids, ids)
        removed = int((~keep).sum())
        self.ids, self.vectors = self.ids[keep], self.vectors[keep]
        return removed

    def search(self, queries: np.ndarray, k: int,
               jurisdictions: Iterable[str] = ()) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        n = len(self.ids)
        dist = np.full((len(queries), k), np.inf, dtype=np.float32)
        out = np.full((len(queries), k), -1, dtype=np.int64)
        if n == 0:
            return dist, out
        # |q - v|^2 = |q|^2 - 2 q.v + |v|^2, clipped at 0 against rounding.
        sq = (
            (queries**2).sum(1)[:, None] - 2 * queries @ self.vectors.T + (self.vectors**2).sum(1)[None]
        )
        take = min(k, n)
        part = np.argpartition(sq, take - 1, axis=1)[:, :take]
        for row in range(len(queries)):
            order = part[row][np.argsort(sq[row, part[row]], kind="stable")]
            dist[row, :take] = np.sqrt(np.maximum(sq[row, order], 0))
            out[row, :take] = self.ids[order]
        return dist, out

    def __len__(self) -> int:
        return len(self.ids)
