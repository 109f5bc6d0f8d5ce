"""The web pages in a real browser: Debian's Chromium, headless, driven by Playwright against
the served deployment. An investigator logs in, opens a case, boxes and searches a probe,
reviews the candidates with a colleague (the two-person rule) and exports the case report.

Screenshots of the main pages go to results/screenshots/ for a human to look at."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from tests.conftest import ROOT, jpeg_bytes, lfw_photos, next_totp, noise_image
from tests.web.conftest import PEOPLE, Deployment, password_of, totp_code

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "results" / "screenshots"
# Whose photo 0 each test probes with: distinct people, so each search stands on its own. The
# detector finds no face in photo 0 of PEOPLE[1], so it is left out.
SEARCHED, REVIEWED, REPORTED = 0, 2, 3
# The first face detection loads the models in the server; on a 2-core machine that takes a while.
SLOW_MS = 90_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium package")
    with sync_playwright() as playwright:
        # Debian's build, not a downloaded one: the tests must run without network access.
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


def new_context(browser: Browser) -> BrowserContext:
    """A fresh profile: its own cookies, so one user's session never leaks into another's."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(30_000)
    return context


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = new_context(browser)
    yield context
    context.close()


@pytest.fixture(scope="module", autouse=True)
def screenshot_dir() -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)


def shoot(page: Page, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    path.unlink(missing_ok=True)  # a stale file from an earlier run must not pass for this one
    page.screenshot(path=str(path), full_page=True)
    assert path.exists() and path.stat().st_size > 0, path
    return path


def case_number() -> str:
    # The deployment is shared by the whole session, and case numbers are unique per organisation.
    return f"BT-{uuid.uuid4().hex[:10]}"


def person_of_face(deployment: Deployment, face_id: int) -> str:
    """The LFW person a gallery face belongs to: the name of its image's folder."""
    with deployment.db() as db:
        row = db.execute("SELECT images.location FROM faces"
                         " JOIN images ON images.id = faces.image_id WHERE faces.id = ?",
                         (face_id,)).fetchone()
    assert row is not None, f"face {face_id} is not in the gallery"
    return Path(row[0]).parent.name


def enter_password(page: Page, deployment: Deployment, username: str,
                   screenshot: str | None = None) -> None:
    """The log-in form's first step: the browser lands on the second factor's page."""
    page.goto(f"{deployment.url}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password_of(username))
    if screenshot:
        shoot(page, screenshot)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/login/(code|enrol)$"))


def enter_code(page: Page, deployment: Deployment, username: str) -> None:
    """The second factor: the user's app's code; a user with none yet sets one up with the
    key the page shows, and goes on past their recovery codes."""
    if page.url.endswith("/login/enrol"):
        secret = page.locator("#totp-secret").inner_text()
        page.get_by_label("Code from the app").fill(next_totp(secret, None, time.time(), earliest=0))
        page.get_by_role("button", name="Confirm").click()
        expect(page.locator("#recovery-codes li")).to_have_count(10)
        page.get_by_role("link", name="I have saved them, continue").click()
    else:
        page.get_by_label("Code").fill(totp_code(deployment.home, username))
        page.get_by_role("button", name="Continue").click()
    page.wait_for_url(lambda url: "/login" not in url)


def log_in(page: Page, deployment: Deployment, username: str,
           screenshot: str | None = None) -> None:
    enter_password(page, deployment, username, screenshot)
    enter_code(page, deployment, username)
    page.wait_for_url(f"{deployment.url}/cases")
    expect(page.locator("header .who")).to_contain_text(f"{username} · investigator · Agency A")


def log_in_as(page: Page, deployment: Deployment, username: str) -> None:
    """Log in with any role, wherever its start page is."""
    enter_password(page, deployment, username)
    enter_code(page, deployment, username)


def log_out(page: Page, deployment: Deployment) -> None:
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{deployment.url}/login")


def open_case(page: Page, deployment: Deployment, number: str) -> int:
    page.goto(f"{deployment.url}/cases")
    page.fill("#number", number)
    # Not the first option, so the test shows the choice really travels with the form.
    page.select_option("#purpose", "missing person")
    page.select_option("#offence_type", "robbery")
    page.fill("#authorisation", "warrant 2024/17")
    page.get_by_role("button", name="Open case").click()
    page.wait_for_url(re.compile(r"/cases/\d+$"))
    expect(page.locator("h1")).to_have_text(f"Case {number}")
    expect(page.locator("main")).to_contain_text(
        "Purpose: missing person · authorisation warrant 2024/17")
    expect(page.locator("#offence")).to_contain_text("robbery")
    return int(page.url.rsplit("/", 1)[1])


def search_probe(page: Page, case_id: int, person: int, screenshot: str | None = None) -> int:
    """Upload photo 0 of PEOPLE[person] on the case page, wait for its face boxes, search, and
    return the search id of the result page the browser lands on."""
    page.set_input_files("#probe", str(lfw_photos(PEOPLE[person])[0]))
    # app.js draws the boxes once /api/v1/probe-faces answers; the model may still be loading.
    page.locator(".face-box").first.wait_for(state="visible", timeout=SLOW_MS)
    expect(page.locator("#search-button")).to_be_enabled()
    expect(page.locator("#search-status")).to_contain_text("face(s) found")
    # The largest face is chosen, and its box lies on the photo rather than beside it.
    chosen = page.locator(".face-box.chosen")
    expect(chosen).to_have_count(1)
    box, photo = chosen.bounding_box(), page.locator("#probe-image").bounding_box()
    assert box and photo and box["width"] > 10 and box["height"] > 10
    assert photo["x"] <= box["x"] and box["x"] + box["width"] <= photo["x"] + photo["width"] + 1
    assert photo["y"] <= box["y"] and box["y"] + box["height"] <= photo["y"] + photo["height"] + 1
    if screenshot:
        shoot(page, screenshot)
    page.click("#search-button")
    page.wait_for_url(re.compile(rf"/cases/{case_id}/searches/\d+$"), timeout=SLOW_MS)
    return int(page.url.rsplit("/", 1)[1])


def first_candidate(page: Page) -> tuple[int, int]:
    """(candidate id, face id) of the top-ranked result."""
    first = page.locator("#results li.result").first
    expect(first).to_be_visible()
    candidate_id = int((first.get_attribute("id") or "").removeprefix("candidate-"))
    return candidate_id, int(first.get_attribute("data-face") or "")


def press_review_button(page: Page, candidate_id: int, button: str) -> int:
    """Press one of a candidate's review buttons; the status its form post was answered with."""
    posts_mark = re.compile(rf".*/candidates/{candidate_id}/mark$")
    with page.expect_response(posts_mark) as posted:
        page.locator(f"#candidate-{candidate_id}").get_by_role(
            "button", name=button, exact=True).click()
    page.wait_for_load_state()  # the page the post redirected to, or the error page
    return posted.value.status


def review_by_two(browser: Browser, page: Page, deployment: Deployment, search_url: str,
                  candidate_id: int, screenshot: str | None = None) -> None:
    """ivy (on page) marks the candidate possible, is refused confirming it herself, logs out;
    ian, in a fresh browser context, confirms it."""
    row = page.locator(f"#candidate-{candidate_id}")
    assert press_review_button(page, candidate_id, "Possible match") == 303
    expect(row.locator(".status")).to_have_text("possible")
    expect(row.locator(".mark")).to_have_count(1)
    expect(row.locator(".mark").first).to_contain_text("possible by ivy")

    # Two-person rule: whoever marked "possible" cannot also confirm. The page offers her no
    # Confirm button, and the server refuses a crafted one (a stale page, a script).
    expect(row.get_by_role("button", name="Confirm", exact=True)).to_have_count(0)
    page.evaluate("""id => {
        const button = document.createElement("button");
        Object.assign(button, {name: "mark", value: "confirmed", type: "submit", textContent: "Confirm"});
        document.querySelector(`#candidate-${id} form.marks`).appendChild(button);
    }""", candidate_id)
    assert press_review_button(page, candidate_id, "Confirm") == 403
    expect(page.locator("h1")).to_have_text("Not permitted")
    expect(page.get_by_role("alert")).to_contain_text("second investigator")
    if screenshot:
        shoot(page, f"{screenshot}-refused")
    page.goto(search_url)
    expect(row.locator(".status")).to_have_text("possible")  # the refusal changed nothing
    log_out(page, deployment)
    page.goto(search_url)  # the session is really gone: the log-in form instead of the results
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.locator("#results")).to_have_count(0)

    colleague = new_context(browser)
    try:
        other = colleague.new_page()
        log_in(other, deployment, "ian")
        other.goto(search_url)
        assert press_review_button(other, candidate_id, "Confirm") == 303
        theirs = other.locator(f"#candidate-{candidate_id}")
        expect(theirs).to_have_attribute("data-status", "confirmed")
        expect(theirs.locator(".status")).to_have_text("confirmed")
        expect(theirs.locator(".mark")).to_have_count(2)
        expect(theirs.locator(".mark").nth(0)).to_contain_text("possible by ivy")
        expect(theirs.locator(".mark").nth(1)).to_contain_text("confirmed by ian")
        if screenshot:
            theirs.scroll_into_view_if_needed()
            shoot(other, screenshot)
    finally:
        colleague.close()


def test_an_investigator_searches_a_probe_and_the_top_result_is_that_person(
        context: BrowserContext, deployment: Deployment) -> None:
    page = context.new_page()
    problems: list[str] = []
    # A CSP violation, a failed fetch or a script error would show here before it showed on a
    # screen. The app has no favicon, and Chromium's own request for one is no page's fault.
    page.on("console", lambda m: problems.append(f"{m.text} at {m.location['url']}")
            if m.type == "error" and not m.location["url"].endswith("/favicon.ico") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
            if r.status >= 400 else None)

    log_in(page, deployment, "ivy", screenshot="login")
    case_id = open_case(page, deployment, case_number())
    search_id = search_probe(page, case_id, person=SEARCHED, screenshot="case-probe")

    expect(page.locator("h1")).to_have_text(f"Search {search_id}")
    _, face_id = first_candidate(page)
    assert person_of_face(deployment, face_id) == PEOPLE[SEARCHED]
    # Every candidate row has its crop loaded (served by the API with the session cookie).
    page.wait_for_function("""() => [...document.querySelectorAll('#results li.result img')]
                                      .every(img => img.complete && img.naturalWidth > 0)""")
    shoot(page, "results")
    assert not problems, problems
    # The case page lists the search it now holds.
    page.goto(f"{deployment.url}/cases/{case_id}")
    expect(page.get_by_role("link", name=f"Search {search_id}")).to_be_visible()


def test_a_photo_without_a_face_leaves_the_search_button_disabled(
        context: BrowserContext, deployment: Deployment, tmp_path: Path) -> None:
    page = context.new_page()
    log_in(page, deployment, "ivy")
    case_id = open_case(page, deployment, case_number())
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(jpeg_bytes(noise_image(320, 240)))
    page.set_input_files("#probe", str(noise))
    expect(page.locator("#search-status")).to_have_text("No face found in this photo; try another.",
                                                        timeout=SLOW_MS)
    expect(page.locator(".face-box")).to_have_count(0)
    expect(page.locator("#search-button")).to_be_disabled()
    # Nothing was searched, so the case still holds no search.
    page.goto(f"{deployment.url}/cases/{case_id}")
    expect(page.get_by_role("table", name="Searches")).to_contain_text("No searches yet.")


def test_a_candidate_is_confirmed_only_by_a_second_investigator(
        browser: Browser, context: BrowserContext, deployment: Deployment) -> None:
    page = context.new_page()
    log_in(page, deployment, "ivy")
    case_id = open_case(page, deployment, case_number())
    search_id = search_probe(page, case_id, person=REVIEWED)
    candidate_id, face_id = first_candidate(page)
    assert person_of_face(deployment, face_id) == PEOPLE[REVIEWED]

    search_url = f"{deployment.url}/cases/{case_id}/searches/{search_id}"
    review_by_two(browser, page, deployment, search_url, candidate_id, screenshot="review")
    with deployment.db() as db:
        marks = db.execute("SELECT mark FROM marks WHERE candidate_id = ? ORDER BY id",
                           (candidate_id,)).fetchall()
    assert [m for (m,) in marks] == ["possible", "confirmed"]  # the refused confirm left no mark


def test_the_case_report_lists_both_marks_and_downloads_as_a_pdf(
        browser: Browser, context: BrowserContext, deployment: Deployment, tmp_path: Path) -> None:
    page = context.new_page()
    number = case_number()
    log_in(page, deployment, "ivy")
    case_id = open_case(page, deployment, number)
    search_id = search_probe(page, case_id, person=REPORTED)
    candidate_id, _ = first_candidate(page)
    search_url = f"{deployment.url}/cases/{case_id}/searches/{search_id}"
    review_by_two(browser, page, deployment, search_url, candidate_id)

    # The report is read by ian, who confirmed; ivy's session ended in review_by_two.
    log_in(page, deployment, "ian")
    page.goto(f"{deployment.url}/cases/{case_id}/report")
    expect(page.locator("h1")).to_have_text(f"Case {number}: report")
    review = page.locator("section.report-search tbody tr").first.locator("td").nth(2)
    expect(review).to_contain_text("confirmed")
    expect(review).to_contain_text("possible by ivy")
    expect(review).to_contain_text("confirmed by ian")
    shoot(page, "report")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download PDF").click()
    assert download.value.suggested_filename == f"case-{number}.pdf"  # BT-<hex>: already safe
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.read_bytes().startswith(b"%PDF")



# Checks a page can make of itself: a language, a viewport, alt text on every image, a label
# on every control, text on every button, one h1, and nothing wider than the screen.
ACCESSIBILITY_PROBLEMS = """() => {
  const problems = [];
  if (!document.documentElement.lang) problems.push("no lang on <html>");
  if (!document.querySelector("meta[name=viewport]")) problems.push("no viewport meta");
  for (const img of document.querySelectorAll("img:not([alt])")) problems.push(`img ${img.src} has no alt`);
  for (const el of document.querySelectorAll(
      "input:not([type=hidden]):not([type=submit]):not([type=button]), select, textarea")) {
    const labelled = (el.id && document.querySelector(`label[for="${el.id}"]`)) || el.closest("label")
      || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
    if (!labelled) problems.push(`${el.tagName.toLowerCase()} ${el.name || el.id} has no label`);
  }
  for (const button of document.querySelectorAll("button"))
    if (!button.textContent.trim() && !button.getAttribute("aria-label")) problems.push("a button has no text");
  const headings = document.querySelectorAll("h1").length;
  if (headings !== 1) problems.push(`${headings} h1 elements`);
  if (document.documentElement.scrollWidth > window.innerWidth + 1) {
    const wide = [...document.querySelectorAll("main *")].filter(
      e => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest("table"));
    problems.push(`${document.documentElement.scrollWidth} px wide on a ${window.innerWidth} px screen: `
      + wide.slice(0, 3).map(e => `<${e.tagName.toLowerCase()} class="${e.className}">`).join(" "));
  }
  return problems;
}"""


def test_every_page_is_labelled_for_assistive_technology_and_fits_a_phone_screen(
        browser: Browser, deployment: Deployment) -> None:
    with deployment.client("ivy") as ivy:
        case = ivy.post("/api/v1/cases", json={"number": case_number(), "purpose": "missing person", "offence_type": "robbery"}).json()
        found = ivy.post(f"/api/v1/cases/{case['id']}/searches", data={"face": "largest"}, files={
            "probe": ("p.jpg", lfw_photos(PEOPLE[SEARCHED])[0].read_bytes(), "image/jpeg")})
        assert found.status_code == 201, found.text
        watch = ivy.post(f"/api/v1/cases/{case['id']}/watches", data={"authorisation": "a11y", "days": "7"},
                         files={"photo": ("p.jpg", lfw_photos(PEOPLE[SEARCHED])[0].read_bytes(), "image/jpeg")})
        assert watch.status_code == 201, watch.text  # listed on the case and the supervisor's page
    newcomer = f"n{uuid.uuid4().hex[:8]}"  # a user with no second factor yet: its set-up page
    with deployment.client("ada") as ada:
        ada.post("/api/v1/users", json={"username": newcomer, "password": password_of(newcomer),
                                        "role": "supervisor", "organisation": "Agency A"}).raise_for_status()
    pages = {
        None: ["/login", "/opt-out", "/access", "/access/status"],
        "ivy": ["/cases", f"/cases/{case['id']}", f"/cases/{case['id']}/searches/{found.json()['search_id']}",
                f"/cases/{case['id']}/searches/{found.json()['search_id']}/candidates/"
                f"{found.json()['faces'][0]['candidates'][0]['candidate_id']}",
                f"/cases/{case['id']}/report", f"/cases/{case['id']}/close", "/account"],
        "sam": ["/watches", "/supervisor"],
        "ada": ["/admin/users", "/admin/sources", "/admin/policy", "/admin/crawls"],
        "aud": ["/audit", "/records"],
        "dan": ["/dpo", "/dpo/opt-outs"],
        # After the password only: the second factor's pages.
        "password only: sam": ["/login/code"],
        f"password only: {newcomer}": ["/login/enrol"],
    }
    problems = {}
    # A small phone, then a desktop: each page must read and fit on both.
    for viewport in ({"width": 375, "height": 740}, {"width": 1280, "height": 900}):
        for username, paths in pages.items():
            context = browser.new_context(viewport=viewport)
            try:
                page = context.new_page()
                if username and username.startswith("password only: "):
                    enter_password(page, deployment, username.removeprefix("password only: "))
                elif username:
                    log_in_as(page, deployment, username)
                for path in paths:
                    response = page.goto(f"{deployment.url}{path}")
                    assert response is not None and response.status == 200, path
                    if found_here := page.evaluate(ACCESSIBILITY_PROBLEMS):
                        problems[f"{path} at {viewport['width']} px"] = found_here
                if username == "ivy" and viewport["width"] == 375:
                    page.goto(f"{deployment.url}/cases/{case['id']}/searches/{found.json()['search_id']}")
                    shoot(page, "results-phone")
            finally:
                context.close()
    assert not problems, problems


def test_an_admin_pauses_resumes_and_cancels_crawls_from_the_crawls_page(
        context: BrowserContext, deployment: Deployment) -> None:
    service = FaceSearchService(Settings(home=deployment.home))
    try:  # queued, not run: the page's buttons decide what happens to them
        operator = service.local_operator("browser test")
        seed = "http://127.0.0.1:9/"  # refused as SSRF when it runs: the job ends at once
        resumed, cancelled = (service.start_crawl(operator, [seed], [seed], "lfw", "page test").id
                              for _ in range(2))
    finally:
        service.close()
    page = context.new_page()
    log_in_as(page, deployment, "ada")
    page.goto(f"{deployment.url}/admin/crawls")
    for job, commands in ((resumed, ["Pause", "Resume"]), (cancelled, ["Cancel"])):
        for command in commands:
            page.get_by_role("button", name=f"{command} job {job}").click()
            page.wait_for_url(f"{deployment.url}/admin/crawls")
    # The resumed job runs in the server's background thread; the page refreshes itself.
    expect(page.locator(f"#crawl-{resumed} h2")).to_have_text(f"Job {resumed}: done", timeout=30_000)
    expect(page.locator(f"#crawl-{cancelled} h2")).to_have_text(f"Job {cancelled}: cancelled")
    expect(page.locator(f"#crawl-{cancelled} button")).to_have_count(0)
    audited = {(r["action"], r["detail"]["job_id"], r["actor"]) for r in deployment.audit()
               if r["action"].startswith("crawl.") and r["action"] != "crawl.start"
               and r["detail"].get("job_id") in (resumed, cancelled)}
    assert audited == {("crawl.pause", resumed, "ada"), ("crawl.resume", resumed, "ada"),
                       ("crawl.run", resumed, "ada"), ("crawl.cancel", cancelled, "ada")}
