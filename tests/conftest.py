"""Shared fixtures: the LFW data set, generated images, and fresh data directories."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from facesearch.types import Actor

ROOT = Path(__file__).resolve().parent.parent
LFW = Path(os.environ.get("FACESEARCH_LFW_DIR", ROOT.parent / "shared" / "datasets" / "lfw"))
OPERATOR = Actor(name="test-operator")


def lfw_photos(name: str) -> list[Path]:
    return sorted((LFW / "images" / name).glob("*.jpg"))


@pytest.fixture(scope="session")
def lfw() -> Path:
    assert (LFW / "pairs.txt").exists(), f"LFW not found at {LFW}"
    return LFW


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # In-process analysis keeps tests fast; the worker pool has tests of its own.
    return Settings(home=tmp_path / "data", workers=1)


@pytest.fixture
def service(settings: Settings):
    svc = FaceSearchService(settings)
    yield svc
    svc.close()


def jpeg_bytes(image: Image.Image, **save_args) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", **save_args)
    return out.getvalue()


def noise_image(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
