"""A small, deterministic test WEBSITE on loopback for crawler tests (no pytest needed).

    site = start_site()          # http.server.ThreadingHTTPServer on 127.0.0.1, port 0
    try:
        ...crawl site.url...     # e.g. "http://127.0.0.1:43817"
        assert not any(site.hits[p] for p in site.expected["never_requested"])
    finally:
        site.stop()

Every image is a real LFW JPEG (tests.conftest.lfw_photos) except /big.jpg (3.1 MB of JPEG
noise made with Pillow) and /fake.jpg (text). The people are chosen in code: the first six
names, in sorted order, with at least 4 photos, photo indices 1 to 3 (index 0, the first
photo, is left for tests to use as a query). With the LFW copy under ../shared/datasets/lfw
they are A Aaron_Peirsol, B Abdoulaye_Wade, C Abdullah, D Abdullah_Gul, E Abel_Pacheco and
F Adam_Sandler; "b-3" below is Abdoulaye_Wade_0004.jpg (his _0003 shows no face to the HOG
detector, so index 2 of B is not used). Every image in expected["indexed"] shows exactly one
face to the default detector (tests/crawl/test_site.py checks it).

How a test should run the crawler against it
--------------------------------------------
    allowlist (URL prefixes)   [site.url + "/"]       -> http://localhost:PORT/... is outside
    allowed networks           ["127.0.0.1/32"]       -> the site itself may be fetched, but
                                                         10/8, 169.254/16 and [::1] may not
    timeout                    1 s                    -> /slow.jpg (answers after 3 s)
    byte limit                 2 MB (2_000_000 bytes) -> /big.jpg, /big-nolength.jpg (~3.1 MB)
    redirects                  any finite limit       -> /loop1 <-> /loop2 never ends
    robots.txt                 honoured               -> /private/ never requested,
                                                         Crawl-delay: 0.2 (seconds)

URL layout (paths under site.url; "x-N.jpg" is photo index N of person X)
----------------------------------------------------------------------
/robots.txt             "User-agent: *", "Disallow: /private/", "Crawl-delay: 0.2"
/                       index; links to every page below, written in varied ways
                        (relative, with a #fragment, "./"), plus
                        http://localhost:PORT/elsewhere/page.html (same server, other host
                        name: off the allowlist), /nofollow.html with rel="nofollow",
                        mailto: and javascript: links. No images.
/people/a.html          <title>; <meta property="og:image" content="/images/b-3.jpg">;
                        <link rel="image_src" href="/images/c-2.jpg">;
                        <img src="/images/a-1.jpg" alt="Aaron Peirsol">;
                        <img srcset="/images/a-2.jpg 250w, /images/a-3.jpg 500w"> (no src);
                        <picture><source srcset="/images/b-1.jpg"><img src="/images/a-1.jpg">
                        </picture> (the fallback repeats a-1: collected once);
                        links to /people/b.html, / and itself.
/people/b.html          <img src="/images/c-1.jpg">; links back to /people/a.html (a cycle).
/private/secret.html    <img src="/private/face.jpg"> (D-1); disallowed by robots.txt.
/noimage.html           <meta name="robots" content="noimageindex">, <img src="/images/d-2.jpg">
/noimage-header.html    header "X-Robots-Tag: noimageindex", <img src="/images/d-3.jpg">
/broken.html            broken markup: unclosed tags, invalid UTF-8 and NUL bytes, stray "<"s,
                        an unterminated attribute and comment at the end; served as
                        "text/html" without charset. Still yields <img src=/images/e-1.jpg>
                        and <img src="/fake.jpg"> (text served as image/jpeg).
/redirects.html         images whose URLs redirect (302):
                          /redirect/private.jpg  -> http://10.0.0.1/x.jpg
                          /redirect/metadata.jpg -> http://169.254.169.254/latest/meta-data/
                          /redirect/ipv6.jpg     -> http://[::1]:1/x.jpg
                          /redirect/ok.jpg       -> /images/e-2.jpg (relative Location)
                          /loop1 -> /loop2 -> /loop1 -> ... (forever)
/slow.html              <img src="/slow.jpg">; /slow.jpg sleeps 3 s, then sends E-3.
/big.html               <img src="/big.jpg"> (with Content-Length) and
                        <img src="/big-nolength.jpg"> (same bytes, no Content-Length, the
                        body ends when the connection closes).
/dupes.html             <img src="/images/f-1.jpg"> then <img src="/images/f-1-copy.jpg">:
                        the same bytes under two URLs.
/elsewhere/page.html    <img src="/images/f-2.jpg">; linked only as http://localhost:PORT/...
/nofollow.html          <img src="/images/f-3.jpg">; linked only with rel="nofollow".

Every 200 response except the redirects carries an ETag (a hash of the body) and
Last-Modified (Mon, 01 Jan 2024 00:00:00 GMT; later after Site.update); a GET or HEAD with a
matching If-None-Match, or (without If-None-Match) an If-Modified-Since not earlier than
Last-Modified, is answered 304 Not Modified. Site.update(path, body) changes a resource so
that re-crawls see a new ETag and a later Last-Modified.

Site.expected: the outcome a correct crawler must reach (URLs absolute, as normalise_url
writes them, e.g. site.url + "/images/a-1.jpg")
-----------------------------------------------------------------------------------------
"indexed"         set of image URLs that must end up indexed:
                  a-1, a-2, a-3, b-1, b-3, c-1, c-2, e-1, f-1 under /images/, and
                  /images/e-2.jpg: the redirect /redirect/ok.jpg is followed and the image is
                  recorded under its FINAL URL (/redirect/ok.jpg itself is neither indexed
                  nor refused).
"refused"         dict URL -> reason keyword, one of:
                  "robots"        a page disallowed by robots.txt (/private/secret.html)
                  "noimageindex"  an image on a page whose robots meta tag or X-Robots-Tag
                                  header says noimageindex (/images/d-2.jpg, /images/d-3.jpg);
                                  the image is never requested either
                  "ssrf"          a redirect to a forbidden address (10.0.0.1,
                                  169.254.169.254, [::1]); keyed by the site's URL
                                  (/redirect/private.jpg, /redirect/metadata.jpg,
                                  /redirect/ipv6.jpg)
                  "redirects"     too many redirects (/loop1)
                  "timeout"       no answer within the timeout (/slow.jpg)
                  "too_large"     more bytes than the byte limit (/big.jpg,
                                  /big-nolength.jpg)
                  "bad_image"     not a decodable image although served as image/jpeg
                                  (/fake.jpg)
                  "duplicate"     the same bytes as an image already indexed
                                  (/images/f-1-copy.jpg: the second in page order; a crawler
                                  that fetches concurrently may see the two the other way
                                  round, see "same_bytes")
                  "off_allowlist" a link outside the allowlist
                                  (http://localhost:PORT/elsewhere/page.html)
"never_requested" set of PATHS (keys of Site.hits) that must have no hits: /private/secret.html,
                  /private/face.jpg, /images/d-2.jpg, /images/d-3.jpg (noimageindex),
                  /elsewhere/page.html, /images/f-2.jpg, /nofollow.html, /images/f-3.jpg
"pages"           set of page URLs a correct crawler fetches: /, /people/a.html,
                  /people/b.html, /noimage.html, /noimage-header.html, /broken.html,
                  /redirects.html, /slow.html, /big.html, /dupes.html
"same_bytes"      list of sets of image URLs served with identical bytes: exactly one of
                  each set is indexed and the others are refused "duplicate"
"provenance"      dict image URL (each of "indexed") -> {"page_url", "page_title",
                  "alt_text"}: the page where a breadth-first crawl from / first finds it,
                  that page's title (the broken page's "Broken <b>page" read as text
                  without the tag: "Broken page") and the image's alt text ("" for og:image and
                  link rel=image_src, which have none; a <picture>'s <img> gives its alt
                  text to the picture's sources, so /images/b-1.jpg has "fallback").

Site.hits counts every request (304s included) by path, without the query string;
Site.not_modified counts the 304 answers by path; Site.log lists a Request(at
(time.monotonic()), method, host (the Host header), path, status, user_agent) for every
answer, to check Crawl-delay, which host name was asked for or who asked. All three are
updated under a lock.
"""

from __future__ import annotations

import email.utils
import hashlib
import html
import io
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from tests.conftest import LFW, lfw_photos

SLOW_SECONDS = 3.0
LAST_MODIFIED = datetime(2024, 1, 1, tzinfo=UTC)
PEOPLE_NEEDED = 6
PHOTOS_NEEDED = 4


@cache
def people() -> tuple[str, ...]:
    """The first six LFW names, sorted, with at least four photos that show one face to the
    default detector (some LFW photos show a second face at their edge): persons A to F."""
    names = sorted(p.name for p in (LFW / "images").iterdir() if p.is_dir())
    chosen = tuple(n for n in names if len(lfw_photos(n)) >= PHOTOS_NEEDED
                   and len(single_face_photos(n)) >= PHOTOS_NEEDED)[:PEOPLE_NEEDED]
    if len(chosen) < PEOPLE_NEEDED:
        raise RuntimeError(f"LFW at {LFW} has fewer than {PEOPLE_NEEDED} people with "
                           f"{PHOTOS_NEEDED} photos")
    return chosen


@cache
def single_face_photos(name: str) -> tuple[Path, ...]:
    import numpy as np
    from PIL import Image

    from facesearch.config import Settings
    from facesearch.vision import FaceAnalyzer

    analyzer = FaceAnalyzer(Settings())
    return tuple(p for p in lfw_photos(name)
                 if len(analyzer.detect(np.asarray(Image.open(p).convert("RGB")))) == 1)


def photo(person: str, index: int) -> Path:
    """Photo `index` (0-based, in sorted order, of those showing one face) of person "a" to "f"."""
    return single_face_photos(people()["abcdef".index(person)])[index]


def display_name(person: str) -> str:
    return people()["abcdef".index(person)].replace("_", " ")


@cache
def big_jpeg() -> bytes:
    """About 3.1 MB: a 1900x1400 JPEG of seeded noise (no face), quality 95."""
    rng = np.random.default_rng(20240101)
    pixels = rng.integers(0, 256, (1400, 1900, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()


class LockedCounter(Counter):
    """A Counter whose updates through add() are atomic; reads are ordinary dict reads."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        with self._lock:
            self[key] += 1

    def snapshot(self) -> Counter:
        with self._lock:
            return Counter(self)


class Request(NamedTuple):
    """One answered request, as Site.log keeps it."""

    at: float  # time.monotonic()
    method: str
    host: str  # the Host header
    path: str
    status: int
    user_agent: str  # "" when the request had none


@dataclass
class Resource:
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    modified: datetime = LAST_MODIFIED

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'

    @property
    def last_modified(self) -> str:
        return email.utils.format_datetime(self.modified, usegmt=True)


def _page(title: str, body: str, head: str = "") -> bytes:
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n{head}</head>\n<body>\n{body}\n</body></html>\n"
            ).encode()


BROKEN_HTML = (
    b"<html><head><title>Broken <b>page</title>\n"
    b"<body><div><p>An unclosed paragraph <b>bold <i>italic <table><tr><td>a cell\n"
    b"\xff\xfe\x00\x81\xc3\x28 garbage bytes \xe2\x82 << <<< >>>> </never-opened> &bogus; &#xZZ;\n"
    b"<p><img src=/images/e-1.jpg alt='Abel Pacheco'><span><img src=\"/fake.jpg\" alt=fake>\n"
    b"<td><li><li><form><select><option>unclosed\x00\x00\n"
    b"<a href='/' <div class=\"an unterminated attribute>\n"
    b"</td></tr></html></html> <<>> &&&& ;\n"
    b"<!-- an unterminated comment <img src=\"/images/never.jpg\">\n"
)


class Site:
    """The test website; see the module docstring. Use start_site() to make one."""

    def __init__(self, slow_seconds: float = SLOW_SECONDS) -> None:
        self.slow_seconds = slow_seconds
        self.hits = LockedCounter()
        self.not_modified = LockedCounter()
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.other_host_url = f"http://localhost:{self.port}"
        self.resources: dict[str, Resource] = {}
        self.redirects: dict[str, str] = {
            "/redirect/private.jpg": "http://10.0.0.1/x.jpg",
            "/redirect/metadata.jpg": "http://169.254.169.254/latest/meta-data/",
            "/redirect/ipv6.jpg": "http://[::1]:1/x.jpg",
            "/redirect/ok.jpg": "/images/e-2.jpg",
            "/loop1": "/loop2",
            "/loop2": "/loop1",
        }
        self._build()
        self.expected = self._expected()
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name=f"test-site-{self.port}")

    # ----------------------------------------------------------------- content
    def _build(self) -> None:
        jpeg = "image/jpeg"
        images = {"a": (1, 2, 3), "b": (1, 3), "c": (1, 2), "d": (2, 3), "e": (1, 2),
                  "f": (1, 2, 3)}
        for person, indices in images.items():
            for i in indices:
                self.resources[f"/images/{person}-{i}.jpg"] = Resource(
                    photo(person, i).read_bytes(), jpeg)
        f1 = self.resources["/images/f-1.jpg"].body
        self.resources["/images/f-1-copy.jpg"] = Resource(f1, jpeg)
        self.resources["/private/face.jpg"] = Resource(photo("d", 1).read_bytes(), jpeg)
        self.resources["/slow.jpg"] = Resource(photo("e", 3).read_bytes(), jpeg)
        self.resources["/big.jpg"] = Resource(big_jpeg(), jpeg)
        self.resources["/big-nolength.jpg"] = Resource(big_jpeg(), jpeg)
        self.resources["/fake.jpg"] = Resource(
            b"This is not a JPEG, only text served as image/jpeg.\n" * 20, jpeg)
        self.resources["/robots.txt"] = Resource(
            b"User-agent: *\nDisallow: /private/\nCrawl-delay: 0.2\n", "text/plain; charset=utf-8")

        a, b, c = display_name("a"), display_name("b"), display_name("c")
        pages = {
            "/": _page("Crawler test site", f"""<h1>Crawler test site</h1>
<ul>
<li><a href="/people/a.html">{a}</a></li>
<li><a href="people/b.html#photos">{b}</a></li>
<li><a href="./people/a.html#top">{a} again</a></li>
<li><a href="/private/secret.html">Private</a></li>
<li><a href="/noimage.html">No image index (meta)</a></li>
<li><a href="/noimage-header.html">No image index (header)</a></li>
<li><a href="/broken.html">Broken</a></li>
<li><a href="/redirects.html">Redirects</a></li>
<li><a href="/slow.html">Slow</a></li>
<li><a href="/big.html">Big</a></li>
<li><a href="/dupes.html">Duplicates</a></li>
<li><a href="{self.other_host_url}/elsewhere/page.html">Elsewhere</a></li>
<li><a href="/nofollow.html" rel="nofollow">Not to be followed</a></li>
<li><a href="mailto:webmaster@example.org">Mail</a>
    <a href="javascript:void(0)">Script</a></li>
</ul>"""),
            "/people/a.html": _page(f"{a} — photos", f"""<h1 id="top">{a}</h1>
<img src="/images/a-1.jpg" alt="{a}">
<img srcset="/images/a-2.jpg 250w, /images/a-3.jpg 500w" sizes="250px" alt="{a}, two sizes">
<picture>
  <source srcset="/images/b-1.jpg" type="image/jpeg">
  <img src="/images/a-1.jpg" alt="fallback">
</picture>
<p><a href="/people/b.html">{b}</a> <a href="/">Home</a> <a href="a.html">This page</a></p>""",
                head='<meta property="og:image" content="/images/b-3.jpg">\n'
                     '<link rel="image_src" href="/images/c-2.jpg">\n'),
            "/people/b.html": _page(f"{b} — and a friend", f"""<h1 id="photos">{b}</h1>
<p>A photo of {c}: <img src="/images/c-1.jpg" alt="{c}"></p>
<p><a href="/people/a.html">Back to {a}</a></p>"""),
            "/private/secret.html": _page("Private", '<img src="/private/face.jpg" alt="secret">'),
            "/noimage.html": _page("No image index", '<img src="/images/d-2.jpg" alt="d">',
                                   head='<meta name="robots" content="noimageindex">\n'),
            "/noimage-header.html": _page("No image index (header)",
                                          '<img src="/images/d-3.jpg" alt="d">'),
            "/redirects.html": _page("Redirects", "\n".join(
                f'<img src="{path}" alt="redirect">' for path in
                ("/redirect/private.jpg", "/redirect/metadata.jpg", "/redirect/ipv6.jpg",
                 "/redirect/ok.jpg", "/loop1"))),
            "/slow.html": _page("Slow", '<img src="/slow.jpg" alt="slow">'),
            "/big.html": _page("Big", '<img src="/big.jpg" alt="big">\n'
                                      '<img src="/big-nolength.jpg" alt="big, no length">'),
            "/dupes.html": _page("Duplicates", '<img src="/images/f-1.jpg" alt="first">\n'
                                               '<img src="/images/f-1-copy.jpg" alt="copy">'),
            "/elsewhere/page.html": _page("Elsewhere", '<img src="/images/f-2.jpg" alt="f">'),
            "/nofollow.html": _page("Not followed", '<img src="/images/f-3.jpg" alt="f">'),
        }
        for path, body in pages.items():
            self.resources[path] = Resource(body, "text/html; charset=utf-8")
        self.resources["/noimage-header.html"].headers["X-Robots-Tag"] = "noimageindex"
        self.resources["/broken.html"] = Resource(BROKEN_HTML, "text/html")

    def _expected(self) -> dict:
        u = self.url
        indexed = {f"{u}/images/{name}.jpg" for name in
                   ("a-1", "a-2", "a-3", "b-1", "b-3", "c-1", "c-2", "e-1", "e-2", "f-1")}
        refused = {
            f"{u}/private/secret.html": "robots",
            f"{u}/images/d-2.jpg": "noimageindex",
            f"{u}/images/d-3.jpg": "noimageindex",
            f"{u}/redirect/private.jpg": "ssrf",
            f"{u}/redirect/metadata.jpg": "ssrf",
            f"{u}/redirect/ipv6.jpg": "ssrf",
            f"{u}/loop1": "redirects",
            f"{u}/slow.jpg": "timeout",
            f"{u}/big.jpg": "too_large",
            f"{u}/big-nolength.jpg": "too_large",
            f"{u}/fake.jpg": "bad_image",
            f"{u}/images/f-1-copy.jpg": "duplicate",
            f"{self.other_host_url}/elsewhere/page.html": "off_allowlist",
        }
        never = {"/private/secret.html", "/private/face.jpg", "/images/d-2.jpg",
                 "/images/d-3.jpg", "/elsewhere/page.html", "/images/f-2.jpg",
                 "/nofollow.html", "/images/f-3.jpg"}
        pages = {u + p for p in ("/", "/people/a.html", "/people/b.html", "/noimage.html",
                                 "/noimage-header.html", "/broken.html", "/redirects.html",
                                 "/slow.html", "/big.html", "/dupes.html")}
        same = [{f"{u}/images/f-1.jpg", f"{u}/images/f-1-copy.jpg"}]
        a, b, c = display_name("a"), display_name("b"), display_name("c")
        on_a = (f"{u}/people/a.html", f"{a} — photos")
        found_on = {"a-1": (*on_a, a), "a-2": (*on_a, f"{a}, two sizes"),
                    "a-3": (*on_a, f"{a}, two sizes"), "b-1": (*on_a, "fallback"), "b-3": (*on_a, ""),
                    "c-2": (*on_a, ""), "c-1": (f"{u}/people/b.html", f"{b} — and a friend", c),
                    "e-1": (f"{u}/broken.html", "Broken page", "Abel Pacheco"),
                    "e-2": (f"{u}/redirects.html", "Redirects", "redirect"),
                    "f-1": (f"{u}/dupes.html", "Duplicates", "first")}
        provenance = {f"{u}/images/{name}.jpg": {"page_url": page, "page_title": title,
                                                 "alt_text": alt}
                      for name, (page, title, alt) in found_on.items()}
        return {"indexed": indexed, "refused": refused, "never_requested": never,
                "pages": pages, "same_bytes": same, "provenance": provenance}

    # --------------------------------------------------------------- lifecycle
    def start(self) -> Site:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; a request sleeping in /slow.jpg is woken and its answer dropped."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def update(self, path: str, body: bytes) -> None:
        """Change a resource's bytes: a new ETag and a Last-Modified a day later."""
        with self._lock:
            old = self.resources[path]
            self.resources[path] = Resource(body, old.content_type, dict(old.headers),
                                            old.modified + timedelta(days=1))

    def _record(self, method: str, host: str, path: str, status: int, user_agent: str) -> None:
        self.hits.add(path)
        if status == 304:
            self.not_modified.add(path)
        with self._lock:
            self.log.append(Request(time.monotonic(), method, host, path, status, user_agent))


def start_site(slow_seconds: float = SLOW_SECONDS) -> Site:
    """A running Site on 127.0.0.1 (a free port); call stop() when done."""
    return Site(slow_seconds).start()


def _not_modified(request: BaseHTTPRequestHandler, resource: Resource) -> bool:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or resource.etag in tags
    since = request.headers.get("If-Modified-Since")
    if since:
        try:
            when = email.utils.parsedate_to_datetime(since)
        except (TypeError, ValueError, IndexError):
            return False
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when >= resource.modified
    return False


def _handler_for(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FacesearchTestSite/1.0"

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: Site.log keeps what a test needs

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _finish(self, status: int, headers: dict[str, str], body: bytes = b"",
                    head: bool = False) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if body and not head:
                self.wfile.write(body)

        def _answer(self, head: bool) -> None:
            path = urlsplit(self.path).path
            host = self.headers.get("Host", "")
            with site._lock:
                resource = site.resources.get(path)
            location = site.redirects.get(path)
            if location is not None:
                status = 302
            elif resource is None:
                status = 404
            elif _not_modified(self, resource):
                status = 304
            else:
                status = 200
            site._record(self.command, host, path, status, self.headers.get("User-Agent", ""))

            if status == 302:
                self._finish(302, {"Location": location, "Content-Length": "0"})
            elif status == 404:
                body = b"not found\n"
                self._finish(404, {"Content-Type": "text/plain", "Content-Length": str(len(body))},
                             body, head)
            elif status == 304:
                self._finish(304, {"ETag": resource.etag,
                                   "Last-Modified": resource.last_modified})
            else:
                if path == "/slow.jpg" and site._stopping.wait(site.slow_seconds):
                    self.close_connection = True
                    return  # stopping: drop the answer
                headers = {"Content-Type": resource.content_type, "ETag": resource.etag,
                           "Last-Modified": resource.last_modified, **resource.headers}
                if path == "/big-nolength.jpg":
                    headers["Connection"] = "close"
                    self.close_connection = True
                else:
                    headers["Content-Length"] = str(len(resource.body))
                self._finish(200, headers, resource.body, head)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request sleeping in /slow.jpg must not hold up stop()

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that give up (timeouts, byte limits) make the server's writes fail:
        expected here, so not printed; anything else is."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)
