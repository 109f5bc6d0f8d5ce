"""Data-subject rights: opt-out by selfie (hidden at once, erased on confirmation with a second
photo, reversible by the data-protection officer until then), access requests answered by the
officer through one-time links, and notices of erased candidates.

An opt-out erases and hides only within the strict cut-off (Engine.cut_off "suppress": about
suppress_false_matches strangers expected over the whole gallery); faces beyond it but within
the search cut-off may be the person or strangers, so they wait for the officer's review
(opt_out_reviews, decide_opt_out_review), never erased automatically. An access report likewise
discloses only faces within the strict cut-off.

A cluster can hold strangers who look alike, so the identities (service.identities) of the faces
within the strict cut-off never widen an erasure or a disclosure by themselves: their other
faces join the officer's review (an opt-out's: erase or dismiss each; an access request's: the
officer picks those disclosed when approving, access_identity_faces lists them), and the request
remembers the identities (review_identities), since an opt-out erases the faces that led to them.

Public requests are anonymous, so each is counted against its client address before any work
(one conditional UPDATE: parallel requests cannot all pass), analyses only the face it uses, and
waits its turn in a small queue of its own, so that strangers cannot take the analysis capacity
investigators' searches need. Refusals are counted per client and hour; the audit trail gets one
record per window, not one per refused request."""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

import numpy as np
from sqlalchemy.engine import Connection

from facesearch.calibration import band
from facesearch.config import Settings
from facesearch.errors import (
    Busy,
    FacesearchError,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
)
from facesearch.imaging import hash_bits_apart, perceptual_hashes
from facesearch.policy.dates import add_months
from facesearch.policy.roles import OPERATOR
from facesearch.policy.rules import lawful_basis_in_words
from facesearch.service.accounts import token_hash
from facesearch.service.base import Clock, client_hash, system_clock
from facesearch.service.engine import Engine
from facesearch.service.cases import readable_place
from facesearch.service.grouping import Sighting
from facesearch.service.words import source_in_words, source_names
from facesearch.store.metadata import from_blob, to_blob
from facesearch.store.requests import Notification, SubjectRequest
from facesearch.types import Actor, CutOff, Face


@dataclass
class OptOutPending:
    """First step of an opt-out: the person is hidden; a second photo within confirm_by erases."""

    request_id: str
    confirm_token: str  # proves the second photo belongs to this request; shown once
    confirm_by: str


@dataclass
class Receipt:
    """What a person gets back for a confirmed opt-out: no images, only counts and a reference."""

    request_id: str
    images_found: int
    faces_removed: int
    date: str
    faces_in_review: int = 0  # beyond the strict cut-off: the officer decides whether theirs
    mailed: bool = False  # a copy went to the address the person gave


@dataclass
class OptOutView:
    """An opt-out as the data-protection officer sees it."""

    id: int
    public_id: str
    # hidden (not yet confirmed), review (erased within the strict cut-off, nearer faces
    # awaiting the officer's review), done or reinstated
    status: str
    received_at: str
    confirm_by: str | None
    client: str  # the pseudonym the audit trail uses for the requester's address
    images_found: int
    faces_removed: int
    decided_by: str | None
    decided_at: str | None
    note: str | None


# An address that can only be one mailbox: no display name, comma, quote or line break.
EMAIL = re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(\.[\w-]{1,63})+")
RECEIPT_MAIL = """Your request to be removed from facesearch is done.

Request: {request_id}
Date: {date}
Images you were found in: {images_found}
Faces of yours deleted: {faces_removed}
Faces that may be yours, for our data-protection officer to check: {faces_in_review}

Your photos have been deleted. You are on our suppression list: your face will not be collected
again, and no search will return it. Faces that only look like you are checked by a person
before anything is deleted, so that no one else's photo is. Keep the request number for any
question. We have not kept this address.
"""
# A descriptor distance cannot tell one photo saved twice from two photos (SFace moves a
# recompressed copy up to 0.34); a perceptual hash can: on LFW, resized and recompressed copies
# lie within 10 bits of 64, other photos of the same person 12 or more (mostly 16 or more).
SAME_PHOTO_BITS = 10  # perceptual-hash bits within which a second photo is the first again
# The most faces of one identity listed for the officer, nearest the person's template first.
# An identity this large is a chain of look-alikes or someone photographed very often; past a
# few hundred faces the officer can no longer tell them apart one by one, and each review
# stays a bounded read whatever the identity's size. The faces beyond remain (never erased).
IDENTITY_REVIEW_FACES = 200
# A second face at least this wide, relative to the largest, makes a selfie two people's (side
# by side, as near the camera): which one asks is then unknown. A face in the background (a
# passer-by, a poster) is smaller; on 467 LFW photos this refused 2, both of two people.
SECOND_FACE_RATIO = 0.85
QUEUE_WAIT_SECONDS = 60  # the longest a public photo waits for its turn before 503
BUSY_RETRY_SECONDS = 30


@dataclass
class ReviewFace:
    """A face beyond an opt-out's strict cut-off but within the search cut-off of the person's
    template: theirs or a stranger's, for the officer to tell."""

    face_id: int
    distance: float
    expected_false_matches: float  # strangers expected at least this close in the gallery
    band: str
    location: str
    page_url: str | None
    source: str
    collected_at: str
    # Listed because it shares an identity with a face within the strict cut-off, not (only)
    # because of its distance: a cluster can hold strangers.
    same_identity: bool = False


@dataclass
class OptOutReview:
    """An opt-out's faces awaiting the officer's decision, with the requester's reference."""

    request_id: int
    public_id: str
    received_at: str
    strict: CutOff  # erased within this at confirmation
    review: CutOff  # faces up to this are listed
    faces: list[ReviewFace]


@dataclass
class AccessAcknowledgement:
    request_id: str
    received_at: str
    deadline: str


@dataclass
class AccessLink:
    """What a one-time link's page shows before it is used: nothing personal."""

    request_id: str
    expires_at: str


@dataclass
class RequestStatus:
    """What anyone holding a request number may learn of it: its status, no more."""

    request_id: str
    kind: str  # "access" or "erasure"
    received_at: str
    deadline: str | None  # an access request's answer date; an opt-out has none
    status: str  # in words


# Each (kind, status) as the requester reads it.
STATUS_WORDS = {
    ("access", "pending"): "received: our data-protection officer has not answered yet",
    ("access", "approved"): "answered: a one-time link to your report was sent to the address "
                            "you gave",
    ("access", "delivered"): "answered: your report has been shown through its one-time link",
    ("access", "rejected"): "refused: we could not confirm that the photo is of you; the "
                            "data-protection officer wrote to the address you gave",
    ("erasure", "hidden"): "you are hidden from searches; nothing is deleted until you confirm "
                           "with a second photo",
    ("erasure", "review"): "done: your images are deleted; a person is checking faces that only "
                           "look like you",
    ("erasure", "done"): "done: your images are deleted and you are blocked from collection",
    ("erasure", "reinstated"): "reversed by our data-protection officer before it was "
                               "confirmed: you can be found again",
}


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
class ReportedSearch:
    """A search that returned one of the person's images, as the person may know of it."""

    organisation: str
    date: str
    case: str | None  # the agency's case number, only where the agency allows it to be shown


@dataclass
class ReportedImage:
    location: str  # readable_place: a URL, or words without a server path
    page_url: str | None
    source: str  # the source's display name (its name where it has none)
    lawful_basis: str  # in words, e.g. "legitimate interests (GDPR Art. 6(1)(f))"
    jurisdiction: str
    collected_at: str
    purge_date: str  # when retention destroys it
    returned_by_searches: list[ReportedSearch] = field(default_factory=list)
    # Every place the photo was seen, the above first (the person may want each page told).
    sightings: list[Sighting] = field(default_factory=list)


@dataclass
class AccessReport:
    request_id: str
    generated_at: str
    images: list[ReportedImage]


def public_actor(client: str) -> Actor:
    """The audit's view of an anonymous requester: a pseudonym of their address, not the
    address itself (enough to connect one client's requests, for abuse; no more)."""
    return Actor(name="public", role="public", client="client-" + client_hash(client)[:16])


class PublicQueue:
    """Public photos are analysed one at a time, with at most `waiting` more in line; the rest
    are refused at once (Busy, 503). Investigators' searches do not queue here: they share only
    the engine's analysis lock, which a public request holds for one photo at a time. One
    queue per server process."""

    def __init__(self, waiting: int) -> None:
        self._admitted = threading.BoundedSemaphore(waiting + 1)
        self._turn = threading.Lock()

    @contextmanager
    def turn(self) -> Iterator[None]:
        if not self._admitted.acquire(blocking=False):
            raise Busy("too many requests are waiting; try again in a minute", BUSY_RETRY_SECONDS)
        try:
            if not self._turn.acquire(timeout=QUEUE_WAIT_SECONDS):
                raise Busy("too many requests are waiting; try again in a minute", BUSY_RETRY_SECONDS)
            try:
                yield
            finally:
                self._turn.release()
        finally:
            self._admitted.release()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _identity_review_faces(found: SubjectRequest) -> list[int]:
    """The faces of its identities that an opt-out's confirmation put in the officer's review
    (its review_identities: JSON {"identities": [...], "faces": [...]}; an access request's
    holds "identities" and "disclosed_faces")."""
    return list(json.loads(found.review_identities or "{}").get("faces", []))


class Rights(Engine):
    def __init__(self, settings: Settings, clock: Clock = system_clock) -> None:
        super().__init__(settings, clock)
        self.public_queue = PublicQueue(settings.public_queue_length)

    # Public requests ------------------------------------------------------------------------

    @property
    def mails_receipts(self) -> bool:
        """Whether an opt-out's receipt is mailed to an address the person gives
        (FACESEARCH_SMTP_HOST is set)."""
        return bool(self.settings.smtp_host)

    def opt_out(self, client: str, selfie: bytes) -> OptOutPending:
        """First step of an opt-out: hide the person in the selfie (its largest face) at once
        (a suppression: within the strict cut-off, withheld at ingest and hidden from every
        search) and wait for a second photo (confirm_opt_out) before erasing anything. The
        selfie is not stored; the suppression keeps the person's template and face chip (for
        re-embedding), with the request's reference as its reason, and the request the photo's
        perceptual hash until confirmed. Until confirmed, the data-protection officer can reverse it
        (reinstate_opt_out)."""
        actor = public_actor(client)
        with self._public_turn(actor, client, "optout", request=True):
            face, (photo_hash, _) = self._selfie(selfie)
        public_id, token = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = self.clock()
        confirm_by = _iso(now + timedelta(minutes=self.settings.opt_out_confirm_minutes))
        with self.store.transaction() as conn:
            self._add_suppression(conn, actor, face, f"opt-out {public_id}")
            self.requests.add(conn, public_id=public_id, kind="erasure", status="hidden",
                              received_at=_iso(now), deadline=_iso(now),
                              client_hash=client_hash(client), confirm_token_hash=token_hash(token),
                              confirm_expires_at=confirm_by, photo_hash=photo_hash)
            self._audit(conn, actor, "optout", {"request": public_id, "confirm_by": confirm_by})
        return OptOutPending(public_id, token, confirm_by)

    def confirm_opt_out(self, client: str, token: str, selfie: bytes, address: str = "") -> Receipt:
        """Second step: a new photo of the same person (within the strict cut-off of the first
        for one comparison, and not the first photo again) erases every indexed face within
        the strict cut-off of the first, for good; faces beyond it but within the search
        cut-off go to the officer's review (status review), never erased here. Where receipts
        are mailed, a copy goes to the email address given, which is then forgotten;
        elsewhere an address is ignored."""
        actor = public_actor(client)
        address = address.strip() if self.mails_receipts else ""
        if address and not EMAIL.fullmatch(address):
            raise InvalidRequest("give an email address for the receipt, or none")
        found = self.requests.get(confirm_hash=token_hash(token)) if token else None
        first = self.requests.suppression_of(f"opt-out {found.public_id}") if found else None
        if (found is None or first is None or found.status != "hidden"
                or (found.confirm_expires_at or "") < self.now()):
            self._audit_anonymous_refusal(actor, client, "optout.confirm.refused",
                                          "expired, used or unknown")
            raise NotFound("this confirmation has expired or was already used; you stay hidden "
                           "from searches, and can start again to have your images erased")
        template = from_blob(first)
        # The photo, the exact scan of the gallery and the erasure, in one turn of the queue.
        with self._public_turn(actor, client, "optout.confirm", request=False):
            second, hashes = self._selfie(selfie)
            distance = float(np.linalg.norm(second.embedding - template))
            # The first photo again, also mirrored, resized or recompressed.
            if min(hash_bits_apart(h, found.photo_hash or "0") for h in hashes) <= SAME_PHOTO_BITS:
                raise InvalidRequest("take a new photo of yourself now: not the same photo again")
            # Two photos, one comparison: the strict target over one face.
            if distance >= self.cut_off("suppress", faces=1).distance:
                raise InvalidRequest("take a new photo of yourself now: this is not the person "
                                     "in the first photo")
            with self._writer():
                within, near, strict, _ = self._faces_near(template)
                ids = [face_id for face_id, _ in within]
                with self.store.transaction() as conn:
                    now = self.now()
                    # Confirmed at the same moment, or reinstated by the officer meanwhile?
                    if not self.requests.finish_confirmation(conn, found.id, now):
                        raise NotFound("this confirmation has expired or was already used")
                    images = self.store.images_of_faces(conn, ids)
                    # Captured before the erasure: their other faces await the officer.
                    identities = sorted(self.identities.of_faces(conn, ids))
                    removed = self.store.delete_faces(ids, conn)
                    # Those faces as they are now, kept by id: a face that joins one of the
                    # identities later (a stranger, perhaps) never enters this review.
                    same_identity = [face_id for face_id, _ in
                                     self._identity_faces_nearest(identities, template, conn)]
                    near_ids = [face_id for face_id, _ in near]
                    in_review = len(set(near_ids) | set(same_identity))
                    self.requests.update(conn, found.id, images_found=images, faces_removed=removed,
                                         decided_by="requester", decided_at=now,
                                         review_identities=json.dumps(
                                             {"identities": identities, "faces": same_identity}),
                                         **({"status": "review"} if in_review else {}))
                    self._audit(conn, actor, "optout.confirm", {
                        "request": found.public_id, "faces": removed, "images": images,
                        "in_review": in_review, "identities": len(identities),
                        "identity_faces": len(same_identity), "cut_off": asdict(strict)})
        # The requester is told only of faces near their own photo: an identity's other faces
        # may be strangers', and their number is not the requester's to know.
        receipt = Receipt(found.public_id, images, removed, now[:10], len(near_ids))
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
        outcome = self._send_mail(message)
        self._audit_alone(actor, "optout.receipt", {"request": receipt.request_id, **outcome})
        return bool(outcome["sent"])

    def request_access(self, client: str, selfie: bytes, contact: str) -> AccessAcknowledgement:
        """Queue an access request for the data-protection officer, due in one month. Only
        the person's template is kept, until the request is answered or its link expires."""
        actor = public_actor(client)
        if not contact.strip():
            raise InvalidRequest("give an address where the officer can reach you")
        with self._public_turn(actor, client, "access.request", request=True):
            face = self._selfie(selfie)[0]
        received = self.clock()
        public_id = secrets.token_hex(8)
        deadline = _iso(add_months(received, 1))
        with self.store.transaction() as conn:
            self.requests.add(conn, public_id=public_id, kind="access", status="pending",
                              received_at=_iso(received), deadline=deadline,
                              contact=contact.strip()[:500], client_hash=client_hash(client),
                              template=to_blob(face.embedding), template_embedder=face.embedder)
            self._audit(conn, actor, "access.request", {"request": public_id})
        return AccessAcknowledgement(public_id, _iso(received), deadline)

    def request_status(self, client: str, public_id: str) -> RequestStatus:
        """The status of an access request or opt-out, by its request number: when it was
        received, its answer date and its status in words; nothing else, since anyone may hold
        a number. Each look-up counts against the client's hourly allowance of photos (the
        numbers are random, but guessing should stay slow); an unknown number is refused like
        the other anonymous refusals, aggregated in the audit trail."""
        actor = public_actor(client)
        self._take_allowance(actor, client, request=False)
        wanted = public_id.strip().lower()
        found = self.requests.get(public_id=wanted) if re.fullmatch(r"[0-9a-f]{16}", wanted) else None
        if found is None:
            self._audit_anonymous_refusal(actor, client, "request.status.refused",
                                          "unknown request number")
            raise NotFound("no request has this number: check it against your receipt")
        deadline = found.deadline if found.kind == "access" else None
        return RequestStatus(found.public_id, found.kind, found.received_at, deadline,
                             STATUS_WORDS.get((found.kind, found.status), found.status))

    def reveal_case_numbers(self, actor: Actor, organisation: str, reveal: bool) -> None:
        """Whether access reports name the organisation's case numbers beside its searches
        (by default they say only the organisation and the date: a case number can tell a
        suspect of an investigation). Set by the operator or the organisation's admin; audited."""
        self.authorise(actor, "organisations.manage", "organisation.reveal_case_numbers")
        found = self.accounts.organisation(organisation)
        # An admin sets their own organisation's; another is refused like a missing one.
        if found is None or (actor.role != OPERATOR and found.id != actor.organisation_id):
            self._audit_alone(actor, "organisation.reveal_case_numbers.refused", {
                "reason": "no such organisation of the actor's", "organisation": organisation[:200]})
            raise NotFound(f"you have no organisation {organisation!r}")
        with self.store.transaction() as conn:
            self.accounts.set_reveal_case_numbers(conn, found.id, reveal)
            self._audit(conn, actor, "organisation.reveal_case_numbers", {
                "organisation": organisation, "reveal": reveal})

    @contextmanager
    def _public_turn(self, actor: Actor, client: str, action: str, request: bool) -> Iterator[None]:
        """Heavy public work (a photo's analysis, an erasure's scan), once the client's
        allowance is counted and the public queue gives it its turn. If it fails (no face, not
        an image, a photo refused), a new request gives its place in the daily allowance back,
        so that a person can try again with another photo, and the photo counts only toward
        the hourly limit; the refusal is audited, aggregated."""
        self._take_allowance(actor, client, request)
        try:
            with self.public_queue.turn():
                yield
        except FacesearchError as exc:
            with self.store.transaction() as conn:
                if request:
                    self.requests.give_back(conn, client_hash(client), "requests")
                if isinstance(exc, Busy):  # not analysed: the photo does not count either
                    self.requests.give_back(conn, client_hash(client), "attempts")
            self._audit_anonymous_refusal(actor, client, "public.refused" if isinstance(exc, Busy)
                                          else f"{action}.refused", exc.message)
            raise

    def _selfie(self, photo: bytes) -> tuple[Face, tuple[str, str]]:
        """The photo's one face (another face nearly as large refuses it: which person asks
        would be unknown), and the perceptual hashes of the photo and its mirror."""
        face, pixels = self._largest_face(photo, alone_ratio=SECOND_FACE_RATIO)
        return face, perceptual_hashes(pixels)

    def _take_allowance(self, actor: Actor, client: str, request: bool) -> None:
        """Count a photo against the client's hourly photos and, for a new request, its daily
        requests, in one transaction before any work; refuse if either is used up."""
        now, h, s = self.clock(), client_hash(client), self.settings
        with self.store.transaction() as conn:
            if request and not self.requests.take(conn, h, "requests", _iso(now - timedelta(days=1)),
                                                  _iso(now), s.public_requests_per_day):
                refused = ("daily request limit", "too many requests from this address today; "
                           "try again tomorrow", 24 * 3600)
            elif not self.requests.take(conn, h, "attempts", _iso(now - timedelta(hours=1)),
                                        _iso(now), s.public_attempts_per_hour):
                if request:
                    self.requests.give_back(conn, h, "requests")
                refused = ("hourly photo limit", "too many photos from this address in the last "
                           "hour; try again later", 3600)
            else:
                return
        self._audit_anonymous_refusal(actor, client, "public.refused", refused[0])
        raise RateLimited(refused[1], refused[2])

    # The data-protection officer -------------------------------------------------------------

    def access_requests(self, actor: Actor) -> list[AccessRequestView]:
        """Access requests, newest first; overdue ones are those still open past their
        deadline. Audited: the list holds the requesters' contact details."""
        self.authorise(actor, "requests.manage", "access.list")
        found = [self._view(r) for r in self.requests.all("access")]
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

    def access_identity_faces(self, actor: Actor, request_id: int) -> list[ReviewFace]:
        """The faces of an open access request's identities beyond the strict cut-off (the
        identities of the faces within it), nearest the person's template first: theirs or
        strangers', for the officer to tell before approving; only those the officer names
        when approving are disclosed. Audited."""
        self.authorise(actor, "requests.manage", "access.review")
        found = self._open_request(actor, request_id, "access.review")
        listed, _ = self._access_listed(found)
        faces = self._review_faces(listed, self.cut_off("search").faces)
        self._audit_alone(actor, "access.review", {"request": found.public_id,
                                                   "faces": len(faces)})
        return faces

    def _access_listed(self, found: SubjectRequest) -> tuple[list[tuple[int, float, bool]], list[int]]:
        """An access request's identities' faces beyond the strict cut-off, as
        _with_identity_faces lists them, and the identities."""
        self._check_template_model(found)
        template = from_blob(found.template or b"")
        strict = self._faces_of(template)
        with self.store.transaction() as conn:
            identities = sorted(self.identities.of_faces(conn, strict))
            members = self._identity_faces_nearest(identities, template, conn)
        within = set(strict)
        return [(face_id, distance, True) for face_id, distance in members
                if face_id not in within], identities

    def _check_template_model(self, found: SubjectRequest) -> None:
        if found.template_embedder != self.live_embedder:
            # Compared with another model's descriptors it would find strangers or no one.
            raise InvalidRequest("the gallery has changed its face model since this "
                                 "request: please make a new request with a new photo")

    def decide_access_request(self, actor: Actor, request_id: int, approve: bool,
                              note: str = "", disclose: Sequence[int] = ()) -> str | None:
        """Approve (after verifying identity outside the system) or reject. Approval returns
        a one-time link token for the person; rejection drops the template. disclose: the
        faces of access_identity_faces that the officer found to be the person's, disclosed
        with those within the strict cut-off; the others are not."""
        self.authorise(actor, "requests.manage", "access.decide")
        found = self._open_request(actor, request_id, "access.decide")
        listed: list[tuple[int, float, bool]] = []
        identities: list[int] = []
        # A template by another model is refused when the report is asked for: nothing to list.
        if approve and found.template_embedder == self.live_embedder:
            listed, identities = self._access_listed(found)
        if not set(disclose) <= {face_id for face_id, _, _ in listed}:
            raise InvalidRequest("only faces of the person's identities listed for review "
                                 "can be disclosed: read the list again")
        disclosed = sorted(set(disclose))
        token = secrets.token_urlsafe(32) if approve else None
        expires = (self.clock() + timedelta(hours=self.settings.access_report_hours)
                   ).isoformat(timespec="seconds")
        with self.store.transaction() as conn:
            self.requests.update(
                conn, found.id, status="approved" if approve else "rejected",
                decided_by=actor.name, decided_at=self.now(), decision_note=note.strip()[:1000],
                report_token_hash=token_hash(token) if token else None,
                report_expires_at=expires if token else None,
                review_identities=json.dumps({"identities": identities,
                                              "disclosed_faces": disclosed}),
                **({} if approve else {"template": None}))
            self._audit(conn, actor, "access.approve" if approve else "access.reject",
                        {"request": found.public_id,
                         **({"disclosed_faces": disclosed} if approve else {})})
        return token

    def _open_request(self, actor: Actor, request_id: int, action: str) -> SubjectRequest:
        found = self.requests.get(request_id=request_id)
        if found is None or found.kind != "access" or found.status != "pending":
            self._audit_alone(actor, f"{action}.refused", {"reason": "no such open request",
                                                           "request_id": request_id})
            raise Forbidden("no such open access request")
        return found

    def access_link(self, client: str, token: str) -> AccessLink:
        """What a one-time link's page shows before the person asks for the report: changes
        nothing, so that a mail scanner opening the link does not use it up."""
        found = self._usable_link(public_actor(client), client, token)
        return AccessLink(found.public_id, found.report_expires_at or "")

    def access_report(self, client: str, token: str) -> AccessReport:
        """The report behind a one-time link: every indexed image of the person (a face
        within the strict cut-off of their template: nothing nearer strangers' faces is
        disclosed, but for the faces of their identities the officer chose when approving)
        with its provenance, lawful basis and purge date, and which searches
        returned them. The link
        works once, before it expires (one conditional UPDATE spends it, so of two uses at
        once exactly one gets the report); the person's template is dropped with its use."""
        actor = public_actor(client)
        found = self._usable_link(actor, client, token)
        with self.store.transaction() as conn:
            spent = self.requests.spend_report_link(conn, found.id, self.now())
        if not spent:
            self._audit_anonymous_refusal(actor, client, "access.report.refused",
                                          "used, expired or unknown link")
            raise NotFound("this link has expired or has already been used")
        try:
            with self._writer():
                self._check_template_model(found)
                strict = self._faces_of(from_blob(found.template or b""))
                # With the faces of its identities the officer chose to disclose, if they remain.
                disclosed = json.loads(found.review_identities or "{}").get("disclosed_faces", [])
                reported = self._report_images(sorted(set(strict) | set(disclosed)))
        except BaseException:  # the person has not seen the report: the link still works
            with self.store.transaction() as conn:
                self.requests.update(conn, found.id, status="approved", report_used_at=None)
            raise
        with self.store.transaction() as conn:
            self.requests.update(conn, found.id, template=None, images_found=len(reported))
            self._audit(conn, actor, "access.report", {"request": found.public_id,
                                                       "images": len(reported)})
        return AccessReport(found.public_id, self.now(), reported)

    def _usable_link(self, actor: Actor, client: str, token: str) -> SubjectRequest:
        """The approved request behind an unused, unexpired link; refused (and audited)
        otherwise. An expired link's template is dropped here if retention has not yet."""
        found = self.requests.get(token_hash=token_hash(token)) if token else None
        now = self.now()
        if (found is not None and found.status == "approved" and found.template is not None
                and (found.report_expires_at or "") < now):
            with self.store.transaction() as conn:
                self.requests.update(conn, found.id, template=None)
            found = None
        if (found is None or found.status != "approved" or found.template is None
                or found.report_used_at is not None):
            self._audit_anonymous_refusal(actor, client, "access.report.refused",
                                          "used, expired or unknown link")
            raise NotFound("this link has expired or has already been used")
        return found

    def _report_images(self, face_ids: list[int]) -> list[ReportedImage]:
        if not face_ids:
            return []
        rows, by_face = self.requests.provenance(face_ids)
        reported: dict[int, ReportedImage] = {}
        for row in rows:
            image = reported.setdefault(row["image_id"], ReportedImage(
                readable_place(row["location"]), row["page_url"],
                source_in_words(row["name"], row["display_name"]),
                lawful_basis_in_words(row["lawful_basis"]), row["jurisdiction"],
                row["collected_at"],
                (datetime.fromisoformat(row["collected_at"]) + timedelta(days=row["retention_days"])
                 ).isoformat(timespec="seconds")))
            image.returned_by_searches += [
                ReportedSearch(s["organisation"], s["date"], s["case"] if s["reveal"] else None)
                for s in by_face.get(row["id"], [])]
        names = source_names(self.store.sources())
        for image_id, seen in self.store.sightings_of(list(reported)).items():
            reported[image_id].sightings = [
                Sighting(readable_place(s["location"]), s["page_url"],
                         names.get(s["source"], s["source"]), s["seen_at"]) for s in seen]
        return list(reported.values())

    # The officer's review of opt-outs ---------------------------------------------------------

    def opt_outs(self, actor: Actor) -> list[OptOutView]:
        """Opt-outs, newest first, for the data-protection officer to review: those still
        hidden (not confirmed) can be reversed. Audited like the access requests' list."""
        self.authorise(actor, "requests.manage", "optout.list")
        found = [OptOutView(r.id, r.public_id, r.status, r.received_at, r.confirm_expires_at,
                            "client-" + r.client_hash[:16], r.images_found, r.faces_removed,
                            r.decided_by, r.decided_at, r.decision_note)
                 for r in self.requests.all("erasure")]
        self._audit_alone(actor, "optout.list", {"requests": len(found)})
        return found

    def reinstate_opt_out(self, actor: Actor, request_id: int, reason: str) -> None:
        """Reverse a disputed opt-out that was not confirmed (erasure cannot be reversed):
        the suppression goes, so the person's faces, never erased, are found again and
        collected again; the requester's confirmation no longer works."""
        self.authorise(actor, "requests.manage", "optout.reinstate")
        reason = reason.strip()[:1000]
        if not reason:
            raise InvalidRequest("reversing an opt-out needs a reason")
        found = self.requests.get(request_id=request_id)
        with self.store.transaction() as conn:
            changed = found is not None and found.kind == "erasure" and self.requests.change(
                conn, request_id, "hidden", status="reinstated", decided_by=actor.name,
                decided_at=self.now(), decision_note=reason, confirm_token_hash=None,
                photo_hash=None)
            if changed:
                dropped = self.requests.drop_suppression(conn, f"opt-out {found.public_id}")
                self._suppression_dropped(conn, actor, f"opt-out {found.public_id}")
                self._audit(conn, actor, "optout.reinstate", {"request": found.public_id,
                                                              "reason": reason,
                                                              "suppressions": dropped})
        if not changed:
            self._audit_alone(actor, "optout.reinstate.refused", {
                "reason": "no such unconfirmed opt-out", "request_id": request_id})
            raise Forbidden("only an opt-out not yet confirmed can be reversed: erasure is final")

    def opt_out_reviews(self, actor: Actor) -> list[OptOutReview]:
        """Confirmed opt-outs that had faces beyond the strict cut-off but within the search
        cut-off, oldest first, with every stored face within the search cut-off now (nearest
        first): the officer tells whether each is the requester's (erase) or a stranger's
        (dismiss). Read from the gallery now: faces collected since are listed, and so are
        faces that a smaller gallery's strict cut-off now reaches but the confirmation's,
        over a larger gallery, did not."""
        self.authorise(actor, "requests.manage", "optout.review.list")
        reviews = []
        for found in reversed(self.requests.all("erasure")):
            template = self._review_template(found)
            if template is None:
                continue
            listed, strict, review = self._opt_out_listed(found, template)
            reviews.append(OptOutReview(found.id, found.public_id, found.received_at, strict,
                                        review, self._review_faces(listed, review.faces)))
        self._audit_alone(actor, "optout.review.list", {
            "requests": len(reviews), "faces": sum(len(r.faces) for r in reviews)})
        return reviews

    def opt_out_review_crop(self, actor: Actor, request_id: int, face_id: int) -> bytes:
        """The crop of a face listed for an opt-out's review, so that the officer can compare
        it with what the requester is known by; no other face. Audited."""
        self.authorise(actor, "requests.manage", "optout.review.crop")
        found = self.requests.get(request_id=request_id)
        template = self._review_template(found) if found else None
        row = self.store.candidate_rows([face_id]).get(face_id) if template is not None else None
        listed = row is not None and (
            np.linalg.norm(from_blob(row["embedding"]) - template) < self.cut_off("search").distance
            or face_id in _identity_review_faces(found))
        if not listed:
            self._audit_alone(actor, "optout.review.crop.refused", {
                "reason": "no such face in an open review", "request_id": request_id,
                "face_id": face_id})
            raise NotFound("no such face awaits review in this opt-out")
        data = self.crops.path(row["crop_path"]).read_bytes()
        self._audit_alone(actor, "optout.review.crop", {"request": found.public_id,
                                                        "face_id": face_id})
        return data

    def decide_opt_out_review(self, actor: Actor, request_id: int, erase: list[int],
                              dismiss: list[int]) -> int:
        """The officer's decision on every face an opt-out's review lists: erase (the
        requester's) or dismiss (a stranger's; kept and found as before). Every listed face
        must be decided: if faces were listed since the list was shown, the decision is
        refused and the list is to be read again. Faces no longer listed (erased meanwhile,
        by another review say) are passed over, so only a listed face can be erased here. The
        opt-out is then done. Returns the faces erased; audited with both lists."""
        self.authorise(actor, "requests.manage", "optout.review")
        erase_set, dismiss_set = set(erase), set(dismiss)
        if erase_set & dismiss_set:
            raise InvalidRequest("a face is either erased or dismissed, not both")
        found = self.requests.get(request_id=request_id)
        template = self._review_template(found) if found else None
        if template is None:
            self._audit_alone(actor, "optout.review.refused", {
                "reason": "no opt-out awaiting review", "request_id": request_id})
            raise NotFound("no such opt-out awaits review")
        with self._writer():
            listed = {face_id for face_id, _, _ in self._opt_out_listed(found, template)[0]}
            if not listed <= erase_set | dismiss_set:
                raise InvalidRequest("more faces await review than were decided: read the "
                                     "list again and decide on each")
            erase_set, dismiss_set = erase_set & listed, dismiss_set & listed
            with self.store.transaction() as conn:
                if not self.requests.change(conn, found.id, "review", status="done",
                                            decided_by=actor.name, decided_at=self.now()):
                    raise Forbidden("this opt-out was decided meanwhile")
                images = self.store.images_of_faces(conn, sorted(erase_set))
                removed = self.store.delete_faces(sorted(erase_set), conn)
                self.requests.update(conn, found.id, images_found=found.images_found + images,
                                     faces_removed=found.faces_removed + removed)
                self._audit(conn, actor, "optout.review", {
                    "request": found.public_id, "erased": sorted(erase_set),
                    "dismissed": sorted(dismiss_set), "faces": removed, "images": images})
        return removed

    def _opt_out_listed(self, found: SubjectRequest, template: np.ndarray
                        ) -> tuple[list[tuple[int, float, bool]], CutOff, CutOff]:
        """The faces an opt-out's review lists now, nearest the person's template first, as
        (face id, distance, listed for its identity): every face within the search cut-off,
        and the faces its confirmation captured of the identities it erased faces of (those
        erased since drop out); with the strict and search cut-offs."""
        within, near, strict, review = self._faces_near(template)
        return self._with_identity_faces(within + near, _identity_review_faces(found),
                                         template), strict, review

    def _identity_faces_nearest(self, identities: list[int], template: np.ndarray,
                                conn: Connection) -> list[tuple[int, float]]:
        """(face id, distance to the template) of the faces of identities, nearest first, at
        most IDENTITY_REVIEW_FACES of each identity."""
        face_ids, identity_ids, vectors = self.identities.member_vectors(identities, conn)
        if not len(face_ids):
            return []
        distances = np.linalg.norm(vectors - template, axis=1)
        order = np.lexsort((distances, identity_ids))  # by identity, nearest first in each
        first = np.searchsorted(identity_ids[order], identity_ids[order], side="left")
        kept = order[np.arange(len(order)) - first < IDENTITY_REVIEW_FACES]
        kept = kept[np.argsort(distances[kept], kind="stable")]
        return list(zip(face_ids[kept].tolist(), distances[kept].astype(float).tolist()))

    def _with_identity_faces(self, listed: list[tuple[int, float]], members: list[int],
                             template: np.ndarray) -> list[tuple[int, float, bool]]:
        """listed (face id, distance), with the faces members added, each marked whether it
        is one of them; nearest the template first."""
        members = set(members)
        distances = dict(listed)
        ids, vectors = self.store.vectors_of(np.array(sorted(members - set(distances)), np.int64))
        distances.update(zip(ids.tolist(), np.linalg.norm(vectors - template, axis=1).tolist()))
        return sorted(((face_id, float(d), face_id in members) for face_id, d in distances.items()),
                      key=lambda entry: entry[1])

    def _review_faces(self, listed: list[tuple[int, float, bool]], faces: int) -> list[ReviewFace]:
        """The listed faces that still exist, as the officer sees them: each with the
        strangers expected at least as close among faces (the gallery's count)."""
        calibration = self._calibration_of_live()
        rows = self.store.candidate_rows([face_id for face_id, _, _ in listed])
        shown = []
        for face_id, distance, same_identity in listed:
            if face_id in rows:
                row = rows[face_id]
                expected = float(f"{calibration.false_match_probability(distance) * faces:.3g}")
                shown.append(ReviewFace(face_id, round(distance, 4), expected, band(expected),
                                        row["location"], row["page_url"], row["source"],
                                        row["collected_at"], same_identity))
        return shown

    def _review_template(self, found: SubjectRequest) -> np.ndarray | None:
        """The template of an opt-out awaiting review (its suppression's), else None."""
        if found.kind != "erasure" or found.status != "review":
            return None
        template = self.requests.suppression_of(f"opt-out {found.public_id}")
        return None if template is None else from_blob(template)

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
