"""The public pages and API for data subjects: opt-out by selfie (hidden at once, erased once a
second photo confirms it), access requests and the one-time access report (a page with a button:
opening the link spends nothing, the POST does). No log-in; each client address is limited by
the service. Also the data-protection officer's review of opt-outs, which can reverse one not
yet confirmed, and decides on the faces only near an opt-out's selfie (erase or dismiss each)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from facesearch.errors import FacesearchError, NotFound, RateLimited
from facesearch.types import Actor
from facesearch.web import pages
from facesearch.web.api import RowId
from facesearch.web.app import status_of
from facesearch.web.auth import GuardedRoute, client_of, current_actor, service_of

router = APIRouter(route_class=GuardedRoute)  # uploads read only when they may be (auth.py)
Caller = Annotated[Actor, Depends(current_actor)]
Token = Annotated[str, Form(min_length=1, max_length=200)]
Contact = Annotated[str, Form(max_length=500)]
Shown = Annotated[str, Form(max_length=40)]  # echoed back onto the page, never trusted
# A refusal's heading, by error code, in the words of someone who sent a photo.
REFUSAL_TITLES = {"no_face": "We could not find a face in your photo",
                  "bad_image": "We could not read this file",
                  "invalid_request": "This photo cannot be used",
                  "rate_limited": "Too many tries from your connection",
                  "busy": "Too many people are sending photos right now",
                  "not_found": "This page has expired"}


def render(request: Request, template: str, status: int = 200, **context: object) -> HTMLResponse:
    return pages.render(request, template, None, status, **context)  # nobody logged in


def refused(request: Request, error: FacesearchError, again: str, **context: object) -> HTMLResponse:
    """A public form's refusal in plain words, with the way back (again) to try another photo;
    answered with the status the API gives the same refusal."""
    response = render(request, context.pop("template", "public_refused.html"), status_of(error),
                      error=error, title=REFUSAL_TITLES.get(error.code, "We could not do this"),
                      again=again, controller=service_of(request).settings.controller, **context)
    if isinstance(error, RateLimited):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


# Pages ---------------------------------------------------------------------------------------

@router.get("/opt-out", response_class=HTMLResponse, include_in_schema=False)
def opt_out_page(request: Request) -> HTMLResponse:
    return render(request, "opt_out.html")


@router.post("/opt-out", response_class=HTMLResponse, include_in_schema=False)
def opt_out_form(request: Request, selfie: Annotated[UploadFile, File()]) -> HTMLResponse:
    service = service_of(request)
    try:
        pending = service.opt_out(client_of(request), selfie.file.read())
    except FacesearchError as error:
        return refused(request, error, "/opt-out")
    return render(request, "opt_out_confirm.html", pending=pending,
                  mails_receipts=service.mails_receipts, controller=service.settings.controller)


@router.post("/opt-out/confirm", response_class=HTMLResponse, include_in_schema=False)
def opt_out_confirm_form(request: Request, token: Token, selfie: Annotated[UploadFile, File()],
                         contact: Contact = "", request_id: Shown = "",
                         confirm_by: Shown = "") -> HTMLResponse:
    service = service_of(request)
    try:
        receipt = service.confirm_opt_out(client_of(request), token, selfie.file.read(), contact)
    except NotFound as error:  # expired or used: only starting again helps
        return refused(request, error, "/opt-out")
    except FacesearchError as error:  # the confirmation still works: the same page, once more
        return refused(request, error, "#second-selfie", template="opt_out_confirm.html",
                       pending={"request_id": request_id, "confirm_token": token,
                                "confirm_by": confirm_by},
                       mails_receipts=service.mails_receipts)
    return render(request, "receipt.html", receipt=receipt)


@router.get("/access", response_class=HTMLResponse, include_in_schema=False)
def access_page(request: Request) -> HTMLResponse:
    return render(request, "access.html")


@router.post("/access", response_class=HTMLResponse, include_in_schema=False)
def access_form(request: Request, selfie: Annotated[UploadFile, File()],
                contact: Annotated[str, Form(min_length=1, max_length=500)]) -> HTMLResponse:
    try:
        ack = service_of(request).request_access(client_of(request), selfie.file.read(), contact)
    except FacesearchError as error:
        return refused(request, error, "/access")
    return render(request, "access_ack.html", ack=ack)


@router.get("/access/status", response_class=HTMLResponse, include_in_schema=False)
def request_status_page(request: Request, number: str = "") -> HTMLResponse:
    """A form for a request number; with one, that request's status (counted against the
    address's allowance, like every public look-up)."""
    if not number.strip():
        return render(request, "access_status.html", number="", found=None, error=None)
    try:
        found = service_of(request).request_status(client_of(request), number[:100])
    except (NotFound, RateLimited) as error:
        return render(request, "access_status.html", status_of(error), number=number[:100],
                      found=None, error=error)
    return render(request, "access_status.html", number=found.request_id, found=found, error=None)


@router.get("/access/report/{token}", response_class=HTMLResponse, include_in_schema=False)
def access_link_page(request: Request, token: str) -> HTMLResponse:
    try:
        link = service_of(request).access_link(client_of(request), token)
    except NotFound as error:
        return spent_link(request, error)
    return render(request, "access_link.html", link=link)


@router.post("/access/report/{token}", response_class=HTMLResponse, include_in_schema=False)
def access_report_page(request: Request, token: str) -> HTMLResponse:
    try:
        report = service_of(request).access_report(client_of(request), token)
    except NotFound as error:
        return spent_link(request, error)
    return render(request, "access_report.html", report=report)


def spent_link(request: Request, error: NotFound) -> HTMLResponse:
    """A used or expired report link: what the person can do next, not a bare error."""
    return render(request, "access_spent.html", 404, error=error,
                  controller=service_of(request).settings.controller)


# API -------------------------------------------------------------------------------------------

@router.post("/api/v1/public/opt-out", tags=["public"], status_code=202)
def opt_out(request: Request, selfie: Annotated[UploadFile, File()]) -> dict:
    """Hide the person in the selfie from every search and from collection at once, and
    return a confirm_token: a second, new photo of them sent to
    `/api/v1/public/opt-out/confirm` before confirm_by erases their faces for good. The
    selfie is not stored."""
    return asdict(service_of(request).opt_out(client_of(request), selfie.file.read()))


@router.post("/api/v1/public/opt-out/confirm", tags=["public"], status_code=201)
def confirm_opt_out(request: Request, token: Token, selfie: Annotated[UploadFile, File()],
                    contact: Contact = "") -> dict:
    """Erase every indexed face of the person of an opt-out, given a second photo of them
    (not the first again). The receipt gives a reference, counts and the date. Where the
    deployment mails receipts, a copy goes to the email address in contact (optional), which
    is not kept; `mailed` says whether it went."""
    return asdict(service_of(request).confirm_opt_out(client_of(request), token,
                                                      selfie.file.read(), contact))


@router.post("/api/v1/public/access-requests", tags=["public"], status_code=202)
def request_access(request: Request, selfie: Annotated[UploadFile, File()],
                   contact: Annotated[str, Form(min_length=1, max_length=500)]) -> dict:
    """Ask what is held about the person in the selfie; the data-protection officer answers
    within a month through a one-time link sent to the contact address."""
    return asdict(service_of(request).request_access(client_of(request), selfie.file.read(), contact))


@router.get("/api/v1/public/requests/{number}", tags=["public"])
def request_status(request: Request, number: str) -> dict:
    """The status of an access request or opt-out by its request number (on the receipt):
    received, the answer date of an access request and the status in words; nothing else.
    Counted against the address's hourly allowance."""
    return asdict(service_of(request).request_status(client_of(request), number[:100]))


@router.post("/api/v1/public/access-reports/{token}", tags=["public"])
def access_report(request: Request, token: str) -> dict:
    """The access report behind a one-time link; the link is dead afterwards."""
    return asdict(service_of(request).access_report(client_of(request), token))


# The data-protection officer's review of opt-outs ------------------------------------------------

class Reinstatement(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)


class ReviewDecision(BaseModel):
    erase: list[int] = Field(default_factory=list, max_length=10_000)
    dismiss: list[int] = Field(default_factory=list, max_length=10_000)


@router.get("/dpo/opt-outs", response_class=HTMLResponse, include_in_schema=False)
def opt_outs_page(request: Request, actor: Caller) -> HTMLResponse:
    service = service_of(request)
    return pages.render(request, "dpo_opt_outs.html", actor, opt_outs=service.opt_outs(actor),
                        reviews=service.opt_out_reviews(actor))


@router.post("/dpo/opt-outs/{request_id}/review", include_in_schema=False)
def review_form(request: Request, actor: Caller, request_id: RowId,
                listed: Annotated[list[int] | None, Form()] = None,
                erase: Annotated[list[int] | None, Form()] = None) -> RedirectResponse:
    # Each listed face is a checkbox: ticked ones are the requester's, the rest are dismissed.
    chosen = set(erase or ())
    service_of(request).decide_opt_out_review(actor, request_id, sorted(chosen),
                                              sorted(set(listed or ()) - chosen))
    return pages.back("/dpo/opt-outs")


@router.get("/dpo/opt-outs/{request_id}/faces/{face_id}/crop", include_in_schema=False)
def review_crop(request: Request, actor: Caller, request_id: RowId, face_id: RowId) -> Response:
    return Response(service_of(request).opt_out_review_crop(actor, request_id, face_id),
                    media_type="image/jpeg", headers={"cache-control": "no-store"})


@router.post("/dpo/opt-outs/{request_id}/reinstate", include_in_schema=False)
def reinstate_form(request: Request, actor: Caller, request_id: RowId,
                   reason: Annotated[str, Form(min_length=1, max_length=1000)]) -> RedirectResponse:
    service_of(request).reinstate_opt_out(actor, request_id, reason)
    return pages.back("/dpo/opt-outs")


@router.get("/api/v1/opt-outs", tags=["data protection"])
def opt_outs(request: Request, actor: Caller) -> list[dict]:
    """Opt-outs, newest first: status hidden (awaiting the requester's second photo), done
    (erased) or reinstated; client is the pseudonym the audit trail uses."""
    return [asdict(o) for o in service_of(request).opt_outs(actor)]


@router.get("/api/v1/opt-outs/reviews", tags=["data protection"])
def opt_out_reviews(request: Request, actor: Caller) -> list[dict]:
    """Confirmed opt-outs with faces beyond the strict cut-off but within the search cut-off
    of the person's selfie, each with its distance, expected strangers at least as close and
    band: the officer decides whether each is the requester's."""
    return [asdict(r) for r in service_of(request).opt_out_reviews(actor)]


@router.post("/api/v1/opt-outs/{request_id}/review", tags=["data protection"])
def decide_review(request: Request, actor: Caller, request_id: RowId, body: ReviewDecision) -> dict:
    """Erase the listed faces that are the requester's and dismiss the others (every listed
    face decided); the opt-out is then done."""
    erased = service_of(request).decide_opt_out_review(actor, request_id, body.erase, body.dismiss)
    return {"status": "done", "faces_erased": erased}


@router.post("/api/v1/opt-outs/{request_id}/reinstate", tags=["data protection"])
def reinstate(request: Request, actor: Caller, request_id: RowId, body: Reinstatement) -> dict:
    """Reverse a disputed opt-out not yet confirmed: the person is found and collected again."""
    service_of(request).reinstate_opt_out(actor, request_id, body.reason)
    return {"status": "reinstated"}
