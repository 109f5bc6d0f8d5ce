"""Data-subject requests and user notifications."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from facesearch.store.schema import (
    candidates,
    cases,
    faces,
    images,
    notifications,
    organisations,
    searches,
    sources,
    subject_requests,
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
            conn: Connection | None = None) -> SubjectRequest | None:
        query = select(subject_requests)
        query = (query.where(subject_requests.c.id == request_id) if request_id is not None
                 else query.where(subject_requests.c.report_token_hash == token_hash))
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

    def forget_contacts(self, conn: Connection, decided_before: str) -> int:
        """Clear the contact details of access requests answered (approved, rejected or
        delivered) before decided_before; the requests stay on record. Returns how many."""
        return conn.execute(update(subject_requests).where(
            subject_requests.c.kind == "access",
            subject_requests.c.status.in_(["approved", "rejected", "delivered"]),
            subject_requests.c.decided_at < decided_before,
            subject_requests.c.contact != "").values(contact="")).rowcount

    def from_client_since(self, client_hash: str, since: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(subject_requests).where(
                subject_requests.c.client_hash == client_hash,
                subject_requests.c.received_at >= since)).scalar_one()

    def provenance(self, face_ids: list[int]) -> tuple[list[dict], dict[int, list[dict]]]:
        """For an access report: each face's image, source and lawful basis, and per face the
        searches that returned it (case number, organisation, date)."""
        query = (select(faces.c.id, images.c.id.label("image_id"), images.c.location,
                        images.c.page_url, images.c.jurisdiction, images.c.collected_at,
                        sources.c.name, sources.c.lawful_basis, sources.c.retention_days)
                 .join(images, faces.c.image_id == images.c.id)
                 .join(sources, images.c.source_id == sources.c.id)
                 .where(faces.c.id.in_(face_ids)))
        searched = (select(candidates.c.face_id, cases.c.number, organisations.c.name, searches.c.at)
                    .join(searches, candidates.c.search_id == searches.c.id)
                    .join(cases, searches.c.case_id == cases.c.id)
                    .join(organisations, cases.c.organisation_id == organisations.c.id)
                    .where(candidates.c.face_id.in_(face_ids)).order_by(searches.c.at))
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
            by_face: dict[int, list[dict]] = {}
            for face_id, number, organisation, at in conn.execute(searched).all():
                by_face.setdefault(face_id, []).append(
                    {"case": number, "organisation": organisation, "date": at})
        return rows, by_face

    # Notifications ------------------------------------------------------------------------

    def unseen(self, user_id: int) -> list[Notification]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(notifications.c.id, notifications.c.message,
                                       notifications.c.created_at)
                                .where(notifications.c.user_id == user_id,
                                       notifications.c.seen_at.is_(None))
                                .order_by(notifications.c.id)).mappings()
            return [Notification(**r) for r in rows]

    def mark_seen(self, conn: Connection, ids: list[int], now: str) -> None:
        conn.execute(update(notifications).where(notifications.c.id.in_(ids)).values(seen_at=now))
