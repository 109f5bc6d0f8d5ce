"""Distributed ingest: two `facesearch worker` processes, started separately, share one
PostgreSQL queue, one metadata database and one data directory, and end with the state a
single-process `facesearch ingest` of the same files reaches."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from facesearch.config import Settings
from facesearch.errors import InvalidRequest
from facesearch.service import AuditFilter, FaceSearchService
from tests.cli.test_cli import FACESEARCH
from tests.conftest import LFW, jpeg_bytes, lfw_photos, noise_image

POSTGRES = os.environ.get("FACESEARCH_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(not POSTGRES, reason="needs FACESEARCH_TEST_POSTGRES_URL "
                                    "(scripts/test.sh starts PostgreSQL)")

# Six people with at least eight photos, chosen in code; the last is suppressed before ingest.
PEOPLE = [p.name for p in sorted((LFW / "images").iterdir())
          if len(list(p.glob("*.jpg"))) >= 8][:6]
SUPPRESSED = PEOPLE[-1]
BATCH = 4  # files per queued job: 12 jobs for 45 files, enough for both workers to get some


@pytest.fixture
def new_database() -> Iterator:
    """A factory of fresh, empty PostgreSQL databases (dropped afterwards), so that tests and
    the processes of one test never share state they did not mean to."""
    assert POSTGRES
    admin = make_url(POSTGRES).set(drivername="postgresql").render_as_string(hide_password=False)
    made: list[str] = []

    def create() -> str:
        name = f"fs_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)

    yield create
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def photos(tmp_path: Path, lfw: Path) -> Path:
    """45 files: 42 LFW photos of six people (one suppressed), a photo without a face, a file
    that is no image, and a copy of the first photo that a later job finds."""
    folder = tmp_path / "photos"
    for person in PEOPLE:
        (folder / person).mkdir(parents=True)
        for photo in lfw_photos(person)[1:8]:
            shutil.copy(photo, folder / person / photo.name)
    (folder / "0-noise.jpg").write_bytes(jpeg_bytes(noise_image(160, 120, seed=3)))
    (folder / "0-notes.jpg").write_text("not an image")
    (folder / "zz-copies").mkdir()
    first = min((folder / PEOPLE[0]).iterdir())
    shutil.copy(first, folder / "zz-copies" / "copy.jpg")
    return folder


def facesearch(home: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([FACESEARCH, "--data", str(home), *args], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err
    return out


def prepare(home: Path, database: str) -> FaceSearchService:
    """A service on the data directory and database, with the source registered and the
    suppressed person suppressed, as an operator would before ingesting."""
    service = FaceSearchService(Settings(home=home, database_url=database, workers=1))
    operator = service.local_operator("tester")
    service.add_source(operator, "lfw", "legitimate_interests", "US")
    service.suppress(operator, lfw_photos(SUPPRESSED)[0].read_bytes(), "erasure request")
    return service


def stored(service: FaceSearchService) -> dict[str, dict]:
    """Every stored image by sha256: its location and other fields, and its faces in order."""
    with service.store.engine.connect() as conn:
        images = conn.execute(text(
            "SELECT i.id, i.sha256, i.location, i.width, i.height, i.format, i.withheld_faces, "
            "i.jurisdiction, s.name AS source FROM images i JOIN sources s ON s.id = i.source_id"
        )).mappings().all()
        faces = conn.execute(text(
            "SELECT image_id, face_index, box_left, box_top, box_right, box_bottom, crop_path, "
            "embedding FROM faces ORDER BY image_id, face_index")).mappings().all()
    state = {}
    for image in images:
        own = [f for f in faces if f["image_id"] == image["id"]]
        state[image["sha256"]] = {
            **{k: v for k, v in image.items() if k not in ("id", "sha256")},
            "boxes": [(f["box_left"], f["box_top"], f["box_right"], f["box_bottom"]) for f in own],
            "crops": [f["crop_path"] for f in own],
            "vectors": np.stack([np.frombuffer(f["embedding"], "<f4") for f in own])
            if own else np.zeros((0, 128), np.float32)}
    return state


def probe(service: FaceSearchService) -> list[tuple[str, float]]:
    """(image sha256, distance) of the candidates for a photo of PEOPLE[1] not ingested."""
    operator = service.local_operator("tester")
    case = service.open_case(operator, "D-1", "missing person", offence_type="robbery")
    result = service.search(operator, case.id, lfw_photos(PEOPLE[1])[0].read_bytes(),
                            top_k=10, face="largest")
    return [(c.image_sha256, c.distance) for c in result.faces[0].candidates]


def ingest_audits(service: FaceSearchService) -> list[dict]:
    return [r["detail"] for r in service.trail.records() if r["action"] == "ingest"]


@needs_postgres
def test_two_workers_on_one_queue_end_with_the_state_of_a_single_process_ingest(
        tmp_path: Path, photos: Path, new_database) -> None:
    queue_db, spread_db, single_db = new_database(), new_database(), new_database()
    spread_home, single_home = tmp_path / "spread", tmp_path / "single"
    spread, single = prepare(spread_home, spread_db), prepare(single_home, single_db)
    spread_env = {"FACESEARCH_DATABASE_URL": spread_db, "FACESEARCH_QUEUE_URL": queue_db}

    out = finish(facesearch(spread_home, spread_env, "ingest", str(photos), "--source", "lfw",
                            "--queue", "--batch", str(BATCH)))
    assert "queued 45 files for source lfw in 12 jobs" in out
    workers = [facesearch(spread_home, spread_env, "worker", "--no-wait") for _ in range(2)]
    worker_outs = [finish(w) for w in workers]
    finish(facesearch(single_home, {"FACESEARCH_DATABASE_URL": single_db}, "ingest",
                      str(photos), "--source", "lfw", "--workers", "1"))

    # Every job ran to success, and each worker ran some of them.
    queue = create_engine(queue_db)
    with queue.connect() as conn:
        statuses = conn.execute(text("SELECT status::text, count(*) FROM procrastinate_jobs "
                                     "GROUP BY status")).all()
    queue.dispose()
    assert dict(statuses) == {"succeeded": 12}
    audits = ingest_audits(spread)
    assert len(audits) == 12 and len({a["worker"] for a in audits}) == 2
    assert all(" 0 failed" in o and "job " in o for o in worker_outs)

    # The same images, at the same locations, except the copy: whichever of the two files
    # a worker reached first is the one recorded.
    got, want = stored(spread), stored(single)
    assert set(got) == set(want)
    locations = {image["location"] for image in want.values()}
    assert {str(p) for person in PEOPLE[:-1] for p in (photos / person).iterdir()} <= locations
    assert str(photos / "0-notes.jpg") not in locations and len(want) >= 36
    first = min((photos / PEOPLE[0]).iterdir())
    copied = hashlib.sha256(first.read_bytes()).hexdigest()
    assert got[copied]["location"] in {str(first), str(photos / "zz-copies" / "copy.jpg")}
    for sha, image in want.items():
        mine = got[sha]
        fields = [k for k in image if k not in ("vectors", "location")]
        assert {k: mine[k] for k in fields} == {k: image[k] for k in fields}, sha
        assert sha == copied or mine["location"] == image["location"]
        np.testing.assert_allclose(mine["vectors"], image["vectors"], atol=1e-6)
        assert all((spread_home / "crops" / c).is_file() for c in mine["crops"])
    assert sum(len(image["boxes"]) == 0 for image in got.values()) == 1  # the noise image
    # The suppressed person is withheld: none of their faces is stored, some images not at all.
    template = spread.store.suppression_templates()[0]
    vectors = np.concatenate([image["vectors"] for image in got.values()])
    # The strict cut-off is tightest at the final gallery size; each image met a looser one.
    assert np.linalg.norm(vectors - template, axis=1).min() >= spread.cut_off("suppress").distance
    assert sum(SUPPRESSED in location for location in locations) < 7
    withheld = sum(a["faces_withheld"] for a in audits)
    assert withheld == sum(a["faces_withheld"] for a in ingest_audits(single)) >= 5

    # The same search results, from the workers' writes alone (they leave the index alone).
    got_hits, want_hits = probe(spread), probe(single)
    assert len(want_hits) >= 5 and got_hits == want_hits
    spread.close()
    single.close()


@needs_postgres
def test_a_queued_job_is_checked_against_policy_when_it_runs(tmp_path: Path, new_database,
                                                             lfw: Path) -> None:
    database = new_database()
    home = tmp_path / "data"
    queuing = FaceSearchService(Settings(home=home, database_url=database))
    operator = queuing.local_operator("tester")
    queuing.add_source(operator, "lfw", "legitimate_interests", "US")
    queued = queuing.queue_ingest(operator, lfw_photos(PEOPLE[0])[:3], "lfw", batch_size=2)
    assert queued.images == 3 and len(queued.jobs) == 2
    # The worker's deployment has excluded US images since: both jobs are refused, not run.
    worker = FaceSearchService(Settings(home=home, database_url=database,
                                        excluded_jurisdictions=["US"]))
    failures: list[str] = []
    report = worker.run_ingest_worker(operator, wait=False,
                                      listener=lambda job, summary, error: failures.append(error))
    assert (report.jobs_done, report.jobs_failed) == (0, 2)
    assert len(failures) == 2 and all("US" in f for f in failures)
    assert worker.store.counts()["images"] == 0
    assert len(worker.trail.records(AuditFilter(action="ingest.refused"))) == 2
    queue = create_engine(database)
    with queue.connect() as conn:
        assert conn.execute(text("SELECT array_agg(DISTINCT status::text) FROM "
                                 "procrastinate_jobs")).scalar() == ["failed"]
    queue.dispose()
    queuing.close()
    worker.close()


def test_distributed_ingest_needs_a_postgresql_queue(service: FaceSearchService) -> None:
    operator = service.local_operator("tester")
    with pytest.raises(InvalidRequest, match="FACESEARCH_QUEUE_URL"):
        service.run_ingest_worker(operator, wait=False)
    service.add_source(operator, "lfw", "legitimate_interests", "US")
    with pytest.raises(InvalidRequest, match="FACESEARCH_QUEUE_URL"):
        service.queue_ingest(operator, lfw_photos(PEOPLE[0])[:1], "lfw")
