"""Reviewing a search in a real browser (Debian's Chromium through Playwright, as
test_browser.py): the probe picker's errors beside it, numbered face boxes, the results page with
the probe crop beside every candidate's expected strangers, band and link, and the comparison
view with both crops at one size and the source image with the face boxed; at a phone's width
the probe sits above the list. Screenshots go to results/screenshots/."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.conftest import jpeg_bytes, lfw_photos, noise_image
from tests.web.conftest import PEOPLE, Deployment
from tests.web.test_browser import (  # noqa: F401 - browser and context are fixtures
    SLOW_MS,
    browser,
    case_number,
    context,
    log_in,
    open_case,
    shoot,
)

# Someone of the deployment's gallery whom no other browser test searches (see SEARCHED...).
PERSON = 4
BANDS = ("strong", "moderate", "weak")


def all_images_loaded(page: Page, selector: str) -> None:
    page.wait_for_function("""s => [...document.querySelectorAll(s)]
                                   .every(img => img.complete && img.naturalWidth > 0)""", arg=selector)


def check_picker_errors(page: Page, tmp_path: Path) -> None:
    """(c) A photo without a face: the error, in plain words, right under the picker, as an
    alert; the preview and face list stay hidden until a photo is chosen."""
    expect(page.locator("#probe-view")).to_be_hidden()
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(jpeg_bytes(noise_image(320, 240)))
    page.set_input_files("#probe", str(noise))
    error = page.locator("#drop + #probe-error")  # the next thing after the picker
    expect(error).to_have_text("No face found in this photo; try another.", timeout=SLOW_MS)
    expect(error).to_have_attribute("role", "alert")
    expect(error).to_have_class(re.compile(r"\bform-error\b"))
    expect(page.locator("#face-choice")).to_be_hidden()
    drop, shown = page.locator("#drop").bounding_box(), error.bounding_box()
    assert drop and shown and 0 <= shown["y"] - (drop["y"] + drop["height"]) < 60
    assert page.evaluate("getComputedStyle(document.getElementById('probe-error')).color") \
        == "rgb(180, 35, 24)"  # --bad: styled as an error, not as a status line


def check_results(page: Page) -> list[str]:
    """(a) The probe crop beside the list, and every candidate with its expected strangers,
    its band and a link to its page or image; the weak ones set apart. Returns the candidates'
    comparison links."""
    probe = page.locator(".probe-panel img.probe-crop")
    expect(probe).to_have_count(1)
    all_images_loaded(page, ".probe-panel img, #results li.result img")
    expect(page.locator("#bands")).to_contain_text("strong lead, fewer than 0.01")
    expect(page.locator("#bands")).to_contain_text("weak lead, 1 or more")
    rows = page.locator("#results li.result")
    assert rows.count() >= 2
    links = []
    for n in range(rows.count()):
        row = rows.nth(n)
        band = row.get_attribute("data-band")
        assert band in BANDS
        expect(row.locator(".band")).to_have_text(f"{band} lead")
        expected = float(row.locator(".expected").get_attribute("data-value") or "nan")
        assert expected >= 0 and (expected < 1) == (band != "weak")
        href = row.locator("a.page-link").get_attribute("href") or ""
        assert href.startswith(("http://", "https://", "/api/v1/cases/")), href
        assert "/home/" not in row.inner_text() and "/tmp/" not in row.inner_text()
        links.append(row.get_by_role("link", name="Compare").get_attribute("href") or "")
        # Many strangers this close: inside the section set apart, and only those.
        inside = row.locator("xpath=ancestor::section[@id='many-strangers']").count() == 1
        assert inside == (band == "weak")
    expect(page.locator("#many-strangers h2")).to_have_text("Many strangers look this close")
    # Sticky on a wide screen: scrolled down to the last candidate, the probe is still in view.
    assert page.evaluate("getComputedStyle(document.querySelector('.probe-panel')).position") == "sticky"
    rows.last.scroll_into_view_if_needed()
    box = probe.bounding_box()
    assert box and 0 <= box["y"] and box["y"] + box["height"] <= page.viewport_size["height"]
    page.evaluate("window.scrollTo(0, 0)")
    return links


def check_comparison(page: Page, deployment: Deployment, link: str) -> None:
    """(b) Probe and candidate at the same rendered size, then the full source image with the
    face boxed, and its provenance."""
    page.goto(f"{deployment.url}{link}")
    all_images_loaded(page, "img.compare-crop")
    probe, candidate = (page.locator(f"#compare-{n}").bounding_box() for n in ("probe", "candidate"))
    assert probe and candidate and probe["width"] > 100
    assert (probe["width"], probe["height"]) == (candidate["width"], candidate["height"])
    # The source image has loaded, and the box drawn over it lies on it.
    all_images_loaded(page, "img#source-image")
    expect(page.locator("#source-gone")).to_be_hidden()
    frame = page.locator("img#source-image").bounding_box()
    face = page.locator("#source-frame rect.face-outline").bounding_box()
    assert frame and face and face["width"] > 10
    assert frame["x"] <= face["x"] and face["x"] + face["width"] <= frame["x"] + frame["width"] + 1
    assert frame["y"] <= face["y"] and face["y"] + face["height"] <= frame["y"] + frame["height"] + 1
    # Gone from its source (the route answers 404): the words take the image's place.
    page.route("**/source-image", lambda route: route.fulfill(status=404))
    page.reload()
    expect(page.locator("#source-gone")).to_be_visible()
    expect(page.locator("#source-gone")).to_contain_text("no longer available at its source")
    expect(page.locator("#source-frame")).to_be_hidden()
    page.unroute("**/source-image")
    provenance = page.locator("dl.provenance")
    expect(provenance).to_contain_text("Jurisdiction")
    expect(provenance).to_contain_text("on the server")  # the gallery's files: named, no path
    assert "/" not in provenance.locator("dd").nth(2).inner_text()


def test_a_reviewer_sees_the_probe_beside_readable_candidates_and_compares_one(
        browser: Browser, context: BrowserContext, deployment: Deployment, tmp_path: Path) -> None:
    page = context.new_page()
    log_in(page, deployment, "ivy")
    case_id = open_case(page, deployment, case_number())
    check_picker_errors(page, tmp_path)

    page.set_input_files("#probe", str(lfw_photos(PEOPLE[PERSON])[0]))
    box = page.locator(".face-box").first
    box.wait_for(state="visible", timeout=SLOW_MS)
    expect(page.locator("#probe-error")).to_be_hidden()  # a new photo clears the old error
    expect(box.locator(".face-number")).to_have_text("1")  # numbered as the list names it
    expect(page.locator("#face-choice")).to_contain_text("Face 1")
    page.click("#search-button")
    page.wait_for_url(re.compile(rf"/cases/{case_id}/searches/\d+$"), timeout=SLOW_MS)
    search_url = page.url

    # This small gallery holds no weak lead; a candidate stored from a large gallery's search
    # reads as weak (the page shows what was stored) and is set apart.
    weak = page.locator("#results li.result").last
    weak_id = int((weak.get_attribute("id") or "").removeprefix("candidate-"))
    with deployment.db() as db:
        db.execute("UPDATE candidates SET expected_false_matches = 2.5 WHERE id = ?", (weak_id,))
    page.reload()
    expect(page.locator(f"#many-strangers #candidate-{weak_id}")).to_have_attribute("data-band", "weak")
    expect(page.locator(f"#candidate-{weak_id} .expected")).to_have_text("2.5")

    # The stored search in the API carries the same fields on every candidate.
    with deployment.client("ivy") as ivy:
        stored = ivy.get(f"/api/v1/cases/{case_id}/searches/{search_url.rsplit('/', 1)[1]}").json()
    assert {(c["id"] == weak_id, c["band"]) for c in stored["candidates"]} <= {
        (False, "strong"), (False, "moderate"), (True, "weak")}
    assert all(c["expected_false_matches"] is not None for c in stored["candidates"])

    links = check_results(page)
    shoot(page, "results-page")
    check_comparison(page, deployment, links[0])
    shoot(page, "comparison-view")

    # (d) At a phone's width the probe sits above the list, not beside it.
    phone = browser.new_context(viewport={"width": 375, "height": 740})
    try:
        small = phone.new_page()
        log_in(small, deployment, "ivy")
        small.goto(search_url)
        probe = small.locator(".probe-panel").bounding_box()
        first = small.locator("#results li.result").first.bounding_box()
        assert probe and first and probe["y"] + probe["height"] <= first["y"]
        assert small.evaluate("document.documentElement.scrollWidth") <= 376
        shoot(small, "results-page-phone")
    finally:
        phone.close()

