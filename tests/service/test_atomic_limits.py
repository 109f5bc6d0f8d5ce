"""The log-in throttle and the search limits check and count in one step, on SQLite and (when
FACESEARCH_TEST_POSTGRES_URL names a server) on PostgreSQL: threads calling the service at
once get no further than the limit."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from sqlalchemy.engine import make_url

from facesearch.config import Settings
from facesearch.errors import NotAuthenticated, RateLimited
from facesearch.service import FaceSearchService
from tests.conftest import OPERATOR, lfw_photos, log_in
from tests.service.test_accounts_and_cases import PASSWORD, counted_verifications

POSTGRES = os.environ.get("FACESEARCH_TEST_POSTGRES_URL")
LIMIT = 3
AT_ONCE = 10


@pytest.fixture(params=["sqlite", "postgresql"] if POSTGRES else ["sqlite"])
def database_url(request, tmp_path) -> Iterator[str]:  # noqa: ANN001
    """A fresh database of each backend (PostgreSQL: one of its own, dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'meta.sqlite3'}"
        return
    assert POSTGRES
    admin = make_url(POSTGRES).set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"fs_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def svc(tmp_path, database_url: str) -> Iterator[FaceSearchService]:
    service = FaceSearchService(Settings(home=tmp_path / "data", database_url=database_url,
                                         workers=1, login_failures_allowed=LIMIT,
                                         searches_per_minute_user=LIMIT))
    yield service
    service.close()


def all_at_once(call: Callable[[int], object]) -> list[str]:
    """call(n) from AT_ONCE threads let go together; the name of what each raised, or "ok"."""
    barrier = threading.Barrier(AT_ONCE)

    def run(n: int) -> str:
        barrier.wait()
        try:
            call(n)
        except (NotAuthenticated, RateLimited) as exc:
            return type(exc).__name__
        return "ok"

    with ThreadPoolExecutor(AT_ONCE) as pool:
        return sorted(pool.map(run, range(AT_ONCE)))


def test_parallel_log_ins_check_no_more_passwords_than_allowed(svc: FaceSearchService,
                                                               monkeypatch) -> None:  # noqa: ANN001
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    calls = counted_verifications(monkeypatch)
    # One username from many addresses, then many usernames from one address.
    by_name = all_at_once(lambda n: svc.login("ada", "wrong password!", f"10.0.1.{n}"))
    by_address = all_at_once(lambda n: svc.login(f"user{n}", "wrong password!", "10.0.2.1"))
    expected = ["NotAuthenticated"] * LIMIT + ["RateLimited"] * (AT_ONCE - LIMIT)
    assert by_name == by_address == expected
    assert len(calls) == 2 * LIMIT


def test_parallel_searches_record_no_more_than_the_limit(svc: FaceSearchService) -> None:
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    user = svc.create_user(OPERATOR, "ivy", PASSWORD, "investigator", "Org")
    svc.approve_user(OPERATOR, user.id)
    ivy = log_in(svc, "ivy", PASSWORD)[0]
    case = svc.open_case(ivy, "R-1", "missing person", offence_type="robbery")
    photo = lfw_photos("Al_Sharpton")[0].read_bytes()
    outcomes = all_at_once(lambda _: svc.search(ivy, case.id, photo, face="largest"))
    assert outcomes == ["RateLimited"] * (AT_ONCE - LIMIT) + ["ok"] * LIMIT
    assert len(svc.cases.searches(case.id)) == LIMIT
    actions = [r["action"] for r in svc.trail.records()]
    assert actions.count("search") == LIMIT and actions.count("search.refused") == AT_ONCE - LIMIT
