"""Data-subject requests and user notifications."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from facesearch.store.schema import (
    candidates,
    cases,
    faces,
    images,
    notifications,
    organisations,
    public_allowances,
    searches,
    sources,
    subject_requests,
    suppressions,
)


@dataclass(frozen=True)
class SubjectRequest:
    id: int
    public_id: str
    kind: str
    status: str
    received_at: str
    deadline: str
    extended_reason: str | None
    contact: str
    client_hash: str
    template: bytes | None
    images_found: int
    faces_removed: int
    decided_by: str | None
    decided_at: str | None
    decision_note: str | None
    report_token_hash: str | None
    report_expires_at: str | None
    report_used_at: str | None
    confirm_token_hash: str | None
    confirm_expires_at: str | None
    photo_hash: str | None
    template_embedder: str | None
    # JSON: {"identities": [...]} and, for an opt-out, "faces" (those of its identities its
    # confirmation put in the review), for an access request "disclosed_faces" (service.rights)
    review_identities: str | None


@dataclass(frozen=True)
class Notification:
    id: int
    message: str
    created_at: str


class RequestStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, conn: Connection, **values: object) -> int:
        return conn.execute(insert(subject_requests).values(**values)).inserted_primary_key[0]

    def get(self, *, request_id: int | None = None, token_hash: str | None = None,
            confirm_hash: str | None = None, public_id: str | None = None,
            conn: Connection | None = None) -> SubjectRequest | None:
        """The request with this id, report-link token hash, opt-out confirmation hash or
        public request number."""
        query = select(subject_requests)
        if request_id is not None:
            query = query.where(subject_requests.c.id == request_id)
        elif public_id is not None:
            query = query.where(subject_requests.c.public_id == public_id)
        elif confirm_hash is not None:
            query = query.where(subject_requests.c.confirm_token_hash == confirm_hash)
        else:
            query = query.where(subject_requests.c.report_token_hash == token_hash)
        if conn is None:
            with self.engine.connect() as own:
                row = own.execute(query).mappings().first()
        else:
            row = conn.execute(query).mappings().first()
        return SubjectRequest(**row) if row else None

    def all(self, kind: str | None = None) -> list[SubjectRequest]:
        query = select(subject_requests).order_by(subject_requests.c.id.desc())
        if kind:
            query = query.where(subject_requests.c.kind == kind)
        with self.engine.connect() as conn:
            return [SubjectRequest(**r) for r in conn.execute(query).mappings()]

    def update(self, conn: Connection, request_id: int, **values: object) -> None:
        conn.execute(update(subject_requests).where(subject_requests.c.id == request_id).values(**values))

    def change(self, conn: Connection, request_id: int, was: str, **values: object) -> bool:
        """Update a request only if its status is still was; whether it was."""
        return conn.execute(update(subject_requests).where(
            subject_requests.c.id == request_id, subject_requests.c.status == was)
            .values(**values)).rowcount == 1

    def forget_contacts(self, conn: Connection, decided_before: str) -> int:
        """Clear the contact details of access requests answered (approved, rejected or
        delivered) before decided_before, and the template of an approved one whose link was
        never used (it has expired by then); the requests stay on record. Returns how many."""
        return conn.execute(update(subject_requests).where(
            subject_requests.c.kind == "access",
            subject_requests.c.status.in_(["approved", "rejected", "delivered"]),
            subject_requests.c.decided_at < decided_before,
            subject_requests.c.contact != "").values(contact="", template=None)).rowcount

    def spend_report_link(self, conn: Connection, request_id: int, now: str) -> bool:
        """Mark an approved request's link used, if it is unused and unexpired: one
        conditional UPDATE, so that of two uses at once exactly one gets True."""
        r = subject_requests.c
        return conn.execute(update(subject_requests).where(
            r.id == request_id, r.status == "approved", r.report_used_at.is_(None),
            r.template.is_not(None), r.report_expires_at >= now).values(
            status="delivered", report_used_at=now)).rowcount == 1

    def finish_confirmation(self, conn: Connection, request_id: int, now: str) -> bool:
        """Mark a hidden opt-out confirmed (done), if it still waits and its time is not up:
        one conditional UPDATE, so that a confirmation counts once."""
        r = subject_requests.c
        return conn.execute(update(subject_requests).where(
            r.id == request_id, r.status == "hidden", r.confirm_expires_at >= now).values(
            status="done", confirm_token_hash=None, photo_hash=None)).rowcount == 1

    # Suppressions made by opt-outs (named by their reason) ------------------------------------

    def suppression_of(self, reason: str) -> bytes | None:
        with self.engine.connect() as conn:
            return conn.execute(select(suppressions.c.embedding)
                                .where(suppressions.c.reason == reason)).scalars().first()

    def drop_suppression(self, conn: Connection, reason: str) -> int:
        return conn.execute(delete(suppressions).where(suppressions.c.reason == reason)).rowcount

    # Per-client counters -------------------------------------------------------------------

    def take(self, conn: Connection, client_hash: str, kind: str, since: str, now: str,
             limit: int) -> bool:
        """Count one use of the client's allowance of kind, if fewer than limit were used in
        its current window; a window begun before since starts again now. Conditional
        updates of one row: parallel requests are counted one after another."""
        key = self._ensure(conn, client_hash, kind, now)
        t = public_allowances.c
        conn.execute(update(public_allowances).where(key, t.window_start < since)
                     .values(window_start=now, used=0))
        return conn.execute(update(public_allowances).where(key, t.used < limit)
                            .values(used=t.used + 1)).rowcount == 1

    def give_back(self, conn: Connection, client_hash: str, kind: str) -> None:
        """Return one use taken with take (the request failed, so it does not count)."""
        t = public_allowances.c
        conn.execute(update(public_allowances).where(
            t.client_hash == client_hash, t.kind == kind, t.used > 0).values(used=t.used - 1))

    def count_refusal(self, conn: Connection, client_hash: str, kind: str, since: str,
                      now: str) -> int | None:
        """Count a refusal in the client's window of kind. When this opens a window (the
        first refusal, or the first after the window began before since), the number
        refused in the window that closed (0 if none); otherwise None."""
        key = self._ensure(conn, client_hash, kind, now)
        t = public_allowances.c
        used, started = conn.execute(select(t.used, t.window_start).where(key)
                                     .with_for_update()).one()
        if started < since:
            conn.execute(update(public_allowances).where(key).values(window_start=now, used=1))
            return used
        conn.execute(update(public_allowances).where(key).values(used=t.used + 1))
        return 0 if used == 0 else None

    def forget_clients(self, conn: Connection, before: str) -> tuple[int, int]:
        """Delete the counters whose window began before `before` (no window is longer than
        a day, so these are over): the table keeps no address hash longer than it needs.
        Returns (counters deleted, refusals they counted that no audit record reported)."""
        t = public_allowances.c
        old = t.window_start < before
        unreported = conn.execute(select(func.coalesce(func.sum(t.used - 1), 0)).where(
            old, t.kind.startswith("refused:"), t.used > 1)).scalar_one()
        return conn.execute(delete(public_allowances).where(old)).rowcount, int(unreported)

    def _ensure(self, conn: Connection, client_hash: str, kind: str, now: str) -> ColumnElement[bool]:
        """Create the client's counter of kind (empty, window starting now) unless it exists,
        without failing when a parallel request creates it first; its row's condition."""
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(dialect.insert(public_allowances).values(
            client_hash=client_hash, kind=kind, window_start=now, used=0).on_conflict_do_nothing())
        return and_(public_allowances.c.client_hash == client_hash, public_allowances.c.kind == kind)

    def provenance(self, face_ids: list[int]) -> tuple[list[dict], dict[int, list[dict]]]:
        """For an access report: each face's image, source and lawful basis, and per face the
        searches that returned it (case number, organisation, whether the organisation lets
        its case numbers be shown, date)."""
        query = (select(faces.c.id, images.c.id.label("image_id"), images.c.location,
                        images.c.page_url, images.c.jurisdiction, images.c.collected_at,
                        sources.c.name, sources.c.display_name, sources.c.lawful_basis,
                        sources.c.retention_days)
                 .join(images, faces.c.image_id == images.c.id)
                 .join(sources, images.c.source_id == sources.c.id)
                 .where(faces.c.id.in_(face_ids)))
        searched = (select(candidates.c.face_id, cases.c.number, organisations.c.name,
                           organisations.c.reveal_case_numbers, searches.c.at)
                    .join(searches, candidates.c.search_id == searches.c.id)
                    .join(cases, searches.c.case_id == cases.c.id)
                    .join(organisations, cases.c.organisation_id == organisations.c.id)
                    .where(candidates.c.face_id.in_(face_ids)).order_by(searches.c.at))
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
            by_face: dict[int, list[dict]] = {}
            for face_id, number, organisation, reveal, at in conn.execute(searched).all():
                by_face.setdefault(face_id, []).append(
                    {"case": number, "organisation": organisation, "reveal": reveal, "date": at})
        return rows, by_face

    # Notifications ------------------------------------------------------------------------

    def unseen(self, user_id: int) -> list[Notification]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(notifications.c.id, notifications.c.message,
                                       notifications.c.created_at)
                                .where(notifications.c.user_id == user_id,
                                       notifications.c.seen_at.is_(None))
                                .order_by(notifications.c.id.desc())).mappings()  # newest first
            return [Notification(**r) for r in rows]

    def mark_seen(self, conn: Connection, ids: list[int], now: str) -> None:
        conn.execute(update(notifications).where(notifications.c.id.in_(ids)).values(seen_at=now))
