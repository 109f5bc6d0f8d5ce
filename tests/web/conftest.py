"""A real deployment for the web tests: a data directory with organisations, users of every
role, API keys and a small LFW gallery, served by `facesearch serve` on a loopback port."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from facesearch.service.base import client_hash
from tests.conftest import LFW, ROOT, lfw_photos, log_in, next_totp, window_spent

FACESEARCH = str(Path(sys.executable).parent / "facesearch")
# People with at least four photos, chosen in code: photo 0 is a probe, photos 1-3 are indexed.
PEOPLE = [p.name for p in sorted((LFW / "images").iterdir())
          if len(list(p.glob("*.jpg"))) >= 4][10:16]
# username -> (role, organisation); investigators of A are approved by sam, bob by bea.
USERS = {
    "ada": ("admin", "Agency A"),
    "sam": ("supervisor", "Agency A"),
    "ivy": ("investigator", "Agency A"),
    "ian": ("investigator", "Agency A"),
    "aud": ("auditor", "Agency A"),
    "pat": ("investigator", "Agency A"),  # stays pending
    "bea": ("supervisor", "Agency B"),
    "bob": ("investigator", "Agency B"),
    "dan": ("dpo", "Agency A"),  # the data-protection officer
}
PURPOSE = "criminal investigation"
OIDC_CLIENT = ("facesearch-tests", "a-client-secret-for-tests")
# The test provider's users: oscar's group maps to supervisor; vera's to nothing (an admin links her).
OIDC_USERS = {"oscar": {"sub": "agency-0001", "groups": ["sergeants"]},
              "vera": {"sub": "agency-0002", "groups": ["clerks"]}}
# The operator's own organisation (FACESEARCH_DEPLOYMENT_ORGANISATION): its admins create every
# role. No user above belongs to it, so that Agency A's admin shows an agency's limits.
DEPLOYMENT_ORGANISATION = "Operator"
# The data directory behind each server the tests started (by URL): the log-in helpers read a
# user's second-factor secret there, as their authenticator app would hold it.
SERVER_HOMES: dict[str, Path] = {}


def password_of(username: str) -> str:
    return f"{username}-long-secret-passphrase"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Deployment:
    url: str
    home: Path
    process: subprocess.Popen
    keys: dict[str, str] = field(default_factory=dict)  # username -> API key
    user_ids: dict[str, int] = field(default_factory=dict)

    def client(self, username: str | None = None) -> httpx.Client:
        """An API client with username's key, or an anonymous one."""
        headers = {"Authorization": f"Bearer {self.keys[username]}"} if username else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.home / "metadata.sqlite3", timeout=30)

    def audit(self, after: int = 0) -> list[dict]:
        """Audit records with id > after, read straight from the database."""
        with self.db() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM audit_log WHERE id > ? ORDER BY id", (after,)).fetchall()
        return [dict(r, detail=json.loads(r["detail"])) for r in rows]

    def last_audit_id(self) -> int:
        with self.db() as db:
            return db.execute("SELECT coalesce(max(id), 0) FROM audit_log").fetchone()[0]

    def refusals_counted(self, client: str, action: str) -> int:
        """Anonymous refusals of action counted for client in its current hour (their audit
        record is the hour's first only)."""
        with self.db() as db:
            row = db.execute("SELECT used FROM public_allowances WHERE client_hash = ? AND kind = ?",
                             (client_hash(client), f"refused:{action}")).fetchone()
        return row[0] if row else 0

    def state_digest(self) -> str:
        """Everything but the audit trail, sessions and the per-client counters of anonymous
        refusals (which aggregate the trail's records), to show that a refusal changed nothing."""
        with self.db() as db:
            tables = [r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            parts = []
            for table in tables:
                if table in ("audit_log", "audit_head", "sessions", "sqlite_sequence",
                             "public_allowances"):
                    continue
                parts.append((table, sorted(map(repr, db.execute(f"SELECT * FROM {table}")))))
        return repr(parts)


def build_deployment(home: Path) -> dict[str, object]:
    """Users, keys, a source and a gallery, made through the service as an operator would."""
    settings = Settings(home=home, workers=1)
    service = FaceSearchService(settings)
    try:
        operator = service.local_operator("test-operator")
        ada = service.bootstrap_admin(operator, "ada", password_of("ada"), "Agency A")
        admin, _, _ = log_in(service, "ada", password_of("ada"), "127.0.0.1")
        ids = {"ada": ada.id}
        for username, (role, organisation) in USERS.items():
            if username != "ada":
                # An admin creates users of their own organisation; the operator of any, and
                # the auditor and officer, who act for the whole deployment.
                creator = admin if organisation == "Agency A" and role not in (
                    "auditor", "dpo") else operator
                ids[username] = service.create_user(creator, username, password_of(username), role,
                                                    organisation).id
        for supervisor, investigators in (("sam", ["ivy", "ian"]), ("bea", ["bob"])):
            boss, _, _ = log_in(service, supervisor, password_of(supervisor), "127.0.0.1")
            for name in investigators:
                service.approve_user(boss, ids[name])
        keys = {}
        for username in USERS:
            if username == "pat":
                continue
            # Every user sets up their second factor here, at their first log-in.
            actor, _, _ = log_in(service, username, password_of(username), "127.0.0.1")
            keys[username] = service.create_api_key(actor, "tests")[1]
        service.add_source(admin, "lfw", "legitimate_interests", "US", "LFW test gallery")
        photos = [p for name in PEOPLE for p in lfw_photos(name)[1:4]]
        summary = service.ingest(admin, photos, "lfw")
        assert summary.images_indexed == len(photos)
        return {"keys": keys, "user_ids": ids}
    finally:
        service.close()


def start_server(home: Path, **env: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    environment = {**os.environ, "FACESEARCH_HOME": str(home), "FACESEARCH_WORKERS": "1",
                   "FACESEARCH_SEARCHES_PER_MINUTE_USER": "1000",
                   "FACESEARCH_SEARCHES_PER_MINUTE_ORGANISATION": "1000",
                   "FACESEARCH_DEPLOYMENT_ORGANISATION": DEPLOYMENT_ORGANISATION, **env}
    # Owner-only, as everything in a data directory must be (`facesearch verify` checks).
    log = open(os.open(home / "server.log", os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600),  # noqa: SIM115
               "ab")
    process = subprocess.Popen([FACESEARCH, "serve", "--port", str(port)], env=environment,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    SERVER_HOMES[url] = home
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited:\n" + (home / "server.log").read_text()[-3000:])
        try:
            if httpx.get(url + "/login", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not start in 60 s")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def deployment(tmp_path_factory, lfw, oidc_provider: str) -> Deployment:
    home = tmp_path_factory.mktemp("web") / "data"
    made = build_deployment(home)
    process, url = start_server(home, FACESEARCH_OIDC_PROVIDERS=json.dumps([{
        "name": "agency", "title": "Test Agency", "issuer": oidc_provider,
        "client_id": OIDC_CLIENT[0], "client_secret": OIDC_CLIENT[1], "organisation": "Agency A",
        "role_claim": "groups", "roles": {"sergeants": "supervisor"}, "create_users": True}]))
    yield Deployment(url, home, process, made["keys"], made["user_ids"])
    stop_server(process)


@pytest.fixture(scope="session")
def oidc_provider() -> str:
    """The issuer URL of a real OpenID Connect provider on loopback (tests/oidc_provider.py),
    run as its own process: the deployment's server signs its staff in there."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.oidc_provider", "--port", str(port),
                                "--client-id", OIDC_CLIENT[0], "--client-secret", OIDC_CLIENT[1],
                                "--users", json.dumps(OIDC_USERS)], cwd=ROOT)
    issuer = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(issuer + "/.well-known/openid-configuration", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        process.kill()
        raise RuntimeError("the OIDC test provider did not start in 30 s")
    yield issuer
    stop_server(process)


def totp_code(home: Path, username: str) -> str:
    """The user's authenticator app's code that the server has not accepted yet (each 30-second
    step is accepted once per user): now's or the next step's, else it waits for one."""
    while True:
        with sqlite3.connect(home / "metadata.sqlite3", timeout=30) as db:
            secret, last = db.execute("SELECT totp_secret, totp_last_step FROM users WHERE username = ?",
                                      (username,)).fetchone()
        if not window_spent(last, time.time()):
            # Not the previous step: it may fall out of the window before the server checks it.
            return next_totp(secret, last, time.time(), earliest=0)
        time.sleep(1)


def form_token(page: httpx.Response, name: str = "csrf_token") -> str:
    return re.search(rf'name="{name}" value="([^"]+)"', page.text).group(1)


def post_login(client: httpx.Client, username: str, password: str) -> httpx.Response:
    """Log in through the form as a browser does: fetch it (its token, and the cookie the
    token must match), post it back, then give the second factor: the code step's answer (a
    303 to the start page with the session cookie), or a refused password's. A user with no
    second factor yet sets one up first, then logs in again."""
    home = SERVER_HOMES[str(client.base_url).rstrip("/")]
    for _ in range(2):
        form = client.get("/login")
        done = client.post("/login", data={"username": username, "password": password,
                                           "csrf_token": form_token(form)})
        stage = done.headers.get("location", "")
        if stage == "/login/code":
            code_page = client.get(stage)
            return client.post(stage, data={"code": totp_code(home, username),
                                            "csrf_token": form_token(code_page)})
        if stage != "/login/enrol":
            return done
        enrol_page = client.get(stage)
        secret = re.search(r'id="totp-secret"[^>]*>([A-Z2-7]+)<', enrol_page.text).group(1)
        confirmed = client.post(stage, data={"code": next_totp(secret, None, time.time(), earliest=0),
                                             "csrf_token": form_token(enrol_page)})
        assert confirmed.status_code == 200 and "recovery-codes" in confirmed.text, confirmed.text
    raise AssertionError(f"{username} was asked to set up a second factor twice")


def wait_for_job(client: httpx.Client, job_id: int) -> dict:
    """Poll an ingest job until it has ended; its final state."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/ingest-jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"ingest job {job_id} did not finish")


def probe(person_index: int = 0) -> bytes:
    """Photo 0 of one of the gallery's people: never indexed itself."""
    return lfw_photos(PEOPLE[person_index])[0].read_bytes()
