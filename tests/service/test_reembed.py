"""Changing the embedder of a gallery: search answers with the old one until the switch, the
re-embedding resumes where it was interrupted, and suppressions keep working after it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from facesearch.config import Settings
from facesearch.errors import FacesearchError
from facesearch.service import FaceSearchService
from facesearch.service import models
from facesearch.store.metadata import from_blob
from tests.conftest import OPERATOR, lfw_photos

PEOPLE = ["Colin_Powell", "Tony_Blair", "Gerhard_Schroeder", "Jean_Chretien"]


def open_service(home: Path, embedder: str) -> FaceSearchService:
    return FaceSearchService(Settings(home=home, workers=1, embedder=embedder))


def sql(service: FaceSearchService, query: str) -> list[tuple]:
    with service.store.engine.begin() as conn:
        result = conn.execute(text(query))
        return [tuple(r) for r in result] if result.returns_rows else []


def top_person(service: FaceSearchService, photo: Path) -> str:
    faces = service._probe_faces(photo.read_bytes(), "largest")[1]
    best = service._rank(faces, 1)[0].candidates[0]
    return Path(best.location).parent.name


class Interrupted(Exception):
    pass


@pytest.fixture
def home(tmp_path: Path, lfw: Path) -> Path:
    service = open_service(tmp_path / "data", "dlib-resnet")
    service.add_source(OPERATOR, "lfw", "legitimate_interests", "US")
    service.ingest(OPERATOR, [p for n in PEOPLE for p in lfw_photos(n)[1:4]], "lfw")
    service.suppress(OPERATOR, lfw_photos("George_W_Bush")[0].read_bytes(), "test: opted out")
    service.close()
    return tmp_path / "data"


def test_search_uses_the_old_embedder_until_an_interrupted_reembed_finishes(home, monkeypatch) -> None:
    monkeypatch.setattr(models, "REEMBED_BATCH", 4)
    service = open_service(home, "sface")
    try:
        faces = service.store.counts()["faces"]
        assert service.live_embedder == "dlib-resnet"
        assert top_person(service, lfw_photos("Tony_Blair")[0]) == "Tony_Blair"
        assert len(service._template_of(lfw_photos("Tony_Blair")[0].read_bytes()).embedding) == 128
        assert service.model_status(OPERATOR)["reembedded"] == 0

        def stop_after_first_batch(progress) -> None:
            if progress.done >= 4:
                raise Interrupted

        with pytest.raises(Interrupted):
            service.reembed(OPERATOR, progress=stop_after_first_batch)
        # Part done and kept; search still answers with dlib's descriptors.
        done = service.store.reembedded("sface")
        assert 4 <= done < faces
        assert service.live_embedder == "dlib-resnet"
        assert top_person(service, lfw_photos("Colin_Powell")[0]) == "Colin_Powell"

        seen = []
        result = service.reembed(OPERATOR, progress=lambda p: seen.append(p.done))
        assert result.switched and result.done == faces - done  # only what was left
        assert service.live_embedder == "sface"
        assert sql(service, "SELECT embedder, count(*) FROM faces GROUP BY embedder") == [
            ("sface", faces)]
        for person in PEOPLE:
            assert top_person(service, lfw_photos(person)[0]) == person
        actions = [a for (a,) in sql(service, "SELECT action FROM audit_log ORDER BY id")]
        assert actions.count("reembed") == 2 and actions[-1] == "reembed.switch"
    finally:
        service.close()


def test_a_process_that_holds_the_old_index_follows_the_switch(home) -> None:
    # A server that searched before another process (the CLI) switched the gallery.
    server = open_service(home, "sface")
    try:
        assert top_person(server, lfw_photos("Tony_Blair")[0]) == "Tony_Blair"  # dlib index
        cli = open_service(home, "sface")
        cli.reembed(OPERATOR)
        cli.close()
        for person in PEOPLE:  # SFace probes against SFace vectors: the index was reloaded
            assert top_person(server, lfw_photos(person)[0]) == person
    finally:
        server.close()


def test_a_suppression_holds_after_the_switch(home) -> None:
    service = open_service(home, "sface")
    try:
        service.reembed(OPERATOR)
        templates = service.store.suppression_templates()
        assert templates.shape == (1, 128)
        bush = service._template_of(lfw_photos("George_W_Bush")[1].read_bytes()).embedding
        blair = service._template_of(lfw_photos("Tony_Blair")[0].read_bytes()).embedding
        # The suppression was described again with SFace: near Bush's other photo, far from Blair.
        assert np.linalg.norm(templates[0] - bush) < np.linalg.norm(templates[0] - blair) - 0.2
        summary = service.ingest(OPERATOR, lfw_photos("George_W_Bush")[1:3], "lfw")
        assert summary.faces_withheld == 2 and summary.faces_indexed == 0
    finally:
        service.close()


def test_switching_back_restores_the_old_descriptors_without_describing_again(home) -> None:
    service = open_service(home, "sface")
    first = service.store.vectors_of(service.store.face_ids())[1].copy()
    service.reembed(OPERATOR)
    service.close()
    back = open_service(home, "dlib-resnet")
    try:
        assert back.model_status(OPERATOR)["reembedded"] == len(first)  # kept at the switch
        back.reembed(OPERATOR)
        assert back.live_embedder == "dlib-resnet"
        np.testing.assert_array_equal(back.store.vectors_of(back.store.face_ids())[1], first)
    finally:
        back.close()


def test_an_erased_face_takes_its_waiting_descriptor_with_it(home, monkeypatch) -> None:
    monkeypatch.setattr(models, "REEMBED_BATCH", 4)
    service = open_service(home, "sface")
    try:
        with pytest.raises(Interrupted):
            service.reembed(OPERATOR, progress=lambda p: (_ for _ in ()).throw(Interrupted()))
        waiting = service.store.reembedded("sface")
        assert waiting == 4
        (face_id, blob), *_ = sql(service, "SELECT face_id, embedding FROM face_descriptors")
        service.delete(OPERATOR, face_id=face_id)
        assert service.store.reembedded("sface") == waiting - 1
        assert not any(blob in p.read_bytes() for p in home.rglob("*") if p.is_file())
        assert from_blob(blob).shape == (128,)
    finally:
        service.close()


def test_a_suppression_without_a_face_chip_stops_the_switch(home) -> None:
    service = open_service(home, "sface")
    try:
        sql(service, "UPDATE suppressions SET chip = NULL")
        with pytest.raises(FacesearchError, match="suppressions keep no face chip"):
            service.reembed(OPERATOR)
        assert service.live_embedder == "dlib-resnet"
    finally:
        service.close()
