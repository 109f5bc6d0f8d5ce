"""The server's ingest jobs: a server starting beside another interrupts only the jobs of a
server that has gone silent, and a server stopping ends its jobs after the current batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from facesearch.config import Settings
from facesearch.service import FaceSearchService, IngestSummary
from tests.conftest import OPERATOR, noise_image
from tests.service.test_accounts_and_cases import Clock


def images(folder: Path, count: int) -> Path:
    """count distinct generated images (no faces): each batch of eight is quick to ingest."""
    folder.mkdir(parents=True)
    for n in range(count):
        noise_image(seed=n).save(folder / f"{n:03d}.png")
    return folder


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Gate:
    """An ingest listener that holds a job at its first batch until opened."""

    def __init__(self) -> None:
        self.reached, self.opened = threading.Event(), threading.Event()

    def __call__(self, _summary: IngestSummary) -> None:
        self.reached.set()
        assert self.opened.wait(60)


def service(home: Path, clock: Clock) -> FaceSearchService:
    return FaceSearchService(Settings(home=home, workers=1), clock)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    first = service(tmp_path / "data", Clock())
    first.add_source(OPERATOR, "lfw", "public_task", "FR")
    first.close()
    return tmp_path / "data"


def test_a_server_starting_beside_a_running_one_leaves_its_jobs_alone(home: Path,
                                                                      tmp_path: Path) -> None:
    clock_a, clock_b = Clock(), Clock()
    a, b = service(home, clock_a), service(home, clock_b)
    a.heartbeat_seconds = 0.05
    gate = Gate()
    a.ingest_listeners.append(gate)
    try:
        job = a.start_ingest_job(OPERATOR, "lfw", path=str(images(tmp_path / "in", 20)))
        assert gate.reached.wait(60)
        b.recover_jobs()  # a second server process starts: the job is alive
        assert b.ingest_jobs(OPERATOR, job.id)[0].status == "running"
        # Time passes; the first server's heartbeat keeps its job alive.
        clock_a.advance(minutes=10)
        clock_b.advance(minutes=10)
        wait_until(lambda: b.cases.jobs(job.id)[0].status == "running" and heartbeat(b, job.id)
                   == clock_a.now.isoformat(timespec="seconds"))
        b.recover_jobs()
        assert b.ingest_jobs(OPERATOR, job.id)[0].status == "running"
        # A server heard of no more for longer than stale_seconds has stopped: its job is
        # interrupted (what it committed is kept).
        clock_b.advance(seconds=a.stale_seconds + 30)
        b.recover_jobs()
        assert b.ingest_jobs(OPERATOR, job.id)[0].status == "interrupted"
    finally:
        gate.opened.set()
        a.close()
        b.close()


def test_a_heartbeat_that_fails_once_goes_on_beating(home: Path, tmp_path: Path) -> None:
    """A busy or briefly unreachable database must not end the heartbeat: a silent job would
    be called interrupted by the next process that starts, while it goes on."""
    from sqlalchemy.exc import OperationalError

    clock = Clock()
    svc = service(home, clock)
    svc.heartbeat_seconds = 0.05
    beat, failed = svc.cases.beat_jobs, []

    def flaky(owner: str, now: str) -> None:
        if not failed:
            failed.append(now)
            raise OperationalError("UPDATE ingest_jobs", {}, Exception("database is locked"))
        beat(owner, now)

    svc.cases.beat_jobs = flaky
    gate = Gate()
    svc.ingest_listeners.append(gate)
    try:
        job = svc.start_ingest_job(OPERATOR, "lfw", path=str(images(tmp_path / "in", 20)))
        assert gate.reached.wait(60)
        wait_until(lambda: bool(failed))
        clock.advance(minutes=5)
        wait_until(lambda: heartbeat(svc, job.id) == clock.now.isoformat(timespec="seconds"))
    finally:
        gate.opened.set()
        svc.close()


def heartbeat(svc: FaceSearchService, job_id: int) -> str | None:
    with svc.store.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT heartbeat_at FROM ingest_jobs WHERE id = ?",
                                    (job_id,)).scalar()


def test_jobs_left_by_a_server_from_before_heartbeats_are_interrupted(home: Path) -> None:
    svc = service(home, Clock())
    try:
        with svc.store.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO ingest_jobs (source, status, started_by, created_at, progress) "
                "VALUES ('lfw', 'running', 'x', '2026-01-01T00:00:00+00:00', '{}')")
        svc.recover_jobs()
        assert [j.status for j in svc.ingest_jobs(OPERATOR)] == ["interrupted"]
    finally:
        svc.close()


def test_stopping_the_server_ends_the_running_job_after_its_batch_and_starts_no_other(
        home: Path, tmp_path: Path) -> None:
    svc = service(home, Clock())
    gate = Gate()
    svc.ingest_listeners.append(gate)
    first = svc.start_ingest_job(OPERATOR, "lfw", path=str(images(tmp_path / "one", 40)))
    second = svc.start_ingest_job(OPERATOR, "lfw", path=str(images(tmp_path / "two", 8)))
    assert gate.reached.wait(60)
    stopping = threading.Thread(target=svc.wait_for_jobs)
    stopping.start()
    wait_until(lambda: svc._stop is not None and svc._stop.is_set())
    gate.opened.set()  # the batch in hand ends; nothing after it starts
    stopping.join(30)
    assert not stopping.is_alive()
    try:
        jobs = {j.id: j for j in svc.ingest_jobs(OPERATOR)}
        assert jobs[first.id].status == "interrupted"
        assert 0 < jobs[first.id].progress["images_seen"] < 40
        assert "run the same ingest again" in (jobs[first.id].error or "")
        assert jobs[second.id].status == "interrupted"
        assert jobs[second.id].progress == {}  # never started
    finally:
        svc.close()
    # What was committed is kept: the same ingest again indexes only the rest.
    again = service(home, Clock())
    try:
        summary = again.ingest(OPERATOR, [tmp_path / "one"], "lfw")
        assert summary.already_indexed == jobs[first.id].progress["images_seen"]
        assert summary.images_seen == 40
    finally:
        again.close()


def test_a_crawl_queued_behind_a_job_when_the_server_stops_stays_queued(home: Path,
                                                                      tmp_path: Path) -> None:
    svc = service(home, Clock())
    gate = Gate()
    svc.ingest_listeners.append(gate)
    svc.start_ingest_job(OPERATOR, "lfw", path=str(images(tmp_path / "in", 16)))
    crawl = svc.start_crawl(OPERATOR, ["http://127.0.0.1:9/"], ["http://127.0.0.1:9/"], "lfw",
                            "test")
    svc.run_crawl_in_background(OPERATOR, crawl.id)
    assert gate.reached.wait(60)
    stopping = threading.Thread(target=svc.wait_for_jobs)
    stopping.start()
    wait_until(lambda: svc._stop is not None and svc._stop.is_set())
    gate.opened.set()
    stopping.join(30)
    try:
        assert not stopping.is_alive()
        assert svc.crawls.job(crawl.id).status == "queued"  # `crawl run` picks it up
    finally:
        svc.close()
