"""Organisations are isolated from each other, admins included: every account route, over real
HTTP, acting on another organisation is refused like a missing object, changes nothing and is
audited; the same route works inside the caller's own organisation."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from tests.conftest import log_in
from tests.web.conftest import Deployment, password_of

MISSING = 10**9  # no user has this id


@pytest.fixture(scope="module")
def bert(deployment: Deployment) -> str:
    """An admin of Agency B, made by the operator (no web account can make one)."""
    service = FaceSearchService(Settings(home=deployment.home))
    try:
        operator = service.local_operator("test-operator")
        service.create_user(operator, "bert", password_of("bert"), "admin", "Agency B")
        actor, _, _ = log_in(service, "bert", password_of("bert"), "127.0.0.1")
        deployment.keys["bert"] = service.create_api_key(actor, "isolation")[1]
    finally:
        service.close()
    return "bert"


def user_body(organisation: str, role: str = "supervisor") -> dict:
    name = f"u{uuid.uuid4().hex[:8]}"
    return {"username": name, "password": password_of(name), "role": role,
            "organisation": organisation}


def status_of(d: Deployment, username: str) -> str:
    with d.db() as db:
        return db.execute("SELECT status FROM users WHERE username = ?", (username,)).fetchone()[0]


def refused(d: Deployment, before_audit: int, action: str, actor: str) -> bool:
    return any(r["action"] == action and r["actor"] == actor for r in d.audit(before_audit))


def test_an_admin_creates_users_in_their_own_organisation_only(deployment: Deployment, bert: str) -> None:
    with deployment.client(bert) as client:
        for organisation in ("Agency A", "Agency Z"):  # another one, and one that does not exist
            for send in (lambda body: client.post("/api/v1/users", json=body),
                         lambda body: client.post("/admin/users", data=body)):
                before, before_audit = deployment.state_digest(), deployment.last_audit_id()
                body = user_body(organisation)
                response = send(body)
                assert response.status_code == 403, response.text[:300]
                assert deployment.state_digest() == before  # no user, no organisation
                assert refused(deployment, before_audit, "user.create.refused", bert)
        made = client.post("/api/v1/users", json=user_body("Agency B"))
    assert made.status_code == 201 and made.json()["organisation"] == "Agency B"


def test_an_admin_cannot_create_an_auditor_or_officer_by_page_or_api(deployment: Deployment) -> None:
    """Auditors and officers read every organisation's records: the operator's to create."""
    for role in ("auditor", "dpo"):
        before, before_audit = deployment.state_digest(), deployment.last_audit_id()
        with deployment.client("ada") as ada:
            by_api = ada.post("/api/v1/users", json=user_body("Agency A", role))
            by_page = ada.post("/admin/users", data=user_body("Agency A", role))
        assert (by_api.status_code, by_page.status_code) == (403, 403), (by_api.text, by_page.text)
        assert deployment.state_digest() == before  # no user made
        refusals = [r for r in deployment.audit(before_audit) if r["action"] == "user.create.refused"]
        assert [(r["actor"], r["detail"]["role"]) for r in refusals] == [("ada", role)] * 2
    with deployment.client("ada") as ada:
        page = ada.get("/admin/users").text
    offered = re.findall(r"<option>([a-z]+)</option>", page)
    assert sorted(offered) == ["admin", "investigator", "supervisor"]


def test_admins_and_supervisors_list_their_own_organisations_users(deployment: Deployment,
                                                                   bert: str) -> None:
    for username, organisation in ((bert, "Agency B"), ("ada", "Agency A"), ("bea", "Agency B")):
        with deployment.client(username) as client:
            listed = client.get("/api/v1/users").json()
            page = client.get("/admin/users").text
        assert {u["organisation"] for u in listed} == {organisation}
        own, others = ("bea", {"ivy", "sam"}) if organisation == "Agency B" else ("sam", {"bob", "bea"})
        assert own in {u["username"] for u in listed} and f">{own}<" in page
        assert others.isdisjoint(u["username"] for u in listed)
        assert all(f">{name}<" not in page for name in others)


def test_another_organisations_user_is_answered_like_a_missing_one(deployment: Deployment,
                                                                   bert: str) -> None:
    ids = deployment.user_ids
    attempts = [  # (caller, route template, the other organisation's user)
        (bert, "/api/v1/users/{}/disable", "ivy"),
        (bert, "/api/v1/users/{}/disable", "ada"),
        (bert, "/admin/users/{}/disable", "ivy"),
        ("bea", "/api/v1/users/{}/approve", "pat"),
        ("bea", "/admin/users/{}/approve", "pat"),
    ]
    for caller, route, target in attempts:
        action = "user.disable.refused" if "disable" in route else "user.approve.refused"
        status = status_of(deployment, target)
        with deployment.client(caller) as client:
            before_audit = deployment.last_audit_id()
            other = client.post(route.format(ids[target]), follow_redirects=False)
            missing = client.post(route.format(MISSING), follow_redirects=False)
        assert other.status_code == missing.status_code == 404, (route, target, other.text[:300])
        if route.startswith("/api/"):
            assert other.json() == missing.json()
        assert status_of(deployment, target) == status
        assert refused(deployment, before_audit, action, caller)


def test_inside_their_organisation_the_same_routes_work(deployment: Deployment, bert: str) -> None:
    with deployment.client(bert) as admin:
        investigator = admin.post("/api/v1/users", json=user_body("Agency B", "investigator")).json()
        assert investigator["status"] == "pending"
        with deployment.client("bea") as bea:
            assert bea.post(f"/api/v1/users/{investigator['id']}/approve").json()["status"] == "active"
        assert admin.post(f"/api/v1/users/{investigator['id']}/disable").json()["status"] == "disabled"


def test_an_admin_restricts_only_their_own_organisation(deployment: Deployment, bert: str) -> None:
    def jurisdictions(name: str) -> str:
        with deployment.db() as db:
            return db.execute("SELECT jurisdictions FROM organisations WHERE name = ?",
                              (name,)).fetchone()[0]

    with deployment.client(bert) as client:
        before_audit, before = deployment.last_audit_id(), jurisdictions("Agency A")
        other = client.put("/api/v1/organisations/Agency A/jurisdictions", json={"jurisdictions": ["FR"]})
        missing = client.put("/api/v1/organisations/Agency Nowhere/jurisdictions",
                             json={"jurisdictions": ["FR"]})
        assert other.status_code == missing.status_code == 404
        assert other.json()["error"]["code"] == missing.json()["error"]["code"]
        assert jurisdictions("Agency A") == before
        assert refused(deployment, before_audit, "organisation.restrict.refused", bert)
        own = client.put("/api/v1/organisations/Agency B/jurisdictions", json={"jurisdictions": ["FR"]})
        assert own.status_code == 200 and jurisdictions("Agency B") == "FR"
        client.put("/api/v1/organisations/Agency B/jurisdictions", json={"jurisdictions": []})
    assert jurisdictions("Agency B") == ""


def test_an_api_key_is_revoked_by_its_owner_only(deployment: Deployment, bert: str) -> None:
    with deployment.client("ivy") as ivy:
        key = ivy.post("/api/v1/me/api-keys", json={"name": "mine"}).json()
    with deployment.client(bert) as client:
        assert client.delete(f"/api/v1/me/api-keys/{key['id']}").status_code in (404, 422)
        assert client.post(f"/account/keys/{key['id']}/revoke").status_code in (404, 422)
    with httpx.Client(base_url=deployment.url, headers={"Authorization": f"Bearer {key['key']}"}) as own:
        assert own.get("/api/v1/me").json()["username"] == "ivy"


def test_the_users_page_adds_users_to_the_admins_organisation(deployment: Deployment, bert: str) -> None:
    with deployment.client(bert) as client:
        page = client.get("/admin/users").text
        organisation = re.search(r'name="organisation"[^>]*value="([^"]*)"[^>]*readonly', page)
        assert organisation and organisation.group(1) == "Agency B"
        assert "<option>supervisor</option>" in page
        body = user_body(organisation.group(1), "supervisor")
        assert client.post("/admin/users", data=body).status_code == 303
    with deployment.db() as db:
        made = db.execute("SELECT users.role, organisations.name FROM users JOIN organisations "
                          "ON organisations.id = users.organisation_id WHERE username = ?",
                          (body["username"],)).fetchone()
    assert made == ("supervisor", "Agency B")
