"""Accounts, cases and the audit chain through the service, with an injected clock."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from argon2 import PasswordHasher

from facesearch.config import Settings
from facesearch.errors import (
    Forbidden,
    InvalidRequest,
    NotAuthenticated,
    PolicyRefused,
    RateLimited,
)
from facesearch.policy.audit import first_broken
from facesearch.policy.roles import check_mark
from facesearch.service import FaceSearchService, accounts
from facesearch.types import Actor
from tests.conftest import OPERATOR, lfw_photos, log_in

PASSWORD = "a-long-enough-password"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(tmp_path, clock: Clock):
    service = FaceSearchService(Settings(home=tmp_path / "data", workers=1,
                                         searches_per_minute_user=2, searches_per_day_user=3,
                                         searches_per_minute_organisation=100,
                                         login_failures_allowed=3,
                                         login_lock_max_seconds=60), clock)
    yield service
    service.close()


def people(svc: FaceSearchService) -> dict:
    """An admin, a supervisor and two approved investigators of one organisation, logged in."""
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    admin = log_in(svc, "ada", PASSWORD)[0]
    for name, role in (("sam", "supervisor"), ("ivy", "investigator"), ("ian", "investigator")):
        svc.create_user(admin, name, PASSWORD, role, "Org")
    sam = log_in(svc, "sam", PASSWORD)[0]
    for name in ("ivy", "ian"):
        svc.approve_user(sam, svc.accounts.user(username=name).id)
    return {name: log_in(svc, name, PASSWORD)[0] for name in ("ada", "sam", "ivy", "ian")}


def test_only_the_first_admin_can_be_bootstrapped(svc: FaceSearchService) -> None:
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    with pytest.raises(PolicyRefused):
        svc.bootstrap_admin(OPERATOR, "eve", PASSWORD, "Org")
    assert svc.trail.records()[-1]["action"] == "user.bootstrap.refused"


def test_passwords_are_stored_as_argon2id_and_must_be_long(svc: FaceSearchService) -> None:
    user = svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    admin = log_in(svc, "ada", PASSWORD, "x")[0]
    with pytest.raises(InvalidRequest, match="12 characters"):
        svc.create_user(admin, "short", "too-short", "supervisor", "Org")


def test_only_the_operator_creates_auditors_and_officers(svc: FaceSearchService) -> None:
    """They read every organisation's trail and requests: an admin may not give those roles."""
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    admin = log_in(svc, "ada", PASSWORD, "x")[0]
    for role in ("auditor", "dpo"):
        with pytest.raises(Forbidden):
            svc.create_user(admin, f"a-{role}", PASSWORD, role, "Org")
        assert svc.accounts.user(username=f"a-{role}") is None
        last = svc.trail.records()[-1]
        assert (last["action"], last["detail"]["role"]) == ("user.create.refused", role)
        assert svc.create_user(OPERATOR, f"o-{role}", PASSWORD, role, "Org").role == role
    assert set(svc.roles_creatable_by(admin)) == {"admin", "supervisor", "investigator"}


def test_repeated_failed_logins_are_refused_for_a_while(svc: FaceSearchService, clock: Clock) -> None:
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    for _ in range(3):
        with pytest.raises(NotAuthenticated):
            svc.login("ada", "wrong password!", "10.0.0.9")
    with pytest.raises(RateLimited) as limited:
        svc.login("ada", PASSWORD, "10.0.0.9")  # even the right password, for now
    assert limited.value.retry_after == 15
    clock.advance(seconds=15)
    assert svc.login("ada", PASSWORD, "10.0.0.9")[0].name == "ada"


class CountingHasher(PasswordHasher):
    """argon2id as the service uses it, counting verifications (64 MiB and tens of ms each)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
        self.calls.append(1)
        return super().verify(hash, password)


def counted_verifications(monkeypatch) -> list[int]:  # noqa: ANN001
    hasher = CountingHasher()
    monkeypatch.setattr(accounts, "_hasher", hasher)
    return hasher.calls


def test_parallel_wrong_passwords_check_no_more_passwords_than_allowed(
        svc: FaceSearchService, monkeypatch) -> None:  # noqa: ANN001
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    calls = counted_verifications(monkeypatch)
    start = threading.Barrier(12)

    def attempt(n: int) -> str:
        start.wait()
        try:
            svc.login("ada", f"wrong password {n}", f"10.0.1.{n}")
        except (NotAuthenticated, RateLimited) as exc:
            return type(exc).__name__
        return "logged in"

    with ThreadPoolExecutor(12) as pool:
        outcomes = sorted(pool.map(attempt, range(12)))
    # Twelve addresses, one username: the username's three attempts, then waits.
    assert outcomes == ["NotAuthenticated"] * 3 + ["RateLimited"] * 9
    assert len(calls) == 3


def test_password_checks_at_once_are_bounded(svc: FaceSearchService, monkeypatch) -> None:  # noqa: ANN001
    """Attempts from many addresses pass the throttle, but hold 64 MiB each only a few at a time."""
    running, most = [0], [0]
    lock = threading.Lock()

    class SlowHasher(CountingHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            try:
                time.sleep(0.2)
                return super().verify(hash, password)
            finally:
                with lock:
                    running[0] -= 1

    monkeypatch.setattr(accounts, "_hasher", SlowHasher())
    monkeypatch.setattr(accounts, "_ARGON2_AT_ONCE", threading.BoundedSemaphore(2))
    start = threading.Barrier(8)

    def attempt(n: int) -> None:
        start.wait()
        with pytest.raises(NotAuthenticated):
            svc.login(f"user{n}", "wrong password!", f"10.0.3.{n}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(attempt, range(8)))
    assert most[0] == 2


def test_a_failure_during_a_wait_neither_extends_it_nor_checks_a_password(
        svc: FaceSearchService, clock: Clock, monkeypatch) -> None:  # noqa: ANN001
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    calls = counted_verifications(monkeypatch)
    waits = []
    for _ in range(12):  # a stranger fails, waits as told, fails again
        try:
            svc.login("ada", "wrong password!", "10.6.6.6")
            raise AssertionError("logged in with a wrong password")
        except NotAuthenticated:
            pass
        except RateLimited as limited:
            waits.append(limited.retry_after)
            for _ in range(5):  # failing during the wait changes nothing
                with pytest.raises(RateLimited) as again:
                    svc.login("ada", "wrong password!", "10.6.6.7")
                assert again.value.retry_after == limited.retry_after
            clock.advance(seconds=limited.retry_after)
    # Three free attempts; then 15 s doubling, capped at login_lock_max_seconds (60 here);
    # each wait cost one password check.
    assert waits == [15, 30, 60, 60, 60]
    assert len(calls) == 12 - len(waits)
    # However long the stranger keeps at it, the user waits at most the cap and gets in.
    with pytest.raises(NotAuthenticated):
        svc.login("ada", "wrong password!", "10.6.6.6")
    with pytest.raises(RateLimited) as limited:
        svc.login("ada", PASSWORD, "10.0.0.1")
    assert limited.value.retry_after <= 60
    clock.advance(seconds=limited.value.retry_after)
    assert svc.login("ada", PASSWORD, "10.0.0.1")[0].name == "ada"
    reasons = [r["detail"]["reason"] for r in svc.trail.records() if r["action"] == "login.refused"]
    assert reasons.count("bad credentials or inactive") == len(calls) - 1


def test_a_remembered_browser_logs_in_while_a_stranger_keeps_the_name_locked(
        svc: FaceSearchService) -> None:
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    actor = svc.login("ada", PASSWORD, "10.0.0.1")[0]
    browser = svc.remember_browser(actor, None)
    assert svc.remember_browser(actor, browser) == browser  # kept while it lasts
    for n in range(5):
        with pytest.raises((NotAuthenticated, RateLimited)):
            svc.login("ada", "wrong password!", f"10.6.6.{n}")
    with pytest.raises(RateLimited):
        svc.login("ada", PASSWORD, "10.0.0.1")  # a new browser waits like the stranger
    with pytest.raises(RateLimited):  # a browser remembered for someone else counts nothing
        svc.login("ada", "wrong password!", "10.6.6.9", browser="stolen-or-made-up")
    assert svc.login("ada", PASSWORD, "10.0.0.1", browser=browser)[0].name == "ada"
    assert svc.trail.records()[-1]["detail"]["remembered_browser"] is True


def test_the_address_throttle_counts_failures_across_usernames(svc: FaceSearchService) -> None:
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    for n in range(3):
        with pytest.raises(NotAuthenticated):
            svc.login(f"nobody{n}", "wrong password!", "10.6.6.6")
    with pytest.raises(RateLimited):
        svc.login("ada", PASSWORD, "10.6.6.6")
    assert svc.login("ada", PASSWORD, "10.0.0.1")[0].name == "ada"  # another address


def test_successful_log_ins_from_a_shared_address_never_lock_it(svc: FaceSearchService) -> None:
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    with pytest.raises(NotAuthenticated):
        svc.login("ada", "wrong password!", "10.0.0.1")
    for _ in range(6):  # behind one proxy, every user has the same address
        svc.login("ada", PASSWORD, "10.0.0.1")
    with pytest.raises(NotAuthenticated):
        svc.login("nobody", "wrong password!", "10.0.0.1")  # the second failure of three


def test_a_success_that_was_the_addresses_last_allowed_attempt_leaves_it_unlocked(
        svc: FaceSearchService) -> None:
    """The attempt that reached the limit set the address's wait; a success takes the attempt
    back, its wait included, so that the next user behind the same proxy is not kept waiting."""
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    svc.create_user(OPERATOR, "sam", PASSWORD, "supervisor", "Org")
    for n in range(2):
        with pytest.raises(NotAuthenticated):
            svc.login(f"nobody{n}", "wrong password!", "10.0.0.7")
    svc.login("ada", PASSWORD, "10.0.0.7")  # the third attempt of three, a success
    assert svc.login("sam", PASSWORD, "10.0.0.7")[0].name == "sam"
    with pytest.raises(NotAuthenticated):  # the address still counts its two failures
        svc.login("nobody", "wrong password!", "10.0.0.7")
    with pytest.raises(RateLimited):
        svc.login("sam", PASSWORD, "10.0.0.7")


def test_anonymous_refusals_are_recorded_once_per_client_and_hour(svc: FaceSearchService,
                                                                 clock: Clock) -> None:
    """Anyone can send them, so each would let a flood grow the trail: the first of a client's
    hour is recorded, the next window's record counts the rest. A wrong password names an
    account and is recorded each time."""
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    before = len(svc.trail.records())
    anonymous = Actor(name="anonymous", role="anonymous", client="10.1.1.1")
    for n in range(200):
        with pytest.raises(NotAuthenticated):
            svc.authenticate("10.1.1.1", api_key=f"fsk_guess{n}", target="GET /api/v1/me")
        with pytest.raises(Forbidden):
            svc.refuse_request(anonymous, "missing or wrong log-in token", "POST /login")
    for _ in range(3):
        with pytest.raises(NotAuthenticated):
            svc.login("ada", "wrong password!", "10.1.1.1")
    for _ in range(200):
        with pytest.raises(RateLimited):
            svc.login("ada", PASSWORD, "10.1.1.1")
    added = svc.trail.records()[before:]
    assert [(r["action"], r["detail"]["reason"]) for r in added] == [
        ("auth.refused", "invalid credentials"), ("request.refused", "missing or wrong log-in token"),
        *[("login.refused", "bad credentials or inactive")] * 3,
        ("login.refused", "throttled after failures")]
    clock.advance(hours=1, seconds=1)
    with pytest.raises(NotAuthenticated):
        svc.authenticate("10.1.1.1", target="GET /api/v1/me")
    last = svc.trail.records()[-1]
    assert (last["action"], last["detail"]["refused_in_previous_window"]) == ("auth.refused", 200)


def test_a_withdrawn_possible_no_longer_counts_toward_confirmation() -> None:
    check_mark("confirmed", 2, [(1, "possible")])
    with pytest.raises(Forbidden):  # 1 took their "possible" back
        check_mark("confirmed", 2, [(1, "possible"), (1, "rejected")])
    with pytest.raises(Forbidden):  # only the confirmer holds it now
        check_mark("confirmed", 2, [(1, "possible"), (2, "possible"), (1, "rejected")])
    check_mark("confirmed", 2, [(1, "possible"), (1, "rejected"), (1, "possible")])
    check_mark("confirmed", 2, [(3, "possible"), (1, "possible"), (1, "rejected")])


def test_a_session_expires(svc: FaceSearchService, clock: Clock) -> None:
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    _, token, csrf = log_in(svc, "ada", PASSWORD, "x")
    actor, session_csrf = svc.authenticate("x", session_token=token)
    assert actor.name == "ada" and session_csrf == csrf
    clock.advance(hours=svc.settings.session_hours, seconds=1)
    with pytest.raises(NotAuthenticated):
        svc.authenticate("x", session_token=token)
    assert svc.trail.records()[-1]["action"] == "auth.refused"


def test_a_disabled_user_loses_sessions_and_keys(svc: FaceSearchService) -> None:
    team = people(svc)
    _, token, _ = log_in(svc, "ivy", PASSWORD, "x")
    _, key = svc.create_api_key(team["ivy"], "k")
    svc.disable_user(team["ada"], team["ivy"].user_id)
    for credentials in ({"session_token": token}, {"api_key": key}):
        with pytest.raises(NotAuthenticated):
            svc.authenticate("x", **credentials)


def test_approval_never_reactivates_a_user_disabled_since_they_were_read(
        svc: FaceSearchService, monkeypatch) -> None:  # noqa: ANN001
    team = people(svc)
    pending = svc.create_user(team["ada"], "pat", PASSWORD, "investigator", "Org")
    read = svc.accounts.user
    # The supervisor reads pat as pending; the admin disables pat before the approval lands.
    monkeypatch.setattr(svc.accounts, "user", lambda **which: (
        pending if which.get("user_id") == pending.id else read(**which)))
    svc.disable_user(team["ada"], pending.id)
    with pytest.raises(InvalidRequest, match="pending"):
        svc.approve_user(team["sam"], pending.id)
    assert read(user_id=pending.id).status == "disabled"
    assert svc.trail.records()[-1]["action"] == "user.approve.refused"


def test_cases_need_a_configured_purpose_and_a_unique_number(svc: FaceSearchService) -> None:
    ivy = people(svc)["ivy"]
    with pytest.raises(InvalidRequest, match="purpose"):
        svc.open_case(ivy, "A-1", "curiosity", offence_type="robbery")
    svc.open_case(ivy, "A-1", "missing person", offence_type="robbery")
    with pytest.raises(InvalidRequest, match="exists"):
        svc.open_case(ivy, "A-1", "missing person", offence_type="robbery")


def test_rate_limits_count_stored_searches_and_say_when_to_retry(svc: FaceSearchService,
                                                                clock: Clock) -> None:
    ivy = people(svc)["ivy"]
    case = svc.open_case(ivy, "R-1", "missing person", offence_type="robbery")
    photo = lfw_photos("Al_Sharpton")[0].read_bytes()
    svc.search(ivy, case.id, photo)
    clock.advance(seconds=20)
    svc.search(ivy, case.id, photo)
    with pytest.raises(RateLimited) as limited:
        svc.search(ivy, case.id, photo)
    assert limited.value.retry_after == 41  # the first search leaves the minute in 40 s
    clock.advance(seconds=41)
    svc.search(ivy, case.id, photo)  # third of the day
    clock.advance(minutes=5)
    with pytest.raises(RateLimited, match="try again"):
        svc.search(ivy, case.id, photo)  # the per-day limit of 3
    assert [r["action"] for r in svc.trail.records()].count("search.refused") == 2


def test_the_audit_chain_holds_under_concurrent_appends(svc: FaceSearchService) -> None:
    def add_sources(prefix: str) -> None:
        for number in range(15):
            svc.add_source(OPERATOR, f"{prefix}{number}", "public_task", "US")

    threads = [threading.Thread(target=add_sources, args=(p,)) for p in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = list(svc.trail.chain())
    assert len(records) == 60 and [r["id"] for r in records] == list(range(1, 61))
    assert first_broken(records) is None
    assert svc.verify_audit(OPERATOR).intact


def test_an_edited_record_breaks_the_chain_at_exactly_that_record(svc: FaceSearchService) -> None:
    for number in range(6):
        svc.add_source(OPERATOR, f"s{number}", "public_task", "US")
    records = list(svc.trail.chain())
    records[3]["detail"] = records[3]["detail"].replace("s3", "s7")
    assert first_broken(records) == (4, "its content does not match its hash (edited?)")
    del records[3]
    assert first_broken(records)[0] == 5


def test_only_investigators_search_and_only_auditors_read_the_trail(svc: FaceSearchService) -> None:
    team = people(svc)
    case = svc.open_case(team["ivy"], "P-1", "missing person", offence_type="robbery")
    with pytest.raises(Forbidden):
        svc.search(team["sam"], case.id, b"unused")
    with pytest.raises(Forbidden):
        svc.verify_audit(team["ada"])
    actions = [r["action"] for r in svc.trail.records()][-2:]
    assert actions == ["search.refused", "audit.verify.refused"]


def test_a_search_returns_at_most_max_candidates_over_all_its_probe_faces(tmp_path, clock: Clock) -> None:
    # Every indexed face within the cut-off, so only the cap limits the list.
    svc = FaceSearchService(Settings(home=tmp_path / "data", workers=1, max_candidates=4,
                                     search_false_matches=1e9, false_match_ceiling=1.0), clock)
    try:
        ivy = people(svc)["ivy"]
        svc.add_source(OPERATOR, "lfw", "public_task", "US")
        svc.ingest(OPERATOR, lfw_photos("Al_Sharpton")[1:4] + lfw_photos("Abdullah_Gul")[:3], "lfw")
        case = svc.open_case(ivy, "M-1", "missing person", offence_type="robbery")
        single = lfw_photos("Al_Sharpton")[0].read_bytes()
        assert [len(f.candidates) for f in svc.search(ivy, case.id, single, 4).faces] == [4]
        with pytest.raises(InvalidRequest, match="between 1 and 4"):
            svc.search(ivy, case.id, single, 5)
        three_faces = lfw_photos("Abdel_Nasser_Assidi")[0].read_bytes()
        shared = svc.search(ivy, case.id, three_faces, 4, "all")
        assert [len(f.candidates) for f in shared.faces] == [1, 1, 1]
    finally:
        svc.close()


def test_the_organisation_limit_counts_every_investigator_of_it(tmp_path, clock: Clock) -> None:
    svc = FaceSearchService(Settings(home=tmp_path / "data", workers=1,
                                     searches_per_minute_organisation=2), clock)
    try:
        team = people(svc)
        case = svc.open_case(team["ivy"], "O-1", "missing person", offence_type="robbery")
        photo = lfw_photos("Al_Sharpton")[0].read_bytes()
        svc.search(team["ivy"], case.id, photo)
        svc.search(team["ian"], case.id, photo)
        with pytest.raises(RateLimited):
            svc.search(team["ivy"], case.id, photo)  # her own limit (10 a minute) is far off
        refusal = svc.trail.records()[-1]
        assert refusal["action"] == "search.refused" and refusal["actor"] == "ivy"
        assert "organisation limit of 2 searches per minute" in refusal["detail"]["reason"]
        clock.advance(seconds=61)
        svc.search(team["ian"], case.id, photo)
    finally:
        svc.close()
