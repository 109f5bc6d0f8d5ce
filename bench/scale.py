"""Build galleries of 1M, 10M and 100M faces, streaming, and print what searching them costs.

A gallery is every LFW descriptor except the probes' own photos, then distractors drawn in
chunks from Gaussians fitted to the real ones (bench/gallery.py). Nothing holds the whole
gallery in memory: each chunk is drawn from its own seed, written to a float32 file on disk
(the descriptors that re-ranking reads, as the service reads them from its metadata store),
folded into the exact top 10 of every probe, and added to the index, then dropped.

The index is the one the service picks for the size (FACESEARCH_COMPRESSED_INDEX_MIN): HNSW
below it, the compressed IVF-PQ index above, or the one named by --index. Printed for each
search setting: build seconds, index bytes per face, resident memory, single-query p50/p99
and mate recall: of the probe's true mates that exact search finds within the match threshold,
the share the index also returns within it.
"""

from __future__ import annotations

import argparse
import mmap
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
from gallery import DistractorModel, lfw_descriptors

from facesearch.calibration import cut_off, load_calibration
from facesearch.config import Settings
from facesearch.index.compressed import CompressedIndex
from facesearch.index.faiss_index import FaissIndex

CHUNK = 1_000_000
K = 10


def rss_mib() -> float:
    """Resident anonymous memory: the index's own, not the pages of the descriptor file
    (or of memory-mapped shards), which the kernel can drop and read again."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("RssAnon:"))


class Gallery:
    """The real descriptors, the probes and the distractor model; draws the gallery's chunks."""

    def __init__(self, probes: int, seed: int) -> None:
        real, mirrored, people = lfw_descriptors()
        rng = np.random.default_rng(seed)
        with_mates = np.flatnonzero(np.bincount(people)[people] >= 2)
        probe_rows = rng.choice(with_mates, size=probes, replace=False)
        kept = np.setdiff1d(np.arange(len(real)), probe_rows)
        self.real, self.real_people = real[kept], people[kept]
        self.probes, self.probe_people = mirrored[probe_rows], people[probe_rows]
        self.model = DistractorModel(real, people)
        self.seed = seed

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first id, vectors, person labels) chunk by chunk; distractors are labelled -1.
        Ids are row numbers, so a face's descriptor is row id of the descriptor file."""
        for start in range(0, size, CHUNK):
            count = min(CHUNK, size - start)
            real = self.real[start:start + count]
            drawn = self.model.draw(count - len(real), np.random.default_rng([self.seed, start]))
            labels = np.concatenate([self.real_people[start:start + count], np.full(len(drawn), -1)])
            yield start, np.concatenate([real, drawn]), labels


class ExactTopK:
    """The exact K nearest gallery faces of every probe, folded in chunk by chunk."""

    def __init__(self, probes: np.ndarray) -> None:
        self.probes = probes
        self.distances = np.full((len(probes), K), np.inf, np.float32)
        self.ids = np.full((len(probes), K), -1, np.int64)

    def fold(self, first_id: int, vectors: np.ndarray) -> None:
        for start in range(0, len(vectors), 100_000):  # 200 MB of distances at a time
            part = vectors[start:start + 100_000]
            squared = (np.sum(self.probes ** 2, 1)[:, None] - 2 * self.probes @ part.T
                       + np.sum(part ** 2, 1)[None, :])
            best = np.argpartition(squared, K, axis=1)[:, :K]
            distances = np.sqrt(np.maximum(np.take_along_axis(squared, best, 1), 0))
            self._merge(distances, best + first_id + start)

    def _merge(self, distances: np.ndarray, ids: np.ndarray) -> None:
        merged_d = np.hstack([self.distances, distances])
        merged_i = np.hstack([self.ids, ids])
        order = np.argsort(merged_d, axis=1)[:, :K]
        self.distances = np.take_along_axis(merged_d, order, 1)
        self.ids = np.take_along_axis(merged_i, order, 1)


def reader(store: np.memmap):
    """The exact_vectors callback: descriptors of the given ids from the descriptor file."""
    def exact_vectors(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.sort(ids)  # in file order: fewer seeks
        # Ask for every row's page at once: the disk reads them in parallel, where faulting
        # them in one by one waits for each in turn (most are not cached at 100M faces).
        for page in np.unique(order * 512 // mmap.PAGESIZE).tolist():
            store._mmap.madvise(mmap.MADV_WILLNEED, page * mmap.PAGESIZE, mmap.PAGESIZE)
        return order, np.asarray(store[order])
    return exact_vectors


def build(kind: str, gallery: Gallery, size: int, store: np.memmap, labels: np.ndarray,
          exact: ExactTopK, settings: Settings, train_per_list: int, lists: int | None) -> tuple:
    """Stream the gallery into the index (and the descriptor file, the labels and the exact
    top K)."""
    if kind == "hnsw":
        index = FaissIndex(128, settings.exact_index_max, settings.hnsw_ef_search)
    else:
        lists = lists or CompressedIndex.lists_for(size)
        index = CompressedIndex(128, lists=lists, rerank=settings.pq_rerank, exact_vectors=reader(store))
    started = time.perf_counter()
    for first_id, vectors, chunk_labels in gallery.chunks(size):
        if kind != "hnsw" and not index.trained:
            sample = vectors[np.random.default_rng(0).permutation(len(vectors))[:train_per_list * lists]]
            trained = time.perf_counter()
            index.train(sample)
            print(f"  trained {lists} lists on {len(sample)} faces in {time.perf_counter() - trained:.0f} s",
                  flush=True)
        store[first_id:first_id + len(vectors)] = vectors
        labels[first_id:first_id + len(vectors)] = chunk_labels
        exact.fold(first_id, vectors)
        index.add(np.arange(first_id, first_id + len(vectors), dtype=np.int64), vectors)
        if first_id and first_id % (10 * CHUNK) == 0:
            print(f"  {first_id + len(vectors):,} faces in {time.perf_counter() - started:.0f} s",
                  flush=True)
    store.flush()
    seconds = time.perf_counter() - started
    print(f"  built {size:,} faces in {seconds:.0f} s", flush=True)
    return index, seconds


def reopen(index: CompressedIndex, directory: Path) -> CompressedIndex:
    """Save the index and open it again as a restarted service would: full shards mapped."""
    index.save(directory)
    options = {"probes": index.probes, "rerank": index.rerank, "exact_vectors": index.exact_vectors}
    del index
    started = time.perf_counter()
    reopened = CompressedIndex.load(directory, 128, **options)
    print(f"  saved; opened again in {time.perf_counter() - started:.1f} s "
          f"({reopened.sealed} of {len(reopened.shards)} shards mapped)", flush=True)
    return reopened


def index_bytes(index: FaissIndex | CompressedIndex) -> int:
    """What the index needs in memory to search at full speed: every list's codes and ids,
    memory-mapped or not, and the fixed parts; for HNSW, its serialised size."""
    if isinstance(index, CompressedIndex):
        return index.total * (index.code_bytes + 8) + index.fixed_bytes()
    return len(faiss.serialize_index(index.index))


def measure(index: FaissIndex | CompressedIndex, gallery: Gallery, exact: ExactTopK,
            labels: np.ndarray, threshold: float) -> tuple[float, float, float, float]:
    """p50 and p99 in ms, recall@10 against exact search, and mate recall."""
    times, overlap, found, mates_total = [], 0, 0, 0
    for probe, person, truth_d, truth in zip(gallery.probes, gallery.probe_people,
                                             exact.distances, exact.ids):
        started = time.perf_counter()
        distances, ids = index.search(probe, K)
        times.append(time.perf_counter() - started)
        overlap += len(set(ids[0].tolist()) & set(truth.tolist()))
        mates = {int(i) for d, i in zip(truth_d, truth) if d < threshold and labels[i] == person}
        returned = {int(i) for d, i in zip(distances[0], ids[0]) if d < threshold}
        mates_total += len(mates)
        found += len(mates & returned)
    p50, p99 = np.percentile(times, [50, 99]) * 1000
    return p50, p99, overlap / (K * len(times)), found / max(mates_total, 1)


def search_cut_off(settings: Settings, size: int) -> float:
    """The service's candidate cut-off at this gallery size (these are dlib descriptors)."""
    return cut_off(load_calibration("dlib-resnet"), settings.search_false_matches, size,
                   settings.false_match_ceiling)[0]


def run(size: int, kind: str, gallery: Gallery, settings: Settings, work: Path,
        settings_to_try: list[int], reranks: list[int], train_per_list: int,
        lists: int | None, keep: bool) -> None:
    path = work / f"descriptors-{size}.f32"
    kept = work / f"kept-{size}.npz"  # a kept gallery's exact answers, labels and build figures
    reuse = keep and kind == "ivfpq" and kept.exists()
    store = np.memmap(path, np.float32, "r" if reuse else "w+", shape=(size, 128))
    # Re-ranking reads 1,000 scattered rows a query: without this the kernel reads ahead around
    # each one, tens of MB a query, and at 100M (a 51 GB file) that I/O was the latency.
    store._mmap.madvise(mmap.MADV_RANDOM)
    exact = ExactTopK(gallery.probes)
    labels = np.empty(size, np.int32)
    rss_before = rss_mib()
    try:
        if reuse:
            saved = np.load(kept)
            assert np.array_equal(saved["probes"], gallery.probes), "kept with other probes"
            exact.distances, exact.ids, labels[:] = saved["distances"], saved["ids"], saved["labels"]
            seconds = float(saved["seconds"])
            started = time.perf_counter()
            index = CompressedIndex.load(work / f"index-{size}", 128, exact_vectors=reader(store))
            per_face = index_bytes(index) / size
            print(f"  reusing the gallery kept in {work}: opened in "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
        else:
            index, seconds = build(kind, gallery, size, store, labels, exact, settings,
                                   train_per_list, lists)
            per_face = index_bytes(index) / size
            if isinstance(index, CompressedIndex):
                index = reopen(index, work / f"index-{size}")
                if keep:
                    np.savez(kept, probes=gallery.probes, distances=exact.distances, ids=exact.ids,
                             labels=labels, seconds=seconds)
        rss = rss_mib() - rss_before
        limit = search_cut_off(settings, size)
        for value, rerank in ((v, r) for v in settings_to_try for r in reranks):
            if kind == "hnsw":
                index.ef_search = value
                name = f"hnsw ef{value}"
            else:
                index.probes, index.rerank = value, rerank
                name = f"ivfpq {index.lists}/{value}/{rerank}"
            measure(index, gallery, exact, labels, limit)  # warm the page cache
            p50, p99, recall, mate_recall = measure(index, gallery, exact, labels, limit)
            print(f"{size:>11,} {name:>16} {seconds:8.0f} {per_face:10.1f} {rss:8.0f} "
                  f"{p50:7.2f} {p99:7.2f} {recall:9.4f} {mate_recall:11.4f}", flush=True)
    finally:
        del store
        if not keep:
            path.unlink()
            shutil.rmtree(work / f"index-{size}", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000,100000000")
    parser.add_argument("--index", choices=["auto", "hnsw", "ivfpq"], default="auto",
                        help="auto: the kind the service chooses for the size")
    parser.add_argument("--ef", default="32,48,64,96,160", help="HNSW efSearch values to measure")
    parser.add_argument("--probes", default="",
                        help="IVF-PQ probes to measure (default: the service's, lists/16, and half of it)")
    parser.add_argument("--rerank", default=str(Settings().pq_rerank),
                        help="IVF-PQ short-list lengths re-ranked exactly, to measure")
    parser.add_argument("--lists", type=int, help="IVF-PQ lists (default: the service's choice)")
    parser.add_argument("--train-per-list", type=int, default=40)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the descriptor file goes (size x 512 bytes, deleted after)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the compressed gallery in --work-dir, or measure the one kept "
                             "there with the same --queries, instead of building it again")
    args = parser.parse_args()
    settings = Settings()
    gallery = Gallery(args.queries, seed=1)
    print(f"== {len(gallery.probes)} real LFW probes; gallery = {len(gallery.real)} real LFW "
          f"descriptors + fitted distractors; faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads; mates counted within the service's search "
          f"cut-off at each size (dlib-resnet, {settings.search_false_matches:g} expected "
          f"strangers) ==")
    print(f"{'faces':>11} {'index':>16} {'build s':>8} {'bytes/face':>10} {'anon MiB':>8} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'recall@10':>9} {'mate recall':>11}", flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        kind = args.index
        if kind == "auto":
            kind = "ivfpq" if size > settings.compressed_index_min else "hnsw"
        if kind == "hnsw":
            tries = [int(v) for v in args.ef.split(",")]
        elif args.probes:
            tries = [int(v) for v in args.probes.split(",")]
        else:
            default = max(1, (args.lists or CompressedIndex.lists_for(size)) // 16)
            tries = [default // 2, default]
        reranks = [int(v) for v in args.rerank.split(",")] if kind == "ivfpq" else [0]
        run(size, kind, gallery, settings, args.work_dir, tries, reranks, args.train_per_list,
            args.lists, args.keep)


if __name__ == "__main__":
    main()
