"""Grouping faces into identities: density-based, in the spirit of Immich's facial recognition,
with the constraint that two faces of one image are never one identity.

A face is a core when at least min_faces faces, itself included, lie within max_distance of it
(faces of its own image do not count: they are other people). Cores within max_distance of one
another form an identity, joined nearest pair first; a face that is not a core joins the
identity of its nearest core within max_distance; any other face stays unassigned (an identity
of its own, which a later face may still join). Whenever a join would put two faces of one
image together, it is refused and the face tries the next nearest (cannot-link): of two faces
in one photo, at most one can be a given person.

max_distance is meant to carry across embedders: it is set as a per-pair false-match
probability (Settings.identity_false_match_probability) and converted to the live embedder's
distance by its calibration (max_distance_for). min_faces guards against chaining: a single
close pair of strangers cannot start an identity unless each has other faces near it.

Two entry points: cluster, a full clustering of a gallery (neighbours by FAISS, a chunk of
queries at a time: memory grows with faces x NEIGHBOURS, never faces^2), and assign_batch,
the incremental step of ingest for one batch of new faces (assign_new_face for each), which
the service runs on its database and the evaluation on arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np

from facesearch.calibration import Calibration

NEIGHBOURS = 32  # nearest faces looked at per face: a core needs min_faces of them
EXACT_MAX = 200_000  # up to this many faces, exact neighbours; past it, HNSW's approximate ones
QUERY_CHUNK = 4096  # faces whose neighbours are searched at once
UNASSIGNED = -1


def max_distance_for(calibration: Calibration, false_match_probability: float) -> float:
    """The largest distance whose false-match probability per pair of faces, by the embedder's
    calibration, is at or under the one given: two faces this close are one identity's."""
    return calibration.distance_at(false_match_probability)


def nearest(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each face's k nearest other faces by Euclidean distance: (distances, positions), nearest
    first, -1 and inf where fewer exist. Exact up to EXACT_MAX faces, HNSW beyond."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dimension = vectors.shape
    if count > EXACT_MAX:
        index = faiss.IndexHNSWFlat(dimension, 32)
        index.hnsw.efSearch = max(128, 2 * k)
    else:
        index = faiss.IndexFlatL2(dimension)
    index.add(vectors)
    distances = np.full((count, k), np.inf, np.float32)
    positions = np.full((count, k), -1, np.int64)
    for start in range(0, count, QUERY_CHUNK):
        chunk = vectors[start:start + QUERY_CHUNK]
        squared, found = index.search(chunk, min(k + 1, count))
        # Drop the face itself, wherever ties put it: the others first, in their order.
        other = found != np.arange(start, start + len(chunk))[:, None]
        order = np.argsort(~other, axis=1, kind="stable")[:, :k]
        kept = np.take_along_axis(found, order, axis=1)
        valid = np.take_along_axis(other, order, axis=1) & (kept >= 0)
        width = kept.shape[1]
        positions[start:start + len(chunk), :width] = np.where(valid, kept, -1)
        distances[start:start + len(chunk), :width] = np.where(
            valid, np.sqrt(np.maximum(np.take_along_axis(squared, order, axis=1), 0)), np.inf)
    return distances, positions


class _Groups:
    """Union-find over faces, each group with the set of images it holds."""

    def __init__(self, images: np.ndarray) -> None:
        self.parent = np.arange(len(images))
        self.images: dict[int, set[int]] = {}
        self.image_of = images

    def find(self, face: int) -> int:
        root = face
        while self.parent[root] != root:
            root = int(self.parent[root])
        while self.parent[face] != root:
            self.parent[face], face = root, int(self.parent[face])
        return root

    def holds(self, root: int) -> set[int]:
        return self.images.setdefault(root, {int(self.image_of[root])})

    def join(self, a: int, b: int) -> bool:
        """Join the groups of faces a and b unless they share an image; whether joined."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        held_a, held_b = self.holds(ra), self.holds(rb)
        if not held_a.isdisjoint(held_b):
            return False
        if len(held_a) < len(held_b):
            ra, rb, held_a, held_b = rb, ra, held_b, held_a
        self.parent[rb] = ra
        held_a |= held_b
        del self.images[rb]
        return True


def cluster(images: np.ndarray, vectors: np.ndarray, max_distance: float, min_faces: int,
            neighbours: int = NEIGHBOURS) -> np.ndarray:
    """Identities of faces given as each face's image id and descriptor (unit length): a label
    per face, 0, 1, ... numbered by each identity's first face, or UNASSIGNED (-1). No two
    faces of one image ever share a label."""
    images = np.asarray(images, np.int64)
    count = len(images)
    if count == 0:
        return np.zeros(0, np.int64)
    distances, positions = nearest(vectors, min(neighbours, max(count - 1, 1)))
    # Neighbours that count: close enough, and of another image.
    close = (positions >= 0) & (distances < max_distance)
    close &= images[np.where(positions >= 0, positions, 0)] != images[:, None]
    core = close.sum(axis=1) + 1 >= min_faces
    groups = _Groups(images)
    # Cores with cores, nearest pairs first.
    rows, columns = np.nonzero(close & core[:, None])
    others = positions[rows, columns]
    between_cores = core[others]
    rows, others = rows[between_cores], others[between_cores]
    order = np.argsort(distances[rows, columns[between_cores]], kind="stable")
    for a, b in zip(rows[order], others[order]):
        groups.join(int(a), int(b))
    labels = np.full(count, UNASSIGNED, np.int64)
    for face in np.flatnonzero(core):
        labels[face] = groups.find(int(face))
    # Every other face with a core near it: the nearest pairs first, each to its nearest core
    # whose identity holds no face of its image.
    rows, columns = np.nonzero(close & ~core[:, None])
    others = positions[rows, columns]
    to_core = core[others]
    rows, columns, others = rows[to_core], columns[to_core], others[to_core]
    order = np.lexsort((columns, distances[rows, columns]))
    for face, other in zip(rows[order], others[order]):
        if labels[face] == UNASSIGNED:
            root = groups.find(int(other))
            held = groups.holds(root)
            if images[face] not in held:
                held.add(int(images[face]))
                labels[face] = root
    return _renumber(labels)


def _renumber(labels: np.ndarray) -> np.ndarray:
    assigned = labels != UNASSIGNED
    _, first, inverse = np.unique(labels[assigned], return_index=True, return_inverse=True)
    # Numbered in order of each identity's first face, so that the result reads naturally.
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    renumbered = labels.copy()
    renumbered[assigned] = rank[inverse]
    return renumbered


@dataclass(frozen=True)
class Neighbour:
    """A face near a new one: within max_distance and of another image."""

    face_id: int
    distance: float
    image_id: int
    identity_id: int | None


@dataclass
class Assignment:
    """What a new face's neighbours decide: the identity it joins (None: stays unassigned;
    NEW_IDENTITY: a new one) and its unassigned neighbours that join with it."""

    identity_id: int | None
    pulled: list[int] = field(default_factory=list)  # face ids


NEW_IDENTITY = 0  # identity ids start at 1


def assign_new_face(image_id: int, neighbours: list[Neighbour], min_faces: int,
                    holds: Callable[[int, int], bool], current: int | None = None) -> Assignment:
    """The incremental step: a new face (of image_id, already in identity current if an earlier
    face of its batch pulled it in) joins the identity of its nearest neighbour that has one and
    holds no face of its image; a core (min_faces within reach, itself included) with none
    starts a new identity, and a core brings in its unassigned neighbours, each of an image the
    identity does not hold yet. Identities are never merged here (`facesearch identities
    recluster` does): two people wrongly joined would be hard to undo, two identities of one
    person are only a shorter list. holds(identity, image): whether a face of that image is in
    that identity (asked per candidate join, so an identity's size costs nothing)."""
    neighbours = sorted((n for n in neighbours if n.image_id != image_id), key=lambda n: n.distance)
    core = len(neighbours) + 1 >= min_faces
    chosen = current
    if chosen is None:
        chosen = next((n.identity_id for n in neighbours if n.identity_id is not None
                       and not holds(n.identity_id, image_id)), None)
    if chosen is None and not core:
        return Assignment(None)
    if not core:
        return Assignment(chosen)
    taken = {image_id}
    pulled = []
    for n in neighbours:
        if (n.identity_id is None and n.image_id not in taken
                and (chosen is None or not holds(chosen, n.image_id))):
            pulled.append(n.face_id)
            taken.add(n.image_id)
    return Assignment(NEW_IDENTITY if chosen is None else chosen, pulled)


def assign_batch(batch: Sequence[int], neighbours_of: Callable[[int], list[tuple[int, float]]],
                 image_of: Callable[[int], int], identity_of: dict[int, int | None],
                 min_faces: int, holds: Callable[[int, int], bool], create: Callable[[], int],
                 join: Callable[[list[int], int], None]) -> None:
    """Ingest's step for one batch of new faces, in batch order: each face decided by
    assign_new_face from its neighbours (neighbours_of: (face, distance) within reach, of the
    gallery before the batch and of the batch), read with their identities as the batch's
    earlier decisions left them. identity_of (face -> identity, None or absent: none) is
    updated; create makes a new identity and returns its id; join puts faces in an identity,
    after which holds must count their images."""
    for face in batch:
        current = identity_of.get(face)
        neighbours = [Neighbour(other, distance, image_of(other), identity_of.get(other))
                      for other, distance in neighbours_of(face)]
        decision = assign_new_face(image_of(face), neighbours, min_faces, holds, current)
        if decision.identity_id is None:
            continue
        identity = create() if decision.identity_id == NEW_IDENTITY else decision.identity_id
        joining = [face] * (current is None) + decision.pulled
        join(joining, identity)
        for member in joining:
            identity_of[member] = identity
