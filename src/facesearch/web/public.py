"""The public pages and API for data subjects: opt-out by selfie, access requests and the
one-time access report. No log-in; each client address is limited by the service."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse

from facesearch.web import pages
from facesearch.web.auth import client_of, service_of

router = APIRouter()


def render(request: Request, template: str, **context: object) -> HTMLResponse:
    return pages.render(request, template, None, **context)  # nobody logged in


# Pages ---------------------------------------------------------------------------------------

@router.get("/opt-out", response_class=HTMLResponse, include_in_schema=False)
def opt_out_page(request: Request) -> HTMLResponse:
    return render(request, "opt_out.html", mails_receipts=service_of(request).mails_receipts)


@router.post("/opt-out", response_class=HTMLResponse, include_in_schema=False)
def opt_out_form(request: Request, selfie: Annotated[UploadFile, File()],
                 contact: Annotated[str, Form(max_length=500)] = "") -> HTMLResponse:
    receipt = service_of(request).opt_out(client_of(request), selfie.file.read(), contact)
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
def access_report_page(request: Request, token: str) -> HTMLResponse:
    report = service_of(request).access_report(client_of(request), token)
    return render(request, "access_report.html", report=report)


# API -------------------------------------------------------------------------------------------

@router.post("/api/v1/public/opt-out", tags=["public"], status_code=201)
def opt_out(request: Request, selfie: Annotated[UploadFile, File()],
            contact: Annotated[str, Form(max_length=500)] = "") -> dict:
    """Erase every indexed face of the person in the selfie and keep them out for good. The
    selfie is not stored; the receipt gives a reference, counts and the date. Where the
    deployment mails receipts, a copy goes to the email address in contact (optional), which
    is not kept; `mailed` says whether it went."""
    return asdict(service_of(request).opt_out(client_of(request), selfie.file.read(), contact))


@router.post("/api/v1/public/access-requests", tags=["public"], status_code=202)
def request_access(request: Request, selfie: Annotated[UploadFile, File()],
                   contact: Annotated[str, Form(min_length=1, max_length=500)]) -> dict:
    """Ask what is held about the person in the selfie; the data-protection officer answers
    within a month through a one-time link sent to the contact address."""
    return asdict(service_of(request).request_access(client_of(request), selfie.file.read(), contact))


@router.get("/api/v1/public/access-reports/{token}", tags=["public"])
def access_report(request: Request, token: str) -> dict:
    """The access report behind a one-time link; the link is dead afterwards."""
    return asdict(service_of(request).access_report(client_of(request), token))
