"""The meaning of a distance: the estimated false-match probability, from LFW impostor pairs,
and the cut-offs that follow from it at a gallery's size.

data/calibration/<embedder>.json holds, for a grid of distances, the fraction of
different-person pairs among all LFW photos (tens of millions of pairs) that lie at or under
that distance with that embedder. It is written by `facesearch eval lfw --write-calibration`
with the same pipeline as ingest.

A probability alone hides the gallery's size: comparing a face with N others, about
probability x N strangers are expected at least as close. Every cut-off is therefore set from a
target number of expected false matches and the number of faces compared (cut_off), and every
candidate carries its expected false matches and a band (band).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from facesearch.errors import FacesearchError

MEANING = (
    "false_match_probability: the share of different-person pairs, measured on LFW, whose "
    "distance is at or under this one; lower is stronger. It is an estimate on one dataset, "
    "not the probability that this candidate is the person. expected_false_matches: that share "
    "times the faces searched, the number of strangers expected at least this close in this "
    "gallery; band: strong under 0.01, moderate under 1, weak from 1 (many strangers look "
    "this close)."
)

# Bands by expected false matches (strangers in this gallery at least as close), upper bounds
# exclusive: the one place they are set (README "Search results").
BANDS = ((0.01, "strong"), (1.0, "moderate"))
WEAK = "weak"  # many strangers look this close


def band(expected_false_matches: float) -> str:
    """strong (< 0.01 strangers expected this close), moderate (< 1) or weak (>= 1)."""
    for below, name in BANDS:
        if expected_false_matches < below:
            return name
    return WEAK


@dataclass(frozen=True)
class Calibration:
    distances: np.ndarray  # ascending grid
    impostor_cdf: np.ndarray  # fraction of impostor pairs at or under each grid distance
    pairs: int  # impostor pairs measured: probabilities under 1/pairs are floored there

    def false_match_probability(self, distance: float) -> float:
        value = float(np.interp(distance, self.distances, self.impostor_cdf))
        return max(value, 1.0 / self.pairs)

    def distance_at(self, probability: float) -> float:
        """The largest grid distance whose false-match probability is at or under
        probability: the inverse of false_match_probability on the grid. 0.0 where even the
        nearest grid distance is more probable, which includes every probability under
        1/pairs: the calibration cannot vouch for a rarer event, so nothing passes."""
        if probability < 1.0 / self.pairs:
            return 0.0
        at_or_under = int(np.searchsorted(self.impostor_cdf, probability, side="right"))
        return float(self.distances[at_or_under - 1]) if at_or_under else 0.0

    def to_json(self) -> str:
        return json.dumps({
            "pairs": self.pairs,
            "distances": [round(float(d), 4) for d in self.distances],
            "impostor_cdf": [float(f"{v:.4g}") for v in self.impostor_cdf],
        })

    @classmethod
    def from_impostor_distances(cls, histogram: np.ndarray, edges: np.ndarray) -> "Calibration":
        cumulative = np.cumsum(histogram)
        total = int(cumulative[-1])
        return cls(distances=edges[1:], impostor_cdf=cumulative / total, pairs=total)


def cut_off(calibration: Calibration, target_false_matches: float, faces: int,
            ceiling: float) -> tuple[float, float]:
    """The distance under which about target_false_matches strangers are expected when one
    face is compared with `faces` others, and the false-match probability allowed per
    comparison: target / faces, but never above ceiling (Settings.false_match_ceiling), so
    that a tiny gallery gets no absurd cut-off. A face is within the cut-off when its distance
    is under the distance returned."""
    probability = min(target_false_matches / max(faces, 1), ceiling)
    return calibration.distance_at(probability), probability


# An embedder's name becomes a file name: nothing that could leave the calibration folder.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def calibration_path(embedder: str) -> Path:
    """Where the calibration of an embedder lives in the package (read and written here)."""
    if not _NAME.fullmatch(embedder):
        raise FacesearchError(f"embedder name {embedder!r} cannot name a calibration file")
    return Path(str(resources.files("facesearch").joinpath("data", "calibration", f"{embedder}.json")))


@lru_cache(maxsize=16)
def load_calibration(embedder: str) -> Calibration:
    """The calibration of the named embedder, read once per process; an embedder without
    one is refused, since its distances would have no meaning and no cut-off could be set."""
    path = calibration_path(embedder)
    if not path.is_file():
        raise FacesearchError(
            f"embedder {embedder!r} has no calibration ({path.name} in facesearch/data/calibration): "
            f"run `facesearch eval lfw --write-calibration` with FACESEARCH_EMBEDDER={embedder}")
    data = json.loads(path.read_text())
    return Calibration(np.asarray(data["distances"]), np.asarray(data["impostor_cdf"]), int(data["pairs"]))
