"""Cases, the searches made in them, their candidate lists and review marks; ingest jobs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from facesearch.store.schema import (
    candidates,
    cases,
    ingest_jobs,
    marks,
    organisations,
    searches,
)


@dataclass(frozen=True)
class Case:
    id: int
    organisation_id: int
    number: str
    purpose: str
    authorisation: str
    keep_probes: bool
    status: str
    opened_by: int | None
    opened_at: str
    closed_at: str | None
    offence_type: str = ""
    closed_by: str | None = None  # who closed it


@dataclass
class Mark:
    mark: str
    actor: str
    user_id: int | None
    at: str


@dataclass
class StoredCandidate:
    id: int
    search_id: int
    probe_face: int
    rank: int
    face_id: int
    distance: float
    false_match_probability: float
    image_sha256: str
    location: str
    page_url: str | None
    source: str
    jurisdiction: str
    collected_at: str
    erased_at: str | None = None  # the face was erased; provenance above is blank
    expected_false_matches: float | None = None  # strangers expected this close (None before 0008)
    marks: list[Mark] = field(default_factory=list)

    @property
    def status(self) -> str:
        """The latest mark, or "unreviewed"."""
        return self.marks[-1].mark if self.marks else "unreviewed"


@dataclass
class StoredSearch:
    id: int
    case_id: int
    actor: str
    user_id: int | None
    at: str
    probe_sha256: str
    probe_kept: bool
    probe_faces: list[list[int]]
    candidates: list[StoredCandidate] = field(default_factory=list)
    probe_photos: list[str] = field(default_factory=list)  # sha256 of each; several: one person
    # Per probe face: {"quality": FaceQuality's fields, "warnings": [...], "bound": "..."}.
    probe_quality: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class IngestJob:
    id: int
    source: str
    status: str
    started_by: str
    created_at: str
    finished_at: str | None
    progress: dict
    error: str | None


class CaseStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # Cases -----------------------------------------------------------------------------------

    def add_case(self, conn: Connection, **values: object) -> int:
        return conn.execute(insert(cases).values(status="open", **values)).inserted_primary_key[0]

    def case(self, case_id: int, conn: Connection | None = None) -> Case | None:
        if conn is None:
            with self.engine.connect() as own:
                return self.case(case_id, own)
        row = conn.execute(select(cases).where(cases.c.id == case_id)).mappings().first()
        return Case(**row) if row else None

    def case_by_number(self, organisation_id: int, number: str) -> Case | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(cases).where(cases.c.organisation_id == organisation_id,
                                                   cases.c.number == number)).mappings().first()
        return Case(**row) if row else None

    def cases(self, organisation_id: int) -> list[Case]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(cases).where(cases.c.organisation_id == organisation_id)
                                .order_by(cases.c.id.desc())).mappings()
            return [Case(**r) for r in rows]

    def close_case(self, conn: Connection, case_id: int, now: str) -> None:
        conn.execute(update(cases).where(cases.c.id == case_id).values(status="closed", closed_at=now))

    # Searches and candidates -------------------------------------------------------------------

    def add_search(self, conn: Connection, rows: list[dict], probe_faces: list,
                   probe_photos: list[str], **values: object) -> tuple[int, list[int]]:
        """Store a search and its candidate list; returns the search's and candidates' ids."""
        search_id = conn.execute(insert(searches).values(
            probe_faces=json.dumps(probe_faces), probe_photos=json.dumps(probe_photos),
            **values)).inserted_primary_key[0]
        ids = [conn.execute(insert(candidates).values(search_id=search_id, **row))
               .inserted_primary_key[0] for row in rows]
        return search_id, ids

    def lock_organisation(self, conn: Connection, organisation_id: int) -> None:
        """Hold the organisation's row lock (PostgreSQL) or the database's write lock (SQLite;
        so this must be the transaction's first statement) until conn's transaction ends: the
        organisation's searches are then counted and recorded one transaction at a time."""
        conn.execute(update(organisations).where(organisations.c.id == organisation_id)
                     .values(jurisdictions=organisations.c.jurisdictions))

    def searches_since(self, since: str, conn: Connection | None = None, *,
                       user_id: int | None = None, organisation_id: int | None = None) -> list[str]:
        """Times of searches at or after since, oldest first, by one user or organisation (in
        conn's transaction, if given)."""
        if conn is None:
            with self.engine.connect() as own:
                return self.searches_since(since, own, user_id=user_id,
                                           organisation_id=organisation_id)
        query = select(searches.c.at).where(searches.c.at >= since).order_by(searches.c.at)
        if user_id is not None:
            query = query.where(searches.c.user_id == user_id)
        if organisation_id is not None:
            query = query.where(searches.c.organisation_id == organisation_id)
        return list(conn.execute(query).scalars())

    def searches(self, case_id: int, search_id: int | None = None) -> list[StoredSearch]:
        """A case's searches with their candidates and marks, newest first."""
        query = select(searches).where(searches.c.case_id == case_id).order_by(searches.c.id.desc())
        if search_id is not None:
            query = query.where(searches.c.id == search_id)
        with self.engine.connect() as conn:
            found = [StoredSearch(id=r["id"], case_id=r["case_id"], actor=r["actor"],
                                  user_id=r["user_id"], at=r["at"], probe_sha256=r["probe_sha256"],
                                  probe_kept=r["probe_path"] is not None,
                                  probe_faces=json.loads(r["probe_faces"]),
                                  probe_photos=json.loads(r["probe_photos"]),
                                  probe_quality=json.loads(r["probe_quality"]))
                     for r in conn.execute(query).mappings()]
            by_id = {s.id: s for s in found}
            if not by_id:
                return []
            rows = conn.execute(select(candidates).where(candidates.c.search_id.in_(list(by_id)))
                                .order_by(candidates.c.probe_face, candidates.c.rank)).mappings().all()
            listed = {r["id"]: StoredCandidate(**r) for r in rows}
            for mark in conn.execute(select(marks).where(marks.c.candidate_id.in_(list(listed)))
                                     .order_by(marks.c.id)).mappings():
                listed[mark["candidate_id"]].marks.append(
                    Mark(mark["mark"], mark["actor"], mark["user_id"], mark["at"]))
        for candidate in listed.values():
            by_id[candidate.search_id].candidates.append(candidate)
        return found

    def candidate(self, candidate_id: int) -> tuple[StoredCandidate, int] | None:
        """A candidate with its marks, and the id of its case."""
        with self.engine.connect() as conn:
            row = conn.execute(select(candidates, searches.c.case_id)
                               .join(searches, candidates.c.search_id == searches.c.id)
                               .where(candidates.c.id == candidate_id)).mappings().first()
            if row is None:
                return None
            found = StoredCandidate(**{k: v for k, v in row.items() if k != "case_id"})
            found.marks = [Mark(m["mark"], m["actor"], m["user_id"], m["at"]) for m in conn.execute(
                select(marks).where(marks.c.candidate_id == candidate_id).order_by(marks.c.id)).mappings()]
        return found, row["case_id"]

    def add_mark(self, conn: Connection, **values: object) -> None:
        conn.execute(insert(marks).values(**values))

    def face_listed_for(self, face_id: int, organisation_id: int) -> bool:
        """Whether the face is in a candidate list of one of the organisation's cases."""
        query = (select(func.count()).select_from(candidates)
                 .join(searches, candidates.c.search_id == searches.c.id)
                 .where(candidates.c.face_id == face_id,
                        searches.c.organisation_id == organisation_id))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one() > 0

    def old_probe_paths(self, conn: Connection, cutoff: str) -> list[str]:
        """Kept probe files of searches before cutoff; forgotten by the database as returned.
        A multi-photo search keeps each photo beside the first (probe_path), under its sha256."""
        rows = conn.execute(select(searches.c.id, searches.c.probe_path, searches.c.probe_photos).where(
            searches.c.at < cutoff, searches.c.probe_path.is_not(None))).all()
        if rows:
            conn.execute(update(searches).where(searches.c.id.in_([r[0] for r in rows]))
                         .values(probe_path=None))
        return [str(Path(path).parent / sha) for _, path, photos in rows
                for sha in json.loads(photos) or [Path(path).name]]

    def delete_searches_before(self, conn: Connection, cutoff: str) -> int:
        """Delete searches before cutoff with their candidate lists and marks."""
        old = select(searches.c.id).where(searches.c.at < cutoff)
        old_candidates = select(candidates.c.id).where(candidates.c.search_id.in_(old))
        conn.execute(marks.delete().where(marks.c.candidate_id.in_(old_candidates)))
        conn.execute(candidates.delete().where(candidates.c.search_id.in_(old)))
        return conn.execute(searches.delete().where(searches.c.at < cutoff)).rowcount

    # Ingest jobs -------------------------------------------------------------------------------

    def add_job(self, conn: Connection, source: str, started_by: str, now: str,
                owner: str) -> int:
        """A queued job, owned (run, and kept alive by heartbeats) by the process owner."""
        return conn.execute(insert(ingest_jobs).values(
            source=source, status="queued", started_by=started_by, created_at=now,
            progress="{}", owner=owner, heartbeat_at=now)).inserted_primary_key[0]

    def beat_jobs(self, owner: str, now: str) -> int:
        """Record that owner is alive and still has its unfinished jobs; how many it has."""
        with self.engine.begin() as conn:
            return conn.execute(update(ingest_jobs).where(
                ingest_jobs.c.owner == owner, ingest_jobs.c.status.in_(("queued", "running")))
                .values(heartbeat_at=now)).rowcount

    def update_job(self, job_id: int, **values: object) -> None:
        if "progress" in values:
            values["progress"] = json.dumps(values["progress"])
        with self.engine.begin() as conn:
            conn.execute(update(ingest_jobs).where(ingest_jobs.c.id == job_id).values(**values))

    def jobs(self, job_id: int | None = None) -> list[IngestJob]:
        shown = (ingest_jobs.c[name] for name in IngestJob.__dataclass_fields__)
        query = select(*shown).order_by(ingest_jobs.c.id.desc()).limit(100)
        if job_id is not None:
            query = query.where(ingest_jobs.c.id == job_id)
        with self.engine.connect() as conn:
            return [IngestJob(**dict(r, progress=json.loads(r["progress"])))
                    for r in conn.execute(query).mappings()]

    def interrupt_stale_jobs(self, heard_before: str, now: str) -> int:
        """Jobs left unfinished by server processes that stopped: no heartbeat since
        heard_before (or none ever, from before heartbeats). What they committed is kept."""
        silent = (ingest_jobs.c.heartbeat_at.is_(None)) | (ingest_jobs.c.heartbeat_at < heard_before)
        with self.engine.begin() as conn:
            return conn.execute(update(ingest_jobs).where(
                ingest_jobs.c.status.in_(("queued", "running")), silent)
                .values(status="interrupted", finished_at=now)).rowcount
