"""Several photos of one person searched as one probe: a fused distance to each gallery face.

Three rules, compared by `facesearch eval identify` (its `multi` key; README, "Multi-photo
searches"): "best", the smallest distance over the probe photos; "mean", the mean of the
distances; "template", the distance to the probe photos' mean descriptor scaled back to unit
length (Amazon Rekognition's user vector). RULE is the one searches use, chosen by that
measurement: on LFW (YuNet + SFace, 901 people) the three tie at rank-1 within two probes, and
at the single photo's search cut-off the mean lets in the fewest strangers (3.0 a probe; one
photo 7.8, 10 targeted; the template 13.2, more than a single photo's calibration promises), so
the single photo's calibration can score a mean distance without understating strangers.
"""

from __future__ import annotations

import numpy as np

RULES = ("best", "mean", "template")
RULE = "mean"


def template(vectors: np.ndarray) -> np.ndarray:
    """The mean of unit descriptors (photos, dimension), scaled back to unit length."""
    mean = vectors.mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def fused_distances(probe: np.ndarray, gallery: np.ndarray, rule: str = RULE) -> np.ndarray:
    """Euclidean distances of one person's probe descriptors (photos, dimension) to each
    gallery descriptor (faces, dimension), fused by rule into one per face."""
    if rule == "template":
        return np.linalg.norm(gallery - template(probe)[None, :], axis=1)
    each = np.linalg.norm(gallery[None, :, :] - probe[:, None, :], axis=2)
    if rule == "best":
        return each.min(axis=0)
    if rule == "mean":
        return each.mean(axis=0)
    raise ValueError(f"unknown fusion rule {rule!r}: one of {', '.join(RULES)}")
