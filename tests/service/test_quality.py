"""Face quality at ingest and search, on real LFW faces: a face below a quality minimum is
withheld (counted by reason, audited), a kept face stores its quality record, and a poor probe
face is warned about in plain words."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageFilter
from sqlalchemy import select

from facesearch.config import Settings
from facesearch.service import AuditFilter, FaceSearchService
from facesearch.store.schema import faces, images
from tests.conftest import OPERATOR, jpeg_bytes, lfw_photos

FRONTAL = lfw_photos("Jodie_Foster")[1]  # about 94 px, sharpness 0.31, yaw -3, pitch -2
TURNED = lfw_photos("Emile_Lahoud")[0]  # yaw about 44, pitch about 7


def half_size(path: Path) -> Image.Image:
    image = Image.open(path)
    return image.resize((image.width // 2, image.height // 2), Image.LANCZOS)  # a 47 px face


def blurred(path: Path) -> Image.Image:
    return Image.open(path).filter(ImageFilter.GaussianBlur(3))


# Reason -> (settings that withhold it, the photo below that minimum and no earlier one).
CASES = {
    "face_pixels": ({"quality_min_face_pixels": 60}, lambda: half_size(FRONTAL)),
    "sharpness": ({"quality_min_sharpness": 0.15}, lambda: blurred(FRONTAL)),
    "confidence": ({"quality_min_confidence": 0.95}, lambda: Image.open(FRONTAL)),
    "yaw": ({"quality_max_yaw": 30}, lambda: Image.open(TURNED)),
    "pitch": ({"quality_max_yaw": 90, "quality_max_pitch": 4}, lambda: Image.open(TURNED)),
}


def make_service(tmp_path: Path, **minimums: object) -> FaceSearchService:
    service = FaceSearchService(Settings(home=tmp_path / "data", workers=1, **minimums))
    service.add_source(OPERATOR, "lfw", "legitimate_interests", "US")
    return service


def write(folder: Path, name: str, image: Image.Image) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(jpeg_bytes(image.convert("RGB"), quality=95))
    return path


@pytest.mark.parametrize("reason", list(CASES))
def test_ingest_withholds_a_face_below_a_minimum_counted_by_reason_and_audited(
        lfw, tmp_path: Path, reason: str) -> None:
    minimums, poor = CASES[reason]
    service = make_service(tmp_path, **minimums)
    try:
        photo = write(tmp_path / "in", "poor.jpg", poor())
        summary = service.ingest(OPERATOR, [photo], "lfw")
        assert summary.faces_low_quality == {reason: 1}
        assert summary.faces_indexed == 0
        # The image is recorded (collected lawfully; not analysed again), without the face.
        assert summary.images_indexed == 1 and service.store.counts()["faces"] == 0
        for action in ("ingest", "ingest.batch"):
            record = service.trail.records(AuditFilter(action=action))[-1]
            assert record["detail"]["faces_low_quality"] == {reason: 1}
        again = service.ingest(OPERATOR, [photo], "lfw")
        assert again.already_indexed == 1 and not again.faces_low_quality
    finally:
        service.close()


def test_a_kept_face_stores_its_quality_record(lfw, tmp_path: Path) -> None:
    service = make_service(tmp_path)
    try:
        photo = write(tmp_path / "in", "frontal.jpg", Image.open(FRONTAL))
        summary = service.ingest(OPERATOR, [photo], "lfw")
        assert summary.faces_indexed == 1 and not summary.faces_low_quality
        with service.store.engine.connect() as conn:
            row = conn.execute(select(faces).join(images, faces.c.image_id == images.c.id)).mappings().one()
        assert 80 < row["face_pixels"] < 110
        assert 0.1 < row["sharpness"] < 1 and row["quality"] == row["sharpness"]
        assert max(abs(row["yaw"]), abs(row["pitch"]), abs(row["roll"])) < 5
    finally:
        service.close()


def test_a_poor_probe_is_warned_about_in_plain_words_and_a_good_one_is_not(lfw, tmp_path: Path) -> None:
    service = make_service(tmp_path, quality_min_face_pixels=60)
    try:
        service.ingest(OPERATOR, [write(tmp_path / "in", "g.jpg", Image.open(lfw_photos("Jodie_Foster")[2]))],
                       "lfw")
        actor = service.local_operator(OPERATOR.name)
        case = service.open_case(actor, "Q-1", "criminal investigation", offence_type="robbery")
        small = jpeg_bytes(half_size(FRONTAL).convert("RGB"), quality=95)
        poor = service.search(actor, case.id, small, face="largest").faces[0]
        assert len(poor.quality_warnings) == 1
        assert f"{poor.quality.face_pixels} px across, under the minimum of 60 px" in poor.quality_warnings[0]
        assert service.detect_faces(actor, small)[0].quality_warnings == poor.quality_warnings
        good = service.search(actor, case.id, FRONTAL.read_bytes(), face="largest").faces[0]
        assert good.quality_warnings == [] and good.candidates
        # Both say how probes of their quality fared in the shipped evaluation.
        assert "found their person first in" in poor.quality_bound
        assert "found their person first in" in good.quality_bound
    finally:
        service.close()


def test_each_poor_photo_of_a_multi_photo_probe_is_warned_about_by_its_number(lfw, tmp_path: Path) -> None:
    service = make_service(tmp_path)
    try:
        service.ingest(OPERATOR, [write(tmp_path / "in", "g.jpg", Image.open(lfw_photos("Jodie_Foster")[2]))],
                       "lfw")
        actor = service.local_operator(OPERATOR.name)
        case = service.open_case(actor, "Q-2", "criminal investigation", offence_type="robbery")
        photos = [FRONTAL.read_bytes(), jpeg_bytes(blurred(lfw_photos("Jodie_Foster")[0]), quality=95)]
        face = service.search(actor, case.id, photos, face="largest").faces[0]
        assert len(face.quality_warnings) == 1
        assert face.quality_warnings[0].startswith("photo 2: the face is blurred: sharpness 0.0")
    finally:
        service.close()


def test_a_suppressed_person_beside_only_a_face_too_poor_to_search_leaves_no_image(
        lfw, tmp_path: Path) -> None:
    # Withheld for the suppression and for quality, nothing searchable remains: the image (its
    # location and page) must not be kept, as when the suppressed person stands alone.
    service = make_service(tmp_path, quality_min_face_pixels=60)
    try:
        service.suppress(OPERATOR, Path(FRONTAL).read_bytes(), "opted out")
        person, bystander = Image.open(FRONTAL), half_size(lfw_photos("Ian_Thorpe")[0])  # 45 px
        both = Image.new("RGB", (person.width + bystander.width, person.height))
        both.paste(person, (0, 0))
        both.paste(bystander, (person.width, 0))
        summary = service.ingest(OPERATOR, [write(tmp_path / "in", "both.jpg", both)], "lfw")
        assert summary.faces_withheld == 1 and summary.faces_low_quality == {"face_pixels": 1}
        assert summary.images_indexed == 0
        with service.store.engine.connect() as conn:
            assert conn.execute(select(images.c.id)).all() == []
    finally:
        service.close()
