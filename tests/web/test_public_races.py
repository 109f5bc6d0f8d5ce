"""Check-then-act races on the public routes, with real parallel requests against a real
server: one client's parallel requests cannot pass the daily limit together, a one-time access
link gives its report exactly once however many use it at the same moment, and opening the link
(a mail scanner) spends nothing."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from tests.conftest import LFW, OPERATOR, lfw_photos, log_in
from tests.web.conftest import PEOPLE, Deployment, password_of, start_server, stop_server

LIMIT = 3
PARALLEL = 10
# Someone outside the shared gallery, with enough photos.
PERSON = [p.name for p in sorted((LFW / "images").iterdir())
          if len(list(p.glob("*.jpg"))) >= 4 and p.name not in PEOPLE][70]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, lfw: Path) -> Iterator[Deployment]:
    """An empty deployment with an officer, a small public limit, and room for all the
    parallel uploads (the body-size guard would otherwise turn some away before the limit)."""
    home = tmp_path_factory.mktemp("races") / "data"
    service = FaceSearchService(Settings(home=home, workers=1))
    try:
        service.bootstrap_admin(OPERATOR, "ada", password_of("ada"), "Agency A")
        service.create_user(OPERATOR, "dan", password_of("dan"), "dpo", "Agency A")
    finally:
        service.close()
    process, url = start_server(home, FACESEARCH_PUBLIC_REQUESTS_PER_DAY=str(LIMIT),
                                FACESEARCH_PUBLIC_QUEUE_LENGTH=str(PARALLEL),
                                FACESEARCH_PUBLIC_UPLOADS_AT_ONCE=str(2 * PARALLEL))
    yield Deployment(url, home, process)
    stop_server(process)


def at_once(count: int, call: Callable[[httpx.Client], httpx.Response],
            local_address: str = "127.0.0.1") -> list[httpx.Response]:
    """count requests released together from count threads, each with its own connection."""
    barrier = threading.Barrier(count)
    responses: list[httpx.Response | BaseException] = [None] * count  # type: ignore[list-item]

    def one(i: int) -> None:
        transport = httpx.HTTPTransport(local_address=local_address)
        with httpx.Client(timeout=120, transport=transport) as client:
            barrier.wait()
            try:
                responses[i] = call(client)
            except BaseException as exc:  # noqa: BLE001 - reported below
                responses[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [r for r in responses if isinstance(r, BaseException)], responses
    return responses  # type: ignore[return-value]


def test_parallel_requests_from_one_address_pass_the_daily_limit_only_as_often_as_it_allows(
        server: Deployment) -> None:
    selfie = lfw_photos(PERSON)[0].read_bytes()
    before = server.last_audit_id()
    responses = at_once(PARALLEL, lambda c: c.post(
        server.url + "/api/v1/public/access-requests", data={"contact": "me@example.org"},
        files={"selfie": ("s.jpg", selfie, "image/jpeg")}))
    assert Counter(r.status_code for r in responses) == {202: LIMIT, 429: PARALLEL - LIMIT}, [
        r.text for r in responses]
    with server.db() as db:
        assert db.execute("SELECT count(*) FROM subject_requests").fetchone()[0] == LIMIT
    records = server.audit(before)
    # (The server's scheduled retention run may fall in this window too.)
    assert Counter(r["action"] for r in records if r["action"] != "retention") == {
        "access.request": LIMIT, "public.refused": 1}
    # The same address's next request, later and alone, is still refused; another address is not.
    refused = httpx.post(server.url + "/api/v1/public/opt-out",
                         files={"selfie": ("s.jpg", selfie, "image/jpeg")}, timeout=120)
    assert refused.status_code == 429
    # A flood of 200 more, twenty at a time, grows the audit trail by nothing: the hour's
    # refusal record is written; the counter counts the rest.
    before_flood = server.last_audit_id()
    for _ in range(10):
        flood = at_once(20, lambda c: c.post(
            server.url + "/api/v1/public/access-requests", data={"contact": "me@example.org"},
            files={"selfie": ("s.jpg", b"not even an image", "image/jpeg")}))
        assert {r.status_code for r in flood} == {429}
    assert server.audit(before_flood) == []
    with server.db() as db:
        assert db.execute("SELECT used FROM public_allowances WHERE kind = 'refused:public.refused'"
                          ).fetchone()[0] == PARALLEL - LIMIT + 1 + 200
    [other] = at_once(1, lambda c: c.post(server.url + "/api/v1/public/opt-out",
                                          files={"selfie": ("s.jpg", selfie, "image/jpeg")}),
                      local_address="127.0.0.3")
    assert other.status_code == 202, other.text


def approved_link(server: Deployment, client: str) -> str:
    """An access request made and approved through the service on the server's data: its token."""
    service = FaceSearchService(Settings(home=server.home, workers=1))
    try:
        ack = service.request_access(client, lfw_photos(PERSON)[1].read_bytes(), "me@example.org")
        dan = log_in(service, "dan", password_of("dan"), "127.0.0.1")[0]
        request_id = next(r.id for r in service.access_requests(dan) if r.public_id == ack.request_id)
        token = service.decide_access_request(dan, request_id, True, "passport seen")
    finally:
        service.close()
    assert token
    return token


def test_a_one_time_link_used_many_times_at_once_gives_exactly_one_report(server: Deployment) -> None:
    token = approved_link(server, "192.0.2.50")
    # A mail scanner and the person's own preview open the link: it shows a button, no report.
    for _ in range(3):
        page = httpx.get(f"{server.url}/access/report/{token}", timeout=60)
        assert page.status_code == 200, page.text
        assert 'id="show-report"' in page.text and 'method="post"' in page.text
        assert "<table" not in page.text
    before = server.last_audit_id()
    responses = at_once(PARALLEL, lambda c: (
        c.post(f"{server.url}/api/v1/public/access-reports/{token}")))
    assert Counter(r.status_code for r in responses) == {200: 1, 404: PARALLEL - 1}, [
        r.text for r in responses]
    [report] = [r.json() for r in responses if r.status_code == 200]
    assert report["images"] == []  # nothing of this person is indexed here
    with server.db() as db:
        status, template, used = db.execute(
            "SELECT status, template, report_used_at FROM subject_requests WHERE public_id = ?",
            (report["request_id"],)).fetchone()
    assert (status, template) == ("delivered", None) and used
    actions = Counter(r["action"] for r in server.audit(before))
    assert actions == {"access.report": 1, "access.report.refused": 1}  # refusals aggregated


def test_the_report_page_and_the_api_share_one_use(server: Deployment) -> None:
    token = approved_link(server, "192.0.2.51")
    responses = at_once(4, lambda c: c.post(f"{server.url}/access/report/{token}"))
    assert sorted(r.status_code for r in responses) == [200, 404, 404, 404]
    [page] = [r for r in responses if r.status_code == 200]
    assert "What facesearch holds about you" in page.text
    api = httpx.post(f"{server.url}/api/v1/public/access-reports/{token}", timeout=60)
    assert api.status_code == 404
    assert httpx.get(f"{server.url}/access/report/{token}", timeout=60).status_code == 404
