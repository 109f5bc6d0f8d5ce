"""FAISS: exact (flat) search for small galleries, IVF-Flat above a size threshold.

IVF rather than HNSW because IVF removes vectors physically (remove_ids), so an erased
face leaves no copy in memory or on disk; HNSW can only mask deleted entries until a rebuild.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import faiss
import numpy as np

from facesearch.index.base import VectorIndex

INDEX_FILE = "vectors.faiss"
MAGIC = b"FSIX0001"
HEADER = struct.Struct("<8sQ")  # magic, watermark (highest face id synchronised)


def ivf_lists(n: int) -> int:
    """About 4 sqrt(n) inverted lists (FAISS's rule of thumb), a power of two, at least 64."""
    return max(64, 2 ** round(math.log2(4 * math.sqrt(max(n, 1)))))


class FaissIndex(VectorIndex):
    """A FAISS index with int64 face ids, that upgrades itself from flat to IVF as it grows."""

    def __init__(self, dimension: int, exact_max: int = 200_000, nprobe: int = 32) -> None:
        self.dimension = dimension
        self.exact_max = exact_max
        self.nprobe = nprobe
        self.index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatL2(dimension))
        self.watermark = 0  # the highest face id this index has been synchronised up to

    @property
    def kind(self) -> str:
        return "ivf" if isinstance(self.index, faiss.IndexIVF) else "flat"

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dimension)
        if len(ids) == 0:
            return
        self.index.add_with_ids(vectors, ids)
        if self.kind == "flat" and self.index.ntotal > self.exact_max:
            self.rebuild_ivf()
        elif self.kind == "ivf" and ivf_lists(self.index.ntotal) >= 2 * self.index.nlist:
            self.rebuild_ivf()  # grown fourfold since trained: lists too long for fast search

    def remove(self, ids: np.ndarray) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0 or self.index.ntotal == 0:
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self.index.ntotal == 0:
            return (np.full((len(queries), k), np.inf, np.float32),
                    np.full((len(queries), k), -1, np.int64))
        if self.kind == "ivf":
            self.index.nprobe = self.nprobe
        squared, ids = self.index.search(queries, k)
        distances = np.sqrt(np.maximum(squared, 0))
        distances[ids < 0] = np.inf
        return distances, ids

    def within(self, query: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        if self.index.ntotal == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        if self.kind == "ivf":
            self.index.nprobe = self.nprobe
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        _, squared, ids = self.index.range_search(query, radius**2)
        order = np.argsort(squared, kind="stable")
        return np.sqrt(np.maximum(squared[order], 0)), ids[order].astype(np.int64)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (id, vector) held, by reconstruction."""
        n = self.index.ntotal
        if self.kind == "flat":
            ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
            return ids, self.index.index.reconstruct_n(0, n)
        invlists = self.index.invlists
        ids, vectors = [], []
        for lst in range(self.index.nlist):
            size = invlists.list_size(lst)
            if size:
                ids.append(faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy())
                codes = faiss.rev_swig_ptr(invlists.get_codes(lst), size * invlists.code_size)
                vectors.append(np.frombuffer(codes.copy(), dtype=np.float32).reshape(size, -1))
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, self.dimension), np.float32)
        return np.concatenate(ids), np.concatenate(vectors)

    def rebuild_ivf(self) -> None:
        """Train an IVF-Flat index on the vectors held and move them into it."""
        ids, vectors = self.all_vectors()
        nlist = ivf_lists(len(ids))
        quantizer = faiss.IndexFlatL2(self.dimension)
        ivf = faiss.IndexIVFFlat(quantizer, self.dimension, nlist, faiss.METRIC_L2)
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(len(vectors), min(len(vectors), 64 * nlist), replace=False)]
        ivf.train(sample)
        ivf.add_with_ids(vectors, ids)
        ivf.nprobe = self.nprobe
        self.index = ivf

    # Persistence ------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write index and watermark as one file, atomically: a reader sees the old index or
        the new one, and the watermark always describes the vectors beside it."""
        directory.mkdir(parents=True, exist_ok=True)
        header = HEADER.pack(MAGIC, self.watermark)
        _atomic_write(directory / INDEX_FILE, header + faiss.serialize_index(self.index).tobytes())

    @classmethod
    def load(cls, directory: Path, dimension: int, exact_max: int, nprobe: int) -> "FaissIndex":
        """The saved index, or an empty one when none was saved yet."""
        index = cls(dimension, exact_max, nprobe)
        path = directory / INDEX_FILE
        if path.exists():
            data = path.read_bytes()
            magic, index.watermark = HEADER.unpack_from(data)
            if magic != MAGIC:
                raise ValueError(f"{path} is not a facesearch index file")
            index.index = faiss.deserialize_index(
                np.frombuffer(data, dtype=np.uint8, offset=HEADER.size))
        return index


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
