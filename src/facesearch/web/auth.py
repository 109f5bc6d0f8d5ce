"""Who is calling: an API key (`Authorization: Bearer fsk_...`) or a session cookie, resolved
by the service. Requests that change something with a cookie must carry its CSRF token, and
no request body is read before it may be: see GuardedRoute."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Request, params
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.responses import Response

from facesearch.errors import Busy
from facesearch.service import FaceSearchService
from facesearch.types import Actor

SESSION_COOKIE = "facesearch_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Form limits (fields, files, bytes of one field; files are bounded by the body limit). Known
# callers' forms are the largest (a crawl's seed list); anonymous ones hold a name, a password,
# a contact address and a token at most, and a file only where the route takes one (in an
# upload slot): elsewhere a file part is refused (400) at its headers, before its bytes are
# read, since a file part is held in memory up to the body limit (see create_app).
CALLER_FORM = {"max_fields": 100, "max_files": 1000, "max_part_size": 1024 * 1024}
PUBLIC_UPLOAD_FORM = {"max_fields": 10, "max_files": 2, "max_part_size": 8 * 1024}
PUBLIC_FORM = {"max_fields": 10, "max_files": 0, "max_part_size": 8 * 1024}


def service_of(request: Request) -> FaceSearchService:
    return request.app.state.service


def client_of(request: Request) -> str:
    """The client's address: the peer's, or where the peer is a trusted proxy, the one it
    forwarded (the app's proxy-headers middleware has put it in place)."""
    return request.client.host if request.client else "unknown"


def secure_cookies(request: Request) -> bool:
    """Whether cookies get Secure: the public URL is https, or this request came over https."""
    return service_of(request).settings.public_url.startswith("https://") or (
        request.url.scheme == "https")


def public_base(request: Request) -> str:
    """The base of absolute links: the public URL where one is set, else this request's."""
    return service_of(request).settings.public_url or str(request.base_url).rstrip("/")


def same_token(sent: object, expected: str) -> bool:
    """Constant-time comparison of a submitted token; anything but a string is wrong."""
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), expected.encode())


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


async def read_form(request: Request, limits: dict[str, int]) -> FormData | None:
    """The request's form, parsed once within limits (FastAPI reuses it); None for other bodies."""
    if "form" not in request.headers.get("content-type", ""):
        return None
    return await request.form(**limits)


async def current_actor(request: Request) -> Actor:
    """The authenticated actor; NotAuthenticated (401) or Forbidden (403), audited, if not."""
    known = getattr(request.state, "caller", None)
    if known is not None:  # GuardedRoute authenticated this request before its body was read
        return known
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
        if sent is None:
            form = await read_form(request, CALLER_FORM)
            sent = form.get(CSRF_FIELD) if form is not None else None
        if not same_token(sent, csrf):
            service.refuse_request(actor, "missing or wrong CSRF token", target)
    request.state.caller = actor
    return actor


def _needs_caller(dependant: Dependant) -> bool:
    return any(d.call is current_actor or _needs_caller(d) for d in dependant.dependencies)


class GuardedRoute(APIRoute):
    """A route that reads its body only when it may. FastAPI parses a body before it runs any
    dependency, so a route that needs a caller would read (and hold) an anonymous upload before
    refusing it: here it authenticates first. A public route that takes files waits for none:
    it takes one of FACESEARCH_PUBLIC_UPLOADS_AT_ONCE slots or is answered 503 at once, so that
    strangers' uploads held in memory stay few; a public route that takes none reads no file
    (PUBLIC_FORM). A body is never read for a GET or HEAD, nor for a route that takes none.
    Forms are parsed within limits either way."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        needs_caller = _needs_caller(self.dependant)
        takes_body = self.body_field is not None  # its own parameters or its dependencies'
        takes_files = any(isinstance(f.field_info, params.File) for f in self.dependant.body_params)

        async def guarded(request: Request) -> Response:
            reads_body = takes_body and request.method not in SAFE_METHODS
            if needs_caller:
                await current_actor(request)
                if reads_body:
                    await read_form(request, CALLER_FORM)
                return await handler(request)
            if not takes_files:
                if reads_body:
                    await read_form(request, PUBLIC_FORM)
                return await handler(request)
            slots = request.app.state.public_uploads
            if slots.locked():
                raise Busy("too many uploads at once; try again in a minute", 60)
            async with slots:
                await read_form(request, PUBLIC_UPLOAD_FORM)
                return await handler(request)

        return guarded
