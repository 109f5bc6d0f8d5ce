"""The results page's groups in a real browser (Debian's Chromium through Playwright, as
test_browser.py): an investigator searches a person whose photo was archived from two pages,
with a resized and a mirrored copy and another photo, and sees the candidates by identity
(best face, faces, images and pages, no name) and by photo (each photo once, with a link to
every page it was seen on). Screenshots go to results/screenshots/."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, expect

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from tests.conftest import LFW, jpeg_bytes, lfw_photos
from tests.crawl.test_crawl import write_warc
from tests.web.conftest import PEOPLE, Deployment
from tests.web.test_browser import (  # noqa: F401 - browser and context are fixtures
    ACCESSIBILITY_PROBLEMS,
    SLOW_MS,
    browser,
    case_number,
    context,
    log_in,
    open_case,
    shoot,
)

# Chosen in code, outside the deployment's gallery: its photo 0 probes, photos 1 and 2 are
# archived (photo 1 from two pages, with a resized and a mirrored copy).
PERSON = [p.name for p in sorted((LFW / "images").iterdir())
          if len(list(p.glob("*.jpg"))) >= 4 and p.name not in PEOPLE][90]
STORY, BLOG = "https://news.example/story.html", "https://blog.example/post.html"


def images_of(data: bytes) -> dict[str, bytes]:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return {"resized": jpeg_bytes(image.resize((image.width // 2, image.height // 2))),
            "mirrored": jpeg_bytes(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))}


@pytest.fixture(scope="module")
def archived(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> int:
    """The person's photos archived into the deployment's gallery; their faces are put in one
    identity of their own, so that its counts are known here. Returns the identity's id."""
    folder = tmp_path_factory.mktemp("archives")
    photo, other = (p.read_bytes() for p in lfw_photos(PERSON)[1:3])
    copies = images_of(photo)
    write_warc(folder / "story.warc.gz", [
        ("https://news.example/photo.jpg", photo), ("https://news.example/small.jpg", copies["resized"]),
        ("https://news.example/flipped.jpg", copies["mirrored"]), ("https://news.example/other.jpg", other)],
        STORY)
    write_warc(folder / "blog.warc.gz", [("https://blog.example/same.jpg", photo)], BLOG)
    service = FaceSearchService(Settings(home=deployment.home, workers=1))
    try:
        operator = service.local_operator("browser test")
        service.add_source(operator, "photo-groups", "legitimate_interests", "US")
        assert service.ingest_warc(operator, folder / "story.warc.gz", "photo-groups") == {"done": 4}
        assert service.ingest_warc(operator, folder / "blog.warc.gz", "photo-groups") == {"skipped:duplicate": 1}
    finally:
        service.close()
    with deployment.db() as db:
        identity = db.execute("INSERT INTO identities (created_at) VALUES ('2026-01-01')").lastrowid
        db.execute("UPDATE faces SET identity_id = ? WHERE image_id IN (SELECT id FROM images"
                   " WHERE location LIKE 'https://news.example/%')", (identity,))
    return identity


def search_person(page: Page, case_id: int) -> None:
    page.set_input_files("#probe", str(lfw_photos(PERSON)[0]))
    page.locator(".face-box.chosen").wait_for(state="visible", timeout=SLOW_MS)
    expect(page.locator("#search-button")).to_be_enabled()
    page.click("#search-button")
    page.wait_for_url(re.compile(rf"/cases/{case_id}/searches/\d+$"), timeout=SLOW_MS)


def face_ids_of(deployment: Deployment, identity: int) -> set[int]:
    with deployment.db() as db:
        return {i for (i,) in db.execute("SELECT id FROM faces WHERE identity_id = ?", (identity,))}


def test_the_results_page_shows_the_candidates_by_identity_and_by_photo(
        context: BrowserContext, deployment: Deployment, archived: int) -> None:
    page = context.new_page()
    log_in(page, deployment, "ivy")
    case_id = open_case(page, deployment, case_number())
    search_person(page, case_id)
    results = page.locator("#results li.result")
    expect(results.first).to_be_visible()
    theirs = face_ids_of(deployment, archived)
    listed = [int(results.nth(i).get_attribute("data-face") or 0) for i in range(results.count())]
    assert len(set(listed) & theirs) >= 3  # the photo, its resized and its mirrored copy

    # By identity: the person's identity once, with its best face and the gallery's counts.
    group = page.locator(f'#identity-groups li.identity-group[data-identity="{archived}"]')
    expect(group).to_have_count(1)
    expect(group.locator(".counts")).to_have_text("4 faces · 4 images · 2 pages")
    expect(group.locator("img")).to_have_attribute("alt", re.compile(r"^Best face of this group"))
    expect(group.locator("a")).to_have_count(len([f for f in listed if f in theirs]))
    group.locator("img").scroll_into_view_if_needed()
    page.wait_for_function("""() => [...document.querySelectorAll('#identity-groups img')]
                                      .every(img => img.complete && img.naturalWidth > 0)""")
    expect(page.locator("#identity-groups")).not_to_contain_text(PERSON.replace("_", " "))
    # Every candidate is in exactly one identity group.
    ranks = page.locator("#identity-groups li.identity-group a")
    assert sorted(int((ranks.nth(i).text_content() or "#0")[1:]) for i in range(ranks.count())) == list(
        range(1, len(listed) + 1))

    # By photo: the photo and its resized copy are one photo, seen on both pages; the mirrored
    # copy is another photo, seen on the story's page only.
    photo = page.locator("#photo-groups li.photo-group").filter(has=page.locator(f'a[href="{BLOG}"]'))
    expect(photo).to_have_count(1)
    expect(photo).to_have_attribute("data-copies", "2")
    expect(photo).to_have_attribute("data-pages", "3")
    expect(photo.locator(f'a[href="{STORY}"]')).to_have_count(2)
    expect(photo).to_contain_text("(image https://blog.example/same.jpg)")
    mirrored = page.locator("#photo-groups li.photo-group").filter(has_text="(image https://news.example/flipped.jpg)")
    expect(mirrored).to_have_count(1)
    expect(mirrored).to_have_attribute("data-copies", "1")
    expect(mirrored.locator(".sightings a")).to_have_count(1)
    # A photo group's candidate links lead to those candidates on the page.
    first_link = photo.locator(".rank a").first
    target = first_link.get_attribute("href") or ""
    expect(page.locator(target)).to_have_count(1)
    shoot(page, "results-groups")

    # The case report lists the photos too, each with every place it was seen.
    page.goto(f"{deployment.url}/cases/{case_id}/report")
    seen_on_blog = page.locator(".report-photos li").filter(has_text=BLOG)
    expect(seen_on_blog).to_have_count(1)
    expect(seen_on_blog).to_contain_text(STORY)


def test_the_groups_fit_a_phone_screen_and_are_labelled(
        browser: Browser, deployment: Deployment, archived: int) -> None:
    with deployment.client("ivy") as ivy:
        case = ivy.post("/api/v1/cases", json={"number": case_number(), "purpose": "missing person", "offence_type": "robbery"}).json()
        found = ivy.post(f"/api/v1/cases/{case['id']}/searches", data={"face": "largest"}, files={
            "probe": ("p.jpg", lfw_photos(PERSON)[0].read_bytes(), "image/jpeg")})
        assert found.status_code == 201, found.text
        # The API answers with the same groups as the page.
        assert any(g["identity_id"] == archived for g in found.json()["identities"])
        stored = ivy.get(f"/api/v1/cases/{case['id']}/searches/{found.json()['search_id']}").json()
        assert stored["photos"] == found.json()["photos"]
    phone = browser.new_context(viewport={"width": 375, "height": 740})
    try:
        page = phone.new_page()
        log_in(page, deployment, "ivy")
        page.goto(f"{deployment.url}/cases/{case['id']}/searches/{found.json()['search_id']}")
        expect(page.locator("#photo-groups")).to_be_visible()
        assert page.evaluate(ACCESSIBILITY_PROBLEMS) == []
        shoot(page, "results-groups-phone")
    finally:
        phone.close()
