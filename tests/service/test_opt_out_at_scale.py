"""Opt-out at a gallery's scale, with the default detector and embedder on real LFW faces: ten of
sixty people opt out; every other person is found exactly as often as before, none of their
faces erased; the ten are found nowhere; and the faces that are only near an opt-out's selfie
wait for the data-protection officer, who erases the requester's and dismisses the strangers'."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from facesearch.config import Settings
from facesearch.errors import Forbidden, InvalidRequest, NoFace
from facesearch.service import FaceSearchService
from facesearch.types import Box
from facesearch.web.app import create_app
from tests.conftest import LFW, OPERATOR, lfw_photos
from tests.service.test_accounts_and_cases import Clock, people
from tests.service.test_governance import rows
from tests.service.test_public_requests import officer_of

PEOPLE = 60  # people with four photos or more, by name
PHOTOS = 5  # at most, per person: the first is held out as their probe, the rest are indexed
OPTING_OUT = slice(0, PEOPLE, 6)  # every sixth person: ten
CENTRE = 125  # of LFW's 250 x 250 photos


def chosen_people() -> list[str]:
    named = sorted(d.name for d in (LFW / "images").iterdir() if len(lfw_photos(d.name)) >= 4)
    return named[:PEOPLE]


def person_of(location: str, box: Box) -> str:
    """Whose face it is: an LFW photo is centred on the person it is filed under; any other
    face in it is someone else's, unknown."""
    centred = box.left <= CENTRE < box.right and box.top <= CENTRE < box.bottom
    return Path(location).parent.name if centred else "unknown"


def live_faces(svc: FaceSearchService) -> dict[int, str]:
    """Every stored face and whose it is."""
    return {face_id: person_of(location, Box(*box)) for face_id, location, *box in rows(
        svc, "SELECT faces.id, images.location, box_left, box_top, box_right, box_bottom "
        "FROM faces JOIN images ON images.id = faces.image_id")}


def searches(svc: FaceSearchService, investigator: object, names: list[str]) -> dict[str, list[str]]:
    """For each person, whose faces their held-out photo's search returns, nearest first
    (nobody's where the detector finds no face in it)."""
    case = svc.open_case(investigator, f"C-{len(svc.trail.records())}", "missing person", offence_type="robbery")
    found = {}
    for name in names:
        try:
            result = svc.search(investigator, case.id, lfw_photos(name)[0].read_bytes(), face="largest")
        except NoFace:
            found[name] = []
            continue
        found[name] = [person_of(c.location, c.box) for c in result.faces[0].candidates]
    return found


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory):
    svc = FaceSearchService(Settings(
        home=tmp_path_factory.mktemp("scale") / "data", workers=1,
        searches_per_minute_user=1000, searches_per_day_user=1000,
        searches_per_minute_organisation=1000, searches_per_day_organisation=1000), Clock())
    names = chosen_people()
    svc.add_source(OPERATOR, "lfw", "public_task", "US")
    svc.ingest(OPERATOR, [p for name in names for p in lfw_photos(name)[1:PHOTOS]], "lfw")
    yield svc, names, people(svc)["ivy"], officer_of(svc, {})
    svc.close()


def test_ten_of_sixty_opt_out_and_only_they_go(scale) -> None:
    svc, names, investigator, officer = scale
    leaving = names[OPTING_OUT]
    staying = [name for name in names if name not in leaving]
    assert len(leaving) == 10 and len(svc.store.suppression_templates()) == 0
    before_faces = live_faces(svc)
    before = searches(svc, investigator, names)
    found_before = {name: bool(before[name]) and before[name][0] == name for name in staying}
    assert sum(found_before.values()) >= 40  # the gallery finds most people to begin with
    assert all(any(found == name for found in before[name]) for name in leaving)

    receipts = {}
    for number, name in enumerate(leaving):
        client = f"198.51.100.{number}"
        pending = svc.opt_out(client, lfw_photos(name)[0].read_bytes())
        # The second photo: one of theirs that the check accepts as the same person.
        for path in lfw_photos(name)[1:PHOTOS]:
            try:
                receipts[name] = svc.confirm_opt_out(client, pending.confirm_token, path.read_bytes())
                break
            except InvalidRequest as refused:  # then the next photo is tried
                assert "not the person" in str(refused)
        assert name in receipts, f"no second photo of {name} was accepted"

    after_confirmation = live_faces(svc)
    erased_at_once = {face_id: person for face_id, person in before_faces.items()
                      if face_id not in after_confirmation}
    # The strict cut-off erased someone at once, and never a stranger.
    assert erased_at_once and set(erased_at_once.values()) <= set(leaving)
    assert sum(r.faces_removed for r in receipts.values()) == len(erased_at_once)

    # The borderline faces wait for the officer, with each requester's reference.
    reviews = svc.opt_out_reviews(officer)
    references = {receipts[name].request_id: name for name in leaving}
    assert reviews and {r.public_id for r in reviews} == {
        receipt.request_id for receipt in receipts.values() if receipt.faces_in_review}
    queued = {f.face_id: references[r.public_id] for r in reviews for f in r.faces}
    assert all(f.distance < r.review.distance for r in reviews for f in r.faces)
    # Nothing queued was erased or hidden meanwhile: each face is still stored.
    assert set(queued) <= set(after_confirmation)
    # Among them are faces of the requesters themselves that the strict cut-off did not reach.
    theirs = {face_id for face_id, requester in queued.items()
              if after_confirmation[face_id] == requester}
    assert theirs

    # The officer's page shows each queued face with its crop; faces not listed have none.
    web = TestClient(create_app(svc))
    web.headers["Authorization"] = f"Bearer {svc.create_api_key(officer, 'review')[1]}"
    page = web.get("/dpo/opt-outs")
    assert page.status_code == 200 and all(f'id="review-face-{i}"' in page.text for i in queued)
    first = reviews[0]
    crop = f"/dpo/opt-outs/{first.request_id}/faces/{first.faces[0].face_id}/crop"
    assert web.get(crop).headers["content-type"] == "image/jpeg"
    stranger = next(i for i, p in after_confirmation.items() if p in staying and i not in queued)
    assert web.get(f"/dpo/opt-outs/{first.request_id}/faces/{stranger}/crop").status_code == 404
    with pytest.raises(InvalidRequest, match="decide on each"):  # nothing goes undecided
        svc.decide_opt_out_review(officer, first.request_id, [], [])
    with pytest.raises(Forbidden):  # the officer's alone
        svc.decide_opt_out_review(investigator, first.request_id, [], [f.face_id for f in first.faces])
    # The officer erases the requester's faces and dismisses the strangers', the first review
    # through the page's form.
    for review in reviews:
        requester = references[review.public_id]
        mine = [f.face_id for f in review.faces if after_confirmation[f.face_id] == requester]
        others = [f.face_id for f in review.faces if f.face_id not in mine]
        if review is first:
            posted = web.post(f"/dpo/opt-outs/{review.request_id}/review", follow_redirects=False,
                              data={"listed": [f.face_id for f in review.faces], "erase": mine})
            assert posted.status_code == 303, posted.text
        else:
            assert svc.decide_opt_out_review(officer, review.request_id, mine, others) == len(mine)
    assert svc.opt_out_reviews(officer) == []
    decided = [r["detail"] for r in svc.trail.records() if r["action"] == "optout.review"]
    # A face near two requesters' photos is listed for both: decided in each while stored.
    assert set(i for d in decided for i in d["erased"] + d["dismissed"]) == set(queued)
    after = live_faces(svc)
    assert set(before_faces) - set(after) == set(erased_at_once) | theirs
    # No face of anyone who stayed was erased: dismissed strangers are kept.
    assert {i for i, p in before_faces.items() if p in staying} <= set(after)

    now = searches(svc, investigator, names)
    # Every other person is found exactly as often as before ...
    assert {name: bool(now[name]) and now[name][0] == name for name in staying} == found_before
    # ... and the ten are found nowhere: not by their own photos, not by anyone else's.
    assert not set(leaving) & {found for listed in now.values() for found in listed}
