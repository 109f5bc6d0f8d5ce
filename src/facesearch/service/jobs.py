"""Ingest as a background job for the server: staged uploads or a server-side path, one job
at a time, with progress recorded in the database so that any server process can report it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from facesearch.errors import FacesearchError, InvalidRequest, NotFound
from facesearch.service.engine import Engine, IngestSummary
from facesearch.store.cases import IngestJob
from facesearch.types import Actor

UPLOAD_PREFIX = "upload:"


class Jobs(Engine):
    def start_ingest_job(self, actor: Actor, source: str, *, path: str | None = None,
                         uploads: list[tuple[str, bytes]] | None = None) -> IngestJob:
        """Queue an ingest of uploaded images (their location is recorded as
        "upload:<job>/<file name>") or of a path on the server; returns the job at once."""
        self.authorise(actor, "ingest.server_path" if path else "ingest", "ingest")
        if (path is None) == (uploads is None):
            raise InvalidRequest("give either uploaded images or a server path")
        if self.store.source(source) is None:
            self._refuse(actor, "ingest", f"source {source!r} is not registered")
        if path is not None and not Path(path).exists():
            raise NotFound("no such path on the server")
        with self.store.transaction() as conn:
            job_id = self.cases.add_job(conn, source, actor.name, self.now())
            self._audit(conn, actor, "ingest.job", {"job_id": job_id, "source": source,
                                                   "uploads": len(uploads or []),
                                                   "server_path": path is not None})
        paths = [Path(path)] if path else [self._stage(job_id, uploads or [])]
        staged = None if path else paths[0]
        self.in_background(self._run_job, actor, job_id, source, paths, staged)
        return self.cases.jobs(job_id)[0]

    def ingest_jobs(self, actor: Actor, job_id: int | None = None) -> list[IngestJob]:
        self.authorise(actor, "ingest", "ingest.job.read")
        found = self.cases.jobs(job_id)
        if job_id is not None and not found:
            raise NotFound("no such job")
        return found

    def recover_jobs(self) -> None:
        """Mark jobs that a stopped server left queued or running as interrupted (what they
        committed is kept; the same ingest started again finishes them)."""
        self.cases.interrupt_running_jobs(self.now())

    def _stage(self, job_id: int, uploads: list[tuple[str, bytes]]) -> Path:
        folder = self.settings.uploads_dir / f"job-{job_id}"
        folder.mkdir(parents=True, exist_ok=True)
        for number, (name, data) in enumerate(uploads):
            # Numbered, with a sanitised name: an upload names no path of ours.
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name)[:100] or "image"
            (folder / f"{number:05d}-{safe}").write_bytes(data)
        return folder

    def _run_job(self, actor: Actor, job_id: int, source: str, paths: list[Path],
                 staged: Path | None) -> None:
        self.cases.update_job(job_id, status="running")

        def progress(summary: IngestSummary) -> None:
            self.cases.update_job(job_id, progress=_progress(summary))
            for listener in self.ingest_listeners:
                listener(summary)

        def location_of(path: Path) -> str:
            assert staged is not None
            return f"{UPLOAD_PREFIX}{job_id}/{path.name.split('-', 1)[1]}"  # without its number

        try:
            summary = self.ingest(actor, paths, source, progress, location_of if staged else None)
            self.cases.update_job(job_id, status="done", finished_at=self.now(),
                                  progress=_progress(summary))
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
            "faces_withheld": summary.faces_withheld, "already_indexed": summary.already_indexed,
            "images_without_faces": summary.images_without_faces, "skipped": dict(summary.skipped)}
