"""Closed-set identification on a folder of PERSON/photo folders, as a search would see it.

Fixed split: each person's photos sorted by name; a person with three or more photos gives
the first one as a probe and the rest to the gallery; people with fewer photos are
distractors (all their photos go to the gallery). Every face the detector finds in a gallery
photo is in the gallery, labelled with the photo's person; a probe is its photo's largest
face. Search is exact (every distance computed), with no cut-off. A probe's rank is one more
than the number of other people's faces closer than its nearest own face; a probe whose photo
has no face found, or whose person has no face in the gallery, is a miss at every rank.

`--distractors` adds every face found in a folder of photos of other people, a growing prefix
at a time, and reports rank-1 and the false matches a search would return at the operating
cut-off: expected (the calibration's false-match probability x gallery faces) and measured
(other people's faces within the cut-off, per probe).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesearch.config import Settings
from facesearch.errors import InvalidRequest
from facesearch.evaluation.operating import OperatingPoint, search_cutoff
from facesearch.evaluation.pipeline import PhotoFaces, PhotoJob, image_files, run_photos

MIN_PHOTOS = 3  # a person with fewer photos has no probe: a distractor
RANKS = 50  # CMC curve length
DISTRACTOR_STEPS = (0, 1000, 2500, 5000, 10000, 25000, 50000)


@dataclass
class Split:
    probes: list[tuple[str, int]]  # (photo, person index)
    gallery: list[tuple[str, int]]
    people: list[str]
    distractor_people: int


def split_folder(folder: Path, limit_people: int | None = None) -> Split:
    """The fixed split of folder's PERSON/photo folders (people in name order; the first
    limit_people of them when given)."""
    if not folder.is_dir():
        raise InvalidRequest(f"{folder} is not a folder of PERSON/photo folders")
    people = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    people = people[:limit_people] if limit_people else people
    split = Split([], [], people, 0)
    for index, person in enumerate(people):
        photos = [str(p) for p in image_files(folder / person)]
        if len(photos) >= MIN_PHOTOS:
            split.probes.append((photos[0], index))
            split.gallery.extend((p, index) for p in photos[1:])
        else:
            split.distractor_people += 1
            split.gallery.extend((p, index) for p in photos)
    if not split.probes:
        raise InvalidRequest(f"no person in {folder} has {MIN_PHOTOS} or more photos: nothing to probe")
    return split


@dataclass
class Gallery:
    vectors: np.ndarray  # (faces, dimension)
    people: np.ndarray  # person index of each face; -1 for a distractor face


@dataclass
class Probes:
    vectors: np.ndarray  # (probes, dimension); rows of probes without a face are zero
    people: np.ndarray
    has_face: np.ndarray  # bool


def gallery_of(described: list[PhotoFaces], people: list[int], mirror: bool, dimension: int) -> Gallery:
    vectors = [d.vectors[mirror] for d in described if d.found]
    labels = [np.full(d.found, person) for d, person in zip(described, people) if d.found]
    return Gallery(np.concatenate(vectors) if vectors else np.zeros((0, dimension), np.float32),
                   np.concatenate(labels) if labels else np.zeros(0, np.int64))


def probes_of(described: list[PhotoFaces], people: list[int], mirror: bool, dimension: int) -> Probes:
    has_face = np.array([d.found > 0 for d in described])
    vectors = np.zeros((len(described), dimension), np.float32)
    for row, d in enumerate(described):
        if d.found:
            vectors[row] = d.vectors[mirror][0]  # the largest face
    return Probes(vectors, np.array(people), has_face)


def distances(probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Euclidean distances, probes x gallery, exact."""
    d2 = (probes**2).sum(1)[:, None] - 2 * probes @ gallery.T + (gallery**2).sum(1)[None]
    return np.sqrt(np.maximum(d2, 0.0))


def closer_than_mate(probes: Probes, gallery: Gallery) -> tuple[np.ndarray, np.ndarray]:
    """For each probe: its nearest own face's distance (inf if none, or no probe face), and
    the number of other people's faces strictly closer."""
    d = distances(probes.vectors, gallery.vectors)
    mate = gallery.people[None, :] == probes.people[:, None]
    mate_distance = np.where(mate, d, np.inf).min(axis=1, initial=np.inf)
    mate_distance[~probes.has_face] = np.inf
    closer = ((d < mate_distance[:, None]) & ~mate).sum(axis=1)
    return mate_distance, closer


def ranks_of(mate_distance: np.ndarray, closer: np.ndarray) -> np.ndarray:
    """1-based rank of each probe's nearest own face; a large number for a miss."""
    return np.where(np.isfinite(mate_distance), closer + 1, np.iinfo(np.int64).max)


def single_probe(probes: Probes, gallery: Gallery) -> dict:
    """Protocol "single": one photo a person searched against the gallery."""
    ranks = ranks_of(*closer_than_mate(probes, gallery))
    cmc = [float((ranks <= r).mean()) for r in range(1, RANKS + 1)]
    return {"rank1": cmc[0], "rank10": cmc[9], "probes": int(len(ranks)), "cmc": cmc}


def distractor_curve(probes: Probes, gallery: Gallery, distractors: np.ndarray,
                     point: OperatingPoint | None, steps: tuple[int, ...]) -> list[dict]:
    """Rank-1 and false matches at the operating cut-off as distractor faces are added in order."""
    mate_distance, closer = closer_than_mate(probes, gallery)
    d = distances(probes.vectors, distractors)
    # Distractors closer than the mate, counted for every prefix of the distractors at once.
    closer_prefix = np.cumsum(d < mate_distance[:, None], axis=1)
    d_gallery = distances(probes.vectors, gallery.vectors)
    other = gallery.people[None, :] != probes.people[:, None]
    curve = []
    for added in [s for s in steps if s < len(distractors)] + [len(distractors)]:
        extra = closer_prefix[:, added - 1] if added else 0
        ranks = ranks_of(mate_distance, closer + extra)
        faces = len(gallery.people) + added
        entry = {"distractors": added, "gallery_faces": faces, "rank1": float((ranks == 1).mean()),
                 "rank10": float((ranks <= 10).mean())}
        if point is not None:
            cutoff = point.cutoff(faces)
            within = ((d_gallery < cutoff) & other).sum(1) + (d[:, :added] < cutoff).sum(1)
            entry.update({
                "cutoff": round(cutoff, 4),
                "false_match_probability": point.calibration.false_match_probability(cutoff),
                "expected_false_matches": point.calibration.false_match_probability(cutoff) * faces,
                "measured_false_matches": float(within[probes.has_face].mean()),
            })
        curve.append(entry)
    return curve


def run_identify(settings: Settings, folder: Path, log: Callable[[str], None],
                 distractors: Path | None = None, limit_people: int | None = None) -> dict:
    split = split_folder(folder, limit_people)
    extra = [str(p) for p in image_files(distractors)] if distractors else []
    if distractors and not extra:
        raise InvalidRequest(f"no images in {distractors}")
    jobs = ([PhotoJob(p, (settings.mirror_probe,)) for p, _ in split.probes]
            + [PhotoJob(p, (settings.mirror_gallery,)) for p, _ in split.gallery]
            + [PhotoJob(p, (settings.mirror_gallery,)) for p in extra])
    described, throughput = run_photos(settings, jobs, log)
    dimension = next((v.shape[1] for d in described for v in d.vectors.values() if d.found), 1)
    probe_part = described[:len(split.probes)]
    gallery_part = described[len(split.probes):len(split.probes) + len(split.gallery)]
    probes = probes_of(probe_part, [p for _, p in split.probes], settings.mirror_probe, dimension)
    gallery = gallery_of(gallery_part, [p for _, p in split.gallery], settings.mirror_gallery, dimension)
    report: dict = {
        "folder": str(folder), "detector": settings.detector, "embedder": settings.embedder,
        "people": len(split.people), "probe_people": len(split.probes),
        "distractor_people": split.distractor_people, "gallery_photos": len(split.gallery),
        "gallery_faces": int(len(gallery.people)),
        "single": {**single_probe(probes, gallery), "no_face": {
            "probes": sum(not d.found for d in probe_part),
            "gallery": sum(not d.found for d in gallery_part)}},
        "unreadable": sum(d.error is not None for d in described),
        **throughput.as_dict(),
    }
    if distractors:
        tail = described[len(split.probes) + len(split.gallery):]
        faces = gallery_of(tail, [-1] * len(tail), settings.mirror_gallery, dimension).vectors
        point = search_cutoff(settings)
        report["distractors"] = {
            "folder": str(distractors), "photos": len(extra), "faces": int(len(faces)),
            "no_face": sum(not d.found for d in tail), "operating_point": point.describe(),
            "curve": distractor_curve(probes, gallery, faces, point, DISTRACTOR_STEPS),
        }
    return report
