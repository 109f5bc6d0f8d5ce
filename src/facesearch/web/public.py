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

from facesearch.types import Actor
from facesearch.web import pages
from facesearch.web.api import RowId
from facesearch.web.auth import GuardedRoute, client_of, current_actor, service_of

router = APIRouter(route_class=GuardedRoute)  # uploads read only when they may be (auth.py)
Caller = Annotated[Actor, Depends(current_actor)]
Token = Annotated[str, Form(min_length=1, max_length=200)]
Contact = Annotated[str, Form(max_length=500)]


def render(request: Request, template: str, **context: object) -> HTMLResponse:
    return pages.render(request, template, None, **context)  # nobody logged in


# Pages ---------------------------------------------------------------------------------------

@router.get("/opt-out", response_class=HTMLResponse, include_in_schema=False)
def opt_out_page(request: Request) -> HTMLResponse:
    return render(request, "opt_out.html")


@router.post("/opt-out", response_class=HTMLResponse, include_in_schema=False)
def opt_out_form(request: Request, selfie: Annotated[UploadFile, File()]) -> HTMLResponse:
    service = service_of(request)
    pending = service.opt_out(client_of(request), selfie.file.read())
    return render(request, "opt_out_confirm.html", pending=pending,
                  mails_receipts=service.mails_receipts)


@router.post("/opt-out/confirm", response_class=HTMLResponse, include_in_schema=False)
def opt_out_confirm_form(request: Request, token: Token, selfie: Annotated[UploadFile, File()],
                         contact: Contact = "") -> HTMLResponse:
    receipt = service_of(request).confirm_opt_out(client_of(request), token, selfie.file.read(),
                                                  contact)
    return render(request, "receipt.html", receipt=receipt)


@router.get("/access", response_class=HTMLResponse, include_in_schema=False)
def access_page(request: Request) -> HTMLResponse:
    return render(request, "access.html")


@router.post("/access", response_class=HTMLResponse, include_in_schema=False)
def access_form(request: Request, selfie: Annotated[UploadFile, File()],
                contact: Annotated[str, Form(min_length=1, max_length=500)]) -> HTMLResponse:
    ack = service_of(request).request_access(client_of(request), selfie.file.read(), contact)
    return render(request, "access_ack.html", ack=ack)


@router.get("/access/report/{token}", response_class=HTMLResponse, include_in_schema=False)
def access_link_page(request: Request, token: str) -> HTMLResponse:
    link = service_of(request).access_link(client_of(request), token)
    return render(request, "access_link.html", link=link)


@router.post("/access/report/{token}", response_class=HTMLResponse, include_in_schema=False)
def access_report_page(request: Request, token: str) -> HTMLResponse:
    report = service_of(request).access_report(client_of(request), token)
    return render(request, "access_report.html", report=report)


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
