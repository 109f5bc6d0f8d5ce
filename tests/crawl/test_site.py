"""The crawler test website serves what its docstring promises (tests/crawl/site.py)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from facesearch.config import Settings
from facesearch.crawl.extract import Page, parse_page
from facesearch.vision import FaceAnalyzer
from tests.crawl.site import Site, photo, start_site


@pytest.fixture
def site() -> Iterator[Site]:
    running = start_site()
    yield running
    running.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def page_of(site: Site, path: str, base: str | None = None) -> Page:
    body = site.resources[path].body.decode("utf-8", "replace")
    return parse_page(body, (base or site.url) + path)


def test_robots_txt_disallows_private_and_asks_for_a_crawl_delay(site: Site,
                                                                  client: httpx.Client) -> None:
    response = client.get(site.url + "/robots.txt")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.splitlines() == ["User-agent: *", "Disallow: /private/",
                                          "Crawl-delay: 0.2"]


def test_the_index_links_every_page_and_a_second_host_name_but_not_the_nofollow_page(
        site: Site, client: httpx.Client) -> None:
    response = client.get(site.url + "/")
    page = parse_page(response.text, site.url + "/")
    expected = (site.expected["pages"] - {site.url + "/"}) | {
        site.url + "/private/secret.html", site.other_host_url + "/elsewhere/page.html"}
    assert set(page.links) == expected
    assert len(page.links) == len(expected)  # the fragment and "./" variants collapse
    assert urlsplit(site.other_host_url).hostname == "localhost"
    assert urlsplit(site.other_host_url).port == site.port
    assert page.images == []


def test_every_image_on_every_page_is_accounted_for_by_expected(site: Site) -> None:
    expected = site.expected
    redirected = {site.url + "/redirect/ok.jpg"}  # followed: recorded under its final URL
    seen: set[str] = set()
    for path, resource in site.resources.items():
        if not resource.content_type.startswith("text/html"):
            continue
        base = site.other_host_url if path.startswith("/elsewhere/") else site.url
        for image in page_of(site, path, base).images:
            seen.add(image.url)
            assert (image.url in expected["indexed"] or image.url in expected["refused"]
                    or image.url in redirected
                    or urlsplit(image.url).path in expected["never_requested"]), image.url
    reachable = seen | {site.url + "/images/e-2.jpg"}
    assert expected["indexed"] <= reachable
    assert {u for u, why in expected["refused"].items()
            if why not in ("robots", "off_allowlist")} <= seen
    assert set(expected["refused"].values()) == {
        "robots", "noimageindex", "ssrf", "redirects", "timeout", "too_large", "bad_image",
        "duplicate", "off_allowlist"}
    assert not expected["indexed"] & set(expected["refused"])
    assert set(expected["provenance"]) == expected["indexed"]
    assert {p["page_url"] for p in expected["provenance"].values()} <= expected["pages"]


def test_the_pages_carry_their_images_and_directives(site: Site, client: httpx.Client) -> None:
    a = parse_page(client.get(site.url + "/people/a.html").text, site.url + "/people/a.html")
    assert [i.url.removeprefix(site.url) for i in a.images] == [
        "/images/b-3.jpg", "/images/c-2.jpg", "/images/a-1.jpg", "/images/a-2.jpg",
        "/images/a-3.jpg", "/images/b-1.jpg"]
    assert a.images[2].alt == "Aaron Peirsol"
    assert "Aaron Peirsol" in a.title
    b = parse_page(client.get(site.url + "/people/b.html").text, site.url + "/people/b.html")
    assert site.url + "/people/a.html" in b.links  # a cycle
    meta = client.get(site.url + "/noimage.html")
    assert "noimageindex" in parse_page(meta.text, site.url + "/noimage.html").directives
    assert "x-robots-tag" not in meta.headers
    header = client.get(site.url + "/noimage-header.html")
    assert header.headers["x-robots-tag"] == "noimageindex"
    assert parse_page(header.text, site.url + "/noimage-header.html").directives == set()


def test_the_broken_page_still_yields_its_image_and_the_fake_jpeg(site: Site,
                                                                  client: httpx.Client) -> None:
    response = client.get(site.url + "/broken.html")
    assert response.headers["content-type"] == "text/html"
    with pytest.raises(UnicodeDecodeError):
        response.content.decode("utf-8")
    for text in (response.content.decode("utf-8", "replace"), response.content.decode("latin-1")):
        page = parse_page(text, site.url + "/broken.html")
        assert [i.url for i in page.images] == [site.url + "/images/e-1.jpg",
                                                 site.url + "/fake.jpg"]


def test_indexed_images_are_lfw_jpegs_with_validators(site: Site, client: httpx.Client) -> None:
    for url in sorted(site.expected["indexed"]):
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"] == "image/jpeg"
        assert response.headers["etag"].startswith('"')
        assert response.headers["last-modified"] == "Mon, 01 Jan 2024 00:00:00 GMT"
        assert int(response.headers["content-length"]) == len(response.content)
        assert Image.open(io.BytesIO(response.content)).size == (250, 250)
    a1 = client.get(site.url + "/images/a-1.jpg").content
    assert a1 == photo("a", 1).read_bytes()
    assert photo("a", 1).name == "Aaron_Peirsol_0002.jpg"


def test_indexed_images_each_show_exactly_one_face(site: Site, tmp_path: Path) -> None:
    analyzer = FaceAnalyzer(Settings(home=tmp_path / "data"))
    for url in sorted(site.expected["indexed"]):
        body = site.resources[urlsplit(url).path].body
        pixels = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
        assert len(analyzer.detect(pixels)) == 1, url


def test_a_second_conditional_request_is_answered_304(site: Site, client: httpx.Client) -> None:
    for path in ("/images/c-1.jpg", "/people/b.html", "/robots.txt"):
        first = client.get(site.url + path)
        assert first.status_code == 200
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        by_etag = client.get(site.url + path, headers={"If-None-Match": etag})
        assert by_etag.status_code == 304
        assert by_etag.content == b""
        assert by_etag.headers["etag"] == etag
        by_date = client.get(site.url + path, headers={"If-Modified-Since": modified})
        assert by_date.status_code == 304
        older = client.get(site.url + path,
                           headers={"If-Modified-Since": "Sun, 31 Dec 2023 00:00:00 GMT"})
        assert older.status_code == 200
        other_tag = client.get(site.url + path, headers={"If-None-Match": '"other"',
                                                         "If-Modified-Since": modified})
        assert other_tag.status_code == 200  # If-None-Match wins over If-Modified-Since
        assert site.hits[path] == 5
        assert site.not_modified[path] == 2


def test_an_updated_resource_gets_a_new_etag_and_date(site: Site, client: httpx.Client) -> None:
    first = client.get(site.url + "/images/c-1.jpg")
    site.update("/images/c-1.jpg", photo("c", 3).read_bytes())
    again = client.get(site.url + "/images/c-1.jpg",
                       headers={"If-None-Match": first.headers["etag"],
                                "If-Modified-Since": first.headers["last-modified"]})
    assert again.status_code == 200
    assert again.content == photo("c", 3).read_bytes()
    assert again.headers["etag"] != first.headers["etag"]
    assert again.headers["last-modified"] == "Tue, 02 Jan 2024 00:00:00 GMT"


def test_redirects_lead_where_promised_and_the_loop_never_ends(site: Site,
                                                               client: httpx.Client) -> None:
    targets = {
        "/redirect/private.jpg": "http://10.0.0.1/x.jpg",
        "/redirect/metadata.jpg": "http://169.254.169.254/latest/meta-data/",
        "/redirect/ipv6.jpg": "http://[::1]:1/x.jpg",
        "/redirect/ok.jpg": "/images/e-2.jpg",
        "/loop1": "/loop2",
        "/loop2": "/loop1",
    }
    for path, location in targets.items():
        response = client.get(site.url + path, follow_redirects=False)
        assert response.status_code == 302, path
        assert response.headers["location"] == location
    followed = client.get(site.url + "/redirect/ok.jpg", follow_redirects=True)
    assert followed.status_code == 200
    assert str(followed.url) == site.url + "/images/e-2.jpg"
    assert followed.content == photo("e", 2).read_bytes()
    with pytest.raises(httpx.TooManyRedirects):
        client.get(site.url + "/loop1", follow_redirects=True)
    assert site.hits["/loop1"] >= 10
    assert site.hits["/loop2"] >= 10


def test_the_slow_image_outlasts_a_one_second_timeout(site: Site) -> None:
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        httpx.get(site.url + "/slow.jpg", timeout=1.0)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.5
    assert site.hits["/slow.jpg"] == 1


def test_the_slow_image_arrives_when_the_delay_is_short() -> None:
    quick = start_site(slow_seconds=0.3)
    try:
        started = time.monotonic()
        response = httpx.get(quick.url + "/slow.jpg", timeout=5.0)
        assert time.monotonic() - started >= 0.3
        assert response.content == photo("e", 3).read_bytes()
    finally:
        quick.stop()


def test_big_images_exceed_two_megabytes_with_and_without_content_length(
        site: Site, client: httpx.Client) -> None:
    sized = client.get(site.url + "/big.jpg")
    assert 2_500_000 < int(sized.headers["content-length"]) == len(sized.content) < 4_000_000
    assert Image.open(io.BytesIO(sized.content)).format == "JPEG"
    unsized = client.get(site.url + "/big-nolength.jpg")
    assert "content-length" not in unsized.headers
    assert unsized.content == sized.content


def test_the_fake_jpeg_is_text_served_as_image_jpeg(site: Site, client: httpx.Client) -> None:
    response = client.get(site.url + "/fake.jpg")
    assert response.headers["content-type"] == "image/jpeg"
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(response.content))


def test_the_duplicates_are_the_same_bytes_under_two_urls(site: Site,
                                                          client: httpx.Client) -> None:
    (group,) = site.expected["same_bytes"]
    bodies = {client.get(url).content for url in group}
    assert len(group) == 2 and len(bodies) == 1
    assert len(group & site.expected["indexed"]) == 1
    assert [site.expected["refused"][url] for url in group - site.expected["indexed"]] == [
        "duplicate"]


def test_the_log_records_host_names_and_user_agents_and_a_head_request_sends_no_body(
        site: Site, client: httpx.Client) -> None:
    response = client.head(site.url + "/images/a-1.jpg")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) == len(photo("a", 1).read_bytes())
    client.get(site.url + "/missing", headers={"Host": f"localhost:{site.port}",
                                               "User-Agent": "test-agent/1 (+https://example.org)"})
    (head, missing) = site.log[-2:]
    assert head[1:] == ("HEAD", f"127.0.0.1:{site.port}", "/images/a-1.jpg", 200,
                        f"python-httpx/{httpx.__version__}")
    assert missing[1:] == ("GET", f"localhost:{site.port}", "/missing", 404,
                           "test-agent/1 (+https://example.org)")
    assert head.at <= missing.at


def test_stop_is_prompt_while_the_slow_image_is_pending() -> None:
    pending = start_site()
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            httpx.get(pending.url + "/slow.jpg", timeout=10.0)
        except httpx.HTTPError as error:
            errors.append(error)

    thread = threading.Thread(target=fetch)
    thread.start()
    deadline = time.monotonic() + 5
    while not pending.hits["/slow.jpg"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pending.hits["/slow.jpg"] == 1
    started = time.monotonic()
    pending.stop()
    thread.join(timeout=5)
    assert time.monotonic() - started < 1.0
    assert not thread.is_alive()
    assert len(errors) == 1  # the answer was dropped, not sent
    with pytest.raises(httpx.ConnectError):
        httpx.get(pending.url + "/", timeout=1.0)
