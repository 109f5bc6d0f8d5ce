"""Operating points: the distance cut-offs at which evaluations count false matches, from the
embedder's LFW calibration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from facesearch.calibration import Calibration, cut_off, load_calibration
from facesearch.config import Settings
from facesearch.vision import embedder_name


@dataclass
class OperatingPoint:
    calibration: Calibration
    how: str  # in words, for the report
    cutoff: Callable[[int], float]  # gallery faces -> distance; within it means under it

    def describe(self) -> dict:
        return {"how": self.how, "calibration_pairs": self.calibration.pairs}


def search_cutoff(settings: Settings) -> OperatingPoint:
    """The search's candidate cut-off as the service sets it for a gallery of a given size."""
    calibration = load_calibration(embedder_name(settings.embedder))
    return OperatingPoint(
        calibration,
        f"the search cut-off: {settings.search_false_matches:g} strangers expected among the "
        f"gallery's faces (search_false_matches), false-match probability at most "
        f"{settings.false_match_ceiling:g} (false_match_ceiling); a face is within it when "
        f"its distance is under it",
        lambda faces: cut_off(calibration, settings.search_false_matches,
                              faces, settings.false_match_ceiling)[0])
