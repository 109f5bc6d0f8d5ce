"""Cases and review decisions in a real browser (Debian's Chromium through Playwright, as
test_browser.py): a "not a match" carries into the case's later searches behind a toggle, a
"possible" says another investigator must confirm, a mark is withdrawn; the case list's
columns, the confirmation before closing, and the report page and its PDF (case number and
"page N of M" on every page, named after the case). Screenshots go to results/screenshots/."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pypdfium2
from playwright.sync_api import BrowserContext, Page, expect

from facesearch.web.dates import readable
from tests.conftest import LFW, lfw_photos
from tests.web.conftest import PEOPLE, Deployment, probe, wait_for_job
from tests.web.test_browser import (  # noqa: F401 - browser and context are fixtures
    SCREENSHOTS,
    browser,
    case_number,
    context,
    log_in,
    open_case,
    shoot,
)

# Someone outside the gallery (and outside the other tests' outsiders), uploaded to be erased.
OUTSIDER = [p.name for p in sorted((LFW / "images").iterdir())
            if len(list(p.glob("*.jpg"))) >= 3 and p.name not in PEOPLE][52]


def search(client: httpx.Client, case_id: int, photo: bytes) -> int:
    found = client.post(f"/api/v1/cases/{case_id}/searches", data={"face": "largest", "top": "5"},
                        files={"probe": ("p.jpg", photo, "image/jpeg")})
    assert found.status_code == 201, found.text
    return found.json()["search_id"]


def candidates_of(client: httpx.Client, case_id: int, search_id: int) -> list[dict]:
    return client.get(f"/api/v1/cases/{case_id}/searches/{search_id}").json()["candidates"]


def review(page: Page, candidate_id: int, button: str, note: str = "") -> None:
    row = page.locator(f"#candidate-{candidate_id}")
    if note:
        row.get_by_label("Note (optional; kept in the case)").fill(note)
    with page.expect_response(re.compile(rf".*/candidates/{candidate_id}/mark")) as posted:
        row.get_by_role("button", name=button, exact=True).click()
    assert posted.value.status == 303
    page.wait_for_load_state()


def test_a_rejection_carries_into_later_searches_of_the_case_and_a_mark_can_be_withdrawn(
        context: BrowserContext, deployment: Deployment) -> None:
    page = context.new_page()
    log_in(page, deployment, "ivy")
    case_id = open_case(page, deployment, case_number())
    with deployment.client("ivy") as ivy:
        first = search(ivy, case_id, probe(4))
        later = search(ivy, case_id, probe(4))
        listed = candidates_of(ivy, case_id, later)
        assert len(listed) >= 2, "the test needs two candidates to review"
        rejected, other = listed[0], listed[1]
        first_listing = next(c for c in candidates_of(ivy, case_id, first)
                             if c["face_id"] == rejected["face_id"])

    page.goto(f"{deployment.url}/cases/{case_id}/searches/{first}")
    review(page, first_listing["id"], "Not a match", note="different ear shape")
    row = page.locator(f"#candidate-{first_listing['id']}")
    expect(row.locator(".status")).to_have_text("rejected")  # where it was marked, it stays in view
    expect(row.locator(".mark")).to_contain_text("rejected by ivy")
    expect(row.locator(".mark")).to_contain_text("different ear shape")

    # The later search of the same case lists the face, hidden behind a link that shows it.
    page.goto(f"{deployment.url}/cases/{case_id}/searches/{later}")
    expect(page.locator(f"#candidate-{rejected['id']}")).to_have_count(0)
    expect(page.locator(f"#candidate-{other['id']}")).to_be_visible()
    toggle = page.get_by_role("link", name="Show 1 candidate already marked not a match")
    toggle.click()
    page.wait_for_url(re.compile(r"\?show=rejected"))
    carried = page.locator(f"#candidate-{rejected['id']}")
    expect(carried.locator(".case-mark")).to_contain_text(f"rejected in search {first} by ivy")
    expect(carried.locator(".case-mark")).to_contain_text("different ear shape")
    carried.scroll_into_view_if_needed()
    shoot(page, "review-carried-rejection")
    expect(page.get_by_role("link", name="Hide the 1 candidate already marked not a match")).to_be_visible()

    # A "possible" says in words that someone else must confirm; its author can withdraw it.
    review(page, other["id"], "Possible match", note="same scar")
    row = page.locator(f"#candidate-{other['id']}")
    expect(row.locator(".status")).to_have_text("possible")
    expect(row.locator(".confirm-needed")).to_contain_text(
        "another investigator must confirm this possible match (not ivy, who marked it)")
    with page.expect_response(re.compile(rf".*/candidates/{other['id']}/marks/\d+/withdraw")) as posted:
        row.get_by_role("button", name="Withdraw my possible mark").click()
    assert posted.value.status == 303
    page.wait_for_load_state()
    expect(row.locator(".status")).to_have_text("unreviewed")
    expect(row.locator(".mark.withdrawn del")).to_contain_text("possible by ivy")
    expect(row.locator(".mark.withdrawn")).to_contain_text("withdrawn by ivy")
    expect(row.locator(".confirm-needed")).to_have_count(0)
    expect(row.get_by_role("button", name="Withdraw my possible mark")).to_have_count(0)
    shoot(page, "review-withdrawn")
    withdrawals = [r for r in deployment.audit() if r["action"] == "candidate.mark.withdraw"]
    assert withdrawals[-1]["actor"] == "ivy" and withdrawals[-1]["detail"]["candidate_id"] == other["id"]


def erasable_candidate(deployment: Deployment, ivy: httpx.Client, case_id: int) -> tuple[int, int]:
    """A search whose top candidate is a face of its own, uploaded for this test (so that erasing
    it takes nothing from the shared gallery): (search id, candidate)."""
    photos = lfw_photos(OUTSIDER)
    with deployment.client("ada") as admin:
        job = admin.post("/api/v1/ingest-jobs", data={"source": "lfw"},
                         files={"files": (photos[2].name, photos[2].read_bytes(), "image/jpeg")}).json()
        assert wait_for_job(admin, job["id"])["status"] == "done"
    search_id = search(ivy, case_id, photos[0].read_bytes())
    return search_id, candidates_of(ivy, case_id, search_id)[0]


def test_the_case_list_closing_and_the_report_with_its_pdf(
        context: BrowserContext, deployment: Deployment, tmp_path: Path) -> None:
    number = case_number()
    with deployment.client("ivy") as ivy, deployment.client("ian") as ian:
        case = ivy.post("/api/v1/cases", json={"number": number, "purpose": "missing person",
                                               "offence_type": "fraud"}).json()
        searches = [search(ivy, case["id"], probe(person)) for person in (0, 2, 3, 4, 5)]
        confirmed = candidates_of(ivy, case["id"], searches[0])[0]
        mark = f"/api/v1/candidates/{confirmed['id']}/marks"
        assert ivy.post(mark, json={"mark": "possible", "note": "tattoo on the left hand"}).status_code == 201
        assert ian.post(mark, json={"mark": "confirmed"}).status_code == 201
        dropped = candidates_of(ivy, case["id"], searches[1])[0]
        made = ivy.post(f"/api/v1/candidates/{dropped['id']}/marks", json={"mark": "rejected"}).json()
        assert ian.post(f"/api/v1/candidates/{dropped['id']}/marks/{made['marks'][-1]['id']}/withdraw"
                        ).status_code == 403  # only its author withdraws a mark
        assert ivy.post(f"/api/v1/candidates/{dropped['id']}/marks/{made['marks'][-1]['id']}/withdraw"
                        ).status_code == 200
        erased_search, erased = erasable_candidate(deployment, ivy, case["id"])
        assert ivy.post(f"/api/v1/candidates/{erased['id']}/marks",
                        json={"mark": "possible", "note": "before erasure"}).status_code == 201
    with deployment.client("ada") as admin:
        assert admin.delete(f"/api/v1/faces/{erased['face_id']}").status_code == 200
    with deployment.client("ivy") as ivy:  # an erased candidate is marked no more
        refused = ivy.post(f"/api/v1/candidates/{erased['id']}/marks", json={"mark": "rejected"})
        assert refused.status_code == 422 and "can no longer be marked" in refused.text
    with deployment.db() as db:  # as retention does past FACESEARCH_PROBE_RETENTION_DAYS
        db.execute("DELETE FROM probe_crops WHERE search_id = ?", (searches[4],))

    page = context.new_page()
    log_in(page, deployment, "ivy")
    row = page.locator(f"#case-{case['id']} td")
    # Dates as app.js shows them in the reader's zone and locale: a year, and a time for activity.
    expect(row).to_have_text([number, "fraud", "missing person", "ivy", re.compile(r"20\d\d"),
                              "6", "1", re.compile(r"20\d\d.*\d:\d\d"), "open"])
    headers = page.locator("#case-list th")
    expect(headers).to_have_text(["Case", "Offence or incident", "Purpose", "Opened by", "Opened",
                                  "Searches", "Confirmed leads", "Last activity", "Status"])
    shoot(page, "cases")

    # Closing asks first, says what it does, and can be declined.
    page.goto(f"{deployment.url}/cases/{case['id']}")
    page.get_by_role("link", name="Close case…").click()
    expect(page.locator("h1")).to_have_text(f"Close case {number}?")
    expect(page.locator("main")).to_contain_text("No more searches can be made in this case")
    expect(page.locator("main")).to_contain_text("cannot be reopened")
    shoot(page, "case-close-confirm")
    page.get_by_role("link", name="Keep it open").click()
    expect(page.locator("#closed")).to_have_count(0)
    page.get_by_role("link", name="Close case…").click()
    page.get_by_role("button", name=f"Close case {number}").click()
    page.wait_for_url(f"{deployment.url}/cases/{case['id']}")
    expect(page.locator("#closed")).to_contain_text("by ivy")
    expect(page.locator("#offence")).to_contain_text("fraud")
    closing = next(r for r in reversed(deployment.audit()) if r["action"] == "case.close")
    assert closing["actor"] == "ivy" and closing["case_number"] == number

    page.goto(f"{deployment.url}/cases/{case['id']}/report")
    main = page.locator("main")
    expect(main).to_contain_text(f"Case {number}: report")
    expect(page.locator("#counts")).to_contain_text("6 searches")
    expect(page.locator("#counts")).to_contain_text("1 confirmed")
    expect(page.locator("#counts")).to_contain_text("1 erased")
    expect(main).to_contain_text("closed")
    expect(page.locator(f"#report-candidate-{confirmed['id']}")).to_contain_text(
        "possible by ivy")
    expect(page.locator(f"#report-candidate-{confirmed['id']}")).to_contain_text("tattoo on the left hand")
    expect(page.locator(f"#report-candidate-{dropped['id']} .mark.withdrawn del")).to_contain_text(
        "rejected by ivy")
    gone = page.locator(f"#report-candidate-{erased['id']}")
    expect(gone).to_contain_text("erased on")
    expect(gone).to_contain_text("possible by ivy")
    expect(gone).to_contain_text("any note removed with the face")
    expect(gone).not_to_contain_text("before erasure")
    expect(page.locator("main .probe-crop-gone")).to_have_count(1)  # the search whose crop went
    expect(page.locator("main .report-probes figcaption").first).to_have_text("Probe face 1")
    expect(gone.locator("img")).to_have_count(0)
    shoot(page, "case-report")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download PDF").click()
    assert download.value.suggested_filename == f"case-{number}.pdf"
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    pdf = pypdfium2.PdfDocument(saved)
    texts = [pdf[i].get_textpage().get_text_range() for i in range(len(pdf))]
    assert len(texts) >= 2, "the report should span pages for this test to mean anything"
    for n, text in enumerate(texts, start=1):
        assert f"Case {number} \u00b7 page {n} of {len(texts)}" in text, (n, text[-200:])
    whole = "\n".join(texts)
    for expected in ("Offence or incident type: fraud", "6 searches", "1 confirmed", "1 erased",
                     "closed", "by ivy", "tattoo on the left hand", "withdrawn by ivy",
                     "any note removed with the face", "probe crop is no longer kept",
                     "(probe face 1)", f"Search {erased_search} by ivy"):
        assert expected in whole, expected
    assert "before erasure" not in whole and "probe face 0" not in whole
    assert readable(case["opened_at"]) in whole
    # The first page as an image, for a person to look at (docs/screenshots/ keeps a copy).
    pdf[0].render(scale=1.5).to_pil().save(SCREENSHOTS / "case-report-pdf.png")
