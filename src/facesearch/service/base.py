"""What every use case shares: settings, stores, the clock, and the authorise-or-refuse and
audit helpers through which every policy decision is checked and recorded."""

from __future__ import annotations

import hashlib
import ipaddress
import smtplib
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage

from sqlalchemy.engine import Connection

from facesearch.config import Settings
from facesearch.errors import Forbidden, NotAuthenticated, PolicyRefused
from facesearch.policy.roles import allowed
from facesearch.store.accounts import AccountStore
from facesearch.store.audit import AuditStore, load_key
from facesearch.store.cases import Case, CaseStore
from facesearch.store.crawl import CrawlStore
from facesearch.store.crops import CropStore
from facesearch.store.files import private_directory
from facesearch.store.identities import IdentityStore
from facesearch.store.metadata import MetadataStore
from facesearch.store.requests import RequestStore
from facesearch.store.watches import WatchStore
from facesearch.types import Actor

Clock = Callable[[], datetime]
SMTP_TIMEOUT = 10  # seconds
REFUSAL_WINDOW = timedelta(hours=1)  # one audit record per client, action and window


def client_key(client: str) -> str:
    """What per-client limits count by: an IPv6 address's /64 (a single subscriber is given a
    whole /64 and can move freely inside it), any other client as it is."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if address.version == 4:
        return str(address)
    if address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


def client_hash(client: str) -> str:
    """Per-client limits need to recognise a client again, not to know it."""
    return hashlib.sha256(f"facesearch-client:{client_key(client)}".encode()).hexdigest()


class Stopping(Exception):
    """The service is closing: raised in a background job, between batches, to end it."""


def system_clock() -> datetime:
    return datetime.now(timezone.utc)


class ServiceBase:
    def __init__(self, settings: Settings, clock: Clock = system_clock) -> None:
        self.settings = settings
        self.clock = clock
        private_directory(settings.home)  # biometric data: owner-only, whatever the umask
        self.store = MetadataStore(settings.metadata_url, self.now)
        self.accounts = AccountStore(self.store.engine)
        self.cases = CaseStore(self.store.engine)
        self.trail = AuditStore(self.store.engine, lambda: load_key(
            settings.audit_key.get_secret_value(), settings.audit_key_path))
        self.requests = RequestStore(self.store.engine)
        self.crawls = CrawlStore(self.store.engine)
        self.identities = IdentityStore(self.store.engine)
        self.watches = WatchStore(self.store.engine)
        self.crops = CropStore(settings.crops_dir.resolve())

    _executor: ThreadPoolExecutor | None = None
    _stop: threading.Event | None = None  # set when the service closes: background jobs end

    def close(self) -> None:
        self.wait_for_jobs()
        self.store.close()

    def in_background(self, work: Callable[..., object], *args: object) -> None:
        """Run work(*args) in the service's background thread: ingest and crawl jobs of the
        server, one at a time, since each is a writer. work calls check_stop between batches."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs")
            self._stop = threading.Event()
        self._executor.submit(work, *args)

    def check_stop(self) -> None:
        """Raise Stopping if the service is closing: a background job calls this between two
        batches (what it committed is kept), and before it starts."""
        if self._stop is not None and self._stop.is_set():
            raise Stopping

    def wait_for_jobs(self) -> None:
        """Stop the background jobs and wait for them (the server calls this when it stops):
        the running one ends after its current batch, the queued ones as they start, each
        recorded as interrupted; running the same ingest or crawl again finishes them."""
        if self._executor is not None:
            assert self._stop is not None
            self._stop.set()
            self._executor.shutdown(wait=True)
            self._executor = None

    def now(self) -> str:
        return self.clock().isoformat(timespec="seconds")

    def _audit(self, conn: Connection, actor: Actor, action: str, detail: dict,
               case: Case | None = None) -> None:
        """Append an audit record inside conn's transaction, chained to the one before."""
        self.trail.append(conn, {
            "at": self.now(), "actor": actor.name, "actor_id": actor.user_id,
            "organisation": actor.organisation, "role": actor.role, "action": action,
            "case_number": case.number if case else "", "purpose": case.purpose if case else "",
            "client": actor.client, "detail": detail})

    def _audit_alone(self, actor: Actor, action: str, detail: dict, case: Case | None = None) -> None:
        with self.store.transaction() as conn:
            self._audit(conn, actor, action, detail, case)

    def _send_mail(self, message: EmailMessage) -> dict[str, object]:
        """Send message through the configured mail server (FACESEARCH_SMTP_*); the outcome
        to audit: {"sent": True}, or {"sent": False, "error": the error's name only (its text
        may hold the address)}."""
        s = self.settings
        try:
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=SMTP_TIMEOUT) as smtp:
                if s.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if s.smtp_username:
                    smtp.login(s.smtp_username, s.smtp_password.get_secret_value())
                smtp.send_message(message)
        except OSError as exc:  # smtplib's and ssl's errors are OSErrors
            return {"sent": False, "error": type(exc).__name__}
        return {"sent": True}

    def authorise(self, actor: Actor, permission: str, action: str) -> None:
        """Raise Forbidden, after auditing the refusal, unless actor's role holds permission
        and actor has logged in fully (a password alone leaves a second factor owed)."""
        if actor.stage != "full":
            self._audit_alone(actor, f"{action}.refused", {"reason": "second factor owed"})
            raise NotAuthenticated("complete your log-in with your second factor first")
        if not allowed(actor.role, permission):
            self._audit_alone(actor, f"{action}.refused", {"reason": f"role {actor.role} lacks {permission}"})
            raise Forbidden("you are not permitted to do this")

    def _audit_anonymous_refusal(self, actor: Actor, client: str, action: str, reason: str,
                                 **detail: object) -> None:
        """Audit a refusal of a caller nobody has authenticated, aggregated: the first refusal
        of a client's hour for this action is recorded (with detail), with how many the
        client's previous hour had; the others only raise a counter. Anyone can send these,
        so one record each would let a flood from one address grow the hash-chained trail
        (and hold its write lock) without bound: it adds one record an hour instead."""
        now = self.clock()
        with self.store.transaction() as conn:
            earlier = self.requests.count_refusal(
                conn, client_hash(client), f"refused:{action}",
                (now - REFUSAL_WINDOW).isoformat(timespec="seconds"), now.isoformat(timespec="seconds"))
            if earlier is not None:
                self._audit(conn, actor, action, {"reason": reason, **detail,
                                                  "refused_in_previous_window": earlier})

    def refuse_request(self, actor: Actor, reason: str, target: str) -> None:
        """Refuse a request a front end found malformed in a way that matters for security
        (a missing CSRF token): audited like every other refusal, aggregated per client and
        hour where nobody is logged in (the log-in form)."""
        if actor.user_id is None:
            self._audit_anonymous_refusal(actor, actor.client, "request.refused", reason,
                                          target=target[:200])
        else:
            self._audit_alone(actor, "request.refused", {"reason": reason, "target": target[:200]})
        raise Forbidden("the request was refused; reload the page and try again")

    def _refuse(self, actor: Actor, action: str, message: str, case: Case | None = None) -> None:
        self._audit_alone(actor, f"{action}.refused", {"reason": message}, case)
        raise PolicyRefused(message)
