"""The crawler against the loopback test website: exactly the allowed images indexed with
their provenance, everything else refused and counted by reason, politeness, resumption after
SIGKILL, suppressed people never indexed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facesearch.config import Settings
from facesearch.errors import PolicyRefused
from facesearch.service import FaceSearchService
from tests.conftest import OPERATOR, lfw_photos
from tests.crawl.site import Site, start_site

FACESEARCH = str(Path(sys.executable).parent / "facesearch")
CRAWL_ENV = {"FACESEARCH_CRAWL_ALLOWED_NETWORKS": "127.0.0.1/32", "FACESEARCH_CRAWL_TIMEOUT_SECONDS": "1",
             "FACESEARCH_CRAWL_MAX_BYTES": "2000000", "FACESEARCH_CRAWL_DELAY_SECONDS": "0",
             "FACESEARCH_WORKERS": "1"}


def crawl_settings(home: Path) -> Settings:
    return Settings(home=home, workers=1, crawl_allowed_networks=["127.0.0.1/32"],
                    crawl_timeout_seconds=1, crawl_max_bytes=2_000_000, crawl_delay_seconds=0)


@pytest.fixture(scope="module")
def site():
    site = start_site()
    yield site
    site.stop()


def crawl(service: FaceSearchService, site: Site, source: str = "web"):  # noqa: ANN201
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


def indexed(home: Path) -> dict[str, tuple]:
    with sqlite3.connect(home / "metadata.sqlite3") as db:
        rows = db.execute("SELECT location, page_url, provenance, sha256, "
                          "(SELECT count(*) FROM faces WHERE faces.image_id = images.id) FROM images")
        return {r[0]: (r[1], json.loads(r[2]), r[3], r[4]) for r in rows}


@pytest.fixture(scope="module")
def crawled(site: Site, tmp_path_factory):  # noqa: ANN201
    home = tmp_path_factory.mktemp("crawl") / "data"
    service = FaceSearchService(crawl_settings(home))
    try:
        status = crawl(service, site)
    finally:
        service.close()
    return home, status


def test_the_crawl_indexes_exactly_the_allowed_images(site: Site, crawled) -> None:  # noqa: ANN001
    home, status = crawled
    assert status.job.status == "done"
    images = indexed(home)
    assert set(images) == site.expected["indexed"]
    assert all(faces == 1 for _, _, _, faces in images.values())
    assert not any(site.hits[path] for path in site.expected["never_requested"])


def test_every_refusal_is_recorded_with_its_reason(site: Site, crawled) -> None:  # noqa: ANN001
    home, status = crawled
    found = outcomes(home, status.job.id)
    by_url = {key.split(" ", 1)[1]: value for key, value in found.items()}
    for url, reason in site.expected["refused"].items():
        assert by_url.get(url, "").endswith(":" + reason), (url, by_url.get(url), reason)
    counted = {**status.counts["page"], **status.counts["image"]}
    for reason in set(site.expected["refused"].values()):
        assert sum(n for key, n in counted.items() if key.endswith(":" + reason)) >= 1, reason


def test_images_carry_their_page_title_alt_text_and_fetch_time(site: Site, crawled) -> None:  # noqa: ANN001
    home, _ = crawled
    page_url, provenance, _, _ = indexed(home)[site.url + "/images/a-1.jpg"]
    assert page_url == site.url + "/people/a.html"
    assert provenance["alt_text"] == "Aaron Peirsol" and provenance["page_title"]
    assert provenance["fetched_at"] and provenance["crawl_job"] == 1


def test_the_crawl_delay_of_robots_txt_spaces_requests_to_the_host(site: Site, crawled) -> None:  # noqa: ANN001
    times = sorted(t for t, _, host, _, _ in site.log if host.startswith("127.0.0.1"))
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(gaps) > 20 and min(gaps) >= 0.19


def test_a_second_crawl_asks_conditionally_and_changes_nothing(site: Site, crawled) -> None:  # noqa: ANN001
    home, _ = crawled
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


def test_a_crawl_killed_with_sigkill_resumes_to_the_state_of_an_uninterrupted_one(
        site: Site, crawled, tmp_path: Path) -> None:  # noqa: ANN001
    home = tmp_path / "data"
    env = {**os.environ, **CRAWL_ENV}
    run = lambda *args: subprocess.run([FACESEARCH, "--data", str(home), *args], env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=300)
    assert run("source", "add", "web", "--lawful-basis", "legitimate_interests",
               "--jurisdiction", "US").returncode == 0
    assert run("crawl", "start", "--source", "web", "--purpose", "test collection", "--seed",
               site.url + "/", "--allow", site.url + "/", "--depth", "3", "--no-run").returncode == 0
    victim = subprocess.Popen([FACESEARCH, "--data", str(home), "crawl", "run", "1"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if len(indexed(home)) >= 3 if (home / "metadata.sqlite3").exists() else False:
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert 0 < len(indexed(home)) < len(site.expected["indexed"])  # killed mid-crawl
    done = run("crawl", "run", "1")
    assert done.returncode == 0, done.stderr
    clean_home, clean_status = crawled
    assert outcomes(home, 1) == outcomes(clean_home, clean_status.job.id)
    ours, theirs = indexed(home), indexed(clean_home)
    assert {u: (p, s, f) for u, (p, _, s, f) in ours.items()} == {
        u: (p, s, f) for u, (p, _, s, f) in theirs.items()}


def write_warc(path: Path, images: list[tuple[str, bytes]], page: str) -> None:
    """A WARC archive as a web archiver writes it: a request (with Referer) and a response
    record per image, and one HTML page."""
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as stream:
        writer = WARCWriter(stream, gzip=True)
        html = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(page, "response", payload=BytesIO(b"<html></html>"),
                                                      http_headers=html))
        for url, body in images:
            request = StatusAndHeaders("GET / HTTP/1.1", [("Referer", page)], is_http_request=True)
            writer.write_record(writer.create_warc_record(url, "request", payload=BytesIO(b""),
                                                          http_headers=request))
            headers = StatusAndHeaders("200 OK", [("Content-Type", "image/jpeg")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=BytesIO(body),
                                                          http_headers=headers))


def test_a_warc_archive_is_indexed_with_the_same_provenance_and_policy(tmp_path: Path) -> None:
    archive = tmp_path / "capture.warc.gz"
    photos = [lfw_photos("Aaron_Peirsol")[1], lfw_photos("Abdullah")[1], lfw_photos("Adam_Sandler")[1]]
    images = [(f"https://news.example/img/{p.name}", p.read_bytes()) for p in photos]
    images.append(("https://news.example/img/copy.jpg", photos[0].read_bytes()))  # same bytes
    write_warc(archive, images, "https://news.example/story.html")
    service = FaceSearchService(crawl_settings(tmp_path / "data"))
    try:
        service.add_source(OPERATOR, "archive", "legitimate_interests", "US")
        service.suppress(OPERATOR, lfw_photos("Adam_Sandler")[0].read_bytes(), "objection 9")
        counts = service.ingest_warc(OPERATOR, archive, "archive")
    finally:
        service.close()
    assert counts == {"done": 2, "skipped:duplicate": 1, "refused:suppressed": 1}
    stored = indexed(tmp_path / "data")
    assert set(stored) == {images[0][0], images[1][0]}
    page_url, provenance, _, faces = stored[images[0][0]]
    assert page_url == "https://news.example/story.html" and faces == 1
    assert provenance["warc_file"] == "capture.warc.gz" and provenance["warc_date"]


def test_the_status_counts_hosts_and_rates(site: Site, crawled) -> None:  # noqa: ANN001
    home, status = crawled
    service = FaceSearchService(crawl_settings(home))
    try:
        fresh = service.crawl_status(OPERATOR, status.job.id)
    finally:
        service.close()
    assert fresh.hosts[site.url]["done"] >= len(site.expected["indexed"]) + len(site.expected["pages"])
    assert fresh.hosts[site.other_host_url] == {"refused": 1}  # off the allowlist, never fetched
    assert fresh.rates["pages"] > 0 and fresh.rates["faces"] > 0
