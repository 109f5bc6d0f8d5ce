"""Who is calling: an API key (`Authorization: Bearer fsk_...`) or a session cookie, resolved
by the service. Requests that change something with a cookie must carry its CSRF token."""

from __future__ import annotations

import hmac

from fastapi import Request

from facesearch.service import FaceSearchService
from facesearch.types import Actor

SESSION_COOKIE = "facesearch_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def service_of(request: Request) -> FaceSearchService:
    return request.app.state.service


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


async def current_actor(request: Request) -> Actor:
    """The authenticated actor; NotAuthenticated (401) or Forbidden (403), audited, if not."""
    service = service_of(request)
    api_key = bearer_key(request)
    target = f"{request.method} {request.url.path}"
    actor, csrf = service.authenticate(
        client_of(request), api_key=api_key,
        session_token=None if api_key else request.cookies.get(SESSION_COOKIE), target=target)
    request.state.user_id = actor.user_id
    request.state.actor = actor  # error pages keep the header and log-out button
    request.state.csrf = csrf
    if csrf is not None and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and "form" in request.headers.get("content-type", ""):
            sent = (await request.form()).get(CSRF_FIELD)
        if not isinstance(sent, str) or not hmac.compare_digest(sent, csrf):
            service.refuse_request(actor, "missing or wrong CSRF token", target)
    return actor
