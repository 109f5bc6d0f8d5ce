"""Case watches, their matches, and the notices they send (service.watches)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from facesearch.store.metadata import from_blob
from facesearch.store.schema import (
    faces,
    images,
    notifications,
    organisations,
    suppressions,
    users,
    watch_matches,
    watches,
)


@dataclass(frozen=True)
class WatchMatch:
    id: int
    watch_id: int
    image_sha256: str
    face_id: int  # the face may since have been erased
    distance: float
    at: str
    emailed: bool


@dataclass
class Watch:
    """A watch as its case shows it: everything but its template."""

    id: int
    case_id: int
    organisation_id: int
    kind: str  # probe or identity
    identity_id: int | None
    embedder: str
    probe_photos: list[str]  # sha256 of the probe photo (none for an identity)
    authorisation: str
    note: str
    requested_by: int | None
    requested_actor: str
    requested_at: str
    approved_by: int | None
    approved_at: str | None
    expires_at: str
    status: str  # pending, active, refused, stopped or expired
    stopped_at: str | None
    stopped_reason: str | None
    matches: list[WatchMatch] = field(default_factory=list)


_SHOWN = [watches.c[name] for name in Watch.__dataclass_fields__ if name != "matches"]


def _watch(row: dict) -> Watch:
    return Watch(**dict(row, probe_photos=json.loads(row["probe_photos"])))


class WatchStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, conn: Connection, template: np.ndarray, probe_photos: list[str],
            **values: object) -> int:
        return conn.execute(insert(watches).values(
            template=template.astype("<f4").tobytes(), probe_photos=json.dumps(probe_photos),
            status="pending", **values)).inserted_primary_key[0]

    def watch(self, watch_id: int, conn: Connection | None = None) -> Watch | None:
        if conn is None:
            with self.engine.connect() as own:
                return self.watch(watch_id, own)
        row = conn.execute(select(*_SHOWN).where(watches.c.id == watch_id)).mappings().first()
        return _watch(row) if row else None

    def of_case(self, case_id: int) -> list[Watch]:
        """A case's watches, newest first, each with its matches (oldest first)."""
        with self.engine.connect() as conn:
            found = [_watch(r) for r in conn.execute(
                select(*_SHOWN).where(watches.c.case_id == case_id)
                .order_by(watches.c.id.desc())).mappings()]
            by_id = {w.id: w for w in found}
            if by_id:
                for r in conn.execute(select(watch_matches).where(
                        watch_matches.c.watch_id.in_(list(by_id))).order_by(watch_matches.c.id)).mappings():
                    by_id[r["watch_id"]].matches.append(WatchMatch(**r))
        return found

    def pending(self, organisation_id: int) -> list[Watch]:
        """The organisation's watches awaiting a supervisor, oldest first."""
        with self.engine.connect() as conn:
            return [_watch(r) for r in conn.execute(
                select(*_SHOWN).where(watches.c.organisation_id == organisation_id,
                                      watches.c.status == "pending")
                .order_by(watches.c.id)).mappings()]

    def change(self, conn: Connection, watch_id: int, was: tuple[str, ...],
               **values: object) -> bool:
        """Update a watch only if its status is still one of was; whether it was."""
        return conn.execute(update(watches).where(watches.c.id == watch_id,
                                                  watches.c.status.in_(was))
                            .values(**values)).rowcount == 1

    def expired(self, conn: Connection, now: str) -> list[Watch]:
        """Pending or active watches past their expiry."""
        return [_watch(r) for r in conn.execute(select(*_SHOWN).where(
            watches.c.status.in_(("pending", "active")), watches.c.expires_at <= now)
            .order_by(watches.c.id)).mappings()]

    def by_other_model(self, conn: Connection, embedder: str) -> list[Watch]:
        """Pending or active watches whose template is not by embedder."""
        return [_watch(r) for r in conn.execute(select(*_SHOWN).where(
            watches.c.status.in_(("pending", "active")), watches.c.embedder != embedder)
            .order_by(watches.c.id)).mappings()]

    def stopped_for(self, conn: Connection, reason: str) -> list[Watch]:
        """Watches stopped for exactly this reason."""
        return [_watch(r) for r in conn.execute(select(*_SHOWN).where(
            watches.c.status == "stopped", watches.c.stopped_reason == reason)
            .order_by(watches.c.id)).mappings()]

    def template(self, conn: Connection, watch_id: int) -> np.ndarray:
        return from_blob(conn.execute(select(watches.c.template)
                                      .where(watches.c.id == watch_id)).scalar_one())

    def of_open_case(self, conn: Connection, case_id: int) -> list[Watch]:
        """A case's pending and active watches."""
        return [_watch(r) for r in conn.execute(select(*_SHOWN).where(
            watches.c.case_id == case_id, watches.c.status.in_(("pending", "active")))).mappings()]

    def live(self, conn: Connection, embedder: str,
             statuses: tuple[str, ...]) -> tuple[list[Watch], np.ndarray]:
        """Watches of these statuses whose template is by embedder, and their templates (one
        a row). A watch by another model (the gallery switched since) cannot be compared."""
        rows = conn.execute(select(*_SHOWN, watches.c.template).where(
            watches.c.status.in_(statuses), watches.c.embedder == embedder)
            .order_by(watches.c.id)).mappings().all()
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        return ([_watch({k: v for k, v in r.items() if k != "template"}) for r in rows],
                np.stack([from_blob(r["template"]) for r in rows]))

    def suppression_templates(self, embedder: str, conn: Connection) -> np.ndarray:
        """The suppressions' templates by embedder, read in conn's transaction."""
        blobs = list(conn.execute(select(suppressions.c.embedding)
                                  .where(suppressions.c.embedder == embedder)).scalars())
        return np.stack([from_blob(b) for b in blobs]) if blobs else np.zeros((0, 0), np.float32)

    def batch_faces(self, conn: Connection, face_ids: list[int]) -> dict[int, tuple[str, str]]:
        """Each new face's image sha256 and jurisdiction, read in the batch's transaction."""
        rows = conn.execute(select(faces.c.id, images.c.sha256, images.c.jurisdiction)
                            .join(images, faces.c.image_id == images.c.id)
                            .where(faces.c.id.in_(face_ids))).all()
        return {face_id: (sha256, jurisdiction) for face_id, sha256, jurisdiction in rows}

    def organisation_jurisdictions(self, conn: Connection,
                                   organisation_ids: set[int]) -> dict[int, frozenset[str]]:
        """The jurisdictions each organisation may see (empty: all)."""
        rows = conn.execute(select(organisations.c.id, organisations.c.jurisdictions)
                            .where(organisations.c.id.in_(organisation_ids))).all()
        return {i: frozenset(code for code in codes.split(",") if code) for i, codes in rows}

    def identity_descriptors(self, identity_id: int, jurisdictions: frozenset[str]) -> np.ndarray:
        """The descriptors of an identity's faces in images of these jurisdictions (empty:
        all); none, an empty array."""
        query = (select(faces.c.embedding).join(images, faces.c.image_id == images.c.id)
                 .where(faces.c.identity_id == identity_id))
        if jurisdictions:
            query = query.where(images.c.jurisdiction.in_(jurisdictions))
        with self.engine.connect() as conn:
            blobs = list(conn.execute(query).scalars())
        return np.stack([from_blob(b) for b in blobs]) if blobs else np.zeros((0, 0), np.float32)

    def add_match(self, conn: Connection, **values: object) -> int | None:
        """Record a match if the watch is still active and has not matched this image (its
        sha256) before; the match's id, or None. The status is read again here: a stop
        committed after the batch read its watches is seen (the caller holds the audit lock,
        which a stop needs to commit, so none commits between this read and the batch's
        commit). Batches are written one at a time (the writer lock), so the check and the
        insert cannot interleave with another batch's."""
        status = conn.execute(select(watches.c.status)
                              .where(watches.c.id == values["watch_id"])).scalar()
        if status != "active":
            return None
        seen = conn.execute(select(watch_matches.c.id).where(
            watch_matches.c.watch_id == values["watch_id"],
            watch_matches.c.image_sha256 == values["image_sha256"])).first()
        if seen is not None:
            return None
        return conn.execute(insert(watch_matches).values(emailed=False, **values)).inserted_primary_key[0]

    def delete_matches_before(self, conn: Connection, cut: str) -> int:
        """Delete matches recorded before cut (retention, like candidate lists); how many."""
        return conn.execute(delete(watch_matches).where(watch_matches.c.at < cut)).rowcount

    def notify(self, conn: Connection, user_id: int, message: str, now: str) -> None:
        conn.execute(insert(notifications).values(user_id=user_id, message=message, created_at=now))

    def committed_matches(self, match_ids: list[int]) -> set[int]:
        """Which of these matches are committed (a batch rolled back leaves none)."""
        with self.engine.connect() as conn:
            return set(conn.execute(select(watch_matches.c.id)
                                    .where(watch_matches.c.id.in_(match_ids))).scalars())

    def mark_emailed(self, match_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(watch_matches).where(watch_matches.c.id == match_id)
                         .values(emailed=True))

    def username(self, user_id: int) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(users.c.username).where(users.c.id == user_id)).scalar()

    def active_by_organisation(self, now: str) -> list[dict]:
        """For the record of processing: unexpired active watches, by organisation, with the
        latest expiry."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(organisations.c.name, func.count(), func.max(watches.c.expires_at))
                                .join(organisations, watches.c.organisation_id == organisations.c.id)
                                .where(watches.c.status == "active", watches.c.expires_at > now)
                                .group_by(organisations.c.name).order_by(organisations.c.name)).all()
        return [{"organisation": name, "active_watches": count, "latest_expiry": latest}
                for name, count, latest in rows]
