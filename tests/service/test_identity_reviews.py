"""An opt-out or access request and the person's identity, on real LFW faces: the faces of the
identities of the faces within the strict cut-off are never erased or disclosed by themselves;
they wait for the data-protection officer, who erases or dismisses each (opt-out) or picks
those disclosed (access)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps

from facesearch.config import Settings
from facesearch.errors import InvalidRequest, NotFound
from facesearch.service import FaceSearchService, readable_place
from facesearch.store.metadata import from_blob
from facesearch.web.app import create_app
from tests.conftest import OPERATOR, jpeg_bytes, lfw_photos
from tests.service.test_accounts_and_cases import Clock, people
from tests.service.test_governance import audited, rows
from tests.service.test_identities import face_table, identities_by_person, ingest_people
from tests.service.test_public_requests import officer_of

PERSON = "Ann_Veneman"  # ingest_people indexes every photo of hers, and two pasted side by side


def selfie() -> bytes:
    """A photo of PERSON that is not in the gallery: her first photo, mirrored."""
    return jpeg_bytes(ImageOps.mirror(Image.open(lfw_photos(PERSON)[0]).convert("RGB")), quality=90)


@pytest.fixture
def svc(tmp_path: Path):
    # A strict cut-off far tighter than the grouping distance: many of her faces lie beyond
    # it but in her identity, as in a large gallery.
    made = FaceSearchService(Settings(home=tmp_path / "data", workers=1,
                                      suppress_false_matches=5e-6), Clock())
    ingest_people(made, tmp_path)
    yield made
    made.close()


def identity_faces(svc: FaceSearchService, identities: list[int]) -> set[int]:
    return {face_id for (face_id,) in rows(
        svc, f"SELECT id FROM faces WHERE identity_id IN ({','.join('?' * len(identities))})",
        *identities)} if identities else set()


def stored_faces(svc: FaceSearchService) -> dict[int, np.ndarray]:
    return {face_id: from_blob(blob) for face_id, blob in rows(svc, "SELECT id, embedding FROM faces")}


def test_an_opt_out_sends_the_rest_of_the_persons_identity_to_the_officer(svc) -> None:
    officer = officer_of(svc, people(svc))
    before = stored_faces(svc)
    # A stranger far from her whom clustering put in her identity (a chain of look-alikes).
    table = face_table(svc)
    her_identity = identities_by_person(table)[PERSON].most_common(1)[0][0]
    centre = np.mean([before[face] for face, _, identity, _ in table if identity == her_identity],
                     axis=0)
    stranger = max((face for face, _, _, person in table if person != PERSON),
                   key=lambda face: np.linalg.norm(before[face] - centre))
    with svc.store.transaction() as conn:
        svc.identities.assign(conn, [stranger], her_identity)
    pending = svc.opt_out("203.0.113.5", selfie())
    receipt = svc.confirm_opt_out("203.0.113.5", pending.confirm_token,
                                  lfw_photos(PERSON)[1].read_bytes())
    after = stored_faces(svc)
    template = from_blob(svc.requests.suppression_of(f"opt-out {receipt.request_id}"))
    strict = audited(svc, "optout.confirm")[-1]["detail"]["cut_off"]["distance"]
    erased = set(before) - set(after)
    # Only faces within the strict cut-off were erased ...
    assert erased and all(np.linalg.norm(before[i] - template) < strict for i in erased)
    # ... and the other faces of their identities all wait for the officer, none erased.
    found = svc.requests.get(confirm_hash=None, request_id=next(
        r.id for r in svc.opt_outs(officer) if r.public_id == receipt.request_id))
    identities = json.loads(found.review_identities)["identities"]
    rest = identity_faces(svc, identities)
    beyond_strict = {i for i in rest if np.linalg.norm(after[i] - template) >= strict}
    assert beyond_strict, "the test needs faces of her identity beyond the strict cut-off"
    review = next(r for r in svc.opt_out_reviews(officer) if r.public_id == receipt.request_id)
    listed = {f.face_id: f for f in review.faces}
    assert rest <= set(listed) and all(listed[i].same_identity for i in rest)
    # The receipt counts only the faces near her photo, never her identity's other faces,
    # which may be strangers'.
    near = [f for f in review.faces if f.distance < review.review.distance]
    assert listed[stranger].distance >= review.review.distance
    assert receipt.faces_in_review == len(near) < len(listed)
    # The officer sees the crop of a face listed for its identity alone.
    far = max(rest, key=lambda i: np.linalg.norm(after[i] - template))
    assert svc.opt_out_review_crop(officer, review.request_id, far)[:2] == b"\xff\xd8"
    # The officer erases hers and keeps the rest.
    hers = set(face_id for face_id, location in rows(
        svc, "SELECT faces.id, images.location FROM faces JOIN images ON images.id = faces.image_id")
        if f"/{PERSON}/" in location and face_id in listed)
    dismissed = set(listed) - hers
    with pytest.raises(InvalidRequest, match="decide on each"):
        svc.decide_opt_out_review(officer, review.request_id, sorted(hers), [])
    svc.decide_opt_out_review(officer, review.request_id, sorted(hers), sorted(dismissed))
    remaining = stored_faces(svc)
    assert not hers & set(remaining) and dismissed <= set(remaining)


def test_an_opt_out_review_never_lists_a_face_that_joined_her_identity_after_confirmation(
        svc) -> None:
    officer = officer_of(svc, people(svc))
    pending = svc.opt_out("203.0.113.5", selfie())
    receipt = svc.confirm_opt_out("203.0.113.5", pending.confirm_token,
                                  lfw_photos(PERSON)[1].read_bytes())
    request_id = next(r.id for r in svc.opt_outs(officer) if r.public_id == receipt.request_id)
    identities = json.loads(svc.requests.get(request_id=request_id).review_identities)["identities"]
    captured = identity_faces(svc, identities)

    def listed() -> set[int]:
        return {f.face_id for r in svc.opt_out_reviews(officer) if r.request_id == request_id
                for f in r.faces}

    assert captured and captured <= listed()
    # A stranger's face, far from her, that clustering puts in her identity afterwards (a
    # look-alike's chain): neither listed nor shown to the officer as hers.
    template = from_blob(svc.requests.suppression_of(f"opt-out {receipt.request_id}"))
    stored = stored_faces(svc)
    stranger = max(set(stored) - captured, key=lambda i: np.linalg.norm(stored[i] - template))
    assert stranger not in listed()
    with svc.store.transaction() as conn:
        svc.identities.assign(conn, [stranger], identities[0])
    assert stranger not in listed()
    with pytest.raises(NotFound):
        svc.opt_out_review_crop(officer, request_id, stranger)
    # Her identities erased whole (their numbers go), then strangers make a new identity:
    # it never gets one of those numbers, and none of its faces enters her review.
    for face_id in identity_faces(svc, identities):
        svc.delete(OPERATOR, face_id=face_id)
    assert not rows(svc, f"SELECT id FROM identities WHERE id IN ({','.join('?' * len(identities))})",
                    *identities)
    before = set(stored_faces(svc))
    svc.ingest(OPERATOR, lfw_photos("Alvaro_Uribe")[:8], "lfw")
    newcomers = set(stored_faces(svc)) - before
    made = {identity for (identity,) in rows(
        svc, f"SELECT DISTINCT identity_id FROM faces WHERE id IN ({','.join('?' * len(newcomers))})",
        *newcomers)} - {None}
    assert made and not made & set(identities)
    assert not listed() & (newcomers | captured)


def test_an_access_report_discloses_identity_faces_only_as_the_officer_chose(svc) -> None:
    officer = officer_of(svc, people(svc))
    svc.request_access("203.0.113.9", selfie(), "ann@example.org")
    request = svc.access_requests(officer)[0]
    listed = svc.access_identity_faces(officer, request.id)
    assert len(listed) >= 2 and all(f.same_identity for f in listed)
    assert audited(svc, "access.review")[-1]["detail"]["faces"] == len(listed)
    stranger = next(face_id for (face_id,) in rows(svc, "SELECT id FROM faces")
                    if face_id not in {f.face_id for f in listed})
    with pytest.raises(InvalidRequest, match="listed for review"):
        svc.decide_access_request(officer, request.id, True, disclose=[stranger])
    chosen = listed[0]
    template = from_blob(svc.requests.get(request_id=request.id).template)
    locations = dict(rows(svc, "SELECT faces.id, images.location FROM faces JOIN images ON "
                          "images.id = faces.image_id"))
    strict = {locations[face_id] for face_id in svc._faces_of(template)}
    # Through the officer's API, as through the service.
    web = TestClient(create_app(svc))
    web.headers["Authorization"] = f"Bearer {svc.create_api_key(officer, 'review')[1]}"
    shown = web.get(f"/api/v1/access-requests/{request.id}/identity-faces").json()
    assert [f["face_id"] for f in shown] == [f.face_id for f in listed]
    approved = web.post(f"/api/v1/access-requests/{request.id}/approve",
                        json={"note": "verified", "disclose": [chosen.face_id]})
    assert approved.status_code == 200, approved.text
    token = approved.json()["report_link"].rsplit("/", 1)[1]
    assert audited(svc, "access.approve")[-1]["detail"]["disclosed_faces"] == [chosen.face_id]
    report = svc.access_report("203.0.113.9", token)
    # Her images within the strict cut-off, and the one face the officer chose: the other
    # faces of her identity are not disclosed. The report names each place in words, never
    # the server's path.
    assert {image.location for image in report.images} == {
        readable_place(place) for place in strict | {chosen.location}}
    assert {f.location for f in listed[1:]} - strict - {chosen.location}
