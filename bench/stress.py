"""Stress run (not a test): minutes of mixed load against `facesearch serve --workers 2`, then
`facesearch verify`.

Load, all at once on loopback: investigators searching, an admin uploading images to ingest
and deleting faces, anonymous opt-outs (first photo, then the confirming second photo) and bad
uploads (garbage, truncated JPEGs, decompression bombs, a chunked body that lies about its
length), and CLI deletions beside the server. Afterwards the server is stopped and the run
prints: requests by route and status, p50/p99 latency per route, peak RSS of each server
process, erased descriptors found in any file of the data directory (must be 0), what
`facesearch verify` says, and the audit chain's state.

Usage: bash bench/stress.sh [--minutes 10] [--people 40]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from facesearch.config import Settings
from facesearch.service import FaceSearchService

ROOT = Path(__file__).resolve().parent.parent
LFW = Path(os.environ.get("FACESEARCH_LFW_DIR", ROOT.parent / "shared" / "datasets" / "lfw"))
FACESEARCH = str(Path(sys.executable).parent / "facesearch")
PASSWORD = "stress-bench-long-passphrase"
PURPOSE = "criminal investigation"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Set-up ------------------------------------------------------------------------------------------

def people(count: int) -> list[list[Path]]:
    """Photos of the first count LFW people (by name) with at least six photos."""
    chosen = []
    for person in sorted((LFW / "images").iterdir()):
        photos = sorted(person.glob("*.jpg"))
        if len(photos) >= 6:
            chosen.append(photos)
            if len(chosen) == count:
                return chosen
    return chosen


def build(home: Path, gallery: list[list[Path]]) -> dict[str, str]:
    """An admin and an investigator with API keys, and photos 1-3 of each person indexed."""
    service = FaceSearchService(Settings(home=home))
    try:
        operator = service.local_operator("stress")
        service.bootstrap_admin(operator, "admin", PASSWORD, "Stress Agency")
        admin, _, _ = service.login("admin", PASSWORD, "127.0.0.1")
        user = service.create_user(admin, "investigator", PASSWORD, "investigator", "Stress Agency")
        service.approve_user(operator, user.id)
        investigator, _, _ = service.login("investigator", PASSWORD, "127.0.0.1")
        service.add_source(admin, "lfw", "legitimate_interests", "US", "LFW photos")
        summary = service.ingest(admin, [p for photos in gallery for p in photos[1:4]], "lfw")
        log(f"gallery: {summary.images_indexed} images, {summary.faces_indexed} faces")
        return {"admin": service.create_api_key(admin, "stress")[1],
                "investigator": service.create_api_key(investigator, "stress")[1]}
    finally:
        service.close()


def descriptors(home: Path) -> dict[int, bytes]:
    """Every stored face's descriptor bytes, by id, read straight from the database."""
    with sqlite3.connect(home / "metadata.sqlite3", timeout=60) as db:
        return dict(db.execute("SELECT id, embedding FROM faces").fetchall())


# Hostile uploads -----------------------------------------------------------------------------------

def png_bomb(side: int = 30_000) -> bytes:
    """A PNG that declares side x side pixels in a few kilobytes of zeros."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(b"\0" * (side // 8 + 1) * 64, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def bad_uploads(sample: bytes) -> list[tuple[str, bytes]]:
    out = io.BytesIO()
    Image.new("RGB", (1, 1)).save(out, "PNG")
    return [("garbage", os.urandom(4096)), ("truncated", sample[: len(sample) // 3]),
            ("bomb", png_bomb()), ("empty", b""), ("tiny", out.getvalue())]


def lying_chunked_request(url: str) -> int:
    """A body sent chunked while Content-Length claims 10 bytes: 8 MiB offered."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /api/v1/public/opt-out HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                     b"Transfer-Encoding: chunked\r\nContent-Type: multipart/form-data; boundary=b\r\n\r\n")
        try:
            for _ in range(128):
                piece = b"x" * 65536
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection early: what it should do
        reply = sock.recv(200)
    try:
        return int(reply.split(b" ")[1])
    except (IndexError, ValueError):
        return 0


# The run -------------------------------------------------------------------------------------------

class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.latency: dict[str, list[float]] = defaultdict(list)

    def record(self, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.statuses[(route, status)] += 1
            self.latency[route].append(seconds)

    def call(self, route: str, send) -> httpx.Response | None:  # noqa: ANN001
        started = time.perf_counter()
        try:
            response = send()
            status = response.status_code
        except httpx.HTTPError:
            response, status = None, 0  # 0: no answer (connection refused, reset, timeout)
        self.record(route, status, time.perf_counter() - started)
        return response


def run(url: str, home: Path, keys: dict[str, str], gallery: list[list[Path]], seconds: float,
        recorder: Recorder) -> None:
    stop_at = time.monotonic() + seconds
    investigator = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['investigator']}"},
                                timeout=120)
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['admin']}"}, timeout=120)
    case = investigator.post("/api/v1/cases", json={"number": "STRESS-1", "purpose": PURPOSE}).json()
    rng = random.Random(7)

    def searches() -> None:
        while time.monotonic() < stop_at:
            photo = rng.choice(gallery)[0].read_bytes()
            recorder.call("search", lambda: investigator.post(
                f"/api/v1/cases/{case['id']}/searches", files={"probe": ("p.jpg", photo, "image/jpeg")}))

    floor = len(descriptors(home)) // 2  # deletions never take the gallery below half

    def admin_work() -> None:
        spare = [p for photos in gallery for p in photos[4:6]]
        while time.monotonic() < stop_at:
            if spare and rng.random() < 0.5:
                batch = [spare.pop() for _ in range(min(2, len(spare)))]
                recorder.call("ingest", lambda: admin.post("/api/v1/ingest-jobs", data={"source": "lfw"},
                              files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in batch]))
            else:
                ids = list(descriptors(home))
                if len(ids) > floor:
                    face = rng.choice(ids)
                    recorder.call("delete", lambda: admin.delete(f"/api/v1/faces/{face}"))
            time.sleep(1.0)

    def opt_outs() -> None:
        anonymous = httpx.Client(base_url=url, timeout=120)
        people_left = list(gallery[-10:])
        while time.monotonic() < stop_at and people_left:
            photos = people_left.pop()
            first = recorder.call("opt-out", lambda: anonymous.post(
                "/api/v1/public/opt-out", files={"selfie": ("a.jpg", photos[0].read_bytes(), "image/jpeg")}))
            if first is not None and first.status_code == 202:
                token = first.json().get("confirm_token")
                recorder.call("opt-out confirm", lambda: anonymous.post(
                    "/api/v1/public/opt-out/confirm", data={"token": token},
                    files={"selfie": ("b.jpg", photos[5].read_bytes(), "image/jpeg")}))
            time.sleep(20)

    def bad() -> None:
        anonymous = httpx.Client(base_url=url, timeout=120)
        corpus = bad_uploads(gallery[0][0].read_bytes())
        while time.monotonic() < stop_at:
            name, data = rng.choice(corpus)
            recorder.call(f"bad upload: {name}", lambda: anonymous.post(
                "/api/v1/public/opt-out", files={"selfie": ("x.jpg", data, "image/jpeg")}))
            recorder.call(f"bad probe: {name}", lambda: investigator.post(
                f"/api/v1/cases/{case['id']}/searches", files={"probe": ("x.jpg", data, "image/jpeg")}))
            if rng.random() < 0.1:
                started = time.perf_counter()
                recorder.record("chunked lie", lying_chunked_request(url), time.perf_counter() - started)
            time.sleep(0.5)

    def cli_deletions() -> None:
        while time.monotonic() < stop_at:
            time.sleep(15)
            ids = list(descriptors(home))
            if len(ids) > floor:
                started = time.perf_counter()
                done = subprocess.run([FACESEARCH, "--data", str(home), "delete", "--face",
                                       str(rng.choice(ids))], capture_output=True, timeout=300)
                recorder.record("cli delete", 200 if done.returncode == 0 else 500 + done.returncode,
                                time.perf_counter() - started)

    threads = [threading.Thread(target=work) for work in
               (searches, searches, admin_work, opt_outs, bad, cli_deletions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def server_processes(parent: int) -> list[int]:
    """The server's process and its workers (children)."""
    found = [parent]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--people", type=int, default=40)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="facesearch-stress-")) / "data"
    gallery = people(args.people)
    keys = build(home, gallery)
    known = descriptors(home)
    port = free_port()
    environment = {**os.environ, "FACESEARCH_HOME": str(home), "FACESEARCH_SERVER_WORKERS": "2",
                   "FACESEARCH_SEARCHES_PER_MINUTE_USER": "100000",
                   "FACESEARCH_SEARCHES_PER_MINUTE_ORGANISATION": "100000",
                   "FACESEARCH_SEARCHES_PER_DAY_USER": "1000000",
                   "FACESEARCH_SEARCHES_PER_DAY_ORGANISATION": "1000000",
                   # One address sends every anonymous request here: let them reach the decoder.
                   "FACESEARCH_PUBLIC_REQUESTS_PER_DAY": "100000",
                   "FACESEARCH_PUBLIC_ATTEMPTS_PER_HOUR": "100000"}
    server = subprocess.Popen([FACESEARCH, "serve", "--port", str(port)], env=environment,
                              stdout=subprocess.DEVNULL, stderr=open(home.parent / "server.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(url + "/login", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            if time.monotonic() > deadline or server.poll() is not None:
                sys.exit(f"the server did not start; see {home.parent / 'server.log'}")
            time.sleep(0.2)
    log(f"server on {url}, workers {server_processes(server.pid)[1:]}; load for {args.minutes} min")
    recorder = Recorder()
    sampler_stop = threading.Event()

    def sample() -> None:  # the gallery's descriptors as they come and go, to look for later
        while not sampler_stop.wait(5):
            known.update(descriptors(home))

    sampler = threading.Thread(target=sample)
    sampler.start()
    run(url, home, keys, gallery, args.minutes * 60, recorder)
    sampler_stop.set()
    sampler.join()
    known.update(descriptors(home))
    peaks = {pid: peak_rss_mib(pid) for pid in server_processes(server.pid)}
    server.terminate()
    server.wait(60)

    live = descriptors(home)
    with sqlite3.connect(home / "metadata.sqlite3") as db:
        erased_ids = {r[0] for r in db.execute("SELECT face_id FROM erasure_log")}
    erased = [known[i] for i in erased_ids if i in known and i not in live]
    found = [str(p) for p in home.rglob("*") if p.is_file()
             and any(vector in p.read_bytes() for vector in erased)]
    verify = subprocess.run([FACESEARCH, "--data", str(home), "verify"], capture_output=True, text=True)
    chain = subprocess.run([FACESEARCH, "--data", str(home), "audit", "verify"], capture_output=True,
                           text=True)

    print(f"\n== stress: {args.minutes} min, serve --workers 2, {len(gallery)} people ==")
    print("requests by route and status:")
    for (route, status), count in sorted(recorder.statuses.items()):
        print(f"  {route:28} {status:4}  {count}")
    print("latency by route (ms):")
    for route, values in sorted(recorder.latency.items()):
        print(f"  {route:28} p50 {np.percentile(values, 50) * 1000:8.1f}   "
              f"p99 {np.percentile(values, 99) * 1000:8.1f}   n {len(values)}")
    print("peak RSS (MiB): " + ", ".join(f"pid {pid} {mib:.0f}" for pid, mib in peaks.items())
          + "  (the first is the supervising process)")
    print(f"faces erased during the run: {len(erased_ids)}; their descriptors found in files: "
          f"{len(found)} {found[:5]}")
    print(f"verify (exit {verify.returncode}):\n  " + verify.stdout.strip().replace("\n", "\n  "))
    print(f"audit chain (exit {chain.returncode}): {chain.stdout.strip()}")


if __name__ == "__main__":
    main()
