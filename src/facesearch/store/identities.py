"""Identities: groups of faces made by clustering (facesearch.clustering), never names. A face
holds its identity in faces.identity_id (NULL: unassigned); an identity without faces is
deleted in the transaction that removed its last face."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from typing import NamedTuple

import numpy as np
from sqlalchemy import bindparam, delete, func, insert, select, union, update
from sqlalchemy.engine import Connection, Engine

from facesearch.store.schema import faces, identities, images, sightings, sources

CHUNK = 500  # ids a query: databases bound the parameters of one


class IdentitySummary(NamedTuple):
    """How much of the gallery an identity holds: faces, distinct images, distinct pages (each
    place an image was seen: a page's URL, or the file's location where it came from no page)."""

    faces: int
    images: int
    pages: int


def delete_empty_identities(conn: Connection, identity_ids: Iterable[int | None]) -> int:
    """Delete those of these identities that no face holds any more; returns how many."""
    ids = sorted({i for i in identity_ids if i is not None})
    deleted = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        deleted += conn.execute(delete(identities).where(
            identities.c.id.in_(chunk),
            ~select(faces.c.id).where(faces.c.identity_id == identities.c.id).exists())).rowcount
    return deleted


class IdentityStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def face_rows(self, conn: Connection, face_ids: list[int]) -> dict[int, tuple[int, int | None]]:
        """(image id, identity id) of each of these faces that exists."""
        found: dict[int, tuple[int, int | None]] = {}
        for start in range(0, len(face_ids), CHUNK):
            found.update((r[0], (r[1], r[2])) for r in conn.execute(
                select(faces.c.id, faces.c.image_id, faces.c.identity_id)
                .where(faces.c.id.in_(face_ids[start:start + CHUNK]))).all())
        return found

    def holds(self, conn: Connection, identity_id: int, image_id: int) -> bool:
        """Whether a face of this image is in this identity. Read by the image alone (a few
        faces): asked with both columns, SQLite picks the identity's index and walks all of
        its faces."""
        return identity_id in set(conn.execute(
            select(faces.c.identity_id).where(faces.c.image_id == image_id)).scalars())

    def create(self, conn: Connection, now: str) -> int:
        return conn.execute(insert(identities).values(created_at=now)).inserted_primary_key[0]

    def assign(self, conn: Connection, face_ids: list[int], identity_id: int | None) -> None:
        for start in range(0, len(face_ids), CHUNK):
            conn.execute(update(faces).where(faces.c.id.in_(face_ids[start:start + CHUNK]))
                         .values(identity_id=identity_id))

    def of_faces(self, conn: Connection, face_ids: list[int]) -> set[int]:
        """The identities these faces are in."""
        found: set[int] = set()
        for start in range(0, len(face_ids), CHUNK):
            found.update(i for i in conn.execute(select(faces.c.identity_id).where(
                faces.c.id.in_(face_ids[start:start + CHUNK]))).scalars() if i is not None)
        return found

    def member_vectors(self, identity_ids: Iterable[int], conn: Connection | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(face ids, identity ids, descriptors) of every face of these identities, in face id
        order (in conn's transaction, if given)."""
        ids = sorted(set(identity_ids))
        rows = []
        with (nullcontext(conn) if conn is not None else self.engine.connect()) as reader:
            for start in range(0, len(ids), CHUNK):
                rows += reader.execute(
                    select(faces.c.id, faces.c.identity_id, faces.c.embedding)
                    .where(faces.c.identity_id.in_(ids[start:start + CHUNK]))).all()
        rows.sort(key=lambda r: r[0])
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return (np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
                np.frombuffer(b"".join(r[2] for r in rows), "<f4").reshape(len(rows), -1))

    def gallery(self, conn: Connection, chunk: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """(face ids, image ids, identity ids (0: none), descriptors) of every face, in id
        order, chunk by chunk."""
        last = 0
        while True:
            rows = conn.execute(
                select(faces.c.id, faces.c.image_id, faces.c.identity_id, faces.c.embedding)
                .where(faces.c.id > last).order_by(faces.c.id).limit(chunk)).all()
            if not rows:
                return
            yield (np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
                   np.array([r[2] or 0 for r in rows], np.int64),
                   np.frombuffer(b"".join(r[3] for r in rows), "<f4").reshape(len(rows), -1))
            last = int(rows[-1][0])

    def summaries(self, identity_ids: Iterable[int],
                  jurisdictions: frozenset[str] = frozenset()) -> dict[int, IdentitySummary]:
        """Each existing identity's faces, images and pages, of the jurisdictions given (empty:
        all): faces and images by the image's jurisdiction, pages by the jurisdiction of the
        source that saw the image there. An identity none of whose faces is of them is left
        out."""
        ids = sorted(set(identity_ids))
        allowed = sorted(jurisdictions)
        found: dict[int, IdentitySummary] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start:start + CHUNK]
                counting = (select(faces.c.identity_id, func.count(faces.c.id),
                                   func.count(faces.c.image_id.distinct()))
                            .join(images, images.c.id == faces.c.image_id)
                            .where(faces.c.identity_id.in_(chunk)))
                if allowed:
                    counting = counting.where(images.c.jurisdiction.in_(allowed))
                counted = dict((r[0], (r[1], r[2])) for r in conn.execute(
                    counting.group_by(faces.c.identity_id)).all())
                # A page is where an image was seen: its page's URL, else its location; the
                # place it was collected from is one, also where no sighting records it.
                seen = select(faces.c.identity_id, func.coalesce(
                    func.nullif(sightings.c.page_url, ""), sightings.c.location).label("place")
                ).join(sightings, sightings.c.image_id == faces.c.image_id).where(
                    faces.c.identity_id.in_(chunk))
                collected = select(faces.c.identity_id, func.coalesce(
                    func.nullif(images.c.page_url, ""), images.c.location).label("place")
                ).join(images, images.c.id == faces.c.image_id).where(
                    faces.c.identity_id.in_(chunk))
                if allowed:
                    seen = seen.join(sources, sources.c.id == sightings.c.source_id).where(
                        sources.c.jurisdiction.in_(allowed))
                    collected = collected.where(images.c.jurisdiction.in_(allowed))
                places = union(seen, collected).subquery()  # UNION: each place once
                pages = dict(conn.execute(
                    select(places.c.identity_id, func.count())
                    .group_by(places.c.identity_id)).all())
                found.update((i, IdentitySummary(n_faces, n_images, int(pages.get(i, 0))))
                             for i, (n_faces, n_images) in counted.items())
        return found

    def replace_all(self, conn: Connection, face_ids: np.ndarray, labels: np.ndarray,
                    previous: np.ndarray, now: str) -> tuple[int, int, int]:
        """Replace every face's identity by a new clustering: labels (one per face id, -1
        unassigned), previous (each face's identity now, 0 for none). Each new group keeps
        the id of the old identity most of its faces were in, if no larger group claimed it
        first, so that references to identities (watches, reviews) follow their people; the
        other groups get new identities and unused old ones are deleted. Returns (kept,
        created, deleted)."""
        groups = np.unique(labels[labels >= 0])
        # Faces shared by each (new group, old identity): one pass over the faces, sorted.
        both = (labels >= 0) & (previous > 0)
        pairs, counts = np.unique(np.stack([labels[both], previous[both]]), axis=1,
                                  return_counts=True)
        overlap = sorted(zip((-counts).tolist(), pairs[0].tolist(), pairs[1].tolist()))
        identity_of: dict[int, int] = {}
        used: set[int] = set()
        for _, group, old in overlap:
            if group not in identity_of and old not in used:
                identity_of[group], _ = old, used.add(old)
        kept = len(identity_of)
        for group in groups.tolist():
            if group not in identity_of:
                identity_of[group] = self.create(conn, now)
        lookup = np.zeros(len(groups), np.int64)
        lookup[:] = [identity_of[g] for g in groups.tolist()]
        wanted = np.zeros(len(labels), np.int64)
        assigned = labels >= 0
        wanted[assigned] = lookup[np.searchsorted(groups, labels[assigned])]
        changed = np.flatnonzero(wanted != previous)
        # One statement run for every changed face (executemany), not one per identity.
        if len(changed):
            conn.execute(update(faces).where(faces.c.id == bindparam("face"))
                         .values(identity_id=bindparam("identity")),
                         [{"face": face, "identity": identity or None} for face, identity in
                          zip(face_ids[changed].tolist(), wanted[changed].tolist())])
        deleted = conn.execute(delete(identities).where(
            ~select(faces.c.id).where(faces.c.identity_id == identities.c.id).exists())).rowcount
        return kept, len(groups) - kept, deleted
