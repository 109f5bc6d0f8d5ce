"""Identities: the gallery's faces grouped into people by clustering (facesearch.clustering),
as they are ingested and, on demand, all over again. An identity is an internal grouping, never
a name: nothing here labels one, and a group can hold strangers who look alike, which is why an
opt-out or access request never acts on an identity's other faces without the data-protection
officer's review (service.rights).

Every batch of new faces is assigned in its own transaction, under the writer lock: each new
face's neighbours are the vector index's nearest (the gallery before the batch) and the other
faces of its batch. A batch costs one index query a face, plus one indexed lookup (by image)
per candidate join, whatever the identities' sizes. It needs the vector index: a queue worker,
which otherwise never updates the index (update_index=False), loads it to assign identities.
With the FAISS backend every worker process holds its own copy (the memory a face that README's
Scale section gives, times the gallery's faces, per worker); with Milvus the workers query the
one shared collection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Connection

from facesearch.clustering import NEIGHBOURS, assign_batch, cluster, max_distance_for
from facesearch.service.engine import Engine
from facesearch.store.identities import IdentitySummary
from facesearch.types import Actor


@dataclass
class ReclusterReport:
    faces: int
    identities: int  # identities of one face or more after the run
    unassigned: int  # faces in no identity (no core within reach)
    kept: int  # identities that kept their id (most of their faces were in it before)
    created: int
    deleted: int
    max_distance: float
    false_match_probability: float
    min_faces: int


class Identities(Engine):
    # Use cases ---------------------------------------------------------------------------

    def recluster(self, actor: Actor) -> ReclusterReport:
        """Cluster the whole gallery again (after a change of the parameters or of the
        embedder, or to merge identities that ingest, which never merges, kept apart).
        Identities keep their ids where most of their faces stay together. Audited."""
        self.authorise(actor, "reindex", "identities.recluster")
        with self._writer():
            distance = self._identity_distance()
            min_faces = self.settings.identity_min_faces
            with self.store.transaction() as conn:
                parts = list(self.identities.gallery(conn))
                face_ids, images, previous, vectors = (
                    np.concatenate([p[i] for p in parts]) if parts else np.zeros(0)
                    for i in range(4))
                labels = (cluster(images, vectors, distance, min_faces) if len(face_ids)
                          else np.zeros(0, np.int64))
                kept, created, deleted = self.identities.replace_all(
                    conn, face_ids, labels, previous, self.now())
                report = ReclusterReport(
                    faces=len(face_ids), identities=len(np.unique(labels[labels >= 0])),
                    unassigned=int((labels < 0).sum()), kept=kept, created=created,
                    deleted=deleted, max_distance=distance,
                    false_match_probability=self.settings.identity_false_match_probability,
                    min_faces=min_faces)
                self._audit(conn, actor, "identities.recluster", asdict(report))
        return report

    def identity_summaries(self, identity_ids: list[int], jurisdictions: frozenset[str] = frozenset()
                           ) -> dict[int, IdentitySummary]:
        """(faces, images, pages) of each identity among identity_ids with faces of the
        jurisdictions (empty: all; an organisation's, so that it never counts what it may not
        search): for use cases that have already authorised their caller and show identities
        (search results, case watches); nothing personal, only counts. Pages: distinct places
        its images were seen by sources of those jurisdictions (sightings: a page's URL, or the
        location where there was no page)."""
        return self.identities.summaries(identity_ids, jurisdictions)

    def evaluate_cluster(self, lfw_dir: Path, output: Path, log: Callable[[str], None],
                         limit_people: int | None = None) -> dict:
        """Every face of every LFW photo clustered with this service's pipeline and
        parameters, scored against LFW's names (evaluation.cluster); touches no gallery."""
        from facesearch.evaluation.cluster import run_cluster_evaluation

        return run_cluster_evaluation(self.settings, lfw_dir, output, log, limit_people)

    # Following the gallery as it grows ----------------------------------------------------

    def _identity_distance(self) -> float:
        """The grouping distance: identity_false_match_probability per pair, by the live
        embedder's calibration."""
        return max_distance_for(self._calibration_of_live(),
                                self.settings.identity_false_match_probability)

    def _batch_committing(self, conn: Connection, actor: Actor,
                          added: list[tuple[int, np.ndarray]]) -> None:
        if added:
            self._assign_identities(conn, added)
        super()._batch_committing(conn, actor, added)

    def _assign_identities(self, conn: Connection, added: list[tuple[int, np.ndarray]]) -> None:
        """Assign a batch's new faces to identities (clustering.assign_batch), in the
        batch's transaction. The index is caught up under the writer lock and holds the
        gallery without this batch; neighbours within the batch are computed here."""
        distance = self._identity_distance()
        batch_ids = [face_id for face_id, _ in added]
        vectors = np.stack([vector for _, vector in added]).astype(np.float32)
        index = self.index
        k = min(NEIGHBOURS, len(index))
        if k:
            with self._index_lock:
                found_distances, found_ids = index.search(vectors, k)
        else:
            found_distances = np.zeros((len(added), 0))
            found_ids = np.zeros((len(added), 0), np.int64)
        batch = set(batch_ids)
        nearby = sorted({int(i) for d, i in zip(found_distances.ravel(), found_ids.ravel())
                         if i >= 0 and d < distance and int(i) not in batch})
        rows = self.identities.face_rows(conn, batch_ids + nearby)  # (image, identity)
        position_of = {face_id: position for position, face_id in enumerate(batch_ids)}
        squared = (vectors**2).sum(1)
        within_batch = np.sqrt(np.maximum(
            squared[:, None] - 2 * vectors @ vectors.T + squared[None, :], 0))

        def neighbours_of(face_id: int) -> list[tuple[int, float]]:
            position = position_of[face_id]
            near = [(int(i), float(d)) for d, i in zip(found_distances[position], found_ids[position])
                    if i >= 0 and d < distance and int(i) in rows and int(i) not in batch]
            return near + [(batch_ids[other], float(within_batch[position, other]))
                           for other in np.flatnonzero(within_batch[position] < distance)
                           if other != position]

        def holds(identity: int, image: int) -> bool:
            # Read in the batch's transaction: this batch's joins so far count.
            return self.identities.holds(conn, identity, image)

        assign_batch(batch_ids, neighbours_of, lambda face_id: rows[face_id][0],
                     {face_id: row[1] for face_id, row in rows.items()},
                     self.settings.identity_min_faces, holds,
                     lambda: self.identities.create(conn, self.now()),
                     lambda members, identity: self.identities.assign(conn, members, identity))
