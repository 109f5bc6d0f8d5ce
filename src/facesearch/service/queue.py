"""Distributed ingest: a queued ingest becomes one job per batch of files in a PostgreSQL task
queue (procrastinate), and `facesearch worker` processes, on as many machines as there are,
run each job through Engine.ingest, the code path of a local ingest. Policy is checked again
when a job runs (the actor's role, the source, suppressions, sha256 duplicates), and each job
is audited as an ingest naming its queue job and worker."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from facesearch.errors import FacesearchError, InvalidRequest, NotFound
from facesearch.ingest import discover
from facesearch.service.engine import Engine, IngestSummary
from facesearch.types import Actor

if TYPE_CHECKING:  # procrastinate takes half a second to import: only queue commands need it
    import procrastinate

QUEUE = "facesearch-ingest"
TASK = "facesearch.ingest_batch"
SCHEMA_LOCK = 7_450_241_913  # advisory-lock key: workers starting together apply the schema once


@dataclass
class QueuedIngest:
    source: str
    images: int  # files found under the paths given
    jobs: list[int]  # procrastinate job ids, one per batch


@dataclass
class WorkerReport:
    worker: str  # host:pid, as the audit records of its jobs name it
    jobs_done: int = 0
    jobs_failed: int = 0


# (job id, its ingest summary or None if it failed, the failure's one-line reason or None)
JobListener = Callable[[int, IngestSummary | None, str | None], None]


class Queueing(Engine):
    _queue_app: procrastinate.App | None = None
    _job_listener: JobListener | None = None

    def queue_ingest(self, actor: Actor, paths: list[Path], source_name: str,
                     batch_size: int = 64) -> QueuedIngest:
        """Queue an ingest of every file under paths, one job per batch_size files, for the
        workers to run. Only the file names are read here: the workers read the files, so each
        must see them at the same path (a shared file system). Queuing again what was already
        indexed is harmless: the workers skip images by sha256."""
        self.authorise(actor, "ingest.server_path", "ingest.queue")
        if not 1 <= batch_size <= 10_000:
            raise InvalidRequest("a batch holds between 1 and 10000 files")
        source = self._collecting_source(actor, source_name, "ingest.queue")
        files = [str(path.resolve()) for path in discover(paths)]
        if not files:
            raise NotFound("no files under the paths given")
        self._ensure_queue_schema()
        who = asdict(actor)
        app = self._queue()
        with app.open():
            jobs = app.tasks[TASK].batch_defer(*(
                {"actor": who, "source": source.name, "paths": files[start:start + batch_size]}
                for start in range(0, len(files), batch_size)))
        self._audit_alone(actor, "ingest.queue", {
            "source": source.name, "images": len(files), "jobs": len(jobs),
            "first_job": jobs[0], "last_job": jobs[-1]})
        return QueuedIngest(source.name, len(files), jobs)

    def run_ingest_worker(self, actor: Actor, wait: bool = True,
                          listener: JobListener | None = None) -> WorkerReport:
        """Run queued ingest jobs, one at a time, until stopped (SIGINT or SIGTERM let the
        current job finish) or, with wait=False, until the queue is empty. Jobs left running
        by a worker that stopped sending heartbeats (it died) are queued again first: a job
        may run twice, which the sha256 check makes harmless. Start one worker per core."""
        self.authorise(actor, "ingest", "ingest.worker")
        self._ensure_queue_schema()
        report = WorkerReport(f"{socket.gethostname()}:{os.getpid()}")
        app = self._queue()

        def record(job_id: int, summary: IngestSummary | None, error: str | None) -> None:
            report.jobs_done += summary is not None
            report.jobs_failed += summary is None
            if listener:
                listener(job_id, summary, error)

        async def work() -> None:
            async with app.open_async():
                for job in await app.job_manager.get_stalled_jobs(queue=QUEUE):
                    await app.job_manager.retry_job(job)
                await app.run_worker_async(queues=[QUEUE], wait=wait, concurrency=1,
                                           name=report.worker)

        self._job_listener = record
        try:
            asyncio.run(work())
        finally:
            self._job_listener = None
            self._audit_alone(actor, "ingest.worker", {
                "worker": report.worker, "jobs_done": report.jobs_done,
                "jobs_failed": report.jobs_failed})
        return report

    def _run_queued_job(self, context: procrastinate.JobContext, actor: dict, source: str,
                        paths: list[str]) -> None:
        """One job: its batch ingested on behalf of whoever queued it, as they stand now."""
        job_id = context.job.id
        assert job_id is not None
        try:
            who = self._actor_now(Actor(**actor))
            self.authorise(who, "ingest.server_path", "ingest")
            summary = self.ingest(who, [Path(p) for p in paths], source,
                                  queue_job={"queue_job": job_id, "worker": context.worker_name})
        except FacesearchError as exc:
            if self._job_listener:
                self._job_listener(job_id, None, exc.message)
            raise  # procrastinate records the job as failed
        if self._job_listener:
            self._job_listener(job_id, summary, None)

    def _actor_now(self, queued: Actor) -> Actor:
        """The actor who queued a job with their role of now: a user disabled, or given
        another role, since then ingests nothing they may no longer ingest. The local
        operator (no user id) is whoever runs commands on the data directory."""
        if queued.user_id is None:
            return queued
        user = self.accounts.user(user_id=queued.user_id)
        if user is None or user.status != "active":
            self._refuse(queued, "ingest", "the user who queued this ingest is no longer active")
        return replace(queued, name=user.username, role=user.role,
                       organisation_id=user.organisation_id, organisation=user.organisation)

    def _queue(self) -> procrastinate.App:
        if self._queue_app is None:
            import procrastinate

            app = procrastinate.App(
                connector=procrastinate.PsycopgConnector(conninfo=self._queue_conninfo()))
            app.task(name=TASK, queue=QUEUE, pass_context=True)(self._run_queued_job)
            self._queue_app = app
        return self._queue_app

    def _queue_conninfo(self) -> str:
        """FACESEARCH_QUEUE_URL, or the metadata store's URL if it is PostgreSQL, as psycopg
        connects: postgresql://, without SQLAlchemy's +driver."""
        url = self.settings.queue_url or self.settings.metadata_url
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            raise InvalidRequest("distributed ingest needs a PostgreSQL queue: set "
                                 "FACESEARCH_QUEUE_URL (or a PostgreSQL FACESEARCH_DATABASE_URL)")
        return parsed.set(drivername="postgresql").render_as_string(hide_password=False)

    def _ensure_queue_schema(self) -> None:
        """Create procrastinate's tables and functions if the queue database lacks them."""
        import psycopg
        from procrastinate.schema import SchemaManager

        with psycopg.connect(self._queue_conninfo()) as conn:  # one transaction, committed
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is None:
                conn.execute(SchemaManager.get_schema())
