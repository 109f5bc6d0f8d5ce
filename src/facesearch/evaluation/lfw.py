"""LFW: View 2 10-fold verification, closed-set identification, and the score calibration.

Every LFW photo is described once with the configured pipeline (settings.detector and
settings.embedder, as ingest runs them). The face used is the detected one nearest the photo's
centre, where LFW puts its subject; where the detector finds none, the photo's central half is
described instead, so that every View 2 pair is scored (the count is reported). Both plain and
mirror-averaged descriptors are kept, so that each variant is scored from one pass:
  plain: as ingest describes a gallery face by default
  mirrored probe: the probe's descriptor averaged with its mirror image's (search's default)
  mirrored probe and gallery: mirrored at ingest too (2x the describe cost)
The headline figures are those of the configured variant (mirror_probe, mirror_gallery).
TAR is reported at FAR 1e-3 and 1e-4 (View 2 has 3,000 impostor pairs: at 1e-4 the threshold
is the nearest impostor pair's distance).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesearch.calibration import Calibration, calibration_path
from facesearch.config import Settings
from facesearch.errors import FacesearchError
from facesearch.evaluation.pipeline import PhotoJob, cached_descriptors, run_photos

FARS = (1e-3, 1e-4)


@dataclass
class PairList:
    folds: list[list[tuple[int, int, bool]]]  # (image index, image index, same person)


def list_images(lfw_dir: Path) -> tuple[list[str], np.ndarray]:
    """Relative paths of every LFW photo, sorted, and each photo's person index."""
    paths = sorted(p.relative_to(lfw_dir / "images").as_posix()
                   for p in (lfw_dir / "images").glob("*/*.jpg"))
    people = {name: i for i, name in enumerate(sorted({p.split("/")[0] for p in paths}))}
    return paths, np.array([people[p.split("/")[0]] for p in paths])


def read_pairs(lfw_dir: Path, paths: list[str]) -> PairList:
    position = {p: i for i, p in enumerate(paths)}

    def image(name: str, number: str) -> int:
        return position[f"{name}/{name}_{int(number):04d}.jpg"]

    lines = (lfw_dir / "pairs.txt").read_text().split("\n")
    folds_count, per_side = map(int, lines[0].split())
    folds, row = [], 1
    for _ in range(folds_count):
        fold = []
        for _ in range(2 * per_side):
            parts = lines[row].split()
            row += 1
            if len(parts) == 3:
                fold.append((image(parts[0], parts[1]), image(parts[0], parts[2]), True))
            else:
                fold.append((image(parts[0], parts[1]), image(parts[2], parts[3]), False))
        folds.append(fold)
    return PairList(folds)


def cache_path(settings: Settings, output: Path) -> Path:
    """Where eval lfw (and eval demographics, which reads it) keeps this pipeline's descriptors."""
    return output / f"lfw_descriptors-{_safe(settings.detector)}-{_safe(settings.embedder)}.npz"


def describe_all(settings: Settings, lfw_dir: Path, paths: list[str], cache: Path | None,
                 log: Callable[[str], None]) -> dict[str, np.ndarray]:
    """The plain and mirrored descriptors of each photo's central face, and whether the
    detector found it; cached in cache (an .npz file, if given) for this detector and embedder."""
    def describe() -> dict[str, np.ndarray]:
        jobs = [PhotoJob(str(lfw_dir / "images" / p), (False, True), central_box=True) for p in paths]
        described, throughput = run_photos(settings, jobs, log)
        failed = [p for p, d in zip(paths, described) if d.error]
        if failed:
            raise FacesearchError(f"cannot read {len(failed)} LFW photos, e.g. {failed[0]}")
        # The face nearest the photo's centre, where LFW puts its subject.
        central = [int(np.argmin(d.offsets)) for d in described]
        return {"plain": np.stack([d.vectors[False][i] for d, i in zip(described, central)]),
                "mirrored": np.stack([d.vectors[True][i] for d, i in zip(described, central)]),
                "found": np.array([d.found > 0 for d in described]),
                "faces": np.array([d.found for d in described]),
                "images_per_second_per_core": np.array(
                    throughput.as_dict()["images_per_second_per_core"])}

    return cached_descriptors(cache, paths, f"{settings.detector} + {settings.embedder}", describe, log)


def pair_distances(probes: np.ndarray, gallery: np.ndarray,
                   pairs: PairList) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distances, same-person labels and fold numbers of all View 2 pairs; the first photo
    of a pair is described as a probe, the second as a gallery face."""
    rows = [(a, b, same, f) for f, fold in enumerate(pairs.folds) for a, b, same in fold]
    a = np.array([r[0] for r in rows])
    b = np.array([r[1] for r in rows])
    distances = np.linalg.norm(probes[a] - gallery[b], axis=1)
    return distances, np.array([r[2] for r in rows]), np.array([r[3] for r in rows])


def best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The threshold maximising accuracy; ties go to the midpoint between neighbours."""
    order = np.sort(distances)
    candidates = np.concatenate([[order[0] - 1e-6], (order[1:] + order[:-1]) / 2, [order[-1] + 1e-6]])
    accuracy = [((distances < t) == same).mean() for t in candidates]
    return float(candidates[int(np.argmax(accuracy))])


def ten_fold(distances: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    """View 2 protocol: threshold chosen on 9 folds, accuracy measured on the 10th."""
    accuracies, thresholds = [], []
    for fold in range(int(folds.max()) + 1):
        train, test = folds != fold, folds == fold
        threshold = best_threshold(distances[train], same[train])
        thresholds.append(threshold)
        accuracies.append(float(((distances[test] < threshold) == same[test]).mean()))
    return {"accuracy_mean": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies)),
            "threshold": float(np.mean(thresholds)), "fold_accuracies": accuracies}


def tar_at_far(distances: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float]:
    """True-accept rate at the largest threshold whose false-accept rate is at most far."""
    impostors = np.sort(distances[~same])
    allowed = int(np.floor(far * len(impostors)))
    threshold = float(impostors[allowed]) if allowed < len(impostors) else float("inf")
    return float((distances[same] < threshold).mean()), threshold


def identification(probe_vectors: np.ndarray, gallery_vectors: np.ndarray,
                   people: np.ndarray) -> dict:
    """One photo per person with 2+ photos in the gallery, with every single-photo person as a
    distractor; all their other photos are probes. Returns rank-1/rank-10 and the CMC curve."""
    counts = np.bincount(people)
    first_of = {}
    for i, p in enumerate(people):
        first_of.setdefault(int(p), i)
    gallery = np.array(sorted(first_of.values()))
    probes = np.array([i for i, p in enumerate(people) if counts[p] >= 2 and first_of[int(p)] != i])
    g = gallery_vectors[gallery]
    ranks = np.empty(len(probes), dtype=np.int64)
    for start in range(0, len(probes), 1024):
        chunk = probes[start:start + 1024]
        q = probe_vectors[chunk]
        d = (q**2).sum(1)[:, None] - 2 * q @ g.T + (g**2).sum(1)[None]
        mate = np.array([np.flatnonzero(gallery == first_of[int(people[p])])[0] for p in chunk])
        mate_d = d[np.arange(len(chunk)), mate]
        ranks[start:start + len(chunk)] = (d < mate_d[:, None]).sum(1) + 1
    cmc = [float((ranks <= r).mean()) for r in range(1, 51)]
    return {"gallery": int(len(gallery)), "probes": int(len(probes)), "rank1": cmc[0],
            "rank10": cmc[9], "cmc": cmc}


def impostor_calibration(probes: np.ndarray, gallery: np.ndarray, people: np.ndarray) -> Calibration:
    """Histogram of the probe-to-gallery distances of all different-person pairs of photos."""
    edges = np.linspace(0.0, 2.0, 801)
    histogram = np.zeros(len(edges) - 1, dtype=np.int64)
    gallery_norms = (gallery**2).sum(1)
    for start in range(0, len(probes), 1000):
        block = probes[start:start + 1000]
        d2 = (block**2).sum(1)[:, None] - 2 * block @ gallery.T + gallery_norms[None]
        # Each unordered pair once: the probe's index below the gallery photo's.
        upper = np.arange(len(gallery))[None, :] > np.arange(start, start + len(block))[:, None]
        different = people[start:start + len(block), None] != people[None, :]
        values = np.sqrt(np.maximum(d2[upper & different], 0))
        histogram += np.histogram(values, bins=edges)[0]
    return Calibration.from_impostor_distances(histogram, edges)


def run_lfw_evaluation(settings: Settings, lfw_dir: Path, output: Path, write_calibration: bool,
                       log: Callable[[str], None]) -> dict:
    paths, people = list_images(lfw_dir)
    pairs = read_pairs(lfw_dir, paths)
    described = describe_all(settings, lfw_dir, paths, cache_path(settings, output), log)
    plain, mirrored = described["plain"], described["mirrored"]
    # (probe descriptors, gallery descriptors) for each pipeline variant.
    variants = {
        "plain": (plain, plain),
        "mirrored probe": (mirrored, plain),
        "mirrored probe and gallery": (mirrored, mirrored),
    }
    production = {(False, False): "plain", (True, False): "mirrored probe",
                  (True, True): "mirrored probe and gallery"}.get(
                      (settings.mirror_probe, settings.mirror_gallery), "plain")
    configured = (mirrored if settings.mirror_probe else plain,
                  mirrored if settings.mirror_gallery else plain)
    found = described["found"]
    report: dict = {
        "detector": settings.detector, "embedder": settings.embedder,
        "photos": len(paths), "people": int(people.max() + 1),
        # Where the detector finds nothing, the photo's central half is described instead:
        # View 2 scores every pair.
        "faces_found_by": {"detector": int(found.sum()), "central box": int((~found).sum())},
        "faces_found": int(described["faces"].sum()),
        "images_per_second_per_core": float(described["images_per_second_per_core"]),
        "upsample": settings.upsample, "configured_pipeline": production, "variants": {},
    }
    curves = {}
    for name, (probes, gallery) in variants.items():
        distances, same, folds = pair_distances(probes, gallery, pairs)
        result = ten_fold(distances, same, folds)
        for far in FARS:
            result[f"tar_at_far_{far:g}"], result[f"far_{far:g}_threshold"] = tar_at_far(distances, same, far)
        report["variants"][name] = result
        curves[name] = (distances, same)
    ident = identification(*configured, people)
    main = report["variants"][production]
    report.update({
        "accuracy_mean": main["accuracy_mean"], "accuracy_std": main["accuracy_std"],
        "threshold": main["threshold"],
        **{f"tar_at_far_{far:g}": main[f"tar_at_far_{far:g}"] for far in FARS},
        "rank1": ident["rank1"], "rank10": ident["rank10"],
        "identification_gallery": ident["gallery"], "identification_probes": ident["probes"],
    })
    output.mkdir(parents=True, exist_ok=True)
    if write_calibration:
        # Only faces the detector found: the gallery holds no others.
        calibration = impostor_calibration(configured[0][found], configured[1][found], people[found])
        target = calibration_path(_embedder_name(settings))
        target.write_text(calibration.to_json())
        report["calibration_pairs"] = calibration.pairs
        log(f"wrote {target} from {calibration.pairs} impostor pairs")
    stem = f"lfw-{_safe(settings.detector)}-{_safe(settings.embedder)}"
    (output / f"{stem}.json").write_text(json.dumps({**report, "cmc": ident["cmc"]}, indent=2))
    _plot(curves, ident["cmc"], output / f"{stem}.png", f"{settings.detector} + {settings.embedder}")
    report["written"] = [str(output / f"{stem}.json"), str(output / f"{stem}.png")]
    return report


def _embedder_name(settings: Settings) -> str:
    """The name the embedder records with its descriptors (a manifest's own name)."""
    from facesearch.vision import make_embedder

    return make_embedder(settings.embedder, settings).name


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _plot(curves: dict, cmc: list[float], path: Path, pipeline: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (roc, cum) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, (distances, same) in curves.items():
        thresholds = np.sort(distances)
        far = [(distances[~same] < t).mean() for t in thresholds]
        tar = [(distances[same] < t).mean() for t in thresholds]
        roc.plot(far, tar, label=name)
    roc.set_xscale("log")
    roc.set_xlim(1e-4, 1)
    roc.set_ylim(0.9, 1.0)
    roc.set_xlabel("false accept rate")
    roc.set_ylabel("true accept rate")
    roc.set_title(f"LFW View 2 ROC (6000 pairs), {pipeline}")
    roc.legend()
    cum.plot(range(1, len(cmc) + 1), cmc, marker=".")
    cum.set_xlabel("rank")
    cum.set_ylabel("identification rate")
    cum.set_title(f"LFW identification CMC, {pipeline}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
