"""The oversight pages in a real browser (Debian's Chromium through Playwright, as
test_browser.py): a supervisor starts on what awaits their decision; an admin of the operator's
own organisation creates a data-protection officer, which an agency's admin is told in words it
cannot; the auditor pages through the trail newest first, reads each record's detail in words
and sees the crop views of one search as one line; an ingest job's page refreshes itself and
counts its skipped files by reason. Screenshots go to results/screenshots/."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import BrowserContext, expect

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from tests.conftest import jpeg_bytes, lfw_photos, noise_image
from tests.web.conftest import (
    DEPLOYMENT_ORGANISATION,
    PEOPLE,
    PURPOSE,
    Deployment,
    password_of,
)
from tests.web.test_browser import (  # noqa: F401 - browser and context are fixtures
    ACCESSIBILITY_PROBLEMS,
    SLOW_MS,
    browser,
    context,
    log_in_as,
    log_out,
    shoot,
)


def test_a_supervisor_starts_on_approvals_and_an_operators_admin_creates_an_officer(
        context: BrowserContext, deployment: Deployment) -> None:
    newcomer = f"pia{uuid.uuid4().hex[:6]}"
    with deployment.client("ada") as ada:
        made = ada.post("/api/v1/users", json={"username": newcomer, "password": password_of(newcomer),
                                               "role": "investigator", "organisation": "Agency A"})
        assert made.status_code == 201, made.text
        # An agency's admin is offered no officer or auditor, and told why in words.
        users_page = ada.get("/admin/users").text
    assert re.findall(r"<option>([a-z]+)</option>", users_page) == ["admin", "supervisor", "investigator"]
    assert "You cannot add auditors or data-protection officers" in users_page
    assert f"the admins of its own organisation, {DEPLOYMENT_ORGANISATION}," in users_page

    page = context.new_page()
    page.set_default_timeout(SLOW_MS)
    log_in_as(page, deployment, "sam")
    assert page.url == f"{deployment.url}/supervisor"  # the log-in lands on what awaits sam
    pending = page.locator("#pending-investigators")
    expect(pending).to_contain_text(newcomer)
    expect(page.locator("main > h2, main section h2").first).to_have_text("Investigators to approve")
    expect(page.locator("#pending-watches")).to_be_visible()
    expect(page.locator("#cases")).to_be_visible()  # then the cases
    shoot(page, "supervisor-home")
    page.get_by_role("button", name=f"Approve {newcomer}").click()
    page.wait_for_url(f"{deployment.url}/supervisor")
    expect(pending).not_to_contain_text(newcomer)
    with deployment.db() as db:
        assert db.execute("SELECT status FROM users WHERE username = ?", (newcomer,)).fetchone()[0] == "active"
    log_out(page, deployment)

    service = FaceSearchService(Settings(home=deployment.home))
    try:
        service.create_user(service.local_operator("browser test"), "ola", password_of("ola"), "admin",
                            DEPLOYMENT_ORGANISATION)
    finally:
        service.close()
    officer = f"dpo{uuid.uuid4().hex[:6]}"
    log_in_as(page, deployment, "ola")
    page.goto(f"{deployment.url}/admin/users")
    expect(page.locator("#role option")).to_have_text(["admin", "supervisor", "investigator", "auditor", "dpo"])
    expect(page.locator("#roles-withheld")).to_have_count(0)
    page.get_by_label("Username").fill(officer)
    page.get_by_label("Initial password (12 characters or more)").fill(password_of(officer))
    page.select_option("#role", "dpo")
    shoot(page, "admin-creates-officer")
    page.get_by_role("button", name="Add user").click()
    page.wait_for_url(f"{deployment.url}/admin/users")
    expect(page.locator(f"#user-{officer}")).to_contain_text("dpo")
    expect(page.locator(f"#user-{officer}")).to_contain_text(DEPLOYMENT_ORGANISATION)


def test_the_audit_page_pages_newest_first_reads_in_words_and_groups_crop_views(
        context: BrowserContext, deployment: Deployment) -> None:
    label = uuid.uuid4().hex[:6]
    with deployment.client("ian") as ian:
        for n in range(53):  # more than a page of ian's key creations
            assert ian.post("/api/v1/me/api-keys", json={"name": f"{label}-{n}"}).status_code == 201
        case = ian.post("/api/v1/cases", json={"number": f"AUD-{label}", "purpose": PURPOSE,
                                               "offence_type": "robbery"}).json()
        found = ian.post(f"/api/v1/cases/{case['id']}/searches", data={"face": "largest", "top": "5"},
                         files={"probe": ("p.jpg", lfw_photos(PEOPLE[1])[0].read_bytes(), "image/jpeg")})
        assert found.status_code == 201, found.text
        search_id = found.json()["search_id"]
        faces = [c["face_id"] for c in found.json()["faces"][0]["candidates"][:3]]
        for face_id in faces:  # as the results page shows them: naming the search
            assert ian.get(f"/api/v1/faces/{face_id}/crop", params={"search": search_id}).status_code == 200

    page = context.new_page()
    page.set_default_timeout(SLOW_MS)
    log_in_as(page, deployment, "aud")
    page.goto(f"{deployment.url}/audit")
    page.get_by_label("Action").fill("api_key.create")
    page.get_by_label("User").fill("ian")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"/audit\?.*action=api_key.create"))
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(50)
    newest = rows.first
    # Newest first, the detail as labelled lines, not JSON.
    expect(newest.locator("dl.audit-detail dt")).to_contain_text(["API key", "name"])
    expect(newest.locator("dl.audit-detail dd").nth(1)).to_have_text(f"{label}-52")
    assert "{" not in newest.inner_text()
    shoot(page, "audit-page")

    page.get_by_role("link", name="Older").click()
    page.wait_for_url(re.compile(r"before=\d+"))
    assert "action=api_key.create" in page.url and "actor=ian" in page.url  # the filters kept
    assert all(cell.startswith("ian ") for cell in page.locator("table.audit tbody tr td:nth-child(3)").all_inner_texts())
    expect(page.locator("table.audit")).to_contain_text(f"{label}-2")  # the next records
    expect(page.locator("table.audit")).not_to_contain_text(f"{label}-52")
    page.get_by_role("link", name="Newer").click()
    page.wait_for_url(re.compile(r"after=\d+"))
    expect(rows.first.locator("dl.audit-detail dd").nth(1)).to_have_text(f"{label}-52")
    expect(rows).to_have_count(50)

    page.goto(f"{deployment.url}/audit?action=face.crop&actor=ian")
    line = page.locator("tr.crop-views").first
    expect(line).to_contain_text(f"viewed 3 candidate crops of search {search_id}")
    expect(line).to_contain_text(f"AUD-{label}")  # the search's case
    line.locator("summary").click()
    views = line.locator("details li")
    expect(views.first).to_be_visible()
    assert [re.search(r"face (\d+)", v).group(1) for v in views.all_inner_texts()] == [
        str(f) for f in reversed(faces)]  # newest first
    shoot(page, "audit-crop-views")
    page.set_viewport_size({"width": 375, "height": 740})
    assert page.evaluate(ACCESSIBILITY_PROBLEMS) == []


def test_an_ingest_job_page_refreshes_itself_and_counts_skipped_files_by_reason(
        context: BrowserContext, deployment: Deployment) -> None:
    page = context.new_page()
    page.set_default_timeout(SLOW_MS)
    log_in_as(page, deployment, "ada")
    page.goto(f"{deployment.url}/admin/sources")
    # The lawful basis and retention in words and units.
    expect(page.locator("main table").first).to_contain_text("legitimate interests (GDPR Art. 6(1)(f))")
    expect(page.locator("main table").first).to_contain_text("3 years")
    page.select_option("#source", "lfw")
    page.set_input_files("#files", files=[
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"minutes of the meeting"},
        {"name": "static.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes(noise_image(240, 180, seed=7))},
    ])
    page.get_by_role("button", name="Start ingest").click()
    page.wait_for_url(re.compile(r"/admin/ingest-jobs/\d+$"))
    job_id = page.url.rsplit("/", 1)[1]
    # Never reloaded here: the page's own refresh brings the job's end.
    expect(page.locator("#job-status")).to_contain_text("done", timeout=SLOW_MS)
    assert sorted(page.locator("#skipped-by-reason li").all_inner_texts()) == ["1 no face", "1 not an image"]
    skipped = page.locator("#skipped-files tbody tr")
    expect(skipped).to_have_count(2)
    expect(page.locator("#skipped-files")).to_contain_text("notes.txt")
    expect(page.locator("#skipped-files")).to_contain_text("static.jpg")
    shoot(page, "ingest-job-skipped")
    assert "http-equiv" not in page.content()  # it stops refreshing once the job has ended
    for width in (375, 1280):
        page.set_viewport_size({"width": width, "height": 740})
        assert page.evaluate(ACCESSIBILITY_PROBLEMS) == []
    page.goto(f"{deployment.url}/admin/sources")  # the list of jobs counts them too
    expect(page.locator(f"#job-{job_id}")).to_contain_text("1 not an image")
    expect(page.locator(f"#job-{job_id}")).to_contain_text("1 no face")
