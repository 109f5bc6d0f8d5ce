"""Erasure holds across every copy of the index, and `verify` finds and repairs what breaks
the data directory's promises. Several service objects on one data directory stand for
several processes here; tests/cli/test_erasure_across_processes.py uses real ones."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from facesearch.config import Settings
from facesearch.index.faiss_index import FaissIndex
from facesearch.service import FaceSearchService
from facesearch.store.metadata import NewImage, to_blob
from facesearch.types import Box, Face, FaceQuality
from tests.conftest import OPERATOR, lfw_photos

PEOPLE = ["Al_Sharpton", "Alastair_Campbell", "Albert_Costa"]


def descriptor_bytes(service: FaceSearchService, face_id: int) -> bytes:
    return to_blob(service.store.vectors_of(np.array([face_id]))[1][0])


def files_holding(home: Path, needle: bytes) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture
def home(tmp_path: Path, lfw: Path) -> Path:
    settings = Settings(home=tmp_path / "data", workers=1)
    service = FaceSearchService(settings)
    service.add_source(OPERATOR, "lfw", "legitimate_interests", "US")
    service.ingest(OPERATOR, [p for n in PEOPLE for p in lfw_photos(n)[1:3]], "lfw")
    service.close()
    return settings.home


def open_service(home: Path, **options: object) -> FaceSearchService:
    return FaceSearchService(Settings(home=home, workers=1, **options))


def add_synthetic(service: FaceSearchService, source: str, number: int, vectors: np.ndarray) -> None:
    """One image holding a face for each vector, stored as ingest stores faces."""
    found = service.store.source(source)
    service.crops.write("none.jpg", b"placeholder")  # one crop file that they all name
    faces = [Face(Box(0, 0, 10, 10), 1.0, [(0, 0)] * 5, FaceQuality(30, 0.5, 1.0), v, b"") for v in vectors]
    with service.store.transaction() as conn:
        service.store.add_image(conn, NewImage(
            sha256=f"{number:064d}", location=f"{source}-{number}", page_url=None,
            source_id=found.id, jurisdiction=found.jurisdiction, collected_at=service.now(),
            width=10, height=10, format="JPEG"), faces, ["none.jpg"] * len(faces), withheld=0,
            embedder=service.live_embedder)


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def test_a_stale_copy_of_the_index_never_writes_an_erased_vector_back(home: Path) -> None:
    first, second = open_service(home), open_service(home)
    try:
        ids = first.store.face_ids()
        x, y = int(ids[0]), int(ids[1])
        x_bytes = descriptor_bytes(first, x)
        assert len(first.index) == len(second.index) == len(ids)  # both hold every vector
        first.delete(OPERATOR, face_id=x)
        assert files_holding(home, x_bytes) == []
        # The second copy learns of the erasure before it answers a search...
        assert x not in second.index.held_ids()
        second.delete(OPERATOR, face_id=y)  # ...and before it saves
    finally:
        first.close()
        second.close()
    assert files_holding(home, x_bytes) == []
    on_disk = FaissIndex.load(home / "index", 128, 20_000, 64).held_ids()
    assert x not in on_disk and y not in on_disk and len(on_disk) == len(ids) - 2
    fresh = open_service(home)
    try:
        report = fresh.verify(OPERATOR)
        assert report.clean, report.problems
        assert report.erased_vectors_on_disk == 0
    finally:
        fresh.close()


def test_a_process_holding_an_index_rebuilt_elsewhere_reloads_it_instead_of_saving(home: Path) -> None:
    stale, rebuilder = open_service(home), open_service(home, compressed_index_min=1, pq_lists=8)
    try:
        # Enough faces to train a compressed index's codebooks on (256 a codebook).
        add_synthetic(stale, "lfw", 1, unit(np.random.default_rng(0).normal(size=(400, 128))))
        assert stale.index.kind == "flat"
        rebuilder.reindex(OPERATOR)  # the files on disk are now the compressed index
        assert not (home / "index" / "vectors.faiss").exists()
        victim = int(stale.store.face_ids()[0])
        stale.delete(OPERATOR, face_id=victim)
        assert not (home / "index" / "vectors.faiss").exists()  # no stale kind written back
        assert stale.index.kind == "ivfpq" and victim not in stale.index.held_ids()
        assert stale.verify(OPERATOR).clean
    finally:
        stale.close()
        rebuilder.close()


def test_verify_finds_an_erased_vector_on_disk_and_repair_removes_it(home: Path) -> None:
    service = open_service(home)
    try:
        old_file = (home / "index" / "vectors.faiss").read_bytes()
        victim = int(service.store.face_ids()[0])
        victim_bytes = descriptor_bytes(service, victim)
        service.delete(OPERATOR, face_id=victim)
        assert service.verify(OPERATOR).clean
        # A copy of the file from before the erasure comes back (a restored backup, a bug).
        (home / "index" / "vectors.faiss").write_bytes(old_file)
        (home / "crops" / "stray.jpg").write_bytes(b"not a face of ours")
        os.chmod(home / "crops" / "stray.jpg", 0o644)
        report = service.verify(OPERATOR)
        assert report.erased_vectors_on_disk == 1
        assert any("erased" in p and str(victim) in p for p in report.problems)
        assert any("belong to no face" in p for p in report.problems)
        assert any("readable by others" in p for p in report.problems)  # written with 0644
        repaired = service.verify(OPERATOR, repair=True)
        assert repaired.clean, repaired.problems
        assert files_holding(home, victim_bytes) == []
        assert not (home / "crops" / "stray.jpg").exists()
        actions = [r["action"] for r in service.trail.records()]
        assert actions[-3:] == ["verify.repair", "audit.verify", "verify"]
        record = service.trail.records()[-3]
        assert record["detail"]["index_rebuilt_faces"] == len(service.store.face_ids())
        assert service.trail.records()[-1]["detail"]["problems"] == 0
    finally:
        service.close()


def test_verify_reports_an_unfinished_erasure_journal_and_a_missing_crop(home: Path) -> None:
    service = open_service(home)
    try:
        ids = service.store.face_ids()
        with service.store.transaction() as conn:  # a deletion whose process died after commit
            service.store.delete_faces([int(ids[0])], conn)
        crop = service.crops.path(sorted(service.store.crop_paths())[0])
        crop.unlink()
        report = service.verify(OPERATOR)
        assert any("journal" in p for p in report.problems)
        assert any("no crop file" in p for p in report.problems)
        repaired = service.verify(OPERATOR, repair=True)
        assert repaired.problems == [p for p in report.problems if "no crop file" in p]
        assert service.store.pending_erasures() == []
    finally:
        service.close()


def test_the_data_directory_is_owner_only_whatever_the_umask(tmp_path: Path, lfw: Path) -> None:
    previous = os.umask(0o022)
    try:
        service = open_service(tmp_path / "data")
        service.add_source(OPERATOR, "lfw", "legitimate_interests", "US")
        service.ingest(OPERATOR, lfw_photos(PEOPLE[0])[1:2], "lfw")
        service.close()
    finally:
        os.umask(previous)
    for path in [tmp_path / "data", *(tmp_path / "data").rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_a_restricted_organisation_finds_its_matches_behind_many_closer_faces(tmp_path: Path) -> None:
    """400 faces of one jurisdiction lie closer to the probe than the 5 of another: a fixed
    over-fetch would return none of the 5 to an organisation that sees only theirs."""
    service = open_service(tmp_path / "data")
    try:
        service.add_source(OPERATOR, "us", "legitimate_interests", "US")
        service.add_source(OPERATOR, "fr", "legitimate_interests", "FR")
        rng = np.random.default_rng(1)
        query = unit(rng.normal(size=128))
        add_synthetic(service, "us", 0, unit(query + 0.1 * rng.normal(size=(400, 128)) / np.sqrt(128)))
        add_synthetic(service, "fr", 1, unit(query + 0.3 * rng.normal(size=(5, 128)) / np.sqrt(128)))
        probe = Face(Box(0, 0, 10, 10), 1.0, [(0, 0)] * 5, FaceQuality(30, 0.5, 1.0), query, b"")
        found = service._rank([probe], 10, frozenset({"FR"}))[0].candidates
        assert len(found) == 5 and {c.jurisdiction for c in found} == {"FR"}
        assert len(service._rank([probe], 10)[0].candidates) == 10
    finally:
        service.close()


def test_verify_is_for_the_operator_only(home: Path) -> None:
    from facesearch.errors import Forbidden
    from facesearch.types import Actor

    service = open_service(home)
    try:
        with pytest.raises(Forbidden):
            service.verify(Actor(name="ada", role="admin", organisation="Agency A"))
        assert service.trail.records()[-1]["action"] == "verify.refused"
    finally:
        service.close()
        shutil.rmtree(home, ignore_errors=True)


def test_a_crawl_batch_checks_its_sources_policy_under_the_writer_lock(tmp_path: Path, lfw: Path) -> None:
    """A jurisdiction excluded (or a source deleted) while a crawl runs: its next batch is
    refused and audited, not indexed."""
    from facesearch.service import CrawlProgress

    home = tmp_path / "data"
    before = open_service(home)
    before.add_source(OPERATOR, "press", "legitimate_interests", "FR")
    before.close()
    service = open_service(home, excluded_jurisdictions=["FR"])
    try:
        photo = lfw_photos(PEOPLE[0])[1].read_bytes()
        results = service._store_images(OPERATOR, "crawl.batch", {"job_id": 1}, "press",
                                        [(7, "https://photos.example/a.jpg", photo, None, {})],
                                        CrawlProgress())
        assert results == {7: ("refused", "source_refused", 0)}
        assert service.store.counts()["images"] == 0
        assert service.trail.records()[-1]["action"] == "crawl.batch.refused"
    finally:
        service.close()
