"""Check-then-act races, with real parallel requests against a real server process: the search
rate limit and the log-in throttle each check and count in one step, so N requests at once get
no further than the limit."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from tests.conftest import log_in
from tests.web.conftest import PURPOSE, password_of, probe, start_server, stop_server

LIMIT = 3  # searches per user per minute, and failed log-ins allowed before a wait
AT_ONCE = 10  # requests sent together


@pytest.fixture(scope="module")
def strict(tmp_path_factory, lfw) -> tuple[str, Path, str]:  # noqa: ANN001
    """A server with low limits, its data directory, and an investigator's API key."""
    home = tmp_path_factory.mktemp("races") / "data"
    service = FaceSearchService(Settings(home=home, workers=1))
    try:
        operator = service.local_operator("test-operator")
        user = service.create_user(operator, "rik", password_of("rik"), "investigator", "Agency R")
        service.approve_user(operator, user.id)
        actor, _, _ = log_in(service, "rik", password_of("rik"), "127.0.0.1")
        key = service.create_api_key(actor, "races")[1]
    finally:
        service.close()
    process, url = start_server(home, FACESEARCH_SEARCHES_PER_MINUTE_USER=str(LIMIT),
                                FACESEARCH_LOGIN_FAILURES_ALLOWED=str(LIMIT))
    yield url, home, key
    stop_server(process)


def all_at_once(send) -> list[httpx.Response]:  # noqa: ANN001
    """send(number, start) from AT_ONCE threads; each calls start() just before its request,
    which lets them all go together."""
    barrier = threading.Barrier(AT_ONCE)
    with ThreadPoolExecutor(AT_ONCE) as pool:
        return list(pool.map(lambda n: send(n, barrier.wait), range(AT_ONCE)))


def audit(home: Path, action: str) -> list[dict]:
    service = FaceSearchService(Settings(home=home, workers=1))
    try:
        return [r for r in service.trail.records() if r["action"] == action]
    finally:
        service.close()


def test_parallel_searches_record_exactly_the_limit(strict) -> None:  # noqa: ANN001
    url, home, key = strict
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        case = client.post("/api/v1/cases", json={"number": "RACE-1", "purpose": PURPOSE, "offence_type": "robbery"}).json()
    photo = probe(0)

    def search(_: int, start) -> httpx.Response:  # noqa: ANN001
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            start()
            return client.post(f"/api/v1/cases/{case['id']}/searches", data={"face": "largest"},
                               files={"probe": ("probe.jpg", photo, "image/jpeg")})

    answers = all_at_once(search)
    assert sorted(a.status_code for a in answers) == [201] * LIMIT + [429] * (AT_ONCE - LIMIT)
    assert all(1 <= int(a.headers["retry-after"]) <= 61 for a in answers if a.status_code == 429)
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        assert len(client.get(f"/api/v1/cases/{case['id']}").json()["searches"]) == LIMIT
    assert len(audit(home, "search")) == LIMIT
    assert len(audit(home, "search.refused")) == AT_ONCE - LIMIT


def login_form(client: httpx.Client) -> str:
    """Fetch the log-in form as a browser does: its token (and the cookie it must match)."""
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)


def test_parallel_wrong_passwords_check_no_more_than_the_allowed_number(strict) -> None:  # noqa: ANN001
    url, home, _ = strict
    with httpx.Client(base_url=url, timeout=120) as known:
        # rik's own browser, from before the attack.
        first = known.post("/login", data={"username": "rik", "password": password_of("rik"),
                                           "csrf_token": login_form(known)})
        assert first.status_code == 303 and known.cookies.get("facesearch_browser")

        def attempt(n: int, start) -> httpx.Response:  # noqa: ANN001
            with httpx.Client(base_url=url, timeout=120) as stranger:
                token = login_form(stranger)
                start()
                return stranger.post("/login", data={"username": "rik", "password": f"guess {n}",
                                                     "csrf_token": token})

        answers = all_at_once(attempt)
        assert sorted(a.status_code for a in answers) == [401] * LIMIT + [429] * (AT_ONCE - LIMIT)
        assert all(int(a.headers["retry-after"]) <= 15 for a in answers if a.status_code == 429)
        reasons = [r["detail"]["reason"] for r in audit(home, "login.refused")]
        # Only the allowed attempts had their password hashed.
        assert reasons.count("bad credentials or inactive") == LIMIT
        # The throttled ones, refused unchecked, are aggregated: one record for the address.
        assert reasons.count("throttled after failures") == 1

        with httpx.Client(base_url=url, timeout=120) as new_browser:  # waits like the stranger
            right = new_browser.post("/login", data={"username": "rik", "password": password_of("rik"),
                                                     "csrf_token": login_form(new_browser)})
            assert right.status_code == 429
        # The remembered browser is not locked out by the stranger.
        again = known.post("/login", data={"username": "rik", "password": password_of("rik"),
                                           "csrf_token": login_form(known)})
        assert again.status_code == 303
    # The password step's record (the second factor is not the throttle's concern here).
    assert audit(home, "login.password")[-1]["detail"]["remembered_browser"] is True
