"""Clustering every face of every LFW photo into identities, scored against LFW's names.

Every face the detector finds in every photo is described as ingest describes a gallery face
(settings.mirror_gallery) and clustered with facesearch.clustering, as `facesearch identities
recluster` clusters a gallery. Ground truth: LFW names only the photo's subject, the face
nearest the photo's centre; every other face found in a photo is someone else, each counted as
a person of its own (a bystander seen in two photos is then counted as two people: a merge of
the two counts against precision, which can only understate it: many of LFW's bystanders are
its named people, George W. Bush above all). Photos where the detector finds no face are counted
and left out. `named_faces` gives the same measures over the photos' central faces alone (all
faces clustered, only the named ones scored): the figures without that understatement.

Measures (facesearch.clustering's unassigned faces count as identities of one face each):
  BCubed precision and recall: per face, the share of its cluster that is its person, and the
  share of its person that is in its cluster, averaged over faces.
  pairwise precision and recall: over pairs of faces put together, the share that are one
  person; over pairs of one person, the share put together.
  images_with_merged_faces: photos two of whose faces share an identity (must be 0).
The curve runs the same clustering at several per-pair false-match probabilities; the chosen
default is Settings.identity_false_match_probability. `incremental` scores, at the default, the
identities that ingest's assignment would give if the photos arrived in a random order, eight a
batch (the service's own assignment step, clustering.assign_batch, over exact neighbours).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facesearch.calibration import load_calibration
from facesearch.clustering import (
    NEIGHBOURS,
    UNASSIGNED,
    assign_batch,
    cluster,
    max_distance_for,
)
from facesearch.config import Settings
from facesearch.errors import InvalidRequest
from facesearch.evaluation.pipeline import PhotoJob, cached_descriptors, run_photos
from facesearch.vision import embedder_name

CURVE = (1e-6, 2e-6, 3e-6, 5e-6, 1e-5, 3e-5, 1e-4, 1e-3)  # per-pair false-match probabilities
MIN_FACES = (1, 2, 3, 4)  # compared at the default probability


def lfw_photos(lfw_dir: Path, limit_people: int | None = None) -> tuple[list[str], np.ndarray]:
    """Relative paths of LFW's photos (people in name order; the first limit_people of them
    when given) and each photo's person index."""
    folder = lfw_dir / "images"
    if not folder.is_dir():
        raise InvalidRequest(f"{lfw_dir} has no images/ folder of PERSON/photo folders")
    people = sorted(p.name for p in folder.iterdir() if p.is_dir())
    people = people[:limit_people] if limit_people else people
    paths, labels = [], []
    for index, person in enumerate(people):
        for photo in sorted((folder / person).glob("*.jpg")):
            paths.append(f"{person}/{photo.name}")
            labels.append(index)
    return paths, np.array(labels, np.int64)


def describe_every_face(settings: Settings, lfw_dir: Path, paths: list[str], cache: Path | None,
                        log: Callable[[str], None]) -> dict[str, np.ndarray]:
    """Every detected face of each photo: its descriptor, its photo's index and whether it is
    the photo's central face; cached in cache (.npz) for this pipeline and list of photos."""
    def describe() -> dict[str, np.ndarray]:
        jobs = [PhotoJob(str(lfw_dir / "images" / p), (settings.mirror_gallery,)) for p in paths]
        described, _ = run_photos(settings, jobs, log, "LFW photos")
        vectors, photos, central = [], [], []
        for number, photo in enumerate(described):
            if not photo.found:
                continue
            vectors.append(photo.vectors[settings.mirror_gallery])
            photos.append(np.full(photo.found, number))
            central.append(np.arange(photo.found) == int(np.argmin(photo.offsets)))
        dimension = vectors[0].shape[1] if vectors else 1
        return {"vectors": np.concatenate(vectors) if vectors else np.zeros((0, dimension), np.float32),
                "photos": np.concatenate(photos) if photos else np.zeros(0, np.int64),
                "central": np.concatenate(central) if central else np.zeros(0, bool),
                "unreadable": np.array(sum(d.error is not None for d in described)),
                "no_face": np.array(sum(not d.found and d.error is None for d in described))}

    pipeline = f"{settings.detector} + {settings.embedder} + mirror {settings.mirror_gallery}"
    return cached_descriptors(cache, paths, pipeline, describe, log)


def cache_path(settings: Settings, output: Path) -> Path:
    return output / (f"lfw_every_face-{_safe(settings.detector)}-{_safe(settings.embedder)}"
                     f"-{'mirrored' if settings.mirror_gallery else 'plain'}.npz")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def true_identities(photos: np.ndarray, central: np.ndarray, people: np.ndarray) -> np.ndarray:
    """Each face's true person: its photo's person for the central face, and a person of its
    own (numbered past every LFW person) for every other face."""
    truth = people[photos].copy()
    others = np.flatnonzero(~central)
    truth[others] = people.max(initial=0) + 1 + np.arange(len(others))
    return truth


def singletons_apart(labels: np.ndarray) -> np.ndarray:
    """Labels with every unassigned face (-1) given a label of its own."""
    labels = labels.copy()
    unassigned = np.flatnonzero(labels < 0)
    labels[unassigned] = labels.max(initial=-1) + 1 + np.arange(len(unassigned))
    return labels


def bcubed(labels: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """BCubed (precision, recall) of a clustering (every face labelled) against the truth."""
    _, pair = np.unique(np.stack([labels, truth]), axis=1, return_inverse=True)
    together = np.bincount(pair.ravel())[pair.ravel()]  # faces sharing both labels with each
    cluster_size = np.bincount(np.unique(labels, return_inverse=True)[1].ravel())[
        np.unique(labels, return_inverse=True)[1].ravel()]
    person_size = np.bincount(np.unique(truth, return_inverse=True)[1].ravel())[
        np.unique(truth, return_inverse=True)[1].ravel()]
    return float((together / cluster_size).mean()), float((together / person_size).mean())


def pairwise(labels: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Pairwise (precision, recall): of pairs put together, the share of one person; of pairs
    of one person, the share put together (1.0 where there are no such pairs)."""
    def pairs(counts: np.ndarray) -> int:
        return int((counts * (counts - 1) // 2).sum())

    _, both = np.unique(np.stack([labels, truth]), axis=1, return_counts=True)
    right = pairs(both)
    predicted = pairs(np.unique(labels, return_counts=True)[1])
    actual = pairs(np.unique(truth, return_counts=True)[1])
    return (right / predicted if predicted else 1.0), (right / actual if actual else 1.0)


def merged_images(labels: np.ndarray, photos: np.ndarray) -> int:
    """Photos two of whose faces share an identity (unassigned faces share none)."""
    assigned = labels >= 0
    pairs = np.unique(np.stack([photos[assigned], labels[assigned]]), axis=1)
    per_photo = np.bincount(pairs[0], minlength=photos.max(initial=0) + 1)
    return int(((np.bincount(photos[assigned], minlength=len(per_photo)) - per_photo) > 0).sum())


def measure(labels: np.ndarray, truth: np.ndarray, photos: np.ndarray) -> dict:
    complete = singletons_apart(labels)
    precision, recall = bcubed(complete, truth)
    pair_precision, pair_recall = pairwise(complete, truth)
    return {"bcubed_precision": round(precision, 4), "bcubed_recall": round(recall, 4),
            "pairwise_precision": round(pair_precision, 4), "pairwise_recall": round(pair_recall, 4),
            "identities": int(len(np.unique(complete))),
            "identities_of_two_or_more": int((np.unique(labels[labels >= 0], return_counts=True)[1] >= 2).sum()),
            "unassigned_faces": int((labels < 0).sum()),
            "images_with_merged_faces": merged_images(labels, photos)}


def measure_both(labels: np.ndarray, truth: np.ndarray, photos: np.ndarray,
                 central: np.ndarray) -> dict:
    """measure over every face, and its precision and recall over the named faces alone."""
    named = measure(labels[central], truth[central], photos[central])
    return {**measure(labels, truth, photos), "named_faces": {
        key: named[key] for key in ("bcubed_precision", "bcubed_recall", "pairwise_precision",
                                    "pairwise_recall")}}


def incremental(photos: np.ndarray, vectors: np.ndarray, max_distance: float, min_faces: int,
                batch_photos: int = 8, seed: int = 0) -> np.ndarray:
    """Labels as ingest assigns them (service.identities): photos in a seeded random order,
    batch_photos a batch; each face's neighbours are its NEIGHBOURS nearest among earlier
    batches' faces (as the vector index holds them) and its own batch's faces within reach."""
    arrival = np.random.default_rng(seed).permutation(int(photos.max(initial=-1)) + 1)
    position = np.empty_like(arrival)
    position[arrival] = np.arange(len(arrival))
    batch_of = position[photos] // batch_photos
    identity_of: dict[int, int | None] = {}
    images: dict[int, set[int]] = {}  # identity -> its photos
    earlier = np.zeros(len(photos), bool)

    def create() -> int:
        images[len(images) + 1] = set()
        return len(images)

    def join(members: list[int], identity: int) -> None:
        images[identity].update(int(photos[m]) for m in members)

    for batch in np.unique(batch_of):
        members = np.flatnonzero(batch_of == batch)
        known = np.flatnonzero(earlier)

        def neighbours_of(face: int) -> list[tuple[int, float]]:
            near = []
            if len(known):
                distances = np.linalg.norm(vectors[known] - vectors[face], axis=1)
                near = [(int(known[n]), float(distances[n]))
                        for n in np.argsort(distances)[:NEIGHBOURS]]
            near += [(int(other), float(np.linalg.norm(vectors[other] - vectors[face])))
                     for other in members if other != face]
            return [(other, d) for other, d in near if d < max_distance]

        assign_batch(members.tolist(), neighbours_of, lambda face: int(photos[face]), identity_of,
                     min_faces, lambda identity, image: image in images[identity], create, join)
        earlier[members] = True
    labels = np.full(len(photos), UNASSIGNED, np.int64)
    for face, identity in identity_of.items():
        labels[face] = identity
    return labels


def run_cluster_evaluation(settings: Settings, lfw_dir: Path, output: Path,
                           log: Callable[[str], None], limit_people: int | None = None) -> dict:
    paths, people = lfw_photos(lfw_dir, limit_people)
    if not paths:
        raise InvalidRequest(f"no LFW photos under {lfw_dir / 'images'}")
    described = describe_every_face(settings, lfw_dir, paths, cache_path(settings, output), log)
    vectors, photos, central = described["vectors"], described["photos"], described["central"]
    truth = true_identities(photos, central, people)
    calibration = load_calibration(embedder_name(settings.embedder))
    curve = []
    for probability in sorted({*CURVE, settings.identity_false_match_probability}):
        distance = max_distance_for(calibration, probability)
        labels = cluster(photos, vectors, distance, settings.identity_min_faces)
        curve.append({"false_match_probability": probability, "max_distance": distance,
                      **measure_both(labels, truth, photos, central)})
        log(f"p={probability:g} d={distance}: {curve[-1]}")
    chosen = next(row for row in curve
                  if row["false_match_probability"] == settings.identity_false_match_probability)
    assigned = incremental(photos, vectors, chosen["max_distance"], settings.identity_min_faces)
    log("scored ingest's incremental assignment")
    by_min_faces = [{"min_faces": faces, **measure_both(
        cluster(photos, vectors, chosen["max_distance"], faces), truth, photos, central)}
        for faces in MIN_FACES]
    return {"lfw_dir": str(lfw_dir), "detector": settings.detector, "embedder": settings.embedder,
            "photos": len(paths), "people": int(len(np.unique(people))),
            "faces": int(len(vectors)), "photos_without_face": int(described["no_face"]),
            "unreadable": int(described["unreadable"]),
            "min_faces": settings.identity_min_faces, **chosen,
            "default": {"false_match_probability": settings.identity_false_match_probability,
                        "max_distance": chosen["max_distance"]},
            "incremental": measure_both(assigned, truth, photos, central),
            "curve": curve, "by_min_faces": by_min_faces}
