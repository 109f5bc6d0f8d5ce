"""The public pages in a real browser (Debian's Chromium through Playwright, as test_browser.py),
on a phone-sized screen: a person opens their one-time access report (source by name, lawful
basis in words), finds the spent link telling them what to do next, then removes themselves:
photo tips, a photo without a face refused in plain words with a way back, the second step
saying what is done, what confirming deletes and that it cannot be undone, a receipt with a
print button, and its status checked by request number. Also a logged-in user's 404 keeps their
menu. Screenshots go to results/screenshots/.

Opting out erases a person's faces and blocks them, so the public flow runs on a small server of
its own (one source, one person's photos, one officer) rather than the session's deployment,
whose public allowance from 127.0.0.1 other tests use; the 404 runs on the session's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, Page, expect

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from tests.conftest import LFW, jpeg_bytes, lfw_photos, noise_image
from tests.conftest import log_in as service_log_in
from tests.web.conftest import PEOPLE, Deployment, password_of, start_server, stop_server
from tests.web.test_browser import (  # noqa: F401 - browser is a fixture
    ACCESSIBILITY_PROBLEMS,
    SLOW_MS,
    browser,
    log_in_as,
    shoot,
)

# Someone no other test uses: two photos archived, photo 0 and the last one never were.
PERSON = [p.name for p in sorted((LFW / "images").iterdir())
          if len(list(p.glob("*.jpg"))) >= 4 and p.name not in PEOPLE][130]
SOURCE_NAME = "City news archive"
PHONE = {"width": 375, "height": 740}


@dataclass
class PublicSite:
    url: str
    report_link: str  # an approved access request's one-time link, for PERSON
    access_request: str  # its request number


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PublicSite]:
    """A server holding two archived photos of PERSON, who asked for access (approved)."""
    home = tmp_path_factory.mktemp("public") / "data"
    service = FaceSearchService(Settings(home=home, workers=1))
    try:
        operator = service.local_operator("browser test")
        service.add_source(operator, "news-2026", "legitimate_interests", "FR",
                           display_name=SOURCE_NAME)
        assert service.ingest(operator, lfw_photos(PERSON)[1:3], "news-2026").faces_indexed == 2
        service.create_user(operator, "dan", password_of("dan"), "dpo", "Officers")
        dan = service_log_in(service, "dan", password_of("dan"))[0]
        ack = service.request_access("192.0.2.50", lfw_photos(PERSON)[0].read_bytes(),
                                     "person@example.org")
        [request_id] = [r.id for r in service.access_requests(dan) if r.public_id == ack.request_id]
        token = service.decide_access_request(dan, request_id, True)
    finally:
        service.close()
    process, url = start_server(home)
    yield PublicSite(url, f"{url}/access/report/{token}", ack.request_id)
    stop_server(process)


def accessible(page: Page) -> None:
    assert page.evaluate(ACCESSIBILITY_PROBLEMS) == [], page.url


def test_a_person_reads_their_report_then_removes_themselves_and_checks_the_status(
        browser: Browser, site: PublicSite) -> None:
    context = browser.new_context(viewport=PHONE)
    context.set_default_timeout(30_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        # The access report: the source by its name, the lawful basis in words, no raw codes.
        page.goto(site.report_link)
        page.get_by_role("button", name="Show my report").click()
        expect(page.locator("h1")).to_have_text("What facesearch holds about you")
        rows = page.locator("#images tr.image-row")
        expect(rows).to_have_count(2)
        for row in (rows.nth(0), rows.nth(1)):
            expect(row).to_contain_text(SOURCE_NAME)
            expect(row).to_contain_text("legitimate interests (GDPR Art. 6(1)(f))")
            expect(row).not_to_contain_text("legitimate_interests")
            expect(row).not_to_contain_text(PERSON)  # no server file path
        accessible(page)
        shoot(page, "public-access-report")
        # The link is spent: the page says what to do next rather than a bare error.
        response = page.goto(site.report_link)
        assert response is not None and response.status == 404
        expect(page.locator("h1")).to_have_text("This link no longer works")
        expect(page.locator("#next-steps")).to_contain_text("data-protection officer")
        expect(page.get_by_role("link", name="make a new access request")).to_have_attribute(
            "href", "/access")
        accessible(page)
        shoot(page, "public-access-link-spent")

        # Photo tips, then a photo without a face: refused in plain words, with a way back.
        page.goto(f"{site.url}/opt-out")
        tips = page.locator("#photo-tips")
        for tip in ("one face", "Look straight at the camera", "Good light", "No sunglasses",
                    "not kept"):
            expect(tips).to_contain_text(tip)
        page.set_input_files("#selfie", files=[{"name": "sky.jpg", "mimeType": "image/jpeg",
                                                "buffer": jpeg_bytes(noise_image(320, 240))}])
        with page.expect_response(f"{site.url}/opt-out") as refused:
            page.get_by_role("button", name="Remove me").click()
        assert refused.value.status == 422
        expect(page.locator("#refusal h1")).to_have_text("We could not find a face in your photo")
        expect(page.locator("#refusal-reason")).to_have_text("No face found in the photo.")
        assert page.locator("#refusal").evaluate(
            "e => getComputedStyle(e).borderLeftColor") == "rgb(180, 35, 24)"  # the error colour
        accessible(page)
        shoot(page, "public-opt-out-refused")
        page.get_by_role("link", name="Try another photo").click()
        page.wait_for_url(f"{site.url}/opt-out")

        # The second step says what is done, what confirming deletes, and that it is final.
        page.set_input_files("#selfie", str(lfw_photos(PERSON)[0]))
        page.get_by_role("button", name="Remove me").click()
        page.locator("#hidden-now").wait_for(state="visible", timeout=SLOW_MS)
        expect(page.locator("#done-now")).to_contain_text("No search returns you")
        expect(page.locator("#done-now")).to_contain_text("no end date")
        expect(page.locator("#what-happens")).to_contain_text("delete every face in our index")
        expect(page.locator("#cannot-undo")).to_contain_text("This cannot be undone.")
        expect(page.get_by_role("link", name="Leave without deleting anything")).to_have_attribute(
            "href", "/")
        request_number = page.locator("#request-id").inner_text().strip()
        accessible(page)
        shoot(page, "public-opt-out-confirm")

        # The first photo again is refused on the same page, which still confirms.
        page.set_input_files("#second-selfie", str(lfw_photos(PERSON)[0]))
        with page.expect_response(f"{site.url}/opt-out/confirm") as again:
            page.get_by_role("button", name="Delete my images").click()
        assert again.value.status == 422
        expect(page.locator("#refusal-reason")).to_contain_text("not the same photo again")
        expect(page.locator("#refusal-reason")).to_contain_text("Nothing has been deleted yet")
        expect(page.locator("#request-id")).to_have_text(request_number)
        accessible(page)

        # The receipt: what was done, how to check on it, and a print button (app.js).
        page.set_input_files("#second-selfie", str(lfw_photos(PERSON)[-1]))
        page.get_by_role("button", name="Delete my images").click()
        page.locator("#receipt").wait_for(state="visible", timeout=SLOW_MS)
        expect(page.locator("#request-id")).to_have_text(request_number)
        expect(page.locator("#faces-removed")).to_have_text("2")
        expect(page.locator("#what-was-done")).to_contain_text("Deleted 2 faces of yours from 2 images")
        expect(page.locator("#how-to-check")).to_contain_text(request_number)
        page.evaluate("() => { window.printed = 0; window.print = () => { window.printed += 1; }; }")
        page.get_by_role("button", name="Print or save this receipt").click()
        assert page.evaluate("window.printed") == 1
        accessible(page)
        shoot(page, "public-opt-out-receipt")
        page.emulate_media(media="print")  # printed: the receipt alone, no menu or button
        expect(page.locator("header.top")).to_be_hidden()
        expect(page.locator("#print")).to_be_hidden()
        expect(page.locator("#request-id")).to_be_visible()
        page.emulate_media(media="screen")

        # The status by request number: the receipt's link fills it in.
        page.locator("#how-to-check a").click()
        expect(page.locator("#status-words")).to_have_text(
            "done: your images are deleted and you are blocked from collection")
        expect(page.locator("#number")).to_have_value(request_number)
        accessible(page)
        shoot(page, "public-request-status")
        page.fill("#number", site.access_request)
        page.get_by_role("button", name="Check").click()
        expect(page.locator("#status-words")).to_contain_text("your report has been shown")
        expect(page.locator("#status-deadline")).to_be_visible()
        expect(page.locator("#request-status")).not_to_contain_text("person@example.org")
        page.fill("#number", "0123456789abcdef")
        with page.expect_response(re.compile(r"/access/status\?number=")) as unknown:
            page.get_by_role("button", name="Check").click()
        assert unknown.value.status == 404
        expect(page.locator("#status-error")).to_have_text("No request has this number: check it against your receipt.")
        expect(page.locator("#request-status")).to_have_count(0)
        accessible(page)
        assert not problems, problems
    finally:
        context.close()


def test_a_logged_in_users_missing_page_keeps_their_menu(browser: Browser,
                                                         deployment: Deployment) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        response = page.goto(f"{deployment.url}/no-such-page")
        assert response is not None and response.status == 404
        expect(page.get_by_role("navigation", name="Your data")).to_be_visible()  # a stranger's
        log_in_as(page, deployment, "ivy")
        for path in ("/no-such-page", "/cases/nothing/here"):
            response = page.goto(f"{deployment.url}{path}")
            assert response is not None and response.status == 404
            expect(page.locator("h1")).to_have_text("Not found")
            menu = page.get_by_role("navigation", name="Main")
            expect(menu.get_by_role("link", name="Cases")).to_have_attribute("href", "/cases")
            expect(page.locator("header .who")).to_contain_text("ivy · investigator")
        shoot(page, "not-found-logged-in")
        # The menu's log-out still works from there: the page carries the session's CSRF token.
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(f"{deployment.url}/login")
    finally:
        context.close()
