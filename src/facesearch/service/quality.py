"""Face quality policy: the minimums below which ingest withholds a face, the plain-words
warnings a search gives about a poor probe face, and what the evaluation measured for probes
of its quality (evaluation.quality's shipped figures)."""

from __future__ import annotations

from dataclasses import dataclass

from facesearch.config import Settings
from facesearch.evaluation.quality import load_figures, weakest_band
from facesearch.types import FaceQuality


@dataclass(frozen=True)
class Shortfall:
    """One quality measure of a face past its setting's limit."""

    measure: str  # face_pixels, sharpness, confidence, yaw or pitch: the withholding reason
    value: float
    limit: float

    def words(self) -> str:
        """The shortfall in plain words, for an investigator."""
        v, limit = self.value, self.limit
        return {
            "face_pixels": f"the face is small: {v:g} px across, under the minimum of {limit:g} px",
            "sharpness": f"the face is blurred: sharpness {v:.3f}, under the minimum of {limit:g}",
            "confidence": f"the detector is unsure this is a face: confidence {v:.2f}, under "
                          f"the minimum of {limit:g}",
            "yaw": f"the head is turned {abs(v):.0f}° to the side, beyond the maximum of {limit:g}°",
            "pitch": f"the head is tilted {abs(v):.0f}° {'up' if v > 0 else 'down'}, beyond the "
                     f"maximum of {limit:g}°",
        }[self.measure]


def shortfalls(quality: FaceQuality, settings: Settings) -> list[Shortfall]:
    """The measures of quality past the settings' minimums (quality_min_*, quality_max_*),
    in the order above. A measure the face lacks (HOG's yaw and pitch) passes."""
    found = []
    for measure, limit in (("face_pixels", settings.quality_min_face_pixels),
                           ("sharpness", settings.quality_min_sharpness),
                           ("confidence", settings.quality_min_confidence)):
        value = getattr(quality, measure)
        if value < limit:
            found.append(Shortfall(measure, value, limit))
    for measure, limit in (("yaw", settings.quality_max_yaw), ("pitch", settings.quality_max_pitch)):
        value = getattr(quality, measure)
        if value is not None and abs(value) > limit:
            found.append(Shortfall(measure, value, limit))
    return found


def accuracy_bound(quality: FaceQuality, embedder: str) -> str:
    """How probes of this quality fared in the shipped evaluation, in plain words: the band
    (of the measures the face has) whose probes were found least often. Empty where the
    embedder has no shipped figures."""
    figures = load_figures(embedder)
    if figures is None:
        return ""
    worst = weakest_band(figures, quality)
    if worst is None:
        return ""
    measure, row = worst
    name = {"face_pixels": "face size (px)", "sharpness": "sharpness", "confidence": "confidence",
            "yaw": "head turn (°)", "pitch": "head tilt (°)"}[measure]
    return (f"Probes of this {name} band ({row['band']}) found their person first in "
            f"{row['rank1']:.0%} and among the first 10 in {row['rank10']:.0%} of {row['probes']} "
            f"searches measured ({figures['detector']} + {figures['embedder']}, "
            f"{figures['gallery_faces']} gallery faces, {figures['date']}).")
