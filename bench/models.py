"""Every detector x embedder combination side by side, measured in one run.

For each combination: LFW View 2 10-fold accuracy and TAR at FAR 1e-3 and 1e-4 (the face
nearest each photo's centre; the photo's central half where the detector finds none), `eval
identify` rank-1/rank-10 on LFW's PERSON/photo folders (the split of evaluation/identify.py:
the detector's faces only), the faces found, and images/s per core at ingest: detect, align and
describe (with ingest's mirror setting) of the same fixed sample of decoded photos, one
process, every combination timed in this run, also as a ratio to hog + dlib-resnet (the
pipeline before issue 13).

Work is shared: each detector runs once over the photos and each embedder describes its
detections. The fused embedder's accuracy comes from its parts' descriptors (the dlib and
SFace descriptors of the same faces, each scaled by the square root of its weight and
concatenated, as FusedEmbedder builds them; its mirror-averaged probe averages each part
before concatenating, which differs from FusedEmbedder's average of the concatenation only in
the parts' normalisation), so that weights can be compared without describing again: a weight
sweep is printed for each detector. Its ingest speed is timed with the real FusedEmbedder.

Usage: bash bench/models.sh [--limit N]   (a quick run: N View 2 pairs a fold, the first 10 N
LFW people for identification)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LFW = ROOT.parent / "shared" / "datasets" / "lfw"
TODAY = ("hog", "dlib-resnet")
FUSED_SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7)  # dlib-resnet's weight; SFace's is 1 minus it


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def view2_subset(pairs, limit: int | None):  # noqa: ANN001, ANN201 - evaluation.lfw.PairList
    """The first limit // 2 same-person and different-person pairs of each fold."""
    from facesearch.evaluation.lfw import PairList

    if not limit:
        return pairs
    half = max(1, limit // 2)
    return PairList([[p for p in fold if p[2]][:half] + [p for p in fold if not p[2]][:half]
                     for fold in pairs.folds])


def detect_all(settings, paths: list[str]) -> list:  # noqa: ANN001
    """The detector's faces of every photo (None where it cannot be decoded), in workers."""
    from facesearch.evaluation.pipeline import BATCH, detect_photos, workers_for
    from facesearch.ingest import WorkerPool

    found: list = []
    batches = [paths[i:i + BATCH] for i in range(0, len(paths), BATCH)]
    with WorkerPool(settings, min(workers_for(settings), len(batches))) as pool:
        for batch in pool.map(detect_photos, batches):
            found.extend(batch)
    return found


def describe_all(settings, paths: list[str], detections: list) -> list:  # noqa: ANN001
    """Every photo's faces, plain and mirrored, from the detections given."""
    from facesearch.evaluation.pipeline import PhotoFaces, PhotoJob, run_photos

    readable = [i for i, d in enumerate(detections) if d is not None]
    jobs = [PhotoJob(paths[i], (False, True), detections[i], central_box=True) for i in readable]
    described, _ = run_photos(settings, jobs, log, f"photos ({settings.detector} + {settings.embedder})")
    out = [PhotoFaces(error="unreadable") for _ in paths]
    for i, d in zip(readable, described):
        out[i] = d
    return out


def fuse(parts: list[list], weights: tuple[float, float]) -> list:
    """FusedEmbedder's descriptor from its parts' descriptors of the same faces."""
    from facesearch.evaluation.pipeline import PhotoFaces
    from facesearch.vision import unit_length

    scale = np.sqrt(np.asarray(weights) / sum(weights))
    fused = []
    for dlib_faces, sface_faces in zip(*parts):
        if dlib_faces.error:
            fused.append(dlib_faces)
            continue
        vectors = {m: unit_length(np.concatenate([dlib_faces.vectors[m] * scale[0],
                                                  sface_faces.vectors[m] * scale[1]], axis=1))
                   for m in dlib_faces.vectors}
        fused.append(PhotoFaces(vectors, dlib_faces.offsets, dlib_faces.detections))
    return fused


def accuracy(described: list, index: dict[str, int], pairs, split, settings) -> dict:  # noqa: ANN001
    """View 2 and identification figures of one combination's descriptors."""
    from facesearch.evaluation.identify import gallery_of, probes_of, single_probe
    from facesearch.evaluation.lfw import FARS, pair_distances, ten_fold, tar_at_far

    dimension = next(d.vectors[False].shape[1] for d in described if not d.error)
    view2 = {}
    for mirror in (False, True):
        view2[mirror] = np.stack([d.vectors[mirror][int(np.argmin(d.offsets))] if not d.error
                                  else np.zeros(dimension, np.float32) for d in described])
    distances, same, folds = pair_distances(view2[settings.mirror_probe], view2[settings.mirror_gallery], pairs)
    result = {"view2_accuracy": ten_fold(distances, same, folds)["accuracy_mean"], "view2_pairs": int(len(same))}
    for far in FARS:
        result[f"tar_at_far_{far:g}"] = tar_at_far(distances, same, far)[0]
    probe_faces = [described[index[p]] for p, _ in split.probes]
    gallery_faces = [described[index[p]] for p, _ in split.gallery]
    single = single_probe(
        probes_of(probe_faces, [p for _, p in split.probes], settings.mirror_probe, dimension),
        gallery_of(gallery_faces, [p for _, p in split.gallery], settings.mirror_gallery, dimension))
    result.update({"rank1": single["rank1"], "rank10": single["rank10"], "probes": single["probes"]})
    return result


def ingest_speed(settings, sample: list[str], detectors: list[str], embedders: list[str],  # noqa: ANN001
                 side: int = 0) -> dict:
    """Seconds a photo to detect (per detector) and to align and describe its faces (per
    detector x embedder), one process, on photos decoded beforehand; models loaded first.
    side: the photos resized to side x side first (0: as stored; LFW's are 250 px), since
    HOG's cost grows with a photo's area and YuNet's hardly does."""
    from PIL import Image

    from facesearch.imaging import decode_for_analysis
    from facesearch.vision import FaceAnalyzer, make_detector, make_embedder

    pixels = [decode_for_analysis(Path(p).read_bytes(), settings).pixels for p in sample]
    if side:
        pixels = [np.asarray(Image.fromarray(p).resize((side, side), Image.Resampling.BICUBIC))
                  for p in pixels]
    models = {name: make_embedder(name, settings) for name in embedders}
    seconds: dict = {}
    for detector_name in detectors:
        detector = make_detector(detector_name, settings)
        analyzer = FaceAnalyzer(settings.model_copy(update={"detector": detector_name}), detector,
                                models[embedders[0]])
        analyzer.detect(pixels[0])  # load the weights outside the clock
        started = time.perf_counter()
        found = [analyzer.detect(p) for p in pixels]
        detect = (time.perf_counter() - started) / len(pixels)
        for embedder_name in embedders:
            analyzer = FaceAnalyzer(settings.model_copy(update={"detector": detector_name,
                                                                "embedder": embedder_name}),
                                    detector, models[embedder_name])
            warm = next((i for i, f in enumerate(found) if f), 0)
            analyzer.describe([(pixels[warm], found[warm])], settings.mirror_gallery)
            started = time.perf_counter()
            analyzer.describe(list(zip(pixels, found)), settings.mirror_gallery)
            describe = (time.perf_counter() - started) / len(pixels)
            seconds[(detector_name, embedder_name)] = {
                "detect_ms": 1000 * detect, "describe_ms": 1000 * describe,
                "faces": sum(len(f) for f in found),
                "images_per_second_per_core": 1 / (detect + describe)}
            log(f"ingest {detector_name} + {embedder_name} at {side or 'stored'} px: "
                f"{seconds[(detector_name, embedder_name)]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None,
                        help="a quick run: View 2 pairs a fold (half same-person); identification "
                        "on the first 10 x N LFW people")
    parser.add_argument("--detectors", default="hog,yunet")
    parser.add_argument("--embedders", default="dlib-resnet,sface,fused")
    parser.add_argument("--ingest-images", type=int, default=200,
                        help="photos timed for images/s (the first LFW photos by name)")
    parser.add_argument("--ingest-side", type=int, default=500,
                        help="also time ingest on the sample resized to this many pixels a side "
                        "(photos of a few hundred pixels); 0: only as stored")
    parser.add_argument("--workers", type=int, default=0, help="accuracy runs' worker processes")
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "models.json")
    args = parser.parse_args()

    from facesearch.config import Settings
    from facesearch.evaluation.identify import split_folder
    from facesearch.evaluation.lfw import PairList, list_images, read_pairs
    from facesearch.vision import FUSED_WEIGHTS

    detectors = args.detectors.split(",")
    embedders = args.embedders.split(",")
    described_embedders = sorted({e for e in embedders if e != "fused"}
                                 | ({"dlib-resnet", "sface"} if "fused" in embedders else set()))
    settings = Settings(workers=args.workers)

    relative, _ = list_images(LFW)
    pairs = view2_subset(read_pairs(LFW, relative), args.limit)
    # A quick run's people: ten times as many as its pairs a fold, so that a few have probes.
    split = split_folder(LFW / "images", args.limit and 10 * args.limit)
    photos = sorted({relative[a] for fold in pairs.folds for a, _, _ in fold}
                    | {relative[b] for fold in pairs.folds for _, b, _ in fold}
                    | {str(Path(p).relative_to(LFW / "images")) for p, _ in split.probes + split.gallery})
    index = {p: i for i, p in enumerate(photos)}
    # View 2 refers to photos by their index in the full list: map it to ours.
    pairs = PairList([[(index[relative[a]], index[relative[b]], s) for a, b, s in fold] for fold in pairs.folds])
    paths = [str(LFW / "images" / p) for p in photos]
    by_path = {str(LFW / "images" / p): i for i, p in enumerate(photos)}
    log(f"{len(photos)} LFW photos, {sum(len(f) for f in pairs.folds)} View 2 pairs, "
        f"{len(split.probes)} identification probes")

    sample = [str(p) for p in sorted((LFW / "images").glob("*/*.jpg"))[:args.ingest_images]]
    speed = ingest_speed(settings, sample, detectors, embedders)
    larger = ingest_speed(settings, sample, detectors, embedders, args.ingest_side) if args.ingest_side else {}

    rows, sweep = [], []
    for detector in detectors:
        started = time.perf_counter()
        detections = detect_all(settings.model_copy(update={"detector": detector}), paths)
        log(f"{detector}: detected in {time.perf_counter() - started:.0f} s")
        described = {e: describe_all(settings.model_copy(update={"detector": detector, "embedder": e}),
                                     paths, detections) for e in described_embedders}
        if "fused" in embedders:
            described["fused"] = fuse([described["dlib-resnet"], described["sface"]], FUSED_WEIGHTS)
            for weight in FUSED_SWEEP:
                fused = fuse([described["dlib-resnet"], described["sface"]], (weight, 1 - weight))
                sweep.append({"detector": detector, "dlib_weight": weight,
                              **accuracy(fused, by_path, pairs, split, settings)})
        found = [d for d in detections if d is not None]
        for embedder in embedders:
            rows.append({"detector": detector, "embedder": embedder,
                         **accuracy(described[embedder], by_path, pairs, split, settings),
                         "faces_found": sum(len(d) for d in found),
                         "photos_without_a_face": sum(not d for d in found),
                         "photos": len(paths), **speed[(detector, embedder)],
                         **({"larger_images_per_second_per_core":
                             larger[(detector, embedder)]["images_per_second_per_core"]}
                            if larger else {})})
    base, larger_base = speed.get(TODAY), larger.get(TODAY)
    for row in rows:
        row["speed_vs_hog_dlib"] = (row["images_per_second_per_core"] / base["images_per_second_per_core"]
                                    if base else None)
        if larger_base:
            row["larger_speed_vs_hog_dlib"] = (row["larger_images_per_second_per_core"]
                                               / larger_base["images_per_second_per_core"])
    print(f"LFW: {len(paths)} photos, {rows[0]['view2_pairs']} View 2 pairs, {rows[0]['probes']} "
          f"identification probes; ingest speed on {len(sample)} photos, one process; "
          f"mirror_probe={settings.mirror_probe}, mirror_gallery={settings.mirror_gallery}")
    header = ("detector", "embedder", "View 2 acc", "TAR@1e-3", "TAR@1e-4", "rank-1", "rank-10",
              "faces found", "no face", "detect ms", "describe ms", "img/s/core", "x hog+dlib",
              f"img/s/core at {args.ingest_side} px", "x hog+dlib")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        ratio = f"{r['speed_vs_hog_dlib']:.2f}" if r["speed_vs_hog_dlib"] else "-"
        print(f"| {r['detector']} | {r['embedder']} | {r['view2_accuracy']:.4f} | {r['tar_at_far_0.001']:.4f} | "
              f"{r['tar_at_far_0.0001']:.4f} | {r['rank1']:.4f} | {r['rank10']:.4f} | {r['faces_found']} | "
              f"{r['photos_without_a_face']} | {r['detect_ms']:.1f} | {r['describe_ms']:.1f} | "
              f"{r['images_per_second_per_core']:.2f} | {ratio} | "
              + (f"{r['larger_images_per_second_per_core']:.2f} | {r['larger_speed_vs_hog_dlib']:.2f} |"
                 if larger_base else "- | - |"))
    if sweep:
        print(f"\nfused weights (dlib-resnet's; SFace's is 1 minus it; in use: {FUSED_WEIGHTS}):")
        print("| detector | dlib weight | View 2 acc | TAR@1e-3 | TAR@1e-4 | rank-1 |")
        print("|---|---|---|---|---|---|")
        for s in sweep:
            print(f"| {s['detector']} | {s['dlib_weight']} | {s['view2_accuracy']:.4f} | "
                  f"{s['tar_at_far_0.001']:.4f} | {s['tar_at_far_0.0001']:.4f} | {s['rank1']:.4f} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"limit": args.limit, "rows": rows, "fused_sweep": sweep}, indent=2))
    print(f"\nwritten: {args.output}")


if __name__ == "__main__":
    main()
