"""Cases and what happens in them: probe detection, search, candidate review and the report."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePath
from typing import NoReturn

import httpx
import numpy as np
from sqlalchemy.engine import Connection

from facesearch.calibration import BANDS, MEANING
from facesearch.crawl.extract import normalise_url
from facesearch.crawl.fetch import FetchLimits, FetchRefused, fetch
from facesearch.crawl.guard import guarded_transport, parse_networks
from facesearch.errors import BadImage, FacesearchError, Forbidden, InvalidRequest, NotFound, RateLimited
from facesearch.fusion import RULE
from facesearch.imaging import decode, decode_for_analysis, downscale, encode_jpeg
from facesearch.policy.roles import PERMISSIONS, ROLES, allowed, check_mark
from facesearch.service.grouping import Grouping, IdentityGroup, PhotoGroup, ResultGroups
from facesearch.service.jobs import UPLOAD_PREFIX
from facesearch.service.quality import shortfalls
from facesearch.store.cases import Case, CaseSummary, Mark, StoredCandidate, StoredSearch
from facesearch.store.files import write_private
from facesearch.types import Actor, Box, FaceQuality, ProbeResult

LEAD_NOTICE = "Candidates are investigative leads for human review, not identifications."
LEAD_LABEL = "investigative lead"  # carried by every candidate, wherever it is shown
# The bands and their cut-offs as a results page states them (calibration.BANDS).
BAND_WORDS = (f"Bands: strong lead, fewer than {BANDS[0][0]:g} strangers expected this close; "
              f"moderate lead, fewer than {BANDS[1][0]:g}; weak lead, {BANDS[1][0]:g} or more "
              "(many strangers look this close). A band says how rare such a resemblance is "
              "here, not whether the candidate is the person.")
# A probe face's stored crop: its box widened by this share of its size on each side (some
# hair, ears and chin help a reviewer), at most PROBE_CROP_SIDE pixels: a record of what
# was searched, not a copy of the photo.
PROBE_CROP_MARGIN = 0.25
PROBE_CROP_SIDE = 200
# A source image is shown for review at most this many pixels on its longest side.
SOURCE_IMAGE_SIDE = 1600
# Why a source image is refused: it also shows someone who is not to be shown.
WITHHELD_IMAGE = ("the full image is withheld: it also shows someone whose face was removed "
                  "or who asked not to be collected")
MAX_NOTE_CHARS = 1000  # a mark's note: a reason in a few sentences, not a file


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


@dataclass(frozen=True)
class Provenance:
    """Where a candidate's image came from, in words a reader can use; never a server path."""

    source: str  # the source's display name
    place: str  # readable_place: a URL, "uploaded file NAME" or "file NAME on the server"
    page_url: str | None  # the page the image was on
    image_url: str | None  # the image's own http(s) URL


@dataclass
class SearchReview:
    """A stored search as its results page shows it."""

    case: Case
    search: StoredSearch
    groups: ResultGroups
    provenance: dict[int, Provenance]  # by candidate id, for candidates not erased
    probe_crops: set[int]  # the probe faces whose crop was kept
    source_names: dict[str, str]  # source name -> the name people are shown


@dataclass
class Comparison:
    """A candidate beside its search's probe face, with its source image's facts. An erased
    candidate has no provenance, box or image."""

    case: Case
    search: StoredSearch
    candidate: StoredCandidate
    provenance: Provenance | None
    box: Box | None  # the face in its source image, in the image's own pixels
    width: int = 0  # the source image's size
    height: int = 0
    withheld: bool = False  # the image shows someone withheld: only the face crop is shown
    probe_crop_kept: bool = False  # the probe face's crop is still kept (probe retention)


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
    # (search id, probe face) -> the probe face's crop (JPEG), where the search stored one.
    probe_crops: dict[tuple[int, int], bytes] = field(default_factory=dict)
    # Candidate id -> where its image came from, in words (unerased candidates only).
    provenance: dict[int, Provenance] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Searches, candidates, candidates by their latest live mark, and erased ones."""
        listed = [c for s in self.searches for c in s.candidates]
        counts = {"searches": len(self.searches), "candidates": len(listed)}
        for status in ("possible", "confirmed", "rejected"):
            counts[status] = sum(c.status == status for c in listed)
        counts["erased"] = sum(c.erased_at is not None for c in listed)
        return counts


class Cases(Grouping):
    # Cases --------------------------------------------------------------------------------

    def open_case(self, actor: Actor, number: str, purpose: str, authorisation: str = "",
                  keep_probes: bool = False, *, offence_type: str) -> Case:
        """Open a case in the actor's organisation, for an offence or incident type of
        FACESEARCH_OFFENCE_TYPES; searches are only made inside one."""
        self.authorise(actor, "cases.manage", "case.open")
        number = number.strip()
        if not number or len(number) > 100:
            raise InvalidRequest("a case needs a number of at most 100 characters")
        if purpose not in self.settings.search_purposes:
            raise InvalidRequest("the purpose must be one of: " + "; ".join(self.settings.search_purposes))
        if offence_type not in self.settings.offence_types:
            raise InvalidRequest("the offence or incident type must be one of: "
                                 + "; ".join(self.settings.offence_types))
        if self.cases.case_by_number(actor.organisation_id, number) is not None:
            raise InvalidRequest(f"case {number} already exists")
        with self.store.transaction() as conn:
            case_id = self.cases.add_case(
                conn, organisation_id=actor.organisation_id, number=number, purpose=purpose,
                offence_type=offence_type, authorisation=authorisation.strip()[:200],
                keep_probes=keep_probes, opened_by=actor.user_id, opened_at=self.now())
            case = self.cases.case(case_id, conn)
            assert case is not None
            self._audit(conn, actor, "case.open", {"case_id": case_id, "keep_probes": keep_probes,
                                                   "offence_type": offence_type}, case)
        return case

    def case_to_close(self, actor: Actor, case_id: int) -> Case:
        """The case, for the step that confirms closing it: refused to whoever may not close it."""
        self.authorise(actor, "cases.manage", "case.close")
        case = self._own_case(actor, case_id, "case.close")
        if case.status != "open":
            self._refuse(actor, "case.close", "the case is already closed", case)
        return case

    def close_case(self, actor: Actor, case_id: int) -> Case:
        """Close a case for good: no more searches in it, its watches stop; what it holds
        stays readable. Records who closed it and when."""
        case = self.case_to_close(actor, case_id)
        with self.store.transaction() as conn:
            self.cases.close_case(conn, case.id, self.now(), actor.name)
            self._audit(conn, actor, "case.close", {"case_id": case.id}, case)
            self._case_closing(conn, actor, case)
        closed = self.cases.case(case.id)
        assert closed is not None
        return closed

    def list_cases(self, actor: Actor) -> list[CaseSummary]:
        """The organisation's cases, newest first, each with who opened it, its searches,
        confirmed leads and last activity."""
        self.authorise(actor, "cases.read", "case.list")
        return self.cases.case_summaries(actor.organisation_id)

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
        # A fused probe is the first photo's face (see _fused_probe).
        crops = self._probe_crops(photos[0], [p.box for p in probe_faces])
        groups = self._result_groups(
            [(r.probe_face, c.rank, c.face_id) for r in results for c in r.candidates], jurisdictions)
        with self.store.transaction() as conn:
            # Under the organisation's lock, count and record as one step: parallel searches
            # pass here one at a time, so no more than the limits are ever recorded.
            self.cases.lock_organisation(conn, case.organisation_id)
            over = self._over_rate(actor, case, conn)
            if over is None:
                search_id = self._record_search(conn, actor, case, photos, hashes, probe_faces,
                                                results, crops)
                return SearchResult(case.id, search_id, probe_sha, results, probe_photos=hashes,
                                    identities=groups.identities, photos=groups.photos,
                                    fusion=RULE if len(photos) > 1 else None)
        # Audited once the transaction has let the lock go (the audit takes it again).
        self._refuse_over_rate(actor, case, over)

    def _record_search(self, conn: Connection, actor: Actor, case: Case, photos: list[bytes],
                       hashes: list[str], probe_faces: list, results: list[ProbeResult],
                       crops: list[bytes]) -> int:
        """Store the search, its candidate list, its probe faces' crops and its audit record
        in conn's transaction (and the probe photos, where the case keeps them, each under its
        sha256 in the case's folder; the search's probe_path is the first's); the search's id.
        The faces searched are stored with it, so that its page states the expected strangers
        computed then, whatever the gallery's size later."""
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
            probe_photos=hashes, faces_searched=results[0].cut_off.faces if results else None,
            probe_quality=json.dumps([{"quality": asdict(r.quality), "warnings": r.quality_warnings,
                                       "bound": r.quality_bound} for r in results]))
        for candidate, candidate_id in zip((c for r in results for c in r.candidates), ids):
            candidate.candidate_id = candidate_id
        self.cases.add_probe_crops(conn, search_id, crops)
        self._audit(conn, actor, "search", {
            "search_id": search_id, "probe_sha256": hashes[0], "probe_photos": hashes,
            "fusion": RULE if len(hashes) > 1 else None, "probe_faces": len(probe_faces),
            "probe_kept": probe_path is not None,
            "results": [[[c.face_id, c.distance] for c in r.candidates] for r in results]}, case)
        return search_id

    def _probe_crops(self, photo: bytes, boxes: list[Box]) -> list[bytes]:
        """A small JPEG of each boxed face of the photo, with a margin (PROBE_CROP_MARGIN), at
        most PROBE_CROP_SIDE pixels on a side."""
        image = decode_for_analysis(photo, self.settings)  # as the faces were found: same boxes
        rows, columns = image.pixels.shape[:2]
        crops = []
        for box in boxes:
            margin = PROBE_CROP_MARGIN * max(box.width, box.height)
            left, top = (max(0, int((v - margin) / image.scale)) for v in (box.left, box.top))
            right = min(columns, math.ceil((box.right + margin) / image.scale))
            bottom = min(rows, math.ceil((box.bottom + margin) / image.scale))
            face, _ = downscale(np.ascontiguousarray(image.pixels[top:bottom, left:right]),
                                PROBE_CROP_SIDE)
            crops.append(encode_jpeg(face, quality=85))
        return crops

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

    def mark_candidate(self, actor: Actor, candidate_id: int, mark: str,
                       note: str = "") -> StoredCandidate:
        """Mark a candidate possible, confirmed (two-person rule, on live marks only) or
        rejected, with an optional note of at most MAX_NOTE_CHARS characters; an erased
        candidate is marked no more. The note stays in the case; since it may name people,
        the audit record says only that one was given."""
        self.authorise(actor, "candidates.mark", "candidate.mark")
        found = self.cases.candidate(candidate_id)
        case = self._own_case(actor, found[1] if found else -1, "candidate.mark")
        note = note.strip()
        if len(note) > MAX_NOTE_CHARS:
            raise InvalidRequest(f"a note holds at most {MAX_NOTE_CHARS} characters")
        refused: FacesearchError | None = None
        with self.store.transaction() as conn:
            # Decided on the marks as they stand under the candidate's lock: a withdrawal
            # made meanwhile cannot slip a confirmation past the two-person rule.
            candidate = self.cases.lock_candidate(conn, candidate_id)
            assert candidate is not None
            try:
                if candidate.erased_at:
                    raise InvalidRequest("this candidate was erased: it can no longer be marked")
                # A withdrawn mark counts for nothing: a withdrawn "possible" lets nobody confirm.
                check_mark(mark, actor.user_id, [(m.user_id, m.mark) for m in candidate.marks if m.live])
            except (Forbidden, InvalidRequest) as exc:
                refused = exc
            else:
                mark_id = self.cases.add_mark(conn, candidate_id=candidate_id, user_id=actor.user_id,
                                              actor=actor.name, mark=mark, at=self.now(), note=note)
                self._audit(conn, actor, "candidate.mark", {
                    "candidate_id": candidate_id, "face_id": candidate.face_id, "mark": mark,
                    "mark_id": mark_id, "note": bool(note)}, case)
        if refused is not None:
            self._audit_alone(actor, "candidate.mark.refused", {
                "reason": refused.message, "candidate_id": candidate_id, "mark": mark}, case)
            raise refused
        marked = self.cases.candidate(candidate_id)
        assert marked is not None
        return marked[0]

    def withdraw_mark(self, actor: Actor, candidate_id: int, mark_id: int) -> StoredCandidate:
        """Withdraw one's own live mark on a candidate: it stays in the record, struck
        through, and counts for nothing; the candidate's status is its latest live mark.
        Refused while a live confirmation rests on it (two-person rule): that is withdrawn first."""
        self.authorise(actor, "candidates.mark", "candidate.mark.withdraw")
        found = self.cases.candidate(candidate_id)
        case = self._own_case(actor, found[1] if found else -1, "candidate.mark.withdraw")
        refusal = ""
        with self.store.transaction() as conn:
            candidate = self.cases.lock_candidate(conn, candidate_id)
            assert candidate is not None
            mark = next((m for m in candidate.marks if m.id == mark_id), None)
            if mark is None:
                raise NotFound("the candidate has no such mark")
            if not mark.live:
                raise InvalidRequest("the mark was already withdrawn")
            if mark.user_id is None or mark.user_id != actor.user_id:
                refusal = "only the person who made a mark may withdraw it"
            elif _confirmation_resting_on(candidate.marks, mark_id):
                refusal = ("a confirmation by another investigator rests on this mark: "
                           "it must be withdrawn first")
            else:
                self.cases.withdraw_mark(conn, mark_id, actor.name, self.now())
                self._audit(conn, actor, "candidate.mark.withdraw", {
                    "candidate_id": candidate_id, "face_id": candidate.face_id,
                    "mark_id": mark_id, "mark": mark.mark}, case)
        if refusal:
            self._audit_alone(actor, "candidate.mark.withdraw.refused", {
                "reason": refusal, "candidate_id": candidate_id, "mark_id": mark_id}, case)
            raise Forbidden(refusal)
        marked = self.cases.candidate(candidate_id)
        assert marked is not None
        return marked[0]

    def case_report(self, actor: Actor, case_id: int) -> CaseReport:
        """Everything the case holds: its searches with their probe face crops, candidates
        (erased ones without their face) and who marked what when, with notes and withdrawals."""
        self.authorise(actor, "cases.read", "case.report")
        case = self._own_case(actor, case_id, "case.report")
        report = CaseReport(case, actor.organisation, self.now(), self.cases.searches(case.id))
        report.probe_crops = self.cases.probe_crops([s.id for s in report.searches])
        report.provenance = self._provenance([c for s in report.searches for c in s.candidates])
        jurisdictions = self._jurisdictions_of(case)
        report.photos = {s.id: self._result_groups(
            [(c.probe_face, c.rank, c.face_id) for c in s.candidates if not c.erased_at],
            jurisdictions).photos for s in report.searches}
        self._audit_alone(actor, "case.report", {"case_id": case.id}, case)
        return report

    def face_crop(self, actor: Actor, face_id: int, search_id: int | None = None) -> bytes:
        """A face's crop, for a gallery manager or for an organisation whose candidate lists
        hold that face; nobody else. search_id: the search whose candidate list it is viewed
        in, recorded with its case, so that the audit trail shows the views of one search
        together (and none of a search that does not list the face)."""
        case = None
        if search_id is not None:
            case_id = self.cases.case_listing(face_id, search_id, actor.organisation_id)
            case = self.cases.case(case_id) if case_id is not None else None
            listed = case is not None
        else:
            listed = self.cases.face_listed_for(face_id, actor.organisation_id)
        if not (allowed(actor.role, "faces.read_any") or (allowed(actor.role, "cases.read") and listed)):
            self._audit_alone(actor, "face.crop.refused", {"reason": "face not in your cases",
                                                           "face_id": face_id})
            raise Forbidden("you are not permitted to do this")
        rows = self.store.candidate_rows([face_id])
        if face_id not in rows:
            raise NotFound("the face has been erased")
        data = self.crops.path(rows[face_id]["crop_path"]).read_bytes()
        self._audit_alone(actor, "face.crop", {"face_id": face_id, **(
            {"search_id": search_id} if case else {})}, case)
        return data

    def probe_crop(self, actor: Actor, case_id: int, search_id: int, probe_face: int) -> bytes:
        """The stored crop (JPEG) of a search's probe face, for those who may read its case."""
        self.authorise(actor, "cases.read", "probe.crop")
        case = self._own_case(actor, case_id, "probe.crop")
        data = self.cases.probe_crop(case.id, search_id, probe_face)
        if data is None:
            raise NotFound("no crop of that probe face in this case")
        self._audit_alone(actor, "probe.crop", {"case_id": case.id, "search_id": search_id,
                                                "probe_face": probe_face}, case)
        return data

    def search_review(self, actor: Actor, case_id: int, search_id: int) -> SearchReview:
        """grouped_search (same authorisation and audit) with what its page shows besides:
        provenance in words, the probe crops kept and the sources' display names."""
        case, search, groups = self.grouped_search(actor, case_id, search_id)
        return SearchReview(case, search, groups, self._provenance(search.candidates),
                            {n for _, n in self.cases.probe_crops([search.id])},
                            self._display_names())

    def compare_candidate(self, actor: Actor, case_id: int, search_id: int,
                          candidate_id: int) -> Comparison:
        """A candidate of a case's search with its provenance and the facts of its source
        image as stored: the face's box, the image's size, and whether the whole image is
        withheld. Nothing is fetched: the page asks source_image for the image itself.
        Audited as reading the case."""
        case, found = self.case_searches(actor, case_id, search_id)
        candidate = next((c for c in found[0].candidates if c.id == candidate_id), None)
        if candidate is None:
            raise NotFound("no such candidate in this search")
        if candidate.erased_at:
            return Comparison(case, found[0], candidate, None, None)
        compared = Comparison(case, found[0], candidate, self._provenance([candidate])[candidate.id],
                              None)
        compared.probe_crop_kept = (found[0].id, candidate.probe_face) in self.cases.probe_crops([found[0].id])
        face = self.store.candidate_rows([candidate.face_id]).get(candidate.face_id)
        image = self.cases.images_by_sha([candidate.image_sha256]).get(candidate.image_sha256)
        if face is not None and image is not None:
            compared.box = Box(face["box_left"], face["box_top"], face["box_right"], face["box_bottom"])
            compared.width, compared.height = image["width"], image["height"]
            compared.withheld = image["withheld_faces"] > 0
        return compared

    def source_image(self, actor: Actor, case_id: int, search_id: int, candidate_id: int) -> bytes:
        """A candidate's full source image as a JPEG (at most SOURCE_IMAGE_SIDE pixels on a
        side), read from where it was collected: a local file or its URL (fetched once, like
        the crawler fetches: address checks, byte and time limits), only if its bytes still
        have the sha256 indexed. facesearch keeps face crops, not images, so an image moved,
        changed or taken down is no longer available. Refused for an image that shows
        someone withheld (suppressed at ingest, erased or opted out since). Audited (image.view)."""
        self.authorise(actor, "cases.read", "image.view")
        case = self._own_case(actor, case_id, "image.view")
        found = self.cases.searches(case.id, search_id)
        candidate = next((c for s in found for c in s.candidates if c.id == candidate_id), None)
        if candidate is None or candidate.erased_at:
            raise NotFound("no such candidate in this search, or it was erased")
        image = self.cases.images_by_sha([candidate.image_sha256]).get(candidate.image_sha256)
        if image and image["withheld_faces"] > 0:
            self._refuse(actor, "image.view", WITHHELD_IMAGE, case)
        data = self._original_image(image["location"], candidate.image_sha256) if image else None
        shown = None
        if data:
            try:
                decoded = decode(data, max_pixels=self.settings.max_image_pixels,
                                 max_bytes=self.settings.max_image_bytes,
                                 reduce_to=SOURCE_IMAGE_SIDE)
                shown = encode_jpeg(downscale(decoded.pixels, SOURCE_IMAGE_SIDE)[0], quality=85)
            except BadImage:
                shown = None
        self._audit_alone(actor, "image.view", {
            "case_id": case.id, "search_id": search_id, "candidate_id": candidate_id,
            "image_sha256": candidate.image_sha256, "available": shown is not None}, case)
        if shown is None:
            raise NotFound("the original image is no longer available at its source")
        return shown

    def _original_image(self, location: str, sha256: str) -> bytes | None:
        """The image's bytes as its location serves them now, if they still hash to sha256:
        a readable local file (absolute path), or an http(s) URL fetched with the crawler's
        guarded fetcher. None otherwise: gone, changed, too large or refused."""
        s = self.settings
        data: bytes | None = None
        if location.startswith(("http://", "https://")):
            url = normalise_url(location)
            if url is None:
                return None

            async def fetched() -> bytes:
                async with httpx.AsyncClient(
                        headers={"User-Agent": s.crawl_user_agent},
                        transport=guarded_transport(parse_networks(s.crawl_allowed_networks))) as client:
                    limits = FetchLimits(min(s.crawl_max_bytes, s.max_image_bytes),
                                         s.crawl_max_redirects, s.crawl_timeout_seconds)
                    return (await fetch(client, url, limits)).body
            try:
                data = asyncio.run(fetched())
            except FetchRefused:
                return None
        else:
            path = Path(location)
            try:
                if path.is_absolute() and path.is_file() and path.stat().st_size <= s.max_image_bytes:
                    data = path.read_bytes()
            except OSError:
                return None
        return data if data and hashlib.sha256(data).hexdigest() == sha256 else None

    def _display_names(self) -> dict[str, str]:
        """Each source's name -> what people are shown (its display name, else its name)."""
        return {s.name: s.display_name or s.name for s in self.store.sources()}

    def _provenance(self, candidates: list[StoredCandidate]) -> dict[int, Provenance]:
        """Each unerased candidate's provenance in words, by candidate id."""
        shown = [c for c in candidates if not c.erased_at]
        names = self._display_names()
        images = self.cases.images_by_sha([c.image_sha256 for c in shown])
        return {c.id: Provenance(
            names.get(c.source, c.source),
            readable_place(c.location, images.get(c.image_sha256, {}).get("provenance")),
            c.page_url, c.location if c.location.startswith(("http://", "https://")) else None)
            for c in shown}


def readable_place(location: str, provenance: dict | None = None) -> str:
    """Where an image was collected, in words and without a server path: its URL, "uploaded
    file NAME" (the name it was uploaded with, where provenance records it), or "file NAME
    on the server" for a file ingested from the server's disk."""
    if location.startswith(("http://", "https://")) or not location:
        return location
    if location.startswith(UPLOAD_PREFIX):
        name = (provenance or {}).get("file_name") or location.rsplit("/", 1)[-1]
        return f"uploaded file {name}"
    return f"file {PurePath(location).name} on the server"


def _confirmation_resting_on(marks: list[Mark], mark_id: int) -> bool:
    """Whether a live "confirmed" would break the two-person rule (check_mark) were mark_id
    withdrawn: each is checked against the live marks before it, without that one."""
    kept = [m for m in marks if m.live and m.id != mark_id]
    for confirmation in (m for m in kept if m.mark == "confirmed"):
        try:
            check_mark("confirmed", confirmation.user_id,
                       [(m.user_id, m.mark) for m in kept if m.id < confirmation.id])
        except Forbidden:
            return True
    return False


def _candidate_row(probe_face: int, c) -> dict:  # noqa: ANN001 - a types.Candidate
    return {"probe_face": probe_face, "rank": c.rank, "face_id": c.face_id, "distance": c.distance,
            "false_match_probability": c.false_match_probability, "image_sha256": c.image_sha256,
            "location": c.location, "page_url": c.page_url, "source": c.source,
            "jurisdiction": c.jurisdiction, "collected_at": c.collected_at,
            "expected_false_matches": c.expected_false_matches}
