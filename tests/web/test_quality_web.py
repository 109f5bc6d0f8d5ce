"""A poor probe over HTTP: the probe-face list, the search's JSON and the stored results page
say which quality measure is short, by how much, and what probes of its quality achieved."""

from __future__ import annotations

from PIL import Image, ImageFilter

from tests.conftest import jpeg_bytes, lfw_photos
from tests.web.conftest import PEOPLE, Deployment
from tests.web.test_api import browser_session, open_case, search


def test_a_blurred_probe_is_warned_about_in_the_api_and_on_the_results_page(
        deployment: Deployment) -> None:
    sharp = lfw_photos(PEOPLE[0])[0]
    blurred = jpeg_bytes(Image.open(sharp).filter(ImageFilter.GaussianBlur(3)), quality=95)
    with deployment.client("ivy") as ivy:
        faces = ivy.post("/api/v1/probe-faces", files={"probe": ("p.jpg", blurred, "image/jpeg")}).json()
        assert len(faces[0]["quality_warnings"]) == 1
        assert faces[0]["quality_warnings"][0].startswith("the face is blurred: sharpness 0.0")
        case = open_case(ivy)
        poor = search(ivy, case["id"], blurred, face="largest").json()
        good = search(ivy, case["id"], sharp.read_bytes(), face="largest").json()
    face = poor["faces"][0]
    assert face["quality_warnings"] == faces[0]["quality_warnings"]
    assert face["quality"]["sharpness"] < 0.02 and face["quality"]["face_pixels"] > 80
    assert "found their person first in" in face["quality_bound"]
    assert good["faces"][0]["quality_warnings"] == []
    browser, _ = browser_session(deployment, "ivy")
    try:
        poor_page = browser.get(f"/cases/{case['id']}/searches/{poor['search_id']}").text
        good_page = browser.get(f"/cases/{case['id']}/searches/{good['search_id']}").text
    finally:
        browser.close()
    assert "Poor probe:" in poor_page and face["quality_warnings"][0] in poor_page
    assert face["quality_bound"].split(" (")[0] in poor_page
    assert "Poor probe:" not in good_page and "Probe face:" in good_page
