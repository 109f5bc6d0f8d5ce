"""The second factor through the service, with an injected clock: set-up, codes spent once,
recovery codes, the throttle, reset, and a session owing its code that can do nothing else."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pyotp
import pytest

from pydantic import ValidationError

from facesearch.config import Settings
from facesearch.errors import Forbidden, NotAuthenticated, RateLimited, SecondFactorOwed
from facesearch.service import FaceSearchService
from facesearch.service.accounts import token_hash
from tests.conftest import OPERATOR, log_in

PASSWORD = "a-long-enough-password"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 9, 0, 10, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(tmp_path, clock: Clock):
    service = FaceSearchService(Settings(home=tmp_path / "data", workers=1, login_failures_allowed=3,
                                         login_lock_max_seconds=60,
                                         second_factor_failures_allowed=4), clock)
    service.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    service.create_user(OPERATOR, "sam", PASSWORD, "supervisor", "Org")
    yield service
    service.close()


def code_at(svc: FaceSearchService, username: str, clock: Clock, steps: int = 0) -> str:
    secret = svc.accounts.user(username=username).totp_secret
    return pyotp.TOTP(secret).at(clock.now + timedelta(seconds=30 * steps))


def actions(svc: FaceSearchService) -> list[str]:
    return [r["action"] for r in svc.trail.records()]


def test_a_password_alone_opens_nothing_until_the_second_factor_is_set_up(
        svc: FaceSearchService, clock: Clock) -> None:
    actor, token, _ = svc.login("sam", PASSWORD, "10.0.0.1")
    assert actor.stage == "enrol" and actions(svc)[-1] == "login.password"
    with pytest.raises(NotAuthenticated):  # its actor is refused by every use case
        svc.users(actor)
    with pytest.raises(NotAuthenticated):
        svc.create_api_key(actor, "sneaky")
    with pytest.raises(SecondFactorOwed) as owed:  # and its session authenticates nobody
        svc.authenticate("10.0.0.1", session_token=token)
    assert owed.value.stage == "enrol"
    with pytest.raises(NotAuthenticated):  # the code page of a session that must enrol
        svc.verify_second_factor(token, "123456", "10.0.0.1")

    enrolment = svc.begin_enrolment(token)
    assert svc.begin_enrolment(token) == enrolment  # shown again: the same secret
    assert enrolment.uri.startswith("otpauth://totp/facesearch:sam?secret=" + enrolment.secret)
    right = code_at(svc, "sam", clock)
    with pytest.raises(NotAuthenticated):
        svc.confirm_enrolment(token, f"{(int(right) + 1) % 10**6:06d}", "10.0.0.1")
    full, new_token, codes = svc.confirm_enrolment(token, code_at(svc, "sam", clock), "10.0.0.1")
    assert full.stage == "full" and len(set(codes)) == 10
    assert svc.authenticate("10.0.0.1", session_token=new_token)[0].name == "sam"
    with pytest.raises(NotAuthenticated):  # the token that gave only a password is spent
        svc.authenticate("10.0.0.1", session_token=token)
    assert actions(svc)[-2:] == ["second_factor.enrol", "login"]
    assert svc.second_factor_status(full).recovery_codes_left == 10


def test_each_code_is_accepted_once_and_only_near_its_time(svc: FaceSearchService, clock: Clock) -> None:
    log_in(svc, "sam", PASSWORD)  # enrols, spending the previous step's code
    now = code_at(svc, "sam", clock)
    _, token, _ = svc.login("sam", PASSWORD, "10.0.0.1")
    svc.verify_second_factor(token, now, "10.0.0.1")
    _, replay, _ = svc.login("sam", PASSWORD, "10.0.0.2")
    with pytest.raises(NotAuthenticated):  # the same code again: refused, even elsewhere
        svc.verify_second_factor(replay, now, "10.0.0.2")
    with pytest.raises(NotAuthenticated):  # two steps ahead: outside the window
        svc.verify_second_factor(replay, code_at(svc, "sam", clock, 2), "10.0.0.2")
    actor, _ = svc.verify_second_factor(replay, code_at(svc, "sam", clock, 1), "10.0.0.2")
    assert actor.stage == "full"
    reasons = [r["detail"]["reason"] for r in svc.trail.records()
               if r["action"] == "second_factor.verify.refused"]
    assert reasons == ["code already used", "wrong code"]


def test_a_recovery_code_logs_in_once(svc: FaceSearchService, clock: Clock) -> None:
    _, token, _ = svc.login("sam", PASSWORD, "10.0.0.1")
    svc.begin_enrolment(token)
    _, _, codes = svc.confirm_enrolment(token, code_at(svc, "sam", clock), "10.0.0.1")
    _, token, _ = svc.login("sam", PASSWORD, "10.0.0.1")
    actor, _ = svc.verify_second_factor(token, codes[3].upper().replace("-", " "), "10.0.0.1")
    assert actor.stage == "full"
    assert svc.trail.records()[-1]["action"] == "second_factor.recovery_used"
    assert svc.trail.records()[-1]["detail"] == {"recovery_codes_left": 9}
    _, token, _ = svc.login("sam", PASSWORD, "10.0.0.1")
    with pytest.raises(NotAuthenticated):
        svc.verify_second_factor(token, codes[3], "10.0.0.1")


def test_wrong_codes_are_throttled_and_a_password_does_not_clear_them(
        svc: FaceSearchService, clock: Clock) -> None:
    log_in(svc, "sam", PASSWORD)
    _, token, _ = svc.login("sam", PASSWORD, "10.0.0.1")
    for _ in range(3):
        with pytest.raises(NotAuthenticated):
            svc.verify_second_factor(token, "12345-67890", "10.0.0.1")
    _, token, _ = svc.login("sam", PASSWORD, "10.0.0.1")  # a fresh session counts on
    with pytest.raises(RateLimited) as limited:
        svc.verify_second_factor(token, code_at(svc, "sam", clock, 1), "10.0.0.1")
    clock.advance(seconds=limited.value.retry_after)
    assert svc.verify_second_factor(token, code_at(svc, "sam", clock, 1), "10.0.0.1")[0].stage == "full"


def wrong(code: str) -> str:
    return f"{(int(code) + 500_000) % 10**6:06d}"


def test_wrong_codes_in_a_row_lock_the_app_codes_however_slowly_given(
        svc: FaceSearchService, clock: Clock) -> None:
    _, token, _ = svc.login("sam", PASSWORD, "10.0.0.1")
    svc.begin_enrolment(token)
    _, _, recovery = svc.confirm_enrolment(token, code_at(svc, "sam", clock), "10.0.0.1")
    for _ in range(4):  # a day apart: no throttle window, no stale-key clean-up forgets them
        clock.advance(hours=25)
        _, token, _ = svc.login("sam", PASSWORD, "10.0.0.1")
        with pytest.raises(NotAuthenticated):
            svc.verify_second_factor(token, wrong(code_at(svc, "sam", clock)), "10.0.0.1")
    assert actions(svc).count("second_factor.locked") == 1
    clock.advance(hours=25)
    _, token, _ = svc.login("sam", PASSWORD, "10.0.0.1")
    with pytest.raises(NotAuthenticated, match="locked"):  # the right code, refused now
        svc.verify_second_factor(token, code_at(svc, "sam", clock), "10.0.0.1")
    assert svc.verify_second_factor(token, recovery[0], "10.0.0.1")[0].stage == "full"
    for _ in range(3):  # the recovery code began a new count
        clock.advance(minutes=20)
        _, token, _ = svc.login("sam", PASSWORD, "10.0.0.1")
        with pytest.raises(NotAuthenticated, match="not right"):
            svc.verify_second_factor(token, wrong(code_at(svc, "sam", clock, 1)), "10.0.0.1")
    # A right code, before the limit, begins a new count as well.
    svc.verify_second_factor(token, code_at(svc, "sam", clock, 1), "10.0.0.1")
    for _ in range(4):
        _, token, _ = svc.login("sam", PASSWORD, "10.0.0.2")
        with pytest.raises(NotAuthenticated):
            svc.verify_second_factor(token, wrong(code_at(svc, "sam", clock)), "10.0.0.2")
        clock.advance(minutes=20)
    assert actions(svc).count("second_factor.locked") == 2
    svc.reset_second_factor(OPERATOR, "sam")  # an admin's or the operator's reset opens it
    assert log_in(svc, "sam", PASSWORD)[0].stage == "full"


def test_a_session_owing_its_code_lasts_minutes_and_ends_at_log_out(
        svc: FaceSearchService, clock: Clock) -> None:
    log_in(svc, "sam", PASSWORD)
    _, token, _ = svc.login("sam", PASSWORD, "10.0.0.1")
    clock.advance(minutes=10, seconds=1)
    assert svc.pending_login(token, "10.0.0.1") is None
    with pytest.raises(NotAuthenticated, match="ended"):
        svc.verify_second_factor(token, code_at(svc, "sam", clock), "10.0.0.1")
    _, token, _ = svc.login("sam", PASSWORD, "10.0.0.1")
    clock.advance(minutes=9)
    _, full = svc.verify_second_factor(token, code_at(svc, "sam", clock), "10.0.0.1")
    clock.advance(hours=svc.settings.session_hours, seconds=-1)  # a full session's hours
    assert svc.authenticate("10.0.0.1", session_token=full)[0].name == "sam"

    _, token, _ = svc.login("sam", PASSWORD, "10.0.0.1")
    pending, _ = svc.pending_login(token, "10.0.0.1")
    svc.logout(pending, token)
    assert svc.pending_login(token, "10.0.0.1") is None
    assert actions(svc)[-1] == "logout"


def test_api_keys_need_a_second_factor_behind_them(svc: FaceSearchService, clock: Clock) -> None:
    sam_id = svc.accounts.user(username="sam").id
    with svc.store.transaction() as conn:  # a key made before second factors were required
        svc.accounts.add_api_key(conn, sam_id, "old", "fsk_old", token_hash("fsk_old-key"), svc.now())
    assert svc.authenticate("10.0.0.1", api_key="fsk_old-key")[0].name == "sam"
    sam = log_in(svc, "sam", PASSWORD)[0]  # the first set-up revokes it
    with pytest.raises(NotAuthenticated):
        svc.authenticate("10.0.0.1", api_key="fsk_old-key")
    assert [r["detail"]["api_keys_revoked"] for r in svc.trail.records()
            if r["action"] == "second_factor.enrol"] == [1]
    _, key = svc.create_api_key(sam, "after")
    assert svc.authenticate("10.0.0.1", api_key=key)[0].name == "sam"
    svc.reset_second_factor(OPERATOR, "sam")  # a lost phone: its keys go with it
    with pytest.raises(NotAuthenticated):
        svc.authenticate("10.0.0.1", api_key=key)
    assert svc.trail.records()[-1]["detail"]["api_keys_revoked"] == 1


def test_an_agency_sign_in_state_is_taken_once_by_racing_callbacks(svc: FaceSearchService) -> None:
    with svc.store.transaction() as conn:
        svc.accounts.add_oidc_login(conn, "state", "agency", "nonce", "verifier", svc.now(),
                                    "2099-01-01T00:00:00+00:00")
    second: list = []

    def take() -> None:
        with svc.store.transaction() as conn:
            second.append(svc.accounts.take_oidc_login(conn, "state", svc.now()))

    with svc.store.transaction() as conn:
        assert svc.accounts.take_oidc_login(conn, "state", svc.now()).code_verifier == "verifier"
        racing = threading.Thread(target=take)
        racing.start()  # reads while the first callback's transaction is still open
        time.sleep(0.5)
    racing.join()
    assert second == [None]


@pytest.mark.parametrize(("roles", "organisation", "problem"), [
    ({"analysts": "investigatr"}, "Org", "investigatr, not one of"),
    ({"audit": "auditor"}, "Agency", "only a provider of FACESEARCH_DEPLOYMENT_ORGANISATION"),
])
def test_identity_provider_role_maps_are_checked_at_start(
        tmp_path, roles: dict, organisation: str, problem: str) -> None:
    provider = {"name": "agency", "issuer": "http://127.0.0.1:9", "client_id": "c",
                "client_secret": "s", "organisation": organisation, "roles": roles}
    with pytest.raises(ValidationError, match=problem):
        Settings(home=tmp_path, deployment_organisation="Org", oidc_providers=[provider])
    Settings(home=tmp_path, deployment_organisation="Org",  # the deployment's own: allowed
             oidc_providers=[{**provider, "organisation": "Org", "roles": {"audit": "auditor"}}])


def test_a_reset_ends_sessions_and_asks_for_a_new_set_up(svc: FaceSearchService, clock: Clock) -> None:
    sam, sam_token, _ = log_in(svc, "sam", PASSWORD)
    ada = log_in(svc, "ada", PASSWORD)[0]
    sam_id = svc.accounts.user(username="sam").id
    with pytest.raises(Forbidden):  # a supervisor manages no users' factors
        svc.reset_second_factor(sam, svc.accounts.user(username="ada").id)
    svc.reset_second_factor(ada, sam_id)
    assert svc.trail.records()[-1]["action"] == "second_factor.reset"
    with pytest.raises(NotAuthenticated):
        svc.authenticate("10.0.0.1", session_token=sam_token)
    again, token, _ = svc.login("sam", PASSWORD, "10.0.0.1")
    assert again.stage == "enrol" and svc.accounts.recovery_codes_left(sam_id) == 0
    svc.reset_second_factor(OPERATOR, "sam")  # the operator's command names the user
    assert svc.trail.records()[-1]["detail"]["username"] == "sam"


def test_a_user_linked_to_an_identity_provider_cannot_log_in_with_a_password(tmp_path) -> None:
    provider = {"name": "agency", "issuer": "http://127.0.0.1:9", "client_id": "c",
                "client_secret": "s", "organisation": "Org"}
    service = FaceSearchService(Settings(home=tmp_path / "data", oidc_providers=[provider]))
    try:
        service.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
        val = service.create_user(OPERATOR, "val", PASSWORD, "supervisor", "Org")
        service.link_identity(OPERATOR, val.id, "agency", "agency-0042")
        with pytest.raises(NotAuthenticated, match="signs in through your agency"):
            service.login("val", PASSWORD, "10.0.0.1")
        service.link_identity(OPERATOR, val.id, "agency", "")  # unlinked: a password again
        assert service.login("val", PASSWORD, "10.0.0.1")[0].stage == "enrol"
        assert [r["detail"]["subject"] for r in service.trail.records()
                if r["action"] == "user.link"] == ["agency-0042", ""]
    finally:
        service.close()
