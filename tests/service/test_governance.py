"""Retention, purge, opt-out, erasure propagation, access-request deadlines and links, and
jurisdiction limits, through the service with an injected clock; opt-out receipts through a
real SMTP server on loopback."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import numpy as np
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from facesearch.config import Settings
from facesearch.errors import InvalidRequest, NotFound, PolicyRefused
from facesearch.service import FaceSearchService, RetentionReport
from facesearch.store.metadata import from_blob
from tests.conftest import OPERATOR, lfw_photos, log_in
from tests.service.test_accounts_and_cases import PASSWORD, Clock, people

# Two people per source: photo 1 and 2 indexed, photo 0 the probe.
NEAR, FAR = ["Al_Sharpton", "Alastair_Campbell"], ["Albert_Costa", "Alec_Baldwin"]
FACESEARCH = str(Path(sys.executable).parent / "facesearch")


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


def rows(svc: FaceSearchService, sql: str, *params: object) -> list[tuple]:
    with svc.store.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql, params)]


def faces_of(svc: FaceSearchService, jurisdiction: str) -> list[tuple[int, str]]:
    return rows(svc, "SELECT faces.id, faces.crop_path FROM faces JOIN images ON images.id = "
                "faces.image_id WHERE images.jurisdiction = ? ORDER BY faces.id", jurisdiction)


def faces_of_person(svc: FaceSearchService, person: str) -> list[tuple[int, str]]:
    return rows(svc, "SELECT faces.id, faces.crop_path FROM faces JOIN images ON images.id = "
                "faces.image_id WHERE images.location LIKE ? ORDER BY faces.id", f"%/{person}/%")


def indexed_ids(svc: FaceSearchService) -> set[int]:
    return set(svc.index.all_vectors()[0].tolist())


def saved_index_ids(settings: Settings) -> set[int]:
    """The face ids in the index as saved on disk, read by a fresh service."""
    reloaded = FaceSearchService(settings)
    try:
        return indexed_ids(reloaded)
    finally:
        reloaded.close()


def audited(svc: FaceSearchService, action: str) -> list[dict]:
    return [r for r in svc.trail.records() if r["action"] == action]


def officer(svc: FaceSearchService) -> object:
    """A data-protection officer, logged in."""
    svc.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
    svc.create_user(OPERATOR, "dan", PASSWORD, "dpo", "Org")
    return log_in(svc, "dan", PASSWORD, "x")[0]


# Retention ------------------------------------------------------------------------------------

def probe_paths(svc: FaceSearchService) -> dict[int, str]:
    return dict(rows(svc, "SELECT id, probe_path FROM searches WHERE probe_path IS NOT NULL"))


def candidate_counts(svc: FaceSearchService) -> dict[int, int]:
    return dict(rows(svc, "SELECT search_id, count(*) FROM candidates GROUP BY search_id"))


def test_retention_removes_exactly_the_expired_records_and_nothing_else(
        svc: FaceSearchService, clock: Clock) -> None:
    # Day 0: a short source (10 days), a long one (3 years), a search that keeps its probe.
    team = gallery(svc)
    case = svc.open_case(team["ivy"], "K-1", "missing person", keep_probes=True, offence_type="robbery")
    first = svc.search(team["ivy"], case.id, lfw_photos(FAR[0])[0].read_bytes())
    us, fr = faces_of(svc, "US"), faces_of(svc, "FR")
    clock.advance(days=5)  # a younger image beside the short source's expiring ones
    svc.ingest(OPERATOR, [lfw_photos(NEAR[0])[3]], "short")
    young = [f for f in faces_of(svc, "US") if f not in us]
    assert (len(us), len(fr), len(young)) == (4, 4, 1)
    sessions = rows(svc, "SELECT count(*) FROM sessions")[0][0]
    assert sessions > 0

    clock.advance(days=4)  # day 9: only the log-in sessions (8 hours) are past their date
    assert svc.run_retention(OPERATOR) == RetentionReport(sessions=sessions)
    assert faces_of(svc, "US") == sorted(us + young)

    clock.advance(days=2)  # day 11: the short source's day-0 images, not its day-5 one
    assert svc.run_retention(OPERATOR) == RetentionReport(images=4, faces=4)
    assert faces_of(svc, "US") == young and faces_of(svc, "FR") == fr
    assert not any(svc.crops.path(crop).exists() for _, crop in us)
    assert all(svc.crops.path(crop).exists() for _, crop in fr + young)
    assert indexed_ids(svc) == {face_id for face_id, _ in fr + young}

    clock.advance(days=5)  # day 16: the day-5 image is past its 10 days too
    assert svc.run_retention(OPERATOR) == RetentionReport(images=1, faces=1)
    assert faces_of(svc, "US") == [] and faces_of(svc, "FR") == fr

    clock.advance(days=4)  # day 20: a second search keeps another probe
    second = svc.search(team["ivy"], case.id, lfw_photos(FAR[0])[3].read_bytes())
    kept = probe_paths(svc)
    assert set(kept) == {first.search_id, second.search_id}

    clock.advance(days=11)  # day 31: the day-0 probe is past 30 days, the day-20 one is not
    # Its face's crop goes with it: every search keeps one for review for as long.
    assert svc.run_retention(OPERATOR) == RetentionReport(probes=1, probe_crops=1)
    assert not Path(kept[first.search_id]).exists() and Path(kept[second.search_id]).exists()
    assert probe_paths(svc) == {second.search_id: kept[second.search_id]}

    clock.advance(days=20)  # day 51: the day-20 probe
    assert svc.run_retention(OPERATOR) == RetentionReport(probes=1, probe_crops=1)
    assert probe_paths(svc) == {} and not Path(kept[second.search_id]).exists()

    held = candidate_counts(svc)
    assert held[first.search_id] > 0 and held[second.search_id] > 0
    clock.advance(days=680)  # day 731: the day-0 search and its candidate list, not the day-20 one
    assert svc.run_retention(OPERATOR) == RetentionReport(searches=1)
    assert [s.id for s in svc.cases.searches(case.id)] == [second.search_id]
    assert candidate_counts(svc) == {second.search_id: held[second.search_id]}

    clock.advance(days=20)  # day 751: the day-20 search
    assert svc.run_retention(OPERATOR) == RetentionReport(searches=1)
    assert svc.cases.searches(case.id) == [] and candidate_counts(svc) == {}
    assert faces_of(svc, "FR") == fr

    clock.advance(days=345)  # day 1096: the long source's images are past three years
    assert svc.run_retention(OPERATOR) == RetentionReport(images=4, faces=4)
    assert faces_of(svc, "FR") == [] and indexed_ids(svc) == set()

    # Day 2200: audit records from before day 10 are past six years; later ones are not.
    clock.advance(days=1104)
    cutoff = (clock.now - timedelta(days=svc.settings.audit_retention_days)).isoformat(timespec="seconds")
    before = svc.trail.records()
    old = [r["id"] for r in before if r["at"] < cutoff]
    younger = [r["id"] for r in before if r["at"] >= cutoff]
    assert old and younger
    assert svc.run_retention(OPERATOR) == RetentionReport(audit_records=len(old))
    after = [r["id"] for r in svc.trail.records()]
    assert after[:-1] == younger and audited(svc, "retention")[-1]["id"] == after[-1]
    assert svc.verify_audit(OPERATOR).intact
    assert audited(svc, "retention")[-1]["detail"] == RetentionReport(audit_records=len(old)).__dict__


def test_a_sighting_by_a_short_lived_source_expires_by_that_source_not_the_images(
        svc: FaceSearchService, clock: Clock, tmp_path: Path) -> None:
    svc.add_source(OPERATOR, "files", "public_task", "US")  # three years
    svc.add_source(OPERATOR, "web", "public_task", "US", retention_days=30)
    local = tmp_path / "a.jpg"
    local.write_bytes(lfw_photos(NEAR[0])[1].read_bytes())
    svc.ingest(OPERATOR, [local], "files")
    clock.advance(days=5)
    assert svc.ingest(OPERATOR, [local], "web", location_of=lambda _: "https://web.example/a.jpg"
                      ).sightings == 1
    clock.advance(days=30)  # the sighting is exactly 30 days old
    assert svc.run_retention(OPERATOR) == RetentionReport()
    clock.advance(seconds=1)
    assert svc.run_retention(OPERATOR) == RetentionReport(sightings=1)
    assert audited(svc, "retention")[-1]["detail"]["sightings"] == 1
    assert rows(svc, "SELECT location FROM sightings") == [(str(local.resolve()),)]
    assert len(faces_of(svc, "US")) == 1  # the image stays, by its own source's retention


# Purge, erasure propagation, opt-out ----------------------------------------------------------

def test_a_purge_leaves_no_face_crop_or_vector_of_the_jurisdiction(svc: FaceSearchService) -> None:
    team = gallery(svc)
    fr = faces_of(svc, "FR")
    report = svc.purge_jurisdiction(OPERATOR, "fr")
    assert (report.images, report.faces) == (4, 4)
    assert faces_of(svc, "FR") == []
    assert not any(svc.crops.path(crop).exists() for _, crop in fr)
    assert indexed_ids(svc).isdisjoint(face_id for face_id, _ in fr)
    assert saved_index_ids(svc.settings).isdisjoint(face_id for face_id, _ in fr)
    case = svc.open_case(team["ivy"], "P-1", "missing person", offence_type="robbery")
    found = svc.search(team["ivy"], case.id, lfw_photos(FAR[0])[0].read_bytes())
    assert all(c.jurisdiction != "FR" for f in found.faces for c in f.candidates)
    [record] = audited(svc, "purge")
    assert record["actor"] == OPERATOR.name
    assert record["detail"] == {"jurisdiction": "FR", "images": 4, "faces": 4, "sightings": 0}
    assert svc.verify_audit(OPERATOR).intact


def test_purge_excluded_purges_every_excluded_jurisdiction_from_the_command_line(
        svc: FaceSearchService) -> None:
    gallery(svc)
    fr, us = faces_of(svc, "FR"), faces_of(svc, "US")

    def purge_excluded(excluded: str) -> subprocess.CompletedProcess:
        return subprocess.run([FACESEARCH, "--data", str(svc.settings.home), "purge", "--excluded"],
                              check=False, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "FACESEARCH_EXCLUDED_JURISDICTIONS": excluded})

    nothing = purge_excluded("")
    assert nothing.returncode == 2 and "no jurisdiction is excluded" in nothing.stderr
    done = purge_excluded("fr, de")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["purged 4 images, 4 faces from FR",
                                        "purged 0 images, 0 faces from DE"]
    assert faces_of(svc, "FR") == [] and faces_of(svc, "US") == us
    assert not any(svc.crops.path(crop).exists() for _, crop in fr)
    assert saved_index_ids(svc.settings) == {face_id for face_id, _ in us}
    assert [r["detail"] for r in audited(svc, "purge")] == [
        {"jurisdiction": "FR", "images": 4, "faces": 4, "sightings": 0},
        {"jurisdiction": "DE", "images": 0, "faces": 0, "sightings": 0}]
    assert svc.verify_audit(OPERATOR).intact


def test_a_purge_and_a_retention_run_blank_the_candidate_lists_that_held_the_erased_faces(
        svc: FaceSearchService, clock: Clock) -> None:
    team = gallery(svc)
    case = svc.open_case(team["ivy"], "E-2", "missing person", offence_type="robbery")
    for person in (FAR[0], NEAR[0]):
        svc.search(team["ivy"], case.id, lfw_photos(person)[0].read_bytes(), face="largest")
    fr = {face_id for face_id, _ in faces_of(svc, "FR")}
    us = {face_id for face_id, _ in faces_of(svc, "US")}

    def candidates() -> list:
        return [c for s in svc.case_searches(team["ivy"], case.id)[1] for c in s.candidates]

    held_fr = [c for c in candidates() if c.face_id in fr]
    held_us = [c for c in candidates() if c.face_id in us]
    assert held_fr and held_us and all(c.erased_at is None for c in candidates())

    clock.advance(hours=1)
    svc.purge_jurisdiction(OPERATOR, "FR")
    purged_at = clock.now.isoformat(timespec="seconds")
    for c in candidates():
        if c.face_id in fr:
            assert c.erased_at == purged_at
            assert (c.location, c.source, c.jurisdiction, c.image_sha256) == ("", "", "", "")
        else:
            assert c.erased_at is None and c.location and c.jurisdiction == "US"
    notices = svc.take_notifications(team["ivy"])  # one per search that held an erased face
    assert len(notices) == len({c.search_id for c in held_fr})
    assert all("case E-2" in n.message for n in notices)

    clock.advance(days=11)  # the short source's 10 days are over
    assert svc.run_retention(OPERATOR).faces == len(us)
    expired_at = clock.now.isoformat(timespec="seconds")
    for c in candidates():
        assert c.erased_at == (purged_at if c.face_id in fr else expired_at)
        assert c.location == ""
    notices = svc.take_notifications(team["ivy"])
    assert len(notices) == len({c.search_id for c in held_us})
    assert all(f"erased by {expired_at[:10]}" in n.message for n in notices)
    assert audited(svc, "retention")[-1]["detail"]["faces"] == len(us)
    assert svc.verify_audit(OPERATOR).intact


def test_an_erased_candidate_leaves_the_case_and_its_investigator_is_told_once(
        svc: FaceSearchService, clock: Clock) -> None:
    team = gallery(svc)
    case = svc.open_case(team["ivy"], "E-1", "missing person", offence_type="robbery")
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


def test_an_opt_out_keeps_only_the_template_with_its_reason_and_erases_crops_and_vectors(
        svc: FaceSearchService) -> None:
    gallery(svc)
    theirs = faces_of_person(svc, NEAR[0])
    others = [f for f in faces_of(svc, "US") + faces_of(svc, "FR") if f not in theirs]
    assert len(theirs) == 2
    selfie = lfw_photos(NEAR[0])[0].read_bytes()
    pending = svc.opt_out("10.2.2.2", selfie)  # hidden at once; erased on a second photo
    receipt = svc.confirm_opt_out("10.2.2.2", pending.confirm_token,
                                  lfw_photos(NEAR[0])[3].read_bytes(), "someone@example.org")
    assert (receipt.images_found, receipt.faces_removed, receipt.mailed) == (2, 2, False)

    [(template, reason)] = rows(svc, "SELECT embedding, reason FROM suppressions")
    assert reason == f"opt-out {receipt.request_id}"
    assert np.allclose(from_blob(template), svc._template_of(selfie).embedding)  # the selfie's descriptor
    assert faces_of_person(svc, NEAR[0]) == []
    assert not any(svc.crops.path(crop).exists() for _, crop in theirs)
    assert all(svc.crops.path(crop).exists() for _, crop in others)
    ids = {face_id for face_id, _ in theirs}
    assert indexed_ids(svc) == {face_id for face_id, _ in others}  # gone from the index itself
    assert saved_index_ids(svc.settings).isdisjoint(ids)
    # Nothing of the selfie or the address stays with the request (receipts are not mailed here).
    [(template, contact, status)] = rows(svc, "SELECT template, contact, status FROM subject_requests")
    assert (template, contact, status) == (None, "", "done")
    assert audited(svc, "optout.receipt") == []


# Opt-out receipts by mail -----------------------------------------------------------------------

@dataclass
class Inbox:
    """The messages a real SMTP server (aiosmtpd) on loopback received."""

    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd's handler hook
        self.messages.append((envelope.mail_from, envelope.rcpt_tos,
                              message_from_bytes(envelope.content, policy=policy.default)))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mail_server(**options: object) -> Iterator[tuple[int, Inbox]]:
    """An SMTP server on a loopback port, with aiosmtpd's SMTP options; (port, inbox)."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), ready_timeout=60,
                            **options)
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        controller.stop()


def assert_is_receipt(message: EmailMessage, request_id: str, images: int, faces: int,
                      date: str) -> None:
    """A plain-text receipt with the request's reference, counts and date, and no attachment."""
    assert request_id in message["subject"]
    assert not message.is_multipart() and message.get_content_type() == "text/plain"
    assert list(message.iter_attachments()) == []
    lines = message.get_content().splitlines()
    assert {f"Request: {request_id}", f"Date: {date}", f"Images you were found in: {images}",
            f"Faces of yours deleted: {faces}"} <= set(lines)


def test_a_receipt_is_mailed_over_starttls_with_a_login_and_the_address_is_not_kept(
        tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    # A self-signed certificate for 127.0.0.1, trusted through the system trust store's
    # SSL_CERT_FILE, so the service's certificate check runs as it would in production.
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bytes]] = []

    def authenticate(server, session, envelope, mechanism, data) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"relay-secret", auth_data=data)

    with mail_server(tls_context=tls, require_starttls=True, auth_required=True,
                     authenticator=authenticate) as (port, inbox):
        service = FaceSearchService(Settings(
            home=tmp_path / "data", smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=True,
            smtp_from="privacy@facesearch.test", smtp_username="relay",
            smtp_password="relay-secret"), clock)
        try:
            assert service.mails_receipts
            with pytest.raises(InvalidRequest, match="email address"):
                service.confirm_opt_out("10.3.3.3", "token", b"",
                                        "Someone <a@example.org>, b@example.org")
            pending = service.opt_out("10.3.3.3", lfw_photos(NEAR[0])[0].read_bytes())
            receipt = service.confirm_opt_out("10.3.3.3", pending.confirm_token,
                                              lfw_photos(NEAR[0])[3].read_bytes(), " al@example.org ")
            requests = rows(service, "SELECT public_id, contact FROM subject_requests")
            receipts = audited(service, "optout.receipt")
        finally:
            service.close()

    assert receipt.mailed and logins == [(b"relay", b"relay-secret")]
    [(sender, recipients, message)] = inbox.messages
    assert sender == "privacy@facesearch.test" and recipients == ["al@example.org"]
    assert message["to"] == "al@example.org"
    assert_is_receipt(message, receipt.request_id, 0, 0, clock.now.date().isoformat())
    assert requests == [(receipt.request_id, "")]  # the address went with the mail
    assert [r["detail"] for r in receipts] == [{"request": receipt.request_id, "sent": True}]
    assert "al@example.org" not in str(receipts)


def test_a_mail_server_that_is_down_undoes_no_opt_out(tmp_path: Path, clock: Clock) -> None:
    service = FaceSearchService(Settings(home=tmp_path / "data", smtp_host="127.0.0.1",
                                         smtp_port=free_port()), clock)  # nothing listens there
    try:
        pending = service.opt_out("10.4.4.4", lfw_photos(NEAR[0])[0].read_bytes())
        receipt = service.confirm_opt_out("10.4.4.4", pending.confirm_token,
                                          lfw_photos(NEAR[0])[3].read_bytes(), "al@example.org")
        assert not receipt.mailed
        assert rows(service, "SELECT public_id, status, contact FROM subject_requests") == [
            (receipt.request_id, "done", "")]
        assert len(rows(service, "SELECT id FROM suppressions")) == 1
        [record] = audited(service, "optout.receipt")
        assert record["detail"] == {"request": receipt.request_id, "sent": False,
                                    "error": "ConnectionRefusedError"}
    finally:
        service.close()


# Access requests --------------------------------------------------------------------------------

def test_access_requests_are_due_in_a_month_extendable_once_and_flagged_when_overdue(
        svc: FaceSearchService, clock: Clock) -> None:
    dpo = officer(svc)
    clock.now = clock.now.replace(month=1, day=31)
    ack = svc.request_access("10.1.1.1", lfw_photos(NEAR[0])[0].read_bytes(), "me@example.org")
    assert datetime.fromisoformat(ack.deadline).date().isoformat() == "2026-02-28"  # a calendar month
    [request] = svc.access_requests(dpo)
    assert request.status == "pending" and not request.overdue
    clock.now = datetime.fromisoformat(ack.deadline) + timedelta(seconds=1)
    assert svc.access_requests(dpo)[0].overdue
    with pytest.raises(InvalidRequest):
        svc.extend_access_request(dpo, request.id, " ")
    extended = svc.extend_access_request(dpo, request.id, " identity check needs a visit ")
    assert extended.deadline.startswith("2026-04-28") and not extended.overdue
    assert extended.extended_reason == "identity check needs a visit"
    assert svc.requests.get(request_id=request.id).extended_reason == "identity check needs a visit"
    with pytest.raises(InvalidRequest, match="once"):
        svc.extend_access_request(dpo, request.id, "again")
    [extension] = audited(svc, "access.extend")
    assert extension["actor"] == "dan" and extension["detail"] == {
        "request": ack.request_id, "deadline": extended.deadline,
        "reason": "identity check needs a visit"}
    # Each listing shows contact details, so each is audited; extending lists nothing.
    listings = audited(svc, "access.list")
    assert [(r["actor"], r["detail"]) for r in listings] == [("dan", {"requests": 1})] * 2
    assert "me@example.org" not in str(svc.trail.records())
    assert svc.verify_audit(OPERATOR).intact


def test_an_access_report_link_expires_after_the_configured_hours(tmp_path: Path, clock: Clock) -> None:
    svc = FaceSearchService(Settings(home=tmp_path / "data", access_report_hours=5), clock)
    try:
        dpo = officer(svc)
        photo = lfw_photos(NEAR[0])[0].read_bytes()
        acks = [svc.request_access(f"10.1.1.{n}", photo, f"p{n}@example.org") for n in (1, 2)]
        ids = {r.public_id: r.id for r in svc.access_requests(dpo)}
        early, late = (svc.decide_access_request(dpo, ids[a.request_id], True) for a in acks)

        clock.advance(hours=5, seconds=-1)  # the last second of the link's life
        assert svc.access_report("10.1.1.1", early).request_id == acks[0].request_id
        clock.advance(seconds=2)
        with pytest.raises(NotFound, match="expired"):
            svc.access_report("10.1.1.2", late)
        assert svc.requests.get(request_id=ids[acks[1].request_id]).status == "approved"  # not delivered
        assert len(audited(svc, "access.report")) == len(audited(svc, "access.report.refused")) == 1
    finally:
        svc.close()


def test_retention_forgets_the_contact_details_of_access_requests_once_answered_long_enough(
        tmp_path: Path, clock: Clock) -> None:
    svc = FaceSearchService(Settings(home=tmp_path / "data", access_report_hours=5), clock)
    try:
        dpo = officer(svc)
        photo = lfw_photos(NEAR[0])[0].read_bytes()
        acks = {name: svc.request_access(f"10.2.2.{n}", photo, f"{name}@example.org")
                for n, name in enumerate(("approved", "rejected", "pending", "later"))}
        ids = {r.public_id: r.id for r in svc.access_requests(dpo)}
        svc.decide_access_request(dpo, ids[acks["approved"].request_id], True)
        svc.decide_access_request(dpo, ids[acks["rejected"].request_id], False, "not verified")
        clock.advance(hours=1)
        svc.decide_access_request(dpo, ids[acks["later"].request_id], True)

        def contacts() -> dict[str, str]:
            return {name: svc.requests.get(request_id=ids[ack.request_id]).contact
                    for name, ack in acks.items()}

        clock.advance(hours=4)  # exactly 5 hours after the first two answers: not yet
        assert svc.run_retention(OPERATOR) == RetentionReport()
        assert "" not in contacts().values()
        clock.advance(seconds=1)
        assert svc.run_retention(OPERATOR) == RetentionReport(request_contacts=2)
        assert contacts() == {"approved": "", "rejected": "", "pending": "pending@example.org",
                              "later": "later@example.org"}
        assert {r.status for r in svc.access_requests(dpo)} == {"approved", "rejected", "pending"}
        clock.advance(hours=1)
        assert svc.run_retention(OPERATOR) == RetentionReport(request_contacts=1)
        assert contacts()["later"] == "" and contacts()["pending"] == "pending@example.org"
    finally:
        svc.close()


# Jurisdictions and records ------------------------------------------------------------------------

def test_an_organisation_restricted_to_its_jurisdiction_sees_only_those_faces(
        svc: FaceSearchService) -> None:
    team = gallery(svc)
    case = svc.open_case(team["ivy"], "J-1", "missing person", offence_type="robbery")

    def found(person: str) -> tuple[list, list]:
        """All candidates of a search with the person's probe, and those that are the person."""
        probe = lfw_photos(person)[0].read_bytes()
        every = svc.search(team["ivy"], case.id, probe, face="largest").faces[0].candidates
        return every, [c for c in every if Path(c.location).parent.name == person]

    assert len(found(NEAR[0])[1]) == 2  # before: the US person is found
    assert svc.restrict_organisation(OPERATOR, "Org", ["fr"]) == ["FR"]
    every, theirs = found(FAR[0])  # indexed under FR: still found
    assert len(theirs) == 2 and all(c.jurisdiction == "FR" for c in every)
    every, theirs = found(NEAR[0])  # indexed only under US: not any more
    assert theirs == [] and all(c.jurisdiction == "FR" for c in every)
    assert svc.restrict_organisation(OPERATOR, "Org", []) == []  # lifted
    assert len(found(NEAR[0])[1]) == 2
    assert [r["detail"] for r in audited(svc, "organisation.restrict")] == [
        {"organisation": "Org", "jurisdictions": ["FR"]}, {"organisation": "Org", "jurisdictions": []}]
    assert svc.verify_audit(OPERATOR).intact
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
    done = subprocess.run([FACESEARCH, "--data", str(tmp_path / "d"), "serve", "--port", "1"],
                          check=False, capture_output=True, text=True, timeout=60,
                          env={"FACESEARCH_MODE": "production", "PATH": ""})
    assert done.returncode == 4 and "FACESEARCH_DPIA_REFERENCE" in done.stderr


def test_the_record_of_processing_reflects_settings_and_live_counts(svc: FaceSearchService) -> None:
    gallery(svc)
    record = svc.record_of_processing(OPERATOR)
    assert record["purposes"] == svc.settings.search_purposes
    assert {s["name"]: s["retention_days"] for s in record["sources"]} == {"short": 10, "long": 1095}
    assert record["statistics"]["faces"] == 8 and record["statistics"]["faces_by_jurisdiction"]["US"] == 4
    assert record["recipients"] == ["Org"]
    assert np.all([isinstance(m, str) for m in record["security_measures"]])
