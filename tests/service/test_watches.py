"""Case watches end to end, on real LFW photos with the default YuNet + SFace: a watch on a
person, approved by a supervisor, notifies exactly the person's new images (once each) from
an ingest and a crawl of the loopback site; nothing after it expires, after the person opts
out or is suppressed; every step audited. And the policy around it: authorisation, approval
by another person of the organisation, the maximum expiry, other organisations."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from facesearch.config import Settings
from facesearch.errors import Forbidden, InvalidRequest, NotFound, PolicyRefused
from facesearch.service import FaceSearchService
from facesearch.types import Actor
from tests.conftest import LFW, OPERATOR, lfw_photos, log_in
from tests.crawl.site import people as site_people
from tests.crawl.site import photo, single_face_photos, start_site
from tests.service.test_governance import mail_server, rows

PASSWORD = "a-long-enough-password"
CLIENT = "203.0.113.9"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def many_photo_people(count: int, photos: int = 6) -> list[list[Path]]:
    """The first `count` LFW people, sorted by name, but for the crawl site's, with `photos`
    photos showing one face to the default detector (their first `photos`)."""
    found = []
    for name in sorted(p.name for p in (LFW / "images").iterdir() if p.is_dir()):
        if name in site_people():
            continue
        if len(lfw_photos(name)) >= photos + 2 and len(single_face_photos(name)) >= photos:
            found.append(list(single_face_photos(name)[:photos]))
            if len(found) == count:
                return found
    raise AssertionError("LFW has too few people with enough photos")


def make_service(home: Path, clock: Clock, **overrides: object) -> FaceSearchService:
    return FaceSearchService(Settings(**{
        "home": home, "workers": 1, "crawl_allowed_networks": ["127.0.0.1/32"],
        "crawl_timeout_seconds": 1, "crawl_max_bytes": 2_000_000, "crawl_delay_seconds": 0,
        **overrides}), clock)


def people(svc: FaceSearchService, investigator: str = "ivy") -> dict[str, Actor]:
    """Org: a supervisor and two investigators; Other: a supervisor and an investigator."""
    for name, role, organisation in (("sam", "supervisor", "Org"), (investigator, "investigator", "Org"),
                                     ("ian", "investigator", "Org"), ("oscar", "supervisor", "Other"),
                                     ("otto", "investigator", "Other")):
        user = svc.create_user(OPERATOR, name, PASSWORD, role, organisation)
        if user.status == "pending":
            svc.approve_user(OPERATOR, user.id)
    return {name: log_in(svc, name, PASSWORD)[0]
            for name in ("sam", investigator, "ian", "oscar", "otto")}


def copy_to(folder: Path, *photos: Path) -> Path:
    folder.mkdir(parents=True)
    for i, p in enumerate(photos):
        shutil.copy(p, folder / f"{i}-{p.name}")
    return folder


def audited(svc: FaceSearchService, action: str) -> list[dict]:
    return [r for r in svc.trail.records() if r["action"] == action]


def matched_images(svc: FaceSearchService, actor: Actor, case_id: int, watch_id: int) -> list[str]:
    return [m.image_sha256 for w in svc.case_watches(actor, case_id)[1] if w.id == watch_id
            for m in w.matches]


def sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_watch_notifies_each_new_image_of_its_person_once_from_ingest_and_crawl(
        tmp_path: Path) -> None:
    clock = Clock()
    site = start_site()
    with mail_server() as (port, inbox):
        svc = make_service(tmp_path / "data", clock, smtp_host="127.0.0.1", smtp_port=port)
        try:
            who = people(svc, investigator="ivy@example.org")
            ivy, sam = who["ivy@example.org"], who["sam"]
            svc.add_source(OPERATOR, "files", "legitimate_interests", "US")
            # A gallery of strangers, so that the watch's cut-off counts real faces.
            others = [p for group in many_photo_people(4, 2) for p in group]
            svc.ingest(OPERATOR, [copy_to(tmp_path / "gallery", *others)], "files")
            case = svc.open_case(ivy, "W-1", svc.settings.search_purposes[0], offence_type="robbery")
            watch = svc.request_watch(ivy, case.id, "warrant 2026/17", 30,
                                      photo=photo("a", 0).read_bytes(), note="suspect A")
            assert watch.status == "pending" and watch.kind == "probe"
            assert watch.probe_photos == [sha(photo("a", 0))]
            [requested] = audited(svc, "watch.request")
            assert requested["case_number"] == "W-1" and requested["actor"] == "ivy@example.org"
            assert requested["detail"]["authorisation"] == "warrant 2026/17"
            assert requested["detail"]["expires_at"] == "2026-04-01T09:00:00+00:00"

            approved = svc.decide_watch(sam, watch.id, True, "checked the warrant")
            assert approved.status == "active" and approved.approved_by == sam.user_id
            assert audited(svc, "watch.approve")[0]["detail"]["watch_id"] == watch.id

            # Files: one new photo of the person, a stranger's, and the person's again.
            first = svc.ingest(OPERATOR, [copy_to(tmp_path / "files", photo("a", 1),
                                                  photo("b", 0))], "files")
            again = svc.ingest(OPERATOR, [copy_to(tmp_path / "again", photo("a", 1))], "files")
            assert first.images_indexed == 2 and again.already_indexed == 1
            assert matched_images(svc, ivy, case.id, watch.id) == [sha(photo("a", 1))]

            # The site: a-1 again (twice on one page), a-2 and a-3 new, and strangers.
            job = svc.start_crawl(OPERATOR, [site.url + "/"], [site.url + "/"], "files",
                                  "test collection", max_depth=3)
            svc.run_crawl(OPERATOR, job.id)
            person = [sha(photo("a", i)) for i in (1, 2, 3)]
            assert sorted(matched_images(svc, ivy, case.id, watch.id)) == sorted(person)

            matches = audited(svc, "watch.match")
            assert sorted(m["detail"]["image_sha256"] for m in matches) == sorted(person)
            for record in matches:
                assert record["case_number"] == "W-1"
                assert record["detail"]["watch_id"] == watch.id
                assert record["detail"]["distance"] < record["detail"]["cut_off"]["distance"]
                assert record["detail"]["cut_off"]["target_false_matches"] == svc.settings.watch_false_matches
            notices = svc.take_notifications(ivy)
            assert len(notices) == 3 and all("Watch" in n.message and "W-1" in n.message
                                            for n in notices)
            assert svc.take_notifications(ivy) == []  # seen once

            svc.wait_for_watch_mail()
            assert len(inbox.messages) == 3
            assert all(to == ["ivy@example.org"] and "W-1" in m["Subject"]
                       for _, to, m in inbox.messages)
            assert all(m.emailed for w in svc.case_watches(ivy, case.id)[1] for m in w.matches)
            assert [r["detail"]["sent"] for r in audited(svc, "watch.mail")] == [True] * 3

            # Listed in the record of processing while active.
            record = svc.record_of_processing(OPERATOR)
            assert record["case_watches"] == [{"organisation": "Org", "active_watches": 1,
                                               "latest_expiry": "2026-04-01T09:00:00+00:00"}]
        finally:
            svc.close()
            site.stop()


@pytest.fixture
def watching(tmp_path: Path):
    clock = Clock()
    svc = make_service(tmp_path / "data", clock)
    who = people(svc)
    svc.add_source(OPERATOR, "files", "legitimate_interests", "US")
    person, stranger = many_photo_people(2)
    case = svc.open_case(who["ivy"], "W-2", svc.settings.search_purposes[0], offence_type="robbery")
    yield svc, clock, who, case, person, stranger
    svc.close()


def ingest(svc: FaceSearchService, folder: Path, *photos: Path) -> None:
    svc.ingest(OPERATOR, [copy_to(folder, *photos)], "files")


def test_nothing_notifies_after_a_watch_expires(watching, tmp_path: Path) -> None:
    svc, clock, who, case, person, _ = watching
    ivy = who["ivy"]
    watch = svc.request_watch(ivy, case.id, "warrant 9", 7, photo=person[0].read_bytes())
    svc.decide_watch(who["sam"], watch.id, True)
    ingest(svc, tmp_path / "one", person[1])
    assert matched_images(svc, ivy, case.id, watch.id) == [sha(person[1])]

    clock.now += timedelta(days=7)
    ingest(svc, tmp_path / "two", person[2], person[3])
    assert matched_images(svc, ivy, case.id, watch.id) == [sha(person[1])]
    [expired] = audited(svc, "watch.expire")
    assert expired["detail"] == {"watch_id": watch.id, "case_id": case.id,
                                 "expires_at": "2026-03-09T09:00:00+00:00"}
    assert svc.case_watches(ivy, case.id)[1][0].status == "expired"
    assert svc.record_of_processing(OPERATOR)["case_watches"] == []


def test_an_opt_out_stops_the_watch_on_that_person_at_once(watching, tmp_path: Path) -> None:
    svc, _, who, case, person, stranger = watching
    ivy = who["ivy"]
    on_person = svc.request_watch(ivy, case.id, "warrant 10", 30, photo=person[0].read_bytes())
    on_stranger = svc.request_watch(ivy, case.id, "warrant 11", 30, photo=stranger[0].read_bytes())
    for watch in (on_person, on_stranger):
        svc.decide_watch(who["sam"], watch.id, True)

    pending = svc.opt_out(CLIENT, person[1].read_bytes())
    [stop] = audited(svc, "watch.stop")
    assert stop["detail"] == {"watch_id": on_person.id, "case_id": case.id,
                              "reason": f"suppression: opt-out {pending.request_id}"}
    assert stop["role"] == "public" and stop["case_number"] == "W-2"
    ingest(svc, tmp_path / "after", *person[2:], stranger[1])
    assert matched_images(svc, ivy, case.id, on_person.id) == []
    assert matched_images(svc, ivy, case.id, on_stranger.id) == [sha(stranger[1])]
    statuses = {w.id: w.status for w in svc.case_watches(ivy, case.id)[1]}
    assert statuses == {on_person.id: "stopped", on_stranger.id: "active"}
    with pytest.raises(InvalidRequest):
        svc.decide_watch(who["sam"], on_person.id, True)  # a stopped watch stays stopped
    # A new watch on the person is refused while they are suppressed.
    with pytest.raises(PolicyRefused, match="suppressed"):
        svc.request_watch(ivy, case.id, "warrant 12", 30, photo=person[5].read_bytes())


def test_a_suppression_stops_the_watch_on_that_person(watching, tmp_path: Path) -> None:
    svc, _, who, case, person, _ = watching
    ivy = who["ivy"]
    # As in a server that has run a background job (which gives the service its stop event):
    # stopping a watch must not collide with it.
    svc.in_background(lambda: None)
    watch = svc.request_watch(ivy, case.id, "warrant 13", 30, photo=person[0].read_bytes())
    svc.decide_watch(who["sam"], watch.id, True)
    svc.suppress(OPERATOR, person[1].read_bytes(), "court order 4")
    [stop] = audited(svc, "watch.stop")
    assert stop["detail"]["reason"] == "suppression: court order 4"
    assert stop["actor"] == OPERATOR.name
    ingest(svc, tmp_path / "after", *person[2:])
    assert matched_images(svc, ivy, case.id, watch.id) == []
    assert audited(svc, "watch.match") == []


def test_closing_the_case_or_the_requester_stops_its_watches(watching, tmp_path: Path) -> None:
    svc, _, who, case, person, stranger = watching
    ivy, ian = who["ivy"], who["ian"]
    mine = svc.request_watch(ivy, case.id, "warrant 14", 30, photo=person[0].read_bytes())
    with pytest.raises(PolicyRefused, match="requester or a supervisor"):
        svc.stop_watch(ian, mine.id, "not mine")
    assert svc.stop_watch(ivy, mine.id, "no longer needed").status == "stopped"
    other = svc.request_watch(ivy, case.id, "warrant 15", 30, photo=stranger[0].read_bytes())
    svc.decide_watch(who["sam"], other.id, True)
    svc.close_case(ivy, case.id)
    reasons = [r["detail"]["reason"] for r in audited(svc, "watch.stop")]
    assert reasons == ["no longer needed", "case closed"]
    ingest(svc, tmp_path / "after", stranger[1])
    assert audited(svc, "watch.match") == []


def test_watch_requests_need_an_authorisation_and_a_bounded_expiry(watching) -> None:
    svc, _, who, case, person, _ = watching
    ivy, probe = who["ivy"], person[0].read_bytes()
    with pytest.raises(PolicyRefused, match="authorisation"):
        svc.request_watch(ivy, case.id, "  ", 30, photo=probe)
    with pytest.raises(PolicyRefused, match="1 to 90 days"):
        svc.request_watch(ivy, case.id, "warrant 16", 91, photo=probe)
    assert [r["detail"]["reason"][:20] for r in audited(svc, "watch.request.refused")] == [
        "a watch needs an aut", "a watch lasts 1 to 9"]
    with pytest.raises(Forbidden):  # a supervisor asks for none
        svc.request_watch(who["sam"], case.id, "warrant 17", 30, photo=probe)
    with pytest.raises(Forbidden):  # another organisation's case
        svc.request_watch(who["otto"], case.id, "warrant 18", 30, photo=probe)
    assert svc.watches.of_case(case.id) == []


def test_a_watch_matches_nothing_until_another_supervisor_of_its_organisation_approves(
        watching, tmp_path: Path) -> None:
    svc, _, who, case, person, _ = watching
    ivy = who["ivy"]
    watch = svc.request_watch(ivy, case.id, "warrant 19", 30, photo=person[0].read_bytes())
    ingest(svc, tmp_path / "before", person[1])
    assert matched_images(svc, ivy, case.id, watch.id) == []

    with pytest.raises(Forbidden):  # an investigator approves nothing
        svc.decide_watch(who["ian"], watch.id, True)
    with pytest.raises(Forbidden):  # another organisation's supervisor cannot see it
        svc.decide_watch(who["oscar"], watch.id, True)
    assert svc.pending_watches(who["oscar"]) == []
    with pytest.raises(Forbidden):
        svc.case_watches(who["otto"], case.id)
    assert [r["detail"]["reason"] for r in audited(svc, "watch.approve.refused")] == [
        "role investigator lacks watches.approve", "no such watch in the organisation"]

    assert [(w.id, number) for w, number in svc.pending_watches(who["sam"])] == [(watch.id, "W-2")]
    svc.decide_watch(who["sam"], watch.id, True)
    ingest(svc, tmp_path / "after", person[2])
    assert matched_images(svc, ivy, case.id, watch.id) == [sha(person[2])]


def test_nobody_approves_their_own_watch(tmp_path: Path) -> None:
    """The operator (the CLI) holds every permission, the two-person rule still applies."""
    svc = make_service(tmp_path / "data", Clock())
    try:
        operator, colleague = svc.local_operator("op"), svc.local_operator("other-operator")
        case = svc.open_case(operator, "W-3", svc.settings.search_purposes[0], offence_type="robbery")
        watch = svc.request_watch(operator, case.id, "warrant 20", 30,
                                  photo=photo("a", 0).read_bytes())
        with pytest.raises(PolicyRefused, match="another person"):
            svc.decide_watch(operator, watch.id, True)
        assert svc.decide_watch(colleague, watch.id, False).status == "refused"
        assert audited(svc, "watch.refuse")[0]["actor"] == "other-operator"
    finally:
        svc.close()


def test_an_identity_watch_notifies_the_new_faces_of_that_identity(watching, tmp_path: Path) -> None:
    svc, _, who, case, person, stranger = watching
    ivy = who["ivy"]
    ingest(svc, tmp_path / "gallery", *person[:4], *stranger[:2])
    [(identity,)] = rows(svc, "SELECT DISTINCT faces.identity_id FROM faces JOIN images ON "
                              "images.id = faces.image_id WHERE images.sha256 IN (?, ?, ?, ?)",
                         *(sha(p) for p in person[:4]))
    assert identity is not None
    watch = svc.request_watch(ivy, case.id, "warrant 21", 30, identity_id=identity)
    assert watch.kind == "identity" and watch.probe_photos == []
    assert audited(svc, "watch.request")[0]["detail"]["identity_id"] == identity
    svc.decide_watch(who["sam"], watch.id, True)

    ingest(svc, tmp_path / "new", person[4], stranger[2])
    [match] = svc.case_watches(ivy, case.id)[1][0].matches
    assert match.image_sha256 == sha(person[4])
    assert rows(svc, "SELECT identity_id FROM faces WHERE id = ?", match.face_id) == [(identity,)]
    assert audited(svc, "watch.match")[0]["detail"]["face_id"] == match.face_id
    with pytest.raises(NotFound):
        svc.request_watch(ivy, case.id, "warrant 22", 30, identity_id=identity + 1000)


def test_a_watch_by_another_face_model_is_stopped_not_left_silent(watching, tmp_path: Path) -> None:
    """A re-embedding switches the gallery's model; a watch's probe photo was not kept, so its
    template cannot be described again: it is stopped (the requester asks again)."""
    svc, _, who, case, person, _ = watching
    ivy = who["ivy"]
    watch = svc.request_watch(ivy, case.id, "warrant 23", 30, photo=person[0].read_bytes())
    svc.decide_watch(who["sam"], watch.id, True)
    with svc.store.engine.begin() as conn:  # as if made before a switch from dlib's model
        conn.exec_driver_sql("UPDATE watches SET embedder = 'dlib-resnet' WHERE id = ?", (watch.id,))
    ingest(svc, tmp_path / "after", person[1])
    assert matched_images(svc, ivy, case.id, watch.id) == []
    [stop] = audited(svc, "watch.stop")
    assert stop["detail"]["reason"].startswith("the gallery's face model changed from dlib-resnet")
    assert svc.case_watches(ivy, case.id)[1][0].status == "stopped"


def test_a_watch_sees_only_its_organisations_jurisdictions(watching, tmp_path: Path) -> None:
    """Org may see US faces only: a photo of the watched person from an FR source is not
    notified, and an identity seen only in FR is refused like a missing one."""
    svc, _, who, case, person, _ = watching
    ivy = who["ivy"]
    svc.add_source(OPERATOR, "french", "legitimate_interests", "FR")
    svc.restrict_organisation(OPERATOR, "Org", ["US"])
    watch = svc.request_watch(ivy, case.id, "warrant 24", 30, photo=person[0].read_bytes())
    svc.decide_watch(who["sam"], watch.id, True)
    svc.ingest(OPERATOR, [copy_to(tmp_path / "fr", person[1], person[2])], "french")
    assert matched_images(svc, ivy, case.id, watch.id) == []
    assert audited(svc, "watch.match") == [] and svc.take_notifications(ivy) == []
    ingest(svc, tmp_path / "us", person[3])
    assert matched_images(svc, ivy, case.id, watch.id) == [sha(person[3])]

    [(french,)] = rows(svc, "SELECT DISTINCT faces.identity_id FROM faces JOIN images ON "
                            "images.id = faces.image_id WHERE images.sha256 = ?", sha(person[1]))
    [(american,)] = rows(svc, "SELECT faces.identity_id FROM faces JOIN images ON "
                              "images.id = faces.image_id WHERE images.sha256 = ?", sha(person[3]))
    if french != american:  # an identity of FR faces only: Org cannot watch it
        with pytest.raises(NotFound):
            svc.request_watch(ivy, case.id, "warrant 25", 30, identity_id=french)
    svc.restrict_organisation(OPERATOR, "Org", ["BE"])  # now none of its faces is Org's
    with pytest.raises(NotFound):
        svc.request_watch(ivy, case.id, "warrant 26", 30, identity_id=american)


def test_erasing_a_matched_face_blanks_its_watch_match_and_retention_deletes_matches(
        watching, tmp_path: Path) -> None:
    svc, clock, who, case, person, _ = watching
    ivy = who["ivy"]
    watch = svc.request_watch(ivy, case.id, "warrant 27", 30, photo=person[0].read_bytes())
    svc.decide_watch(who["sam"], watch.id, True)
    ingest(svc, tmp_path / "new", person[1])
    [match] = svc.case_watches(ivy, case.id)[1][0].matches
    face_id = match.face_id
    assert match.image_sha256 == sha(person[1])

    svc.suppress(OPERATOR, person[2].read_bytes(), "court order 5")
    assert rows(svc, "SELECT id FROM faces WHERE id = ?", face_id) == []
    [erased] = svc.case_watches(ivy, case.id)[1][0].matches
    assert (erased.id, erased.image_sha256, erased.face_id, erased.distance) == (
        match.id, f"erased:{match.id}", 0, 0.0)
    notices = [m for (m,) in rows(svc, "SELECT message FROM notifications")]
    assert notices and not [m for m in notices if f"face {face_id}" in m or sha(person[1]) in m
                            or f"{match.distance:.3f}" in m]

    clock.now += timedelta(days=svc.settings.candidate_retention_days + 1)
    assert svc.run_retention(OPERATOR).watch_matches == 1
    assert rows(svc, "SELECT COUNT(*) FROM watch_matches") == [(0,)]


def test_an_identity_watch_notifies_only_within_the_cut_off_of_its_template(
        watching, tmp_path: Path) -> None:
    """A face assigned to the watched identity but far from the watch's template (here the
    template is a stranger's) is no match: membership chains at the grouping distance."""
    svc, _, who, case, person, stranger = watching
    ivy = who["ivy"]
    ingest(svc, tmp_path / "gallery", *person[:4], stranger[0])
    [(identity,)] = rows(svc, "SELECT DISTINCT faces.identity_id FROM faces JOIN images ON "
                              "images.id = faces.image_id WHERE images.sha256 IN (?, ?, ?, ?)",
                         *(sha(p) for p in person[:4]))
    watch = svc.request_watch(ivy, case.id, "warrant 28", 30, identity_id=identity)
    svc.decide_watch(who["sam"], watch.id, True)
    with svc.store.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE watches SET template = (SELECT faces.embedding FROM faces JOIN images ON "
            "images.id = faces.image_id WHERE images.sha256 = ?) WHERE id = ?",
            (sha(stranger[0]), watch.id))
    ingest(svc, tmp_path / "new", person[4])
    assert rows(svc, "SELECT faces.identity_id FROM faces JOIN images ON images.id = "
                     "faces.image_id WHERE images.sha256 = ?", sha(person[4])) == [(identity,)]
    assert matched_images(svc, ivy, case.id, watch.id) == []


def test_a_watch_stopped_after_a_batch_read_it_records_no_match(watching, tmp_path: Path) -> None:
    """As on PostgreSQL when a stop commits while a batch runs: the batch loaded the watch as
    active, but the match is written only while the watch's row still says active."""
    svc, _, who, case, person, _ = watching
    ivy = who["ivy"]
    watch = svc.request_watch(ivy, case.id, "warrant 29", 30, photo=person[0].read_bytes())
    active = svc.decide_watch(who["sam"], watch.id, True)
    ingest(svc, tmp_path / "new", person[1])
    [(face_id,)] = rows(svc, "SELECT faces.id FROM faces JOIN images ON images.id = "
                             "faces.image_id WHERE images.sha256 = ?", sha(person[1]))
    svc.take_notifications(ivy)
    svc.stop_watch(ivy, watch.id, "arrested")
    with svc.store.transaction() as conn:
        assert svc._record_matches(conn, OPERATOR, active, {"f" * 64: (0.5, face_id)},
                                   svc.cut_off("watch")) == []
    assert matched_images(svc, ivy, case.id, watch.id) == [sha(person[1])]
    assert svc.take_notifications(ivy) == []


def test_reversing_an_unconfirmed_opt_out_resumes_the_watches_it_stopped(
        watching, tmp_path: Path) -> None:
    svc, _, who, case, person, _ = watching
    ivy = who["ivy"]
    watch = svc.request_watch(ivy, case.id, "warrant 30", 30, photo=person[0].read_bytes())
    svc.decide_watch(who["sam"], watch.id, True)
    pending = svc.opt_out(CLIENT, person[1].read_bytes())
    [stopped] = svc.take_notifications(ivy)
    assert f"Watch {watch.id} in case W-2 was stopped" in stopped.message

    [request] = [o for o in svc.opt_outs(OPERATOR) if o.public_id == pending.request_id]
    svc.reinstate_opt_out(OPERATOR, request.id, "someone else's photo")
    [resumed] = audited(svc, "watch.resume")
    assert resumed["detail"] == {"watch_id": watch.id, "case_id": case.id, "status": "active",
                                 "reason": f"opt-out {pending.request_id}"}
    [told] = svc.take_notifications(ivy)
    assert f"Watch {watch.id} in case W-2 resumed (active)" in told.message
    ingest(svc, tmp_path / "after", person[2])
    assert matched_images(svc, ivy, case.id, watch.id) == [sha(person[2])]
