"""The use cases end to end on real LFW faces: ingest, search, delete, purge, suppress."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facesearch.errors import NotFound, PolicyRefused
from facesearch.service import LEAD_NOTICE, AuditFilter, FaceSearchService
from tests.conftest import LFW, OPERATOR, lfw_photos

# People with at least six photos, chosen in code: photo 0 is the probe, 1-3 the gallery,
# 4-5 are held for later ingests.
PEOPLE = [p.name for p in sorted((LFW / "images").iterdir())
          if len(list(p.glob("*.jpg"))) >= 6][:5]


def gallery(people: list[str] = PEOPLE) -> list[Path]:
    return [photo for name in people for photo in lfw_photos(name)[1:4]]


def search(service: FaceSearchService, photo: bytes, **options: object):
    """Search as the local operator inside a test case, opened on first use."""
    actor = service.local_operator(OPERATOR.name)
    case = (service.cases.case_by_number(actor.organisation_id, "T-1")
            or service.open_case(actor, "T-1", "criminal investigation", offence_type="robbery"))
    return service.search(actor, case.id, photo, **options)


def names_in(result) -> list[str]:
    return [Path(c.location).parent.name for face in result.faces for c in face.candidates]


@pytest.fixture
def indexed(service: FaceSearchService, lfw: Path) -> FaceSearchService:
    service.add_source(OPERATOR, "lfw", "legitimate_interests", "US")
    summary = service.ingest(OPERATOR, gallery(), "lfw")
    assert summary.images_indexed == 3 * len(PEOPLE)
    assert summary.faces_indexed >= 3 * len(PEOPLE)
    return service


def test_search_ranks_the_probed_persons_photos_first(indexed: FaceSearchService) -> None:
    person = PEOPLE[0]
    result = search(indexed, lfw_photos(person)[0].read_bytes(), top_k=3, face="largest")
    assert result.notice == LEAD_NOTICE
    candidates = result.faces[0].candidates
    assert [Path(c.location).parent.name for c in candidates] == [person] * 3
    # Close enough that few strangers of even a far larger gallery would be as close.
    assert all(c.distance < indexed.cut_off("search", faces=10_000).distance for c in candidates)
    assert candidates[0].false_match_probability < 1e-3
    assert [c.rank for c in candidates] == [1, 2, 3]
    assert all(c.source == "lfw" and c.jurisdiction == "US" and c.collected_at for c in candidates)
    assert all(Path(c.crop_path).is_file() for c in candidates)


def test_every_search_is_audited_with_the_probe_hash_not_the_probe(indexed: FaceSearchService) -> None:
    photo = lfw_photos(PEOPLE[1])[0].read_bytes()
    result = search(indexed, photo, top_k=2)
    record = indexed.trail.records(AuditFilter(action="search"))[-1]
    assert record["actor"] == OPERATOR.name
    assert record["detail"]["probe_sha256"] == result.probe_sha256
    assert record["detail"]["results"] == [[[c.face_id, c.distance] for c in f.candidates]
                                           for f in result.faces]
    assert record["case_number"] == "T-1" and record["purpose"] == "criminal investigation"


def test_reingesting_the_same_images_is_a_no_op(indexed: FaceSearchService) -> None:
    before = indexed.store.counts()
    summary = indexed.ingest(OPERATOR, gallery(), "lfw")
    assert summary.images_indexed == 0
    assert summary.already_indexed == 3 * len(PEOPLE)
    assert indexed.store.counts() == before


def test_ingest_refuses_an_unregistered_source(service: FaceSearchService, lfw: Path) -> None:
    with pytest.raises(PolicyRefused, match="not registered"):
        service.ingest(OPERATOR, gallery()[:1], "nobody")
    assert service.store.counts()["images"] == 0
    assert service.trail.records(AuditFilter(action="ingest.refused"))


def test_ingest_refuses_a_source_from_an_excluded_jurisdiction(service: FaceSearchService) -> None:
    service.add_source(OPERATOR, "fr-news", "public_task", "fr")
    service.settings.excluded_jurisdictions = ["FR"]
    with pytest.raises(PolicyRefused, match="excluded"):
        service.ingest(OPERATOR, gallery()[:1], "fr-news")
    assert service.store.counts()["images"] == 0


def test_bad_files_are_skipped_with_a_reason_and_leave_no_record(
        service: FaceSearchService, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a photo")
    good = lfw_photos(PEOPLE[0])[1]
    (folder / "cut.jpg").write_bytes(good.read_bytes()[:2000])
    shutil.copy(good, folder / "good.jpg")
    service.add_source(OPERATOR, "lfw", "legitimate_interests", "US")
    summary = service.ingest(OPERATOR, [folder], "lfw")
    assert summary.images_indexed == 1
    assert sum(summary.skipped.values()) == 2
    assert {Path(loc).name for loc, _ in summary.errors} == {"notes.txt", "cut.jpg"}
    assert all("\n" not in reason for _, reason in summary.errors)
    assert service.store.counts()["images"] == 1


def test_deleting_an_image_removes_its_vectors_crops_and_rows(indexed: FaceSearchService) -> None:
    person = PEOPLE[2]
    photo = lfw_photos(person)[0].read_bytes()
    first = search(indexed, photo, top_k=1, face="largest").faces[0].candidates[0]
    vectors = len(indexed.index)
    indexed.delete(OPERATOR, image=first.location)
    after = search(indexed, photo, top_k=10, face="largest").faces[0].candidates
    assert first.face_id not in [c.face_id for c in after]
    assert first.location not in [c.location for c in after]
    assert not Path(first.crop_path).exists()
    assert len(indexed.index) < vectors
    reloaded = FaceSearchService(indexed.settings)
    assert first.face_id not in set(reloaded.index.all_vectors()[0].tolist())


def test_deleting_a_source_or_a_face(indexed: FaceSearchService) -> None:
    result = search(indexed, lfw_photos(PEOPLE[3])[0].read_bytes(), top_k=1)
    face_id = result.faces[0].candidates[0].face_id
    assert indexed.delete(OPERATOR, face_id=face_id).faces == 1
    with pytest.raises(NotFound):
        indexed.delete(OPERATOR, face_id=face_id)
    report = indexed.delete(OPERATOR, source="lfw")
    assert report.images == 3 * len(PEOPLE) - 1  # the face's image went with its only face
    assert indexed.store.counts() == {"sources": 0, "images": 0, "faces": 0, "suppressions": 0}
    assert len(indexed.index) == 0
    assert indexed.crops.files() == []


def test_purging_a_jurisdiction_leaves_no_face_crop_or_vector_of_it(
        indexed: FaceSearchService) -> None:
    indexed.add_source(OPERATOR, "fr-press", "public_task", "FR")
    extra = [p for name in PEOPLE[:2] for p in lfw_photos(name)[4:6]]
    indexed.ingest(OPERATOR, extra, "fr-press")
    faces_before = indexed.store.counts()["faces"]
    report = indexed.purge_jurisdiction(OPERATOR, "fr")
    assert report.images == len(extra)
    assert indexed.store.counts()["faces"] == faces_before - report.faces
    hashes = {c.split("/")[-1].split("_")[0] for c in map(str, indexed.crops.files())}
    for name in PEOPLE[:2]:
        result = search(indexed, lfw_photos(name)[0].read_bytes(), top_k=20)
        assert all(c.jurisdiction == "US" for f in result.faces for c in f.candidates)
    import hashlib
    assert not {hashlib.sha256(p.read_bytes()).hexdigest() for p in extra} & hashes
    assert len(indexed.index) == indexed.store.counts()["faces"]


def test_a_suppressed_person_is_removed_and_never_indexed_or_returned_again(
        indexed: FaceSearchService) -> None:
    person = PEOPLE[4]
    report = indexed.suppress(OPERATOR, lfw_photos(person)[0].read_bytes(), "erasure request 1")
    assert report.faces >= 3
    later = indexed.ingest(OPERATOR, lfw_photos(person)[4:6], "lfw")
    assert later.faces_withheld >= 2 and later.faces_indexed == 0
    for photo in lfw_photos(person)[:6]:
        result = search(indexed, photo.read_bytes(), top_k=20)
        assert person not in names_in(result)
    assert not [f for f in indexed.crops.files() if person in f.name]
    others = search(indexed, lfw_photos(PEOPLE[0])[0].read_bytes(), top_k=3, face="largest")
    assert names_in(others) == [PEOPLE[0]] * 3


def test_an_erasure_interrupted_after_its_commit_is_finished_on_the_next_start(
        indexed: FaceSearchService) -> None:
    photo = lfw_photos(PEOPLE[1])[0].read_bytes()
    target = search(indexed, photo, top_k=1, face="largest").faces[0].candidates[0]
    # The metadata transaction commits, then the process dies before index and crops are cleaned.
    with indexed.store.transaction() as conn:
        indexed.store.delete_faces([target.face_id], conn)
    restarted = FaceSearchService(indexed.settings)
    found = search(restarted, photo, top_k=10).faces[0].candidates
    assert target.face_id not in [c.face_id for c in found]
    restarted.reindex(OPERATOR)  # any write operation finishes pending erasures first
    assert not Path(target.crop_path).exists()
    assert restarted.store.pending_erasures() == []


def test_reindex_rebuilds_the_same_results_from_stored_descriptors(indexed: FaceSearchService) -> None:
    photo = lfw_photos(PEOPLE[2])[0].read_bytes()
    before = search(indexed, photo, top_k=5).faces[0].candidates
    (indexed.settings.index_dir / "vectors.faiss").unlink()  # lose the index entirely
    rebuilt = FaceSearchService(indexed.settings)
    assert rebuilt.reindex(OPERATOR) == indexed.store.counts()["faces"]
    after = search(rebuilt, photo, top_k=5).faces[0].candidates
    assert [(c.face_id, c.distance) for c in after] == [(c.face_id, c.distance) for c in before]
    assert (indexed.settings.index_dir / "vectors.faiss").is_file()
