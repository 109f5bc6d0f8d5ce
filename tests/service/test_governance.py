"""Retention, purge, erasure propagation, access-request deadlines and jurisdiction limits,
through the service with an injected clock."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from facesearch.config import Settings
from facesearch.errors import InvalidRequest, PolicyRefused
from facesearch.service import FaceSearchService
from tests.conftest import OPERATOR, lfw_photos
from tests.service.test_accounts_and_cases import PASSWORD, Clock, people

# Two people per source: photo 1 and 2 indexed, photo 0 the probe.
NEAR, FAR = ["Al_Sharpton", "Alastair_Campbell"], ["Albert_Costa", "Alec_Baldwin"]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(tmp_path, clock: Clock):
    service = FaceSearchService(Settings(home=tmp_path / "data", workers=1), clock)
    yield service
    service.close()


def gallery(svc: FaceSearchService) -> dict:
    """A short-lived source (10 days, US) and a default one (three years, FR), with faces."""
    svc.add_source(OPERATOR, "short", "public_task", "US", retention_days=10)
    svc.add_source(OPERATOR, "long", "public_task", "FR")
    svc.ingest(OPERATOR, [p for n in NEAR for p in lfw_photos(n)[1:3]], "short")
    svc.ingest(OPERATOR, [p for n in FAR for p in lfw_photos(n)[1:3]], "long")
    return people(svc)


def faces_of(svc: FaceSearchService, jurisdiction: str) -> list[tuple[int, str]]:
    with svc.store.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT faces.id, faces.crop_path FROM faces JOIN images ON images.id = faces.image_id "
            "WHERE images.jurisdiction = ?", (jurisdiction,))]


def indexed_ids(svc: FaceSearchService) -> set[int]:
    return set(svc.index.all_vectors()[0].tolist())


def test_retention_removes_exactly_what_is_past_its_date(svc: FaceSearchService, clock: Clock) -> None:
    team = gallery(svc)
    case = svc.open_case(team["ivy"], "K-1", "missing person", keep_probes=True)
    svc.search(team["ivy"], case.id, lfw_photos(FAR[0])[0].read_bytes())
    us, fr = faces_of(svc, "US"), faces_of(svc, "FR")
    assert len(us) == 4 and len(fr) == 4
    probes = list(svc.settings.probes_dir.rglob("*"))

    clock.advance(days=9)
    assert svc.run_retention(OPERATOR).images == 0  # nothing is past its date yet

    clock.advance(days=2)  # day 11: the short source is past its 10 days; the kept probe is not
    report = svc.run_retention(OPERATOR)
    assert (report.images, report.faces, report.probes, report.searches) == (4, 4, 0, 0)
    assert faces_of(svc, "US") == [] and faces_of(svc, "FR") == fr
    assert not any(svc.crops.path(crop).exists() for _, crop in us)
    assert all(svc.crops.path(crop).exists() for _, crop in fr)
    assert indexed_ids(svc) == {face_id for face_id, _ in fr}

    clock.advance(days=20)  # day 31: the kept probe is past 30 days, its search is not
    report = svc.run_retention(OPERATOR)
    assert (report.images, report.probes, report.searches) == (0, 1, 0)
    assert probes and not any(p.is_file() and p.exists() for p in probes)
    assert len(svc.cases.searches(case.id)) == 1

    clock.advance(days=2 * 365)  # the search and its candidate list are past two years
    assert svc.run_retention(OPERATOR).searches == 1
    assert svc.cases.searches(case.id) == [] and faces_of(svc, "FR") == fr

    clock.advance(days=6 * 365 + 1)  # every record so far is past the audit retention
    before = len(list(svc.trail.chain()))
    pruned = svc.run_retention(OPERATOR).audit_records
    assert pruned == before  # all earlier records; the run's own record is new
    assert svc.verify_audit(OPERATOR).intact
    assert faces_of(svc, "FR") == []  # three years after collection, the long source too


def test_a_purge_leaves_no_face_crop_or_vector_of_the_jurisdiction(svc: FaceSearchService) -> None:
    team = gallery(svc)
    fr = faces_of(svc, "FR")
    report = svc.purge_jurisdiction(OPERATOR, "fr")
    assert (report.images, report.faces) == (4, 4)
    assert faces_of(svc, "FR") == []
    assert not any(svc.crops.path(crop).exists() for _, crop in fr)
    assert indexed_ids(svc).isdisjoint(face_id for face_id, _ in fr)
    reloaded = FaceSearchService(svc.settings)  # and from the saved index too
    try:
        assert indexed_ids(reloaded).isdisjoint(face_id for face_id, _ in fr)
    finally:
        reloaded.close()
    case = svc.open_case(team["ivy"], "P-1", "missing person")
    found = svc.search(team["ivy"], case.id, lfw_photos(FAR[0])[0].read_bytes())
    assert all(c.jurisdiction != "FR" for f in found.faces for c in f.candidates)


def test_an_erased_candidate_leaves_the_case_and_its_investigator_is_told_once(
        svc: FaceSearchService, clock: Clock) -> None:
    team = gallery(svc)
    case = svc.open_case(team["ivy"], "E-1", "missing person")
    found = svc.search(team["ivy"], case.id, lfw_photos(NEAR[0])[0].read_bytes(), face="largest")
    top = found.faces[0].candidates[0]
    clock.advance(hours=1)
    svc.delete(OPERATOR, face_id=top.face_id)
    _, searches = svc.case_searches(team["ivy"], case.id)
    erased = next(c for c in searches[0].candidates if c.face_id == top.face_id)
    assert erased.erased_at == clock.now.isoformat(timespec="seconds")
    assert (erased.location, erased.source, erased.image_sha256) == ("", "", "")
    others = [c for c in searches[0].candidates if c.face_id != top.face_id]
    assert all(c.location and c.erased_at is None for c in others)
    notices = svc.take_notifications(team["ivy"])
    assert len(notices) == 1 and "case E-1" in notices[0].message and "erased" in notices[0].message
    assert svc.take_notifications(team["ivy"]) == []  # told once
    assert svc.take_notifications(team["ian"]) == []  # ian received nothing


def test_access_requests_are_due_in_a_month_extendable_once_and_flagged_when_overdue(
        svc: FaceSearchService, clock: Clock) -> None:
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    admin = svc.login("ada", PASSWORD, "x")[0]
    svc.create_user(admin, "dan", PASSWORD, "dpo", "Org")
    dpo = svc.login("dan", PASSWORD, "x")[0]
    clock.now = clock.now.replace(month=1, day=31)
    ack = svc.request_access("10.1.1.1", lfw_photos(NEAR[0])[0].read_bytes(), "me@example.org")
    assert datetime.fromisoformat(ack.deadline).date().isoformat() == "2026-02-28"  # a calendar month
    [request] = svc.access_requests(dpo)
    assert request.status == "pending" and not request.overdue
    clock.now = datetime.fromisoformat(ack.deadline) + timedelta(seconds=1)
    assert svc.access_requests(dpo)[0].overdue
    with pytest.raises(InvalidRequest):
        svc.extend_access_request(dpo, request.id, " ")
    extended = svc.extend_access_request(dpo, request.id, "identity check needs a visit")
    assert extended.deadline.startswith("2026-04-28") and not extended.overdue
    with pytest.raises(InvalidRequest, match="once"):
        svc.extend_access_request(dpo, request.id, "again")
    actions = [r["action"] for r in svc.trail.records()]
    assert {"access.request", "access.extend"} <= set(actions)


def test_an_organisation_restricted_to_its_jurisdiction_sees_only_those_faces(
        svc: FaceSearchService) -> None:
    team = gallery(svc)
    case = svc.open_case(team["ivy"], "J-1", "missing person")
    probe = lfw_photos(NEAR[0])[0].read_bytes()
    assert svc.search(team["ivy"], case.id, probe, face="largest").faces[0].candidates
    assert svc.restrict_organisation(OPERATOR, "Org", ["fr"]) == ["FR"]
    limited = svc.search(team["ivy"], case.id, probe, face="largest").faces[0].candidates
    assert all(c.jurisdiction == "FR" for c in limited)
    assert svc.stats(OPERATOR)["faces_by_jurisdiction"] == {"FR": 4, "US": 4}


def test_production_mode_needs_an_impact_assessment(tmp_path: Path) -> None:
    for reference, refused in (("", True), ("DPIA-2026-07", False)):
        service = FaceSearchService(Settings(home=tmp_path / "d", mode="production",
                                             dpia_reference=reference))
        try:
            if refused:
                with pytest.raises(PolicyRefused, match="impact assessment"):
                    service.check_ready_to_serve()
            else:
                service.check_ready_to_serve()
        finally:
            service.close()
    done = subprocess.run([str(Path(sys.executable).parent / "facesearch"), "--data",
                           str(tmp_path / "d"), "serve", "--port", "1"], capture_output=True,
                          text=True, timeout=60, env={"FACESEARCH_MODE": "production", "PATH": ""})
    assert done.returncode == 4 and "FACESEARCH_DPIA_REFERENCE" in done.stderr


def test_the_record_of_processing_reflects_settings_and_live_counts(svc: FaceSearchService) -> None:
    gallery(svc)
    record = svc.record_of_processing(OPERATOR)
    assert record["purposes"] == svc.settings.search_purposes
    assert {s["name"]: s["retention_days"] for s in record["sources"]} == {"short": 10, "long": 1095}
    assert record["statistics"]["faces"] == 8 and record["statistics"]["faces_by_jurisdiction"]["US"] == 4
    assert record["recipients"] == ["Org"]
    assert np.all([isinstance(m, str) for m in record["security_measures"]])
