"""Photos through the configured pipeline, as ingest runs it: decode with ingest's limits,
detect, align and describe in worker processes (ingest.WorkerPool, process_analyzer), batches
of faces described together. Shared by every evaluation and by bench/models.py."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facesearch.config import Settings
from facesearch.errors import BadImage
from facesearch.imaging import DecodedImage, decode_for_analysis
from facesearch.ingest import WorkerPool, process_analyzer
from facesearch.types import Box, Detection, FaceQuality

BATCH = 8  # photos a worker task, as ingest's INGEST_BATCH: their faces are described together


@dataclass
class PhotoJob:
    path: str
    mirrors: tuple[bool, ...]  # descriptor variants wanted: plain (False), mirrored (True)
    detections: list[Detection] | None = None  # None: the configured detector runs
    central_box: bool = False  # no face found: describe the photo's central half instead (LFW)


@dataclass
class PhotoFaces:
    """Every described face of one photo, largest first (the detector's order)."""

    vectors: dict[bool, np.ndarray] = field(default_factory=dict)  # mirror -> (faces, dimension)
    # Each face's centre's distance from the photo's, in photo sides (LFW's subject is central).
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(0))
    detections: list[Detection] = field(default_factory=list)  # the detector's, in decoded pixels
    qualities: list[FaceQuality] = field(default_factory=list)  # of each described face
    error: str | None = None  # the photo could not be read or decoded

    @property
    def found(self) -> int:
        """Faces the detector found (a central box described in their place is not one)."""
        return len(self.detections)


def analyse_photos(jobs: list[PhotoJob], settings: Settings) -> list[PhotoFaces]:
    """Worker task: each photo's faces, detected (unless given) and described in one batch."""
    analyzer = process_analyzer(settings)
    results: list[PhotoFaces] = []
    described: list[tuple[PhotoFaces, DecodedImage, list[Detection], tuple[bool, ...]]] = []
    for job in jobs:
        try:
            image = decode_for_analysis(Path(job.path).read_bytes(), settings)
        except (OSError, BadImage) as exc:
            results.append(PhotoFaces(error=getattr(exc, "message", None) or str(exc)))
            continue
        pixels = image.pixels
        detections = analyzer.detect(pixels) if job.detections is None else job.detections
        result = PhotoFaces(detections=detections)
        height, width = pixels.shape[:2]
        chosen = detections
        if not chosen and job.central_box:
            # LFW's deep-funneled faces sit in the middle of the photo.
            chosen = [Detection(Box(width // 4, height // 4, 3 * width // 4, 3 * height // 4), 0.0)]
        result.offsets = np.array([np.hypot((d.box.left + d.box.right) / 2 / width - 0.5,
                                            (d.box.top + d.box.bottom) / 2 / height - 0.5)
                                   for d in chosen])
        results.append(result)
        described.append((result, image, chosen, job.mirrors))
    for mirror in (False, True):
        wanted = [(r, im, dets) for r, im, dets, mirrors in described if mirror in mirrors]
        faces = analyzer.describe([(im.pixels, dets) for _, im, dets in wanted], mirror) if wanted else []
        for (result, image, _), found in zip(wanted, faces):
            result.qualities = [f.quality for f in image.in_original(found)]
            result.vectors[mirror] = np.array([f.embedding for f in found], dtype=np.float32).reshape(
                len(found), analyzer.embedder.dimension)
    return results


def detect_photos(paths: list[str], settings: Settings) -> list[list[Detection] | None]:
    """Worker task: the detector's faces of each photo (None where it cannot be decoded)."""
    analyzer = process_analyzer(settings)
    found: list[list[Detection] | None] = []
    for path in paths:
        try:
            found.append(analyzer.detect(decode_for_analysis(Path(path).read_bytes(), settings).pixels))
        except (OSError, BadImage):
            found.append(None)
    return found


@dataclass
class Throughput:
    photos: int
    seconds: float
    workers: int

    def as_dict(self) -> dict:
        per_second = self.photos / self.seconds if self.seconds else 0.0
        return {"images_per_second": round(per_second, 2),
                "images_per_second_per_core": round(per_second / self.workers, 2),
                "workers": self.workers, "seconds": round(self.seconds, 1)}


def workers_for(settings: Settings) -> int:
    """Worker processes as ingest chooses them: settings.workers, or one per core."""
    return settings.workers or len(os.sched_getaffinity(0))


def run_photos(settings: Settings, jobs: list[PhotoJob], log: Callable[[str], None],
               what: str = "photos") -> tuple[list[PhotoFaces], Throughput]:
    """analyse_photos over every job in worker processes; results in the jobs' order."""
    workers = min(workers_for(settings), max(1, len(jobs) // BATCH))
    batches = [jobs[i:i + BATCH] for i in range(0, len(jobs), BATCH)]
    results: list[PhotoFaces] = []
    with WorkerPool(settings, workers) as pool:
        # The clock starts once the pool exists but before models load: as an ingest run pays it.
        started = time.perf_counter()
        for done, batch in enumerate(pool.map(analyse_photos, batches), start=1):
            results.extend(batch)
            if done % 100 == 0 or done == len(batches):
                log(f"described {len(results)}/{len(jobs)} {what}")
        seconds = time.perf_counter() - started
    return results, Throughput(len(jobs), seconds, workers)


def cached_descriptors(cache: Path | None, paths: list[str], pipeline: str,
                       describe: Callable[[], dict[str, np.ndarray]],
                       log: Callable[[str], None]) -> dict[str, np.ndarray]:
    """describe()'s arrays, from cache (an .npz file, if given) when it was written for these
    photos and this pipeline, else described now and cached there."""
    if cache is not None and cache.exists():
        data = np.load(cache)
        if list(data["paths"]) == paths and str(data["pipeline"]) == pipeline:
            log(f"using cached descriptors from {cache}")
            return {k: data[k] for k in data.files}
    result = {"paths": np.array(paths), "pipeline": np.array(pipeline), **describe()}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **result)
    return result


def image_files(folder: Path) -> list[Path]:
    """Image files directly in folder or in its sub-folders, sorted by path."""
    suffixes = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file()
                  and not p.name.startswith("."))
