"""Whatever goes wrong with one image (a model error, a hostile or broken file, a bug in
decoding) fails that image only, with a one-line reason; the batch goes on."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesearch import ingest
from facesearch.config import Settings
from facesearch.errors import BadImage
from facesearch.ingest import ImageTask, analyse_batch, read_task
from facesearch.types import Box, Detection, Face, FaceQuality
from tests.hostile_images import corpus


class FragileAnalyzer:
    """Fails on any image 77 pixels wide, as a model might on an input it cannot handle."""

    settings = Settings()

    def detect(self, pixels: np.ndarray) -> list:
        if pixels.shape[1] == 77:
            raise RuntimeError("model error\nwith a second line")
        return []

    def describe(self, per_image: list, mirror: bool) -> list:
        return [[] for _ in per_image]


def png(width: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, 40), (90, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def test_a_model_error_marks_only_the_image_at_fault(monkeypatch) -> None:
    monkeypatch.setattr(ingest, "_analyzer", FragileAnalyzer())
    tasks = [ImageTask(str(i), f"/in/{i}.png", png(w)) for i, w in enumerate((50, 77, 60))]
    tasks.append(ImageTask("x", "/in/x.txt", b"plain text"))
    results = analyse_batch(tasks, Settings())
    assert [r.error is None for r in results] == [True, False, True, False]
    assert results[1].error == "analysis failed: RuntimeError: model error"
    assert results[3].error.startswith("not an image")
    assert results[0].faces == [] and results[2].faces == [] and results[1].faces is None


def test_every_hostile_file_in_a_batch_is_skipped_with_its_reason_and_the_rest_analysed(monkeypatch):
    monkeypatch.setattr(ingest, "_analyzer", FragileAnalyzer())
    samples = corpus()
    tasks = [ImageTask(str(i), f"/in/{s.name}", s.data) for i, s in enumerate(samples)]
    results = analyse_batch(tasks + [ImageTask("ok", "/in/ok.png", png(50))], Settings())
    for sample, result in zip(samples, results):
        if sample.refusal is None:
            assert result.error is None and result.faces == [], sample.name
            assert (result.width, result.height) == sample.size
        else:
            assert sample.refusal in result.error, sample.name
            assert result.faces is None
    assert results[-1].error is None and results[-1].faces == []


def test_an_unexpected_decoding_error_fails_that_image_only(monkeypatch):
    monkeypatch.setattr(ingest, "_analyzer", FragileAnalyzer())
    real = ingest.decode_for_analysis

    def buggy(data: bytes, settings: Settings):
        if data == b"trap":
            raise KeyError("a bug")
        return real(data, settings)

    monkeypatch.setattr(ingest, "decode_for_analysis", buggy)
    tasks = [ImageTask("a", "/in/a.png", png(50)), ImageTask("b", "/in/b", b"trap"),
             ImageTask("c", "/in/c.png", png(60))]
    results = analyse_batch(tasks, Settings())
    assert [r.error for r in results] == [None, "cannot decode: KeyError: 'a bug'", None]


class OneFaceAnalyzer(FragileAnalyzer):
    """Finds one face at a fixed place of whatever pixels it is given."""

    settings = Settings(detect_max_side=100)  # decoded reduced to 200 pixels a side or more
    def detect(self, pixels: np.ndarray) -> list:
        return [Detection(Box(10, 20, 40, 50), 1.0)]

    def describe(self, per_image: list, mirror: bool) -> list:
        return [[Face(d.box, d.score, [(20, 30)], FaceQuality(30, 0.5, 1.0), np.zeros(128, np.float32), b"")
                 for d in detections] for _, detections in per_image]


def test_faces_of_an_image_decoded_reduced_are_stored_in_its_own_pixels(monkeypatch):
    monkeypatch.setattr(ingest, "_analyzer", OneFaceAnalyzer())
    out = io.BytesIO()
    Image.new("RGB", (800, 400), (90, 120, 200)).save(out, format="PNG")
    [result] = analyse_batch([ImageTask("x", "/in/x.png", out.getvalue())], OneFaceAnalyzer.settings)
    assert (result.width, result.height) == (800, 400)
    [face] = result.faces
    assert face.box == Box(40, 80, 160, 200) and face.landmarks == [(80, 120)]


# Reading files -------------------------------------------------------------------------------


def test_a_pipe_among_the_files_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(BadImage, match="not a regular file"):
        read_task(tmp_path / "pipe", 1000)


def test_a_device_is_refused_not_read_until_memory_runs_out():
    with pytest.raises(BadImage, match="not a regular file"):
        read_task(Path("/dev/zero"), 1000)


def test_a_file_over_the_byte_limit_is_refused_and_one_at_it_read(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 1001)
    (tmp_path / "fits").write_bytes(b"x" * 1000)
    with pytest.raises(BadImage, match="1001 bytes, over the 1000-byte limit"):
        read_task(tmp_path / "big", 1000)
    assert read_task(tmp_path / "fits", 1000).data == b"x" * 1000


def test_a_symlink_loop_is_refused_as_unreadable(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(BadImage, match="cannot read file"):
        read_task(tmp_path / "a", 1000)
