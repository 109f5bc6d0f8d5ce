"""A compressed FAISS index for galleries too large for HNSW's memory: IVF-PQ codes in
inverted lists, the short list re-ranked by exact distance from the stored descriptors.

Memory: a face costs its PQ code (`code_bytes`, 16 by default) plus its id (8 bytes) in an
inverted list, against 792 bytes in HNSW. The approximate distances only choose a short list
(`rerank` candidates); exact distances from the descriptors (the metadata store's, read by the
`exact_vectors` callback) rank it, so the scores shown are exact.

Layout on disk: one trained, empty IVF-PQ "template" and shards of up to `shard_size` faces.
Closed shards (full when closed) are sealed (written once) and opened memory-mapped, so that start-up reads no list
data and the OS pages in what searches touch; only the open shard is held in memory. A
search chooses the probed lists once and scans them shard by shard, each shard returning twice
its share of the short list. (Scanning the shards' lists stacked into one, FAISS's
HStackInvertedLists, copies every probed list on each query: 72 ms against 50 ms for 128
probes at 100M.) A deleted face's code is removed from its shard at once (a sealed shard is
read into memory for it and written again), so no erased face stays in any file.

Lists are capped at MAX_LISTS because adding a face scans every list centre (2 x 128 x lists
FLOPs). At 16,384 lists, 10M faces had not finished adding after 20 minutes on 2 cores,
through an HNSW graph over the centres that measured no faster than the scan (263 against 208
microseconds a face); 4,096 lists cost a quarter. A query scans its probed lists on both cores.
One "searcher", the template with FAISS's precomputed distance tables (64 MiB at 4,096 lists,
which make scanning a list cheap), scans each shard's lists in turn, so the tables exist once
rather than once a shard. It is pointed at one shard after another, so searches must not run
concurrently: the engine makes them under its index lock.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import faiss
import numpy as np

from facesearch.index.base import VectorIndex
from facesearch.store.files import fsync_directory, private_directory, write_private

MAX_LISTS = 4096  # see above: more lists cost adds more than they save searches
SCAN_BUDGET = 2_750_000  # codes a query scans by default at most: 112 probes at 100M, 46 ms
SUBDIRECTORY = "compressed"  # inside the data directory's index folder
ExactVectors = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # ids -> (ids found, vectors)


class CompressedIndex(VectorIndex):
    def __init__(self, dimension: int, *, lists: int, code_bytes: int = 16, probes: int | None = None,
                 rerank: int = 1000, shard_size: int = 10_000_000,
                 exact_vectors: ExactVectors | None = None) -> None:
        self.dimension, self.lists, self.code_bytes = dimension, lists, code_bytes
        self.probes = probes  # None: default_probes(), for the index's size at each query
        self.rerank, self.shard_size = rerank, shard_size
        self.exact_vectors = exact_vectors
        self.template: faiss.IndexIVFPQ | None = None  # trained, empty
        self.shards: list[faiss.IndexIVFPQ] = []  # hold lists only: no distance tables
        self.searcher: faiss.IndexIVFPQ | None = None  # the template, tables, a shard's lists
        self.sealed = 0  # shards[:sealed] are closed, on disk, memory-mapped (read-only)
        self.changed: set[int] = set()  # sealed shards read into memory by a removal
        self.watermark = 0
        self.erasure_seq = 0  # the last entry of the store's erasure log applied

    kind = "ivfpq"

    @staticmethod
    def present(index_dir: Path) -> bool:
        return (index_dir / SUBDIRECTORY / "manifest.json").exists()

    @staticmethod
    def lists_for(faces: int) -> int:
        """About 4 sqrt(n) inverted lists (a power of two), at least 64, at most MAX_LISTS."""
        return min(MAX_LISTS, max(64, 2 ** round(np.log2(4 * np.sqrt(max(faces, 1))))))

    # Building ---------------------------------------------------------------------------------

    @property
    def trained(self) -> bool:
        return self.template is not None

    def train(self, sample: np.ndarray) -> None:
        """Learn the coarse lists and the PQ codebooks from a sample (at least 39 vectors a
        list; FAISS warns below that)."""
        index = faiss.IndexIVFPQ(faiss.IndexFlatL2(self.dimension), self.dimension, self.lists,
                                 self.code_bytes, 8)
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        self.template = index
        self.searcher = _searcher(index)

    def _new_shard(self) -> faiss.IndexIVFPQ:
        assert self.template is not None, "train the index before adding to it"
        return _lists_only(faiss.clone_index(self.template))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dimension)
        start = 0
        while start < len(ids):
            if not self.shards or self.shards[-1].ntotal >= self.shard_size or len(self.shards) == self.sealed:
                self.shards.append(self._new_shard())
            room = self.shard_size - self.shards[-1].ntotal
            self.shards[-1].add_with_ids(vectors[start:start + room], ids[start:start + room])
            start += room

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids from every shard that holds them, at once: an erased face's code must
        not stay on disk until some later compaction. A sealed (memory-mapped) shard holding
        one is read into memory for it and written again at the next save: a shard's worth
        of memory and I/O per shard touched, the price of an erasure that leaves no copy."""
        wanted = np.ascontiguousarray(ids, dtype=np.int64)
        selector = faiss.IDSelectorBatch(wanted)
        removed = 0
        for number, shard in enumerate(self.shards):
            if not len(wanted) or not np.isin(_shard_ids(shard), wanted).any():
                continue
            if not _in_memory(shard):
                shard = self.shards[number] = self._into_memory(shard)
                self.changed.add(number)
            removed += int(shard.remove_ids(selector))
        return removed

    def _into_memory(self, shard: faiss.IndexIVFPQ) -> faiss.IndexIVFPQ:
        """A copy of a memory-mapped shard held in memory (FAISS cannot clone mapped lists)."""
        copy = self._new_shard()
        source = shard.invlists
        for number in range(source.nlist):
            size = source.list_size(number)
            if size:
                ids, codes = source.get_ids(number), source.get_codes(number)
                copy.invlists.add_entries(number, size, ids, codes)
                source.release_ids(number, ids)
                source.release_codes(number, codes)
        copy.ntotal = shard.ntotal
        return copy

    def held_ids(self) -> np.ndarray:
        """Every id whose code a shard holds."""
        parts = [_shard_ids(shard) for shard in self.shards]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    # Searching ------------------------------------------------------------------------------------

    def default_probes(self) -> int:
        """A 32nd of the lists (at least 32), fewer only where that would scan more than
        SCAN_BUDGET codes. Measured (docs/scale.md): 128 of 4,096 lists found 99% of true mates
        at 1M and at 10M; at 100M, 112 with a short list of 1,000 found 98.6% in 46 ms. The
        codes scanned set the latency."""
        share = min(self.lists, max(32, self.lists // 32))
        return max(1, min(share, SCAN_BUDGET * self.lists // max(self.total, 1)))

    @property
    def total(self) -> int:
        return sum(int(s.ntotal) for s in self.shards)

    def __len__(self) -> int:
        return self.total

    def search(self, queries: np.ndarray, k: int,
               jurisdictions: Iterable[str] = ()) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        short = max(k, self.rerank)
        distances = np.full((len(queries), k), np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        if not self.total:
            return distances, ids
        approx, candidates = self._scan(queries, short)  # nearest first
        for row in range(len(queries)):
            valid = candidates[row] >= 0
            chosen = candidates[row][valid]
            if self.exact_vectors is not None and len(chosen):
                held, vectors = self.exact_vectors(chosen)
                exact = np.linalg.norm(vectors - queries[row], axis=1)
                best = np.argsort(exact, kind="stable")[:k]
                distances[row, :len(best)], ids[row, :len(best)] = exact[best], held[best]
            else:
                kept = min(k, len(chosen))
                distances[row, :kept] = np.sqrt(np.maximum(approx[row][valid][:kept], 0))
                ids[row, :kept] = chosen[:kept]
        return distances, ids

    def _scan(self, queries: np.ndarray, short: int) -> tuple[np.ndarray, np.ndarray]:
        """The `short` nearest by code of each query over every shard: the probed lists are
        chosen once, each shard returns twice its share of the short list (all of it where
        there are one or two shards), and the shards' answers are merged."""
        probes = min(self.lists, self.probes or self.default_probes())
        params = faiss.SearchParametersIVF()
        params.nprobe = probes
        coarse, lists = self.template.quantizer.search(queries, probes)
        each = min(short, max(1, 2 * short // len(self.shards)))
        found_d = np.empty((len(self.shards), len(queries), each), np.float32)
        found_i = np.empty((len(self.shards), len(queries), each), np.int64)
        for number, shard in enumerate(self.shards):
            self.searcher.replace_invlists(faiss.extract_index_ivf(shard).invlists, False)
            self.searcher.search_preassigned_c(
                len(queries), faiss.swig_ptr(queries), each, faiss.swig_ptr(lists),
                faiss.swig_ptr(coarse), faiss.swig_ptr(found_d[number]),
                faiss.swig_ptr(found_i[number]), False, params)
        merged_d = np.concatenate(found_d, axis=1)  # (queries, shards x each)
        merged_i = np.concatenate(found_i, axis=1)
        order = np.argsort(merged_d, axis=1, kind="stable")[:, :short]
        return np.take_along_axis(merged_d, order, 1), np.take_along_axis(merged_i, order, 1)

    # Storage --------------------------------------------------------------------------------------

    def memory_bytes(self) -> int:
        """Bytes of inverted-list data (codes and ids) of the shards held in memory."""
        per_entry = self.code_bytes + 8
        return sum(int(s.ntotal) * per_entry for n, s in enumerate(self.shards)
                   if n >= self.sealed or n in self.changed)

    def fixed_bytes(self) -> int:
        """Bytes that do not grow with the gallery: the list centres and the searcher's
        precomputed distance tables."""
        assert self.searcher is not None
        return self.lists * self.dimension * 4 + self.searcher.precomputed_table.size() * 4

    def save(self, index_dir: Path) -> None:
        """Write the template, new or changed shards, and a manifest last (atomically), so
        that a crash leaves the previous manifest and its files in force."""
        directory = private_directory(index_dir / SUBDIRECTORY)
        assert self.template is not None
        if not (directory / "template.faiss").exists():
            _write_durably(self.template, directory / "template.faiss")
        names = []
        for number, shard in enumerate(self.shards):
            name = f"shard-{number:05d}-{int(shard.ntotal)}.faiss"
            if number >= self.sealed or number in self.changed or not (directory / name).exists():
                _write_durably(shard, directory / name)
            names.append(name)
        manifest = {"shards": names, "watermark": self.watermark, "erasure_seq": self.erasure_seq,
                    "lists": self.lists, "code_bytes": self.code_bytes,
                    "shard_size": self.shard_size}
        write_private(directory / "manifest.json", json.dumps(manifest).encode())
        # Files the manifest no longer names (a shard's earlier version) go after it.
        for stale in self.stray_files(index_dir):
            stale.unlink()
        fsync_directory(directory)
        # Closed shards are sealed now: reopen them memory-mapped and let go of their memory.
        self.sealed = _closed(len(self.shards), self.shards[-1].ntotal >= self.shard_size
                              if self.shards else False)
        for number in range(self.sealed):
            if _in_memory(self.shards[number]):
                self.shards[number] = _lists_only(
                    faiss.read_index(str(directory / names[number]), faiss.IO_FLAG_MMAP))
        self.changed.clear()

    @staticmethod
    def stray_files(index_dir: Path) -> list[Path]:
        """Files in the compressed index's folder that its manifest does not name: shards of
        an earlier version, temporary files of a save that did not finish."""
        directory = index_dir / SUBDIRECTORY
        manifest = json.loads((directory / "manifest.json").read_text())
        named = {"manifest.json", "template.faiss", *manifest["shards"]}
        return [p for p in directory.iterdir() if p.name not in named]

    @classmethod
    def load(cls, index_dir: Path, dimension: int, **options: object) -> "CompressedIndex":
        directory = index_dir / SUBDIRECTORY
        manifest = json.loads((directory / "manifest.json").read_text())
        index = cls(dimension, lists=manifest["lists"], code_bytes=manifest["code_bytes"],
                    shard_size=manifest["shard_size"], **options)
        index.template = faiss.read_index(str(directory / "template.faiss"))
        index.searcher = _searcher(index.template)
        names = manifest["shards"]
        last_full = bool(names) and int(names[-1].rsplit("-", 1)[1].split(".")[0]) >= index.shard_size
        index.sealed = _closed(len(names), last_full)
        for number, name in enumerate(names):
            # Sealed shards are mapped, not read: start-up reads no list data for them.
            index.shards.append(_lists_only(faiss.read_index(
                str(directory / name), faiss.IO_FLAG_MMAP if number < index.sealed else 0)))
        index.watermark = manifest["watermark"]
        # A manifest from before the erasure log: its tombstoned codes go now, and the
        # whole log is replayed (erasure_seq 0).
        index.erasure_seq = manifest.get("erasure_seq", 0)
        if manifest.get("tombstones"):
            index.remove(np.array(manifest["tombstones"], np.int64))
        return index


def _searcher(template: faiss.IndexIVFPQ) -> faiss.IndexIVFPQ:
    """A copy of the template to scan shards' lists with (the template itself is saved, so it
    must keep its own empty lists); one query's probed lists split between the cores."""
    searcher = faiss.clone_index(template)
    searcher.parallel_mode = 1
    return searcher


def _write_durably(index: faiss.Index, path: Path) -> None:
    """Write a FAISS index owner-only to a temporary file, fsync it and rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    os.chmod(tmp, 0o600)
    handle = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
    os.replace(tmp, path)


def _in_memory(shard: faiss.IndexIVFPQ) -> bool:
    """Whether a shard's lists are held in memory rather than memory-mapped from its file."""
    return isinstance(faiss.downcast_InvertedLists(shard.invlists), faiss.ArrayInvertedLists)


def _closed(shards: int, last_full: bool) -> int:
    """How many shards take no more faces: every one but the last, and the last once full.
    (A closed shard that erasures left below full stays closed: new faces go to the last.)"""
    return shards if last_full else max(0, shards - 1)


def _shard_ids(shard: faiss.IndexIVFPQ) -> np.ndarray:
    """The ids held in a shard's inverted lists."""
    invlists = shard.invlists
    parts = []
    for number in range(invlists.nlist):
        size = invlists.list_size(number)
        if size:
            pointer = invlists.get_ids(number)
            parts.append(faiss.rev_swig_ptr(pointer, size).copy())
            invlists.release_ids(number, pointer)
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _lists_only(shard: faiss.IndexIVFPQ) -> faiss.IndexIVFPQ:
    """A shard is only scanned through the searcher: drop the distance tables that FAISS
    computes for every IVF-PQ index it clones or reads (64 MiB each at 4,096 lists)."""
    shard.use_precomputed_table = 0
    shard.precomputed_table.resize(0)
    return shard
