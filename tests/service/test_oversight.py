"""The oversight pages' use cases: who creates auditors and data-protection officers, the audit
trail a page at a time with crop views grouped, erasure notices one per search, and ingest
jobs that count and list their skipped files by reason."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from facesearch.config import Settings
from facesearch.errors import Forbidden
from facesearch.policy.roles import ROLES
from facesearch.service import AuditFilter, FaceSearchService, days_in_words, record_in_words
from tests.conftest import OPERATOR, jpeg_bytes, lfw_photos, log_in, noise_image
from tests.service.test_accounts_and_cases import PASSWORD, Clock, people
from tests.service.test_background_jobs import wait_until

PERSON, OTHER, HIDDEN = "Al_Sharpton", "Abdullah_Gul", "Colin_Powell"
OPERATORS = "Operator Org"


@pytest.fixture
def svc(tmp_path: Path):
    # Every indexed face within the cut-off, so that each search lists the whole gallery.
    service = FaceSearchService(Settings(home=tmp_path / "data", workers=1, search_false_matches=1e9,
                                         false_match_ceiling=1.0,
                                         deployment_organisation=OPERATORS), Clock())
    yield service
    service.close()


def test_an_admin_of_the_operators_organisation_creates_officers_and_auditors_and_an_agencys_cannot(
        svc: FaceSearchService) -> None:
    team = people(svc)  # ada: an admin of the agency "Org"
    svc.create_user(OPERATOR, "opa", PASSWORD, "admin", OPERATORS)
    opa = log_in(svc, "opa", PASSWORD)[0]
    assert svc.roles_creatable_by(opa) == ROLES
    for name, role in (("dora", "dpo"), ("otto", "auditor")):
        made = svc.create_user(opa, name, PASSWORD, role, OPERATORS)
        assert (made.role, made.organisation, made.status) == (role, OPERATORS, "active")
    # Still in their own organisation only.
    with pytest.raises(Forbidden):
        svc.create_user(opa, "olga", PASSWORD, "dpo", "Org")

    ada = team["ada"]
    assert set(svc.roles_creatable_by(ada)) == set(ROLES) - {"auditor", "dpo"}
    for role in ("dpo", "auditor"):
        with pytest.raises(Forbidden, match="operator's own organisation"):
            svc.create_user(ada, f"x{role}", PASSWORD, role, "Org")
        refusal = svc.trail.records()[-1]
        assert refusal["action"] == "user.create.refused" and refusal["detail"]["role"] == role
    assert svc.accounts.user(username="xdpo") is None


def test_with_no_deployment_organisation_only_the_operator_creates_officers(tmp_path: Path) -> None:
    service = FaceSearchService(Settings(home=tmp_path / "data", workers=1))
    try:
        service.create_user(OPERATOR, "opa", PASSWORD, "admin", OPERATORS)
        opa = log_in(service, "opa", PASSWORD)[0]
        assert "dpo" not in service.roles_creatable_by(opa)
        with pytest.raises(Forbidden):
            service.create_user(opa, "dora", PASSWORD, "dpo", OPERATORS)
        assert service.create_user(OPERATOR, "dora", PASSWORD, "dpo", OPERATORS).role == "dpo"
    finally:
        service.close()


def test_the_audit_trail_reads_newest_first_a_page_at_a_time_with_its_filters_kept(
        svc: FaceSearchService) -> None:
    team = people(svc)
    made = [svc.create_api_key(team["ivy"], f"key {n}")[0].id for n in range(7)]
    svc.create_api_key(team["ian"], "between")  # filtered out: another user
    auditor_user = svc.create_user(OPERATOR, "aud", PASSWORD, "auditor", OPERATORS)
    auditor = log_in(svc, auditor_user.username, PASSWORD)[0]
    where = AuditFilter(actor="ivy", action="api_key.create")

    first = svc.audit_page(auditor, where, size=3)
    keys = [r["detail"]["key_id"] for r in first.entries]
    assert keys == made[::-1][:3]  # newest first
    assert first.newer is None and first.older == first.entries[-1]["id"]

    second = svc.audit_page(auditor, replace(where, before=first.older), size=3)
    assert [r["detail"]["key_id"] for r in second.entries] == made[::-1][3:6]
    assert all(r["actor"] == "ivy" for r in second.entries)
    last = svc.audit_page(auditor, replace(where, before=second.older), size=3)
    assert [r["detail"]["key_id"] for r in last.entries] == made[:1] and last.older is None

    # Back to newer: the page just after the cursor, newest first.
    back = svc.audit_page(auditor, replace(where, after=second.newer), size=3)
    assert [r["id"] for r in back.entries] == [r["id"] for r in first.entries]
    assert back.newer is None


def test_views_of_one_searchs_crops_read_as_one_line_of_the_audit_page(
        svc: FaceSearchService, tmp_path: Path) -> None:
    team = people(svc)
    svc.add_source(OPERATOR, "lfw", "public_task", "US")
    svc.ingest(OPERATOR, lfw_photos(PERSON)[1:3] + lfw_photos(OTHER)[:2], "lfw")
    case = svc.open_case(team["ivy"], "AU-1", "missing person", offence_type="robbery")
    search = svc.search(team["ivy"], case.id, lfw_photos(PERSON)[0].read_bytes())
    listed = svc.case_searches(team["ivy"], case.id, search.search_id)[1][0].candidates
    for candidate in listed[:3]:
        svc.face_crop(team["ivy"], candidate.face_id, search.search_id)
    svc.face_crop(team["ivy"], listed[0].face_id)  # no search named: a line of its own
    with pytest.raises(Forbidden):  # a search that does not list the face names nothing
        svc.face_crop(team["ivy"], listed[0].face_id, search.search_id + 1)

    svc.create_user(OPERATOR, "aud", PASSWORD, "auditor", OPERATORS)
    auditor = log_in(svc, "aud", PASSWORD)[0]
    page = svc.audit_page(auditor, AuditFilter(action="face.crop"))
    grouped = [e for e in page.entries if not isinstance(e, dict)]
    assert len(grouped) == 1 and grouped[0].search_id == search.search_id
    assert [r["detail"]["face_id"] for r in grouped[0].records] == [c.face_id for c in listed[:3]][::-1]
    assert all(r["case_number"] == "AU-1" for r in grouped[0].records)
    alone = [e for e in page.entries if isinstance(e, dict)]
    assert len(alone) == 1 and "search_id" not in alone[0]["detail"]


def test_erasure_notices_come_one_per_search_newest_first_naming_the_marked_candidates(
        svc: FaceSearchService) -> None:
    team = people(svc)
    svc.add_source(OPERATOR, "lfw", "public_task", "US")
    svc.ingest(OPERATOR, lfw_photos(PERSON)[1:4] + lfw_photos(OTHER)[:2], "lfw")
    case = svc.open_case(team["ivy"], "ER-1", "missing person", offence_type="robbery")
    searches = [svc.search(team["ivy"], case.id, lfw_photos(PERSON)[0].read_bytes()).search_id
                for _ in range(2)]
    first = svc.case_searches(team["ivy"], case.id, searches[0])[1][0].candidates
    person = [c for c in first if c.face_id in _faces_of(svc, PERSON)]
    assert len(person) == 3
    svc.mark_candidate(team["ivy"], person[0].id, "possible")
    svc.mark_candidate(team["ian"], person[0].id, "confirmed")
    svc.mark_candidate(team["ivy"], person[1].id, "possible")
    svc.take_notifications(team["ivy"])  # nothing before the erasure
    for photo in lfw_photos(PERSON)[1:4]:  # three erasures, one image each
        svc.delete(OPERATOR, image=str(photo.resolve()))

    notices = svc.take_notifications(team["ivy"])
    assert len(notices) == 2  # one per search, not one per candidate
    assert [n.message.split(" in case")[0] for n in notices] == [
        f"Search {searches[1]}", f"Search {searches[0]}"]  # newest first
    ranks = [c.rank for c in person]
    assert notices[1].message == (
        f"Search {searches[0]} in case ER-1: 2 marked candidates (#{ranks[0]} confirmed, "
        f"#{ranks[1]} possible match) and 1 other candidate (#{ranks[2]}) were erased by "
        "2026-01-05; they no longer appear in the case.")
    assert PERSON not in notices[0].message and "lfw" not in notices[0].message
    assert svc.take_notifications(team["ivy"]) == []  # handed over once


def _faces_of(svc: FaceSearchService, person: str) -> set[int]:
    with svc.store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT faces.id, images.location FROM faces JOIN images ON images.id = faces.image_id"
        ).all()
    return {face_id for face_id, location in rows if f"/{person}/" in location}


def test_an_ingest_job_counts_its_skipped_files_by_reason_and_lists_them(
        svc: FaceSearchService, tmp_path: Path) -> None:
    team = people(svc)
    svc.add_source(OPERATOR, "lfw", "public_task", "US")
    svc.suppress(OPERATOR, lfw_photos(HIDDEN)[0].read_bytes(), "opted out")
    photo = lfw_photos(PERSON)[1].read_bytes()
    uploads = [("notes.txt", b"not a photo at all"), ("noise.jpg", jpeg_bytes(noise_image(200, 200))),
               ("person.jpg", photo), ("copy.jpg", photo),
               ("hidden.jpg", lfw_photos(HIDDEN)[1].read_bytes())]
    job = svc.start_ingest_job(team["ada"], "lfw", uploads=uploads)
    wait_until(lambda: svc.ingest_jobs(team["ada"], job.id)[0].status not in ("queued", "running"), 120)
    done = svc.ingest_jobs(team["ada"], job.id)[0]
    assert done.status == "done", done.error
    assert done.progress["skipped_by_reason"] == {"not an image": 1, "no face": 1, "duplicate": 1,
                                                  "suppressed person": 1}
    assert sorted((f["file"], f["reason"]) for f in done.progress["skipped_files"]) == [
        ("copy.jpg", "duplicate"), ("hidden.jpg", "suppressed person"), ("noise.jpg", "no face"),
        ("notes.txt", "not an image")]


def test_the_skipped_list_is_bounded_but_every_file_is_counted(
        svc: FaceSearchService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facesearch.service import engine

    monkeypatch.setattr(engine, "SKIPPED_FILES_KEPT", 2)
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(4):
        (folder / f"note-{n}.txt").write_text(f"not a photo {n}")
    shutil.copy(lfw_photos(PERSON)[1], folder / "good.jpg")
    svc.add_source(OPERATOR, "lfw", "public_task", "US")
    summary = svc.ingest(OPERATOR, [folder], "lfw")
    assert summary.skipped_by_reason == {"not an image": 4}
    assert [Path(location).name for location, _ in summary.skipped_files] == ["note-0.txt", "note-1.txt"]


def test_policy_reads_in_words_and_units(svc: FaceSearchService) -> None:
    assert [days_in_words(d) for d in (1, 30, 365, 1095, 700)] == [
        "1 day", "30 days", "1 year", "3 years", "700 days (about 1.9 years)"]
    svc.add_source(OPERATOR, "press", "legitimate_interests", "DE", retention_days=365)
    record = record_in_words(svc.record_of_processing(OPERATOR))
    assert record["sources"] == ["press: legitimate interests (GDPR Art. 6(1)(f)), jurisdiction DE, "
                                 "images kept 1 year"]
    assert record["retention"]["kept_probes"] == "30 days"
    assert record["retention"]["sessions"].endswith("hours")
