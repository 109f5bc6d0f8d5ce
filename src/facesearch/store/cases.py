"""Cases, the searches made in them, their candidate lists and review marks; ingest jobs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from facesearch.calibration import band
from facesearch.store.schema import (
    candidates,
    cases,
    images,
    ingest_jobs,
    marks,
    organisations,
    probe_crops,
    searches,
    users,
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
    id: int = 0
    note: str = ""
    withdrawn_at: str | None = None  # a withdrawn mark stays in the record but counts for nothing
    withdrawn_by: str | None = None

    @property
    def live(self) -> bool:
        return self.withdrawn_at is None


@dataclass
class CaseMark:
    """The case's latest live mark on a face, made on another candidate listing that face."""

    search_id: int
    candidate_id: int
    mark: Mark


@dataclass(frozen=True)
class CaseSummary:
    """A line of the case list."""

    case: Case
    opened_by_name: str | None
    searches: int
    confirmed_leads: int  # faces whose candidate's latest live mark is "confirmed"
    last_activity: str | None  # the latest search, mark or withdrawal


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
    # Set where the case's latest live mark on this face was made in another listing of it
    # (this search's other probe face, or another search of the case).
    case_mark: CaseMark | None = None

    @property
    def status(self) -> str:
        """The latest live mark on this candidate, or "unreviewed"."""
        live = [m for m in self.marks if m.live]
        return live[-1].mark if live else "unreviewed"

    @property
    def band(self) -> str | None:
        """strong, moderate or weak (calibration.band); None where not recorded."""
        return None if self.expected_false_matches is None else band(self.expected_false_matches)

    @property
    def decision(self) -> str:
        """The case's latest live word on this face, wherever it was listed."""
        return self.case_mark.mark.mark if self.case_mark else self.status


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
    faces_searched: int | None = None  # the gallery's size then (None before 0008)


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

    def close_case(self, conn: Connection, case_id: int, now: str, by: str) -> None:
        conn.execute(update(cases).where(cases.c.id == case_id)
                     .values(status="closed", closed_at=now, closed_by=by))

    def case_summaries(self, organisation_id: int) -> list[CaseSummary]:
        """The organisation's cases, newest first, with their searches, confirmed leads and
        last activity counted in the database."""
        own = select(cases.c.id).where(cases.c.organisation_id == organisation_id)
        listed = (select(searches.c.case_id, candidates.c.id, candidates.c.face_id)
                  .join(searches, candidates.c.search_id == searches.c.id)
                  .where(searches.c.case_id.in_(own)).subquery())
        latest_live = (select(marks.c.candidate_id, func.max(marks.c.id).label("mark_id"))
                       .where(marks.c.candidate_id.in_(select(listed.c.id)),
                              marks.c.withdrawn_at.is_(None))
                       .group_by(marks.c.candidate_id).subquery())
        with self.engine.connect() as conn:
            rows = conn.execute(select(cases, users.c.username)
                                .outerjoin(users, users.c.id == cases.c.opened_by)
                                .where(cases.c.organisation_id == organisation_id)
                                .order_by(cases.c.id.desc())).mappings().all()
            counted = {case_id: (number, last) for case_id, number, last in conn.execute(
                select(searches.c.case_id, func.count(), func.max(searches.c.at))
                .where(searches.c.case_id.in_(own)).group_by(searches.c.case_id)).all()}
            activity = {case_id: last for case_id, (_, last) in counted.items()}
            for column in (marks.c.at, marks.c.withdrawn_at):
                for case_id, at in conn.execute(
                        select(listed.c.case_id, func.max(column))
                        .join(marks, marks.c.candidate_id == listed.c.id)
                        .group_by(listed.c.case_id)).all():
                    if at and at > activity.get(case_id, ""):
                        activity[case_id] = at
            confirmed = dict(conn.execute(
                select(listed.c.case_id, func.count(func.distinct(listed.c.face_id)))
                .join(latest_live, latest_live.c.candidate_id == listed.c.id)
                .join(marks, marks.c.id == latest_live.c.mark_id)
                .where(marks.c.mark == "confirmed").group_by(listed.c.case_id)).all())
        return [CaseSummary(Case(**{k: v for k, v in row.items() if k != "username"}),
                            row["username"], counted.get(row["id"], (0, None))[0],
                            confirmed.get(row["id"], 0), activity.get(row["id"]))
                for row in rows]

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
                                  probe_quality=json.loads(r["probe_quality"]),
                                  faces_searched=r["faces_searched"])
                     for r in conn.execute(query).mappings()]
            by_id = {s.id: s for s in found}
            if not by_id:
                return []
            rows = conn.execute(select(candidates).where(candidates.c.search_id.in_(list(by_id)))
                                .order_by(candidates.c.probe_face, candidates.c.rank)).mappings().all()
            listed = {r["id"]: StoredCandidate(**r) for r in rows}
            for mark in conn.execute(select(marks).where(marks.c.candidate_id.in_(list(listed)))
                                     .order_by(marks.c.id)).mappings():
                listed[mark["candidate_id"]].marks.append(_mark(mark))
            self._carry_case_marks(conn, case_id, list(listed.values()))
        for candidate in listed.values():
            search = by_id[candidate.search_id]
            if candidate.expected_false_matches is None and search.faces_searched:
                # A row stored before its search was: the same product, from the search's size.
                candidate.expected_false_matches = float(
                    f"{candidate.false_match_probability * search.faces_searched:.3g}")
            search.candidates.append(candidate)
        return found

    def _carry_case_marks(self, conn: Connection, case_id: int,
                          listed: list[StoredCandidate]) -> None:
        """Give each candidate the case's latest live mark on its face where that mark was
        made on another candidate: a face rejected in one search reads as rejected in every
        other search of the case that lists it."""
        latest: dict[int, tuple[int, int, Mark]] = {}
        for face_ids in _chunks(sorted({c.face_id for c in listed})):
            for row in conn.execute(
                    select(marks, candidates.c.face_id, candidates.c.search_id)
                    .join(candidates, marks.c.candidate_id == candidates.c.id)
                    .join(searches, candidates.c.search_id == searches.c.id)
                    .where(searches.c.case_id == case_id, candidates.c.face_id.in_(face_ids),
                           marks.c.withdrawn_at.is_(None))
                    .order_by(marks.c.id)).mappings():
                latest[row["face_id"]] = (row["search_id"], row["candidate_id"], _mark(row))
        for candidate in listed:
            search_id, candidate_id, mark = latest.get(candidate.face_id, (0, candidate.id, None))
            if mark is not None and candidate_id != candidate.id:
                candidate.case_mark = CaseMark(search_id, candidate_id, mark)

    def probe_crops(self, search_ids: list[int]) -> dict[tuple[int, int], bytes]:
        """The stored probe face crops (JPEG) of these searches, by (search id, probe face)."""
        found: dict[tuple[int, int], bytes] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(search_ids):
                found.update({(r.search_id, r.probe_face): r.jpeg for r in conn.execute(
                    select(probe_crops).where(probe_crops.c.search_id.in_(chunk)))})
        return found

    def add_probe_crops(self, conn: Connection, search_id: int, crops: list[bytes]) -> None:
        """The search's probe face crops (JPEG), numbered as its probe faces."""
        for number, jpeg in enumerate(crops):
            conn.execute(insert(probe_crops).values(search_id=search_id, probe_face=number, jpeg=jpeg))

    def probe_crop(self, case_id: int, search_id: int, probe_face: int) -> bytes | None:
        """One probe face's crop, if the search is the case's."""
        query = (select(probe_crops.c.jpeg).join(searches, probe_crops.c.search_id == searches.c.id)
                 .where(searches.c.case_id == case_id, probe_crops.c.search_id == search_id,
                        probe_crops.c.probe_face == probe_face))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one_or_none()

    def images_by_sha(self, hashes: list[str]) -> dict[str, dict]:
        """The live images with these sha256: location, size, provenance (parsed JSON) and
        withheld_faces (faces of people suppressed at ingest or erased since)."""
        found: dict[str, dict] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(hashes), 500):
                for row in conn.execute(select(images.c.sha256, images.c.location, images.c.width,
                                               images.c.height, images.c.provenance,
                                               images.c.withheld_faces)
                                        .where(images.c.sha256.in_(hashes[start:start + 500]))).mappings():
                    found[row["sha256"]] = dict(row, provenance=json.loads(row["provenance"] or "{}"))
        return found

    def candidate(self, candidate_id: int,
                  conn: Connection | None = None) -> tuple[StoredCandidate, int] | None:
        """A candidate with its marks, and the id of its case (in conn's transaction, if given)."""
        if conn is None:
            with self.engine.connect() as own:
                return self.candidate(candidate_id, own)
        row = conn.execute(select(candidates, searches.c.case_id)
                           .join(searches, candidates.c.search_id == searches.c.id)
                           .where(candidates.c.id == candidate_id)).mappings().first()
        if row is None:
            return None
        found = StoredCandidate(**{k: v for k, v in row.items() if k != "case_id"})
        found.marks = [_mark(m) for m in conn.execute(
            select(marks).where(marks.c.candidate_id == candidate_id).order_by(marks.c.id)).mappings()]
        return found, row["case_id"]

    def lock_candidate(self, conn: Connection, candidate_id: int) -> StoredCandidate | None:
        """The candidate with its marks, read after taking its row lock (PostgreSQL) or the
        database's write lock (SQLite; so this must be the transaction's first statement):
        marks and withdrawals of one candidate are then decided one transaction at a time."""
        conn.execute(update(candidates).where(candidates.c.id == candidate_id)
                     .values(rank=candidates.c.rank))
        found = self.candidate(candidate_id, conn)
        return found[0] if found else None

    def add_mark(self, conn: Connection, **values: object) -> int:
        return conn.execute(insert(marks).values(**values)).inserted_primary_key[0]

    def withdraw_mark(self, conn: Connection, mark_id: int, by: str, at: str) -> bool:
        """Withdraw a live mark; False if it was withdrawn meanwhile."""
        return conn.execute(update(marks).where(marks.c.id == mark_id, marks.c.withdrawn_at.is_(None))
                            .values(withdrawn_at=at, withdrawn_by=by)).rowcount == 1

    def face_listed_for(self, face_id: int, organisation_id: int) -> bool:
        """Whether the face is in a candidate list of one of the organisation's cases."""
        query = (select(func.count()).select_from(candidates)
                 .join(searches, candidates.c.search_id == searches.c.id)
                 .where(candidates.c.face_id == face_id,
                        searches.c.organisation_id == organisation_id))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one() > 0

    def case_listing(self, face_id: int, search_id: int, organisation_id: int) -> int | None:
        """The case of the organisation's search search_id if its candidate list holds the face."""
        query = (select(searches.c.case_id).select_from(candidates)
                 .join(searches, candidates.c.search_id == searches.c.id)
                 .where(candidates.c.face_id == face_id, searches.c.id == search_id,
                        searches.c.organisation_id == organisation_id).limit(1))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

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

    def delete_probe_crops_before(self, conn: Connection, cutoff: str) -> int:
        """Delete the probe face crops of searches before cutoff: a crop is of the probe, so
        it is kept no longer than a kept probe photo is."""
        old = select(searches.c.id).where(searches.c.at < cutoff)
        return conn.execute(probe_crops.delete().where(probe_crops.c.search_id.in_(old))).rowcount

    def delete_searches_before(self, conn: Connection, cutoff: str) -> int:
        """Delete searches before cutoff with their candidate lists and marks."""
        old = select(searches.c.id).where(searches.c.at < cutoff)
        old_candidates = select(candidates.c.id).where(candidates.c.search_id.in_(old))
        conn.execute(marks.delete().where(marks.c.candidate_id.in_(old_candidates)))
        conn.execute(probe_crops.delete().where(probe_crops.c.search_id.in_(old)))
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


def _mark(row) -> Mark:  # noqa: ANN001 - a row of marks
    return Mark(row["mark"], row["actor"], row["user_id"], row["at"], row["id"], row["note"],
                row["withdrawn_at"], row["withdrawn_by"])


def _chunks(ids: list[int], size: int = 500) -> list[list[int]]:
    # Bounded IN lists: SQLite limits the number of bound parameters in one statement.
    return [ids[start:start + size] for start in range(0, len(ids), size)]
