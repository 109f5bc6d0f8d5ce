"""Print ingest and search figures side by side, as ratios measured in one run.

Ingest: the same LFW photos through face_recognition (one process: HOG upsampled once,
5-point landmarks, one descriptor per face) and through facesearch ingest with 1 and 2
workers (same detector and landmarks, plus mirrored descriptors, crops and metadata writes).

Search, in memory up to 1M faces: galleries of real LFW descriptors plus distractors drawn
from Gaussians fitted to them (bench/gallery.py), every index kind side by side. Probes are
real LFW photos whose other photos are in the gallery. bench/scale.py streams larger ones.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from gallery import LFW, DistractorModel, lfw_descriptors


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# Ingest ---------------------------------------------------------------------------------

def bench_face_recognition(files: list[Path]) -> tuple[float, int]:
    import face_recognition

    started = time.perf_counter()
    faces = 0
    for file in files:
        image = face_recognition.load_image_file(str(file))
        boxes = face_recognition.face_locations(image, number_of_times_to_upsample=1, model="hog")
        faces += len(face_recognition.face_encodings(image, boxes, num_jitters=1, model="small"))
    return time.perf_counter() - started, faces


def bench_ingest(files: list[Path], workers: int) -> tuple[float, int]:
    from facesearch.config import Settings
    from facesearch.service import FaceSearchService
    from facesearch.types import Actor

    home = Path(tempfile.mkdtemp(prefix="fs-bench-"))
    try:
        service = FaceSearchService(Settings(home=home, workers=workers))
        actor = Actor("bench")
        service.add_source(actor, "lfw", "legitimate_interests", "US")
        started = time.perf_counter()
        summary = service.ingest(actor, files, "lfw")
        elapsed = time.perf_counter() - started
        service.close()
        return elapsed, summary.faces_indexed
    finally:
        shutil.rmtree(home, ignore_errors=True)


def ingest_files(count: int) -> list[Path]:
    people = sorted((LFW / "images").iterdir())
    return [f for p in people for f in sorted(p.glob("*.jpg"))][:count]


def measure_in_fresh_process(pipeline: str, count: int) -> tuple[float, int]:
    """Each pipeline runs in its own process, so no library's thread set-up leaks into another."""
    done = subprocess.run([sys.executable, __file__, "--measure-ingest", pipeline,
                           "--ingest-images", str(count)], capture_output=True, text=True, check=True)
    seconds, faces = done.stdout.split()[-2:]
    return float(seconds), int(faces)


def run_ingest(count: int) -> None:
    files = ingest_files(count)
    print(f"\n== ingest: {len(files)} LFW photos, {os.cpu_count()} cores, each run in a fresh process ==")
    rows = [("face_recognition 1.3.0 (its defaults)", *measure_in_fresh_process("face_recognition", count))]
    for workers in (1, 2):
        rows.append((f"facesearch ingest, {workers} worker{'s' * (workers > 1)}",
                     *measure_in_fresh_process(str(workers), count)))
    base = len(files) / rows[0][1]
    print(f"{'pipeline':42} {'images/s':>9} {'faces/s':>8} {'vs face_recognition':>20}")
    for name, seconds, faces in rows:
        rate = len(files) / seconds
        print(f"{name:42} {rate:9.2f} {faces / seconds:8.2f} {rate / base:19.2f}x", flush=True)


# Search ---------------------------------------------------------------------------------

class IvfIndex:
    """FAISS IVF-Flat, measured beside facesearch's own index as the alternative not chosen:
    about 4 sqrt(n) lists, nprobe lists visited per query."""

    kind = "ivf"

    def __init__(self, vectors: np.ndarray, nprobe: int) -> None:
        import faiss

        nlist = 2 ** round(np.log2(4 * np.sqrt(len(vectors))))
        self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(vectors.shape[1]), vectors.shape[1], nlist)
        rng = np.random.default_rng(0)
        self.index.train(vectors[rng.choice(len(vectors), min(len(vectors), 64 * nlist), replace=False)])
        self.index.add(vectors)
        self.index.nprobe = nprobe
        self.kind = f"ivf{nprobe}"

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        squared, ids = self.index.search(query.reshape(1, -1), k)
        return np.sqrt(squared), ids


class CompressedBench:
    """facesearch's compressed index (IVF-PQ, 16-byte codes, re-ranked), about 4 sqrt(n)
    lists. The exact vectors for re-ranking come from the array in memory here; in service
    they would come from the metadata store."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, probes: int) -> None:
        from facesearch.index.compressed import CompressedIndex

        lists = CompressedIndex.lists_for(len(vectors))  # the service's choice
        self.compressed = CompressedIndex(vectors.shape[1], lists=lists, probes=probes, rerank=200,
                                          exact_vectors=lambda found: (found, vectors[found]))
        rng = np.random.default_rng(0)
        self.compressed.train(vectors[rng.choice(len(vectors), min(len(vectors), 64 * lists), replace=False)])
        for start in range(0, len(vectors), 100_000):
            self.compressed.add(ids[start:start + 100_000], vectors[start:start + 100_000])
        self.index = self.compressed.shards[0]  # one shard at these sizes: its bytes are measured
        self.kind = f"pq{probes}"

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.compressed.search(query, k)


def build_facesearch(ids: np.ndarray, vectors: np.ndarray):
    """facesearch's own index, fed in chunks as ingest would grow it."""
    from facesearch.index.faiss_index import FaissIndex

    index = FaissIndex(vectors.shape[1])
    for start in range(0, len(vectors), 100_000):
        index.add(ids[start:start + 100_000], vectors[start:start + 100_000])
    return index


def run_search(sizes: list[int], queries: int, threshold: float, ivf_probes: list[int],
               pq_probes: list[int]) -> None:
    import faiss

    from facesearch.index.exact import NumpyExactIndex

    real, mirrored, people = lfw_descriptors()
    model = DistractorModel(real, people)
    rng = np.random.default_rng(1)
    counts = np.bincount(people)
    candidates = np.flatnonzero(counts[people] >= 2)
    probe_rows = rng.choice(candidates, size=min(queries, len(candidates)), replace=False)
    gallery_real = np.setdiff1d(np.arange(len(real)), probe_rows)
    probes = mirrored[probe_rows]
    print(f"\n== search: {len(probes)} real LFW probes; gallery = up to {len(gallery_real)} real "
          f"LFW descriptors + generated distractors; faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads ==")
    print(f"{'faces':>9} {'index':>6} {'build s':>8} {'bytes/face':>10} {'RSS MiB':>8} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'numpy p50':>9} {'speedup':>8} {'recall@10':>9} {'mate recall':>11}")
    for size in sizes:
        real_rows = gallery_real[:size]
        extra = model.draw(max(0, size - len(real_rows)), np.random.default_rng(size))
        vectors = np.concatenate([real[real_rows], extra])
        ids = np.arange(len(vectors), dtype=np.int64)
        label = np.concatenate([people[real_rows], np.full(len(extra), -1)])
        exact = NumpyExactIndex(128)
        exact.ids, exact.vectors = ids, vectors
        truths, exact_times = [], []
        for q in probes:
            t = time.perf_counter()
            truths.append(exact.search(q, 10))
            exact_times.append(time.perf_counter() - t)
        np50 = np.percentile(exact_times, 50) * 1000

        builders = [partial(build_facesearch, ids, vectors)] + [
            partial(IvfIndex, vectors, nprobe) for nprobe in ivf_probes if size >= 100_000] + [
            partial(CompressedBench, ids, vectors, probes) for probes in pq_probes if size >= 100_000]
        for build_index in builders:
            rss0 = rss_mib()
            started = time.perf_counter()
            index = build_index()
            build = time.perf_counter() - started
            nbytes = len(faiss.serialize_index(index.index))
            rss = rss_mib() - rss0
            times, recall, mates_found, mates_total = [], [], 0, 0
            for q, row, (truth_d, truth) in zip(probes, probe_rows, truths):
                t = time.perf_counter()
                _, got = index.search(q, 10)
                times.append(time.perf_counter() - t)
                recall.append(len(set(got[0]) & set(truth[0])) / 10)
                mates = {int(i) for d, i in zip(truth_d[0], truth[0])
                         if d < threshold and label[i] == people[row]}
                mates_total += len(mates)
                mates_found += len(mates & set(got[0].tolist()))
            p50, p99 = np.percentile(times, [50, 99]) * 1000
            print(f"{size:9d} {index.kind:>6} {build:8.1f} {nbytes / size:10.1f} {rss:8.0f} "
                  f"{p50:7.3f} {p99:7.3f} {np50:9.2f} {np50 / p50:7.0f}x {np.mean(recall):9.4f} "
                  f"{mates_found / max(mates_total, 1):11.4f}", flush=True)
            del index
        del exact, vectors, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ingest-images", type=int, default=300)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--threshold", type=float, default=0.45,
                        help="distance within which a mate counts as found (the service's "
                             "old fixed cut-off; it now derives one from the gallery's size)")
    parser.add_argument("--ivf-probes", default="32,256",
                        help="also measure FAISS IVF-Flat with these nprobe (sizes of 100k and up)")
    parser.add_argument("--pq-probes", default="32,64",
                        help="also measure facesearch's compressed IVF-PQ index with these probes")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--measure-ingest", help=argparse.SUPPRESS)
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args()
    if args.measure_ingest:
        files = ingest_files(args.ingest_images)
        if args.measure_ingest == "face_recognition":
            print(*bench_face_recognition(files))
        else:
            print(*bench_ingest(files, int(args.measure_ingest)))
        return
    if not args.skip_ingest:
        run_ingest(args.ingest_images)
    if not args.skip_search:
        run_search([int(s) for s in args.sizes.split(",")], args.queries, args.threshold,
                   [int(p) for p in args.ivf_probes.split(",") if p],
                   [int(p) for p in args.pq_probes.split(",") if p])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
