"""Data-subject rights over a real server: an anonymous visitor opts out with a selfie in
headless Chromium, confirms with a second photo and is gone for good (search, re-ingest, disk);
the officer reviews opt-outs and reverses an unconfirmed one; an access request goes through the
data-protection officer to a one-time report, shown behind a button; the receipt is mailed
through a real SMTP server on loopback; the officer's page flags an overdue request; the record
of processing shows what is configured; public requests are limited per client address, failed
photos not counting, refusals aggregated; and every step lands in an audit trail whose hash
chain still verifies.

Opting out deletes a person from the gallery, so this module builds and serves a deployment of
its own instead of the session's shared one, which other test files rely on."""

from __future__ import annotations

import hashlib
import html
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from facesearch.calibration import cut_off, load_calibration
from facesearch.config import Settings
from facesearch.service import FaceSearchService
from tests.conftest import LFW, jpeg_bytes, lfw_photos, noise_image
from tests.service.test_governance import Inbox, assert_is_receipt, mail_server
from tests.web.conftest import (
    FACESEARCH,
    PEOPLE,
    PURPOSE,
    Deployment,
    build_deployment,
    start_server,
    stop_server,
    wait_for_job,
)
from tests.web.test_browser import CHROMIUM, SCREENSHOTS, SLOW_MS, new_context, shoot

# PEOPLE[0] opts out; PEOPLE[2] and PEOPLE[3] ask for access and stay indexed. Photos 1-3 of
# each are in the gallery (build_deployment); photo 0 and the last one never were, and the
# detector finds a face in all of these.
OPTED_OUT, ASKER, SECOND_ASKER = PEOPLE[0], PEOPLE[2], PEOPLE[3]
DISPUTED = PEOPLE[4]  # hidden by someone's opt-out, then reinstated by the officer
INDEXED_PHOTOS = 3
# Someone outside the gallery, for the rate-limit server: requests about them change nothing
# that another test looks at.
OUTSIDER = [p.name for p in sorted((LFW / "images").iterdir())
            if len(list(p.glob("*.jpg"))) >= 3 and p.name not in PEOPLE][60]
# Source retention when a source sets none: three years (the BIPA limit).
RETENTION = timedelta(days=3 * 365)
PUBLIC_LIMIT = 3
MAIL_FROM = "privacy@facesearch.test"
# An access request received 40 days before the site started: overdue from the start.
LATE_CONTACT = "late@example.org"
# What the site configures for its record of processing (defaults differ from each).
DPIA = "DPIA-2026-RIGHTS-7"
PURPOSES = [PURPOSE, "rights review"]
RETENTION_SETTINGS = {"FACESEARCH_PROBE_RETENTION_DAYS": "21",
                      "FACESEARCH_CANDIDATE_RETENTION_DAYS": "700",
                      "FACESEARCH_AUDIT_RETENTION_DAYS": "2000"}
DPO_ENDPOINTS = [("GET", "/api/v1/access-requests", None),
                 ("POST", "/api/v1/access-requests/{id}/approve", {"note": "self-approved"}),
                 ("POST", "/api/v1/access-requests/{id}/reject", {"note": "not mine"}),
                 ("POST", "/api/v1/access-requests/{id}/extend", {"reason": "busy"})]


# Deployments --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mail() -> Iterator[tuple[int, Inbox]]:
    """A real SMTP server on loopback for the site's receipts: (port, inbox)."""
    with mail_server() as server:
        yield server


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, lfw: Path,
         mail: tuple[int, Inbox]) -> Iterator[Deployment]:
    """This module's own deployment: the same users and gallery as the shared one, and an
    access request made 40 days before (through the service, with its clock set back). Its
    public limit is high, so that the flows here are not cut short by one another; it mails
    receipts and has a record of processing of its own."""
    home = tmp_path_factory.mktemp("rights") / "data"
    earlier = FaceSearchService(Settings(home=home, workers=1),
                                lambda: datetime.now(UTC) - timedelta(days=40))
    try:
        earlier.request_access("192.0.2.40", lfw_photos(SECOND_ASKER)[0].read_bytes(), LATE_CONTACT)
    finally:
        earlier.close()
    made = build_deployment(home)
    process, url = start_server(
        home, FACESEARCH_PUBLIC_REQUESTS_PER_DAY="100", FACESEARCH_SMTP_HOST="127.0.0.1",
        FACESEARCH_SMTP_PORT=str(mail[0]), FACESEARCH_SMTP_FROM=MAIL_FROM,
        FACESEARCH_DPIA_REFERENCE=DPIA, FACESEARCH_SEARCH_PURPOSES=",".join(PURPOSES),
        **RETENTION_SETTINGS)
    yield Deployment(url, home, process, made["keys"], made["user_ids"])
    stop_server(process)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A second server, on an empty data directory, that lets a client make two public
    requests a day. Empty, because the main site's earlier requests from 127.0.0.1 would
    count against the limit; public requests need no users and no gallery."""
    home = tmp_path_factory.mktemp("limited") / "data"
    home.mkdir()  # start_server logs into it before the server makes the rest
    process, url = start_server(home, FACESEARCH_PUBLIC_REQUESTS_PER_DAY=str(PUBLIC_LIMIT))
    yield Deployment(url, home, process)
    stop_server(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


# Helpers ------------------------------------------------------------------------------------------

def photo_upload(field: str, path: Path) -> dict:
    return {field: (path.name, path.read_bytes(), "image/jpeg")}


def open_case(client: httpx.Client) -> dict:
    response = client.post("/api/v1/cases", json={"number": f"R-{uuid.uuid4().hex[:8]}",
                                                  "purpose": PURPOSE, "offence_type": "robbery"})
    assert response.status_code == 201, response.text
    return response.json()


def search(client: httpx.Client, case_id: int, photo: Path) -> list[dict]:
    """Every candidate of every face of a search with photo."""
    response = client.post(f"/api/v1/cases/{case_id}/searches", files=photo_upload("probe", photo))
    assert response.status_code == 201, response.text
    return [c for face in response.json()["faces"] for c in face["candidates"]]


def person_of_face(d: Deployment, face_id: int) -> str | None:
    """The LFW person of a stored face (its image's folder), or None if no such face is stored."""
    with d.db() as db:
        row = db.execute("SELECT images.location FROM faces JOIN images ON images.id = faces.image_id"
                         " WHERE faces.id = ?", (face_id,)).fetchone()
    return Path(row[0]).parent.name if row else None


def person_of_place(place: str) -> str:
    """The LFW person of an image's place as the API gives it out: "file NAME_0001.jpg on the
    server" (the file's name, never the server's path to it); "" for another place."""
    found = re.fullmatch(r"file (.+)_[0-9]{4}\.jpg on the server", place)
    return found[1] if found else ""


def strict_cut_off(d: Deployment) -> float:
    """The distance within which an opt-out hides and erases in the deployment's gallery now."""
    settings = Settings()  # the server's, from the same environment
    with d.db() as db:
        [(faces,)] = db.execute("SELECT count(*) FROM faces").fetchall()
    return cut_off(load_calibration(settings.embedder), settings.suppress_false_matches, faces,
                   settings.false_match_ceiling)[0]


def faces_of_person(d: Deployment, person: str) -> int:
    with d.db() as db:
        return db.execute("SELECT count(*) FROM faces JOIN images ON images.id = faces.image_id"
                          " WHERE images.location LIKE ?", (f"%{person}%",)).fetchone()[0]


def request_access(d: Deployment, person: str, contact: str) -> dict:
    response = httpx.post(d.url + "/api/v1/public/access-requests", data={"contact": contact},
                          files=photo_upload("selfie", lfw_photos(person)[0]), timeout=60)
    assert response.status_code == 202, response.text
    return response.json()


def officer_list(d: Deployment) -> list[dict]:
    """The officer's list of access requests."""
    with d.client("dan") as dan:
        listed = dan.get("/api/v1/access-requests")
    assert listed.status_code == 200, listed.text
    return listed.json()


def pending_request(d: Deployment, public_id: str) -> dict:
    """The officer's view of one access request."""
    return next(r for r in officer_list(d) if r["public_id"] == public_id)


def audited(d: Deployment, after: int, action: str) -> list[dict]:
    return [r for r in d.audit(after) if r["action"] == action]


def refusals_counted(d: Deployment, action: str) -> int:
    """Anonymous refusals of action in the current windows of all clients (the audit trail has
    one record per client and window, the counters every refusal)."""
    with d.db() as db:
        return db.execute("SELECT coalesce(sum(used), 0) FROM public_allowances WHERE kind = ?",
                          (f"refused:{action}",)).fetchone()[0]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def files_under(root: Path, newer_than: float | None = None,
                skip: tuple[str, ...] = ()) -> Iterator[Path]:
    """Readable regular files under root (optionally only those modified since a time),
    not following links and skipping top-level entries named in skip."""
    for folder, dirs, names in os.walk(root, onerror=lambda _: None):
        if Path(folder) == root:
            dirs[:] = [d for d in dirs if not d.startswith(skip)]
        for name in names:
            path = Path(folder) / name
            try:
                info = path.lstat()
            except OSError:
                continue
            if not path.is_symlink() and path.is_file() and (
                    newer_than is None or info.st_mtime >= newer_than) and info.st_size < 200 << 20:
                yield path


# The opt-out --------------------------------------------------------------------------------------

@dataclass
class OptOut:
    started: float  # time.time() before anything of the opt-out happened
    selfies: list[Path]  # the first photo, then the confirming one
    receipt: dict[str, str]
    receipt_html: str
    images_on_page: int
    screenshot: Path
    browser_problems: list[str]
    audit_before: int
    faces_before: int
    faces_while_hidden: int  # after the first photo, before the second
    case_id: int
    search_before: list[dict]  # ivy's candidates for the person before the opt-out


@pytest.fixture(scope="module")
def opted_out(site: Deployment, browser: Browser) -> Iterator[OptOut]:
    """OPTED_OUT removes themselves through the page, in a browser, after ivy has searched for
    them once (so the erasure has a candidate list to reach)."""
    started = time.time()
    audit_before = site.last_audit_id()
    faces_before = faces_of_person(site, OPTED_OUT)
    with site.client("ivy") as ivy:
        case = open_case(ivy)
        found = search(ivy, case["id"], lfw_photos(OPTED_OUT)[-1])

    context = new_context(browser)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    selfie, second = lfw_photos(OPTED_OUT)[0], lfw_photos(OPTED_OUT)[-1]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        page.goto(f"{site.url}/opt-out")
        expect(page.locator("h1")).to_have_text("Remove yourself from facesearch")
        assert page.locator("#contact").count() == 0  # the address goes with the confirmation
        page.set_input_files("#selfie", str(selfie))
        page.get_by_role("button", name="Remove me").click()
        page.locator("#hidden-now").wait_for(state="visible", timeout=SLOW_MS)
        # Hidden now, not yet erased: the second photo is taken with the front camera on a phone.
        faces_while_hidden = faces_of_person(site, OPTED_OUT)
        assert page.locator("#second-selfie").get_attribute("capture") == "user"
        page.set_input_files("#second-selfie", str(second))
        page.fill("#contact", "al@example.org")
        page.get_by_role("button", name="Delete my images").click()
        page.locator("#receipt").wait_for(state="visible", timeout=SLOW_MS)
        facts = page.locator("#receipt dl dd")
        receipt = {"request_id": page.locator("#request-id").inner_text().strip(),
                   "images_found": page.locator("#images-found").inner_text().strip(),
                   "faces_removed": page.locator("#faces-removed").inner_text().strip(),
                   "faces_in_review": page.locator("#faces-in-review").inner_text().strip(),
                   # The date has no id: it is the definition after the "Date" term.
                   "date": page.locator("#receipt dt:text-is('Date') + dd").inner_text().strip()}
        assert facts.count() == 5
        screenshot = shoot(page, "opt-out-receipt")
        yield OptOut(started, [selfie, second], receipt, page.content(),
                     page.locator("img, picture").count(), screenshot, problems, audit_before,
                     faces_before, faces_while_hidden, case["id"], found)
    finally:
        context.close()


def test_an_anonymous_visitor_opts_out_with_a_selfie_and_gets_a_receipt_without_images(
        site: Deployment, opted_out: OptOut) -> None:
    # Before: ivy's search with a never-indexed photo found the person, so the erasure had
    # something to erase and a candidate list to reach.
    assert opted_out.faces_before == opted_out.faces_while_hidden == INDEXED_PHOTOS
    assert person_of_face(site, opted_out.search_before[0]["face_id"]) is None  # erased since
    assert person_of_place(opted_out.search_before[0]["location"]) == OPTED_OUT

    receipt = opted_out.receipt
    assert re.fullmatch(r"[0-9a-f]{16}", receipt["request_id"]), receipt
    assert int(receipt["images_found"]) == INDEXED_PHOTOS
    assert int(receipt["faces_removed"]) == INDEXED_PHOTOS
    today = datetime.now(UTC).date()
    assert receipt["date"] in (str(today), str(today - timedelta(days=1))), receipt  # near midnight
    assert opted_out.screenshot.stat().st_size > 0
    # The page never shows anyone's images, nor anything that names whose they were.
    assert opted_out.images_on_page == 0
    assert "<img" not in opted_out.receipt_html.lower()
    assert OPTED_OUT not in opted_out.receipt_html and "/images/" not in opted_out.receipt_html
    assert not opted_out.browser_problems, opted_out.browser_problems
    assert faces_of_person(site, OPTED_OUT) == 0

    # The request is on record as done, without the address, and audited without a photo.
    with site.db() as db:
        kind, status, contact, found, removed, template = db.execute(
            "SELECT kind, status, contact, images_found, faces_removed, template"
            " FROM subject_requests WHERE public_id = ?", (receipt["request_id"],)).fetchone()
    assert (kind, status, contact, found, removed) == ("erasure", "done", "", 3, 3)
    assert template is None  # the suppression list holds the template, not the request
    [hidden] = audited(site, opted_out.audit_before, "optout")
    assert hidden["detail"]["request"] == receipt["request_id"] and "confirm_by" in hidden["detail"]
    [record] = audited(site, opted_out.audit_before, "optout.confirm")
    assert record["actor"] == "public" and record["role"] == "public"
    assert record["client"].startswith("client-")  # a pseudonym of the address
    assert record["client"] == hidden["client"]
    assert record["detail"].pop("cut_off")["target_false_matches"] == 0.01  # the strict one
    assert record["detail"] == {"request": receipt["request_id"], "faces": 3, "images": 3,
                                "in_review": int(receipt["faces_in_review"]),
                                # Her three faces were one identity, which held no one else.
                                "identities": 1, "identity_faces": 0}


def test_the_receipt_is_mailed_to_the_address_given_which_is_then_kept_nowhere(
        site: Deployment, mail: tuple[int, Inbox], opted_out: OptOut) -> None:
    receipt = opted_out.receipt
    mails = [m for m in mail[1].messages if receipt["request_id"] in m[2]["subject"]]
    [(sender, recipients, message)] = mails
    assert sender == MAIL_FROM and recipients == ["al@example.org"]
    assert_is_receipt(message, receipt["request_id"], INDEXED_PHOTOS, INDEXED_PHOTOS, receipt["date"])
    assert OPTED_OUT not in message.as_string()  # nothing that names whose images they were
    assert 'id="mailed"' in opted_out.receipt_html  # the page says a copy went
    [record] = audited(site, opted_out.audit_before, "optout.receipt")
    assert record["detail"] == {"request": receipt["request_id"], "sent": True}
    # Neither the database (every table) nor the audit trail holds the address.
    assert "al@example.org" not in site.state_digest()
    assert all("al@example.org" not in str(r) for r in site.audit())


def test_an_opted_out_person_is_no_longer_found_by_a_search_with_another_photo(
        site: Deployment, opted_out: OptOut) -> None:
    with site.client("ivy") as ivy:
        candidates = search(ivy, opted_out.case_id, lfw_photos(OPTED_OUT)[-1])
        # The investigator whose earlier list held the person is told that it was erased.
        notices = ivy.get("/api/v1/me/notifications").json()
    for candidate in candidates:
        person = person_of_face(site, candidate["face_id"])
        assert person is not None, f"candidate face {candidate['face_id']} is not in the gallery"
        assert person != OPTED_OUT and OPTED_OUT not in candidate["location"]
    assert any("case" in n["message"] and "erased" in n["message"] for n in notices), notices
    with site.db() as db:
        erased = db.execute("SELECT count(*) FROM candidates JOIN searches"
                            " ON searches.id = candidates.search_id WHERE searches.case_id = ?"
                            " AND candidates.erased_at IS NOT NULL AND candidates.location = ''",
                            (opted_out.case_id,)).fetchone()[0]
    # Each of the person's candidates in the first search kept no trace of where its image was.
    theirs = [c for c in opted_out.search_before if person_of_place(c["location"]) == OPTED_OUT]
    assert erased == len(theirs) == INDEXED_PHOTOS


def test_reingesting_an_opted_out_persons_photos_indexes_none_of_their_faces(
        site: Deployment, opted_out: OptOut) -> None:
    folder = LFW / "images" / OPTED_OUT
    photos = len(lfw_photos(OPTED_OUT))
    with site.client("ada") as ada:
        started = ada.post("/api/v1/ingest-jobs/server-path", json={"source": "lfw", "path": str(folder)})
        assert started.status_code == 202, started.text
        job = wait_for_job(ada, started.json()["id"])
    assert job["status"] == "done", job
    progress = job["progress"]
    assert progress["images_seen"] == photos
    assert progress["faces_indexed"] == 0 and progress["images_indexed"] == 0, progress
    assert progress["faces_withheld"] == photos, progress  # one face a photo, every one withheld
    assert faces_of_person(site, OPTED_OUT) == 0
    with site.db() as db:
        # Not even the locations of the withheld images are kept: they point at the person.
        assert db.execute("SELECT count(*) FROM images WHERE location LIKE ?",
                          (f"%{OPTED_OUT}%",)).fetchone()[0] == 0


def test_the_opt_out_selfies_are_stored_nowhere_on_disk(site: Deployment, opted_out: OptOut) -> None:
    selfies = [path.read_bytes() for path in opted_out.selfies]
    digests = [hashlib.sha256(selfie).hexdigest() for selfie in selfies]
    # Everything in the data directory, whatever its age, then what anything wrote to the temp
    # directory since the opt-out began (an upload spooled there, say). Other test runs' own
    # directories are left out: they may hold these LFW photos for reasons of their own.
    checked = 0
    for path in [*files_under(site.home),
                 *files_under(Path(tempfile.gettempdir()), opted_out.started, skip=("pytest-of-",))]:
        assert not any(digest in path.name for digest in digests), path
        try:
            data = path.read_bytes()
        except OSError:
            continue  # another user's file, or one gone since it was listed
        for selfie in selfies:
            assert selfie not in data, f"a selfie's bytes are in {path}"
        checked += 1
    assert checked > 5  # the data directory at least: database, index, crops


# Access requests ----------------------------------------------------------------------------------

def test_an_access_request_is_answered_by_the_officer_with_a_report_link_that_works_once(
        site: Deployment) -> None:
    before = site.last_audit_id()
    # ivy searches for the person first, so the report has a search to name.
    with site.client("ivy") as ivy:
        case = open_case(ivy)
        returned = {c["face_id"] for c in search(ivy, case["id"], lfw_photos(ASKER)[-1])}

    ack = request_access(site, ASKER, "alastair@example.org")
    received, deadline = at(ack["received_at"]), at(ack["deadline"])
    assert abs(received - datetime.now(UTC)) < timedelta(minutes=5)
    assert timedelta(days=28) <= deadline - received <= timedelta(days=31), ack  # one calendar month
    assert deadline.month == received.month % 12 + 1 and deadline.day <= received.day

    listed = pending_request(site, ack["request_id"])
    assert listed["status"] == "pending" and listed["overdue"] is False
    assert listed["contact"] == "alastair@example.org" and listed["deadline"] == ack["deadline"]

    with site.client("dan") as dan:
        approved = dan.post(f"/api/v1/access-requests/{listed['id']}/approve",
                            json={"note": "passport checked by video call"})
    assert approved.status_code == 200, approved.text
    token = approved.json()["report_link"].removeprefix("/access/report/")
    assert approved.json()["report_link"] == f"/access/report/{token}" and len(token) >= 32
    assert approved.json()["api_link"] == f"/api/v1/public/access-reports/{token}"
    assert pending_request(site, ack["request_id"])["status"] == "approved"

    first = httpx.post(site.url + approved.json()["api_link"], timeout=60)
    assert first.status_code == 200, first.text
    report = first.json()
    assert report["request_id"] == ack["request_id"]
    # Only faces within the strict cut-off of the person's photo are disclosed: a farther one
    # could be a look-alike's, and a report must not show a stranger's photo.
    assert 1 <= len(report["images"]) <= INDEXED_PHOTOS
    for image in report["images"]:
        assert person_of_place(image["location"]) == ASKER
        assert image["source"] == "lfw"  # the source has no display name: its name
        assert image["lawful_basis"] == "legitimate interests (GDPR Art. 6(1)(f))"
        assert image["jurisdiction"] == "US"
        assert at(image["purge_date"]) - at(image["collected_at"]) == RETENTION
    searches = [s for image in report["images"] for s in image["returned_by_searches"]]
    assert searches, report  # ivy's search returned this person's faces
    # Named by organisation and date: Agency A does not let its case numbers be shown.
    assert {"case": None, "organisation": "Agency A"}.items() <= searches[0].items()
    assert timedelta(0) <= received - at(searches[0]["date"]) < timedelta(minutes=10)
    assert all(s["case"] is None for s in searches) and case["number"] not in first.text
    assert len(searches) <= len({f for f in returned if person_of_face(site, f) == ASKER})

    refusals_before = refusals_counted(site, "access.report.refused")
    second = httpx.post(site.url + approved.json()["api_link"], timeout=60)
    assert second.status_code == 404, second.text
    assert pending_request(site, ack["request_id"])["status"] == "delivered"
    with site.db() as db:
        # Once delivered, the person's template goes: nothing of their face stays for this.
        assert db.execute("SELECT template FROM subject_requests WHERE public_id = ?",
                          (ack["request_id"],)).fetchone()[0] is None

    [asked] = audited(site, before, "access.request")
    assert asked["actor"] == "public" and asked["detail"] == {"request": ack["request_id"]}
    [approval] = audited(site, before, "access.approve")
    assert approval["actor"] == "dan" and approval["role"] == "dpo"
    [delivered] = audited(site, before, "access.report")
    assert delivered["detail"] == {"request": ack["request_id"], "images": len(report["images"])}
    # The refusal is counted, and audited at most once (refusals are aggregated per hour).
    assert refusals_counted(site, "access.report.refused") == refusals_before + 1
    assert len(audited(site, before, "access.report.refused")) <= 1
    # Neither the token nor the contact address is written into the audit trail.
    for record in site.audit(before):
        assert token not in str(record) and "alastair@example.org" not in str(record)


def test_the_report_page_link_works_once_and_a_rejected_request_gets_no_link(site: Deployment) -> None:
    before = site.last_audit_id()
    ack = request_access(site, SECOND_ASKER, "albert@example.org")
    with site.client("dan") as dan:
        approved = dan.post(f"/api/v1/access-requests/{pending_request(site, ack['request_id'])['id']}"
                            "/approve", json={"note": "id card"})
    assert approved.status_code == 200, approved.text
    link = site.url + approved.json()["report_link"]

    # Opening the link (a mail scanner, a preview) shows a button and spends nothing.
    for _ in range(2):
        opened = httpx.get(link, timeout=60)
        assert opened.status_code == 200 and "text/html" in opened.headers["content-type"]
        assert ack["request_id"] in opened.text and "<table" not in opened.text.lower()
        assert re.search(r'<form method="post" id="show-report">', opened.text), opened.text
    refusals_before = refusals_counted(site, "access.report.refused")
    page = httpx.post(link, timeout=60)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "What facesearch holds about you" in page.text and ack["request_id"] in page.text
    assert page.text.count('class="image-row"') == INDEXED_PHOTOS  # one row per image
    assert f"/{SECOND_ASKER}/" not in page.text  # no server file path
    assert "<img" not in page.text.lower()
    for again in (httpx.post(link, timeout=60), httpx.get(link, timeout=60)):
        assert again.status_code == 404 and "already been used" in again.text
        assert "<table" not in again.text.lower()
        assert "make a new access request" in again.text  # what to do next
    # The page spent the link for the API as well.
    assert httpx.post(site.url + approved.json()["api_link"], timeout=60).status_code == 404

    rejected_ack = request_access(site, SECOND_ASKER, "someone-else@example.org")
    rejected_id = pending_request(site, rejected_ack["request_id"])["id"]
    with site.client("dan") as dan:
        rejected = dan.post(f"/api/v1/access-requests/{rejected_id}/reject",
                            json={"note": "could not verify identity"})
        assert rejected.status_code == 200 and rejected.json() == {"status": "rejected"}
        assert "link" not in rejected.text
        # Decided is decided: it cannot be approved afterwards to get a link after all.
        late = dan.post(f"/api/v1/access-requests/{rejected_id}/approve", json={"note": "oops"})
        assert late.status_code == 403, late.text
    view = pending_request(site, rejected_ack["request_id"])
    assert view["status"] == "rejected" and view["decided_by"] == "dan"
    with site.db() as db:
        token_hash, expires, template = db.execute(
            "SELECT report_token_hash, report_expires_at, template FROM subject_requests"
            " WHERE public_id = ?", (rejected_ack["request_id"],)).fetchone()
    assert token_hash is None and expires is None and template is None

    [rejection] = audited(site, before, "access.reject")
    assert rejection["actor"] == "dan" and rejection["detail"] == {"request": rejected_ack["request_id"]}
    assert len(audited(site, before, "access.report")) == 1
    # Page, page opened again, then API: counted each, audited at most once this hour.
    assert refusals_counted(site, "access.report.refused") == refusals_before + 3
    assert len(audited(site, before, "access.report.refused")) <= 1
    assert len(audited(site, before, "access.decide.refused")) == 1  # the late approval


@pytest.mark.parametrize("username", ["ivy", "ada"])
def test_only_the_data_protection_officer_may_use_the_access_request_endpoints(
        site: Deployment, username: str) -> None:
    ack = request_access(site, ASKER, f"{username}-test@example.org")
    request_id = pending_request(site, ack["request_id"])["id"]
    before = site.last_audit_id()
    with site.client(username) as client:
        for method, path, body in DPO_ENDPOINTS:
            response = client.request(method, path.format(id=request_id), json=body)
            assert response.status_code == 403, (method, path, response.text)
            assert "report_link" not in response.text
    view = pending_request(site, ack["request_id"])
    assert view["status"] == "pending" and view["extended_reason"] is None  # nothing changed
    refusals = [r for r in site.audit(before) if r["action"].endswith(".refused")]
    assert len(refusals) == len(DPO_ENDPOINTS)
    assert {r["actor"] for r in refusals} == {username}
    # Leave no open request behind for the officer.
    with site.client("dan") as dan:
        assert dan.post(f"/api/v1/access-requests/{request_id}/reject",
                        json={"note": "test request"}).status_code == 200


def row_of(page: str, public_id: str) -> tuple[str, str]:
    """The class and the cells of a request's row on the officer's page."""
    found = re.search(rf'<tr id="request-{public_id}" class="([^"]*)">(.*?)</tr>', page, re.DOTALL)
    assert found, page
    return found.group(1), found.group(2)


def test_the_officers_page_flags_an_overdue_request_until_its_deadline_is_extended(
        site: Deployment) -> None:
    before = site.last_audit_id()
    late = next(r for r in officer_list(site) if r["contact"] == LATE_CONTACT)
    assert late["status"] == "pending" and late["overdue"] is True
    reason = "identity check needs an appointment"
    with site.client("dan") as dan:
        page = dan.get("/dpo")
        assert page.status_code == 200, page.text
        assert re.search(r'id="overdue">1 request\(s\) overdue', page.text), page.text
        kind, cells = row_of(page.text, late["public_id"])
        assert kind == "overdue" and "overdue</strong>" in cells and LATE_CONTACT in cells
        extended = dan.post(f"/api/v1/access-requests/{late['id']}/extend", json={"reason": reason})
        assert extended.status_code == 200, extended.text
        assert extended.json()["overdue"] is False and extended.json()["extended_reason"] == reason
        assert timedelta(days=59) <= at(extended.json()["deadline"]) - at(late["deadline"]) <= timedelta(days=62)
        page = dan.get("/dpo")
        assert 'id="overdue"' not in page.text
        kind, cells = row_of(page.text, late["public_id"])
        assert kind == "" and f"extended: {reason}" in cells
        # Leave no open request behind for the officer.
        assert dan.post(f"/api/v1/access-requests/{late['id']}/reject",
                        json={"note": "test request"}).status_code == 200
    with site.db() as db:
        assert db.execute("SELECT extended_reason FROM subject_requests WHERE id = ?",
                          (late["id"],)).fetchone()[0] == reason
    [extension] = audited(site, before, "access.extend")
    assert extension["actor"] == "dan" and extension["detail"] == {
        "request": late["public_id"], "deadline": extended.json()["deadline"], "reason": reason}
    # The list shows contact details: each look at it (API, page, page) is audited, without them.
    listings = audited(site, before, "access.list")
    assert len(listings) == 3 and {r["actor"] for r in listings} == {"dan"}
    assert all(set(r["detail"]) == {"requests"} and r["detail"]["requests"] >= 1 for r in listings)
    assert LATE_CONTACT not in str(site.audit(before))


def test_the_record_of_processing_page_and_document_show_what_is_configured(site: Deployment) -> None:
    with site.client("dan") as dan:
        page = dan.get("/records")
        document = dan.get("/api/v1/records-of-processing.md")
        record = dan.get("/api/v1/records-of-processing").json()
    assert page.status_code == document.status_code == 200, (page.text, document.text)
    assert "text/html" in page.headers["content-type"]
    assert document.headers["content-type"].startswith("text/markdown")
    assert len(record["categories_of_data"]) >= 4
    assert any("biometric" in category for category in record["categories_of_data"])
    for text in (html.unescape(page.text), document.text):
        assert DPIA in text
        assert all(purpose in text for purpose in PURPOSES)
        assert all(category in text for category in record["categories_of_data"])
        assert "Agency A" in text and "Agency B" in text  # the recipients
        for period in ("kept probes: 21 days", "searches and candidates: 700 days (about 1.9 years)",
                       "audit records: 2000 days (about 5.5 years)", "sessions: 8 hours"):
            assert period in text, period
        # The source's lawful basis in words and its own retention as a period.
        assert "legitimate interests (GDPR Art. 6(1)(f))" in text and "images kept 3 years" in text


def test_the_officer_sees_every_opt_out_and_reverses_a_disputed_one_before_it_is_confirmed(
        site: Deployment, opted_out: OptOut) -> None:
    before = site.last_audit_id()
    disputed = httpx.post(site.url + "/api/v1/public/opt-out", timeout=60,
                          files=photo_upload("selfie", lfw_photos(DISPUTED)[0]))
    assert disputed.status_code == 202, disputed.text
    with site.client("ivy") as ivy:
        case = open_case(ivy)
        # Hidden at once within the strict cut-off of the selfie (searched with that very
        # photo, so distances are to it); farther faces, maybe a look-alike's, are not hidden.
        assert all(c["distance"] >= strict_cut_off(site)
                   for c in search(ivy, case["id"], lfw_photos(DISPUTED)[0])
                   if person_of_face(site, c["face_id"]) == DISPUTED)
    with site.client("dan") as dan:
        listed = {o["public_id"]: o for o in dan.get("/api/v1/opt-outs").json()}
        mine = listed[disputed.json()["request_id"]]
        assert mine["status"] == "hidden" and mine["client"].startswith("client-")
        # Done, or waiting for the officer's review of faces only near the selfie.
        assert listed[opted_out.receipt["request_id"]]["status"] == (
            "review" if int(opted_out.receipt["faces_in_review"]) else "done")
        assert listed[opted_out.receipt["request_id"]]["faces_removed"] == INDEXED_PHOTOS
        page = dan.get("/dpo/opt-outs")
        assert page.status_code == 200 and f'id="opt-out-{mine["public_id"]}"' in page.text
        assert f'/dpo/opt-outs/{mine["id"]}/reinstate' in page.text
        assert f'/dpo/opt-outs/{listed[opted_out.receipt["request_id"]]["id"]}/reinstate' not in page.text
        # Erasure is final: the confirmed one cannot be reversed.
        late = dan.post(f"/api/v1/opt-outs/{listed[opted_out.receipt['request_id']]['id']}/reinstate",
                        json={"reason": "too late"})
        assert late.status_code == 403, late.text
        reversed_ = dan.post(f"/api/v1/opt-outs/{mine['id']}/reinstate",
                             json={"reason": "a friend of theirs sent the photo"})
        assert reversed_.status_code == 200, reversed_.text
        assert dan.get("/api/v1/opt-outs").json()[0]["status"] == "reinstated"
    with site.client("ivy") as ivy:
        found = [c for c in search(ivy, case["id"], lfw_photos(DISPUTED)[-1])
                 if person_of_face(site, c["face_id"]) == DISPUTED]
    assert len(found) == INDEXED_PHOTOS  # never erased, found again
    confirm = httpx.post(site.url + "/api/v1/public/opt-out/confirm", timeout=60,
                         data={"token": disputed.json()["confirm_token"]},
                         files=photo_upload("selfie", lfw_photos(DISPUTED)[1]))
    assert confirm.status_code == 404, confirm.text  # the requester's link died with it
    [reversal] = audited(site, before, "optout.reinstate")
    assert reversal["actor"] == "dan" and reversal["detail"]["request"] == mine["public_id"]
    assert len(audited(site, before, "optout.reinstate.refused")) == 1
    assert len(audited(site, before, "optout.list")) == 3


# Rate limit -----------------------------------------------------------------------------------------

def test_public_requests_are_limited_per_client_address(limited: Deployment) -> None:
    photo = lfw_photos(OUTSIDER)[0]
    noise = jpeg_bytes(noise_image(320, 240))
    api = httpx.Client(base_url=limited.url, timeout=60)
    with api:
        form = api.get("/opt-out")
        assert form.status_code == 200 and "<form" in form.text and 'name="contact"' not in form.text
        first = api.post("/api/v1/public/access-requests", data={"contact": "x@example.org"},
                         files=photo_upload("selfie", photo))
        assert first.status_code == 202, first.text
        # A photo without a face is refused, and gives its place back: the person can try again.
        for _ in range(3):
            faceless = api.post("/api/v1/public/opt-out", files={"selfie": ("n.jpg", noise, "image/jpeg")})
            assert faceless.status_code == 422 and faceless.json()["error"]["code"] == "no_face"
        # The page and the API share one allowance. This server mails no receipts: the
        # confirmation page asks for no address.
        second = api.post("/opt-out", files=photo_upload("selfie", photo))
        assert second.status_code == 200 and 'id="hidden-now"' in second.text, second.text
        assert 'name="contact"' not in second.text and 'name="token"' in second.text
        third = api.post("/api/v1/public/opt-out", files=photo_upload("selfie", photo))
        assert third.status_code == 202, third.text

        fourth = api.post("/api/v1/public/opt-out", files=photo_upload("selfie", photo))
        assert fourth.status_code == 429, fourth.text
        assert fourth.json()["error"]["code"] == "rate_limited"
        assert int(fourth.headers["retry-after"]) > 0
        page = api.post("/opt-out", files=photo_upload("selfie", photo))
        assert page.status_code == 429 and int(page.headers["retry-after"]) > 0
        assert "text/html" in page.headers["content-type"]
        # Past the limit even a faceless photo is refused before any face detection runs.
        assert api.post("/api/v1/public/opt-out",
                        files={"selfie": ("n.jpg", noise, "image/jpeg")}).status_code == 429
        assert api.post("/api/v1/public/access-requests", data={"contact": "x@example.org"},
                        files=photo_upload("selfie", photo)).status_code == 429
        # Confirming is no new request: it goes through past the limit. An address sent anyway
        # is neither used nor kept.
        confirmed = api.post("/api/v1/public/opt-out/confirm",
                             data={"token": third.json()["confirm_token"], "contact": "x@example.org"},
                             files=photo_upload("selfie", lfw_photos(OUTSIDER)[1]))
        assert confirmed.status_code == 201, confirmed.text
        assert confirmed.json()["faces_removed"] == 0 and confirmed.json()["mailed"] is False

    # Another address has its own allowance (loopback answers for all of 127/8).
    elsewhere = httpx.Client(base_url=limited.url, timeout=60,
                             transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with elsewhere:
        assert elsewhere.post("/api/v1/public/opt-out",
                              files=photo_upload("selfie", photo)).status_code == 202

    with limited.db() as db:
        stored = db.execute("SELECT kind, status, contact FROM subject_requests ORDER BY id").fetchall()
        suppressions = db.execute("SELECT count(*) FROM suppressions").fetchone()[0]
    # The faceless photos left no request behind.
    assert stored == [("access", "pending", "x@example.org"), ("erasure", "hidden", ""),
                      ("erasure", "done", ""), ("erasure", "hidden", "")]
    assert not any(r["action"] == "optout.receipt" for r in limited.audit())
    assert suppressions == 3  # the refused opt-outs added none
    # Four refusals over the limit, one audit record: the first of the hour, under a pseudonym.
    [refused] = [r for r in limited.audit() if r["action"] == "public.refused"]
    assert refused["detail"] == {"reason": "daily request limit", "refused_in_previous_window": 0}
    assert refusals_counted(limited, "public.refused") == 4
    [faceless] = [r for r in limited.audit() if r["action"] == "optout.refused"]
    assert faceless["detail"]["reason"] == "no face found in the photo"
    assert refusals_counted(limited, "optout.refused") == 3
    clients = [r["client"] for r in limited.audit() if r["action"] == "optout"]
    assert len(set(clients)) == 2 and all(c.startswith("client-") for c in clients)
    assert refused["client"] == faceless["client"] == clients[0]
    assert not any("127.0.0" in r["client"] for r in limited.audit() if r["role"] == "public")


# Audit --------------------------------------------------------------------------------------------

RIGHTS_ACTIONS = {"optout", "optout.confirm", "optout.receipt", "optout.list", "optout.reinstate",
                  "optout.refused", "access.request", "access.list", "access.extend",
                  "access.approve", "access.reject", "access.report", "access.report.refused",
                  "public.refused"}


def test_every_rights_action_is_audited_and_the_audit_chain_verifies(
        site: Deployment, limited: Deployment) -> None:
    # Runs last: the tests above made every kind of request on these two servers.
    actions = {r["action"] for d in (site, limited) for r in d.audit()}
    assert RIGHTS_ACTIONS <= actions, RIGHTS_ACTIONS - actions
    for d in (site, limited):
        records_before = len(d.audit())
        # The auditor's check, from the command line, while the server still runs (SQLite WAL).
        check = subprocess.run([FACESEARCH, "--data", str(d.home), "audit", "verify"],
                               check=False, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "audit trail intact" in check.stdout
        records = int(re.search(r"intact: (\d+) records", check.stdout).group(1))
        assert records >= records_before  # every record is in the chain
