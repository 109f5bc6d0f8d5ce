"""What a reviewer is shown beside a candidate: the probe face's crop kept with its search, the
expected strangers stored as computed then, the full source image only while its source still
holds the bytes indexed, and provenance in words that never reveal a server path."""

from __future__ import annotations

import hashlib
import io
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from facesearch.config import Settings
from facesearch.errors import Forbidden, NotFound, PolicyRefused
from facesearch.service import FaceSearchService
from facesearch.types import Actor
from tests.conftest import OPERATOR, jpeg_bytes, lfw_photos
from tests.service.test_accounts_and_cases import Clock, people
from tests.service.test_background_jobs import wait_until

PERSON, OTHER = "Al_Sharpton", "Abdullah_Gul"


@pytest.fixture
def svc(tmp_path: Path):
    # Every indexed face within the cut-off, so that each search lists the whole gallery; the
    # loopback web server below may be fetched from.
    service = FaceSearchService(Settings(home=tmp_path / "data", workers=1, search_false_matches=1e9,
                                         false_match_ceiling=1.0,
                                         crawl_allowed_networks=["127.0.0.1/32"]), Clock())
    yield service
    service.close()


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    """Copies of a few LFW photos in a folder of the test's own, so that one can be changed."""
    folder = tmp_path / "server-files" / "gallery"
    folder.mkdir(parents=True)
    for photo in lfw_photos(PERSON)[1:3] + lfw_photos(OTHER)[:2]:
        shutil.copy(photo, folder / photo.name)
    return folder


def searched(svc: FaceSearchService, gallery: Path) -> tuple[dict, int, int]:
    """ivy's search for PERSON over the gallery: (the team, case id, search id)."""
    team = people(svc)
    svc.add_source(OPERATOR, "lfw", "public_task", "US", display_name="Labeled Faces in the Wild")
    svc.ingest(OPERATOR, [gallery], "lfw")
    case = svc.open_case(team["ivy"], "PR-1", "missing person", offence_type="robbery")
    result = svc.search(team["ivy"], case.id, lfw_photos(PERSON)[0].read_bytes())
    return team, case.id, result.search_id


def test_each_searched_probe_face_keeps_a_small_crop_that_only_its_case_readers_see(
        svc: FaceSearchService, gallery: Path) -> None:
    team, case_id, search_id = searched(svc, gallery)
    crop = svc.probe_crop(team["ivy"], case_id, search_id, 0)
    image = Image.open(io.BytesIO(crop))
    assert image.format == "JPEG" and max(image.size) <= 200 and min(image.size) > 40
    assert svc.probe_crop(team["sam"], case_id, search_id, 0) == crop  # a supervisor reads cases
    assert svc.trail.records()[-1]["action"] == "probe.crop"
    with pytest.raises(NotFound):
        svc.probe_crop(team["ivy"], case_id, search_id, 1)  # the photo has one face searched
    stranger = Actor("eve", "investigator", user_id=999, organisation_id=999, organisation="Other")
    with pytest.raises(Forbidden):
        svc.probe_crop(stranger, case_id, search_id, 0)
    with pytest.raises(Forbidden):
        svc.probe_crop(team["ada"], case_id, search_id, 0)  # an admin reads no case


def test_a_stored_search_keeps_the_strangers_expected_as_computed_when_it_ran(
        svc: FaceSearchService, gallery: Path) -> None:
    team, case_id, search_id = searched(svc, gallery)
    _, [search] = svc.case_searches(team["ivy"], case_id, search_id)
    assert search.faces_searched == 4  # the gallery's faces then
    svc.ingest(OPERATOR, lfw_photos(OTHER)[2:4], "lfw")  # the gallery grows afterwards
    _, [again] = svc.case_searches(team["ivy"], case_id, search_id)
    assert again.faces_searched == 4
    for candidate in again.candidates:
        assert candidate.expected_false_matches == pytest.approx(
            candidate.false_match_probability * 4, rel=1e-2)
        assert candidate.band in ("strong", "moderate", "weak")
    # A row from before the column was filled is computed from its search's size.
    with svc.store.transaction() as conn:
        conn.exec_driver_sql("UPDATE candidates SET expected_false_matches = NULL")
    _, [older] = svc.case_searches(team["ivy"], case_id, search_id)
    assert [c.expected_false_matches for c in older.candidates] == [
        c.expected_false_matches for c in again.candidates]


def test_the_source_image_is_shown_only_while_its_file_holds_the_bytes_indexed(
        svc: FaceSearchService, gallery: Path) -> None:
    team, case_id, search_id = searched(svc, gallery)
    _, [search] = svc.case_searches(team["ivy"], case_id, search_id)
    top = search.candidates[0]
    compared = svc.compare_candidate(team["ivy"], case_id, search_id, top.id)
    assert not compared.withheld and compared.box is not None and compared.probe_crop_kept
    assert 0 <= compared.box.left < compared.box.right <= compared.width
    shown = Image.open(io.BytesIO(svc.source_image(team["ivy"], case_id, search_id, top.id)))
    assert shown.format == "JPEG" and shown.size == (compared.width, compared.height)
    assert svc.trail.records()[-1]["detail"]["available"] is True

    # The file at the image's location now holds other bytes: not the image that was indexed.
    location = gallery / next(p.name for p in gallery.iterdir()
                              if hashlib.sha256(p.read_bytes()).hexdigest() == top.image_sha256)
    location.write_bytes(jpeg_bytes(Image.open(location).rotate(90)))
    with pytest.raises(NotFound, match="no longer available"):
        svc.source_image(team["ivy"], case_id, search_id, top.id)
    record = svc.trail.records()[-1]
    assert record["action"] == "image.view" and record["detail"]["available"] is False


def test_provenance_names_the_source_and_upload_but_never_a_server_path(
        svc: FaceSearchService, gallery: Path, tmp_path: Path) -> None:
    team, case_id, search_id = searched(svc, gallery)
    upload = lfw_photos(PERSON)[3]
    job = svc.start_ingest_job(team["ada"], "lfw", uploads=[("Holiday at the beach (2).jpg",
                                                            upload.read_bytes())])
    wait_until(lambda: svc.ingest_jobs(team["ada"], job.id)[0].status == "done")
    uploaded = svc.search(team["ivy"], case_id, lfw_photos(PERSON)[0].read_bytes()).search_id

    places = []
    for search in (search_id, uploaded):
        review = svc.search_review(team["ivy"], case_id, search)
        for candidate in review.search.candidates:
            shown = review.provenance[candidate.id]
            assert shown.source == "Labeled Faces in the Wild"
            places.append(shown.place)
            compared = svc.compare_candidate(team["ivy"], case_id, search, candidate.id)
            assert compared.provenance == shown
            for value in vars(shown).values():
                assert str(tmp_path) not in str(value or "") and "/" not in str(value or "")
    assert "uploaded file Holiday at the beach (2).jpg" in places
    assert f"file {lfw_photos(OTHER)[0].name} on the server" in places


@pytest.fixture
def web() -> Iterator[tuple[str, dict[str, bytes], list[str]]]:
    """A web server on loopback answering GET path with served[path] (404 when absent), and
    the paths asked for, in order."""
    served: dict[str, bytes] = {}
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            asked.append(self.path)
            body = served.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served, asked
    server.shutdown()
    server.server_close()


def test_a_source_image_collected_from_the_web_is_fetched_there_and_checked(
        svc: FaceSearchService, gallery: Path, web: tuple[str, dict[str, bytes], list[str]]) -> None:
    team, case_id, search_id = searched(svc, gallery)
    _, [search] = svc.case_searches(team["ivy"], case_id, search_id)
    top = search.candidates[0]
    original = next(p.read_bytes() for p in gallery.iterdir()
                    if hashlib.sha256(p.read_bytes()).hexdigest() == top.image_sha256)
    # As a crawl records it: the image's URL is its location.
    base, served, web_views = web
    url = f"{base}/photos/portrait.jpg"
    with svc.store.transaction() as conn:
        conn.exec_driver_sql("UPDATE images SET location = ? WHERE sha256 = ?", (url, top.image_sha256))
        conn.exec_driver_sql("UPDATE candidates SET location = ? WHERE id = ?", (url, top.id))

    served["/photos/portrait.jpg"] = original
    compared = svc.compare_candidate(team["ivy"], case_id, search_id, top.id)
    assert compared.provenance.image_url == url == compared.provenance.place
    assert web_views == []  # the comparison is made of what is stored: nothing fetched
    assert Image.open(io.BytesIO(svc.source_image(team["ivy"], case_id, search_id, top.id))).size == (
        compared.width, compared.height)
    assert web_views == ["/photos/portrait.jpg"]  # the image shown is fetched once

    served["/photos/portrait.jpg"] = jpeg_bytes(Image.open(io.BytesIO(original)).rotate(180))
    with pytest.raises(NotFound, match="no longer available"):
        svc.source_image(team["ivy"], case_id, search_id, top.id)
    del served["/photos/portrait.jpg"]  # taken down
    with pytest.raises(NotFound, match="no longer available"):
        svc.source_image(team["ivy"], case_id, search_id, top.id)


def test_an_erased_candidate_is_compared_without_face_image_or_provenance(
        svc: FaceSearchService, gallery: Path) -> None:
    team, case_id, search_id = searched(svc, gallery)
    _, [search] = svc.case_searches(team["ivy"], case_id, search_id)
    top = search.candidates[0]
    svc.delete(OPERATOR, face_id=top.face_id)
    compared = svc.compare_candidate(team["ivy"], case_id, search_id, top.id)
    assert compared.candidate.erased_at is not None
    assert (compared.provenance, compared.box, compared.withheld) == (None, None, False)
    with pytest.raises(NotFound, match="erased"):
        svc.source_image(team["ivy"], case_id, search_id, top.id)
    assert svc.probe_crop(team["ivy"], case_id, search_id, 0)  # the probe is the case's own


def test_a_source_image_showing_someone_withheld_or_erased_is_never_shown_whole(
        svc: FaceSearchService, gallery: Path) -> None:
    # One picture of two people: PERSON beside OTHER.
    left, right = (Image.open(p).convert("RGB") for p in (lfw_photos(PERSON)[3], lfw_photos(OTHER)[3]))
    pair = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
    pair.paste(left, (0, 0))
    pair.paste(right, (left.width, 0))
    (gallery / "pair.jpg").write_bytes(jpeg_bytes(pair))
    team, case_id, search_id = searched(svc, gallery)
    _, [search] = svc.case_searches(team["ivy"], case_id, search_id)
    pair_sha = hashlib.sha256((gallery / "pair.jpg").read_bytes()).hexdigest()
    in_pair = [c for c in search.candidates if c.image_sha256 == pair_sha]
    assert len(in_pair) == 2
    single = next(c for c in search.candidates if c.image_sha256 != pair_sha)
    ivy = team["ivy"]
    assert not svc.compare_candidate(ivy, case_id, search_id, in_pair[0].id).withheld
    svc.source_image(ivy, case_id, search_id, in_pair[0].id)

    # One of the two is erased (an opt-out, a deletion): the picture stays for the other face,
    # but is never shown whole again.
    svc.delete(OPERATOR, face_id=in_pair[1].face_id)
    assert svc.compare_candidate(ivy, case_id, search_id, in_pair[0].id).withheld
    with pytest.raises(PolicyRefused, match="withheld: it also shows someone whose face was removed"):
        svc.source_image(ivy, case_id, search_id, in_pair[0].id)
    record = svc.trail.records()[-1]
    assert record["action"] == "image.view.refused"

    # A face of someone suppressed skipped at ingest (images.withheld_faces) withholds it too.
    assert not svc.compare_candidate(ivy, case_id, search_id, single.id).withheld
    with svc.store.transaction() as conn:
        conn.exec_driver_sql("UPDATE images SET withheld_faces = 1 WHERE sha256 = ?",
                             (single.image_sha256,))
    assert svc.compare_candidate(ivy, case_id, search_id, single.id).withheld
    with pytest.raises(PolicyRefused, match="withheld"):
        svc.source_image(ivy, case_id, search_id, single.id)


def test_probe_crops_are_purged_with_the_probe_retention_for_every_search(
        svc: FaceSearchService, gallery: Path) -> None:
    team, case_id, search_id = searched(svc, gallery)  # a case that keeps no probe photo
    assert svc.search_review(team["ivy"], case_id, search_id).probe_crops == {0}
    svc.clock.advance(days=svc.settings.probe_retention_days - 1)
    assert svc.run_retention(OPERATOR).probe_crops == 0
    svc.clock.advance(days=2)
    assert svc.run_retention(OPERATOR).probe_crops == 1
    with pytest.raises(NotFound):
        svc.probe_crop(team["ivy"], case_id, search_id, 0)
    review = svc.search_review(team["ivy"], case_id, search_id)
    assert review.probe_crops == set()
    assert not svc.compare_candidate(team["ivy"], case_id, search_id,
                                     review.search.candidates[0].id).probe_crop_kept
    report = svc.case_report(team["ivy"], case_id)
    assert report.probe_crops == {} and report.searches[0].candidates  # the search stays
