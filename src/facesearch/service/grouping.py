"""Search results grouped by identity and by photo, computed from a ranked candidate list.

Identities: the candidates' faces grouped by faces.identity_id (service.identities), each with
its best candidate and its faces, images and pages in the gallery; a face with no identity is
a group of its own. Photos: the candidates' images, each once, copies of one photo together
(resized, recompressed or cropped), each with every place any copy was seen (sightings).

Only the candidate list's images and their sightings are read: at most max_candidates images,
never a scan of the gallery.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from facesearch.errors import BadImage
from facesearch.imaging import decode, hash_bits_apart, perceptual_hashes
from facesearch.service.identities import Identities
from facesearch.service.words import source_names
from facesearch.store.cases import Case, StoredSearch
from facesearch.types import Actor

# Two images are one photo when their pHashes (images.phash, of the whole image) are at most
# this many bits apart. Measured on 400 LFW photos (scripts/measure_near_duplicates.py): a
# copy resized to half lies at most 2 bits away, one recompressed at JPEG quality 40 at most
# 4, while of the 79,800 pairs of different photos the closest lay 8 bits apart.
NEAR_DUPLICATE_BITS = 6
# A crop moves the whole image's pHash too far for that (a 10% crop: 12 to 20 bits by the
# median, up to 30), so a cropped copy is recognised by its candidate face instead: the pHash
# of a window around the face in the stored face chip, where a crop or a resize changes
# nothing but the detector's jitter, together with a whole-image pHash still within
# CROP_WHOLE_BITS (two photos of one event can share a face window, rarely the whole frame
# as well). Measured on 240 LFW photos of 30 people (same script): 81% of copies cropped by
# 10% around the centre found, 95% from a corner, 93% from one side; no mirrored copy; one
# pair of the 28,680 pairs of different photos taken for one photo (two of one person).
CROP_FACE_BITS = 10
CROP_WHOLE_BITS = 28
FACE_WINDOW = 1.4  # box sides, centred on the box: of 1.0, 1.4 and 1.8 measured, the fewest misses


@dataclass
class IdentityGroup:
    """An identity among the candidates of one probe face: an internal grouping of faces made
    by clustering, never a name. identity_id is None for a face that no identity holds yet."""

    probe_face: int
    identity_id: int | None
    best_rank: int  # its best candidate's rank
    best_face_id: int
    ranks: list[int]  # of its candidates, best first
    faces: int  # in the gallery
    images: int
    pages: int  # distinct places its images were seen: a page, or a location with no page


@dataclass
class Sighting:
    location: str
    page_url: str  # "" when it was not found on a page
    source: str  # the source's name as people are shown it (words.source_in_words)
    seen_at: str


@dataclass
class PhotoGroup:
    """One photo among the candidates: its stored copies (sha256, the best-ranked first) and
    every place any of them was seen, first seen first."""

    images: list[str]
    candidates: list[tuple[int, int]]  # (probe face, rank), best first
    sightings: list[Sighting] = field(default_factory=list)


@dataclass
class ResultGroups:
    identities: list[IdentityGroup] = field(default_factory=list)
    photos: list[PhotoGroup] = field(default_factory=list)


def face_window_hash(chip_jpeg: bytes, geometry: dict | None) -> str | None:
    """The pHash of the window around the face in a stored face chip (FACE_WINDOW box sides,
    centred on the box); None for a chip without geometry (kept before it was recorded) or
    one that cannot be decoded."""
    if not geometry:
        return None
    try:
        pixels = decode(chip_jpeg, max_pixels=1 << 20, max_bytes=1 << 22).pixels
    except BadImage:
        return None
    left, top, right, bottom = geometry["box"]
    half = max(right - left, bottom - top) * FACE_WINDOW / 2
    cx, cy = (left + right) / 2, (top + bottom) / 2
    height, width = pixels.shape[:2]
    window = pixels[max(0, int(cy - half)):min(height, int(cy + half)),
                    max(0, int(cx - half)):min(width, int(cx + half))]
    return perceptual_hashes(np.ascontiguousarray(window))[0] if window.size else None


def same_photo(whole: tuple[str | None, str | None],
               faces: Iterable[tuple[str | None, str | None]]) -> bool:
    """Are two images copies of one photo, by their whole-image pHashes and the face-window
    pHashes of pairs of their candidate faces (read only when needed: pass a generator)? A
    mirrored copy is another photo: no hash is compared with a mirror image's."""
    if None in whole:
        return False
    apart = hash_bits_apart(*whole)
    if apart <= NEAR_DUPLICATE_BITS:
        return True
    return apart <= CROP_WHOLE_BITS and any(
        None not in pair and hash_bits_apart(*pair) <= CROP_FACE_BITS for pair in faces)


class Grouping(Identities):
    def grouped_search(self, actor: Actor, case_id: int,
                       search_id: int) -> tuple[Case, StoredSearch, ResultGroups]:
        """A stored search (as case_searches, which authorises and audits the reading) with
        its candidates grouped by identity and photo as the gallery stands now: erased
        candidates are left out, sightings added since are in."""
        case, found = self.case_searches(actor, case_id, search_id)
        search = found[0]
        live = [(c.probe_face, c.rank, c.face_id) for c in search.candidates if not c.erased_at]
        return case, search, self._result_groups(live, self._jurisdictions_of(case))

    def _jurisdictions_of(self, case: Case) -> frozenset[str]:
        """The jurisdictions the case's organisation may search (empty: all)."""
        organisation = self.accounts.organisation_by_id(case.organisation_id)
        return organisation.jurisdiction_set if organisation else frozenset()

    def _result_groups(self, candidates: list[tuple[int, int, int]],
                       jurisdictions: frozenset[str]) -> ResultGroups:
        """candidates: (probe face, rank, face id), best first for each probe face. Only
        sightings by sources of the jurisdictions (if any) are shown: the organisation's."""
        rows = self.store.grouping_rows([face_id for _, _, face_id in candidates])
        live = sorted(((p, r, f) for p, r, f in candidates if f in rows), key=lambda c: (c[1], c[0]))
        seen = self.store.sightings_of(sorted({rows[f]["image_id"] for _, _, f in live}))
        names = source_names(self.store.sources())
        places = {image_id: [{**s, "source": names.get(s["source"], s["source"])} for s in found
                             if not jurisdictions or s["jurisdiction"] in jurisdictions]
                  for image_id, found in seen.items()}
        return ResultGroups(self._identity_groups(live, rows, places, jurisdictions), _photo_groups(
            live, rows, places, lambda face_id: self._face_window_of(rows[face_id])))

    def _identity_groups(self, live: list[tuple[int, int, int]], rows: dict[int, dict],
                         places: dict[int, list[dict]],
                         jurisdictions: frozenset[str]) -> list[IdentityGroup]:
        """Counts of the jurisdictions only (as places: the sightings already filtered): an
        organisation is never told how much of a person lies where it may not search."""
        summaries = self.identity_summaries(
            [rows[f]["identity_id"] for _, _, f in live if rows[f]["identity_id"] is not None],
            jurisdictions)
        groups: dict[tuple, IdentityGroup] = {}
        for probe_face, rank, face_id in live:
            identity = rows[face_id]["identity_id"]
            if identity not in summaries:
                identity = None  # emptied meanwhile: the face stands alone
            key = (probe_face, identity if identity is not None else f"face {face_id}")
            if key in groups:
                groups[key].ranks.append(rank)
                continue
            if identity is None:
                pages = {s["page_url"] or s["location"]
                         for s in places.get(rows[face_id]["image_id"], [])}
                counts = (1, 1, len(pages))
            else:
                counts = tuple(summaries[identity])
            groups[key] = IdentityGroup(probe_face, identity, rank, face_id, [rank], *counts)
        return sorted(groups.values(), key=lambda g: (g.probe_face, g.best_rank))

    def _face_window_of(self, row: dict) -> str | None:
        try:
            chip = self.crops.path(row["crop_path"]).read_bytes()
        except OSError:  # erased meanwhile
            return None
        return face_window_hash(chip, json.loads(row["chip_geometry"] or "null"))


def _photo_groups(live: list[tuple[int, int, int]], rows: dict[int, dict],
                  places: dict[int, list[dict]],
                  face_window: Callable[[int], str | None]) -> list[PhotoGroup]:
    """The candidates' images, copies of one photo together (any two of a group's images are
    linked through copies), in the order of their best candidates."""
    images: dict[int, list[tuple[int, int, int]]] = {}  # image id -> its candidates
    for candidate in live:
        images.setdefault(rows[candidate[2]]["image_id"], []).append(candidate)
    order = list(images)
    windows: dict[int, str | None] = {}

    def window(face_id: int) -> str | None:
        if face_id not in windows:
            windows[face_id] = face_window(face_id)
        return windows[face_id]

    def copies(a: int, b: int) -> bool:
        whole = (rows[images[a][0][2]]["phash"], rows[images[b][0][2]]["phash"])
        return same_photo(whole, ((window(x), window(y))
                                  for _, _, x in images[a] for _, _, y in images[b]))

    parent = {image_id: image_id for image_id in order}

    def root(image_id: int) -> int:
        while parent[image_id] != image_id:
            image_id = parent[image_id]
        return image_id

    for i, a in enumerate(order):
        for b in order[i + 1:]:
            if root(a) != root(b) and copies(a, b):
                parent[root(b)] = root(a)
    groups: dict[int, PhotoGroup] = {}
    for image_id in order:
        group = groups.setdefault(root(image_id), PhotoGroup([], []))
        group.images.append(rows[images[image_id][0][2]]["sha256"])
        group.candidates += [(p, r) for p, r, _ in images[image_id]]
        known = {(s.location, s.page_url) for s in group.sightings}
        group.sightings += [Sighting(s["location"], s["page_url"], s["source"], s["seen_at"])
                            for s in places.get(image_id, [])
                            if (s["location"], s["page_url"]) not in known]
    for group in groups.values():
        group.candidates.sort(key=lambda c: (c[1], c[0]))
        group.sightings.sort(key=lambda s: s.seen_at)
    return list(groups.values())
