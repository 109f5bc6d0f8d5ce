"""create_app(service): the ASGI app. Security headers, body limits, trusted proxies,
structured logs, metrics and the one mapping from domain errors to HTTP answers live here;
routes live in api.py, pages.py and public.py, and every decision they need is the service's."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import secrets
import sys
import threading
import time
import traceback
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from facesearch.config import Settings
from facesearch.errors import (
    BadImage,
    Busy,
    FacesearchError,
    Forbidden,
    InvalidRequest,
    NoFace,
    NotAuthenticated,
    NotFound,
    PolicyRefused,
    RateLimited,
    SecondFactorOwed,
)
from facesearch.service import (
    FaceSearchService,
    build_service,
    days_in_words,
    hours_in_words,
    lawful_basis_in_words,
    readable_place,
)
from facesearch.types import Actor
from facesearch.web.dates import when
from facesearch.web.metrics import Metrics, known_method

HERE = Path(__file__).parent
STATUS = {Busy: 503, NotAuthenticated: 401, Forbidden: 403, PolicyRefused: 403, NotFound: 404,
          RateLimited: 429, BadImage: 422, NoFace: 422, InvalidRequest: 422}
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; "
     b"style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
     b"form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
log = logging.getLogger("facesearch.http")


def status_of(error: FacesearchError) -> int:
    """The HTTP status a domain error is answered with."""
    return next((s for kind, s in STATUS.items() if isinstance(error, kind)), 400)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line. Records carry ids, routes and timings, never names, images,
    addresses or query strings: personal data belongs in the audit trail, not in logs. An
    error is logged as its class (and its causes' classes) with the file:line frames of its
    traceback, never its message: a database error's message holds the statement's parameters."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
                 "logger": record.name, "event": record.getMessage().strip()}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[1] is not None:
            entry.update(error_fields(record.exc_info[1]))
        return json.dumps(entry, default=str)


def error_fields(error: BaseException) -> dict[str, object]:
    causes, seen = [], error.__cause__ or error.__context__
    while seen is not None and len(causes) < 5:
        causes.append(_class_name(seen))
        seen = seen.__cause__ or seen.__context__
    frames = [f"{'/'.join(Path(f.filename).parts[-2:])}:{f.lineno}"
              for f in traceback.extract_tb(error.__traceback__)][-20:]
    return {"error": _class_name(error), "causes": causes, "frames": frames}


def _class_name(error: BaseException) -> str:
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def log_config() -> dict:
    """The logging set-up of `facesearch serve`, uvicorn's loggers included (it applies this in
    every worker process): every line on stderr one JSON object."""
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonLogFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "json"}},
        "root": {"handlers": ["stderr"], "level": "WARNING"},
        "loggers": {**{name: {"level": "INFO", "handlers": [], "propagate": True}
                       for name in ("facesearch", "uvicorn", "uvicorn.error")},
                    # Access lines hold addresses and paths (one-time tokens): none at all.
                    "uvicorn.access": {"handlers": [], "propagate": False}},
    }


def configure_logging() -> None:
    """JSON logs for this process; warnings and errors that escape a thread go there too,
    instead of a plain traceback on stderr."""
    logging.config.dictConfig(log_config())
    logging.captureWarnings(True)
    errors = logging.getLogger("facesearch.errors")

    def thread_error(info: threading.ExceptHookArgs) -> None:
        if info.exc_value is not None and not isinstance(info.exc_value, SystemExit):
            errors.error("unhandled error in a thread",
                         exc_info=(info.exc_type, info.exc_value, info.exc_traceback))

    def process_error(kind: type[BaseException], value: BaseException,
                      trace: TracebackType | None) -> None:
        errors.error("unhandled error", exc_info=(kind, value, trace))

    threading.excepthook = thread_error
    sys.excepthook = process_error


class BodyTooLarge(StarletteHTTPException):
    """Raised by the counting receive once a body has passed the limit: answered 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the {limit}-byte limit")


class Guard:
    """Pure ASGI middleware: bounds request bodies, adds security headers, times and logs each
    request, and counts it for /metrics.

    A body is bounded by the bytes actually received, whatever its headers say: a
    Content-Length over the limit is refused before anything is read, a request with both
    Content-Length and Transfer-Encoding (a smuggling pattern, and how a short length once let
    a long chunked body through) is refused outright, and every body is counted as it arrives,
    so that a chunked or lying one stops at the limit (413)."""

    def __init__(self, app, max_body: int, metrics: Metrics) -> None:  # noqa: ANN001
        self.app, self.max_body, self.metrics = app, max_body, metrics

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope.setdefault("state", {})["request_id"] = request_id = secrets.token_hex(8)
        status = {"code": 500}
        names = {name for name, _ in scope["headers"]}
        length = dict(scope["headers"]).get(b"content-length")
        refusal = None
        if b"content-length" in names and b"transfer-encoding" in names:
            refusal = (400, "bad_request", "send Content-Length or Transfer-Encoding, not both")
        elif length is not None and (not length.isdigit() or int(length) > self.max_body):
            refusal = (413, "payload_too_large", f"the request body is over the {self.max_body}-byte limit")
        if refusal:
            await _plain(send, *refusal)
            self._done(scope, refusal[0], started, request_id)
            return
        received = 0

        async def counted_receive():  # noqa: ANN202
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def send_with_headers(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                extra = list(SECURITY_HEADERS)
                if not scope["path"].startswith("/static/"):
                    extra.append((b"cache-control", b"no-store"))
                extra.append((b"x-request-id", request_id.encode()))
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        try:
            await self.app(scope, counted_receive, send_with_headers)
        finally:
            self._done(scope, status["code"], started, request_id)

    def _done(self, scope, status: int, started: float, request_id: str) -> None:  # noqa: ANN001
        route = getattr(scope.get("route"), "path", "unmatched")
        seconds = time.perf_counter() - started
        self.metrics.request(scope["method"], route, status, seconds)
        log.info("request", extra={"fields": {
            "request_id": request_id, "method": known_method(scope["method"]), "route": route,
            "status": status, "ms": round(seconds * 1000, 1),
            "user_id": scope.get("state", {}).get("user_id")}})


async def _plain(send, status: int, code: str, message: str) -> None:  # noqa: ANN001
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())] + SECURITY_HEADERS})
    await send({"type": "http.response.body", "body": body})


def wants_json(request: Request) -> bool:
    return request.url.path.startswith(("/api/", "/metrics"))


def create_app(service: FaceSearchService, close_on_shutdown: bool = False) -> FastAPI:
    from facesearch.web import api, auth, pages, public

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # noqa: ANN202
        minutes = service.settings.retention_interval_minutes
        scheduler = asyncio.create_task(run_retention_every(service, minutes)) if (
            close_on_shutdown and minutes > 0) else None
        yield
        if scheduler:
            scheduler.cancel()
        if close_on_shutdown:
            service.close()  # waits for a running ingest job to finish its current image

    app = FastAPI(title="facesearch", version="1", docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Face search with provenance. Every call needs an API key "
                  "(`Authorization: Bearer fsk_...`) or a browser session; candidates are "
                  "investigative leads for human review, never identifications.")
    app.state.service = service
    # Starlette spools uploads over 1 MiB to temporary files; keep them in memory up to the
    # body limit so that a probe photo never touches the disk unless its case asks for that.
    # What that costs is bounded: uploads are read only from known callers, or from strangers
    # in one of a few slots (auth.GuardedRoute).
    MultiPartParser.spool_max_size = service.settings.max_upload_bytes
    app.state.public_uploads = asyncio.Semaphore(service.settings.public_uploads_at_once)
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.state.templates.env.filters["when"] = when
    app.state.templates.env.filters["place"] = readable_place  # an image's location, no server path
    # Policy in words and units (service.words), on every page that shows it.
    app.state.templates.env.filters.update(lawful_basis=lawful_basis_in_words, days=days_in_words,
                                           hours=hours_in_words)
    app.state.metrics = metrics = Metrics(service)
    service.ingest_listeners.append(metrics.ingest_progress)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(api.router)
    app.include_router(api.operations)
    app.include_router(public.router)
    app.include_router(pages.router)

    def error_response(request: Request, status: int, code: str, message: str,
                       headers: dict | None = None) -> Response:
        if wants_json(request):
            return JSONResponse({"error": {"code": code, "message": message}}, status, headers)
        if status == 401:  # a browser gets the log-in form, still answered 401
            return pages.login_form(request, 401, message)
        return app.state.templates.TemplateResponse(
            request, "error.html", {"status": status, "message": message,
                                    "actor": getattr(request.state, "actor", None),
                                    "csrf": getattr(request.state, "csrf", None),
                                    "back": request.headers.get("referer", "")},
            status_code=status, headers=headers)

    async def signed_in_visitor(request: Request) -> None:
        """On a missing page, who is signed in, so that the page keeps their menu: a route
        that does not exist authenticated nobody. Only a browser's GET with a session cookie
        is looked up (a visitor without one is no refusal to audit); a cookie that does not
        sign anyone in leaves the page anonymous."""
        if (request.method not in ("GET", "HEAD") or wants_json(request)
                or getattr(request.state, "actor", None) is not None
                or not request.cookies.get(auth.SESSION_COOKIE)):
            return
        try:
            await auth.current_actor(request)
        except FacesearchError:
            pass  # an expired or unknown session: the anonymous page, refusal audited

    @app.exception_handler(FacesearchError)
    async def domain_error(request: Request, exc: FacesearchError) -> Response:
        if isinstance(exc, SecondFactorOwed) and not wants_json(request):
            return pages.back(f"/login/{exc.stage}")  # a browser finishes its log-in first
        status = status_of(exc)
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
        return error_response(request, status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(request, 422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc, BodyTooLarge):
            return error_response(request, 413, "payload_too_large", exc.detail)
        messages = {404: "no such page", 405: "method not allowed"}
        if exc.status_code in (404, 405):
            await signed_in_visitor(request)
        return error_response(request, exc.status_code, "http_error",
                              messages.get(exc.status_code, "request refused"), exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"fields": {
            "request_id": request.scope.get("state", {}).get("request_id")}})
        return error_response(request, 500, "internal_error",
                              "something went wrong on our side; the request id is in X-Request-Id")

    guarded = Guard(app, service.settings.max_upload_bytes, metrics)
    if service.settings.trusted_proxies:
        # Outermost, so that every layer, the service's rate limits and audit included, sees
        # the client the proxy forwarded (the right-most address it did not add itself).
        return ProxyHeadersMiddleware(guarded, service.settings.trusted_proxies)  # type: ignore[return-value]
    return guarded  # type: ignore[return-value]


SCHEDULER = Actor(name="retention-scheduler", role="operator", client="scheduler")


async def run_retention_every(service: FaceSearchService, minutes: int) -> None:
    """The retention job, at start and then every `minutes`, in a worker thread."""
    while True:
        try:
            report = await run_in_threadpool(service.run_retention, SCHEDULER)
            log.info("retention", extra={"fields": report.__dict__})
        except Exception:  # noqa: BLE001 - a failed run is logged and tried again next time
            log.exception("retention failed")
        await asyncio.sleep(minutes * 60)


def app_from_environment():  # noqa: ANN201
    """The factory `facesearch serve` hands to uvicorn: settings from FACESEARCH_* variables."""
    configure_logging()
    service = build_service(Settings())
    service.check_ready_to_serve()
    service.recover_jobs()
    return create_app(service, close_on_shutdown=True)
