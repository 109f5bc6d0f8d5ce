"""The HTTP layer under hostile input, over a real `facesearch serve` process: bodies are
bounded by the bytes received whatever the headers say, uploads are read only from known
callers or in a few anonymous slots (measured by the server's own peak memory), the log-in
form carries a token, forwarded headers are believed from trusted proxies only, cookies are
Secure behind an https address, method labels of /metrics stay few, and every log line is
JSON without personal data, unhandled errors included."""

from __future__ import annotations

import json
import re
import select
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from facesearch.service.base import client_hash
from tests.conftest import jpeg_bytes, lfw_photos, log_in, noise_image
from tests.web.conftest import password_of, post_login, start_server, stop_server

MiB = 1024 * 1024
LIMIT = Settings().max_upload_bytes  # 20 MiB
UPLOAD_SLOTS = 2
PUBLIC_URL = "https://faces.example.org"
PROXY = "127.0.0.2"  # trusted; the tests' own 127.0.0.1 is not
DIRECT = "127.0.0.3"  # untrusted, used by one test only
ATTEMPTS = 2  # photos one client may send to the public pages per hour


@dataclass
class Site:
    url: str
    home: Path
    pid: int
    keys: dict[str, str]  # username -> API key

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def client(self, username: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60,
                            headers={"Authorization": f"Bearer {self.keys[username]}"})

    def audit(self, after: int = 0) -> list[dict]:
        """Records with id > after, read as the auditor does (over the API, from the server:
        no second process opens its database)."""
        with self.client("aud") as auditor:
            found = auditor.get("/api/v1/audit", params={"limit": 100_000})
        assert found.status_code == 200, found.text
        return [r for r in found.json() if r["id"] > after and r["action"] != "audit.read"]

    def last_audit_id(self) -> int:
        records = self.audit()
        return records[-1]["id"] if records else 0


def make_users(home: Path) -> dict[str, str]:
    """An admin, an auditor and a data-protection officer with API keys, made through the
    service; no gallery is needed here."""
    service = FaceSearchService(Settings(home=home, workers=1))
    try:
        operator = service.local_operator("test-operator")
        service.bootstrap_admin(operator, "ada", password_of("ada"), "Agency A")
        admin, _, _ = log_in(service, "ada", password_of("ada"), "127.0.0.1")
        keys = {"ada": service.create_api_key(admin, "tests")[1]}
        for name, role in (("aud", "auditor"), ("dan", "dpo")):  # the operator's to create
            service.create_user(operator, name, password_of(name), role, "Agency A")
            user, _, _ = log_in(service, name, password_of(name), "127.0.0.1")
            keys[name] = service.create_api_key(user, "tests")[1]
        return keys
    finally:
        service.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("hardening") / "data"
    keys = make_users(home)
    process, url = start_server(home, FACESEARCH_PUBLIC_URL=PUBLIC_URL,
                                FACESEARCH_TRUSTED_PROXIES=PROXY,
                                FACESEARCH_PUBLIC_UPLOADS_AT_ONCE=str(UPLOAD_SLOTS),
                                FACESEARCH_PUBLIC_ATTEMPTS_PER_HOUR=str(ATTEMPTS))
    yield Site(url, home, process.pid, keys)
    stop_server(process)


def test_another_process_reading_the_database_sees_every_commit_of_the_server(site: Site) -> None:
    # serve opens the store twice in one process; a file descriptor opened and closed beside
    # SQLite's once dropped its locks, and the first outside reader then deleted the server's
    # -wal file: later commits went to a deleted file, invisible and lost on restart.
    def records() -> int:  # the listings' own records: the server's scheduled jobs audit too
        with closing(sqlite3.connect(site.home / "metadata.sqlite3", timeout=30)) as db:
            return db.execute(
                "SELECT count(*) FROM audit_log WHERE action = 'user.list'").fetchone()[0]

    for _ in range(3):
        before = records()
        with site.client("ada") as admin:
            assert admin.get("/api/v1/users").status_code == 200  # audited (user.list)
        assert records() == before + 1


# Memory of the server process -----------------------------------------------------------------

def memory_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))


def peak_growth_mib(pid: int, action: Callable[[], None]) -> float:
    """How far the server's resident memory rose above where it stood, at its peak, while
    action ran: the kernel's high-water mark, reset first (clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = memory_kib(pid, "VmRSS")
    action()
    return (memory_kib(pid, "VmHWM") - before) / 1024


# Raw HTTP -------------------------------------------------------------------------------------

FILE_PART = (b'--b\r\nContent-Disposition: form-data; name="selfie"; filename="a.jpg"\r\n'
             b"Content-Type: image/jpeg\r\n\r\n")


def chunked_post(port: int, path: str, total: int, extra_headers: str = "") -> int:
    """POST a multipart body of `total` bytes in 1 MiB chunks over a raw socket, as a client
    that ignores the server can: stop sending once an answer arrives. The answer's status."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall((f"POST {path} HTTP/1.1\r\nHost: localhost\r\n"
                      "Content-Type: multipart/form-data; boundary=b\r\n"
                      f"Transfer-Encoding: chunked\r\n{extra_headers}\r\n").encode())
        chunk = b"x" * MiB
        sent = 0
        try:
            for index in range(total // MiB):
                data = FILE_PART + chunk if index == 0 else chunk
                conn.sendall(b"%x\r\n%s\r\n" % (len(data), data))
                sent += len(data)
                if select.select([conn], [], [], 0)[0]:
                    break  # answered before the end
            else:
                conn.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection on us: its answer is still to be read
        answer = b""
        while b"\r\n" not in answer:
            received = conn.recv(4096)
            if not received:
                break
            answer += received
    return int(answer.split(b" ", 2)[1])


def test_a_short_content_length_does_not_let_a_long_chunked_body_through(site: Site) -> None:
    statuses = []
    grew = peak_growth_mib(site.pid, lambda: statuses.append(chunked_post(
        site.port, "/api/v1/public/access-requests", 60 * MiB, "Content-Length: 10\r\n")))
    assert grew < 16, f"the server grew by {grew:.0f} MiB"
    assert statuses == [400]  # both headers: refused before anything is read


def test_a_chunked_body_is_counted_as_it_arrives_and_stopped_at_the_limit(site: Site) -> None:
    statuses = []
    grew = peak_growth_mib(site.pid, lambda: statuses.append(chunked_post(
        site.port, "/api/v1/public/access-requests", 60 * MiB)))
    assert statuses == [413]
    # What was read up to the limit may be held (20 MiB), not the 60 MiB sent.
    assert grew < LIMIT / MiB + 24, f"the server grew by {grew:.0f} MiB"
    with httpx.Client(base_url=site.url) as client:
        answer = client.post("/api/v1/public/access-requests", data={"contact": "a@example.org"},
                             files={"selfie": ("a.jpg", b"x" * (LIMIT + 1), "image/jpeg")})
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"


def post_at_once(url: str, path: str, count: int, size: int) -> list[int]:
    """count anonymous multipart posts of a size-byte file, all at once; their statuses."""
    body = b"\xff" * size

    def post(_: int) -> int:
        with httpx.Client(base_url=url, timeout=120) as client:
            return client.post(path, data={"contact": "a@example.org"},
                               files={"selfie": ("a.jpg", body, "image/jpeg"),
                                      "probe": ("a.jpg", body, "image/jpeg")}).status_code

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(post, range(count)))


def test_anonymous_uploads_to_a_route_that_needs_a_caller_are_refused_unread(site: Site) -> None:
    before = site.last_audit_id()
    statuses: list[int] = []
    grew = peak_growth_mib(site.pid, lambda: statuses.extend(
        post_at_once(site.url, "/api/v1/probe-faces", 20, 9 * MiB)))
    assert statuses == [401] * 20
    # Twenty 9 MiB bodies (18 MiB each: two files) held at once would be 360 MiB.
    assert grew < 32, f"the server grew by {grew:.0f} MiB"
    # Aggregated per client and hour: one record at most (none if this hour had one).
    assert len([r for r in site.audit(before) if r["action"] == "auth.refused"]) <= 1


def test_anonymous_uploads_to_public_routes_are_held_a_few_at_a_time(site: Site) -> None:
    statuses: list[int] = []
    size = 19 * MiB // 2  # two files of it: a 19 MiB body
    grew = peak_growth_mib(site.pid, lambda: statuses.extend(
        post_at_once(site.url, "/api/v1/public/access-requests", 30, size)))
    # Those beyond the slots are told to come back (503) before their body is read; those in
    # a slot are refused for the photo (not an image) or the client's hourly allowance.
    # Each slot holds its body at most twice (parsed, then read); 30 bodies would be 570 MiB.
    bound = UPLOAD_SLOTS * 2 * 19 + 48
    assert grew < bound, f"the server grew by {grew:.0f} MiB (bound {bound})"
    assert set(statuses) <= {503, 422, 429}, statuses
    assert statuses.count(503) >= 1


@pytest.mark.parametrize("method, path", [
    ("POST", "/login"), ("POST", "/access/report/no-such-token"),
    ("POST", "/api/v1/public/access-reports/no-such-token"), ("GET", "/opt-out")])
def test_a_public_route_that_takes_no_file_reads_none(site: Site, method: str, path: str) -> None:
    """A file part is held in memory up to the body limit: only the upload routes, a few at a
    time, may read one. Elsewhere it is refused at its headers, or the body is not read."""
    count, body = 12, b"\xff" * (18 * MiB)

    def send(_: int) -> int:
        with httpx.Client(base_url=site.url, timeout=120) as client:
            try:
                return client.request(method, path, data={"username": "ada", "password": "x" * 12},
                                      files={"photo": ("a.jpg", body, "image/jpeg")}).status_code
            except httpx.TransportError:
                return 0  # answered and closed before the whole body was sent

    statuses: list[int] = []
    with ThreadPoolExecutor(count) as pool:
        grew = peak_growth_mib(site.pid, lambda: statuses.extend(pool.map(send, range(count))))
    # Twelve 18 MiB files held at once would be 216 MiB.
    assert grew < 32, f"the server grew by {grew:.0f} MiB"
    assert all(s == 0 or s < 500 for s in statuses), statuses
    if path == "/login":
        assert set(statuses) <= {0, 400}, statuses  # too many files: refused before any check


def test_a_flood_of_unauthenticated_calls_adds_one_audit_record(site: Site) -> None:
    before = site.last_audit_id()
    flood = httpx.HTTPTransport(local_address="127.0.0.5")  # an address with no refusal yet
    with httpx.Client(base_url=site.url, transport=flood) as client:
        statuses = {client.get("/api/v1/me", headers=headers).status_code
                    for n in range(200) for headers in [
                        {} if n % 3 == 0 else {"Authorization": f"Bearer fsk_guess{n}"} if n % 3 == 1
                        else {"Cookie": f"facesearch_session=guess{n}"}]}
    assert statuses == {401}
    [record] = site.audit(before)
    assert (record["action"], record["client"]) == ("auth.refused", "127.0.0.5")
    assert record["detail"]["refused_in_previous_window"] == 0


# Log-in CSRF -------------------------------------------------------------------------------------

def test_the_login_form_needs_its_token_and_a_post_without_it_is_refused_and_audited(
        site: Site) -> None:
    before = site.last_audit_id()
    login = {"username": "ada", "password": password_of("ada")}
    fresh = httpx.HTTPTransport(local_address="127.0.0.4")  # an address with no refusal yet
    with httpx.Client(base_url=site.url, transport=fresh) as client:
        bare = client.post("/login", data=login)
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        # The cookie is Secure (the public URL is https), so this client would not send it
        # back over http: the tests carry it by hand.
        cookie = page.cookies["facesearch_login"]
        forged = client.post("/login", data=dict(login, csrf_token=token))  # no cookie
        wrong = client.post("/login", data=dict(login, csrf_token="x" * 43),
                            headers={"Cookie": f"facesearch_login={cookie}"})
        empty = client.post("/login", data=dict(login, csrf_token=""),
                            headers={"Cookie": "facesearch_login="})
        again = client.get("/login", headers={"Cookie": f"facesearch_login={cookie}"})
        good = client.post("/login", data=dict(login, csrf_token=token),
                           headers={"Cookie": f"facesearch_login={cookie}"})
    for refused in (bare, forged, wrong, empty):
        assert refused.status_code == 403, refused.text
        assert not any(c.startswith("facesearch_session=")
                       for c in refused.headers.get_list("set-cookie"))
        assert 'name="csrf_token"' in refused.text  # the form again, with a token
    # One token per browser: a second log-in page keeps the first one's valid.
    assert f'value="{token}"' in again.text
    assert good.status_code == 303 and cookie_attributes(good, "facesearch_session")
    # Anonymous refusals are aggregated per client and hour: the first is recorded.
    [refusal] = [r for r in site.audit(before) if r["action"] == "request.refused"]
    assert refusal["detail"]["target"] == "POST /login" and refusal["role"] == "anonymous"
    assert refusal["client"] == "127.0.0.4"
    assert [r["actor"] for r in site.audit(before) if r["action"] == "login.password"] == ["ada"]


# Behind a proxy ---------------------------------------------------------------------------------

def test_cookies_are_secure_when_the_public_address_is_https(site: Site) -> None:
    with httpx.Client(base_url=site.url) as client:
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        session = client.post("/login", data={"username": "ada", "password": password_of("ada"),
                                              "csrf_token": token},
                              headers={"Cookie": f"facesearch_login={page.cookies['facesearch_login']}"})
    assert session.status_code == 303
    cookies = [*page.headers.get_list("set-cookie"), *session.headers.get_list("set-cookie")]
    assert any(c.startswith("facesearch_session=") for c in cookies)
    for cookie in cookies:
        attributes = [a.strip().lower() for a in cookie.split(";")]
        assert "secure" in attributes and "httponly" in attributes, cookie


def cookie_attributes(response: httpx.Response, name: str) -> list[str]:
    [cookie] = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{name}=")]
    return [a.strip().lower() for a in cookie.split(";")]


def test_a_cookie_is_not_secure_on_plain_http_without_a_public_address(
        tmp_path: Path) -> None:
    home = tmp_path / "data"
    home.mkdir()
    process, url = start_server(home)
    try:
        with httpx.Client(base_url=url) as client:
            page = client.get("/login")
            assert post_login(client, "nobody", "wrong password").status_code == 401
    finally:
        stop_server(process)
    attributes = cookie_attributes(page, "facesearch_login")
    assert "secure" not in attributes and "httponly" in attributes


@pytest.mark.parametrize("proxies", ["*", "proxy.internal", "10.0.0.300", "10.0.0.1, nonsense"])
def test_a_trusted_proxy_setting_takes_addresses_and_networks_only(proxies: str) -> None:
    # uvicorn would take "*" as everyone and a typo as a name that matches no peer.
    with pytest.raises(ValidationError):
        Settings(trusted_proxies=proxies)
    assert Settings(trusted_proxies="10.0.0.1, 172.16.0.0/12").trusted_proxies == [
        "10.0.0.1/32", "172.16.0.0/12"]


@pytest.mark.parametrize("url", ["faces.example.org", "ftp://faces.example.org", "https://a b"])
def test_the_public_url_must_be_an_http_address(url: str) -> None:
    with pytest.raises(ValidationError):
        Settings(public_url=url)
    assert Settings(public_url="https://faces.example.org/").public_url == "https://faces.example.org"


def client_of_refusal(site: Site, before: int) -> str:
    [refusal] = [r for r in site.audit(before) if r["action"] == "auth.refused"]
    return refusal["client"]


def test_a_trusted_proxy_forwards_the_client_address_and_an_untrusted_peer_cannot(
        site: Site) -> None:
    proxy = httpx.Client(base_url=site.url, transport=httpx.HTTPTransport(local_address=PROXY))
    # Untrusted, and with no refusal this hour yet (those are recorded once per client and hour).
    direct = httpx.Client(base_url=site.url, transport=httpx.HTTPTransport(local_address=DIRECT))
    with proxy, direct:
        before = site.last_audit_id()
        # The proxy appends the peer it saw; what the client claimed before it is not believed.
        assert proxy.get("/api/v1/me", headers={
            "X-Forwarded-For": "10.9.9.9, 198.51.100.7"}).status_code == 401
        assert client_of_refusal(site, before) == "198.51.100.7"
        before = site.last_audit_id()
        assert direct.get("/api/v1/me", headers={"X-Forwarded-For": "198.51.100.8"}).status_code == 401
        assert client_of_refusal(site, before) == DIRECT

        # Each forwarded client has its own allowance of public photos: one client using
        # up its own does not close the pages for everyone behind the proxy.
        noise = jpeg_bytes(noise_image(160, 120))

        def photo(client: httpx.Client, forwarded: str) -> int:
            return client.post("/api/v1/public/access-requests", data={"contact": "a@example.org"},
                               files={"selfie": ("n.jpg", noise, "image/jpeg")},
                               headers={"X-Forwarded-For": forwarded}).status_code

        first = [photo(proxy, "203.0.113.5") for _ in range(ATTEMPTS + 1)]
        assert first[:ATTEMPTS] == [422] * ATTEMPTS and first[-1] == 429
        assert photo(proxy, "203.0.113.6") == 422
        # A forwarded header from an untrusted peer changes nothing: still the peer's count.
        before = site.last_audit_id()
        direct_statuses = [photo(direct, f"203.0.113.{n}") for n in range(10, 10 + ATTEMPTS + 1)]
        assert direct_statuses[-1] == 429
    clients = {r["client"] for r in site.audit(before) if r["role"] == "public"}
    assert clients == {"client-" + client_hash(DIRECT)[:16]}


def test_links_are_built_from_the_public_address(site: Site, lfw: Path) -> None:
    person = next(p for p in sorted((lfw / "images").iterdir()) if len(list(p.glob("*.jpg"))) >= 2)
    with httpx.Client(base_url=site.url, timeout=60,
                      transport=httpx.HTTPTransport(local_address=PROXY)) as proxy:
        asked = proxy.post("/api/v1/public/access-requests", data={"contact": "a@example.org"},
                           files={"selfie": ("s.jpg", lfw_photos(person.name)[0].read_bytes(),
                                             "image/jpeg")},
                           headers={"X-Forwarded-For": "203.0.113.99"})
    assert asked.status_code == 202, asked.text
    with site.client("dan") as dpo:
        [pending] = [r for r in dpo.get("/api/v1/access-requests").json()
                     if r["public_id"] == asked.json()["request_id"]]
        approved = dpo.post(f"/api/v1/access-requests/{pending['id']}/approve", json={"note": "ok"})
    assert approved.status_code == 200, approved.text
    # The link goes to the person: it names the public address, not the server's own.
    assert approved.json()["report_link"].startswith(f"{PUBLIC_URL}/access/report/")
    assert approved.json()["api_link"].startswith(f"{PUBLIC_URL}/api/v1/public/access-reports/")


# Metrics ------------------------------------------------------------------------------------------

def test_the_method_label_takes_only_known_methods(site: Site) -> None:
    invented = [f"FOO{uuid.uuid4().hex[:8].upper()}" for _ in range(20)]
    with site.client("ada") as ada:
        for method in invented:
            assert ada.request(method, "/api/v1/me").status_code in (400, 405)
        text = ada.get("/metrics").text
    methods = set(re.findall(r'^facesearch_http_requests_total\{method="([^"]*)"', text, re.M))
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert "other" in methods and not any(m in text for m in invented)
    # Routes are labelled by their template, never by the path a client chose.
    assert 'route="/api/v1/me"' in text


# Logs ---------------------------------------------------------------------------------------------

def test_every_log_line_is_json_without_personal_data_even_for_an_unhandled_error(
        tmp_path: Path) -> None:
    home = tmp_path / "data"
    make_users(home)
    # A damaged database: a log-in's look-up of the user fails, with the username among the
    # statement's parameters, which the database error's message repeats.
    with sqlite3.connect(home / "metadata.sqlite3") as db:
        db.execute("ALTER TABLE users RENAME TO users_moved")
    secret_user, secret_password = "secret-person-7f3a", "secret-password-9c1e"
    process, url = start_server(home)
    try:
        with httpx.Client(base_url=url) as client:
            failed = post_login(client, secret_user, secret_password)
    finally:
        stop_server(process)
    assert failed.status_code == 500
    assert failed.headers["x-request-id"] and "Traceback" not in failed.text
    lines = (home / "server.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # each one JSON, or this fails
    errors = [r for r in records if r.get("error")]
    assert errors, records
    assert any(r["error"] == "sqlalchemy.exc.OperationalError" for r in errors), errors
    assert all(r["frames"] and all(re.fullmatch(r"[^:]+:\d+", f) for f in r["frames"])
               for r in errors)
    text = "\n".join(lines)
    assert secret_user not in text and secret_password not in text
    assert "users" not in text  # no SQL either
    assert "127.0.0.1" not in text.split("(Press CTRL+C to quit)")[-1]  # after the listening address


def test_an_error_escaping_a_thread_or_a_warning_is_logged_as_json_without_its_message() -> None:
    # Background jobs (ingest, crawl, retention) run in threads: what escapes them must not
    # print a plain traceback with, say, a file name or an SQL parameter in its message.
    script = """
import threading, warnings
from facesearch.web.app import configure_logging
configure_logging()
def job():
    raise ValueError("secret-in-message /home/someone/photo.jpg")
worker = threading.Thread(target=job)
worker.start()
worker.join()
warnings.warn("a library warns")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)
    lines = done.stderr.splitlines()
    records = [json.loads(line) for line in lines]  # each one JSON, or this fails
    [error] = [r for r in records if r.get("error")]
    assert error["error"] == "ValueError" and error["event"] == "unhandled error in a thread"
    assert any(frame.endswith(":6") for frame in error["frames"])  # job's raise, in <string>
    assert "secret-in-message" not in done.stderr and "someone" not in done.stderr
    assert any(r["logger"] == "py.warnings" for r in records)
