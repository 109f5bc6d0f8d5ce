"""LFW: View 2 10-fold verification, closed-set identification, and the score calibration.

Every LFW photo is described once with the production pipeline (detector, 5-point alignment,
ResNet descriptor). The face used is the detected one nearest the photo's centre, where LFW
puts its subject. Both the chip's and its mirror image's descriptors are kept, so that each
pipeline step can be scored on its own from one pass:
  hog, plain:   HOG only; where it finds nothing, a fixed central box is described instead
  hog+cnn, plain: dlib's CNN (MMOD) detector where HOG finds nothing
  hog+cnn, mirrored probe: the probe's descriptor averaged with its mirror image's
  ..., unit length: descriptors scaled to length 1 (production)
  hog+cnn, mirrored probe and gallery, unit length: mirrored at ingest too (2x the cost)
The headline figures are those of the configured pipeline (mirror_probe, mirror_gallery).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from facesearch.calibration import Calibration, calibration_path
from facesearch.config import Settings
from facesearch.imaging import decode
from facesearch.ingest import WorkerPool, process_analyzer
from facesearch.types import Box, Detection
from facesearch.vision import unit_length
from facesearch.vision.base import Detector

BATCH = 16


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


def describe_lfw_batch(files: list[str], settings: Settings) -> list[dict]:
    """For each photo: plain and mirrored descriptors, and how its face was found.
    settings.detector must be hog: the CNN is run here, only where HOG finds nothing."""
    analyzer = process_analyzer(settings)
    cnn = _cnn_detector()
    results = []
    for file in files:
        pixels = decode(Path(file).read_bytes(), max_pixels=settings.max_image_pixels,
                        max_bytes=settings.max_image_bytes).pixels
        height, width = pixels.shape[:2]
        hog = analyzer.detect(pixels)
        boxes = {"hog": _central(hog, width, height)}
        if boxes["hog"] is None:
            boxes["cnn"] = _central(cnn.detect(pixels, settings.upsample), width, height)
            # A fixed box around the centre, where LFW's deep-funneled faces sit.
            boxes["box"] = Detection(Box(width // 4, height // 4, 3 * width // 4, 3 * height // 4), 0.0)
        record: dict = {"found_by": "hog" if boxes["hog"] else ("cnn" if boxes.get("cnn") else "box")}
        for how, detection in boxes.items():
            if detection is None:
                continue
            chip = analyzer.embedder.align(pixels, detection).chip
            plain, flipped = analyzer.embedder.describe([chip, chip[:, ::-1]])
            record[how] = (plain, flipped)
        results.append(record)
    return results


@cache
def _cnn_detector() -> Detector:
    """One per process: its weights load on first use and stay loaded."""
    from facesearch.vision import make_detector

    return make_detector("cnn")


def _central(found: list[Detection], width: int, height: int) -> Detection | None:
    if not found:
        return None
    cx, cy = width / 2, height / 2
    return min(found, key=lambda d: ((d.box.left + d.box.right) / 2 - cx) ** 2
               + ((d.box.top + d.box.bottom) / 2 - cy) ** 2)


def describe_all(settings: Settings, lfw_dir: Path, paths: list[str], cache: Path,
                 log: Callable[[str], None]) -> dict[str, np.ndarray]:
    """Descriptors of every photo for each variant; cached in cache (an .npz file)."""
    if cache.exists():
        data = np.load(cache)
        if list(data["paths"]) == paths:
            log(f"using cached descriptors from {cache}")
            return {k: data[k] for k in data.files}
    files = [str(lfw_dir / "images" / p) for p in paths]
    batches = [files[i:i + BATCH] for i in range(0, len(files), BATCH)]
    records: list[dict] = []
    workers = settings.workers or len(os.sched_getaffinity(0))
    with WorkerPool(settings, workers) as pool:
        for done, batch in enumerate(pool.map(describe_lfw_batch, batches), start=1):
            records.extend(batch)
            if done % 50 == 0 or done == len(batches):
                log(f"described {len(records)}/{len(files)} photos")
    hog_only = np.stack([_chosen(r, allow_cnn=False)[0] for r in records])
    plain = np.stack([_chosen(r, allow_cnn=True)[0] for r in records])
    mirrored = np.stack([sum(_chosen(r, allow_cnn=True)) / 2 for r in records])
    found_by = np.array([r["found_by"] for r in records])
    result = {"paths": np.array(paths), "hog": hog_only.astype(np.float32),
              "hog+cnn": plain.astype(np.float32), "hog+cnn+mirror": mirrored.astype(np.float32),
              "found_by": found_by}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **result)
    return result


def _chosen(record: dict, allow_cnn: bool) -> tuple[np.ndarray, np.ndarray]:
    if "hog" in record:
        return record["hog"]
    if allow_cnn and "cnn" in record:
        return record["cnn"]
    return record["box"]


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
    settings = settings.model_copy(update={"detector": "hog"})
    paths, people = list_images(lfw_dir)
    pairs = read_pairs(lfw_dir, paths)
    described = describe_all(settings, lfw_dir, paths, output / "lfw_descriptors.npz", log)
    plain, mirrored = described["hog+cnn"], described["hog+cnn+mirror"]
    unit_plain, unit_mirrored = unit_length(plain), unit_length(mirrored)
    # (probe descriptors, gallery descriptors) for each step of the pipeline, in order.
    variants = {
        "hog, plain": (described["hog"], described["hog"]),
        "hog+cnn, plain": (plain, plain),
        "hog+cnn, mirrored probe": (mirrored, plain),
        "hog+cnn, plain, unit length": (unit_plain, unit_plain),
        "hog+cnn, mirrored probe, unit length": (unit_mirrored, unit_plain),
        "hog+cnn, mirrored probe and gallery, unit length": (unit_mirrored, unit_mirrored),
    }
    configured = (unit_mirrored if settings.mirror_probe else unit_plain,
                  unit_mirrored if settings.mirror_gallery else unit_plain)
    production = next(name for name, pair in variants.items()
                      if pair[0] is configured[0] and pair[1] is configured[1])
    found_by = described["found_by"]
    report: dict = {
        "photos": len(paths), "people": int(people.max() + 1),
        "faces_found_by": {k: int((found_by == k).sum()) for k in ("hog", "cnn", "box")},
        "upsample": settings.upsample, "configured_pipeline": production, "variants": {},
    }
    curves = {}
    for name, (probes, gallery) in variants.items():
        distances, same, folds = pair_distances(probes, gallery, pairs)
        result = ten_fold(distances, same, folds)
        result["tar_at_far_0.1%"], result["far_0.1%_threshold"] = tar_at_far(distances, same, 0.001)
        report["variants"][name] = result
        curves[name] = (distances, same)
    ident = identification(*configured, people)
    main = report["variants"][production]
    report.update({
        "accuracy_mean": main["accuracy_mean"], "accuracy_std": main["accuracy_std"],
        "threshold": main["threshold"], "tar_at_far_0.1%": main["tar_at_far_0.1%"],
        "rank1": ident["rank1"], "rank10": ident["rank10"],
        "identification_gallery": ident["gallery"], "identification_probes": ident["probes"],
    })
    output.mkdir(parents=True, exist_ok=True)
    if write_calibration:
        calibration = impostor_calibration(*configured, people)
        target = calibration_path("dlib-resnet")  # the descriptors above are dlib's
        target.write_text(calibration.to_json())
        report["calibration_pairs"] = calibration.pairs
        log(f"wrote {target} from {calibration.pairs} impostor pairs")
    (output / "lfw.json").write_text(json.dumps({**report, "cmc": ident["cmc"]}, indent=2))
    _plot(curves, ident["cmc"], output / "lfw.png")
    report["written"] = [str(output / "lfw.json"), str(output / "lfw.png")]
    return report


def _plot(curves: dict, cmc: list[float], path: Path) -> None:
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
    roc.set_xlim(1e-3, 1)
    roc.set_ylim(0.9, 1.0)
    roc.set_xlabel("false accept rate")
    roc.set_ylabel("true accept rate")
    roc.set_title("LFW View 2 ROC (6000 pairs)")
    roc.legend()
    cum.plot(range(1, len(cmc) + 1), cmc, marker=".")
    cum.set_xlabel("rank")
    cum.set_ylabel("identification rate")
    cum.set_title("LFW identification CMC (production pipeline)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
