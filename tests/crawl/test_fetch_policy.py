"""Every URL the crawler asks, redirect targets included, obeys the same rules: a page must be
inside the allowlist, robots.txt of the host it is on must allow it, and the address
connected to is the address checked (no DNS rebinding between check and connect).

Real HTTP(S) servers on loopback; host names resolve through a table handed to the crawler's
transport, so no test asks DNS. 127.0.0.2 is loopback too, but outside the allowed
127.0.0.1/32: a socket listening there, never accepting, shows whether anything connected."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from facesearch.config import Settings
from facesearch.crawl.fetch import Fetched, FetchLimits, FetchRefused, fetch
from facesearch.crawl.guard import guarded_transport, parse_networks
from facesearch.service import FaceSearchService
from tests.conftest import OPERATOR, lfw_photos

LIMITS = FetchLimits(max_bytes=1_000_000, max_redirects=5, timeout=2)
ROBOTS = b"User-agent: *\nDisallow: /private/\n"


class InFlight:
    """Counts the requests a server is answering at once, and the most seen; a parent
    counts those of several servers together."""

    def __init__(self, parent: InFlight | None = None) -> None:
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.parent = parent

    def change(self, by: int) -> None:
        with self.lock:
            self.now += by
            self.most = max(self.most, self.now)
        if self.parent:
            self.parent.change(by)


class Server:
    """An HTTP/1.1 server on a loopback address: routes maps a path to (status, headers,
    body); requests lists every path asked, in order, and times when. With slow, every .jpg takes that many
    seconds to answer, counted in in_flight meanwhile."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]],
                 host: str = "127.0.0.1", tls: ssl.SSLContext | None = None,
                 slow: float = 0.0, in_flight: InFlight | None = None) -> None:
        self.routes = routes
        self.requests: list[str] = []
        self.times: list[float] = []  # when each request came, time.monotonic()
        self.in_flight = in_flight or InFlight()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                server.times.append(time.monotonic())
                if slow and self.path.endswith(".jpg"):
                    server.in_flight.change(+1)
                    time.sleep(slow)
                    server.in_flight.change(-1)
                status, headers, body = server.routes.get(self.path, (404, {}, b"not found\n"))
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        if tls:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def trap(port: int = 0) -> socket.socket:
    """A socket listening on the forbidden 127.0.0.2 that never accepts: a client that
    connects leaves a connection waiting in its queue."""
    listener = socket.create_server(("127.0.0.2", port))
    listener.setblocking(False)
    return listener


def never_connected(listener: socket.socket) -> bool:
    try:
        listener.accept()[0].close()
    except BlockingIOError:
        return True
    return False


class Resolver:
    """getaddrinfo over a table: host -> a list of answers, one per call (the last one
    repeats); calls lists the hosts asked."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    def __call__(self, host: str, port: int, type: int = 0, **_: object) -> list[tuple]:
        self.calls.append(host)
        answers = self.table.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        addresses = answers[min(self.calls.count(host), len(answers)) - 1]
        return [(socket.AF_INET, type, 6, "", (address, port)) for address in addresses]


def get(urls: list[str], resolve: Resolver, allowed: str = "127.0.0.1/32") -> list[Fetched | str]:
    """Fetch each URL in turn with the crawler's transport: the Fetched, or the refusal's
    reason."""
    async def run() -> list[Fetched | str]:
        results: list[Fetched | str] = []
        transport = guarded_transport(parse_networks([allowed]), resolve)
        async with httpx.AsyncClient(transport=transport) as client:
            for url in urls:
                try:
                    results.append(await fetch(client, url, LIMITS))
                except FetchRefused as exc:
                    results.append(exc.reason)
        return results
    return asyncio.run(run())


# ------------------------------------------------------------------------------------ deadline

def test_a_server_trickling_its_answer_is_cut_off_at_the_request_deadline() -> None:
    """Each byte comes well within the per-read timeout, the whole answer never does."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100\r\n\r\n")
            for _ in range(100):
                if stop.wait(0.2):
                    return
                try:
                    connection.sendall(b"x")
                except OSError:
                    return  # the client gave up

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    try:
        result = get([f"http://slow.test:{listener.getsockname()[1]}/x.jpg"],
                     Resolver({"slow.test": [["127.0.0.1"]]}))
    finally:
        stop.set()
        listener.close()
    assert result == ["timeout"]
    assert LIMITS.timeout <= time.monotonic() - started < LIMITS.timeout + 1.5


# ------------------------------------------------------------------ connect-time address check

def test_a_host_that_rebinds_to_a_forbidden_address_is_refused_when_connecting() -> None:
    # Connection: close, so that the second fetch must connect (and resolve) again.
    server = Server({"/": (200, {"Connection": "close"}, b"hello\n")})
    forbidden = trap(server.port)
    resolve = Resolver({"rebind.test": [["127.0.0.1"], ["127.0.0.2"]]})
    try:
        first, second = get([f"http://rebind.test:{server.port}/"] * 2, resolve)
    finally:
        server.stop()
    assert isinstance(first, Fetched) and first.body == b"hello\n"
    assert second == "ssrf"
    assert resolve.calls == ["rebind.test", "rebind.test"]  # once per connection, by the guard
    assert server.requests == ["/"]
    assert never_connected(forbidden)


def test_a_host_with_one_forbidden_address_is_refused_before_any_connection() -> None:
    server = Server({"/": (200, {}, b"hello\n")})
    forbidden = trap(server.port)
    resolve = Resolver({"mixed.test": [["127.0.0.1", "127.0.0.2"]], "inside.test": [["127.0.0.2"]]})
    try:
        results = get([f"http://mixed.test:{server.port}/", f"http://inside.test:{server.port}/",
                       f"http://nowhere.test:{server.port}/"], resolve)
    finally:
        server.stop()
    assert results == ["ssrf", "ssrf", "dns"]
    assert server.requests == []
    assert never_connected(forbidden)


def test_the_next_checked_address_is_tried_when_one_refuses_the_connection() -> None:
    server = Server({"/": (200, {}, b"hello\n")})
    resolve = Resolver({"two.test": [["127.0.0.3", "127.0.0.1"]]})  # nothing listens on .3
    try:
        [got] = get([f"http://two.test:{server.port}/"], resolve, allowed="127.0.0.0/8")
    finally:
        server.stop()
    assert isinstance(got, Fetched) and got.body == b"hello\n"


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """An HTTPS server whose certificate names photos.test only; the crawler trusts it
    through SSL_CERT_FILE, as httpx does by default."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=photos.test",
                    "-addext", "subjectAltName=DNS:photos.test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = Server({"/": (200, {}, b"secure\n")}, tls=context)
    yield server
    server.stop()


def test_https_connects_to_the_checked_address_and_verifies_the_host_name(tls_server: Server) -> None:
    resolve = Resolver({"photos.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
    port = tls_server.port
    good, wrong_name = get([f"https://photos.test:{port}/", f"https://other.test:{port}/"], resolve)
    assert isinstance(good, Fetched) and good.body == b"secure\n"
    assert wrong_name == "network"  # the certificate does not name other.test
    assert tls_server.requests == ["/"]


# --------------------------------------------------------------- redirects through the crawler

def html(body: str) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "text/html; charset=utf-8"}, f"<html><body>{body}</body></html>".encode()


def redirect(location: str) -> tuple[int, dict[str, str], bytes]:
    return 302, {"Location": location}, b""


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One crawl of a site (allowlisted) whose pages and images redirect: to a server off
    the allowlist, into robots-disallowed paths here and on an image host, and to 127.0.0.2."""
    jpeg = {"Content-Type": "image/jpeg"}
    photo = lfw_photos("Aaron_Peirsol")[1].read_bytes()
    away = Server({"/page.html": html("off the allowlist")})
    images = Server({"/robots.txt": (200, {}, ROBOTS), "/face.jpg": (200, jpeg, photo),
                     "/private/face.jpg": (200, jpeg, photo)})
    forbidden = trap()
    site = Server({
        "/robots.txt": (200, {}, ROBOTS),
        "/": html('<a href="/away.html">a</a> <a href="/hidden.html">h</a>'
                  '<img src="/photo/hosted.jpg"> <img src="/photo/private.jpg">'
                  '<img src="/photo/inside.jpg">'),
        "/away.html": redirect(away.url + "/page.html"),
        "/hidden.html": redirect("/private/page.html"),
        "/private/page.html": html("disallowed by robots.txt"),
        "/photo/hosted.jpg": redirect(images.url + "/face.jpg"),
        "/photo/private.jpg": redirect(images.url + "/private/face.jpg"),
        "/photo/inside.jpg": redirect(f"http://127.0.0.2:{forbidden.getsockname()[1]}/face.jpg"),
    })
    service = FaceSearchService(Settings(
        home=tmp_path_factory.mktemp("policy") / "data", workers=1, crawl_allowed_networks=["127.0.0.1/32"],
        crawl_timeout_seconds=2, crawl_delay_seconds=0))
    try:
        service.add_source(OPERATOR, "web", "legitimate_interests", "US")
        job = service.start_crawl(OPERATOR, [site.url + "/"], [site.url + "/"], "web", "test", max_depth=1)
        service.run_crawl(OPERATOR, job.id)
        frontier = {row["url"]: f"{row['state']}:{row['reason']}" for row in service.crawls.frontier(job.id)}
        hosted = service.store.indexed_image(location=images.url + "/face.jpg")
        yield {"site": site, "away": away, "images": images, "forbidden": forbidden,
               "frontier": frontier, "hosted": hosted}
    finally:
        service.close()
        for server in (site, away, images):
            server.stop()
        forbidden.close()


def test_a_page_redirecting_outside_the_allowlist_is_refused_and_its_target_never_asked(
        crawled: dict) -> None:
    assert crawled["frontier"][crawled["site"].url + "/away.html"] == "refused:off_allowlist"
    assert crawled["away"].requests == []  # not even its robots.txt


def test_a_redirect_into_a_path_disallowed_by_robots_txt_is_refused_and_never_asked(
        crawled: dict) -> None:
    assert crawled["frontier"][crawled["site"].url + "/hidden.html"] == "refused:robots"
    assert "/private/page.html" not in crawled["site"].requests
    assert "/hidden.html" in crawled["site"].requests


def test_an_image_redirected_to_another_host_obeys_that_hosts_robots_txt(crawled: dict) -> None:
    site = crawled["site"].url
    assert crawled["frontier"][site + "/photo/private.jpg"] == "refused:robots"
    assert crawled["frontier"][site + "/photo/hosted.jpg"] == "done:"  # images may be anywhere
    assert crawled["hosted"] is not None and crawled["hosted"].faces == 1
    assert sorted(crawled["images"].requests) == ["/face.jpg", "/robots.txt"]


def test_a_redirect_to_a_forbidden_address_is_refused_as_ssrf_when_connecting(crawled: dict) -> None:
    assert crawled["frontier"][crawled["site"].url + "/photo/inside.jpg"] == "refused:ssrf"
    assert never_connected(crawled["forbidden"])


# ------------------------------------------------------------------------ concurrency limits

def peak_requests(home: Path, host_concurrency: int, concurrency: int) -> tuple[list[int], int, list[str]]:
    """Crawl a URL list of four slow photos on each of two hosts: the most requests each
    host and both together answered at once, and the frontier's outcomes."""
    jpeg = {"Content-Type": "image/jpeg"}
    both = InFlight()
    servers = [Server({f"/{n}.jpg": (200, jpeg, photo.read_bytes())
                       for n, photo in enumerate(lfw_photos(person)[:4])}, slow=0.4, in_flight=InFlight(both))
               for person in ("Aaron_Peirsol", "Al_Sharpton")]
    service = FaceSearchService(Settings(
        home=home, workers=1, crawl_allowed_networks=["127.0.0.1/32"], crawl_delay_seconds=0,
        crawl_host_concurrency=host_concurrency, crawl_concurrency=concurrency))
    try:
        service.add_source(OPERATOR, "web", "legitimate_interests", "US")
        urls = [f"{server.url}/{n}.jpg" for server in servers for n in range(4)]
        job = service.start_crawl(OPERATOR, [], [], "web", "test", images=urls)
        service.run_crawl(OPERATOR, job.id)
        outcomes = [row["state"] for row in service.crawls.frontier(job.id)]
    finally:
        service.close()
        for server in servers:
            server.stop()
    return [server.in_flight.most for server in servers], both.most, outcomes


def test_one_request_at_a_time_reaches_a_host_by_default(tmp_path: Path) -> None:
    per_host, _, outcomes = peak_requests(tmp_path / "data", 1, 8)
    assert per_host == [1, 1] and outcomes == ["done"] * 8


def test_requests_in_flight_stay_within_the_per_host_and_overall_limits(tmp_path: Path) -> None:
    per_host, together, outcomes = peak_requests(tmp_path / "data", 3, 4)
    assert all(2 <= peak <= 3 for peak in per_host) and together <= 4
    assert outcomes == ["done"] * 8


def test_a_redirect_to_another_host_waits_out_that_hosts_crawl_delay(tmp_path: Path) -> None:
    jpeg = {"Content-Type": "image/jpeg"}
    first, second = (photo.read_bytes() for photo in lfw_photos("Aaron_Peirsol")[:2])
    target = Server({"/robots.txt": (200, {}, b"User-agent: *\nCrawl-delay: 0.6\n"),
                     "/face.jpg": (200, jpeg, first), "/other.jpg": (200, jpeg, second)})
    origin = Server({"/r.jpg": redirect(target.url + "/face.jpg")})
    service = FaceSearchService(Settings(
        home=tmp_path / "data", workers=1, crawl_allowed_networks=["127.0.0.1/32"], crawl_delay_seconds=0))
    try:
        service.add_source(OPERATOR, "web", "legitimate_interests", "US")
        # One batch: the hop from origin and the target's own image compete for its turns.
        job = service.start_crawl(OPERATOR, [], [], "web", "test",
                                  images=[origin.url + "/r.jpg", target.url + "/other.jpg"])
        service.run_crawl(OPERATOR, job.id)
        outcomes = [row["state"] for row in service.crawls.frontier(job.id)]
    finally:
        service.close()
        origin.stop()
        target.stop()
    assert outcomes == ["done", "done"]
    assert sorted(target.requests) == ["/face.jpg", "/other.jpg", "/robots.txt"]
    gaps = [later - earlier for earlier, later in zip(target.times, target.times[1:])]
    assert min(gaps) >= 0.55, gaps
