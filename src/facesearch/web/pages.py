"""Server-rendered pages (Jinja2). Like the API, each page is a thin adapter: the service
authorises, audits and answers; forms post back here with the session's CSRF token (the log-in
form with a token of its own)."""

from __future__ import annotations

import re
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from facesearch.errors import Forbidden, NotAuthenticated
from facesearch.service import LEAD_LABEL, LEAD_NOTICE, SCORE_MEANING, AuditFilter
from facesearch.types import Actor
from facesearch.web.api import CrawlCommand, RowId, command_crawl
from facesearch.web.auth import (
    SESSION_COOKIE,
    GuardedRoute,
    client_of,
    current_actor,
    public_base,
    same_token,
    secure_cookies,
    service_of,
)

router = APIRouter(include_in_schema=False, route_class=GuardedRoute)
Caller = Annotated[Actor, Depends(current_actor)]
HOME = {"investigator": "/cases", "supervisor": "/cases", "admin": "/admin/users",
        "auditor": "/audit", "dpo": "/dpo"}
# The log-in form's token, and the cookie it must match (sent to /login only).
LOGIN_COOKIE = "facesearch_login"
BROWSER_COOKIE = "facesearch_browser"  # a browser that has logged in (service login), /login only
LOGIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def render(request: Request, template: str, actor: Actor | None, status: int = 200,
           **context: object) -> HTMLResponse:
    notices = service_of(request).take_notifications(actor) if actor else []
    return request.app.state.templates.TemplateResponse(
        request, template, dict(context, actor=actor, notices=notices,
                                csrf=getattr(request.state, "csrf", None)),
        status_code=status)


def back(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# Log-in ---------------------------------------------------------------------------------------

def login_form(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
    """The log-in form, with a token that the form's post must send back and that must match
    a cookie set here (double submit). Another site can make a browser post the form but can
    neither read nor set the cookie (SameSite=Strict, HttpOnly), so it cannot log a visitor
    into an account of its choosing (login CSRF). One token per browser, so that two open
    log-in pages both work."""
    token = request.cookies.get(LOGIN_COOKIE, "")
    if not LOGIN_TOKEN.fullmatch(token):
        token = secrets.token_urlsafe(32)
    response = render(request, "login.html", None, status=status, error=error, login_token=token)
    response.set_cookie(LOGIN_COOKIE, token, path="/login", httponly=True, samesite="strict",
                        secure=secure_cookies(request))
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return login_form(request)


@router.post("/login")
def login(request: Request, username: Annotated[str, Form(max_length=100)],
          password: Annotated[str, Form(max_length=1000)],
          csrf_token: Annotated[str, Form(max_length=100)] = "") -> Response:
    service = service_of(request)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not (LOGIN_TOKEN.fullmatch(expected) and same_token(csrf_token, expected)):
        try:
            service.refuse_request(Actor(name="anonymous", role="anonymous", client=client_of(request)),
                                   "missing or wrong log-in token", "POST /login")
        except Forbidden as exc:
            return login_form(request, 403, exc.message)
    browser = request.cookies.get(BROWSER_COOKIE)
    try:
        actor, token, _ = service.login(username, password, client_of(request), browser)
    except NotAuthenticated as exc:
        return login_form(request, 401, exc.message)
    response = back(HOME.get(actor.role, "/"))
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure_cookies(request), max_age=service.settings.session_hours * 3600)
    # Remembers this browser for the user, so that a stranger's failures cannot lock them out.
    response.set_cookie(BROWSER_COOKIE, service.remember_browser(actor, browser), path="/login",
                        httponly=True, samesite="strict", secure=secure_cookies(request),
                        max_age=service.browser_days * 86400)
    return response


@router.post("/logout")
def logout(request: Request, actor: Caller) -> Response:
    service_of(request).logout(actor, request.cookies.get(SESSION_COOKIE, ""))
    response = back("/login")
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict",
                           secure=secure_cookies(request))
    return response


@router.get("/")
def home(actor: Caller) -> Response:
    return back(HOME.get(actor.role, "/account"))


# Cases, search, review -------------------------------------------------------------------------

@router.get("/cases", response_class=HTMLResponse)
def cases_page(request: Request, actor: Caller) -> HTMLResponse:
    service = service_of(request)
    return render(request, "cases.html", actor, cases=service.list_cases(actor),
                  purposes=service.settings.search_purposes)


@router.post("/cases")
def open_case(request: Request, actor: Caller, number: Annotated[str, Form(max_length=100)],
              purpose: Annotated[str, Form(max_length=200)],
              authorisation: Annotated[str, Form(max_length=200)] = "",
              keep_probes: Annotated[bool, Form()] = False) -> Response:
    case = service_of(request).open_case(actor, number, purpose, authorisation, keep_probes)
    return back(f"/cases/{case.id}")


@router.get("/cases/{case_id}", response_class=HTMLResponse)
def case_page(request: Request, actor: Caller, case_id: RowId) -> HTMLResponse:
    service = service_of(request)
    case, searches = service.case_searches(actor, case_id)
    return render(request, "case.html", actor, case=case, searches=searches,
                  max_candidates=service.settings.max_candidates,
                  watches=service.case_watches(actor, case_id)[1],
                  watch_max_days=service.settings.watch_max_days)


@router.post("/cases/{case_id}/close")
def close_case(request: Request, actor: Caller, case_id: RowId) -> Response:
    service_of(request).close_case(actor, case_id)
    return back(f"/cases/{case_id}")


# Case watches: requested on the case page, approved on the supervisor's watches page.

@router.post("/cases/{case_id}/watches")
def request_watch(request: Request, actor: Caller, case_id: RowId,
                  photo: Annotated[UploadFile, File()],
                  authorisation: Annotated[str, Form(max_length=200)],
                  days: Annotated[int, Form(ge=1, le=366)],
                  note: Annotated[str, Form(max_length=1000)] = "") -> Response:
    service_of(request).request_watch(actor, case_id, authorisation, days,
                                      photo=photo.file.read(), note=note)
    return back(f"/cases/{case_id}#watches")


@router.post("/watches/{watch_id}/stop")
def stop_watch(request: Request, actor: Caller, watch_id: RowId,
               reason: Annotated[str, Form(max_length=1000)]) -> Response:
    watch = service_of(request).stop_watch(actor, watch_id, reason)
    return back(f"/cases/{watch.case_id}#watches")


@router.get("/watches", response_class=HTMLResponse)
def watches_page(request: Request, actor: Caller) -> HTMLResponse:
    return render(request, "watches.html", actor, pending=service_of(request).pending_watches(actor))


@router.post("/watches/{watch_id}/decide")
def decide_watch(request: Request, actor: Caller, watch_id: RowId,
                 decision: Annotated[str, Form(pattern="^(approve|refuse)$")],
                 note: Annotated[str, Form(max_length=1000)] = "") -> Response:
    service_of(request).decide_watch(actor, watch_id, decision == "approve", note)
    return back("/watches")


@router.get("/cases/{case_id}/searches/{search_id}", response_class=HTMLResponse)
def search_page(request: Request, actor: Caller, case_id: RowId, search_id: RowId) -> HTMLResponse:
    service = service_of(request)
    case, search, groups = service.grouped_search(actor, case_id, search_id)
    # The groups name candidates by (probe face, rank); the page's anchors are candidate ids.
    anchors = {(c.probe_face, c.rank): c.id for c in search.candidates}
    return render(request, "search.html", actor, case=case, search=search, groups=groups,
                  anchors=anchors, notice=LEAD_NOTICE, lead_label=LEAD_LABEL,
                  score_meaning=SCORE_MEANING)


@router.post("/candidates/{candidate_id}/mark")
def mark(request: Request, actor: Caller, candidate_id: RowId,
         mark: Annotated[str, Form(pattern="^(possible|confirmed|rejected)$")],
         back_to: Annotated[str, Form(pattern=r"^/cases/[0-9]+/searches/[0-9]+$")]) -> Response:
    service_of(request).mark_candidate(actor, candidate_id, mark)
    return back(f"{back_to}#candidate-{candidate_id}")


@router.get("/cases/{case_id}/report", response_class=HTMLResponse)
def report_page(request: Request, actor: Caller, case_id: RowId) -> HTMLResponse:
    report = service_of(request).case_report(actor, case_id)
    return render(request, "report.html", actor, report=report)


# Administration ----------------------------------------------------------------------------------

@router.get("/admin/users", response_class=HTMLResponse)
def users_page(request: Request, actor: Caller) -> HTMLResponse:
    service = service_of(request)
    return render(request, "users.html", actor, users=service.users(actor),
                  roles=service.roles_creatable_by(actor))


@router.post("/admin/users")
def create_user(request: Request, actor: Caller, username: Annotated[str, Form(max_length=100)],
                password: Annotated[str, Form(max_length=1000)],
                role: Annotated[str, Form(max_length=32)],
                organisation: Annotated[str, Form(max_length=200)]) -> Response:
    service_of(request).create_user(actor, username, password, role, organisation)
    return back("/admin/users")


@router.post("/admin/users/{user_id}/approve")
def approve_user(request: Request, actor: Caller, user_id: RowId) -> Response:
    service_of(request).approve_user(actor, user_id)
    return back("/admin/users")


@router.post("/admin/users/{user_id}/disable")
def disable_user(request: Request, actor: Caller, user_id: RowId) -> Response:
    service_of(request).disable_user(actor, user_id)
    return back("/admin/users")


@router.get("/admin/sources", response_class=HTMLResponse)
def sources_page(request: Request, actor: Caller) -> HTMLResponse:
    service = service_of(request)
    return render(request, "sources.html", actor, sources=service.sources(actor),
                  jobs=service.ingest_jobs(actor))


@router.post("/admin/sources")
def add_source(request: Request, actor: Caller, name: Annotated[str, Form(max_length=200)],
               lawful_basis: Annotated[str, Form(max_length=100)],
               jurisdiction: Annotated[str, Form(max_length=10)],
               description: Annotated[str, Form(max_length=2000)] = "") -> Response:
    service_of(request).add_source(actor, name, lawful_basis, jurisdiction, description)
    return back("/admin/sources")


@router.post("/admin/ingest")
def ingest(request: Request, actor: Caller, source: Annotated[str, Form(max_length=200)],
                 files: Annotated[list[UploadFile], File()]) -> Response:
    uploads = [(f.filename or "image", f.file.read()) for f in files]
    service_of(request).start_ingest_job(actor, source, uploads=uploads)
    return back("/admin/sources")


@router.get("/admin/policy", response_class=HTMLResponse)
def policy_page(request: Request, actor: Caller) -> HTMLResponse:
    return render(request, "policy.html", actor, policy=service_of(request).policy(actor))


# Audit -------------------------------------------------------------------------------------------

@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, actor: Caller, action: str | None = None,
               user: Annotated[str | None, Query(alias="actor")] = None,
               organisation: str | None = None, case: str | None = None,
               since: str | None = None, until: str | None = None, verify: bool = False) -> HTMLResponse:
    # The same query names as GET /api/v1/audit, so the export links carry the filters over.
    service = service_of(request)
    where = AuditFilter(actor=user or None, organisation=organisation or None, action=action or None,
                        case_number=case or None, since=since or None, until=until or None, limit=500)
    check = service.verify_audit(actor) if verify else None
    records = service.audit_records(actor, where)
    query = request.url.query
    return render(request, "audit.html", actor, records=records, where=where, check=check,
                  export_query=query)


# Account ---------------------------------------------------------------------------------------------

@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request, actor: Caller) -> HTMLResponse:
    return render(request, "account.html", actor, keys=service_of(request).api_keys(actor))


@router.post("/account/keys", response_class=HTMLResponse)
def create_key(request: Request, actor: Caller, name: Annotated[str, Form(max_length=100)]) -> HTMLResponse:
    service = service_of(request)
    _, secret = service.create_api_key(actor, name)
    return render(request, "account.html", actor, keys=service.api_keys(actor), new_key=secret)


@router.post("/account/keys/{key_id}/revoke")
def revoke_key(request: Request, actor: Caller, key_id: RowId) -> Response:
    service_of(request).revoke_api_key(actor, key_id)
    return back("/account")


# Data-protection officer ------------------------------------------------------------------------------

@router.get("/dpo", response_class=HTMLResponse)
def dpo_page(request: Request, actor: Caller) -> HTMLResponse:
    requests = service_of(request).access_requests(actor)
    return render(request, "dpo.html", actor, requests=requests,
                  overdue=sum(r.overdue for r in requests))


@router.post("/dpo/requests/{request_id}/decide", response_class=HTMLResponse)
def dpo_decide(request: Request, actor: Caller, request_id: RowId,
               decision: Annotated[str, Form(pattern="^(approve|reject)$")],
               note: Annotated[str, Form(max_length=1000)] = "") -> Response:
    service = service_of(request)
    token = service.decide_access_request(actor, request_id, decision == "approve", note)
    requests = service.access_requests(actor)
    return render(request, "dpo.html", actor, requests=requests,
                  overdue=sum(r.overdue for r in requests),
                  link=f"{public_base(request)}/access/report/{token}" if token else None)


@router.post("/dpo/requests/{request_id}/extend")
def dpo_extend(request: Request, actor: Caller, request_id: RowId,
               reason: Annotated[str, Form(min_length=1, max_length=1000)]) -> Response:
    service_of(request).extend_access_request(actor, request_id, reason)
    return back("/dpo")


@router.get("/records", response_class=HTMLResponse)
def records_page(request: Request, actor: Caller) -> HTMLResponse:
    return render(request, "records.html", actor,
                  record=service_of(request).record_of_processing(actor))


# Crawling ------------------------------------------------------------------------------------------------

@router.get("/admin/crawls", response_class=HTMLResponse)
def crawls_page(request: Request, actor: Caller) -> HTMLResponse:
    service = service_of(request)
    statuses = [service.crawl_status(actor, job.id) for job in service.crawl_jobs(actor)[:20]]
    return render(request, "crawls.html", actor, statuses=statuses, sources=service.sources(actor),
                  running=any(s.job.status in ("queued", "running") for s in statuses))


@router.post("/admin/crawls")
def start_crawl(request: Request, actor: Caller, source: Annotated[str, Form(max_length=200)],
                purpose: Annotated[str, Form(max_length=500)],
                seeds: Annotated[str, Form(max_length=100_000)],
                allow: Annotated[str, Form(max_length=100_000)],
                max_depth: Annotated[int, Form(ge=0, le=20)] = 2,
                max_pages: Annotated[int, Form(ge=1, le=1_000_000)] = 200) -> Response:
    service = service_of(request)
    job = service.start_crawl(actor, seeds.split(), allow.split(), source, purpose, max_depth, max_pages)
    service.run_crawl_in_background(actor, job.id)
    return back("/admin/crawls")


@router.post("/admin/crawls/{job_id}/{command}")
def crawl_command(request: Request, actor: Caller, job_id: RowId, command: CrawlCommand) -> Response:
    command_crawl(request, actor, job_id, command)
    return back("/admin/crawls")
