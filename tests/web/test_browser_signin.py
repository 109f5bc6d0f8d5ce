"""Agency sign-in in a real browser (Debian's Chromium through Playwright, as test_browser.py):
a second factor set up, used, replayed, replaced by a recovery code and reset by an admin; a
sign-in through a real OpenID Connect provider on loopback (tests/oidc_provider.py) that lands
with the role its claims map to, and ID tokens the server must refuse. Screenshots go to
results/screenshots/."""

from __future__ import annotations

import re
import time
import uuid

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.conftest import next_totp
from tests.web.conftest import OIDC_USERS, Deployment, form_token, password_of, totp_code
from tests.web.test_browser import (  # noqa: F401 - browser and context are fixtures
    ACCESSIBILITY_PROBLEMS,
    browser,
    context,
    enter_password,
    log_in_as,
    log_out,
    shoot,
)


def new_supervisor(deployment: Deployment) -> tuple[str, int]:
    """A fresh supervisor of Agency A (active at once), made by the admin; name and id."""
    name = f"s{uuid.uuid4().hex[:8]}"
    with deployment.client("ada") as ada:
        user = ada.post("/api/v1/users", json={"username": name, "password": password_of(name),
                                               "role": "supervisor", "organisation": "Agency A"})
    assert user.status_code == 201, user.text
    return name, user.json()["id"]


def give_code(page: Page, code: str) -> None:
    page.get_by_label("Code", exact=True).fill(code)
    page.get_by_role("button", name="Continue").click()


def test_a_second_factor_is_set_up_used_once_per_code_recovered_and_reset(
        context: BrowserContext, deployment: Deployment) -> None:
    name, user_id = new_supervisor(deployment)
    before = deployment.last_audit_id()
    page = context.new_page()
    enter_password(page, deployment, name)
    assert page.url.endswith("/login/enrol")
    # The secret, its otpauth:// link and a QR code; a wrong code is refused beside the field.
    secret = page.locator("#totp-secret").inner_text()
    expect(page.locator("#totp-uri")).to_have_attribute("href", re.compile(rf"^otpauth://totp/.*secret={secret}"))
    expect(page.locator("figure.qr svg")).to_be_visible()
    assert page.evaluate(ACCESSIBILITY_PROBLEMS) == []
    shoot(page, "second-factor-set-up")
    first = next_totp(secret, None, time.time(), earliest=0)
    page.get_by_label("Code from the app").fill(f"{(int(first) + 1) % 10**6:06d}")
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("p.error")).to_contain_text("not right")
    page.get_by_label("Code from the app").fill(first)
    page.get_by_role("button", name="Confirm").click()
    codes = page.locator("#recovery-codes li").all_inner_texts()
    assert len(set(codes)) == 10 and all(re.fullmatch(r"[0-9a-f]{5}-[0-9a-f]{5}", c) for c in codes)
    assert page.evaluate(ACCESSIBILITY_PROBLEMS) == []
    shoot(page, "second-factor-recovery-codes")
    page.get_by_role("link", name="I have saved them, continue").click()
    expect(page.locator("header .who")).to_contain_text(f"{name} · supervisor · Agency A")
    page.goto(f"{deployment.url}/account")
    expect(page.locator("#recovery-left")).to_have_text("10")
    log_out(page, deployment)

    # The set-up's code again (a replay) is refused; the app's next code lets the user in.
    enter_password(page, deployment, name)
    assert page.url.endswith("/login/code")
    give_code(page, first)
    expect(page.locator("p.error")).to_contain_text("used already")
    shoot(page, "second-factor-code-refused")
    give_code(page, totp_code(deployment.home, name))
    expect(page.locator("header .who")).to_contain_text(f"{name} · supervisor")
    log_out(page, deployment)

    # A recovery code logs in once.
    for attempt in ("accepted", "refused"):
        enter_password(page, deployment, name)
        give_code(page, codes[0])
        if attempt == "accepted":
            expect(page.locator("header .who")).to_contain_text(name)
            page.goto(f"{deployment.url}/account")
            expect(page.locator("#recovery-left")).to_have_text("9")
            log_out(page, deployment)
        else:
            expect(page.locator("p.error")).to_be_visible()

    # The admin resets it from the users page: the user sets up a new one at next log-in.
    admin = context.browser.new_context()
    try:
        ada = admin.new_page()
        log_in_as(ada, deployment, "ada")
        ada.goto(f"{deployment.url}/admin/users")
        ada.get_by_role("button", name=f"Reset the second factor of {name}").click()
        ada.wait_for_url(f"{deployment.url}/admin/users")
        expect(ada.get_by_role("button", name=f"Reset the second factor of {name}")).to_have_count(0)
    finally:
        admin.close()
    enter_password(page, deployment, name)
    assert page.url.endswith("/login/enrol")
    assert page.locator("#totp-secret").inner_text() != secret

    trail = [(r["action"], r["actor"]) for r in deployment.audit(before)
             if r["action"].startswith(("second_factor.", "login"))]
    assert ("second_factor.enrol", name) in trail and ("second_factor.recovery_used", name) in trail
    assert ("second_factor.reset", "ada") in trail
    refused = [r["detail"]["reason"] for r in deployment.audit(before)
               if r["action"] == "second_factor.verify.refused"]
    assert refused == ["wrong code", "code already used", "wrong code"]
    assert user_id in [r["detail"].get("user_id") for r in deployment.audit(before)
                       if r["action"] == "second_factor.reset"]


def test_a_session_owing_its_code_can_do_nothing_else(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.url, timeout=60) as client:
        form = client.get("/login")
        done = client.post("/login", data={"username": "sam", "password": password_of("sam"),
                                           "csrf_token": form_token(form)})
        assert done.status_code == 303 and done.headers["location"] == "/login/code"
        code_page = client.get("/login/code")
        assert 'action="/logout"' in code_page.text  # the page offers the way out
        csrf = form_token(code_page)
        before = deployment.state_digest()
        api = client.get("/api/v1/cases")
        assert api.status_code == 401 and api.json()["error"]["code"] == "second_factor_owed"
        page = client.get("/cases")
        assert page.status_code == 303 and page.headers["location"] == "/login/code"
        key = client.post("/account/keys", data={"name": "sneaky", "csrf_token": csrf})
        assert key.status_code == 303 and key.headers["location"] == "/login/code"
        assert client.get("/login/enrol").headers["location"] == "/login/code"
        assert deployment.state_digest() == before
        done = client.post("/login/code", data={"code": totp_code(deployment.home, "sam"),
                                                "csrf_token": csrf})
        assert done.status_code == 303 and client.get("/api/v1/cases").status_code == 200


def test_a_session_owing_its_code_ends_at_log_out(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.url, timeout=60) as client:
        form = client.get("/login")
        client.post("/login", data={"username": "sam", "password": password_of("sam"),
                                    "csrf_token": form_token(form)})
        token = client.cookies["facesearch_session"]
        code_page = client.get("/login/code")
        assert 'action="/logout"' in code_page.text  # the page offers the way out
        csrf = form_token(code_page)
        before = deployment.last_audit_id()
        assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 403
        done = client.post("/logout", data={"csrf_token": csrf})
        assert done.status_code == 303 and done.headers["location"] == "/login"
    # The session is gone on the server, not only its cookie from this browser.
    with httpx.Client(base_url=deployment.url, timeout=60,
                      cookies={"facesearch_session": token}) as replay:
        assert replay.get("/login/code").headers["location"] == "/login"
    assert [r["action"] for r in deployment.audit(before)
            if r["actor"] == "sam"] == ["request.refused", "logout"]


def test_staff_sign_in_through_the_agency_provider_and_bad_id_tokens_are_refused(
        browser: Browser, deployment: Deployment, oidc_provider: str) -> None:
    before = deployment.last_audit_id()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{deployment.url}/login")
        shoot(page, "login-with-agency")
        page.get_by_role("link", name="Sign in with Test Agency").click()
        page.wait_for_url(re.compile(re.escape(oidc_provider) + r"/authorize\?"))
        page.get_by_role("button", name="Sign in as oscar").click()
        # First sign-in: created in the provider's organisation, as a supervisor (his group).
        page.wait_for_url(lambda url: "/login" not in url)
        expect(page.locator("header .who")).to_contain_text("oscar · supervisor · Agency A")
        shoot(page, "signed-in-with-agency")
        log_out(page, deployment)

        # The provider misbehaves: a token for another client, or with another nonce, or
        # signed by a key it does not publish. Each is refused; nobody is logged in.
        for mode in ("audience", "nonce", "signature"):
            httpx.post(f"{oidc_provider}/misbehave", data={"mode": mode}).raise_for_status()
            page.goto(f"{deployment.url}/login")
            page.get_by_role("link", name="Sign in with Test Agency").click()
            page.get_by_role("button", name="Sign in as oscar").click()
            page.wait_for_url(re.compile(r"/login/oidc/agency/callback"))
            expect(page.locator("p.error")).to_contain_text("did not vouch")
            page.goto(f"{deployment.url}/account")
            expect(page.get_by_label("Username")).to_be_visible()  # the log-in form: nobody
        httpx.post(f"{oidc_provider}/misbehave", data={"mode": ""}).raise_for_status()

        # vera's group maps to no role: refused until an admin links her to a local account.
        page.goto(f"{deployment.url}/login")
        page.get_by_role("link", name="Sign in with Test Agency").click()
        page.get_by_role("button", name="Sign in as vera").click()
        expect(page.locator("p.error")).to_contain_text("ask your facesearch admin")
        name, user_id = new_supervisor(deployment)
        admin = browser.new_context()
        try:  # the admin links vera's agency account to the new user on the users page
            ada = admin.new_page()
            log_in_as(ada, deployment, "ada")
            ada.goto(f"{deployment.url}/admin/users")
            ada.get_by_label("User", exact=True).select_option(str(user_id))
            ada.get_by_label("Identity provider").select_option("agency")
            ada.get_by_label("Subject").fill(OIDC_USERS["vera"]["sub"])
            ada.get_by_role("button", name="Link").click()
            ada.wait_for_url(f"{deployment.url}/admin/users")
            expect(ada.locator("#link-user")).to_contain_text(f"{name} (signs in through agency)")
            shoot(ada, "link-agency-account")
        finally:
            admin.close()
        page.get_by_role("link", name="Sign in with Test Agency").click()
        page.get_by_role("button", name="Sign in as vera").click()
        page.wait_for_url(lambda url: "/login" not in url)
        expect(page.locator("header .who")).to_contain_text(f"{name} · supervisor · Agency A")
        log_out(page, deployment)
        # Linked to the agency, the account no longer logs in with its password.
        page.get_by_label("Username").fill(name)
        page.get_by_label("Password").fill(password_of(name))
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("p.error")).to_contain_text("signs in through your agency")
    finally:
        context.close()
    records = deployment.audit(before)
    logins = [(r["actor"], r["detail"]) for r in records if r["action"] == "login" and r["actor"] != "ada"]
    assert logins == [("oscar", {"provider": "agency"}), (name, {"provider": "agency"})]
    reasons = [r["detail"]["reason"] for r in records if r["action"] == "login.refused"]
    assert [r.split(":")[0] for r in reasons[:3]] == ["ID token refused"] * 3
    assert "aud" in reasons[0] and "nonce" in reasons[1] and reasons[3] == "no role mapped from the claims"


def test_a_sign_in_finishes_only_in_the_browser_that_started_it_and_only_once(
        deployment: Deployment, oidc_provider: str) -> None:
    with httpx.Client(base_url=deployment.url, timeout=60) as started, \
            httpx.Client(base_url=deployment.url, timeout=60) as other:
        to_provider = started.get("/login/oidc/agency")
        assert to_provider.status_code == 303
        authorize = httpx.URL(to_provider.headers["location"])
        assert authorize.params["code_challenge_method"] == "S256" and authorize.params["nonce"]
        answer = httpx.post(f"{oidc_provider}/authorize", data={**dict(authorize.params), "user": "oscar"})
        callback = httpx.URL(answer.headers["location"])
        assert callback.params["state"] == authorize.params["state"]
        elsewhere = other.get(callback.raw_path.decode())  # no state cookie: someone else's link
        assert elsewhere.status_code == 401 and "did not complete" in elsewhere.text
        assert started.get(callback.raw_path.decode()).status_code == 200
        assert started.get("/api/v1/me").status_code == 200
        # Sent again with its cookie, the state is refused: it was spent.
        again = other.get(callback.raw_path.decode(),
                          headers={"Cookie": f"facesearch_oidc={callback.params['state']}"})
        assert again.status_code == 401 and "expired" in again.text
