"""Crawler throughput against a local website: pages/s, images/s and faces/s.

The site is served on loopback under several host names (127.0.0.1, 127.0.0.2, ...: all of
127/8 is loopback), each with pages of real LFW photos, so that the crawler's per-host
politeness and its concurrency across hosts both show. Usage:

    bash bench/crawl.sh [--hosts 4] [--pages 25] [--images 4] [--delay 0]
"""

from __future__ import annotations

import argparse
import http.server
import shutil
import tempfile
import threading
import time
from pathlib import Path

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from facesearch.types import Actor

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "lfw" / "images"
OPERATOR = Actor(name="bench")


def site_files(hosts: int, pages: int, per_page: int) -> dict[str, dict[str, bytes]]:
    """host -> path -> body: an index per host linking to its pages, each page with photos."""
    photos = sorted(LFW.glob("*/*.jpg"))
    files: dict[str, dict[str, bytes]] = {}
    taken = 0
    for h in range(hosts):
        host = f"127.0.0.{h + 1}"
        files[host] = {"/robots.txt": b"User-agent: *\nAllow: /\n"}
        links = []
        for p in range(pages):
            images = []
            for i in range(per_page):
                photo = photos[taken]
                taken += 1
                files[host][f"/img/{photo.name}"] = photo.read_bytes()
                images.append(f'<img src="/img/{photo.name}" alt="{photo.parent.name}">')
            files[host][f"/page{p}.html"] = (f"<html><head><title>Page {p}</title></head><body>"
                                             + "".join(images) + "</body></html>").encode()
            links.append(f'<a href="/page{p}.html">page {p}</a>')
        files[host]["/"] = ("<html><body>" + "".join(links) + "</body></html>").encode()
    return files


def serve(host: str, files: dict[str, bytes]) -> http.server.ThreadingHTTPServer:
    """One loopback server per host address (127.0.0.x), so nothing listens beyond loopback."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = files.get(self.path.split("?")[0])
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            kind = "text/html" if self.path.endswith((".html", "/")) else (
                "text/plain" if self.path.endswith(".txt") else "image/jpeg")
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--pages", type=int, default=25)
    parser.add_argument("--images", type=int, default=4, help="images per page")
    parser.add_argument("--delay", type=float, default=0.0, help="least seconds between requests to a host")
    args = parser.parse_args()
    files = site_files(args.hosts, args.pages, args.images)
    servers = {host: serve(host, content) for host, content in files.items()}
    home = Path(tempfile.mkdtemp(prefix="facesearch-crawl-bench-"))
    try:
        settings = Settings(home=home / "data", workers=1, crawl_allowed_networks=["127.0.0.0/8"],
                            crawl_delay_seconds=args.delay)
        service = FaceSearchService(settings)
        service.add_source(OPERATOR, "bench", "legitimate_interests", "US")
        seeds = [f"http://{host}:{server.server_address[1]}/" for host, server in servers.items()]
        job = service.start_crawl(OPERATOR, seeds, seeds, "bench", "benchmark", max_depth=1,
                                  max_pages=10_000)
        service.analyzer  # noqa: B018 - load the models before the clock starts
        started = time.perf_counter()
        status = service.run_crawl(OPERATOR, job.id)
        seconds = time.perf_counter() - started
        service.close()
        counts = status.counts
        pages = sum(counts["page"].values())
        images = sum(counts["image"].values())
        faces = counts["totals"]["faces"]
        print(f"site: {args.hosts} hosts x {args.pages} pages x {args.images} LFW photos, "
              f"crawl delay {args.delay} s, concurrency {settings.crawl_concurrency} requests, "
              f"{settings.crawl_host_concurrency} a host")
        print(f"crawled in {seconds:.1f} s: {pages} pages, {images} images, {faces} faces, "
              f"{counts['totals']['bytes'] / 1e6:.1f} MB; outcomes {counts['image']}")
        print(f"pages/s {pages / seconds:.2f}   images/s {images / seconds:.2f}   "
              f"faces/s {faces / seconds:.2f}")
    finally:
        for server in servers.values():
            server.shutdown()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
