"""The metadata store: sources, images, faces, suppressions and pending erasures."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import String, cast, create_engine, delete, event, func, insert, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url

from facesearch.store.identities import delete_empty_identities
from facesearch.store.migrate import upgrade
from facesearch.store.schema import (
    candidates,
    cases,
    erasure_log,
    faces,
    images,
    face_descriptors,
    index_state,
    marks,
    notifications,
    pending_erasures,
    searches,
    sightings,
    sources,
    suppression_descriptors,
    suppressions,
    watch_matches,
)
from facesearch.types import Box, Face


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


@dataclass(frozen=True)
class Source:
    id: int
    name: str
    lawful_basis: str
    jurisdiction: str
    description: str
    created_at: str
    retention_days: int
    display_name: str = ""  # what people are shown; the name where empty


@dataclass(frozen=True)
class IndexedImage:
    sha256: str
    location: str
    faces: int


@dataclass(frozen=True)
class NewImage:
    sha256: str
    location: str
    page_url: str | None
    source_id: int
    jurisdiction: str
    collected_at: str
    width: int
    height: int
    format: str
    provenance: str = "{}"  # JSON
    phash: str | None = None  # imaging.perceptual_hashes of its pixels


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
    cursor = dbapi_connection.cursor()
    # WAL keeps committed transactions through a SIGKILL and lets readers run beside the writer.
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed transaction survives a power cut too. NORMAL could lose the last
    # commits, and a lost deletion would bring back a face whose crop and vector are gone.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # A deleted row's bytes (a face's descriptor) are overwritten, not left in a free page.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _create_private_sqlite_file(url: str) -> None:
    """Create an SQLite database file readable by its owner only, whatever the umask: it holds
    biometric descriptors. SQLite gives its -wal and -shm files the database file's mode."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return
    path = Path(parsed.database)
    # Never open an existing database file outside SQLite: closing that descriptor drops
    # the POSIX locks this process's SQLite connections hold on it, and another process
    # then deletes the -wal file under them (commits lost, readers see stale data).
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)


class MetadataStore:
    """All metadata reads and writes, on SQLite or PostgreSQL by URL. A method that takes a
    connection joins the caller's transaction (so the service can audit in it); every other
    method is a transaction of its own."""

    def __init__(self, url: str, now: Callable[[], str] = utc_now) -> None:
        self.now = now  # the service's clock, so that tests can move time
        _create_private_sqlite_file(url)
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        upgrade(self.engine)  # the schema, by Alembic's migrations

    def close(self) -> None:
        self.engine.dispose()

    # Sources -----------------------------------------------------------------------------

    def add_source(self, name: str, lawful_basis: str, jurisdiction: str, description: str,
                   retention_days: int, display_name: str = "") -> Source:
        with self.engine.begin() as conn:
            conn.execute(insert(sources).values(
                name=name, lawful_basis=lawful_basis, jurisdiction=jurisdiction,
                description=description, created_at=self.now(), retention_days=retention_days,
                display_name=display_name))
        source = self.source(name)
        assert source is not None
        return source

    def source(self, name: str) -> Source | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sources).where(sources.c.name == name)).mappings().first()
        return Source(**row) if row else None

    def sources(self) -> list[Source]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(sources).order_by(sources.c.name)).mappings().all()
        return [Source(**r) for r in rows]

    # Images and faces ---------------------------------------------------------------------

    def indexed_image(self, *, sha256: str | None = None,
                      location: str | None = None) -> IndexedImage | None:
        """The indexed image with these bytes, or at this location, with its face count."""
        query = (select(images.c.sha256, images.c.location, func.count(faces.c.id))
                 .select_from(images).outerjoin(faces, faces.c.image_id == images.c.id)
                 .group_by(images.c.id))
        query = (query.where(images.c.sha256 == sha256) if sha256 is not None
                 else query.where(images.c.location == location))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return IndexedImage(row[0], row[1], int(row[2])) if row else None

    def known_hashes(self, hashes: list[str]) -> set[str]:
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(hashes), 500):
                chunk = hashes[start:start + 500]
                found.update(conn.execute(
                    select(images.c.sha256).where(images.c.sha256.in_(chunk))).scalars())
        return found

    def add_image(self, conn: Connection, image: NewImage, found: list[Face],
                  crop_paths: list[str], withheld: int, embedder: str) -> list[int]:
        """Insert an image, its first sighting (where it was collected) and its faces inside
        conn's transaction; returns the new face ids."""
        image_id = conn.execute(insert(images).values(
            **image.__dict__, withheld_faces=withheld)).inserted_primary_key[0]
        conn.execute(insert(sightings).values(
            image_id=image_id, location=image.location, page_url=image.page_url or "",
            source_id=image.source_id, seen_at=image.collected_at))
        face_ids = []
        for position, (face, crop) in enumerate(zip(found, crop_paths)):
            face_ids.append(conn.execute(insert(faces).values(
                image_id=image_id, face_index=position,
                box_left=face.box.left, box_top=face.box.top,
                box_right=face.box.right, box_bottom=face.box.bottom,
                landmarks=json.dumps(face.landmarks), detector_score=face.score,
                # quality: the sharpness, under the column's name from before the record.
                quality=face.quality.sharpness, face_pixels=face.quality.face_pixels,
                sharpness=face.quality.sharpness, yaw=face.quality.yaw,
                pitch=face.quality.pitch, roll=face.quality.roll,
                crop_path=crop, embedding=to_blob(face.embedding),
                embedder=embedder, chip_geometry=json.dumps(face.chip_geometry),
            )).inserted_primary_key[0])
        return face_ids

    def add_sighting(self, conn: Connection, sha256: str, location: str, page_url: str | None,
                     source_id: int, seen_at: str) -> bool:
        """Record in conn's transaction that the stored image with these bytes was seen at
        location (on page_url); False if no such image is stored, or this place is already
        recorded for it (a re-run of the same ingest adds nothing)."""
        image_id = conn.execute(select(images.c.id).where(images.c.sha256 == sha256)).scalar()
        if image_id is None:
            return False
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        added = conn.execute(dialect.insert(sightings).values(
            image_id=image_id, location=location, page_url=page_url or "", source_id=source_id,
            seen_at=seen_at).on_conflict_do_nothing().returning(sightings.c.id))
        return added.first() is not None  # (rowcount is -1 here with psycopg)

    def sightings_of(self, image_ids: list[int]) -> dict[int, list[dict]]:
        """Every place each image was seen, first seen first: location, page_url ("" for
        none), source, the source's jurisdiction and seen_at. For a candidate list's images:
        at most max_candidates ids."""
        query = (select(sightings.c.image_id, sightings.c.location, sightings.c.page_url,
                        sources.c.name.label("source"), sources.c.jurisdiction,
                        sightings.c.seen_at)
                 .join(sources, sightings.c.source_id == sources.c.id)
                 .where(sightings.c.image_id.in_(image_ids))
                 .order_by(sightings.c.seen_at, sightings.c.id))
        found: dict[int, list[dict]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query).mappings():
                found.setdefault(row["image_id"], []).append(
                    {k: row[k] for k in ("location", "page_url", "source", "jurisdiction",
                                         "seen_at")})
        return found

    def grouping_rows(self, face_ids: list[int]) -> dict[int, dict]:
        """For each face that still exists among face_ids (a candidate list's): its image
        (id, sha256, phash), identity, crop and chip geometry, to group search results."""
        query = (select(faces.c.id, faces.c.image_id, faces.c.identity_id, faces.c.crop_path,
                        faces.c.chip_geometry, images.c.sha256, images.c.phash)
                 .join(images, faces.c.image_id == images.c.id)
                 .where(faces.c.id.in_(face_ids)))
        with self.engine.connect() as conn:
            return {r["id"]: dict(r) for r in conn.execute(query).mappings()}

    def face_vectors(self, after_id: int = 0, chunk: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of all faces with id > after_id, in id order, chunk by chunk."""
        last = after_id
        with self.engine.connect() as conn:
            while True:
                rows = conn.execute(
                    select(faces.c.id, faces.c.embedding).where(faces.c.id > last)
                    .order_by(faces.c.id).limit(chunk)).all()
                if not rows:
                    return
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
                yield ids, vectors
                last = int(ids[-1])

    def vectors_of(self, face_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, descriptors) of the faces that still exist among face_ids."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(faces.c.id, faces.c.embedding).where(
                faces.c.id.in_([int(i) for i in face_ids]))).all()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 128), np.float32)
        return (np.array([r[0] for r in rows], np.int64),
                np.frombuffer(b"".join(r[1] for r in rows), "<f4").reshape(len(rows), -1))

    def face_attributes(self, face_ids: np.ndarray) -> dict[int, tuple[str, str]]:
        """(jurisdiction, source name) of each face that still exists among face_ids: what a
        vector index that files faces by them (Milvus) stores beside each vector."""
        ids = [int(i) for i in face_ids]
        found: dict[int, tuple[str, str]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 1000):
                found.update((r[0], (r[1], r[2])) for r in conn.execute(
                    select(faces.c.id, images.c.jurisdiction, sources.c.name)
                    .join(images, faces.c.image_id == images.c.id)
                    .join(sources, images.c.source_id == sources.c.id)
                    .where(faces.c.id.in_(ids[start:start + 1000]))).all())
        return found

    def candidate_rows(self, face_ids: list[int]) -> dict[int, dict]:
        """Face, image and source fields for each id that still exists (read 1,000 ids a
        query: databases bound the parameters of one)."""
        found: dict[int, dict] = {}
        for start in range(0, len(face_ids), 1000):
            found.update(self._candidate_rows(face_ids[start:start + 1000]))
        return found

    def _candidate_rows(self, face_ids: list[int]) -> dict[int, dict]:
        query = (
            select(
                faces.c.id.label("face_id"), faces.c.crop_path, faces.c.box_left,
                faces.c.box_top, faces.c.box_right, faces.c.box_bottom, faces.c.embedding,
                images.c.id.label("image_id"), images.c.sha256, images.c.location,
                images.c.page_url, images.c.jurisdiction, images.c.collected_at,
                sources.c.name.label("source"),
            )
            .join(images, faces.c.image_id == images.c.id)
            .join(sources, images.c.source_id == sources.c.id)
            .where(faces.c.id.in_(face_ids))
        )
        with self.engine.connect() as conn:
            return {r["face_id"]: dict(r) for r in conn.execute(query).mappings()}

    def faces_by_jurisdiction(self) -> dict[str, int]:
        query = (select(images.c.jurisdiction, func.count(faces.c.id))
                 .join(faces, faces.c.image_id == images.c.id).group_by(images.c.jurisdiction))
        with self.engine.connect() as conn:
            return dict(conn.execute(query).all())

    def expired_images(self, now: datetime) -> list[int]:
        """Ids of images collected longer ago than their source's retention period."""
        found: list[int] = []
        with self.engine.connect() as conn:
            for source_id, days in conn.execute(select(sources.c.id, sources.c.retention_days)).all():
                cutoff = (now - timedelta(days=days)).isoformat(timespec="seconds")
                found += conn.execute(select(images.c.id).where(
                    images.c.source_id == source_id, images.c.collected_at < cutoff)).scalars()
        return found

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                "sources": conn.execute(select(func.count()).select_from(sources)).scalar_one(),
                "images": conn.execute(select(func.count()).select_from(images)).scalar_one(),
                "faces": conn.execute(select(func.count()).select_from(faces)).scalar_one(),
                "suppressions": conn.execute(
                    select(func.count()).select_from(suppressions)).scalar_one(),
            }

    # Deletion -----------------------------------------------------------------------------

    def delete_faces(self, face_ids: list[int], conn: Connection) -> int:
        """Delete faces and journal their vectors and crops for erasure, inside conn's
        transaction. An image left with no face goes too: its location alone can point
        at the person; so does an identity left with no face."""
        deleted = 0
        for start in range(0, len(face_ids), 500):
            chunk = face_ids[start:start + 500]
            rows = conn.execute(select(faces.c.id, faces.c.crop_path, faces.c.image_id,
                                       faces.c.identity_id)
                                .where(faces.c.id.in_(chunk))).all()
            if not rows:
                continue
            conn.execute(insert(pending_erasures), [
                {"face_id": r[0], "crop_path": r[1]} for r in rows])
            conn.execute(insert(erasure_log), [{"face_id": r[0]} for r in rows])
            self._erase_from_candidate_lists(conn, [r[0] for r in rows])
            _erase_from_watch_matches(conn, [r[0] for r in rows])
            conn.execute(delete(faces).where(faces.c.id.in_(chunk)))
            touched = {r[2] for r in rows}
            conn.execute(delete(images).where(
                images.c.id.in_(touched), ~select(faces.c.id).where(
                    faces.c.image_id == images.c.id).exists()))
            # An image kept for its other faces still shows the erased person: counted with
            # the faces withheld at ingest, so that the whole image is never shown again.
            for image_id in touched:
                conn.execute(update(images).where(images.c.id == image_id).values(
                    withheld_faces=images.c.withheld_faces + sum(r[2] == image_id for r in rows)))
            # An identity left with no face goes too: it would be a group of nobody.
            delete_empty_identities(conn, [r[3] for r in rows])
            deleted += len(rows)
        return deleted

    def images_of_faces(self, conn: Connection, face_ids: list[int]) -> int:
        """How many distinct images hold these faces."""
        found: set[int] = set()
        for start in range(0, len(face_ids), 500):
            found.update(conn.execute(select(faces.c.image_id).where(
                faces.c.id.in_(face_ids[start:start + 500]))).scalars())
        return len(found)

    def _erase_from_candidate_lists(self, conn: Connection, face_ids: list[int]) -> None:
        """Blank erased faces' provenance in stored candidate lists, mark when, and tell each
        investigator who received one, on their next visit: one notice per search."""
        now = self.now()
        told = conn.execute(
            select(searches.c.user_id, searches.c.id, cases.c.number)
            .join(searches, candidates.c.search_id == searches.c.id)
            .join(cases, searches.c.case_id == cases.c.id)
            .where(candidates.c.face_id.in_(face_ids), candidates.c.erased_at.is_(None),
                   searches.c.user_id.is_not(None)).distinct()).all()
        # A note may describe the person: it goes with the face; who marked what, when stays.
        conn.execute(update(marks).where(marks.c.candidate_id.in_(
            select(candidates.c.id).where(candidates.c.face_id.in_(face_ids)))).values(note=""))
        conn.execute(update(candidates).where(
            candidates.c.face_id.in_(face_ids), candidates.c.erased_at.is_(None)).values(
            erased_at=now, image_sha256="", location="", page_url=None, source="",
            jurisdiction="", collected_at=""))
        for user_id, search_id, number in told:
            _notify_erased(conn, user_id, search_id, number, now)

    def delete_images_where(self, conn: Connection, *, image_sha256: str | None = None,
                            image_location: str | None = None, source: str | None = None,
                            jurisdiction: str | None = None,
                            image_ids: list[int] | None = None) -> tuple[int, int]:
        """Delete matching images with all their faces; returns (images, faces) deleted."""
        query = select(images.c.id)
        if image_sha256 is not None:
            query = query.where(images.c.sha256 == image_sha256)
        if image_location is not None:
            # The place it was collected from, or any other place it was seen: asked to remove
            # "the photo at X", the photo goes, not only the record of X.
            query = query.where(or_(images.c.location == image_location, select(sightings.c.id).where(
                sightings.c.image_id == images.c.id, sightings.c.location == image_location).exists()))
        if source is not None:
            query = query.join(sources, images.c.source_id == sources.c.id).where(
                sources.c.name == source)
        if jurisdiction is not None:
            query = query.where(images.c.jurisdiction == jurisdiction)
        if image_ids is not None:
            query = query.where(images.c.id.in_(image_ids))
        image_ids = list(conn.execute(query).scalars())
        face_total = 0
        for start in range(0, len(image_ids), 500):
            chunk = image_ids[start:start + 500]
            ids = list(conn.execute(select(faces.c.id).where(faces.c.image_id.in_(chunk))).scalars())
            face_total += self.delete_faces(ids, conn)
            conn.execute(delete(images).where(images.c.id.in_(chunk)))
        return len(image_ids), face_total

    def delete_source(self, conn: Connection, name: str) -> None:
        conn.execute(delete(sources).where(sources.c.name == name))

    def delete_sightings_by(self, conn: Connection, *, source: str | None = None,
                            jurisdiction: str | None = None) -> int:
        """Delete the sightings recorded by a source, or by the sources of a jurisdiction (of
        images still stored: other sources'); returns how many."""
        chosen = select(sources.c.id).where(
            sources.c.name == source if source is not None else sources.c.jurisdiction == jurisdiction)
        return conn.execute(delete(sightings).where(sightings.c.source_id.in_(chosen))).rowcount

    def delete_expired_sightings(self, conn: Connection, now: datetime) -> int:
        """Delete sightings seen longer ago than their own source's retention period (an image
        seen by a short-lived source outlives that sighting when another source collected it)."""
        deleted = 0
        for source_id, days in conn.execute(select(sources.c.id, sources.c.retention_days)).all():
            cutoff = (now - timedelta(days=days)).isoformat(timespec="seconds")
            deleted += conn.execute(delete(sightings).where(
                sightings.c.source_id == source_id, sightings.c.seen_at < cutoff)).rowcount
        return deleted

    def pending_erasures(self) -> list[tuple[int, str]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(pending_erasures)).all()]

    def erasures_after(self, seq: int) -> tuple[np.ndarray, int]:
        """Ids of faces erased after sequence number seq, and the last sequence number."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(erasure_log.c.seq, erasure_log.c.face_id)
                                .where(erasure_log.c.seq > seq).order_by(erasure_log.c.seq)).all()
        if not rows:
            return np.zeros(0, np.int64), seq
        return np.array([r[1] for r in rows], np.int64), int(rows[-1][0])

    def last_erasure(self) -> int:
        """The sequence number of the latest erasure (0 if none)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(erasure_log.c.seq))).scalar() or 0)

    def index_generation(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(index_state.c.generation)).scalar_one())

    def next_index_generation(self) -> int:
        """Raise the generation of the index files on disk (called under the writer lock)."""
        with self.engine.begin() as conn:
            conn.execute(update(index_state).where(index_state.c.id == 1)
                         .values(generation=index_state.c.generation + 1))
            return int(conn.execute(select(index_state.c.generation)).scalar_one())

    def face_ids(self) -> np.ndarray:
        """Every stored face id, ascending."""
        with self.engine.connect() as conn:
            return np.fromiter(conn.execute(select(faces.c.id).order_by(faces.c.id)).scalars(),
                               np.int64)

    def crop_paths(self) -> set[str]:
        """The crop file of every stored face, relative to the crops directory."""
        with self.engine.connect() as conn:
            return set(conn.execute(select(faces.c.crop_path)).scalars())

    def flush_deleted(self) -> None:
        """SQLite: copy the write-ahead log into the database and truncate it, so that the
        log's older copies of erased rows leave the disk too (secure_delete already zeroes
        them in the database file). Best effort: readers of an older snapshot make SQLite
        keep the log, and the next erasure tries again."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                # Without waiting: busy readers make it give up at once, not hold the writer.
                conn.exec_driver_sql("PRAGMA busy_timeout=0")
                try:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    conn.exec_driver_sql("PRAGMA busy_timeout=30000")

    def clear_erasures(self, face_ids: list[int]) -> None:
        with self.engine.begin() as conn:
            for start in range(0, len(face_ids), 500):
                conn.execute(delete(pending_erasures).where(
                    pending_erasures.c.face_id.in_(face_ids[start:start + 500])))

    # Suppression --------------------------------------------------------------------------

    def add_suppressions(self, conn: Connection, templates: list[Face], reason: str,
                         embedder: str) -> None:
        """Suppress the people of these faces: their descriptors (by embedder) and face chips."""
        now = self.now()
        conn.execute(insert(suppressions), [
            {"embedding": to_blob(t.embedding), "reason": reason, "created_at": now,
             "embedder": embedder, "chip": t.chip_jpeg,
             "chip_geometry": json.dumps(t.chip_geometry)} for t in templates])

    # The live embedder and re-embedding -------------------------------------------------

    def live_embedder(self) -> str | None:
        """The embedder of every stored descriptor; None before the first is stored."""
        with self.engine.connect() as conn:
            return conn.execute(select(index_state.c.embedder)).scalar_one()

    def claim_embedder(self, conn: Connection, embedder: str) -> str:
        """The live embedder, set to embedder if none is yet (in conn's transaction)."""
        live = conn.execute(select(index_state.c.embedder)).scalar_one()
        if live is None:
            conn.execute(update(index_state).where(index_state.c.id == 1).values(embedder=embedder))
            return embedder
        return live

    def faces_to_reembed(self, embedder: str, after_id: int, limit: int) -> list[tuple[int, str, dict | None]]:
        """(id, crop path, chip geometry) of faces past after_id, in id order, that have no
        descriptor by embedder yet."""
        done = select(face_descriptors.c.face_id).where(
            face_descriptors.c.face_id == faces.c.id, face_descriptors.c.embedder == embedder)
        with self.engine.connect() as conn:
            rows = conn.execute(select(faces.c.id, faces.c.crop_path, faces.c.chip_geometry)
                                .where(faces.c.id > after_id, ~done.exists())
                                .order_by(faces.c.id).limit(limit)).all()
        return [(r[0], r[1], json.loads(r[2]) if r[2] else None) for r in rows]

    def suppressions_to_reembed(self, embedder: str) -> list[tuple[int, bytes | None, dict | None]]:
        """(id, chip, geometry) of suppressions with no descriptor by embedder yet."""
        done = select(suppression_descriptors.c.suppression_id).where(
            suppression_descriptors.c.suppression_id == suppressions.c.id,
            suppression_descriptors.c.embedder == embedder)
        with self.engine.connect() as conn:
            rows = conn.execute(select(suppressions.c.id, suppressions.c.chip,
                                       suppressions.c.chip_geometry)
                                .where(~done.exists(), suppressions.c.embedder != embedder)).all()
        return [(r[0], r[1], json.loads(r[2]) if r[2] else None) for r in rows]

    def add_descriptors(self, conn: Connection, embedder: str, face_vectors: list[tuple[int, np.ndarray]],
                        suppression_vectors: list[tuple[int, np.ndarray]] = ()) -> None:
        if face_vectors:
            conn.execute(insert(face_descriptors), [
                {"face_id": i, "embedder": embedder, "embedding": to_blob(v)} for i, v in face_vectors])
        if suppression_vectors:
            conn.execute(insert(suppression_descriptors), [
                {"suppression_id": i, "embedder": embedder, "embedding": to_blob(v)}
                for i, v in suppression_vectors])

    def face_total(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(faces)).scalar_one())

    def existing_faces(self, conn: Connection, face_ids: list[int]) -> list[int]:
        return list(conn.execute(select(faces.c.id).where(faces.c.id.in_(face_ids))).scalars())

    def reembedded(self, embedder: str) -> int:
        """Faces that have a descriptor by embedder waiting for the switch."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(face_descriptors)
                                    .where(face_descriptors.c.embedder == embedder)).scalar_one())

    def switch_embedder(self, conn: Connection, old: str, new: str) -> None:
        """Make new the live embedder in conn's transaction: its waiting descriptors move into
        faces and suppressions, and theirs wait under old, for a switch back. The caller has
        checked that every face and suppression has one."""
        for table, waiting, key in ((faces, face_descriptors, "face_id"),
                                    (suppressions, suppression_descriptors, "suppression_id")):
            conn.execute(delete(waiting).where(waiting.c.embedder == old))
            conn.execute(insert(waiting).from_select(
                [key, "embedder", "embedding"],
                select(table.c.id, table.c.embedder, table.c.embedding)))
            moved = select(waiting.c.embedding).where(
                waiting.c[key] == table.c.id, waiting.c.embedder == new).scalar_subquery()
            conn.execute(update(table).values(embedding=moved, embedder=new))
            conn.execute(delete(waiting).where(waiting.c.embedder == new))
        conn.execute(update(index_state).where(index_state.c.id == 1).values(embedder=new))

    def suppression_templates(self) -> np.ndarray:
        with self.engine.connect() as conn:
            blobs = list(conn.execute(select(suppressions.c.embedding)).scalars())
        if not blobs:
            return np.zeros((0, 128), dtype=np.float32)
        return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1)

    def transaction(self) -> AbstractContextManager[Connection]:
        return self.engine.begin()


def box_of(row: dict) -> Box:
    return Box(row["box_left"], row["box_top"], row["box_right"], row["box_bottom"])


# A mark as the erasure notice names it.
MARK_WORDS = {"confirmed": "confirmed", "possible": "possible match", "rejected": "not a match"}


def _notify_erased(conn: Connection, user_id: int, search_id: int, number: str, now: str) -> None:
    """Tell user_id which candidates of their search have been erased, the marked ones with
    their mark: one notice per search, replacing one not yet seen (an erasure in several
    steps, or another since), so that the reader gets one line per search. Ranks and marks
    only: nothing of the face or where it was found."""
    erased = conn.execute(select(candidates.c.id, candidates.c.probe_face, candidates.c.rank)
                          .where(candidates.c.search_id == search_id,
                                 candidates.c.erased_at.is_not(None))
                          .order_by(candidates.c.probe_face, candidates.c.rank)).all()
    latest = dict(conn.execute(select(marks.c.candidate_id, marks.c.mark)
                               .where(marks.c.candidate_id.in_([c[0] for c in erased]),
                                      marks.c.withdrawn_at.is_(None))
                               .order_by(marks.c.id)).all())  # the latest mark wins
    # A search of several probe faces ranks the candidates of each: name the face too.
    several_faces = bool(conn.execute(select(func.max(candidates.c.probe_face))
                                      .where(candidates.c.search_id == search_id)).scalar())

    def named(probe_face: int, rank: int) -> str:
        return f"#{rank} of face {probe_face + 1}" if several_faces else f"#{rank}"

    marked = [f"{named(f, r)} {MARK_WORDS.get(latest[i], latest[i])}" for i, f, r in erased if i in latest]
    unmarked = [named(f, r) for i, f, r in erased if i not in latest]
    parts = []
    if marked:
        parts.append(f"{len(marked)} marked candidate{'s' * (len(marked) != 1)} ({', '.join(marked)})")
    if unmarked:
        others = "other " if marked else ""
        parts.append(f"{len(unmarked)} {others}candidate{'s' * (len(unmarked) != 1)} "
                     f"({', '.join(unmarked)})")
    several = len(erased) != 1
    prefix = f"Search {search_id} in case "
    message = (f"{prefix}{number}: {' and '.join(parts)} {'were' if several else 'was'} erased "
               f"by {now[:10]}; {'they no longer appear' if several else 'it no longer appears'} "
               "in the case.")
    conn.execute(delete(notifications).where(notifications.c.user_id == user_id,
                                             notifications.c.seen_at.is_(None),
                                             notifications.c.message.startswith(prefix)))
    conn.execute(insert(notifications).values(user_id=user_id, created_at=now, message=message))


def _erase_from_watch_matches(conn: Connection, face_ids: list[int]) -> None:
    """Blank erased faces' watch matches: the row stays (the case shows that its watch
    matched, and when) but no longer names the image, the face or its distance. The image
    becomes 'erased:<match id>', unique per match as (watch, image) must be."""
    conn.execute(update(watch_matches).where(watch_matches.c.face_id.in_(face_ids)).values(
        image_sha256=literal("erased:", String).concat(cast(watch_matches.c.id, String)),
        face_id=0, distance=0.0))
