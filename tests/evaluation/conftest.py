"""Small real subsets of the shared data sets, chosen in code, linked into tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facesearch.config import Settings
from tests.conftest import LFW

FAIRFACE = LFW.parent / "fairface-val"
# dlib's HOG and ResNet: the pipeline whose calibration ships first, and no model install needed.
PIPELINE = {"detector": "hog", "embedder": "dlib-resnet"}


def pick_people(probed: int, distractors: int) -> list[tuple[str, int]]:
    """The first people by name with 3 to 6 photos (probed) and with 1 or 2 (distractors)."""
    chosen: list[tuple[str, int]] = []
    for person in sorted((LFW / "images").iterdir()):
        count = len(list(person.glob("*.jpg")))
        if 3 <= count <= 6 and sum(n >= 3 for _, n in chosen) < probed:
            chosen.append((person.name, count))
        elif count < 3 and sum(n < 3 for _, n in chosen) < distractors:
            chosen.append((person.name, count))
        if len(chosen) == probed + distractors:
            return chosen
    raise AssertionError("LFW has too few people")


@pytest.fixture(scope="module")
def people_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, int]]]:
    """12 LFW people as PERSON/photo folders (links): 8 with a probe, 4 distractors."""
    folder = tmp_path_factory.mktemp("people")
    chosen = pick_people(8, 4)
    for name, _ in chosen:
        os.symlink(LFW / "images" / name, folder / name)
    return folder, chosen


@pytest.fixture(scope="module")
def fairface_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 30 FairFace photos, as a flat folder of other people's faces."""
    folder = tmp_path_factory.mktemp("fairface")
    for n in range(1, 31):
        os.symlink(FAIRFACE / "images" / f"{n}.jpg", folder / f"{n}.jpg")
    return folder


@pytest.fixture
def eval_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "data", workers=1, **PIPELINE)
