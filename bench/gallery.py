"""Benchmark galleries: real LFW descriptors, and distractors drawn from Gaussians fitted to
them, so that a large gallery has the clustered structure of real faces rather than plain
random vectors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LFW = ROOT.parent / "shared" / "datasets" / "lfw"
FACES_PER_IDENTITY = 4  # faces drawn around each synthetic identity


def lfw_descriptors() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gallery descriptors (plain, as ingest makes them), probe descriptors (mirror-averaged,
    as search makes them) and person labels of every LFW photo; cached in results/."""
    from facesearch.config import Settings
    from facesearch.evaluation.lfw import describe_all, list_images
    from facesearch.vision import unit_length

    paths, people = list_images(LFW)
    variants = describe_all(Settings(), LFW, paths, ROOT / "results" / "lfw_descriptors.npz",
                            log=lambda line: print(line, file=sys.stderr))
    return unit_length(variants["plain"]), unit_length(variants["mirrored"]), people


class DistractorModel:
    """Synthetic faces from the real ones' statistics.

    The real faces' covariance splits into within-person (pooled over people with several
    faces) and between-person (the rest, clipped to positive semi-definite) parts. Synthetic
    identities are centres drawn around the real mean with the between-person covariance, and
    each gets FACES_PER_IDENTITY faces drawn around it with the within-person covariance.
    """

    def __init__(self, real: np.ndarray, labels: np.ndarray) -> None:
        self.mean = real.mean(0)
        total = np.cov(real, rowvar=False)
        people, inverse = np.unique(labels, return_inverse=True)
        residuals = real - np.stack([real[inverse == i].mean(0) for i in range(len(people))])[inverse]
        several = np.bincount(inverse)[inverse] > 1
        groups = len(np.unique(inverse[several]))
        within = residuals[several].T @ residuals[several] / max(several.sum() - groups, 1)
        self.between_factor = _square_root(total - within)
        self.within_factor = _square_root(within)

    def draw(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """count unit-length float32 descriptors."""
        dimension = len(self.mean)
        identities = -(-count // FACES_PER_IDENTITY)
        centres = self.mean + rng.standard_normal((identities, dimension)) @ self.between_factor.T
        noise = rng.standard_normal((count, dimension)) @ self.within_factor.T
        faces = np.repeat(centres, FACES_PER_IDENTITY, axis=0)[:count] + noise
        return (faces / np.linalg.norm(faces, axis=1, keepdims=True)).astype(np.float32)


def _square_root(covariance: np.ndarray) -> np.ndarray:
    """A with A A^T = covariance, negative eigenvalues (estimation noise) clipped to zero."""
    values, vectors = np.linalg.eigh(covariance)
    return vectors * np.sqrt(np.clip(values, 0, None))
