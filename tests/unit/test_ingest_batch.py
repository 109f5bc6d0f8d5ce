"""A model error on one image fails that image only, with a one-line reason."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from facesearch import ingest
from facesearch.config import Settings
from facesearch.ingest import ImageTask, analyse_batch


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
