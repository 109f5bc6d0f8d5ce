"""Every endpoint, every role, over real HTTP: allowed calls work; forbidden ones get 401 or
403, change nothing, and leave an audit record of the refusal."""

from __future__ import annotations

import hashlib
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from tests.conftest import LFW, lfw_photos
from tests.web.conftest import (
    PEOPLE,
    PURPOSE,
    Deployment,
    password_of,
    probe,
    wait_for_job,
)

ROLE_USERS = {"admin": "ada", "supervisor": "sam", "investigator": "ivy", "auditor": "aud",
              "dpo": "dan"}
ALL = frozenset(ROLE_USERS)
# Two people outside the gallery: one to upload and delete, one to suppress.
OUTSIDERS = [p.name for p in sorted((LFW / "images").iterdir())
             if len(list(p.glob("*.jpg"))) >= 3 and p.name not in PEOPLE][40:42]
# Someone outside the gallery whose opt-outs the officer reverses.
HIDDEN = [p.name for p in sorted((LFW / "images").iterdir())
          if len(list(p.glob("*.jpg"))) >= 3 and p.name not in PEOPLE][44]


@dataclass
class Targets:
    """Ids the calls act on: a case of Agency A with a search and a candidate in it."""

    case_id: int
    search_id: int
    candidate_id: int
    face_id: int
    job_id: int


@dataclass
class Call:
    method: str
    path: str  # a route template; {names} are filled from Targets or from prepare()
    allowed: frozenset[str]
    json: dict | Callable[[], dict] | None = None  # a callable gives a fresh body each call
    data: dict | Callable[[], dict] | None = None
    files: Callable[[], dict] | None = None
    # Investigators of another organisation are refused too (the case is Agency A's).
    same_organisation: bool = False
    # Fresh, throwaway targets for the allowed call, so that it can really act.
    prepare: Callable[[Deployment, Targets], dict] | None = None
    expect: tuple[int, ...] = (200, 201, 202, 204, 303)
    params: dict = field(default_factory=dict)


def photo_file(path=None) -> Callable[[], dict]:  # noqa: ANN001
    return lambda: {"probe": ("probe.jpg", (path or lfw_photos(PEOPLE[0])[0]).read_bytes(), "image/jpeg")}


def uploaded_image(d: Deployment, photo) -> str:  # noqa: ANN001
    """Ingest one photo through the API and return its sha256."""
    data = photo.read_bytes()
    with d.client("ada") as admin:
        job = admin.post("/api/v1/ingest-jobs", data={"source": "lfw"},
                         files={"files": (photo.name, data, "image/jpeg")}).json()
        assert wait_for_job(admin, job["id"])["status"] == "done"
    return hashlib.sha256(data).hexdigest()


def fresh_case(d: Deployment, _: Targets) -> dict:
    with d.client("ivy") as ivy:
        case = ivy.post("/api/v1/cases", json={"number": f"T-{uuid.uuid4().hex[:8]}",
                                                "purpose": PURPOSE, "offence_type": "robbery"}).json()
    return {"case_id": case["id"]}


def fresh_candidate(d: Deployment, t: Targets) -> dict:
    with d.client("ivy") as ivy:
        found = ivy.post(f"/api/v1/cases/{t.case_id}/searches", files=photo_file()(),
                         data={"face": "largest", "top": "3"}).json()
    return {"candidate_id": found["faces"][0]["candidates"][1]["candidate_id"]}


def fresh_mark(d: Deployment, t: Targets) -> dict:
    """A mark of ivy's on a fresh candidate, for her to withdraw."""
    candidate = fresh_candidate(d, t)["candidate_id"]
    with d.client("ivy") as ivy:
        marked = ivy.post(f"/api/v1/candidates/{candidate}/marks", json={"mark": "possible"}).json()
    return {"candidate_id": candidate, "mark_id": marked["marks"][-1]["id"]}


def fresh_pending_user(d: Deployment, _: Targets) -> dict:
    with d.client("ada") as admin:
        user = admin.post("/api/v1/users", json={
            "username": f"u{uuid.uuid4().hex[:8]}", "password": password_of("new"),
            "role": "investigator", "organisation": "Agency A"}).json()
    return {"user_id": user["id"]}


def fresh_key(d: Deployment, _: Targets) -> dict:
    # The allowed call revokes a key of the caller's own, made just for it.
    return {}


def fresh_source(d: Deployment, _: Targets) -> dict:
    name = f"s{uuid.uuid4().hex[:8]}"
    with d.client("ada") as admin:
        admin.post("/api/v1/sources", json={"name": name, "lawful_basis": "public_task",
                                            "jurisdiction": "US"}).raise_for_status()
    return {"name": name}


def fresh_image(d: Deployment, _: Targets) -> dict:
    return {"sha256": uploaded_image(d, lfw_photos(OUTSIDERS[0])[0])}


def fresh_face(d: Deployment, _: Targets) -> dict:
    sha = uploaded_image(d, lfw_photos(OUTSIDERS[0])[1])
    with d.db() as db:
        face_id = db.execute("SELECT faces.id FROM faces JOIN images ON images.id = faces.image_id "
                             "WHERE images.sha256 = ?", (sha,)).fetchone()[0]
    return {"face_id": face_id}


def fresh_access_request(d: Deployment, _: Targets) -> dict:
    """A pending access request, made through the service from an address of its own (the
    matrix needs more than one address's daily allowance of them), and its id for the officer."""
    service = FaceSearchService(Settings(home=d.home))
    try:
        made = service.request_access(f"198.51.100.{next(ACCESS_CLIENTS)}", probe(3),
                                      "me@example.org")
    finally:
        service.close()
    with d.client("dan") as dan:
        listed = dan.get("/api/v1/access-requests").json()
    return {"request_id": next(r["id"] for r in listed if r["public_id"] == made.request_id)}


ACCESS_CLIENTS = itertools.count(1)  # fresh_access_request's addresses, one a request


def fresh_opt_out(d: Deployment, _: Targets) -> dict:
    """An opt-out not yet confirmed, made through the service from an address of its own (the
    deployment's allowance for 127.0.0.1 is the access requests'), and its id for the officer."""
    service = FaceSearchService(Settings(home=d.home))
    try:
        pending = service.opt_out("192.0.2.77", lfw_photos(HIDDEN)[0].read_bytes())
    finally:
        service.close()
    with d.db() as db:
        return {"request_id": db.execute("SELECT id FROM subject_requests WHERE public_id = ?",
                                         (pending.request_id,)).fetchone()[0]}


def watch_photo() -> dict:
    return {"photo": ("w.jpg", lfw_photos(PEOPLE[0])[0].read_bytes(), "image/jpeg")}


def fresh_watch(d: Deployment, t: Targets) -> dict:
    """A pending watch that ivy requested in the targets' case."""
    with d.client("ivy") as ivy:
        watch = ivy.post(f"/api/v1/cases/{t.case_id}/watches", files=watch_photo(),
                         data={"authorisation": "role matrix", "days": "30"}).json()
    return {"watch_id": watch["id"]}


SEED = "http://127.0.0.1:9/"


def new_crawl_body() -> dict:
    return {"source": "lfw", "purpose": "role matrix", "seeds": [SEED], "allow": [SEED]}


def latest_crawl(d: Deployment, _: Targets) -> dict:
    with d.client("ada") as admin:
        return {"job_id": admin.get("/api/v1/crawls").json()[0]["id"]}


def queued_crawl(d: Deployment, _: Targets) -> dict:
    """A crawl job created but not run (the API runs what it creates), to cancel."""
    service = FaceSearchService(Settings(home=d.home))
    try:
        job = service.start_crawl(service.local_operator("test"), [SEED], [SEED], "lfw", "matrix")
    finally:
        service.close()
    return {"job_id": job.id, "command": "cancel"}


def new_user_body() -> dict:
    return {"username": f"u{uuid.uuid4().hex[:8]}", "password": password_of("x"),
            "role": "supervisor", "organisation": "Agency A"}


def new_source_body() -> dict:
    return {"name": f"s{uuid.uuid4().hex[:8]}", "lawful_basis": "public_task", "jurisdiction": "US"}


def fresh(body):  # noqa: ANN001, ANN201
    return body() if callable(body) else body


def wait_for_jobs(d: Deployment) -> None:
    """Let ingest and crawl jobs that an allowed call started finish before the next state
    check."""
    with d.client("ada") as admin:
        for job in admin.get("/api/v1/ingest-jobs").json():
            wait_for_job(admin, job["id"])
        deadline = time.monotonic() + 60
        while any(j["status"] in ("queued", "running") for j in admin.get("/api/v1/crawls").json()):
            assert time.monotonic() < deadline, "a crawl job did not end"
            time.sleep(0.2)


def latest_job(d: Deployment, _: Targets) -> dict:
    with d.client("ada") as admin:
        return {"job_id": admin.get("/api/v1/ingest-jobs").json()[0]["id"]}


def new_case_body() -> dict:
    return {"number": f"C-{uuid.uuid4().hex[:8]}", "purpose": PURPOSE, "offence_type": "robbery"}


CASE_READERS = frozenset({"supervisor", "investigator"})
INVESTIGATOR = frozenset({"investigator"})
SUPERVISOR = frozenset({"supervisor"})
ADMIN = frozenset({"admin"})
DPO = frozenset({"dpo"})
RECORDS = frozenset({"admin", "dpo", "auditor"})
CALLS = [
    # Account
    Call("GET", "/api/v1/me", ALL),
    Call("GET", "/api/v1/me/api-keys", ALL),
    Call("POST", "/api/v1/me/api-keys", ALL, json={"name": "matrix"}),
    Call("DELETE", "/api/v1/me/api-keys/{key_id}", ALL, prepare=fresh_key),
    # Users
    Call("GET", "/api/v1/users", frozenset({"admin", "supervisor"})),
    Call("POST", "/api/v1/users", ADMIN, json=new_user_body),
    Call("POST", "/api/v1/users/{user_id}/approve", frozenset({"supervisor"}), prepare=fresh_pending_user),
    Call("POST", "/api/v1/users/{user_id}/disable", ADMIN, prepare=fresh_pending_user),
    Call("POST", "/api/v1/users/{user_id}/reset-second-factor", ADMIN, prepare=fresh_pending_user),
    Call("PUT", "/api/v1/users/{user_id}/identity", ADMIN, prepare=fresh_pending_user,
         json=lambda: {"provider": "agency", "subject": f"sub-{uuid.uuid4().hex[:8]}"}),
    # Gallery
    Call("GET", "/api/v1/sources", ALL),
    Call("POST", "/api/v1/sources", ADMIN, json=new_source_body),
    Call("DELETE", "/api/v1/sources/{name}", ADMIN, prepare=fresh_source),
    Call("POST", "/api/v1/ingest-jobs", ADMIN, data={"source": "lfw"},
         files=lambda: {"files": ("a.jpg", lfw_photos(PEOPLE[0])[1].read_bytes(), "image/jpeg")}),
    Call("POST", "/api/v1/ingest-jobs/server-path", ADMIN,
         json=lambda: {"source": "lfw", "path": str(lfw_photos(OUTSIDERS[0])[2])}),
    Call("GET", "/api/v1/ingest-jobs", ADMIN),
    Call("GET", "/api/v1/ingest-jobs/{job_id}", ADMIN, prepare=latest_job),
    Call("DELETE", "/api/v1/images/{sha256}", ADMIN, prepare=fresh_image),
    Call("DELETE", "/api/v1/faces/{face_id}", ADMIN, prepare=fresh_face),
    Call("POST", "/api/v1/purges", ADMIN, json={"jurisdiction": "NZ"}),
    Call("POST", "/api/v1/suppressions", ADMIN, data={"reason": "role matrix test"},
         files=lambda: {"photo": ("p.jpg", lfw_photos(OUTSIDERS[1])[0].read_bytes(), "image/jpeg")}),
    Call("POST", "/api/v1/reindex", ADMIN),
    Call("GET", "/api/v1/stats", frozenset({"admin", "supervisor", "auditor", "dpo"})),
    Call("GET", "/api/v1/policy", ADMIN),
    Call("GET", "/metrics", ADMIN),
    # Cases, search, review
    Call("GET", "/api/v1/faces/{face_id}/crop", frozenset({"admin", "supervisor", "investigator"}),
         same_organisation=True),
    Call("GET", "/api/v1/cases", CASE_READERS),
    Call("POST", "/api/v1/cases", INVESTIGATOR, json=lambda: new_case_body()),
    Call("GET", "/api/v1/cases/{case_id}", CASE_READERS, same_organisation=True),
    Call("POST", "/api/v1/cases/{case_id}/close", INVESTIGATOR, same_organisation=True,
         prepare=fresh_case),
    Call("POST", "/api/v1/probe-faces", INVESTIGATOR, files=photo_file()),
    Call("POST", "/api/v1/cases/{case_id}/searches", INVESTIGATOR, same_organisation=True,
         files=photo_file(), data={"face": "largest", "top": "5"}),
    Call("GET", "/api/v1/cases/{case_id}/searches/{search_id}", CASE_READERS, same_organisation=True),
    Call("GET", "/api/v1/cases/{case_id}/searches/{search_id}/probe-faces/{probe_face}/crop",
         CASE_READERS, same_organisation=True),
    Call("GET", "/api/v1/cases/{case_id}/searches/{search_id}/candidates/{candidate_id}/source-image",
         CASE_READERS, same_organisation=True),
    Call("POST", "/api/v1/candidates/{candidate_id}/marks", INVESTIGATOR, same_organisation=True,
         json={"mark": "rejected"}, prepare=fresh_candidate),
    Call("POST", "/api/v1/candidates/{candidate_id}/marks/{mark_id}/withdraw", INVESTIGATOR,
         same_organisation=True, prepare=fresh_mark),
    Call("GET", "/api/v1/cases/{case_id}/report", CASE_READERS, same_organisation=True),
    Call("GET", "/api/v1/cases/{case_id}/report.pdf", CASE_READERS, same_organisation=True),
    # Case watches
    Call("POST", "/api/v1/cases/{case_id}/watches", INVESTIGATOR, same_organisation=True,
         files=watch_photo, data={"authorisation": "role matrix", "days": "30"}),
    Call("GET", "/api/v1/cases/{case_id}/watches", CASE_READERS, same_organisation=True),
    Call("GET", "/api/v1/watches/pending", SUPERVISOR),
    Call("POST", "/api/v1/watches/{watch_id}/decision", SUPERVISOR, json={"approve": False},
         prepare=fresh_watch),
    Call("POST", "/api/v1/watches/{watch_id}/stop", CASE_READERS, same_organisation=True,
         json={"reason": "role matrix"}, prepare=fresh_watch),
    Call("GET", "/api/v1/audit", frozenset({"auditor"}), params={"action": "search"}),
    Call("GET", "/api/v1/audit/verify", frozenset({"auditor"})),
    # Data protection and governance
    Call("GET", "/api/v1/me/notifications", ALL),
    Call("GET", "/api/v1/access-requests", DPO),
    Call("POST", "/api/v1/access-requests/{request_id}/approve", DPO, json={"note": "passport seen"},
         prepare=fresh_access_request),
    Call("POST", "/api/v1/access-requests/{request_id}/reject", DPO, json={"note": "no match"},
         prepare=fresh_access_request),
    Call("GET", "/api/v1/access-requests/{request_id}/identity-faces", DPO,
         prepare=fresh_access_request),
    Call("POST", "/api/v1/access-requests/{request_id}/extend", DPO, json={"reason": "complex"},
         prepare=fresh_access_request),
    Call("GET", "/api/v1/records-of-processing", RECORDS),
    Call("GET", "/api/v1/records-of-processing.md", RECORDS),
    Call("PUT", "/api/v1/organisations/{organisation}/jurisdictions", ADMIN, json={"jurisdictions": []}),
    Call("PUT", "/api/v1/organisations/{organisation}/reveal-case-numbers", ADMIN,
         json={"reveal": False}),
    Call("POST", "/api/v1/retention", ADMIN),
    Call("GET", "/dpo", DPO),
    Call("POST", "/dpo/requests/{request_id}/decide", DPO, data={"decision": "reject"},
         prepare=fresh_access_request),
    Call("POST", "/dpo/requests/{request_id}/extend", DPO, data={"reason": "complex"},
         prepare=fresh_access_request),
    Call("GET", "/records", RECORDS),
    Call("GET", "/api/v1/opt-outs", DPO),
    Call("POST", "/api/v1/opt-outs/{request_id}/reinstate", DPO, json={"reason": "disputed"},
         prepare=fresh_opt_out),
    Call("GET", "/api/v1/opt-outs/reviews", DPO),
    # Refused for every other role before anything is looked up; the officer's reach a request
    # that awaits no review: not found.
    Call("POST", "/api/v1/opt-outs/{request_id}/review", DPO, json={"erase": [], "dismiss": []},
         prepare=fresh_opt_out, expect=(404,)),
    Call("POST", "/dpo/opt-outs/{request_id}/review", DPO, data={}, prepare=fresh_opt_out,
         expect=(404,)),
    Call("GET", "/dpo/opt-outs/{request_id}/faces/{face_id}/crop", DPO, prepare=fresh_opt_out,
         expect=(404,)),
    Call("GET", "/dpo/opt-outs", DPO),
    Call("POST", "/dpo/opt-outs/{request_id}/reinstate", DPO, data={"reason": "disputed"},
         prepare=fresh_opt_out),
    # Crawling (the loopback seed is refused by the SSRF guard: the job ends at once)
    Call("POST", "/api/v1/crawls", ADMIN, json=lambda: new_crawl_body()),
    Call("GET", "/api/v1/crawls", ADMIN),
    Call("GET", "/api/v1/crawls/{job_id}", ADMIN, prepare=latest_crawl),
    Call("POST", "/api/v1/crawls/{job_id}/{command}", ADMIN, prepare=queued_crawl),
    Call("GET", "/admin/crawls", ADMIN),
    Call("POST", "/admin/crawls", ADMIN, data=lambda: {**new_crawl_body(), "seeds": SEED, "allow": SEED}),
    Call("POST", "/admin/crawls/{job_id}/{command}", ADMIN, prepare=queued_crawl),
    # Pages (the same service calls behind HTML)
    Call("GET", "/", ALL, expect=(303,)),
    Call("GET", "/cases", CASE_READERS),
    Call("POST", "/cases", INVESTIGATOR, data=lambda: new_case_body()),
    Call("GET", "/cases/{case_id}", CASE_READERS, same_organisation=True),
    Call("GET", "/cases/{case_id}/close", INVESTIGATOR, same_organisation=True, prepare=fresh_case),
    Call("POST", "/cases/{case_id}/close", INVESTIGATOR, same_organisation=True, prepare=fresh_case),
    Call("GET", "/cases/{case_id}/searches/{search_id}", CASE_READERS, same_organisation=True),
    Call("GET", "/cases/{case_id}/searches/{search_id}/candidates/{candidate_id}", CASE_READERS,
         same_organisation=True),
    Call("POST", "/candidates/{candidate_id}/mark", INVESTIGATOR, same_organisation=True,
         data={"mark": "rejected", "back_to": "/cases/1/searches/1"}, prepare=fresh_candidate),
    Call("POST", "/candidates/{candidate_id}/marks/{mark_id}/withdraw", INVESTIGATOR,
         same_organisation=True, data={"back_to": "/cases/1/searches/1"}, prepare=fresh_mark),
    Call("GET", "/cases/{case_id}/report", CASE_READERS, same_organisation=True),
    Call("POST", "/cases/{case_id}/watches", INVESTIGATOR, same_organisation=True,
         files=watch_photo, data={"authorisation": "role matrix", "days": "30"}),
    Call("POST", "/watches/{watch_id}/stop", CASE_READERS, same_organisation=True,
         data={"reason": "role matrix"}, prepare=fresh_watch),
    Call("GET", "/watches", SUPERVISOR),
    Call("GET", "/supervisor", SUPERVISOR),
    Call("POST", "/watches/{watch_id}/decide", SUPERVISOR, data={"decision": "refuse"},
         prepare=fresh_watch),
    Call("GET", "/admin/users", frozenset({"admin", "supervisor"})),
    Call("POST", "/admin/users", ADMIN, data=new_user_body),
    Call("POST", "/admin/users/{user_id}/approve", frozenset({"supervisor"}), prepare=fresh_pending_user),
    Call("POST", "/admin/users/{user_id}/disable", ADMIN, prepare=fresh_pending_user),
    Call("POST", "/admin/users/{user_id}/reset-second-factor", ADMIN, prepare=fresh_pending_user),
    Call("POST", "/admin/users/identity", ADMIN, prepare=fresh_pending_user,
         data=lambda: {"user_id": "{user_id}", "provider": "agency", "subject": f"sub-{uuid.uuid4().hex[:8]}"}),
    Call("GET", "/admin/sources", ADMIN),
    Call("GET", "/admin/ingest-jobs/{job_id}", ADMIN, prepare=latest_job),
    Call("POST", "/admin/sources", ADMIN, data=new_source_body),
    Call("POST", "/admin/ingest", ADMIN, data={"source": "lfw"},
         files=lambda: {"files": ("b.jpg", lfw_photos(PEOPLE[2])[1].read_bytes(), "image/jpeg")}),
    Call("GET", "/admin/policy", ADMIN),
    Call("GET", "/audit", frozenset({"auditor"})),
    Call("GET", "/account", ALL),
    Call("POST", "/account/keys", ALL, data={"name": "matrix"}),
    Call("POST", "/account/keys/{key_id}/revoke", ALL, prepare=fresh_key),
    Call("POST", "/logout", ALL, expect=(303,)),
]
# Open to anyone: log-in, and the data-subject pages and API (limited per client instead).
PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/openapi.json"),
          # A log-in's second step (a session that gave its password only) and agency sign-in.
          ("GET", "/login/code"), ("POST", "/login/code"), ("GET", "/login/enrol"),
          ("POST", "/login/enrol"), ("GET", "/login/oidc/{provider}"),
          ("GET", "/login/oidc/{provider}/callback"),
          ("GET", "/opt-out"), ("POST", "/opt-out"), ("GET", "/access"), ("POST", "/access"),
          ("GET", "/access/report/{token}"), ("POST", "/access/report/{token}"),
          ("POST", "/opt-out/confirm"), ("POST", "/api/v1/public/opt-out"),
          ("POST", "/api/v1/public/opt-out/confirm"), ("POST", "/api/v1/public/access-requests"),
          ("POST", "/api/v1/public/access-reports/{token}"),
          ("GET", "/access/status"), ("GET", "/api/v1/public/requests/{number}")}


@pytest.fixture(scope="module")
def targets(deployment: Deployment) -> Targets:
    with deployment.client("ivy") as ivy:
        case = ivy.post("/api/v1/cases", json={"number": "ROLES-1", "purpose": PURPOSE, "offence_type": "robbery"}).json()
        found = ivy.post(f"/api/v1/cases/{case['id']}/searches", files=photo_file()(),
                         data={"face": "largest", "top": "5"}).json()
    first = found["faces"][0]["candidates"][0]
    with deployment.client("ada") as admin:
        job = admin.get("/api/v1/ingest-jobs").json()
    return Targets(case["id"], found["search_id"], first["candidate_id"], first["face_id"],
                   job[0]["id"] if job else 1)


def path_of(call: Call, values: dict) -> str:
    return call.path.format(**values)


def send(d: Deployment, username: str | None, call: Call, values: dict) -> httpx.Response:
    with d.client(username) as client:
        data = fresh(call.data)
        if isinstance(data, dict):  # a form field may name a target too, as a path does
            data = {k: v.format(**values) if isinstance(v, str) else v for k, v in data.items()}
        return client.request(call.method, path_of(call, values), json=fresh(call.json),
                              data=data,
                              files=call.files() if call.files else None, params=call.params,
                              follow_redirects=False)


def base_values(t: Targets) -> dict:
    return {"case_id": t.case_id, "search_id": t.search_id, "candidate_id": t.candidate_id,
            "face_id": t.face_id, "job_id": t.job_id, "user_id": 1, "key_id": 1,
            "name": "lfw", "sha256": "0" * 64, "request_id": 1, "organisation": "Agency A",
            "command": "pause", "watch_id": 1, "probe_face": 0, "mark_id": 1}


def test_the_matrix_covers_every_route_of_the_app() -> None:
    from facesearch.web import api, pages, public

    routes = {(method, route.path) for router in (api.router, api.operations, pages.router, public.router)
              for route in router.routes for method in route.methods}
    covered = {(c.method, c.path) for c in CALLS} | PUBLIC - {("GET", "/openapi.json")}
    assert len(routes) > 50
    assert routes - covered == set()
    assert covered - routes == set()


@pytest.mark.parametrize("call", CALLS, ids=[f"{c.method} {c.path}" for c in CALLS])
def test_each_role_is_allowed_or_refused_and_refusals_change_nothing(
        deployment: Deployment, targets: Targets, call: Call) -> None:
    values = base_values(targets)
    refused_users: list[str | None] = [None]  # anonymous
    refused_users += [user for role, user in ROLE_USERS.items() if role not in call.allowed]
    if call.same_organisation:
        refused_users.append("bob")  # an investigator of Agency B
    for username in refused_users:
        before_state, before_audit = deployment.state_digest(), deployment.last_audit_id()
        counted = deployment.refusals_counted("127.0.0.1", "auth.refused")
        response = send(deployment, username, call, values)
        expected = 401 if username is None else 403
        assert response.status_code == expected, (username, response.text[:300])
        assert deployment.state_digest() == before_state, f"{username} changed something"
        refusals = [r for r in deployment.audit(before_audit) if r["action"].endswith(".refused")]
        if username is None and not refusals:  # aggregated: one record per client and hour
            assert deployment.refusals_counted("127.0.0.1", "auth.refused") == counted + 1
            continue
        assert refusals, f"no audit record of {username}'s refusal"
        assert refusals[-1]["actor"] == (username or "anonymous")
        assert refusals[-1]["client"] == "127.0.0.1"

    for role in sorted(call.allowed):
        username = ROLE_USERS[role]
        values_for_call = dict(values)
        if call.prepare is fresh_key:
            with deployment.client(username) as client:
                values_for_call["key_id"] = client.post("/api/v1/me/api-keys",
                                                        json={"name": "x"}).json()["id"]
        elif call.prepare:
            values_for_call.update(call.prepare(deployment, targets))
        response = send(deployment, username, call, values_for_call)
        assert response.status_code in call.expect, (role, response.status_code, response.text[:300])
        wait_for_jobs(deployment)
