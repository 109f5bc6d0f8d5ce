"""The GPU path on the CPU: YuNet on ONNX Runtime (what FACESEARCH_DEVICE=cuda runs) finds what
OpenCV's FaceDetectorYN finds, and SFace describes batches as it describes single faces. Only the
provider differs on a GPU; where ONNX Runtime has CUDA, the cuda test runs it for real."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from facesearch.config import Settings
from facesearch.errors import FacesearchError
from facesearch.imaging import decode
from facesearch.vision import make_detector, make_embedder
from facesearch.vision.onnx_models import YuNetDetector, YuNetOrtDetector, onnx_session
from facesearch.vision.registry import model_path
from tests.conftest import LFW

LIMITS = {"max_pixels": 50_000_000, "max_bytes": 50_000_000}


def pixels(path) -> np.ndarray:
    return decode(path.read_bytes(), **LIMITS).pixels


def sample_photos(count: int) -> list[np.ndarray]:
    """The first photo of every 250th person: a fixed sample spread over LFW."""
    people = sorted(p for p in (LFW / "images").iterdir() if p.is_dir())[::250][:count]
    return [pixels(sorted(person.glob("*.jpg"))[0]) for person in people]


def mosaic(photos: list[np.ndarray]) -> np.ndarray:
    """Four photos as a 2x2 grid: one image with several faces (NMS keeps each)."""
    return np.vstack([np.hstack(photos[:2]), np.hstack(photos[2:4])])


def corners(box) -> tuple[int, int, int, int]:
    return box.left, box.top, box.right, box.bottom


def assert_same_detections(expected, actual) -> None:
    key = lambda d: (d.box.top // 20, d.box.left)  # noqa: E731 - rows of faces, left to right
    expected, actual = sorted(expected, key=key), sorted(actual, key=key)
    assert len(actual) == len(expected)
    for e, a in zip(expected, actual):
        assert np.abs(np.subtract(corners(e.box), corners(a.box))).max() <= 2
        assert np.abs(np.subtract(e.landmarks, a.landmarks)).max() <= 2
        assert abs(e.score - a.score) <= 0.02


def test_yunet_on_onnx_runtime_finds_what_opencv_finds(lfw) -> None:
    model_dir = Settings().model_dir
    opencv, onnx_runtime = YuNetDetector(model_dir), YuNetOrtDetector(model_dir, "cpu")
    photos = sample_photos(20)
    grid = mosaic(photos[:4])
    assert len(opencv.detect(grid, 0)) >= 4
    for photo in photos + [grid, np.full((200, 300, 3), 128, np.uint8)]:
        assert_same_detections(opencv.detect(photo, 0), onnx_runtime.detect(photo, 0))


def test_the_cuda_device_runs_yunet_on_onnx_runtime(lfw) -> None:
    assert type(make_detector("yunet", Settings())) is YuNetDetector
    detector = make_detector("yunet", Settings(device="cuda"))
    assert isinstance(detector, YuNetOrtDetector)
    photo = sample_photos(1)[0]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert_same_detections(YuNetDetector(Settings().model_dir).detect(photo, 0),
                               detector.detect(photo, 0))
    else:
        with pytest.raises(FacesearchError, match="install onnxruntime-gpu"):
            detector.detect(photo, 0)


def test_yunet_takes_any_image_size_but_keeps_its_batch_of_one() -> None:
    # Its outputs are reshaped to [1, -1, n]: a larger batch would mix images up there.
    session = onnx_session(model_path("yunet", Settings().model_dir), "cpu")
    batch, _, height, width = session.get_inputs()[0].shape
    assert batch == 1 and isinstance(height, str) and isinstance(width, str)


def test_sface_describes_a_batch_as_it_describes_each_face(lfw) -> None:
    # What the CUDA device runs: SFace's file declares a batch of one, freed at load.
    settings = Settings()
    detector, sface = make_detector("yunet", settings), make_embedder("sface", settings)
    chips = []
    for photo in sample_photos(8):
        face = max(detector.detect(photo, 0), key=lambda d: d.box.width)
        chips.append(sface.align(photo, face).chip)
    session, input_name, _ = sface.model
    x = np.ascontiguousarray(np.stack(chips).astype(np.float32).transpose(0, 3, 1, 2))
    together = session.run(None, {input_name: x})[0]
    one_by_one = np.concatenate([session.run(None, {input_name: x[i:i + 1]})[0] for i in range(8)])
    assert together.shape == (8, 128)
    assert np.abs(together - one_by_one).max() < 1e-5
    assert np.abs(sface.describe(chips) - one_by_one).max() < 1e-5  # the embedder's own path
    cosine = together[0] @ together[1] / np.linalg.norm(together[0]) / np.linalg.norm(together[1])
    assert cosine < 0.5  # two different people: not a constant output


def test_only_the_cuda_device_describes_in_batches() -> None:
    # One chip a run is faster on one CPU thread.
    cpu = make_embedder("sface", Settings())
    assert cpu.model[2] == 1
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert make_embedder("sface", Settings(device="cuda")).model[2] is None
