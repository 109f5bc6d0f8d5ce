"""Cases and what happens in them: probe detection, search, candidate review and the report."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import NoReturn

from sqlalchemy.engine import Connection

from facesearch.calibration import MEANING
from facesearch.errors import Forbidden, InvalidRequest, NotFound, RateLimited
from facesearch.fusion import RULE
from facesearch.imaging import decode_for_analysis
from facesearch.policy.roles import PERMISSIONS, ROLES, allowed, check_mark
from facesearch.service.grouping import Grouping, IdentityGroup, PhotoGroup
from facesearch.service.quality import shortfalls
from facesearch.store.cases import Case, StoredCandidate, StoredSearch
from facesearch.store.files import write_private
from facesearch.types import Actor, Box, FaceQuality, ProbeResult

LEAD_NOTICE = "Candidates are investigative leads for human review, not identifications."
LEAD_LABEL = "investigative lead"  # carried by every candidate, wherever it is shown


@dataclass
class SearchResult:
    case_id: int
    search_id: int
    probe_sha256: str
    faces: list[ProbeResult]
    notice: str = LEAD_NOTICE
    score_meaning: str = MEANING
    # sha256 of every probe photo; several are one person's, searched as one face (fusion).
    probe_photos: list[str] = field(default_factory=list)
    fusion: str | None = None  # fusion.RULE for a multi-photo search
    # The candidates grouped (service.grouping): by identity, and each photo once with
    # every page it was seen on.
    identities: list[IdentityGroup] = field(default_factory=list)
    photos: list[PhotoGroup] = field(default_factory=list)


@dataclass
class ProbeFace:
    number: int  # 0 is the largest
    box: Box
    quality: FaceQuality
    quality_warnings: list[str] = field(default_factory=list)  # as ProbeResult's


@dataclass
class CaseReport:
    case: Case
    organisation: str
    generated_at: str
    searches: list[StoredSearch] = field(default_factory=list)
    notice: str = LEAD_NOTICE
    score_meaning: str = MEANING
    # Search id -> its candidates' photos, each once with every place seen (service.grouping).
    photos: dict[int, list[PhotoGroup]] = field(default_factory=dict)


class Cases(Grouping):
    # Cases --------------------------------------------------------------------------------

    def open_case(self, actor: Actor, number: str, purpose: str, authorisation: str = "",
                  keep_probes: bool = False) -> Case:
        """Open a case in the actor's organisation; searches are only made inside one."""
        self.authorise(actor, "cases.manage", "case.open")
        number = number.strip()
        if not number or len(number) > 100:
            raise InvalidRequest("a case needs a number of at most 100 characters")
        if purpose not in self.settings.search_purposes:
            raise InvalidRequest("the purpose must be one of: " + "; ".join(self.settings.search_purposes))
        if self.cases.case_by_number(actor.organisation_id, number) is not None:
            raise InvalidRequest(f"case {number} already exists")
        with self.store.transaction() as conn:
            case_id = self.cases.add_case(
                conn, organisation_id=actor.organisation_id, number=number, purpose=purpose,
                authorisation=authorisation.strip()[:200], keep_probes=keep_probes,
                opened_by=actor.user_id, opened_at=self.now())
            case = self.cases.case(case_id, conn)
            assert case is not None
            self._audit(conn, actor, "case.open", {"case_id": case_id, "keep_probes": keep_probes},
                        case)
        return case

    def close_case(self, actor: Actor, case_id: int) -> Case:
        self.authorise(actor, "cases.manage", "case.close")
        case = self._own_case(actor, case_id, "case.close")
        with self.store.transaction() as conn:
            self.cases.close_case(conn, case.id, self.now())
            self._audit(conn, actor, "case.close", {"case_id": case.id}, case)
            self._case_closing(conn, actor, case)
        closed = self.cases.case(case.id)
        assert closed is not None
        return closed

    def list_cases(self, actor: Actor) -> list[Case]:
        self.authorise(actor, "cases.read", "case.list")
        return self.cases.cases(actor.organisation_id)

    def case_by_number(self, actor: Actor, number: str) -> Case:
        self.authorise(actor, "cases.read", "case.read")
        case = self.cases.case_by_number(actor.organisation_id, number)
        if case is None:
            raise NotFound(f"your organisation has no case {number}")
        return case

    def case_searches(self, actor: Actor, case_id: int,
                      search_id: int | None = None) -> tuple[Case, list[StoredSearch]]:
        """A case and its searches with their candidate lists and marks, newest first."""
        self.authorise(actor, "cases.read", "case.read")
        case = self._own_case(actor, case_id, "case.read")
        found = self.cases.searches(case.id, search_id)
        if search_id is not None and not found:
            raise NotFound("no such search in this case")
        self._audit_alone(actor, "case.read", {"case_id": case.id, "search_id": search_id}, case)
        return case, found

    def _own_case(self, actor: Actor, case_id: int, action: str) -> Case:
        """The case if it belongs to the actor's organisation. Another organisation's case is
        refused exactly like a missing one, so that its existence is not revealed."""
        case = self.cases.case(case_id)
        if case is None or case.organisation_id != actor.organisation_id:
            self._audit_alone(actor, f"{action}.refused", {"reason": "no such case in the organisation",
                                                           "case_id": case_id})
            raise Forbidden("you are not permitted to do this")
        return case

    def policy(self, actor: Actor) -> dict:
        """The policy in force (set by the operator through FACESEARCH_* settings)."""
        self.authorise(actor, "policy.read", "policy.read")
        s = self.settings
        return {
            "search_purposes": s.search_purposes, "max_candidates": s.max_candidates,
            "max_probe_photos": s.max_probe_photos,
            "search_false_matches": s.search_false_matches,
            "suppress_false_matches": s.suppress_false_matches,
            "false_match_ceiling": s.false_match_ceiling,
            "excluded_jurisdictions": s.excluded_jurisdictions,
            "searches_per_minute_user": s.searches_per_minute_user,
            "searches_per_day_user": s.searches_per_day_user,
            "searches_per_minute_organisation": s.searches_per_minute_organisation,
            "searches_per_day_organisation": s.searches_per_day_organisation,
            "session_hours": s.session_hours, "max_upload_bytes": s.max_upload_bytes,
            "roles": {role: sorted(p for p, roles in PERMISSIONS.items() if role in roles)
                      for role in ROLES},
        }

    # Search ---------------------------------------------------------------------------------

    def detect_faces(self, actor: Actor, photo: bytes) -> list[ProbeFace]:
        """The faces in a probe photo, largest first, so that the investigator can pick one.
        Nothing is kept."""
        self.authorise(actor, "search", "probe.detect")
        image = decode_for_analysis(photo, self.settings)  # as _probe_faces: the same faces
        with self._analysis_lock:
            found = image.in_original(self.analyzer.analyse([image.pixels], False)[0])
        self._audit_alone(actor, "probe.detect", {"probe_sha256": hashlib.sha256(photo).hexdigest(),
                                                  "faces": len(found)})
        return [ProbeFace(i, f.box, f.quality,
                          [s.words() for s in shortfalls(f.quality, self.settings)])
                for i, f in enumerate(found)]

    def search(self, actor: Actor, case_id: int, photo: bytes | list[bytes],
               top_k: int | None = None, face: str | int = "all") -> SearchResult:
        """Ranked candidates for the chosen faces of the probe photo, nearest first, recorded
        in the case. Refused without an open case of the actor's organisation, or over the
        rate limits. photo may be several photos of one person (at most max_probe_photos,
        max_upload_bytes together): one face each, searched as one probe face ranked by the
        mean of their distances (see _fused_probe and _rank; face is then "all", each
        photo's only face, or "largest"); it counts as one search."""
        self.authorise(actor, "search", "search")
        case = self._own_case(actor, case_id, "search")
        if case.status != "open":
            self._refuse(actor, "search", "the case is closed", case)
        k = top_k or min(self.settings.top_k, self.settings.max_candidates)
        if not 1 <= k <= self.settings.max_candidates:
            raise InvalidRequest(f"top must be between 1 and {self.settings.max_candidates}")
        photos = [photo] if isinstance(photo, bytes) else list(photo)
        if not 1 <= len(photos) <= self.settings.max_probe_photos:
            raise InvalidRequest(f"a search takes 1 to {self.settings.max_probe_photos} photos of "
                                 f"one person, not {len(photos)}")
        if sum(map(len, photos)) > self.settings.max_upload_bytes:
            raise InvalidRequest(f"the probe photos hold more than {self.settings.max_upload_bytes} "
                                 "bytes together")
        # A first count before the analysis, so that most refusals cost none; the count that
        # decides is made again below, in the transaction that records the search.
        over = self._over_rate(actor, case)
        if over is not None:
            self._refuse_over_rate(actor, case, over)
        with self._analysis_lock:
            if len(photos) == 1:
                probe_sha, probe_faces = self._probe_faces(photos[0], face)
                hashes, searched = [probe_sha], probe_faces
            else:  # one probe face, searched by every photo's; the first photo's stands for it
                hashes, searched = self._fused_probe(photos, face)
                probe_sha, probe_faces = hashes[0], searched[:1]
        # The cap is on the whole candidate list, which a probe with many faces would pass.
        if len(probe_faces) > self.settings.max_candidates:
            raise InvalidRequest(f"the probe has {len(probe_faces)} faces: choose one to search")
        k = min(k, self.settings.max_candidates // max(1, len(probe_faces)))
        jurisdictions = self._jurisdictions_of(case)
        results = self._rank(searched, k, jurisdictions, fused=len(photos) > 1)
        groups = self._result_groups(
            [(r.probe_face, c.rank, c.face_id) for r in results for c in r.candidates], jurisdictions)
        with self.store.transaction() as conn:
            # Under the organisation's lock, count and record as one step: parallel searches
            # pass here one at a time, so no more than the limits are ever recorded.
            self.cases.lock_organisation(conn, case.organisation_id)
            over = self._over_rate(actor, case, conn)
            if over is None:
                search_id = self._record_search(conn, actor, case, photos, hashes, probe_faces,
                                                results)
                return SearchResult(case.id, search_id, probe_sha, results, probe_photos=hashes,
                                    identities=groups.identities, photos=groups.photos,
                                    fusion=RULE if len(photos) > 1 else None)
        # Audited once the transaction has let the lock go (the audit takes it again).
        self._refuse_over_rate(actor, case, over)

    def _record_search(self, conn: Connection, actor: Actor, case: Case, photos: list[bytes],
                       hashes: list[str], probe_faces: list, results: list[ProbeResult]) -> int:
        """Store the search, its candidate list and its audit record in conn's transaction
        (and the probe photos, where the case keeps them, each under its sha256 in the case's
        folder; the search's probe_path is the first's); the search's id."""
        probe_path = None
        if case.keep_probes:
            for photo, sha in zip(photos, hashes):
                write_private(self.settings.probes_dir / str(case.id) / sha, photo)
            probe_path = self.settings.probes_dir / str(case.id) / hashes[0]
        search_id, ids = self.cases.add_search(
            conn, [_candidate_row(r.probe_face, c) for r in results for c in r.candidates],
            case_id=case.id, organisation_id=case.organisation_id, user_id=actor.user_id,
            actor=actor.name, at=self.now(), probe_sha256=hashes[0],
            probe_path=str(probe_path) if probe_path else None,
            probe_faces=[[p.box.left, p.box.top, p.box.right, p.box.bottom] for p in probe_faces],
            probe_photos=hashes,
            probe_quality=json.dumps([{"quality": asdict(r.quality), "warnings": r.quality_warnings,
                                       "bound": r.quality_bound} for r in results]))
        for candidate, candidate_id in zip((c for r in results for c in r.candidates), ids):
            candidate.candidate_id = candidate_id
        self._audit(conn, actor, "search", {
            "search_id": search_id, "probe_sha256": hashes[0], "probe_photos": hashes,
            "fusion": RULE if len(hashes) > 1 else None, "probe_faces": len(probe_faces),
            "probe_kept": probe_path is not None,
            "results": [[[c.face_id, c.distance] for c in r.candidates] for r in results]}, case)
        return search_id

    def _over_rate(self, actor: Actor, case: Case,
                   conn: Connection | None = None) -> tuple[str, int] | None:
        """The per-user or per-organisation limit a further search would pass, and the seconds
        until one fits; None if it fits. Counted from the stored searches (in conn's
        transaction, if given), so limits hold across server processes and restarts."""
        now = self.clock()
        s = self.settings
        scopes = [("organisation", {"organisation_id": case.organisation_id},
                   s.searches_per_minute_organisation, s.searches_per_day_organisation)]
        if actor.user_id is not None:
            scopes.insert(0, ("user", {"user_id": actor.user_id},
                              s.searches_per_minute_user, s.searches_per_day_user))
        for scope, who, per_minute, per_day in scopes:
            for window, limit in ((timedelta(minutes=1), per_minute), (timedelta(days=1), per_day)):
                times = self.cases.searches_since((now - window).isoformat(timespec="seconds"),
                                                  conn, **who)
                if len(times) >= limit:
                    # The oldest search in the window must leave it before another fits.
                    oldest = datetime.fromisoformat(times[len(times) - limit])
                    retry = max(1, int((oldest + window - now).total_seconds()) + 1)
                    return (f"{scope} limit of {limit} searches per "
                            f"{'minute' if window.days == 0 else 'day'}", retry)
        return None

    def _refuse_over_rate(self, actor: Actor, case: Case, over: tuple[str, int]) -> NoReturn:
        """Refuse (429, audited) a search over a limit: over is the limit and the retry time."""
        self._audit_alone(actor, "search.refused", {"reason": over[0]}, case)
        raise RateLimited(f"search limit reached; try again in {over[1]} s", over[1])

    # Review -------------------------------------------------------------------------------

    def mark_candidate(self, actor: Actor, candidate_id: int, mark: str) -> StoredCandidate:
        """Mark a candidate possible, confirmed (two-person rule) or rejected."""
        self.authorise(actor, "candidates.mark", "candidate.mark")
        found = self.cases.candidate(candidate_id)
        case = self._own_case(actor, found[1] if found else -1, "candidate.mark")
        assert found is not None
        candidate = found[0]
        try:
            check_mark(mark, actor.user_id, [(m.user_id, m.mark) for m in candidate.marks])
        except Forbidden as exc:
            self._audit_alone(actor, "candidate.mark.refused", {
                "reason": exc.message, "candidate_id": candidate_id, "mark": mark}, case)
            raise
        with self.store.transaction() as conn:
            self.cases.add_mark(conn, candidate_id=candidate_id, user_id=actor.user_id,
                                actor=actor.name, mark=mark, at=self.now())
            self._audit(conn, actor, "candidate.mark", {
                "candidate_id": candidate_id, "face_id": candidate.face_id, "mark": mark}, case)
        marked = self.cases.candidate(candidate_id)
        assert marked is not None
        return marked[0]

    def case_report(self, actor: Actor, case_id: int) -> CaseReport:
        """Everything the case holds: its searches, candidates and who marked what when."""
        self.authorise(actor, "cases.read", "case.report")
        case = self._own_case(actor, case_id, "case.report")
        report = CaseReport(case, actor.organisation, self.now(), self.cases.searches(case.id))
        jurisdictions = self._jurisdictions_of(case)
        report.photos = {s.id: self._result_groups(
            [(c.probe_face, c.rank, c.face_id) for c in s.candidates if not c.erased_at],
            jurisdictions).photos for s in report.searches}
        self._audit_alone(actor, "case.report", {"case_id": case.id}, case)
        return report

    def face_crop(self, actor: Actor, face_id: int) -> bytes:
        """A face's crop, for a gallery manager or for an organisation whose candidate lists
        hold that face; nobody else."""
        if not (allowed(actor.role, "faces.read_any") or (
                allowed(actor.role, "cases.read")
                and self.cases.face_listed_for(face_id, actor.organisation_id))):
            self._audit_alone(actor, "face.crop.refused", {"reason": "face not in your cases",
                                                           "face_id": face_id})
            raise Forbidden("you are not permitted to do this")
        rows = self.store.candidate_rows([face_id])
        if face_id not in rows:
            raise NotFound("the face has been erased")
        data = self.crops.path(rows[face_id]["crop_path"]).read_bytes()
        self._audit_alone(actor, "face.crop", {"face_id": face_id})
        return data


def _candidate_row(probe_face: int, c) -> dict:  # noqa: ANN001 - a types.Candidate
    return {"probe_face": probe_face, "rank": c.rank, "face_id": c.face_id, "distance": c.distance,
            "false_match_probability": c.false_match_probability, "image_sha256": c.image_sha256,
            "location": c.location, "page_url": c.page_url, "source": c.source,
            "jurisdiction": c.jurisdiction, "collected_at": c.collected_at}
