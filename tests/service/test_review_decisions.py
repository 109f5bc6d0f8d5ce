"""Review decisions in a case: notes, withdrawn marks (which count for nothing, the two-person
rule included), a face's rejection carried into the case's other searches, review history that
outlives erasure; case intake with an offence type, the case list, closing, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import insert

from facesearch.config import Settings
from facesearch.errors import Forbidden, InvalidRequest, PolicyRefused
from facesearch.service import MAX_NOTE_CHARS, FaceSearchService
from facesearch.store.schema import probe_crops
from tests.conftest import LFW, OPERATOR, lfw_photos
from tests.service.test_accounts_and_cases import Clock, people

# People with at least five photos: 1-3 are the gallery, 0 and 4 two probes of the same person.
PEOPLE = [p.name for p in sorted((LFW / "images").iterdir())
          if len(list(p.glob("*.jpg"))) >= 5][:3]


@pytest.fixture(scope="module")
def world(tmp_path_factory, lfw: Path) -> tuple[FaceSearchService, dict, Clock]:
    clock = Clock()
    svc = FaceSearchService(Settings(home=tmp_path_factory.mktemp("review") / "data", workers=1),
                            clock)
    team = people(svc)
    svc.add_source(OPERATOR, "lfw", "legitimate_interests", "US")
    svc.ingest(OPERATOR, [photo for name in PEOPLE for photo in lfw_photos(name)[1:4]], "lfw")
    yield svc, team, clock
    svc.close()


def opened(svc: FaceSearchService, team: dict, number: str):
    return svc.open_case(team["ivy"], number, "missing person", offence_type="robbery")


def top_candidate(svc: FaceSearchService, team: dict, case_id: int, photo: int = 0):
    """The first candidate of a search of PEOPLE[0]'s photo, as stored in the case."""
    result = svc.search(team["ivy"], case_id, lfw_photos(PEOPLE[0])[photo].read_bytes(),
                        top_k=3, face="largest")
    return stored(svc, team, case_id, result.search_id)[0]


def stored(svc: FaceSearchService, team: dict, case_id: int, search_id: int):
    return svc.case_searches(team["ivy"], case_id, search_id)[1][0].candidates


def test_a_withdrawn_possible_lets_nobody_confirm(world) -> None:
    svc, team, clock = world
    case = opened(svc, team, "W-1")
    candidate = top_candidate(svc, team, case.id)
    ivy, ian = team["ivy"], team["ian"]
    possible = svc.mark_candidate(ivy, candidate.id, "possible").marks[-1]
    with pytest.raises(Forbidden, match="only the person who made a mark"):
        svc.withdraw_mark(ian, candidate.id, possible.id)
    assert svc.trail.records()[-1]["action"] == "candidate.mark.withdraw.refused"
    clock.advance(seconds=5)
    withdrawn = svc.withdraw_mark(ivy, candidate.id, possible.id)
    assert withdrawn.status == "unreviewed"
    assert withdrawn.marks[0].withdrawn_by == "ivy" and withdrawn.marks[0].withdrawn_at
    record = svc.trail.records()[-1]
    assert record["action"] == "candidate.mark.withdraw"
    assert record["detail"]["mark_id"] == possible.id and record["detail"]["mark"] == "possible"
    with pytest.raises(InvalidRequest, match="already withdrawn"):
        svc.withdraw_mark(ivy, candidate.id, possible.id)

    # The withdrawn "possible" is still in the record, but it lets nobody confirm.
    with pytest.raises(Forbidden, match="second investigator"):
        svc.mark_candidate(ian, candidate.id, "confirmed")
    svc.mark_candidate(ivy, candidate.id, "possible")
    confirmed = svc.mark_candidate(ian, candidate.id, "confirmed")
    assert confirmed.status == "confirmed"
    assert [(m.mark, m.live) for m in confirmed.marks] == [
        ("possible", False), ("possible", True), ("confirmed", True)]


def test_a_candidates_status_is_its_latest_live_mark(world) -> None:
    svc, team, _ = world
    case = opened(svc, team, "W-2")
    candidate = top_candidate(svc, team, case.id)
    svc.mark_candidate(team["ivy"], candidate.id, "possible")
    rejected = svc.mark_candidate(team["ivy"], candidate.id, "rejected").marks[-1]
    assert svc.withdraw_mark(team["ivy"], candidate.id, rejected.id).status == "possible"


def test_a_rejected_face_reads_as_rejected_in_later_searches_of_its_case_only(world) -> None:
    svc, team, clock = world
    case, other = opened(svc, team, "C-1"), opened(svc, team, "C-2")
    first = top_candidate(svc, team, case.id)
    rejection = svc.mark_candidate(team["ivy"], first.id, "rejected", "different ear shape").marks[-1]
    clock.advance(minutes=1)

    later = next(c for c in top_candidates(svc, team, case.id, photo=4) if c.face_id == first.face_id)
    assert later.status == "unreviewed" and later.decision == "rejected"
    assert later.case_mark.search_id == first.search_id
    assert later.case_mark.candidate_id == first.id
    assert (later.case_mark.mark.actor, later.case_mark.mark.note) == ("ivy", "different ear shape")
    elsewhere = next(c for c in top_candidates(svc, team, other.id) if c.face_id == first.face_id)
    assert elsewhere.case_mark is None and elsewhere.decision == "unreviewed"

    # Withdrawn, the rejection is carried no more; the latest live mark anywhere in the case is.
    svc.withdraw_mark(team["ivy"], first.id, rejection.id)
    assert stored(svc, team, case.id, later.search_id)[0].case_mark is None
    svc.mark_candidate(team["ian"], later.id, "possible")
    assert stored(svc, team, case.id, first.search_id)[0].decision == "possible"


def top_candidates(svc: FaceSearchService, team: dict, case_id: int, photo: int = 0):
    result = svc.search(team["ivy"], case_id, lfw_photos(PEOPLE[0])[photo].read_bytes(),
                        top_k=3, face="largest")
    return stored(svc, team, case_id, result.search_id)


def test_a_note_stays_in_the_case_and_the_audit_record_says_only_that_one_was_given(world) -> None:
    svc, team, _ = world
    case = opened(svc, team, "N-1")
    candidate = top_candidate(svc, team, case.id)
    with pytest.raises(InvalidRequest, match=f"at most {MAX_NOTE_CHARS}"):
        svc.mark_candidate(team["ivy"], candidate.id, "possible", "x" * (MAX_NOTE_CHARS + 1))
    note = "seen with Jane Roe at the station"
    marked = svc.mark_candidate(team["ivy"], candidate.id, "possible", f"  {note} ")
    assert marked.marks[-1].note == note
    record = svc.trail.records()[-1]
    assert record["action"] == "candidate.mark" and record["detail"]["note"] is True
    assert "Jane Roe" not in json.dumps(record)


def test_an_erased_candidate_keeps_its_review_history_without_the_face(world) -> None:
    svc, team, _ = world
    case = opened(svc, team, "E-1")
    candidate = top_candidate(svc, team, case.id, photo=4)
    svc.mark_candidate(team["ivy"], candidate.id, "possible", "worth a look")
    svc.mark_candidate(team["ian"], candidate.id, "confirmed")
    svc.delete(OPERATOR, face_id=candidate.face_id)

    erased = stored(svc, team, case.id, candidate.search_id)[0]
    assert erased.id == candidate.id and erased.erased_at and erased.location == ""
    # Who marked what, when stays; the note, which may describe the person, goes with the face.
    assert [(m.mark, m.actor, m.note) for m in erased.marks] == [
        ("possible", "ivy", ""), ("confirmed", "ian", "")]
    report = svc.case_report(team["ivy"], case.id)
    assert report.counts == {"searches": 1, "candidates": len(report.searches[0].candidates),
                             "possible": 0, "confirmed": 1, "rejected": 0, "erased": 1}
    assert report.searches[0].candidates[0].marks[0].note == ""

    # An erased candidate is marked no more, whatever the front end.
    with pytest.raises(InvalidRequest, match="erased: it can no longer be marked"):
        svc.mark_candidate(team["ivy"], candidate.id, "rejected", "gone")
    record = svc.trail.records()[-1]
    assert record["action"] == "candidate.mark.refused" and record["detail"]["candidate_id"] == candidate.id
    assert len(svc.cases.candidate(candidate.id)[0].marks) == 2


def test_a_possible_that_a_confirmation_rests_on_is_not_withdrawn_before_it(world) -> None:
    svc, team, _ = world
    case = opened(svc, team, "W-3")
    candidate = top_candidate(svc, team, case.id)
    ivy, ian = team["ivy"], team["ian"]
    possible = svc.mark_candidate(ivy, candidate.id, "possible").marks[-1]
    confirmation = svc.mark_candidate(ian, candidate.id, "confirmed").marks[-1]
    with pytest.raises(Forbidden, match="a confirmation by another investigator rests on this mark"):
        svc.withdraw_mark(ivy, candidate.id, possible.id)
    record = svc.trail.records()[-1]
    assert record["action"] == "candidate.mark.withdraw.refused"
    assert record["detail"]["mark_id"] == possible.id
    kept = svc.cases.candidate(candidate.id)[0]
    assert kept.status == "confirmed" and all(m.live for m in kept.marks)

    # The confirmation withdrawn first, the possible may go: nobody's word stands alone.
    assert svc.withdraw_mark(ian, candidate.id, confirmation.id).status == "possible"
    assert svc.withdraw_mark(ivy, candidate.id, possible.id).status == "unreviewed"


def test_a_case_needs_an_offence_type_of_the_list(world) -> None:
    svc, team, _ = world
    with pytest.raises(InvalidRequest, match="offence or incident type must be one of: homicide"):
        svc.open_case(team["ivy"], "O-1", "missing person", offence_type="jaywalking")
    case = svc.open_case(team["ivy"], "O-1", "missing person", offence_type="fraud")
    assert case.offence_type == "fraud"
    assert svc.trail.records()[-1]["detail"]["offence_type"] == "fraud"


def test_the_case_list_counts_and_closing_records_who_and_when(world) -> None:
    svc, team, clock = world
    case = opened(svc, team, "L-1")
    candidate = top_candidate(svc, team, case.id)
    clock.advance(minutes=1)
    svc.mark_candidate(team["ivy"], candidate.id, "possible")
    clock.advance(minutes=1)
    svc.mark_candidate(team["ian"], candidate.id, "confirmed")
    clock.advance(minutes=1)
    rejected = svc.mark_candidate(team["ivy"], candidate.id, "rejected").marks[-1]
    assert next(s for s in svc.list_cases(team["sam"]) if s.case.id == case.id).confirmed_leads == 0
    clock.advance(minutes=1)
    svc.withdraw_mark(team["ivy"], candidate.id, rejected.id)  # confirmed again, and the latest act
    clock.advance(minutes=3)
    summary = next(s for s in svc.list_cases(team["sam"]) if s.case.id == case.id)
    assert (summary.opened_by_name, summary.searches, summary.confirmed_leads) == ("ivy", 1, 1)
    assert summary.last_activity == svc.cases.candidate(candidate.id)[0].marks[-1].withdrawn_at
    assert summary.last_activity > rejected.at

    closed = svc.close_case(team["ian"], case.id)
    assert (closed.status, closed.closed_by, closed.closed_at) == ("closed", "ian", svc.now())
    with pytest.raises(PolicyRefused, match="already closed"):
        svc.close_case(team["ivy"], case.id)
    assert svc.cases.case(case.id).closed_by == "ian"  # the refusal changed nothing


def test_the_report_reads_the_probe_crops_stored_with_its_searches(world) -> None:
    svc, team, _ = world
    case = opened(svc, team, "P-1")
    candidate = top_candidate(svc, team, case.id)
    with svc.store.transaction() as conn:  # a face number no search of this probe has
        conn.execute(insert(probe_crops).values(search_id=candidate.search_id, probe_face=7,
                                                jpeg=b"\xff\xd8crop"))
    assert svc.case_report(team["ivy"], case.id).probe_crops[(candidate.search_id, 7)] == b"\xff\xd8crop"
