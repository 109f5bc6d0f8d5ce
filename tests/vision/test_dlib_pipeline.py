"""Real dlib models on real LFW faces."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from facesearch.config import Settings
from facesearch.errors import InvalidRequest
from facesearch.imaging import decode
from facesearch.vision import FaceAnalyzer, make_detector
from tests.conftest import lfw_photos

LIMITS = {"max_pixels": 50_000_000, "max_bytes": 50_000_000}


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer(Settings(detector="hog", embedder="dlib-resnet"))


def pixels(path) -> np.ndarray:
    return decode(path.read_bytes(), **LIMITS).pixels


def descriptor(analyzer: FaceAnalyzer, array: np.ndarray) -> np.ndarray:
    faces = analyzer.analyse([array], mirror=True)[0]
    assert faces, "no face found"
    return faces[0].embedding


def test_same_person_is_under_the_threshold_and_different_people_over_it(lfw, analyzer) -> None:
    bush = [descriptor(analyzer, pixels(p)) for p in lfw_photos("George_W_Bush")[:2]]
    powell = descriptor(analyzer, pixels(lfw_photos("Colin_Powell")[0]))
    assert bush[0].shape == (128,) and bush[0].dtype == np.float32
    assert abs(np.linalg.norm(bush[0]) - 1) < 1e-5  # unit length
    assert np.linalg.norm(bush[0] - bush[1]) < 0.42
    assert np.linalg.norm(bush[0] - powell) > 0.42


def test_a_face_has_box_landmarks_score_quality_and_crop(lfw, analyzer) -> None:
    face = analyzer.analyse([pixels(lfw_photos("Tony_Blair")[0])], mirror=False)[0][0]
    # HOG gives none: eye centres and nose come from dlib's 5-point predictor.
    assert len(face.landmarks) == 3
    assert all(face.box.left - 10 <= x <= face.box.right + 10 and
               face.box.top - 10 <= y <= face.box.bottom + 10 for x, y in face.landmarks)
    assert 0.0 < face.quality.sharpness < 1.0
    assert face.score > 0 and face.quality.confidence == round(face.score, 4)
    # Eyes and nose base, no nose tip or mouth: a roll but no yaw or pitch.
    assert face.quality.roll is not None and face.quality.yaw is None and face.quality.pitch is None
    crop = Image.open(io.BytesIO(face.chip_jpeg))
    assert crop.size == (256, 256)  # the face chip (vision.chips), kept for re-embedding


def test_a_blurred_face_has_lower_sharpness(lfw, analyzer) -> None:
    image = Image.open(lfw_photos("Tony_Blair")[0])
    sharp = analyzer.analyse([np.asarray(image)], mirror=False)[0][0].quality.sharpness
    blurred = analyzer.analyse([np.asarray(image.filter(ImageFilter.GaussianBlur(2.5)))], mirror=False)[0]
    assert blurred and blurred[0].quality.sharpness < sharp


def test_a_large_photo_is_detected_downscaled_and_boxed_in_full_resolution(lfw, analyzer) -> None:
    original = Image.open(lfw_photos("Tony_Blair")[0])
    small_box = analyzer.detect(np.asarray(original))[0].box
    big = np.asarray(original.resize((2000, 2000), Image.Resampling.BICUBIC))
    assert analyzer.settings.detect_max_side < 2000
    big_box = analyzer.detect(big)[0].box
    scale = 2000 / 250
    assert abs(big_box.left - small_box.left * scale) < 0.1 * big_box.width
    assert abs(big_box.width - small_box.width * scale) < 0.15 * big_box.width
    # Aligned on the full-resolution image, the descriptor is the same person's.
    assert np.linalg.norm(descriptor(analyzer, big) - descriptor(analyzer, np.asarray(original))) < 0.4


def test_faces_smaller_than_the_minimum_size_are_ignored(lfw) -> None:
    photo = pixels(lfw_photos("Tony_Blair")[0])
    assert FaceAnalyzer(Settings(min_face_size=40)).detect(photo)
    assert FaceAnalyzer(Settings(min_face_size=200)).detect(photo) == []


def test_an_exif_rotated_photo_gives_the_same_person(lfw, analyzer) -> None:
    path = lfw_photos("Tony_Blair")[1]
    image = Image.open(path).rotate(90, expand=True)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...and tagged "rotate 90 clockwise to display"
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif, quality=95)
    upright = decode(out.getvalue(), **LIMITS).pixels
    assert np.linalg.norm(descriptor(analyzer, upright) - descriptor(analyzer, pixels(path))) < 0.3


def test_the_cnn_detector_finds_the_face_hog_finds(lfw) -> None:
    photo = pixels(lfw_photos("Tony_Blair")[0])
    hog = make_detector("hog").detect(photo, 1)[0].box
    cnn = make_detector("cnn").detect(photo, 0)
    assert cnn
    centre = ((cnn[0].box.left + cnn[0].box.right) / 2, (cnn[0].box.top + cnn[0].box.bottom) / 2)
    assert hog.left < centre[0] < hog.right and hog.top < centre[1] < hog.bottom


def test_a_photo_without_a_face_gives_no_face(analyzer) -> None:
    rng = np.random.default_rng(0)
    assert analyzer.analyse([rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)], mirror=False) == [[]]


def test_an_unknown_detector_name_fails_loudly() -> None:
    with pytest.raises(InvalidRequest, match="unknown detector"):
        make_detector("yolo")
