"""Server-rendered pages (Jinja2). Like the API, each page is a thin adapter: the service
authorises, audits and answers; forms post back here with the session's CSRF token (the log-in
form with a token of its own)."""

from __future__ import annotations

import base64
import io
import re
import secrets
from urllib.parse import urlencode
from typing import Annotated

import segno
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from facesearch.errors import Forbidden, NotAuthenticated, RateLimited
from facesearch.service import (
    BAND_WORDS,
    LEAD_LABEL,
    LEAD_NOTICE,
    MAX_NOTE_CHARS,
    SCORE_MEANING,
    AuditFilter,
    LAWFUL_BASES,
    record_in_words,
)
from facesearch.types import Actor
from facesearch.web.app import status_of
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
HOME = {"investigator": "/cases", "supervisor": "/supervisor", "admin": "/admin/users",
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
    response = render(request, "login.html", None, status=status, error=error, login_token=token,
                      providers=service_of(request).identity_providers())
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
    # A session that owes its second factor goes on to the code (or its set-up) first.
    response = back(HOME.get(actor.role, "/") if actor.stage == "full" else f"/login/{actor.stage}")
    set_session_cookie(request, response, token)
    # Remembers this browser for the user, so that a stranger's failures cannot lock them out.
    response.set_cookie(BROWSER_COOKIE, service.remember_browser(actor, browser), path="/login",
                        httponly=True, samesite="strict", secure=secure_cookies(request),
                        max_age=service.browser_days * 86400)
    return response


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure_cookies(request),
                        max_age=service_of(request).settings.session_hours * 3600)


# The second factor (service/signin.py): a session that has given its password only -------------

def pending(request: Request, stage: str) -> tuple[Actor, str] | Response:
    """The pending session's actor and CSRF token, or where to send a browser that is elsewhere
    in its log-in: the log-in form, the other second-factor page, or its start page."""
    service = service_of(request)
    found = service.pending_login(request.cookies.get(SESSION_COOKIE), client_of(request))
    if found is None:
        return back("/login")
    if found[0].stage != stage:
        return back(f"/login/{found[0].stage}")
    return found


def code_form(request: Request, stage: str, status: int = 200, error: str | None = None) -> Response:
    found = pending(request, stage)
    if isinstance(found, Response):
        return found
    actor, csrf = found
    if stage == "code":
        return render(request, "login_code.html", None, status=status, error=error,
                      user=actor, form_csrf=csrf)
    enrolment = service_of(request).begin_enrolment(request.cookies.get(SESSION_COOKIE, ""))
    response = render(request, "login_enrol.html", None, status=status, error=error, user=actor,
                      form_csrf=csrf, secret=enrolment.secret, uri=enrolment.uri,
                      qr=qr_svg(enrolment.uri))
    response.headers["Cache-Control"] = "no-store"  # the secret stays out of every cache
    return response


def qr_svg(uri: str) -> str:
    """The otpauth:// URI as an inline SVG QR code for a phone's camera (segno: no image file,
    no inline style, so the page's Content-Security-Policy holds)."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=5, xmldecl=False, svgns=True,
                                     title="QR code of your second-factor secret", svgclass="qr")
    return out.getvalue().decode()


def code_posted(request: Request, stage: str, csrf_token: str) -> tuple[Actor, str] | Response:
    found = pending(request, stage)
    if isinstance(found, Response):
        return found
    if not same_token(csrf_token, found[1]):
        try:
            service_of(request).refuse_request(found[0], "missing or wrong CSRF token",
                                               f"POST /login/{stage}")
        except Forbidden as exc:
            return code_form(request, stage, 403, exc.message)
    return found


@router.get("/login/code", response_class=HTMLResponse)
def second_factor_page(request: Request) -> Response:
    return code_form(request, "code")


@router.post("/login/code")
def second_factor(request: Request, code: Annotated[str, Form(max_length=40)],
                  csrf_token: Annotated[str, Form(max_length=100)] = "") -> Response:
    found = code_posted(request, "code", csrf_token)
    if isinstance(found, Response):
        return found
    try:
        actor, token = service_of(request).verify_second_factor(
            request.cookies.get(SESSION_COOKIE, ""), code, client_of(request))
    except (NotAuthenticated, RateLimited) as exc:
        return code_form(request, "code", status_of(exc), exc.message)
    response = back(HOME.get(actor.role, "/"))
    set_session_cookie(request, response, token)
    return response


@router.get("/login/enrol", response_class=HTMLResponse)
def enrolment_page(request: Request) -> Response:
    return code_form(request, "enrol")


@router.post("/login/enrol")
def enrol(request: Request, code: Annotated[str, Form(max_length=40)],
          csrf_token: Annotated[str, Form(max_length=100)] = "") -> Response:
    found = code_posted(request, "enrol", csrf_token)
    if isinstance(found, Response):
        return found
    try:
        actor, token, codes = service_of(request).confirm_enrolment(
            request.cookies.get(SESSION_COOKIE, ""), code, client_of(request))
    except (NotAuthenticated, RateLimited) as exc:
        return code_form(request, "enrol", status_of(exc), exc.message)
    request.state.csrf = found[1]  # the session's, for the page's log-out button
    # Shown this once: the service keeps only their hashes.
    response = render(request, "recovery_codes.html", actor, codes=codes,
                      next_page=HOME.get(actor.role, "/account"))
    response.headers["Cache-Control"] = "no-store"
    set_session_cookie(request, response, token)
    return response


# Agency sign-in (OpenID Connect) -------------------------------------------------------------

OIDC_COOKIE = "facesearch_oidc"  # the state of a sign-in in flight, bound to this browser


def oidc_callback_url(request: Request, provider: str) -> str:
    return f"{public_base(request)}/login/oidc/{provider}/callback"


@router.get("/login/oidc/{provider}")
def oidc_start(request: Request, provider: str) -> Response:
    url, state = service_of(request).oidc_begin(provider, oidc_callback_url(request, provider),
                                                 client_of(request))
    response = RedirectResponse(url, status_code=303)
    # Lax, not Strict: the provider sends the browser back from its own site. Only this browser
    # can finish the sign-in it started, so nobody can log it into their own account.
    response.set_cookie(OIDC_COOKIE, state, path="/login/oidc", httponly=True, samesite="lax",
                        secure=secure_cookies(request), max_age=600)
    return response


@router.get("/login/oidc/{provider}/callback")
def oidc_callback(request: Request, provider: str, state: Annotated[str, Query(max_length=100)] = "",
                  code: Annotated[str, Query(max_length=2000)] = "",
                  error: Annotated[str, Query(max_length=200)] = "") -> Response:
    if error or not code or not same_token(state, request.cookies.get(OIDC_COOKIE, "")):
        return login_form(request, 401, "the sign-in with your agency did not complete; try again")
    try:
        actor, token, _ = service_of(request).oidc_complete(
            provider, code, state, oidc_callback_url(request, provider), client_of(request))
    except NotAuthenticated as exc:
        return login_form(request, 401, exc.message)
    # A page, not a redirect: the browser arrived from the provider's site, so it would not send
    # the new SameSite=Strict cookie along a redirect; a navigation from this page it does.
    response = render(request, "signed_in.html", None, next_page=HOME.get(actor.role, "/account"))
    set_session_cookie(request, response, token)
    response.delete_cookie(OIDC_COOKIE, path="/login/oidc", httponly=True, samesite="lax",
                           secure=secure_cookies(request))
    return response


@router.post("/logout")
async def logout(request: Request, csrf_token: Annotated[str, Form(max_length=100)] = "") -> Response:
    service = service_of(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    # A session still owing its second factor authenticates nobody, yet ends here too.
    found = service.pending_login(token, client_of(request)) if token else None
    if found is None:
        actor = await current_actor(request)  # a full session, its CSRF token checked
    else:
        actor = found[0]
        if not same_token(csrf_token, found[1]):
            service.refuse_request(actor, "missing or wrong CSRF token", "POST /logout")
    service.logout(actor, token)
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
                  purposes=service.settings.search_purposes,
                  offence_types=service.settings.offence_types)


@router.post("/cases")
def open_case(request: Request, actor: Caller, number: Annotated[str, Form(max_length=100)],
              purpose: Annotated[str, Form(max_length=200)],
              offence_type: Annotated[str, Form(max_length=100)],
              authorisation: Annotated[str, Form(max_length=200)] = "",
              keep_probes: Annotated[bool, Form()] = False) -> Response:
    case = service_of(request).open_case(actor, number, purpose, authorisation, keep_probes,
                                         offence_type=offence_type)
    return back(f"/cases/{case.id}")


@router.get("/cases/{case_id}", response_class=HTMLResponse)
def case_page(request: Request, actor: Caller, case_id: RowId) -> HTMLResponse:
    service = service_of(request)
    case, searches = service.case_searches(actor, case_id)
    return render(request, "case.html", actor, case=case, searches=searches,
                  max_candidates=service.settings.max_candidates,
                  watches=service.case_watches(actor, case_id)[1],
                  watch_max_days=service.settings.watch_max_days)


@router.get("/cases/{case_id}/close", response_class=HTMLResponse)
def close_case_page(request: Request, actor: Caller, case_id: RowId) -> HTMLResponse:
    """The confirmation step before closing: what closing does, and a button that does it."""
    return render(request, "case_close.html", actor,
                  case=service_of(request).case_to_close(actor, case_id))


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
                 note: Annotated[str, Form(max_length=1000)] = "",
                 back_to: Annotated[str, Form(pattern="^/(watches|supervisor)$")] = "/watches") -> Response:
    service_of(request).decide_watch(actor, watch_id, decision == "approve", note)
    return back(back_to)


# A supervisor's home ------------------------------------------------------------------------------

@router.get("/supervisor", response_class=HTMLResponse)
def supervisor_home(request: Request, actor: Caller) -> HTMLResponse:
    """What waits for the supervisor's decision (investigators to approve, watches to decide)
    at the top, then their organisation's cases."""
    service = service_of(request)
    watches = service.pending_watches(actor)  # a supervisor's alone: refuses every other role
    pending = [u for u in service.users(actor) if u.status == "pending"]
    return render(request, "supervisor.html", actor, pending_users=pending, pending_watches=watches,
                  cases=service.list_cases(actor))


@router.get("/cases/{case_id}/searches/{search_id}", response_class=HTMLResponse)
def search_page(request: Request, actor: Caller, case_id: RowId, search_id: RowId,
                show: Annotated[str | None, Query(pattern="^rejected$")] = None) -> HTMLResponse:
    review = service_of(request).search_review(actor, case_id, search_id)
    # The groups name candidates by (probe face, rank); the page's anchors are candidate ids.
    anchors = {(c.probe_face, c.rank): c.id for c in review.search.candidates}
    return render(request, "search.html", actor, case=review.case, search=review.search,
                  groups=review.groups, provenance=review.provenance,
                  probe_crops=review.probe_crops, source_names=review.source_names,
                  anchors=anchors, notice=LEAD_NOTICE, lead_label=LEAD_LABEL,
                  score_meaning=SCORE_MEANING, band_words=BAND_WORDS,
                  show_rejected=show == "rejected")


@router.get("/cases/{case_id}/searches/{search_id}/candidates/{candidate_id}",
            response_class=HTMLResponse)
def compare_page(request: Request, actor: Caller, case_id: RowId, search_id: RowId,
                 candidate_id: RowId) -> HTMLResponse:
    compared = service_of(request).compare_candidate(actor, case_id, search_id, candidate_id)
    return render(request, "compare.html", actor, c=compared, lead_label=LEAD_LABEL,
                  notice=LEAD_NOTICE, band_words=BAND_WORDS)


# Where a review form returns to: a page of the case (the results page, the comparison view),
# never another site.
BACK_TO = r"^/cases/[0-9]+/[a-z0-9/]+(\?show=rejected)?$"


@router.post("/candidates/{candidate_id}/mark")
def mark(request: Request, actor: Caller, candidate_id: RowId,
         mark: Annotated[str, Form(pattern="^(possible|confirmed|rejected)$")],
         back_to: Annotated[str, Form(pattern=BACK_TO)],
         note: Annotated[str, Form(max_length=MAX_NOTE_CHARS)] = "") -> Response:
    service_of(request).mark_candidate(actor, candidate_id, mark, note)
    return back(f"{back_to}#candidate-{candidate_id}")


@router.post("/candidates/{candidate_id}/marks/{mark_id}/withdraw")
def withdraw_mark(request: Request, actor: Caller, candidate_id: RowId, mark_id: RowId,
                  back_to: Annotated[str, Form(pattern=BACK_TO)]) -> Response:
    service_of(request).withdraw_mark(actor, candidate_id, mark_id)
    return back(f"{back_to}#candidate-{candidate_id}")


@router.get("/cases/{case_id}/report", response_class=HTMLResponse)
def report_page(request: Request, actor: Caller, case_id: RowId) -> HTMLResponse:
    report = service_of(request).case_report(actor, case_id)
    # The probe crops inline (data: URLs), so the printed page needs no further request.
    probe_images: dict[int, list[tuple[int, str]]] = {s.id: [] for s in report.searches}
    for (search_id, face), jpeg in sorted(report.probe_crops.items()):
        probe_images[search_id].append(
            (face, "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")))
    return render(request, "report.html", actor, report=report, probe_images=probe_images)


# Administration ----------------------------------------------------------------------------------

@router.get("/admin/users", response_class=HTMLResponse)
def users_page(request: Request, actor: Caller) -> HTMLResponse:
    service = service_of(request)
    return render(request, "users.html", actor, users=service.users(actor),
                  roles=service.roles_creatable_by(actor),
                  providers=[p for p in service.identity_providers()
                             if p.organisation == actor.organisation],
                  deployment_organisation=service.settings.deployment_organisation.strip())


@router.post("/admin/users")
def create_user(request: Request, actor: Caller, username: Annotated[str, Form(max_length=100)],
                password: Annotated[str, Form(max_length=1000)],
                role: Annotated[str, Form(max_length=32)],
                organisation: Annotated[str, Form(max_length=200)]) -> Response:
    service_of(request).create_user(actor, username, password, role, organisation)
    return back("/admin/users")


@router.post("/admin/users/{user_id}/approve")
def approve_user(request: Request, actor: Caller, user_id: RowId,
                 back_to: Annotated[str, Form(pattern="^/(admin/users|supervisor)$")] = "/admin/users"
                 ) -> Response:
    service_of(request).approve_user(actor, user_id)
    return back(back_to)


@router.post("/admin/users/{user_id}/disable")
def disable_user(request: Request, actor: Caller, user_id: RowId) -> Response:
    service_of(request).disable_user(actor, user_id)
    return back("/admin/users")


@router.post("/admin/users/identity")
def link_identity(request: Request, actor: Caller, user_id: Annotated[int, Form(ge=1)],
                  provider: Annotated[str, Form(max_length=200)],
                  subject: Annotated[str, Form(max_length=255)] = "") -> Response:
    service_of(request).link_identity(actor, user_id, provider, subject)
    return back("/admin/users")


@router.post("/admin/users/{user_id}/reset-second-factor")
def reset_second_factor(request: Request, actor: Caller, user_id: RowId) -> Response:
    service_of(request).reset_second_factor(actor, user_id)
    return back("/admin/users")


@router.get("/admin/sources", response_class=HTMLResponse)
def sources_page(request: Request, actor: Caller) -> HTMLResponse:
    service = service_of(request)
    jobs = service.ingest_jobs(actor)
    return render(request, "sources.html", actor, sources=service.sources(actor), jobs=jobs,
                  running=any(j.status in ("queued", "running") for j in jobs),
                  lawful_bases=LAWFUL_BASES)


@router.post("/admin/sources")
def add_source(request: Request, actor: Caller, name: Annotated[str, Form(max_length=200)],
               lawful_basis: Annotated[str, Form(max_length=100)],
               jurisdiction: Annotated[str, Form(max_length=10)],
               description: Annotated[str, Form(max_length=2000)] = "",
               display_name: Annotated[str, Form(max_length=200)] = "") -> Response:
    service_of(request).add_source(actor, name, lawful_basis, jurisdiction, description,
                                   display_name=display_name)
    return back("/admin/sources")


@router.post("/admin/ingest")
def ingest(request: Request, actor: Caller, source: Annotated[str, Form(max_length=200)],
                 files: Annotated[list[UploadFile], File()]) -> Response:
    uploads = [(f.filename or "image", f.file.read()) for f in files]
    job = service_of(request).start_ingest_job(actor, source, uploads=uploads)
    return back(f"/admin/ingest-jobs/{job.id}")


@router.get("/admin/ingest-jobs/{job_id}", response_class=HTMLResponse)
def ingest_job_page(request: Request, actor: Caller, job_id: RowId) -> HTMLResponse:
    """One ingest job: its progress, refreshed while it runs, and its skipped files by reason."""
    job = service_of(request).ingest_jobs(actor, job_id)[0]
    return render(request, "ingest_job.html", actor, job=job,
                  running=job.status in ("queued", "running"))


@router.get("/admin/policy", response_class=HTMLResponse)
def policy_page(request: Request, actor: Caller) -> HTMLResponse:
    service = service_of(request)
    s = service.settings
    # Days each kind of data is kept, shown beside the policy in force (images: per source).
    retention = {"images of a new source (each source may set its own)": s.source_retention_days,
                 "kept probe photos": s.probe_retention_days,
                 "searches and their candidate lists": s.candidate_retention_days,
                 "audit records": s.audit_retention_days}
    return render(request, "policy.html", actor, policy=service.policy(actor), retention=retention)


# Audit -------------------------------------------------------------------------------------------

@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, actor: Caller, action: str | None = None,
               user: Annotated[str | None, Query(alias="actor")] = None,
               organisation: str | None = None, case: str | None = None,
               since: str | None = None, until: str | None = None, verify: bool = False,
               before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
               after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None) -> HTMLResponse:
    # The same query names as GET /api/v1/audit, so the export links carry the filters over.
    service = service_of(request)
    where = AuditFilter(actor=user or None, organisation=organisation or None, action=action or None,
                        case_number=case or None, since=since or None, until=until or None,
                        before=before, after=None if before else after)
    check = service.verify_audit(actor) if verify else None
    page = service.audit_page(actor, where)
    # The filters alone, for the export links and the links to older and newer pages.
    filters = urlencode({name: value for name, value in (
        ("action", action), ("actor", user), ("organisation", organisation), ("case", case),
        ("since", since), ("until", until)) if value})
    return render(request, "audit.html", actor, page=page, where=where, check=check,
                  filters=filters)


# Account ---------------------------------------------------------------------------------------------

@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request, actor: Caller) -> HTMLResponse:
    service = service_of(request)
    return render(request, "account.html", actor, keys=service.api_keys(actor),
                  second_factor=service.second_factor_status(actor))


@router.post("/account/keys", response_class=HTMLResponse)
def create_key(request: Request, actor: Caller, name: Annotated[str, Form(max_length=100)]) -> HTMLResponse:
    service = service_of(request)
    _, secret = service.create_api_key(actor, name)
    return render(request, "account.html", actor, keys=service.api_keys(actor), new_key=secret,
                  second_factor=service.second_factor_status(actor))


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
                  record=record_in_words(service_of(request).record_of_processing(actor)))


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
