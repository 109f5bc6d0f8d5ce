"""The case page's multi-photo search in a real browser: several photos picked at once are one
search, a photo showing several faces is refused until the largest is asked for, and the results
page says it was a multi-photo search."""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image
from playwright.sync_api import BrowserContext, expect

from tests.conftest import jpeg_bytes, lfw_photos
from tests.web.conftest import PEOPLE, Deployment
from tests.web.test_browser import (  # noqa: F401 - browser and context are fixtures
    SLOW_MS,
    browser,
    case_number,
    context,
    first_candidate,
    log_in,
    open_case,
    person_of_face,
    shoot,
)


def test_several_photos_picked_at_once_are_one_multi_photo_search(
        context: BrowserContext, deployment: Deployment, tmp_path: Path) -> None:
    # Photos 1-3 of each person are the gallery's; 0 and the fifth on were never indexed.
    person = next(name for name in PEOPLE if len(lfw_photos(name)) >= 6)
    photos = [lfw_photos(person)[0], lfw_photos(person)[4]]
    # A third photo showing two people: the person's sixth photo beside a stranger's, smaller.
    left, right = (Image.open(io.BytesIO(p.read_bytes())) for p in (lfw_photos(person)[5],
                                                                      lfw_photos(PEOPLE[-1])[0]))
    right = right.resize((right.width * 3 // 5, right.height * 3 // 5))
    pair = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
    pair.paste(left, (0, 0))
    pair.paste(right, (left.width, 0))
    (tmp_path / "pair.jpg").write_bytes(jpeg_bytes(pair))
    page = context.new_page()
    log_in(page, deployment, "ivy")
    case_id = open_case(page, deployment, case_number())
    page.set_input_files("#probe", [str(p) for p in photos] + [str(tmp_path / "pair.jpg")])
    expect(page.locator("#search-status")).to_have_text(
        "3 photos of one person, searched together as one probe.")
    page.click("#search-button")
    expect(page.locator("#search-status")).to_contain_text("photo 3 of 3", timeout=SLOW_MS)
    expect(page.locator("#search-status")).to_contain_text("faces: crop it to the person")
    page.get_by_label("If a photo shows several faces, use its largest").check()
    page.click("#search-button")
    page.wait_for_url(re.compile(rf"/cases/{case_id}/searches/\d+$"), timeout=SLOW_MS)
    expect(page.locator("#multi-photo")).to_contain_text("Multi-photo search of 3 photos")
    _, face_id = first_candidate(page)
    assert person_of_face(deployment, face_id) == person
    shoot(page, "multi-photo-results")
