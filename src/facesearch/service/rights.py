"""Data-subject rights: opt-out by selfie (erasure and objection), access requests answered by
the data-protection officer through one-time links, and notices of erased candidates."""

from __future__ import annotations

import hashlib
import re
import secrets
import smtplib
import ssl
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

from facesearch.errors import (
    FacesearchError,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
)
from facesearch.policy.dates import add_months
from facesearch.service.accounts import token_hash
from facesearch.service.engine import Engine
from facesearch.store.metadata import from_blob, to_blob
from facesearch.store.requests import Notification, SubjectRequest
from facesearch.types import Actor


@dataclass
class Receipt:
    """What a person gets back for an opt-out: no images, only counts and a reference."""

    request_id: str
    images_found: int
    faces_removed: int
    date: str
    mailed: bool = False  # a copy went to the address the person gave


# An address that can only be one mailbox: no display name, comma, quote or line break.
EMAIL = re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(\.[\w-]{1,63})+")
SMTP_TIMEOUT = 10  # seconds: the person waits for the receipt page meanwhile
RECEIPT_MAIL = """Your request to be removed from facesearch is done.

Request: {request_id}
Date: {date}
Images you were found in: {images_found}
Faces of yours deleted: {faces_removed}

Your photo has been deleted. You are on our suppression list: your face will not be collected
again, and no search will return it. Keep the request number for any question. We have not
kept this address.
"""


@dataclass
class AccessAcknowledgement:
    request_id: str
    received_at: str
    deadline: str


@dataclass
class AccessRequestView:
    """An access request as the data-protection officer sees it."""

    id: int
    public_id: str
    status: str
    received_at: str
    deadline: str
    extended_reason: str | None
    contact: str
    decided_by: str | None
    decided_at: str | None
    overdue: bool


@dataclass
class ReportedImage:
    location: str
    page_url: str | None
    source: str
    lawful_basis: str
    jurisdiction: str
    collected_at: str
    purge_date: str  # when retention destroys it
    returned_by_searches: list[dict] = field(default_factory=list)  # case, organisation, date


@dataclass
class AccessReport:
    request_id: str
    generated_at: str
    images: list[ReportedImage]


def public_actor(client: str) -> Actor:
    """The audit's view of an anonymous requester: a pseudonym of their address, not the
    address itself (enough to connect one client's requests, for abuse; no more)."""
    return Actor(name="public", role="public", client="client-" + client_hash(client)[:16])


def client_hash(client: str) -> str:
    """Per-client limits need to recognise an address again, not to know it."""
    return hashlib.sha256(f"facesearch-client:{client}".encode()).hexdigest()


class Rights(Engine):
    # Public requests ------------------------------------------------------------------------

    @property
    def mails_receipts(self) -> bool:
        """Whether an opt-out's receipt is mailed to an address the person gives
        (FACESEARCH_SMTP_HOST is set)."""
        return bool(self.settings.smtp_host)

    def opt_out(self, client: str, selfie: bytes, address: str = "") -> Receipt:
        """Erase every indexed face of the person in the selfie, and keep them out of future
        ingests and searches. The selfie is not stored; only the person's template is, as a
        suppression with the request's reference as its reason. Where receipts are mailed, a
        copy goes to the email address given, which is then forgotten; elsewhere an address
        is ignored."""
        actor = public_actor(client)
        self._check_public_rate(actor, client)
        address = address.strip() if self.mails_receipts else ""
        if address and not EMAIL.fullmatch(address):
            raise InvalidRequest("give an email address for the receipt, or none")
        template = self._public_template(actor, client, selfie, "optout")
        public_id = secrets.token_hex(8)
        with self._writer():
            ids = self._faces_of(template)
            with self.store.transaction() as conn:
                found = self.store.images_of_faces(conn, ids)
                self.store.add_suppressions(template[None, :], f"opt-out {public_id}", conn)
                removed = self.store.delete_faces(ids, conn)
                now = self.now()
                self.requests.add(conn, public_id=public_id, kind="erasure", status="done",
                                  received_at=now, deadline=now, client_hash=client_hash(client),
                                  images_found=found, faces_removed=removed,
                                  decided_by="automatic", decided_at=now)
                self._audit(conn, actor, "optout", {"request": public_id, "faces": removed,
                                                    "images": found})
        receipt = Receipt(public_id, found, removed, now[:10])
        if address:
            receipt.mailed = self._mail_receipt(actor, address, receipt)
        return receipt

    def _mail_receipt(self, actor: Actor, address: str, receipt: Receipt) -> bool:
        """Mail the receipt (text only, never an image); whether the mail server took it. Sent
        after the erasure is committed, so that a mail server that is down undoes nothing.
        Audited without the address."""
        s = self.settings
        message = EmailMessage()
        message["From"], message["To"] = s.smtp_from, address
        message["Subject"] = f"facesearch opt-out receipt {receipt.request_id}"
        message["Date"] = format_datetime(self.clock())
        message.set_content(RECEIPT_MAIL.format(**asdict(receipt)))
        try:
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=SMTP_TIMEOUT) as smtp:
                if s.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if s.smtp_username:
                    smtp.login(s.smtp_username, s.smtp_password.get_secret_value())
                smtp.send_message(message)
            outcome: dict[str, object] = {"sent": True}
        except OSError as exc:  # smtplib's and ssl's errors are OSErrors
            # The error's name only: its text may hold the address.
            outcome = {"sent": False, "error": type(exc).__name__}
        self._audit_alone(actor, "optout.receipt", {"request": receipt.request_id, **outcome})
        return bool(outcome["sent"])

    def request_access(self, client: str, selfie: bytes, contact: str) -> AccessAcknowledgement:
        """Queue an access request for the data-protection officer, due in one month. Only
        the person's template is kept, until the request is answered."""
        actor = public_actor(client)
        if not contact.strip():
            raise InvalidRequest("give an address where the officer can reach you")
        self._check_public_rate(actor, client)
        template = self._public_template(actor, client, selfie, "access.request")
        received = self.clock()
        public_id = secrets.token_hex(8)
        deadline = add_months(received, 1).isoformat(timespec="seconds")
        with self.store.transaction() as conn:
            self.requests.add(conn, public_id=public_id, kind="access", status="pending",
                              received_at=received.isoformat(timespec="seconds"), deadline=deadline,
                              contact=contact.strip()[:500], client_hash=client_hash(client),
                              template=to_blob(template))
            self._audit(conn, actor, "access.request", {"request": public_id})
        return AccessAcknowledgement(public_id, received.isoformat(timespec="seconds"), deadline)

    def _public_template(self, actor: Actor, client: str, selfie: bytes, action: str):  # noqa: ANN202
        """The selfie's template. A photo that fails still counts toward the client's daily
        limit (as a request with status "invalid"), so face detection is not free to abuse."""
        try:
            return self._template_of(selfie)
        except FacesearchError as exc:
            now = self.now()
            with self.store.transaction() as conn:
                self.requests.add(conn, public_id=secrets.token_hex(8),
                                  kind="erasure" if action == "optout" else "access",
                                  status="invalid", received_at=now, deadline=now,
                                  client_hash=client_hash(client))
                self._audit(conn, actor, f"{action}.refused", {"reason": exc.message})
            raise

    def _check_public_rate(self, actor: Actor, client: str) -> None:
        since = (self.clock() - timedelta(days=1)).isoformat(timespec="seconds")
        if self.requests.from_client_since(client_hash(client), since) >= self.settings.public_requests_per_day:
            self._audit_alone(actor, "public.refused", {"reason": "daily request limit"})
            raise RateLimited("too many requests from this address today; try again tomorrow",
                              24 * 3600)

    # The data-protection officer -------------------------------------------------------------

    def access_requests(self, actor: Actor) -> list[AccessRequestView]:
        """Access requests, newest first; overdue ones are those still open past their
        deadline. Audited: the list holds the requesters' contact details."""
        self.authorise(actor, "requests.manage", "access.list")
        found = [self._view(r) for r in self.requests.all("access") if r.status != "invalid"]
        self._audit_alone(actor, "access.list", {"requests": len(found)})
        return found

    def _view(self, r: SubjectRequest) -> AccessRequestView:
        return AccessRequestView(
            r.id, r.public_id, r.status, r.received_at, r.deadline, r.extended_reason, r.contact,
            r.decided_by, r.decided_at, overdue=r.status == "pending" and r.deadline < self.now())

    def extend_access_request(self, actor: Actor, request_id: int, reason: str) -> AccessRequestView:
        """Extend the deadline once, by two months, with a recorded reason."""
        self.authorise(actor, "requests.manage", "access.extend")
        found = self._open_request(actor, request_id, "access.extend")
        if found.extended_reason:
            raise InvalidRequest("a deadline can be extended only once")
        reason = reason.strip()[:1000]
        if not reason:
            raise InvalidRequest("an extension needs a reason")
        deadline = add_months(datetime.fromisoformat(found.deadline), 2).isoformat(timespec="seconds")
        with self.store.transaction() as conn:
            self.requests.update(conn, found.id, deadline=deadline, extended_reason=reason)
            self._audit(conn, actor, "access.extend", {"request": found.public_id,
                                                       "deadline": deadline, "reason": reason})
        return self._view(replace(found, deadline=deadline, extended_reason=reason))

    def decide_access_request(self, actor: Actor, request_id: int, approve: bool,
                              note: str = "") -> str | None:
        """Approve (after verifying identity outside the system) or reject. Approval returns
        a one-time link token for the person; rejection drops the template."""
        self.authorise(actor, "requests.manage", "access.decide")
        found = self._open_request(actor, request_id, "access.decide")
        token = secrets.token_urlsafe(32) if approve else None
        expires = (self.clock() + timedelta(hours=self.settings.access_report_hours)
                   ).isoformat(timespec="seconds")
        with self.store.transaction() as conn:
            self.requests.update(
                conn, found.id, status="approved" if approve else "rejected",
                decided_by=actor.name, decided_at=self.now(), decision_note=note.strip()[:1000],
                report_token_hash=token_hash(token) if token else None,
                report_expires_at=expires if token else None,
                **({} if approve else {"template": None}))
            self._audit(conn, actor, "access.approve" if approve else "access.reject",
                        {"request": found.public_id})
        return token

    def _open_request(self, actor: Actor, request_id: int, action: str) -> SubjectRequest:
        found = self.requests.get(request_id=request_id)
        if found is None or found.kind != "access" or found.status != "pending":
            self._audit_alone(actor, f"{action}.refused", {"reason": "no such open request",
                                                           "request_id": request_id})
            raise Forbidden("no such open access request")
        return found

    def access_report(self, client: str, token: str) -> AccessReport:
        """The report behind a one-time link: every indexed image of the person with its
        provenance, lawful basis and purge date, and which searches returned them. The link
        works once, before it expires; the person's template is dropped with its use."""
        actor = public_actor(client)
        found = self.requests.get(token_hash=token_hash(token)) if token else None
        if (found is None or found.report_used_at is not None or found.template is None
                or (found.report_expires_at or "") < self.now()):
            self._audit_alone(actor, "access.report.refused", {"reason": "used, expired or unknown link"})
            raise NotFound("this link has expired or has already been used")
        template = from_blob(found.template)
        with self._writer():
            reported = self._report_images(self._faces_of(template))
        with self.store.transaction() as conn:
            again = self.requests.get(request_id=found.id, conn=conn)
            if again is None or again.report_used_at is not None:  # opened twice at once
                raise NotFound("this link has expired or has already been used")
            self.requests.update(conn, found.id, status="delivered", report_used_at=self.now(),
                                 template=None, images_found=len(reported))
            self._audit(conn, actor, "access.report", {"request": found.public_id,
                                                       "images": len(reported)})
        return AccessReport(found.public_id, self.now(), reported)

    def _report_images(self, face_ids: list[int]) -> list[ReportedImage]:
        if not face_ids:
            return []
        rows, by_face = self.requests.provenance(face_ids)
        reported: dict[int, ReportedImage] = {}
        for row in rows:
            image = reported.setdefault(row["image_id"], ReportedImage(
                row["location"], row["page_url"], row["name"], row["lawful_basis"],
                row["jurisdiction"], row["collected_at"],
                (datetime.fromisoformat(row["collected_at"]) + timedelta(days=row["retention_days"])
                 ).isoformat(timespec="seconds")))
            image.returned_by_searches += by_face.get(row["id"], [])
        return list(reported.values())

    # Notices to users ------------------------------------------------------------------------

    def take_notifications(self, actor: Actor) -> list[Notification]:
        """The actor's unseen notices (erased candidates), marked seen as they are handed over."""
        if actor.user_id is None:
            return []
        found = self.requests.unseen(actor.user_id)
        if found:
            with self.store.transaction() as conn:
                self.requests.mark_seen(conn, [n.id for n in found], self.now())
        return found
