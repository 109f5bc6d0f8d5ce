"""The meaning of a distance: the estimated false-match probability, from LFW impostor pairs.

data/calibration.json holds, for a grid of distances, the fraction of different-person pairs
among all LFW photos (tens of millions of pairs) that lie at or under that distance. It is
written by `facesearch eval lfw --write-calibration` with the same pipeline as ingest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

MEANING = (
    "false_match_probability: the share of different-person pairs, measured on LFW, whose "
    "distance is at or under this one; lower is stronger. It is an estimate on one dataset, "
    "not the probability that this candidate is the person."
)


@dataclass(frozen=True)
class Calibration:
    distances: np.ndarray  # ascending grid
    impostor_cdf: np.ndarray  # fraction of impostor pairs at or under each grid distance
    pairs: int  # impostor pairs measured: probabilities under 1/pairs are floored there

    def false_match_probability(self, distance: float) -> float:
        value = float(np.interp(distance, self.distances, self.impostor_cdf))
        return max(value, 1.0 / self.pairs)

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


def load_calibration() -> Calibration:
    data = json.loads(resources.files("facesearch").joinpath("data/calibration.json").read_text())
    return Calibration(np.asarray(data["distances"]), np.asarray(data["impostor_cdf"]), int(data["pairs"]))
