"""Ingest as a background job for the server: staged uploads or a server-side path, one job
at a time, with progress recorded in the database so that any server process can report it."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import logging
import threading
from datetime import timedelta
from functools import cached_property
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from facesearch.errors import FacesearchError, InvalidRequest, NotFound
from facesearch.service.base import Stopping
from facesearch.service.engine import Engine, IngestSummary
from facesearch.store.cases import IngestJob
from facesearch.store.files import private_directory, write_private
from facesearch.types import Actor

log = logging.getLogger(__name__)

UPLOAD_PREFIX = "upload:"
UPLOADED = re.compile(rf"^{UPLOAD_PREFIX}[0-9]+/")
ORIGINAL_NAME_CHARS = 200  # of an upload's own file name, kept in its image's provenance


class Jobs(Engine):
    # A server process says every heartbeat_seconds that its jobs are alive; another process
    # takes a job for interrupted only when it has not been heard of for stale_seconds.
    heartbeat_seconds = 10.0
    stale_seconds = 60.0
    _beating_for: threading.Event | None = None

    @cached_property
    def job_owner(self) -> str:
        """This service, as the owner of the jobs it runs: host:pid and a random token (a
        pid is reused after a restart, a container's often)."""
        return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    def start_ingest_job(self, actor: Actor, source: str, *, path: str | None = None,
                         uploads: list[tuple[str, bytes]] | None = None) -> IngestJob:
        """Queue an ingest of uploaded images (their location is recorded as
        "upload:<job>/<file name>", the name made safe, and the name as uploaded in the
        image's provenance as "file_name") or of a path on the server; returns the job at once."""
        self.authorise(actor, "ingest.server_path" if path else "ingest", "ingest")
        if (path is None) == (uploads is None):
            raise InvalidRequest("give either uploaded images or a server path")
        if self.store.source(source) is None:
            self._refuse(actor, "ingest", f"source {source!r} is not registered")
        if path is not None and not Path(path).exists():
            raise NotFound("no such path on the server")
        with self.store.transaction() as conn:
            job_id = self.cases.add_job(conn, source, actor.name, self.now(), self.job_owner)
            self._audit(conn, actor, "ingest.job", {"job_id": job_id, "source": source,
                                                   "uploads": len(uploads or []),
                                                   "server_path": path is not None})
        originals: dict[str, str] = {}  # staged file name -> the name it was uploaded with
        paths = [Path(path)] if path else [self._stage(job_id, uploads or [], originals)]
        staged = None if path else paths[0]
        self.in_background(self._run_job, actor, job_id, source, paths, staged, originals)
        self._keep_beating()
        return self.cases.jobs(job_id)[0]

    def ingest_jobs(self, actor: Actor, job_id: int | None = None) -> list[IngestJob]:
        self.authorise(actor, "ingest", "ingest.job.read")
        self.recover_jobs()  # a job whose server died shows as interrupted, not running
        found = self.cases.jobs(job_id)
        if job_id is not None and not found:
            raise NotFound("no such job")
        return found

    def recover_jobs(self) -> None:
        """Mark jobs that a stopped server left queued or running as interrupted (what they
        committed is kept; the same ingest started again finishes them). Only jobs whose
        server has been silent for stale_seconds: others are still being run."""
        heard_before = self.clock() - timedelta(seconds=self.stale_seconds)
        self.cases.interrupt_stale_jobs(heard_before.isoformat(timespec="seconds"), self.now())

    def _keep_beating(self) -> None:
        """Start the heartbeat of this service's jobs, once per run of its background thread;
        it stops when the service closes (its jobs are then finished or interrupted)."""
        stop = self._stop
        if stop is None or self._beating_for is stop:
            return
        self._beating_for = stop

        def beat() -> None:
            while not stop.wait(self.heartbeat_seconds):
                try:
                    self.cases.beat_jobs(self.job_owner, self.now())
                except SQLAlchemyError:
                    # A busy or briefly unreachable database: the next beat tries again (a
                    # dead thread would let another process call the live job interrupted).
                    log.warning("job heartbeat not recorded", exc_info=True)

        threading.Thread(target=beat, name="jobs-heartbeat", daemon=True).start()

    def _stage(self, job_id: int, uploads: list[tuple[str, bytes]],
               originals: dict[str, str]) -> Path:
        """The uploads written to a folder of the job's, numbered, with safe names; originals
        gets each staged file's name as uploaded, printable and bounded."""
        folder = self.settings.uploads_dir / f"job-{job_id}"
        private_directory(folder)
        for number, (name, data) in enumerate(uploads):
            # Numbered, with a sanitised name: an upload names no path of ours.
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name)[:100] or "image"
            write_private(folder / f"{number:05d}-{safe}", data)
            # A browser sends the name alone; another client may send a path (either slash).
            original = "".join(c for c in name.replace("\\", "/").rsplit("/", 1)[-1] if c.isprintable())
            originals[f"{number:05d}-{safe}"] = original.strip()[:ORIGINAL_NAME_CHARS] or safe
        return folder

    def _run_job(self, actor: Actor, job_id: int, source: str, paths: list[Path],
                 staged: Path | None, originals: dict[str, str]) -> None:
        def progress(summary: IngestSummary) -> None:
            self.cases.update_job(job_id, progress=_progress(summary), heartbeat_at=self.now())
            for listener in self.ingest_listeners:
                listener(summary)
            self.check_stop()  # between batches: a closing server waits for this one only

        def location_of(path: Path) -> str:
            assert staged is not None
            return f"{UPLOAD_PREFIX}{job_id}/{path.name.split('-', 1)[1]}"  # without its number

        # By location: two uploads whose safe names agree share one (and the first's name).
        named: dict[str, str] = {}
        for staged_name, original in originals.items():
            named.setdefault(location_of(Path(staged_name)), original)

        try:
            self.check_stop()  # queued when the server began to stop: never started
            self.cases.update_job(job_id, status="running", owner=self.job_owner,
                                  heartbeat_at=self.now())
            summary = self.ingest(actor, paths, source, progress, location_of if staged else None,
                                  provenance_of=lambda location: {"file_name": named[location]}
                                  if location in named else {})
            self.cases.update_job(job_id, status="done", finished_at=self.now(),
                                  progress=_progress(summary))
        except Stopping:
            self.cases.update_job(job_id, status="interrupted", finished_at=self.now(),
                                  error="the server stopped; run the same ingest again to finish it")
        except FacesearchError as exc:
            self.cases.update_job(job_id, status="failed", finished_at=self.now(), error=exc.message)
        except Exception:  # noqa: BLE001 - a job must end in a state, whatever happened
            self.cases.update_job(job_id, status="failed", finished_at=self.now(),
                                  error="internal error")
            raise
        finally:
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)


def _progress(summary: IngestSummary) -> dict:
    return {"images_total": summary.images_total, "images_seen": summary.images_seen,
            "images_indexed": summary.images_indexed, "faces_indexed": summary.faces_indexed,
            "faces_withheld": summary.faces_withheld,
            "faces_low_quality": dict(summary.faces_low_quality),
            "already_indexed": summary.already_indexed,
            "images_without_faces": summary.images_without_faces, "skipped": dict(summary.skipped),
            "skipped_by_reason": dict(summary.skipped_by_reason),
            # By the name it was uploaded under (an upload's location is "upload:<job>/<name>").
            "skipped_files": [{"file": UPLOADED.sub("", location), "reason": reason}
                              for location, reason in summary.skipped_files]}
