"""Load benchmark of the search API (not a test): concurrent clients against `facesearch serve`
over a gallery of 100,000+ faces, with a single client as the baseline, in one run.

The gallery: real LFW photos ingested through the service (photos 1-3 of each chosen person,
so that photo 0 of each, the probe, has true mates in the gallery), plus distractor faces
written straight into the metadata store. Distractor descriptors are drawn from Gaussians
fitted to the real descriptors, never uniform noise: identity centres from the real faces'
between-person spread, faces around each centre from their within-person spread, then scaled
to unit length as every stored descriptor is. The index is then rebuilt (HNSW above
FACESEARCH_EXACT_INDEX_MAX faces) and the server started on that data directory.

Usage: bash bench/load.sh [--clients 4] [--requests 200] [--faces 100000] [--server-workers 1]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from gallery import DistractorModel

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from facesearch.store.metadata import NewImage, utc_now
from facesearch.types import Actor, Box, Face

ROOT = Path(__file__).resolve().parent.parent
LFW = Path(os.environ.get("FACESEARCH_LFW_DIR", ROOT.parent / "shared" / "datasets" / "lfw"))
FACESEARCH = str(Path(sys.executable).parent / "facesearch")
PASSWORD = "load-bench-long-passphrase"
PURPOSE = "criminal investigation"
FACES_PER_FAKE_IMAGE = 200  # distractor faces written per placeholder image row
PLACEHOLDER_CROP = "distractors/placeholder.jpg"  # one crop file that every distractor names


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# Gallery ---------------------------------------------------------------------------------------

def choose_people(service: FaceSearchService, actor: Actor, count: int) -> list[tuple[str, list[Path]]]:
    """The first count LFW people (by name) with at least 3 photos and a face that the
    detector finds in photo 0, the probe: (name, photos sorted)."""
    chosen = []
    for person in sorted((LFW / "images").iterdir()):
        photos = sorted(person.glob("*.jpg"))
        if len(photos) >= 3 and service.detect_faces(actor, photos[0].read_bytes()):
            chosen.append((person.name, photos))
            if len(chosen) == count:
                break
    return chosen


def insert_distractors(service: FaceSearchService, source_id: int, vectors: np.ndarray) -> None:
    """Write the distractors straight into the store: many faces per placeholder image row,
    all naming one shared crop file."""
    crop = service.crops.path(PLACEHOLDER_CROP)
    crop.parent.mkdir(parents=True, exist_ok=True)
    real_crop = next(service.crops.root.rglob("*_0.jpg"))
    shutil.copyfile(real_crop, crop)
    box = Box(0, 0, 150, 150)
    now = utc_now()
    for number, start in enumerate(range(0, len(vectors), FACES_PER_FAKE_IMAGE)):
        chunk = vectors[start:start + FACES_PER_FAKE_IMAGE]
        image = NewImage(sha256=hashlib.sha256(f"distractor-{number}".encode()).hexdigest(),
                         location=f"distractor:{number}", page_url=None, source_id=source_id,
                         jurisdiction="US", collected_at=now, width=150, height=150, format="JPEG")
        faces = [Face(box=box, score=1.0, landmarks=[], quality=1.0, embedding=v, chip_jpeg=b"")
                 for v in chunk]
        with service.store.transaction() as conn:
            service.store.add_image(conn, image, faces, [PLACEHOLDER_CROP] * len(faces), withheld=0,
                                    embedder=service.live_embedder)


@dataclass
class Gallery:
    people: list[tuple[str, list[Path]]]  # (name, photos): photo 0 is the probe
    admin_key: str
    investigator_key: str
    real_faces: int
    distractors: int
    timings: dict[str, float] = field(default_factory=dict)


def build_gallery(home: Path, people_count: int, total_faces: int, seed: int) -> Gallery:
    service = FaceSearchService(Settings(home=home))  # ingest workers: one per core
    timings = {}
    try:
        operator = service.local_operator("load-bench")
        service.bootstrap_admin(operator, "admin", PASSWORD, "Bench Agency")
        admin, _, _ = service.login("admin", PASSWORD, "127.0.0.1")
        investigator = service.create_user(admin, "investigator", PASSWORD, "investigator",
                                           "Bench Agency")
        service.approve_user(operator, investigator.id)
        inv, _, _ = service.login("investigator", PASSWORD, "127.0.0.1")
        keys = (service.create_api_key(admin, "load")[1], service.create_api_key(inv, "load")[1])

        people = choose_people(service, inv, people_count)
        photos = [p for _, person_photos in people for p in person_photos[1:4]]
        service.add_source(admin, "lfw", "legitimate_interests", "US", "LFW photos")
        started = time.perf_counter()
        summary = service.ingest(admin, photos, "lfw")
        timings["ingest_s"] = time.perf_counter() - started
        log(f"ingested {summary.images_indexed}/{len(photos)} LFW photos, "
            f"{summary.faces_indexed} faces, in {timings['ingest_s']:.1f} s")

        ids, real = (np.concatenate(parts) for parts in zip(*service.store.face_vectors()))
        rows = service.store.candidate_rows(ids.tolist())
        labels = np.array([Path(rows[int(i)]["location"]).parent.name for i in ids])
        norms = np.linalg.norm(real, axis=1)
        log(f"real descriptors: {len(real)}, lengths {norms.min():.4f}-{norms.max():.4f}")

        count = max(0, total_faces - len(real))
        started = time.perf_counter()
        vectors = DistractorModel(real, labels).draw(count, np.random.default_rng(seed))
        service.add_source(admin, "distractors", "legitimate_interests", "US",
                           "synthetic descriptors fitted to the LFW ones")
        source = service.store.source("distractors")
        assert source is not None
        insert_distractors(service, source.id, vectors)
        timings["distractors_s"] = time.perf_counter() - started
        log(f"wrote {count} distractor faces in {timings['distractors_s']:.1f} s")

        started = time.perf_counter()
        indexed = service.reindex(admin)
        timings["reindex_s"] = time.perf_counter() - started
        log(f"reindexed {indexed} faces ({service.index.kind}) in {timings['reindex_s']:.1f} s")
        return Gallery(people, keys[0], keys[1], len(real), count, timings)
    finally:
        service.close()


# Server ----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, server_workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    unlimited = "1000000000"
    environment = {**os.environ, "FACESEARCH_HOME": str(home), "FACESEARCH_WORKERS": "1",
                   "FACESEARCH_SERVER_WORKERS": str(server_workers),
                   "FACESEARCH_SEARCHES_PER_MINUTE_USER": unlimited,
                   "FACESEARCH_SEARCHES_PER_MINUTE_ORGANISATION": unlimited,
                   "FACESEARCH_SEARCHES_PER_DAY_USER": unlimited,
                   "FACESEARCH_SEARCHES_PER_DAY_ORGANISATION": unlimited}
    server_log = open(home / "server.log", "ab")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([FACESEARCH, "serve", "--port", str(port)], env=environment,
                               stdout=server_log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited:\n" + (home / "server.log").read_text()[-3000:])
        try:
            if httpx.get(url + "/login", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not start in 120 s")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


# Load ------------------------------------------------------------------------------------------

@dataclass
class Run:
    clients: int
    requests: int
    seconds: float
    latencies: list[float]  # seconds, successful requests only
    errors: list[str]
    hits: int  # searches whose first candidate is the probed person

    def figures(self) -> dict[str, float]:
        p50, p90, p99 = np.percentile(self.latencies, [50, 90, 99]) * 1000 if self.latencies else [np.nan] * 3
        return {"throughput": self.requests / self.seconds, "p50": p50, "p90": p90, "p99": p99,
                "rank1": self.hits / max(len(self.latencies), 1)}


def run_load(url: str, key: str, case_id: int, probes: list[tuple[str, bytes]], clients: int,
             requests: int) -> Run:
    """requests searches by clients threads, each with its own connection, probes in turn."""
    latencies: list[float] = []
    errors: list[str] = []
    hits = [0]
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                          timeout=300) as http:
            while True:
                with lock:
                    number = next(counter, None)
                if number is None:
                    return
                person, photo = probes[number % len(probes)]
                started = time.perf_counter()
                try:
                    answer = http.post(f"/api/v1/cases/{case_id}/searches",
                                       files={"probe": ("probe.jpg", photo, "image/jpeg")},
                                       data={"face": "largest"})
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(f"{person}: {type(exc).__name__}: {exc}")
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    if answer.status_code != 201:
                        errors.append(f"{person}: HTTP {answer.status_code} {answer.text[:200]}")
                        continue
                    latencies.append(elapsed)
                    faces = answer.json()["faces"]
                    first = faces[0]["candidates"][:1] if faces else []
                    hits[0] += bool(first) and Path(first[0]["location"]).parent.name == person

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Run(clients, requests, time.perf_counter() - started, latencies, errors, hits[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--requests", type=int, default=200,
                        help="searches in all, per run (default 200); the C=1 baseline makes as many")
    parser.add_argument("--faces", type=int, default=100_000,
                        help="gallery size: real LFW faces plus distractors (default 100000)")
    parser.add_argument("--people", type=int, default=120,
                        help="LFW people ingested, photos 1-3 each; photo 0 is the probe (default 120)")
    parser.add_argument("--server-workers", type=int, default=1,
                        help="server processes: FACESEARCH_SERVER_WORKERS (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="distractor seed")
    parser.add_argument("--home", type=Path, help="data directory to build (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    if not (LFW / "images").is_dir():
        parser.error(f"LFW not found at {LFW}")

    home = args.home or Path(tempfile.mkdtemp(prefix="fs-load-")) / "data"
    if home.exists() and any(home.iterdir()):
        parser.error(f"{home} is not empty")
    try:
        total = time.perf_counter()
        gallery = build_gallery(home, args.people, args.faces, args.seed)
        process, url = start_server(home, args.server_workers)
        try:
            admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {gallery.admin_key}"},
                                 timeout=300)
            investigator = httpx.Client(base_url=url, timeout=300, headers={
                "Authorization": f"Bearer {gallery.investigator_key}"})
            case = investigator.post("/api/v1/cases", json={"number": "LOAD-1", "purpose": PURPOSE})
            case.raise_for_status()
            case_id = case.json()["id"]
            probes = [(name, photos[0].read_bytes()) for name, photos in gallery.people]
            # Warm-up, not measured: each server process loads the index and the dlib models
            # on its first search. Several connections, so that every process gets some.
            warm = run_load(url, gallery.investigator_key, case_id, probes,
                            4 * args.server_workers, 8 * args.server_workers)
            stats = admin.get("/api/v1/stats").json()
            log(f"warm-up: {len(warm.latencies)} searches, {len(warm.errors)} errors")
            runs = [run_load(url, gallery.investigator_key, case_id, probes, clients, args.requests)
                    for clients in (1, args.clients)]
        finally:
            stop_server(process)
        report(gallery, stats, args, warm, runs, time.perf_counter() - total)
        return 1 if warm.errors or any(r.errors for r in runs) else 0
    finally:
        if args.keep or args.home:
            log(f"data directory kept: {home}")
        else:
            shutil.rmtree(home.parent, ignore_errors=True)


def report(gallery: Gallery, stats: dict, args: argparse.Namespace, warm: Run, runs: list[Run],
           seconds: float) -> None:
    print(f"gallery: {stats['faces']} faces ({gallery.real_faces} real LFW faces of "
          f"{len(gallery.people)} people + {gallery.distractors} fitted distractors), "
          f"index {stats['index_kind']} holding {stats['index_vectors']} vectors")
    print(f"server: {args.server_workers} process(es), {os.cpu_count()} cores; probes: photo 0 of "
          f"each of the {len(gallery.people)} people, largest face, default top-k")
    print(f"build: ingest {gallery.timings['ingest_s']:.1f} s, distractors "
          f"{gallery.timings['distractors_s']:.1f} s, reindex {gallery.timings['reindex_s']:.1f} s")
    print(f"{'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>7} {'p50 ms':>8} {'p90 ms':>8} "
          f"{'p99 ms':>8} {'rank-1':>7}")
    for run in runs:
        f = run.figures()
        print(f"{run.clients:7d} {run.requests:8d} {len(run.errors):6d} {f['throughput']:7.2f} "
              f"{f['p50']:8.1f} {f['p90']:8.1f} {f['p99']:8.1f} {f['rank1']:7.3f}")
    base, loaded = runs[0].figures(), runs[-1].figures()
    print(f"C={runs[-1].clients} vs C=1: throughput x{loaded['throughput'] / base['throughput']:.2f}, "
          f"p50 latency x{loaded['p50'] / base['p50']:.2f}, p99 latency x{loaded['p99'] / base['p99']:.2f}")
    errors = warm.errors + [e for run in runs for e in run.errors]
    for error in errors[:10]:
        print(f"error: {error}")
    print(f"errors: {len(errors)}; whole run {seconds:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
