"""Anonymous requests through the service with an injected clock: failed photos do not use up
the daily allowance but are bounded per hour, a flood of refusals adds a bounded number of audit
records, an opt-out hides at once and erases only on a second photo, the officer can reverse an
unconfirmed one, only the face used is analysed, a full public queue is refused at once while an
investigator's search goes on, an access link is spent by its POST, not by opening it, and the
report lists every place each photo was seen."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facesearch.config import Settings
from facesearch.errors import Busy, Forbidden, InvalidRequest, NoFace, NotFound, RateLimited
from facesearch.service import FaceSearchService, RetentionReport
from facesearch.service.grouping import Sighting
from facesearch.web.app import create_app
from tests.conftest import OPERATOR, jpeg_bytes, lfw_photos, log_in, noise_image
from tests.service.test_accounts_and_cases import PASSWORD, Clock
from tests.service.test_governance import FAR, NEAR, audited, faces_of_person, gallery, rows

NOISE = jpeg_bytes(noise_image(320, 240))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def service(tmp_path: Path, clock: Clock, **settings: object) -> FaceSearchService:
    return FaceSearchService(Settings(home=tmp_path / "data", workers=1, **settings), clock)


@pytest.fixture
def svc(tmp_path: Path, clock: Clock):
    made = service(tmp_path, clock)
    yield made
    made.close()


def photo(person: str, number: int) -> bytes:
    return lfw_photos(person)[number].read_bytes()


def officer_of(svc: FaceSearchService, team: dict) -> object:
    svc.create_user(OPERATOR, "dan", PASSWORD, "dpo", "Org")
    return log_in(svc, "dan", PASSWORD)[0]


def found_people(svc: FaceSearchService, investigator: object, person: str) -> set[str]:
    """The people an investigator's search with the person's unindexed photo returns."""
    case = svc.open_case(investigator, f"C-{time.monotonic_ns()}", "missing person", offence_type="robbery")
    result = svc.search(investigator, case.id, photo(person, 0), face="largest")
    return {Path(c.location).parent.name for c in result.faces[0].candidates}


# Allowances ----------------------------------------------------------------------------------------

def test_failed_photos_give_their_daily_place_back_but_count_toward_the_hourly_limit(
        tmp_path: Path, clock: Clock) -> None:
    svc = service(tmp_path, clock, public_requests_per_day=3, public_attempts_per_hour=6)
    try:
        for _ in range(4):  # four bad uploads: before, they used up the day
            with pytest.raises(NoFace):
                svc.opt_out("10.9.9.9", NOISE)
        assert svc.request_access("10.9.9.9", photo(NEAR[0], 0), "me@example.org").request_id
        assert svc.opt_out("10.9.9.9", photo(FAR[0], 0)).request_id
        # Six photos this hour: the seventh is refused before any analysis, good or bad.
        with pytest.raises(RateLimited, match="hour") as hourly:
            svc.opt_out("10.9.9.9", photo(FAR[1], 0))
        assert hourly.value.retry_after == 3600
        clock.advance(hours=1, seconds=1)
        # A new hour: the third request of the day goes through (the refused one took no place).
        assert svc.opt_out("10.9.9.9", photo(FAR[1], 0)).request_id
        with pytest.raises(RateLimited, match="today") as daily:
            svc.opt_out("10.9.9.9", photo(NEAR[1], 0))
        assert daily.value.retry_after == 24 * 3600
        clock.advance(days=1)
        assert svc.opt_out("10.9.9.9", photo(NEAR[1], 0)).request_id
        # Another address was never limited by any of this.
        assert svc.opt_out("10.9.9.8", photo(NEAR[1], 1)).request_id
        # Failed photos leave no request behind; only the five real ones are on record.
        assert len(rows(svc, "SELECT id FROM subject_requests")) == 5
    finally:
        svc.close()


def test_two_hundred_refused_requests_write_one_audit_record_per_client_and_hour(
        tmp_path: Path, clock: Clock) -> None:
    svc = service(tmp_path, clock, public_requests_per_day=1)
    try:
        svc.request_access("10.8.8.8", photo(NEAR[0], 0), "me@example.org")
        before = len(svc.trail.records())
        for _ in range(200):
            with pytest.raises(RateLimited):
                svc.request_access("10.8.8.8", photo(NEAR[0], 0), "me@example.org")
        for _ in range(20):  # bad links from the same address: their own window
            with pytest.raises(NotFound):
                svc.access_report("10.8.8.8", "no-such-token")
        records = svc.trail.records()[before:]
        assert [(r["action"], r["detail"]) for r in records] == [
            ("public.refused", {"reason": "daily request limit", "refused_in_previous_window": 0}),
            ("access.report.refused", {"reason": "used, expired or unknown link",
                                       "refused_in_previous_window": 0})]
        # The next hour's first refusal is recorded with the count of the hour before.
        clock.advance(hours=1, seconds=1)
        with pytest.raises(RateLimited):
            svc.request_access("10.8.8.8", photo(NEAR[0], 0), "me@example.org")
        last = svc.trail.records()[-1]
        assert last["action"] == "public.refused"
        assert last["detail"]["refused_in_previous_window"] == 200
        # Another address's refusals are recorded apart, under its own pseudonym.
        with pytest.raises(NotFound):
            svc.access_report("10.8.8.7", "no-such-token")
        assert svc.trail.records()[-1]["client"] != last["client"]
        # Retention drops the counters once their windows are over (they hold address hashes),
        # and its own audit record sums the refusals no record reported one by one.
        clock.advance(days=2, hours=2)
        report = svc.run_retention(OPERATOR)
        assert report == RetentionReport(public_counters=5, public_refusals=19)
        assert svc.trail.records()[-1]["detail"]["public_refusals"] == 19
        assert rows(svc, "SELECT count(*) FROM public_allowances") == [(0,)]
        assert svc.verify_audit(OPERATOR).intact
    finally:
        svc.close()


# The opt-out's two steps ----------------------------------------------------------------------------

def test_an_opt_out_hides_at_once_and_erases_only_when_a_new_photo_confirms_it(
        svc: FaceSearchService) -> None:
    team = gallery(svc)
    ivy = team["ivy"]
    assert NEAR[0] in found_people(svc, ivy, NEAR[0])
    pending = svc.opt_out("10.2.2.2", photo(NEAR[0], 0))
    # Hidden at once, from search and from collection; nothing erased yet.
    assert NEAR[0] not in found_people(svc, ivy, NEAR[0])
    assert len(faces_of_person(svc, NEAR[0])) == 2
    summary = svc.ingest(OPERATOR, [lfw_photos(NEAR[0])[3]], "short")
    assert summary.faces_withheld == 1 and summary.faces_indexed == 0
    [(status, template)] = rows(svc, "SELECT status, template FROM subject_requests")
    assert (status, template) == ("hidden", None)  # the suppression holds the template

    # The same photo again is not a confirmation, nor is someone else's; both leave it open.
    with pytest.raises(InvalidRequest, match="same photo"):
        svc.confirm_opt_out("10.2.2.2", pending.confirm_token, photo(NEAR[0], 0))
    # ...also resized and recompressed, which moves its descriptor as far as another photo's.
    resaved = jpeg_bytes(Image.open(lfw_photos(NEAR[0])[0]).resize((180, 180)), quality=50)
    with pytest.raises(InvalidRequest, match="same photo"):
        svc.confirm_opt_out("10.2.2.2", pending.confirm_token, resaved)
    with pytest.raises(InvalidRequest, match="not the person"):
        svc.confirm_opt_out("10.2.2.2", pending.confirm_token, photo(FAR[0], 0))
    with pytest.raises(NotFound):
        svc.confirm_opt_out("10.2.2.2", "a-guessed-token", photo(NEAR[0], 1))
    assert len(faces_of_person(svc, NEAR[0])) == 2
    # Four refusals, counted; one audit record, the first of the hour.
    [refused] = audited(svc, "optout.confirm.refused")
    assert refused["detail"]["reason"].endswith("not the same photo again")
    assert rows(svc, "SELECT used FROM public_allowances WHERE kind = ?",
                "refused:optout.confirm.refused") == [(4,)]

    receipt = svc.confirm_opt_out("10.2.2.2", pending.confirm_token, photo(NEAR[0], 1))
    assert (receipt.request_id, receipt.images_found, receipt.faces_removed) == (
        pending.request_id, 2, 2)
    assert faces_of_person(svc, NEAR[0]) == []
    assert len(faces_of_person(svc, NEAR[1])) == 2  # the other person of the source stays
    with pytest.raises(NotFound):  # a confirmation counts once
        svc.confirm_opt_out("10.2.2.2", pending.confirm_token, photo(NEAR[0], 2))
    [(status, found, removed, decided)] = rows(
        svc, "SELECT status, images_found, faces_removed, decided_by FROM subject_requests")
    assert (status, found, removed, decided) == ("done", 2, 2, "requester")
    [hidden] = audited(svc, "optout")
    assert hidden["detail"] == {"request": pending.request_id, "confirm_by": pending.confirm_by}
    [confirmed] = audited(svc, "optout.confirm")
    cut_off = confirmed["detail"].pop("cut_off")  # the strict cut-off it erased within
    # Two faces of hers are too few to make an identity (a core needs three): none to review.
    assert confirmed["detail"] == {"request": pending.request_id, "faces": 2, "images": 2,
                                   "in_review": 0, "identities": 0, "identity_faces": 0}
    assert cut_off["target_false_matches"] == svc.settings.suppress_false_matches
    assert cut_off["faces"] == 8  # the gallery it was applied to, before the erasure
    assert confirmed["client"] == hidden["client"] and confirmed["actor"] == "public"


def test_a_late_confirmation_is_refused_and_the_person_stays_hidden(
        svc: FaceSearchService, clock: Clock) -> None:
    team = gallery(svc)
    pending = svc.opt_out("10.2.2.3", photo(NEAR[0], 0))
    clock.advance(minutes=svc.settings.opt_out_confirm_minutes, seconds=1)
    with pytest.raises(NotFound, match="expired"):
        svc.confirm_opt_out("10.2.2.3", pending.confirm_token, photo(NEAR[0], 1))
    assert len(faces_of_person(svc, NEAR[0])) == 2
    assert NEAR[0] not in found_people(svc, team["ivy"], NEAR[0])


def test_the_officer_reverses_an_unconfirmed_opt_out_but_not_a_confirmed_one(
        svc: FaceSearchService) -> None:
    team = gallery(svc)
    dan = officer_of(svc, team)
    disputed = svc.opt_out("10.3.3.3", photo(NEAR[0], 0))  # someone else's photo, say
    genuine = svc.opt_out("10.3.3.4", photo(FAR[0], 0))
    svc.confirm_opt_out("10.3.3.4", genuine.confirm_token, photo(FAR[0], 1))
    listed = {o.public_id: o for o in svc.opt_outs(dan)}
    assert listed[disputed.request_id].status == "hidden"
    assert svc.record_of_processing(OPERATOR)["statistics"]["opt_outs"] == 2  # hidden and erased
    assert listed[genuine.request_id].status == "done" and listed[genuine.request_id].faces_removed == 2
    assert listed[disputed.request_id].client != listed[genuine.request_id].client
    with pytest.raises(Forbidden):
        svc.opt_outs(team["ivy"])
    with pytest.raises(Forbidden):
        svc.reinstate_opt_out(team["ada"], listed[disputed.request_id].id, "mine")
    with pytest.raises(InvalidRequest):
        svc.reinstate_opt_out(dan, listed[disputed.request_id].id, " ")

    svc.reinstate_opt_out(dan, listed[disputed.request_id].id, "the suspect's friend sent it")
    assert NEAR[0] in found_people(svc, team["ivy"], NEAR[0])  # found again at once
    assert svc.record_of_processing(OPERATOR)["statistics"]["opt_outs"] == 1
    assert len(rows(svc, "SELECT id FROM suppressions")) == 1  # the genuine one's stays
    with pytest.raises(NotFound):  # the requester can no longer confirm it
        svc.confirm_opt_out("10.3.3.3", disputed.confirm_token, photo(NEAR[0], 1))
    assert len(faces_of_person(svc, NEAR[0])) == 2
    with pytest.raises(Forbidden, match="erasure is final"):
        svc.reinstate_opt_out(dan, listed[genuine.request_id].id, "too late")
    assert FAR[0] not in found_people(svc, team["ivy"], FAR[0])
    [reversal] = audited(svc, "optout.reinstate")
    assert reversal["actor"] == "dan" and reversal["detail"] == {
        "request": disputed.request_id, "reason": "the suspect's friend sent it", "suppressions": 1}
    assert len(audited(svc, "optout.reinstate.refused")) == 2  # the admin's and the late one
    assert [r["detail"] for r in audited(svc, "optout.list")] == [{"requests": 2}]


# Cheap, queued analysis ------------------------------------------------------------------------------

def test_a_public_photo_with_several_faces_has_only_its_largest_described(
        svc: FaceSearchService, monkeypatch: pytest.MonkeyPatch) -> None:
    big = Image.open(lfw_photos(NEAR[0])[0]).convert("RGB")
    small = Image.open(lfw_photos(FAR[0])[0]).convert("RGB").resize((200, 200))
    group = Image.new("RGB", (big.width + small.width, big.height), "white")
    group.paste(big, (0, 0))
    group.paste(small, (big.width, 25))
    data = jpeg_bytes(group)
    assert len(svc.analyzer.detect(np.asarray(group))) == 2
    described: list[int] = []
    describe = svc.analyzer.describe
    monkeypatch.setattr(svc.analyzer, "describe", lambda per_image, mirror: (
        described.append(sum(len(d) for _, d in per_image)), describe(per_image, mirror))[1])
    pending = svc.opt_out("10.4.4.4", data)
    assert described == [1]  # one face described, not both
    [(template,)] = rows(svc, "SELECT embedding FROM suppressions")
    alone = svc._template_of(photo(NEAR[0], 0)).embedding
    other = svc._template_of(photo(FAR[0], 0)).embedding
    kept = np.frombuffer(template, "<f4")
    # The larger face's: far nearer to it than two photos of one person need be, unlike the other.
    strict = svc.cut_off("suppress", faces=1).distance
    assert np.linalg.norm(kept - alone) < strict / 4 < strict <= np.linalg.norm(kept - other)
    assert pending.request_id


def test_a_full_public_queue_refuses_at_once_while_an_investigators_search_goes_on(
        tmp_path: Path, clock: Clock) -> None:
    svc = service(tmp_path, clock, public_queue_length=0, public_requests_per_day=1)
    try:
        team = gallery(svc)
        web = TestClient(create_app(svc), client=("10.5.5.5", 5000))
        holding, release = threading.Event(), threading.Event()

        def slow_public_analysis() -> None:  # another stranger's photo, taking its time
            with svc.public_queue.turn():
                holding.set()
                release.wait(30)

        worker = threading.Thread(target=slow_public_analysis)
        worker.start()
        try:
            assert holding.wait(10)
            started = time.monotonic()
            refused = web.post("/api/v1/public/opt-out",
                               files={"selfie": ("s.jpg", photo(NEAR[0], 0), "image/jpeg")})
            assert time.monotonic() - started < 5
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "busy"
            assert int(refused.headers["retry-after"]) > 0
            with pytest.raises(Busy):
                svc.request_access("10.5.5.6", photo(NEAR[0], 0), "me@example.org")
            # The investigator's search does not queue behind strangers.
            assert NEAR[1] in found_people(svc, team["ivy"], NEAR[1])
        finally:
            release.set()
            worker.join()
        # Refused for capacity, the request did not count: the one request of the day is left.
        accepted = web.post("/api/v1/public/opt-out",
                            files={"selfie": ("s.jpg", photo(NEAR[0], 0), "image/jpeg")})
        assert accepted.status_code == 202, accepted.text
        assert rows(svc, "SELECT count(*) FROM subject_requests") == [(1,)]
        assert [r["detail"]["reason"] for r in audited(svc, "public.refused")] == [
            "too many requests are waiting; try again in a minute"] * 2  # two clients
    finally:
        svc.close()


# The access link ---------------------------------------------------------------------------------

def test_opening_an_access_link_spends_nothing_and_an_expired_one_loses_its_template(
        tmp_path: Path, clock: Clock) -> None:
    svc = service(tmp_path, clock, access_report_hours=5)
    try:
        team = gallery(svc)
        dan = officer_of(svc, team)
        acks = [svc.request_access(f"10.6.6.{n}", photo(NEAR[0], 0), "me@example.org")
                for n in (1, 2, 3)]
        ids = {r.public_id: r.id for r in svc.access_requests(dan)}
        used, unopened, opened_late = (svc.decide_access_request(dan, ids[a.request_id], True)
                                       for a in acks)
        for _ in range(3):  # a mail scanner, then the person, looking at the page
            assert svc.access_link("10.6.6.9", used).request_id == acks[0].request_id
        report = svc.access_report("10.6.6.1", used)
        assert len(report.images) == 2
        with pytest.raises(NotFound):
            svc.access_link("10.6.6.1", used)

        def template(ack: object) -> bytes | None:
            return svc.requests.get(request_id=ids[ack.request_id]).template

        assert template(acks[1]) is not None
        clock.advance(hours=5, seconds=1)
        with pytest.raises(NotFound):  # opened after expiry: refused, and the template goes
            svc.access_link("10.6.6.3", opened_late)
        assert template(acks[2]) is None and template(acks[1]) is not None
        # Never opened: retention drops it with the contact details.
        assert svc.run_retention(OPERATOR) == RetentionReport(request_contacts=3)
        assert template(acks[1]) is None
        with pytest.raises(NotFound):
            svc.access_report("10.6.6.2", unopened)
    finally:
        svc.close()


def test_the_access_report_lists_every_place_each_photo_was_seen(
        svc: FaceSearchService, clock: Clock) -> None:
    dan = officer_of(svc, gallery(svc))
    svc.add_source(OPERATOR, "web", "legitimate_interests", "FR")
    collected = lfw_photos(NEAR[0])[1]
    clock.advance(days=1)
    svc.ingest(OPERATOR, [collected], "web", location_of=lambda _: "https://web.example/a.jpg")
    for client in ("10.6.6.1", "10.6.6.2"):
        svc.request_access(client, photo(NEAR[0], 0), "me@example.org")
    links = [svc.decide_access_request(dan, r.id, True) for r in svc.access_requests(dan)]

    report = svc.access_report("10.6.6.1", links[0])
    # A file's place in words, never the server's path to it.
    seen = {i.location: i for i in report.images}
    assert len(seen) == 2
    first = seen[f"file {collected.name} on the server"]
    assert first.sightings == [
        Sighting(f"file {collected.name} on the server", "", "short", first.collected_at),
        Sighting("https://web.example/a.jpg", "", "web", clock.now.isoformat(timespec="seconds"))]
    [other] = [i for place, i in seen.items() if place != first.location]
    assert [s.location for s in other.sightings] == [other.location]

    page = TestClient(create_app(svc), client=("10.6.6.2", 5000)).post(f"/access/report/{links[1]}")
    assert page.status_code == 200, page.text
    assert page.text.count("also seen") == 1 and "(web): https://web.example/a.jpg" in page.text
