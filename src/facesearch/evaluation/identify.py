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

`multi` searches several photos of a person as one probe (facesearch.fusion), on a split of
its own: a person with exactly three photos probes with the first two, one with four or more
with the first three, and the rest of their photos are the gallery, so that every probe
person keeps a photo there; people with fewer than three photos are distractors as above.
Each rule of fusion.RULES is reported, the service's (fusion.RULE) at the top level, beside
the first photo alone searched in the same, smaller, gallery (`single_same_gallery`): the
margin that fusion itself buys. A probe photo gives its largest face; a probe none of whose
photos has a face is a miss. At the search cut-off each rule would be given (see
`fused_cutoff`), the strangers measured within it per probe are reported beside the target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facesearch.config import Settings
from facesearch.errors import InvalidRequest
from facesearch.evaluation.operating import OperatingPoint, search_cutoff
from facesearch.evaluation.pipeline import PhotoFaces, PhotoJob, image_files, run_photos
from facesearch.evaluation.quality import by_quality
from facesearch.fusion import RULE, RULES, fused_distances

MIN_PHOTOS = 3  # a person with fewer photos has no probe: a distractor
RANKS = 50  # CMC curve length
DISTRACTOR_STEPS = (0, 1000, 2500, 5000, 10000, 25000, 50000)


@dataclass
class Split:
    probes: list[tuple[str, int]]  # (photo, person index)
    gallery: list[tuple[str, int]]
    people: list[str]
    distractor_people: int
    # The multi-photo protocol's split of the same folder.
    multi_probes: list[tuple[list[str], int]] = field(default_factory=list)  # (photos, person)
    multi_gallery: list[tuple[str, int]] = field(default_factory=list)


def multi_probe_photos(photos: int) -> int:
    """How many of a person's photos (three or more) form their multi-photo probe: all but one
    of three, three of more, so that at least one stays in the gallery."""
    return 2 if photos == MIN_PHOTOS else 3


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
            used = multi_probe_photos(len(photos))
            split.multi_probes.append((photos[:used], index))
            split.multi_gallery.extend((p, index) for p in photos[used:])
        else:
            split.distractor_people += 1
            split.gallery.extend((p, index) for p in photos)
            split.multi_gallery.extend((p, index) for p in photos)
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
    return closer_in(distances(probes.vectors, gallery.vectors), probes, gallery)


def closer_in(d: np.ndarray, probes: Probes, gallery: Gallery) -> tuple[np.ndarray, np.ndarray]:
    """closer_than_mate for given distances (probes x gallery faces)."""
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
    return cmc_of(ranks_of(*closer_than_mate(probes, gallery)))


def cmc_of(ranks: np.ndarray) -> dict:
    cmc = [float((ranks <= r).mean()) for r in range(1, RANKS + 1)]
    return {"rank1": cmc[0], "rank10": cmc[9], "probes": int(len(ranks)), "cmc": cmc}


def fused_cutoff(point: OperatingPoint, faces: int, photos: int, rule: str) -> float:
    """The search cut-off of a probe of `photos` photos fused by rule (as the service's
    Engine.cut_off sets it): "best" is under the cut-off when any photo is, so each photo
    gets the false-match probability p' with 1 - (1 - p')^photos = the single photo's;
    "mean" and "template" keep the single photo's calibration."""
    single = point.cutoff(faces)
    if rule != "best" or photos == 1:
        return single
    probability = point.calibration.false_match_probability(single)
    return point.calibration.distance_at(1 - (1 - probability) ** (1 / photos))


def multi_probe(probes: list[np.ndarray], people: np.ndarray, gallery: Gallery,
                point: OperatingPoint) -> dict:
    """Protocol "multi" for each fusion rule: rank-1/rank-10 (CMC) and the strangers within
    the rule's search cut-off, per probe with a face (expected: search_false_matches)."""
    has_face = np.array([len(p) > 0 for p in probes])
    shell = Probes(np.zeros((len(probes), 0), np.float32), people, has_face)
    faces = len(gallery.people)
    rules = {}
    for rule in RULES:
        d = np.full((len(probes), faces), np.inf, np.float32)
        within = []
        for row, vectors in enumerate(probes):
            if len(vectors):
                d[row] = fused_distances(vectors, gallery.vectors, rule)
                stranger = gallery.people != people[row]
                within.append(int((d[row][stranger] < fused_cutoff(point, faces, len(vectors), rule)).sum()))
        entry = cmc_of(ranks_of(*closer_in(d, shell, gallery)))
        rules[rule] = {**entry, "measured_false_matches": float(np.mean(within)) if within else 0.0}
    return rules


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


def multi_report(split: Split, by_path: dict[str, PhotoFaces], settings: Settings,
                 dimension: int) -> dict:
    """The `multi` key: fusion.RULE's figures at the top, every rule's under `rules`, and the
    first photo alone in the same gallery."""
    gallery_part = [by_path[p] for p, _ in split.multi_gallery]
    gallery = gallery_of(gallery_part, [p for _, p in split.multi_gallery], settings.mirror_gallery,
                         dimension)
    people = np.array([person for _, person in split.multi_probes])
    photos = [[by_path[p] for p in paths] for paths, _ in split.multi_probes]
    vectors = [np.stack([d.vectors[settings.mirror_probe][0] for d in probe if d.found])
               if any(d.found for d in probe) else np.zeros((0, dimension), np.float32)
               for probe in photos]
    point = search_cutoff(settings)
    rules = multi_probe(vectors, people, gallery, point)
    first = probes_of([probe[0] for probe in photos], list(people), settings.mirror_probe, dimension)
    alone = single_probe(first, gallery)
    strangers = ((distances(first.vectors, gallery.vectors) < point.cutoff(len(gallery.people)))
                 & (gallery.people[None, :] != people[:, None])).sum(axis=1)[first.has_face]
    chosen = rules[RULE]
    return {
        "rule": RULE, "rank1": chosen["rank1"], "rank10": chosen["rank10"],
        "probes": chosen["probes"],
        "no_face": {"probes": sum(not v.shape[0] for v in vectors),
                    "probe_photos": sum(not d.found for probe in photos for d in probe),
                    "gallery": sum(not d.found for d in gallery_part)},
        "probe_photos": {str(n): sum(len(paths) == n for paths, _ in split.multi_probes) for n in (2, 3)},
        "gallery_photos": len(split.multi_gallery), "gallery_faces": int(len(gallery.people)),
        "single_same_gallery": {"rank1": alone["rank1"], "rank10": alone["rank10"],
                                "measured_false_matches": float(strangers.mean()) if len(strangers) else 0.0},
        "rank1_margin": chosen["rank1"] - alone["rank1"],
        "search_false_matches": settings.search_false_matches,
        "rules": rules,
    }


def run_identify(settings: Settings, folder: Path, log: Callable[[str], None],
                 distractors: Path | None = None, limit_people: int | None = None) -> dict:
    split = split_folder(folder, limit_people)
    extra = [str(p) for p in image_files(distractors)] if distractors else []
    if distractors and not extra:
        raise InvalidRequest(f"no images in {distractors}")
    multi_probing = {p for photos, _ in split.multi_probes for p in photos}
    # A photo in the single gallery that also probes in multi is described both ways once.
    both = tuple(sorted({settings.mirror_gallery, settings.mirror_probe}))
    jobs = ([PhotoJob(p, (settings.mirror_probe,)) for p, _ in split.probes]
            + [PhotoJob(p, both if p in multi_probing else (settings.mirror_gallery,))
               for p, _ in split.gallery]
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
        "multi": multi_report(split, dict(zip([job.path for job in jobs], described)), settings,
                              dimension),
        # The single-photo probes' rank-1 and rank-10 by their face's quality band.
        "by_quality": by_quality([d.qualities[0] if d.found else None for d in probe_part],
                                 ranks_of(*closer_than_mate(probes, gallery))),
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
