"""Accuracy by probe quality: the bands of each quality measure, rank-1 and rank-10 per band,
and the figures a search quotes for a probe of that quality (data/quality/EMBEDDER.json).

Each measure of the quality record (vision.quality) is banded on its own: a probe falls in one
band of each measure it has. `facesearch eval identify` reports its probes' bands under
`by_quality`. LFW's photos are large, sharp and mostly frontal, so its probes alone leave the
poor bands empty; `facesearch eval quality` adds degraded copies of every `copies_every`-th
probe photo (downscaled, blurred) to fill them, and with --write ships the figures that
searches quote. Its detector sees faces down to QUALITY_MIN_FACE_SIZE px, below the service's
minimum, so that the bands under it are measured too.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from datetime import date
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from facesearch.config import Settings
from facesearch.errors import FacesearchError
from facesearch.imaging import decode
from facesearch.types import FaceQuality

# Lower edges of each measure's bands; yaw and pitch are banded by their size (either side).
BANDS: dict[str, tuple[float, ...]] = {
    "face_pixels": (0, 24, 32, 40, 56, 80),
    "sharpness": (0, 0.02, 0.04, 0.08, 0.15),
    "yaw": (0, 15, 30, 45, 60),
    "pitch": (0, 10, 20, 30),
    "confidence": (0, 0.8, 0.9),
}
# Degraded copies of a probe photo: LFW's 250 px photos show faces about 93 px across, so
# these scales give faces of about 56, 42, 33, 25 and 19 px; blurs are Gaussian radii in px.
SCALES = (0.6, 0.45, 0.35, 0.27, 0.2)
BLURS = (1.5, 2.5, 4.0)
QUALITY_MIN_FACE_SIZE = 8
MIN_BAND_PROBES = 20  # fewer probes in a band make too rough a figure to quote


def band_of(measure: str, value: float) -> str:
    """The label of the band value falls in: "lower-upper", or "lower+" for the last."""
    edges = BANDS[measure]
    value = abs(value)
    index = max(i for i, edge in enumerate(edges) if value >= edge)
    if index == len(edges) - 1:
        return f"{_edge(edges[index])}+"
    return f"{_edge(edges[index])}-{_edge(edges[index + 1])}"


def _edge(value: float) -> str:
    return f"{value:g}"


def by_quality(qualities: Sequence[FaceQuality | None], ranks: np.ndarray) -> dict[str, list[dict]]:
    """Rank-1 and rank-10 of the probes in each band of each measure: {measure: [{"band",
    "probes", "rank1", "rank10"}]}, bands in order, empty bands left out. A probe without a
    face (quality None) is in no band; one without a measure (HOG's yaw) not in its bands."""
    report: dict[str, list[dict]] = {}
    for measure, edges in BANDS.items():
        rows = []
        values = [None if q is None else getattr(q, measure) for q in qualities]
        for lower in edges:
            label = band_of(measure, lower)
            inside = np.array([v is not None and band_of(measure, v) == label for v in values])
            if inside.any():
                chosen = ranks[inside]
                rows.append({"band": label, "probes": int(inside.sum()),
                             "rank1": round(float((chosen == 1).mean()), 4),
                             "rank10": round(float((chosen <= 10).mean()), 4)})
        report[measure] = rows
    return report


def degraded_copies(photo: Path, folder: Path, settings: Settings) -> list[Path]:
    """Copies of photo, downscaled by SCALES and blurred by BLURS, written as JPEG (quality
    90) into folder."""
    image = Image.fromarray(decode(photo.read_bytes(), max_pixels=settings.max_image_pixels,
                                   max_bytes=settings.max_image_bytes).pixels)
    copies = []
    for scale in SCALES:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        copies.append((f"scale{scale}", image.resize(size, Image.LANCZOS)))
    copies += [(f"blur{radius}", image.filter(ImageFilter.GaussianBlur(radius))) for radius in BLURS]
    written = []
    for kind, copy in copies:
        path = folder / f"{photo.parent.name}_{photo.stem}_{kind}.jpg"
        copy.save(path, quality=90)
        written.append(path)
    return written


def run_quality(settings: Settings, folder: Path, log: Callable[[str], None],
                limit_people: int | None = None, copies_every: int = 3) -> dict:
    """eval identify's split of folder, its probes and degraded copies of every copies_every-th
    probe photo searched among its gallery (exact, no cut-off); rank-1 and rank-10 by band."""
    from facesearch.evaluation.identify import (
        closer_than_mate,
        gallery_of,
        probes_of,
        ranks_of,
        split_folder,
    )
    from facesearch.evaluation.pipeline import PhotoJob, run_photos

    settings = settings.model_copy(update={"min_face_size": QUALITY_MIN_FACE_SIZE})
    split = split_folder(folder, limit_people)
    with tempfile.TemporaryDirectory(prefix="facesearch-quality-") as scratch:
        probes = list(split.probes)
        for photo, person in split.probes[::copies_every]:
            probes += [(str(copy), person)
                       for copy in degraded_copies(Path(photo), Path(scratch), settings)]
        jobs = ([PhotoJob(p, (settings.mirror_probe,)) for p, _ in probes]
                + [PhotoJob(p, (settings.mirror_gallery,)) for p, _ in split.gallery])
        described, throughput = run_photos(settings, jobs, log)
    dimension = next((v.shape[1] for d in described for v in d.vectors.values() if d.found), 1)
    probe_part = described[:len(probes)]
    probe_set = probes_of(probe_part, [p for _, p in probes], settings.mirror_probe, dimension)
    gallery = gallery_of(described[len(probes):], [p for _, p in split.gallery],
                         settings.mirror_gallery, dimension)
    ranks = ranks_of(*closer_than_mate(probe_set, gallery))
    return {
        "folder": str(folder), "detector": settings.detector, "embedder": settings.embedder,
        "date": date.today().isoformat(), "limit_people": limit_people,
        "copies_every": copies_every, "probes": len(probes),
        "original_probes": len(split.probes), "degraded_copies": len(probes) - len(split.probes),
        "no_face": sum(not d.found for d in probe_part), "gallery_faces": int(len(gallery.people)),
        "min_face_size": QUALITY_MIN_FACE_SIZE,
        "by_quality": by_quality([d.qualities[0] if d.found else None for d in probe_part], ranks),
        **throughput.as_dict(),
    }


def figures_path(embedder: str) -> Path:
    """Where the shipped by-band figures of an embedder live in the package."""
    if not embedder.replace("-", "").replace("_", "").isalnum():
        raise FacesearchError(f"embedder name {embedder!r} cannot name a figures file")
    return Path(str(resources.files("facesearch").joinpath("data", "quality", f"{embedder}.json")))


def write_figures(report: dict, embedder: str) -> Path:
    """Ship run_quality's by-band figures for searches to quote (data/quality/EMBEDDER.json)."""
    path = figures_path(embedder)
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = ("folder", "detector", "embedder", "date", "limit_people", "copies_every", "probes",
            "original_probes", "degraded_copies", "gallery_faces", "by_quality")
    path.write_text(json.dumps({k: report[k] for k in keep}, indent=1) + "\n")
    return path


def load_figures(embedder: str) -> dict | None:
    """The shipped by-band figures of an embedder, or None where none were measured."""
    path = figures_path(embedder)
    return json.loads(path.read_text()) if path.is_file() else None


def weakest_band(figures: dict, quality: FaceQuality) -> tuple[str, dict] | None:
    """Of the bands quality falls in (one per measure it has), the one whose probes fared
    worst at rank-1, among bands of at least MIN_BAND_PROBES probes: (measure, its row)."""
    worst = None
    for measure, rows in figures["by_quality"].items():
        value = getattr(quality, measure, None)
        if value is None:
            continue
        label = band_of(measure, value)
        row = next((r for r in rows if r["band"] == label), None)
        if row and row["probes"] >= MIN_BAND_PROBES and (worst is None or row["rank1"] < worst[1]["rank1"]):
            worst = (measure, row)
    return worst
