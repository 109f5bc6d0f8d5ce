"""A multi-photo search over HTTP: several `probe` files are one person's, searched as one face;
the stored result page says so."""

from __future__ import annotations

import hashlib

from facesearch.fusion import RULE
from tests.conftest import lfw_photos
from tests.web.conftest import PEOPLE, Deployment
from tests.web.test_api import browser_session, open_case, person_of


def test_several_probe_files_make_one_search_recorded_with_every_photo(deployment: Deployment) -> None:
    # Photos 1-3 of each person are the gallery's; 0 and the fifth on were never indexed.
    person = next(name for name in PEOPLE if len(lfw_photos(name)) >= 6)
    photos = [p.read_bytes() for p in lfw_photos(person)[:1] + lfw_photos(person)[4:6]]
    hashes = [hashlib.sha256(photo).hexdigest() for photo in photos]
    with deployment.client("ivy") as ivy:
        case = open_case(ivy)
        response = ivy.post(f"/api/v1/cases/{case['id']}/searches", data={"face": "largest"},
                            files=[("probe", (f"p{n}.jpg", photo, "image/jpeg"))
                                   for n, photo in enumerate(photos)])
        assert response.status_code == 201, response.text
        result = response.json()
        assert result["probe_photos"] == hashes and result["fusion"] == RULE
        assert len(result["faces"]) == 1
        assert person_of(deployment, result["faces"][0]["candidates"][0]["face_id"]) == person
        stored = ivy.get(f"/api/v1/cases/{case['id']}/searches/{result['search_id']}").json()
        assert stored["probe_photos"] == hashes
        too_many = ivy.post(f"/api/v1/cases/{case['id']}/searches",
                            files=[("probe", ("p.jpg", photos[0], "image/jpeg"))] * 6)
        assert too_many.status_code == 422 and "1 to 5 photos" in too_many.json()["error"]["message"]
    record = [r for r in deployment.audit() if r["action"] == "search"][-1]
    assert record["detail"]["probe_photos"] == hashes
    browser, _ = browser_session(deployment, "ivy")
    try:
        page = browser.get(f"/cases/{case['id']}/searches/{result['search_id']}").text
    finally:
        browser.close()
    assert f"Multi-photo search of {len(photos)} photos" in page
