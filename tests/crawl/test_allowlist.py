"""The crawl allowlist matches parsed URLs: scheme, host by labels, port, path by segments."""

from __future__ import annotations

import pytest

from facesearch.crawl.allowlist import allowed_by, invalid_entries
from facesearch.errors import InvalidRequest
from tests.conftest import OPERATOR


@pytest.mark.parametrize(("entry", "url"), [
    # A host name inside the path of another host (fnmatch let * cross the slash).
    ("https://*.example.com/*", "https://evil.test/.example.com/"),
    ("https://*.example.com/*", "https://evil.test/x.example.com/page"),
    # A prefix without a trailing slash is a host, not the start of a longer one.
    ("https://photos.example", "https://photos.example.evil.com/"),
    ("https://photos.example", "https://photos.example.evil.com/face.jpg"),
    ("https://photos.example", "https://photos.examplex/"),
    # A path prefix matches whole segments only.
    ("https://photos.example/photos", "https://photos.example/photos2"),
    ("https://photos.example/photos/", "https://photos.example/photos2/x"),
    # Dot segments are resolved before matching, written plainly or percent-encoded.
    ("https://photos.example/photos", "https://photos.example/photos/../admin"),
    ("https://photos.example/photos", "https://photos.example/photos/%2e%2e/admin"),
    # Scheme and port are the entry's.
    ("https://photos.example/", "http://photos.example/"),
    ("https://photos.example/", "https://photos.example:8443/"),
    ("http://127.0.0.1:8000/", "http://127.0.0.1:8001/"),
    # A user name before the host does not make it the host.
    ("https://photos.example", "https://photos.example@evil.test/"),
    # A wildcard label needs a label: *.example.com is not example.com, nor badexample.com.
    ("https://*.example.com/", "https://example.com/"),
    ("https://*.example.com/", "https://badexample.com/"),
    ("*.example.com", "https://example.com/"),
    # A bare host name allows the host and its subdomains, by labels.
    ("example.com", "https://badexample.com/"),
    ("example.com", "https://example.com.evil.test/"),
    # * in a path segment stays within the segment.
    ("https://a.example/users/*/photos", "https://a.example/users/bob/secret/photos"),
    # A query in an entry must be the URL's.
    ("https://a.example/view?id=1", "https://a.example/view?id=12"),
])
def test_an_url_outside_an_entry_is_not_allowed(entry: str, url: str) -> None:
    assert not allowed_by(url, [entry])


@pytest.mark.parametrize(("entry", "url"), [
    ("https://*.example.com/*", "https://photos.example.com/"),
    ("https://*.example.com/*", "https://a.b.example.com/deep/page.html?x=1"),
    ("https://*.example.com/", "https://photos.example.com/anything"),
    ("https://photos.example", "https://photos.example/"),
    ("https://photos.example", "https://photos.example/any/path"),
    ("https://photos.example/", "https://photos.example:443/x"),
    ("https://PHOTOS.example/photos", "https://photos.example/photos"),
    ("https://photos.example/photos", "https://photos.example/photos/x/y.html"),
    ("https://photos.example/photos/", "https://photos.example/photos"),
    ("https://photos.example/photos/", "https://photos.example/photos/a/../b"),
    ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/gallery/page.html"),
    ("http://[::1]:8000/", "http://[::1]:8000/page"),
    ("example.com", "https://example.com/"),
    ("example.com", "http://example.com:8080/x"),
    ("example.com", "https://photos.example.com/x"),
    ("*.example.com", "https://photos.example.com/x"),
    ("https://a.example/users/*/photos", "https://a.example/users/bob/photos/1.html"),
    ("https://a.example/gallery/*.html", "https://a.example/gallery/page.html"),
    ("https://a.example/view?id=1", "https://a.example/view?id=1"),
])
def test_an_url_inside_an_entry_is_allowed(entry: str, url: str) -> None:
    assert allowed_by(url, [entry])


def test_any_entry_of_the_list_may_allow_an_url() -> None:
    allow = ["https://a.example/photos", "b.example"]
    assert allowed_by("https://a.example/photos/1", allow)
    assert allowed_by("http://www.b.example/", allow)
    assert not allowed_by("https://a.example/admin", allow)
    assert not allowed_by("https://c.example/", allow)


@pytest.mark.parametrize("entry", [
    "https://*/", "https://*", "*", "https://ex*ample.com/", "https://a.*.example.com/",
    "ftp://example.com/", "https://user@example.com/", "https://example.com:port/",
    "https:///path", "a.example/photos"])
def test_an_entry_of_no_known_form_is_invalid_and_allows_nothing(entry: str) -> None:
    assert invalid_entries([entry, "example.com"]) == [entry]
    assert not allowed_by("https://x.example.com/", [entry])


def test_a_crawl_with_an_entry_of_no_known_form_is_refused(service) -> None:
    service.add_source(OPERATOR, "press", "public_task", "FR")
    with pytest.raises(InvalidRequest, match="not an allowlist entry"):
        service.start_crawl(OPERATOR, ["https://a.example/"], ["a.example", "https://*/"],
                            "press", "test")
    with pytest.raises(InvalidRequest, match="inside the allowlist"):
        service.start_crawl(OPERATOR, ["https://photos.example.evil.test/"],
                            ["https://photos.example"], "press", "test")


def test_a_bare_host_with_a_port_is_invalid_rather_than_matching_nothing() -> None:
    assert invalid_entries(["example.com:8080", "https://example.com:8080/"]) == ["example.com:8080"]
    assert allowed_by("https://example.com:8080/a", ["https://example.com:8080/"])
    assert allowed_by("https://[2001:db8::1]/photos/a.jpg", ["https://[2001:db8::1]/photos"])


def test_an_encoded_separator_cannot_climb_out_of_an_allowed_path() -> None:
    for url in ("https://example.com/photos/..%2fadmin", "https://example.com/photos/..%2Fadmin/x",
                "https://example.com/photos/..%5cadmin"):
        assert not allowed_by(url, ["https://example.com/photos"]), url
    assert allowed_by("https://example.com/photos/a%2fb.jpg", ["https://example.com/photos"])
