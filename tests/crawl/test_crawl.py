"""The crawler against the loopback test website: exactly the allowed images indexed with
their provenance, everything else refused and counted by reason, politeness, pausing,
cancelling, resumption after SIGKILL, URL lists, suppressed people and excluded jurisdictions
never indexed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from facesearch.config import Settings
from facesearch.errors import InvalidRequest, PolicyRefused
from facesearch.service import FaceSearchService
from facesearch.service.crawl import CrawlStatus
from facesearch.store.crawl import CrawlJob
from facesearch.vision import FaceAnalyzer
from tests.conftest import OPERATOR, lfw_photos
from tests.crawl.site import Request, Site, start_site

FACESEARCH = str(Path(sys.executable).parent / "facesearch")
CRAWL_ENV = {"FACESEARCH_CRAWL_ALLOWED_NETWORKS": "127.0.0.1/32", "FACESEARCH_CRAWL_TIMEOUT_SECONDS": "1",
             "FACESEARCH_CRAWL_MAX_BYTES": "2000000", "FACESEARCH_CRAWL_DELAY_SECONDS": "0",
             "FACESEARCH_WORKERS": "1"}
USER_AGENT = "facesearch-test-crawler/7 (+http://operator.example/opt-out)"


def crawl_settings(home: Path, **overrides: object) -> Settings:
    return Settings(**{"home": home, "workers": 1, "crawl_allowed_networks": ["127.0.0.1/32"],
                       "crawl_timeout_seconds": 1, "crawl_max_bytes": 2_000_000,
                       "crawl_delay_seconds": 0, **overrides})


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([FACESEARCH, "--data", str(home), *args], capture_output=True, text=True,
                          env={**os.environ, **CRAWL_ENV, **(env or {})}, timeout=300, check=False)


@pytest.fixture(scope="module")
def site():
    site = start_site()
    yield site
    site.stop()


def crawl(service: FaceSearchService, site: Site, source: str = "web") -> CrawlStatus:
    if service.store.source(source) is None:
        service.add_source(OPERATOR, source, "legitimate_interests", "US")
    job = service.start_crawl(OPERATOR, [site.url + "/"], [site.url + "/"], source, "test collection",
                              max_depth=3)
    return service.run_crawl(OPERATOR, job.id)


def outcomes(home: Path, job_id: int) -> dict[str, str]:
    """url -> state[:reason] for every frontier row of the job."""
    with sqlite3.connect(home / "metadata.sqlite3") as db:
        rows = db.execute("SELECT url, kind, state, reason FROM crawl_urls WHERE job_id = ?", (job_id,))
        return {f"{kind} {url}": f"{state}:{reason}" if reason else state for url, kind, state, reason in rows}


def by_url(home: Path, job_id: int) -> dict[str, str]:
    """url -> state[:reason], pages and images together."""
    return {key.split(" ", 1)[1]: value for key, value in outcomes(home, job_id).items()}


def left_queued(home: Path, job_id: int) -> set[str]:
    """The URLs of the job still waiting to be fetched."""
    return {url for url, value in by_url(home, job_id).items() if value == "queued"}


def problems(counts: dict) -> Counter:
    """reason -> number of URLs, over every frontier outcome other than done (refused, failed, skipped,
    or still queued), whatever its state: the crawler's refusals as the site's table keys them."""
    found: Counter = Counter()
    for kind in ("page", "image"):
        for key, n in counts[kind].items():
            state, _, reason = key.partition(":")
            if state != "done":
                found[reason or state] += n
    return found


def indexed(home: Path) -> dict[str, tuple]:
    with sqlite3.connect(home / "metadata.sqlite3") as db:
        rows = db.execute("SELECT location, page_url, provenance, sha256, "
                          "(SELECT count(*) FROM faces WHERE faces.image_id = images.id) FROM images")
        return {r[0]: (r[1], json.loads(r[2]), r[3], r[4]) for r in rows}


def fetched_during(job: CrawlJob, provenance: dict) -> bool:
    at = datetime.fromisoformat(provenance["fetched_at"])
    assert job.finished_at is not None
    return datetime.fromisoformat(job.created_at) <= at <= datetime.fromisoformat(job.finished_at)


class Crawled(NamedTuple):
    home: Path
    status: CrawlStatus
    requests: list[Request]  # what the site answered during the crawl


@pytest.fixture(scope="module")
def crawled(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Crawled:
    home = tmp_path_factory.mktemp("crawl") / "data"
    first = len(site.log)
    service = FaceSearchService(crawl_settings(home))
    try:
        status = crawl(service, site)
    finally:
        service.close()
    return Crawled(home, status, site.log[first:])


def test_the_crawl_indexes_exactly_the_allowed_images(site: Site, crawled: Crawled) -> None:
    assert crawled.status.job.status == "done"
    images = indexed(crawled.home)
    assert set(images) == site.expected["indexed"]
    assert all(faces == 1 for _, _, _, faces in images.values())
    assert not any(site.hits[path] for path in site.expected["never_requested"])


def test_every_refusal_is_recorded_with_its_reason(site: Site, crawled: Crawled) -> None:
    found = by_url(crawled.home, crawled.status.job.id)
    for url, reason in site.expected["refused"].items():
        assert found.get(url, "").endswith(":" + reason), (url, found.get(url), reason)
    # Nothing beyond the table was refused, failed or skipped, and each reason is counted
    # exactly as often as the table has it.
    assert {url for url, value in found.items() if not value.startswith("done")} == set(
        site.expected["refused"])
    assert problems(crawled.status.counts) == Counter(site.expected["refused"].values())
    assert crawled.status.counts["page"]["done"] == len(site.expected["pages"])
    # Indexed images, /redirect/ok.jpg counted under its own URL for /images/e-2.jpg.
    assert crawled.status.counts["image"]["done"] == len(site.expected["indexed"])


def test_every_indexed_image_carries_its_page_title_alt_text_and_fetch_time(
        site: Site, crawled: Crawled) -> None:
    images = indexed(crawled.home)
    for url, known in site.expected["provenance"].items():
        page_url, provenance, _, _ = images[url]
        assert page_url == known["page_url"], url
        assert provenance["page_title"] == known["page_title"], url
        assert provenance["alt_text"] == known["alt_text"], url
        assert provenance["crawl_job"] == crawled.status.job.id
        assert fetched_during(crawled.status.job, provenance), url


def test_the_crawl_delay_of_robots_txt_spaces_requests_to_the_host(crawled: Crawled) -> None:
    times = sorted(r.at for r in crawled.requests if r.host.startswith("127.0.0.1"))
    gaps = [b - a for a, b in pairwise(times)]
    assert len(gaps) > 20 and min(gaps) >= 0.19


def test_a_second_crawl_asks_conditionally_and_changes_nothing(site: Site, crawled: Crawled) -> None:
    home = crawled.home
    before = indexed(home)
    service = FaceSearchService(crawl_settings(home))
    try:
        again = crawl(service, site)
    finally:
        service.close()
    assert indexed(home) == before
    # Every page and image fetched before was asked with its validators and answered 304;
    # an unchanged page still yields the links and images it had.
    assert again.counts["page"].get("done:not_modified") == len(site.expected["pages"])
    assert again.counts["image"].get("done:not_modified") == len(site.expected["indexed"])
    assert sum(site.not_modified.values()) >= len(site.expected["pages"]) + len(site.expected["indexed"])
    assert again.counts["totals"]["faces"] == len(site.expected["indexed"])


def test_a_crawl_without_an_allowlist_is_refused(tmp_path: Path, site: Site) -> None:
    service = FaceSearchService(crawl_settings(tmp_path / "data"))
    try:
        service.add_source(OPERATOR, "web", "legitimate_interests", "US")
        with pytest.raises(PolicyRefused, match="Art. 5"):
            service.start_crawl(OPERATOR, [site.url + "/"], [], "web", "everything")
        assert service.trail.records()[-1]["action"] == "crawl.start.refused"
    finally:
        service.close()


def test_a_suppressed_person_found_by_the_crawler_is_never_indexed(tmp_path: Path, site: Site) -> None:
    service = FaceSearchService(crawl_settings(tmp_path / "data"))
    try:
        service.suppress(OPERATOR, lfw_photos("Aaron_Peirsol")[0].read_bytes(), "objection 17")
        status = crawl(service, site)
        images = indexed(tmp_path / "data")
        assert not any("/a-" in url for url in images)
        assert set(images) == {u for u in site.expected["indexed"] if "/a-" not in u}
        assert status.counts["image"].get("refused:suppressed") == 3
    finally:
        service.close()


def collection(home: Path) -> dict[str, dict]:
    """Per indexed image URL: its page, hash, provenance and faces ((box, descriptor) in face
    order)."""
    with sqlite3.connect(home / "metadata.sqlite3") as db:
        images = {url: {"page_url": page, "sha256": sha, "provenance": json.loads(provenance),
                        "faces": []}
                  for url, page, sha, provenance in db.execute(
                      "SELECT location, page_url, sha256, provenance FROM images")}
        for url, *box, descriptor in db.execute(
                "SELECT location, box_left, box_top, box_right, box_bottom, embedding FROM faces "
                "JOIN images ON images.id = faces.image_id ORDER BY faces.face_index"):
            images[url]["faces"].append((np.array(box, float), np.frombuffer(descriptor, "<f4")))
    return images


def probe_hits(home: Path, probe: np.ndarray) -> list[tuple[str, int] | None]:
    """What the data directory's vector index returns for the probe (every face it holds,
    nearest first), as (image URL, face number); None for a vector with no face behind it."""
    service = FaceSearchService(crawl_settings(home))
    try:
        _, ids = service.index.search(probe, 64)
    finally:
        service.close()
    with sqlite3.connect(home / "metadata.sqlite3") as db:
        faces = {face_id: (url, number) for face_id, url, number in db.execute(
            "SELECT faces.id, location, face_index FROM faces JOIN images ON images.id = faces.image_id")}
    return [faces.get(int(face_id)) for face_id in ids[0] if face_id >= 0]


def test_a_crawl_killed_with_sigkill_resumes_to_the_state_of_an_uninterrupted_one(
        site: Site, crawled: Crawled, tmp_path: Path) -> None:
    home = tmp_path / "data"
    service = FaceSearchService(crawl_settings(home))
    try:
        service.add_source(OPERATOR, "web", "legitimate_interests", "US")
    finally:
        service.close()
    assert cli(home, "crawl", "start", "--source", "web", "--purpose", "test collection", "--seed",
               site.url + "/", "--allow", site.url + "/", "--depth", "3", "--no-run").returncode == 0
    victim = subprocess.Popen([FACESEARCH, "--data", str(home), "crawl", "run", "1"],
                              env={**os.environ, **CRAWL_ENV},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if len(indexed(home)) >= 3 if (home / "metadata.sqlite3").exists() else False:
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert 0 < len(indexed(home)) < len(site.expected["indexed"])  # killed mid-crawl
    done = cli(home, "crawl", "run", "1")
    assert done.returncode == 0, done.stderr
    assert outcomes(home, 1) == outcomes(crawled.home, crawled.status.job.id)
    ours, theirs = collection(home), collection(crawled.home)
    assert ours.keys() == theirs.keys()
    for url, clean in theirs.items():
        resumed = ours[url]
        assert (resumed["page_url"], resumed["sha256"]) == (clean["page_url"], clean["sha256"]), url
        # Fetch times differ between the runs; page title, alt text and job must not.
        assert resumed["provenance"].pop("fetched_at") and clean["provenance"].pop("fetched_at")
        assert resumed["provenance"] == clean["provenance"], url
        assert len(resumed["faces"]) == len(clean["faces"]), url
        for (box, descriptor), (clean_box, clean_descriptor) in zip(resumed["faces"], clean["faces"]):
            assert np.allclose(box, clean_box, rtol=0, atol=1e-6), url
            assert np.allclose(descriptor, clean_descriptor, rtol=0, atol=1e-6), url
    # The vector index holds the same faces: no vector lost or left over by the kill.
    pixels = np.asarray(Image.open(lfw_photos("Aaron_Peirsol")[0]).convert("RGB"))
    probe = FaceAnalyzer(crawl_settings(tmp_path / "probe")).analyse([pixels], mirror=False)[0][0]
    hits = probe_hits(home, probe.embedding)
    assert hits == probe_hits(crawled.home, probe.embedding)
    assert len(hits) == len(site.expected["indexed"]) and hits[0][0].startswith(site.url + "/images/a-")


def write_warc(path: Path, images: list[tuple[str, bytes]], page: str,
               html: bytes = b"<html></html>", others: list[tuple[str, bytes, dict[str, str]]] = ()) -> None:
    """A WARC archive as a web archiver writes it: one HTML page, then a request (with that
    page as Referer) and a response record per image; others are image responses with no
    request record, each with extra response headers."""
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    def response(url: str, body: bytes, content_type: str, extra: dict[str, str]) -> None:
        headers = StatusAndHeaders("200 OK", [("Content-Type", content_type), *extra.items()],
                                   protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(url, "response", payload=BytesIO(body),
                                                      http_headers=headers))

    with open(path, "wb") as stream:
        writer = WARCWriter(stream, gzip=True)
        response(page, html, "text/html", {})
        for url, body in images:
            request = StatusAndHeaders("GET / HTTP/1.1", [("Referer", page)], is_http_request=True)
            writer.write_record(writer.create_warc_record(url, "request", payload=BytesIO(b""),
                                                          http_headers=request))
            response(url, body, "image/jpeg", {})
        for url, body, extra in others:
            response(url, body, "image/jpeg", extra)


def test_a_warc_archive_is_indexed_with_the_same_provenance_and_policy(tmp_path: Path) -> None:
    archive = tmp_path / "capture.warc.gz"
    photos = [lfw_photos("Aaron_Peirsol")[1], lfw_photos("Abdullah")[1], lfw_photos("Adam_Sandler")[1],
              lfw_photos("Aaron_Peirsol")[2], lfw_photos("Abdullah")[2]]
    images = [(f"https://news.example/img/{p.name}", p.read_bytes()) for p in photos[:3]]
    images.append(("https://news.example/img/copy.jpg", photos[0].read_bytes()))  # same bytes
    page = (b"<html><head><title>Swim final</title></head><body>"
            b'<img src="/img/' + photos[0].name.encode() + b'" alt="The winner">'
            b'<img src="/embedded.jpg" alt="On the podium"></body></html>')
    write_warc(archive, images, "https://news.example/story.html", page, others=[
        ("https://news.example/embedded.jpg", photos[3].read_bytes(), {}),  # no request record
        ("https://news.example/private.jpg", photos[4].read_bytes(), {"X-Robots-Tag": "noimageindex"})])
    service = FaceSearchService(crawl_settings(tmp_path / "data"))
    try:
        service.add_source(OPERATOR, "archive", "legitimate_interests", "US")
        service.suppress(OPERATOR, lfw_photos("Adam_Sandler")[0].read_bytes(), "objection 9")
        counts = service.ingest_warc(OPERATOR, archive, "archive")
    finally:
        service.close()
    assert counts == {"done": 3, "skipped:duplicate": 1, "refused:suppressed": 1, "refused:noimageindex": 1}
    stored = indexed(tmp_path / "data")
    assert set(stored) == {images[0][0], images[1][0], "https://news.example/embedded.jpg"}
    for url, alt in ((images[0][0], "The winner"), (images[1][0], ""),
                     ("https://news.example/embedded.jpg", "On the podium")):
        page_url, provenance, _, faces = stored[url]
        assert page_url == "https://news.example/story.html" and faces == 1, url
        assert provenance["page_title"] == "Swim final" and provenance["alt_text"] == alt, url
        assert provenance["warc_file"] == "capture.warc.gz" and provenance["warc_date"], url


def test_images_of_an_archived_page_that_forbids_indexing_them_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "capture.warc.gz"
    write_warc(archive, [("https://news.example/a.jpg", lfw_photos("Aaron_Peirsol")[1].read_bytes())],
               "https://news.example/story.html",
               b'<html><head><meta name="robots" content="noimageindex"></head></html>')
    service = FaceSearchService(crawl_settings(tmp_path / "data"))
    try:
        service.add_source(OPERATOR, "archive", "legitimate_interests", "US")
        assert service.ingest_warc(OPERATOR, archive, "archive") == {"refused:noimageindex": 1}
    finally:
        service.close()
    assert indexed(tmp_path / "data") == {}


def test_a_damaged_archive_is_refused_clearly_and_a_cut_one_keeps_its_whole_images(
        tmp_path: Path) -> None:
    whole = tmp_path / "whole.warc.gz"
    photos = [lfw_photos("Aaron_Peirsol")[1], lfw_photos("Abdullah")[1]]
    write_warc(whole, [(f"https://news.example/{p.name}", p.read_bytes()) for p in photos],
               "https://news.example/story.html")
    (tmp_path / "garbage.warc.gz").write_bytes(b"\x1f\x8b" + bytes(range(256)) * 8)
    # Cut inside the last image: warcio hands over what is there, which decodes as a truncated JPEG.
    (tmp_path / "cut.warc.gz").write_bytes(whole.read_bytes()[:-len(photos[1].read_bytes()) // 2])
    service = FaceSearchService(crawl_settings(tmp_path / "data"))
    try:
        service.add_source(OPERATOR, "archive", "legitimate_interests", "US")
        for name in ("garbage.warc.gz", "missing.warc.gz"):
            with pytest.raises(InvalidRequest, match=name):
                service.ingest_warc(OPERATOR, tmp_path / name, "archive")
        assert service.ingest_warc(OPERATOR, tmp_path / "cut.warc.gz", "archive") == {
            "done": 1, "failed:bad_image": 1}
        records = [r["detail"] for r in service.trail.records() if r["action"] == "crawl.warc"]
    finally:
        service.close()
    assert [(r["file"], "error" in r) for r in records] == [
        ("garbage.warc.gz", True), ("missing.warc.gz", True), ("cut.warc.gz", False)]
    assert set(indexed(tmp_path / "data")) == {f"https://news.example/{photos[0].name}"}


def test_the_status_counts_hosts_and_rates(site: Site, crawled: Crawled) -> None:
    service = FaceSearchService(crawl_settings(crawled.home))
    try:
        fresh = service.crawl_status(OPERATOR, crawled.status.job.id)
    finally:
        service.close()
    assert fresh.hosts[site.url]["done"] >= len(site.expected["indexed"]) + len(site.expected["pages"])
    assert fresh.hosts[site.other_host_url] == {"refused": 1}  # off the allowlist, never fetched
    assert fresh.rates["pages"] > 0 and fresh.rates["faces"] > 0


def test_crawl_status_prints_the_counts_the_service_returns(crawled: Crawled) -> None:
    job_id = crawled.status.job.id
    shown = cli(crawled.home, "crawl", "status", str(job_id))
    assert shown.returncode == 0, shown.stderr
    service = FaceSearchService(crawl_settings(crawled.home))
    try:
        status = service.crawl_status(OPERATOR, job_id)
    finally:
        service.close()
    first, *rest = shown.stdout.splitlines()
    assert first == f"job {job_id}: done, source web, purpose test collection"
    printed = {tuple(fields[:-1]): int(fields[-1]) for fields in (line.split("\t") for line in rest)}
    assert printed == {**{(kind, key): n for kind in ("page", "image")
                          for key, n in status.counts[kind].items()},
                       ("bytes",): status.counts["totals"]["bytes"],
                       ("faces",): status.counts["totals"]["faces"]}
    assert len(printed) > 10  # every kind, state and reason of the site's crawl


def run_until_an_image_is_asked_then(command: str, service: FaceSearchService, job_id: int,
                                     site: Site) -> tuple[CrawlStatus, list[Request]]:
    """Run the job in a thread and, from this one, send command (pause or cancel) as soon as
    the site is asked for the job's first image. Returns what the run returned and the requests
    the site answered during it."""
    first = len(site.log)
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(service.run_crawl, OPERATOR, job_id)
        deadline = time.monotonic() + 60
        while not any(r.path.startswith("/images/") for r in site.log[first:]):
            assert not run.done() and time.monotonic() < deadline, "no image was asked for"
            time.sleep(0.01)
        service.set_crawl_state(OPERATOR, job_id, command)
        status = run.result(timeout=60)
    return status, site.log[first:]


def test_a_paused_crawl_stops_fetching_and_resume_finishes_it_as_if_uninterrupted(
        site: Site, crawled: Crawled, tmp_path: Path) -> None:
    home = tmp_path / "data"
    # Two URLs a batch: the pause lands while most of the frontier is still queued.
    service = FaceSearchService(crawl_settings(home, crawl_concurrency=1))
    try:
        service.add_source(OPERATOR, "web", "legitimate_interests", "US")
        job = service.start_crawl(OPERATOR, [site.url + "/"], [site.url + "/"], "web",
                                  "test collection", max_depth=3)
        status, requests = run_until_an_image_is_asked_then("pause", service, job.id, site)
        with pytest.raises(InvalidRequest, match="resume it first"):
            service.run_crawl(OPERATOR, job.id)
    finally:
        service.close()
    assert status.job.status == "paused" and status.job.finished_at is None
    left = left_queued(home, job.id)
    assert left  # stopped mid-crawl ...
    assert not {urlsplit(url).path for url in left} & {r.path for r in requests}  # ... unasked
    resumed = cli(home, "crawl", "resume", str(job.id))
    assert resumed.returncode == 0, resumed.stderr
    assert outcomes(home, job.id) == outcomes(crawled.home, crawled.status.job.id)
    ours, theirs = indexed(home), indexed(crawled.home)
    assert {u: (p, s, f) for u, (p, _, s, f) in ours.items()} == {
        u: (p, s, f) for u, (p, _, s, f) in theirs.items()}


def test_a_job_paused_before_it_runs_fetches_nothing(site: Site, tmp_path: Path) -> None:
    service = FaceSearchService(crawl_settings(tmp_path / "data"))
    try:
        service.add_source(OPERATOR, "web", "legitimate_interests", "US")
        job = service.start_crawl(OPERATOR, [site.url + "/people/a.html"], [site.url + "/"], "web",
                                  "test collection", max_depth=0)
        first = len(site.log)
        assert service.set_crawl_state(OPERATOR, job.id, "pause").status == "paused"
        with pytest.raises(InvalidRequest, match="resume it first"):
            service.run_crawl(OPERATOR, job.id)
        assert service.crawl_status(OPERATOR, job.id).job.status == "paused"
        assert service.trail.records()[-1]["action"] == "crawl.pause"
    finally:
        service.close()
    assert site.log[first:] == []
    assert left_queued(tmp_path / "data", job.id) == {site.url + "/people/a.html"}


def test_a_cancelled_crawl_fetches_nothing_more_and_cannot_be_run_or_resumed(
        site: Site, tmp_path: Path) -> None:
    home = tmp_path / "data"
    service = FaceSearchService(crawl_settings(home, crawl_concurrency=1))
    try:
        service.add_source(OPERATOR, "web", "legitimate_interests", "US")
        # One page and its six images, two URLs a batch.
        job = service.start_crawl(OPERATOR, [site.url + "/people/a.html"], [site.url + "/"], "web",
                                  "test collection", max_depth=0)
        status, requests = run_until_an_image_is_asked_then("cancel", service, job.id, site)
        with pytest.raises(InvalidRequest, match="cancelled"):
            service.set_crawl_state(OPERATOR, job.id, "resume")
    finally:
        service.close()
    assert status.job.status == "cancelled" and status.job.finished_at
    left = left_queued(home, job.id)
    assert left and not {urlsplit(url).path for url in left} & {r.path for r in requests}
    first = len(site.log)
    again = cli(home, "crawl", "run", str(job.id))
    assert again.returncode == 2 and "error: the job is cancelled" in again.stderr
    assert site.log[first:] == []
    assert left_queued(home, job.id) == left


class Listed(NamedTuple):
    home: Path
    urls: dict[str, str]  # URL in the list -> the outcome it must have
    requests: list[Request]  # what the site answered during the crawl


@pytest.fixture(scope="module")
def listed(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Listed:
    """A URL list collected with `crawl start --urls`, by a crawler with its own User-Agent."""
    home = tmp_path_factory.mktemp("list") / "data"
    service = FaceSearchService(crawl_settings(home))
    try:
        service.add_source(OPERATOR, "web", "legitimate_interests", "US")
    finally:
        service.close()
    u = site.url
    urls = {f"{u}/images/a-1.jpg": "done", f"{u}/images/c-1.jpg": "done",
            f"{u}/private/face.jpg": "robots",  # disallowed by robots.txt
            f"{u}/images/f-1.jpg": "done", f"{u}/images/f-1-copy.jpg": "duplicate",
            f"{u}/people/b.html": "bad_image",  # a page, not an image
            f"{u}/redirect/ok.jpg": "done"}  # to /images/e-2.jpg
    listing = home.parent / "urls.txt"
    listing.write_text("# photos to collect\n" + "\n".join(urls) + "\n")
    first = len(site.log)
    done = cli(home, "crawl", "start", "--source", "web", "--purpose", "listed photos",
               "--urls", str(listing), env={"FACESEARCH_CRAWL_USER_AGENT": USER_AGENT})
    assert done.returncode == 0, done.stderr
    return Listed(home, urls, site.log[first:])


def test_a_url_list_indexes_exactly_its_allowed_images_with_their_provenance(
        site: Site, listed: Listed) -> None:
    service = FaceSearchService(crawl_settings(listed.home))
    try:
        (job,) = service.crawl_jobs(OPERATOR)
        status = service.crawl_status(OPERATOR, job.id)
    finally:
        service.close()
    assert status.job.status == "done"
    images = indexed(listed.home)
    u = site.url
    assert set(images) == {f"{u}/images/{name}.jpg" for name in ("a-1", "c-1", "f-1", "e-2")}
    for url, (page_url, provenance, _, faces) in images.items():
        assert page_url is None and faces == 1, url
        assert provenance["crawl_job"] == job.id and fetched_during(status.job, provenance), url
        assert provenance["page_title"] == provenance["alt_text"] == "", url
    refused = {url: why for url, why in listed.urls.items() if why != "done"}
    assert {url: value.partition(":")[2] for url, value in by_url(listed.home, job.id).items()
            if not value.startswith("done")} == refused
    assert problems(status.counts) == Counter(refused.values())
    assert "/private/face.jpg" not in {r.path for r in listed.requests}


def test_every_request_of_a_crawl_carries_the_configured_user_agent(listed: Listed) -> None:
    asked = {r.path for r in listed.requests}
    assert {"/robots.txt", "/images/a-1.jpg", "/people/b.html", "/redirect/ok.jpg",
            "/images/e-2.jpg"} <= asked  # robots.txt, images, a page, both legs of a redirect
    assert {r.user_agent for r in listed.requests} == {USER_AGENT}


def test_a_source_in_an_excluded_jurisdiction_is_refused_before_anything_is_fetched(
        site: Site, tmp_path: Path) -> None:
    home = tmp_path / "data"
    service = FaceSearchService(crawl_settings(home))
    try:
        service.add_source(OPERATOR, "berlin", "legitimate_interests", "DE")
        earlier = service.start_crawl(OPERATOR, [site.url + "/"], [site.url + "/"], "berlin",
                                      "test collection")  # before DE was excluded
    finally:
        service.close()
    archive = tmp_path / "capture.warc.gz"
    write_warc(archive, [("https://news.example/img/a.jpg", lfw_photos("Aaron_Peirsol")[1].read_bytes())],
               "https://news.example/story.html")
    first = len(site.log)
    service = FaceSearchService(crawl_settings(home, excluded_jurisdictions=["de"]))
    try:
        with pytest.raises(PolicyRefused, match="jurisdiction DE is excluded"):
            service.start_crawl(OPERATOR, [site.url + "/"], [site.url + "/"], "berlin", "again")
        with pytest.raises(PolicyRefused, match="jurisdiction DE is excluded"):
            service.run_crawl(OPERATOR, earlier.id)
        with pytest.raises(PolicyRefused, match="jurisdiction DE is excluded"):
            service.ingest_warc(OPERATOR, archive, "berlin")
        refusals = [(r["action"], r["detail"]["reason"]) for r in service.trail.records()
                    if r["action"].endswith(".refused")]
        assert refusals == [(f"crawl.{action}.refused", "jurisdiction DE is excluded by configuration")
                            for action in ("start", "run", "warc")]
        assert [(j.id, j.status) for j in service.crawl_jobs(OPERATOR)] == [(earlier.id, "queued")]
    finally:
        service.close()
    assert site.log[first:] == []
    assert indexed(home) == {}
