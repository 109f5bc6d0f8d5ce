"""The investigator workflow and the server's protections, over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path

import httpx
import pytest

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from tests.conftest import LFW, lfw_photos, log_in
from tests.web.conftest import (
    PEOPLE,
    PURPOSE,
    Deployment,
    password_of,
    post_login,
    probe,
    start_server,
    stop_server,
    wait_for_job,
)


def open_case(client: httpx.Client, **extra: object) -> dict:
    response = client.post("/api/v1/cases", json={"number": f"C-{uuid.uuid4().hex[:8]}",
                                                  "purpose": PURPOSE, "offence_type": "robbery", **extra})
    assert response.status_code == 201, response.text
    return response.json()


def search(client: httpx.Client, case_id: int, photo: bytes, **form: str) -> httpx.Response:
    return client.post(f"/api/v1/cases/{case_id}/searches",
                       files={"probe": ("probe.jpg", photo, "image/jpeg")}, data=form)


def person_of(d: Deployment, face_id: int) -> str:
    with d.db() as db:
        location = db.execute("SELECT location FROM images JOIN faces ON faces.image_id = images.id "
                              "WHERE faces.id = ?", (face_id,)).fetchone()[0]
    return Path(location).parent.name


def test_a_search_ranks_the_right_person_first_and_is_audited_without_the_probe(
        deployment: Deployment) -> None:
    with deployment.client("ivy") as ivy:
        case = open_case(ivy)
        photo = probe(2)
        response = search(ivy, case["id"], photo, face="largest", top="3")
    assert response.status_code == 201, response.text
    result = response.json()
    candidates = result["faces"][0]["candidates"]
    assert 1 <= len(candidates) <= 3
    assert person_of(deployment, candidates[0]["face_id"]) == PEOPLE[2]
    assert "not identifications" in result["notice"]
    assert candidates[0]["crop_url"] == f"/api/v1/faces/{candidates[0]['face_id']}/crop"
    assert "crop_path" not in candidates[0]  # no server paths leave the server
    assert {c["label"] for c in candidates} == {"investigative lead"}
    record = [r for r in deployment.audit() if r["action"] == "search"][-1]
    assert record["actor"] == "ivy" and record["organisation"] == "Agency A"
    assert record["case_number"] == case["number"] and record["purpose"] == PURPOSE
    assert record["client"] == "127.0.0.1"
    assert record["detail"]["probe_sha256"] == hashlib.sha256(photo).hexdigest()
    assert record["detail"]["results"][0] == [[c["face_id"], c["distance"]] for c in candidates]
    assert record["detail"]["probe_kept"] is False
    assert not (deployment.home / "probes").exists() or not any((deployment.home / "probes").rglob("*"))


def test_a_case_that_asks_keeps_its_probe(deployment: Deployment) -> None:
    with deployment.client("ivy") as ivy:
        case = open_case(ivy, keep_probes=True)
        photo = probe(3)
        assert search(ivy, case["id"], photo, face="largest").status_code == 201
    kept = deployment.home / "probes" / str(case["id"]) / hashlib.sha256(photo).hexdigest()
    assert kept.read_bytes() == photo


def test_search_returns_at_most_50_candidates(deployment: Deployment) -> None:
    with deployment.client("ivy") as ivy:
        case = open_case(ivy)
        assert search(ivy, case["id"], probe(0), top="51").status_code == 422
        assert search(ivy, case["id"], probe(0), top="50").status_code == 201


def test_the_probe_faces_are_listed_largest_first_for_choosing(deployment: Deployment) -> None:
    with deployment.client("ivy") as ivy:
        faces = ivy.post("/api/v1/probe-faces",
                         files={"probe": ("p.jpg", probe(3), "image/jpeg")}).json()
    assert faces and faces[0]["number"] == 0
    widths = [f["box"]["right"] - f["box"]["left"] for f in faces]
    assert widths == sorted(widths, reverse=True)


def test_confirming_needs_a_second_investigator(deployment: Deployment) -> None:
    with deployment.client("ivy") as ivy, deployment.client("ian") as ian:
        case = open_case(ivy)
        found = search(ivy, case["id"], probe(4), face="largest").json()
        candidate = found["faces"][0]["candidates"][0]["candidate_id"]
        mark = f"/api/v1/candidates/{candidate}/marks"
        assert ivy.post(mark, json={"mark": "confirmed"}).status_code == 403  # nobody marked it yet
        assert ivy.post(mark, json={"mark": "possible"}).status_code == 201
        refused = ivy.post(mark, json={"mark": "confirmed"})
        assert refused.status_code == 403 and "second investigator" in refused.json()["error"]["message"]
        confirmed = ian.post(mark, json={"mark": "confirmed"})
        assert confirmed.status_code == 201 and confirmed.json()["status"] == "confirmed"
        report = ian.get(f"/api/v1/cases/{case['id']}/report").json()
    marks = report["searches"][0]["candidates"][0]["marks"]
    assert [(m["mark"], m["actor"]) for m in marks] == [("possible", "ivy"), ("confirmed", "ian")]
    assert all(m["at"] for m in marks)
    refusals = [r for r in deployment.audit() if r["action"] == "candidate.mark.refused"]
    assert refusals[-1]["actor"] == "ivy"


def test_no_json_tells_where_the_server_keeps_the_gallery(deployment: Deployment) -> None:
    """The gallery was ingested from files on the server's disk: every JSON body an
    investigator is given names each file in words, never by its path."""
    gallery = {str(LFW), str(LFW.resolve())}
    with deployment.client("ivy") as ivy:
        case = open_case(ivy)
        live = search(ivy, case["id"], probe(1))
        assert live.status_code == 201, live.text
        stored = ivy.get(f"/api/v1/cases/{case['id']}/searches/{live.json()['search_id']}")
        bodies = {"live search": live, "stored search": stored,
                  "case": ivy.get(f"/api/v1/cases/{case['id']}"),
                  "report": ivy.get(f"/api/v1/cases/{case['id']}/report")}
    for name, body in bodies.items():
        assert body.status_code in (200, 201), (name, body.text)
        assert not any(path in body.text for path in gallery), name
    candidates = stored.json()["candidates"]
    assert candidates and all(re.fullmatch(r"file [^/]+\.jpg on the server", c["location"])
                              for c in candidates)
    sightings = [s for p in stored.json()["photos"] for s in p["sightings"]]
    assert sightings and all(s["location"].endswith(" on the server") for s in sightings)


def test_a_case_is_visible_only_to_its_organisation(deployment: Deployment) -> None:
    with deployment.client("ivy") as ivy, deployment.client("bob") as bob:
        case = open_case(ivy)
        found = search(ivy, case["id"], probe(0), face="largest").json()
        face = found["faces"][0]["candidates"][0]["face_id"]
        assert case["id"] not in [c["id"] for c in bob.get("/api/v1/cases").json()]
        assert bob.get(f"/api/v1/cases/{case['id']}").status_code == 403
        assert bob.get("/api/v1/cases/999999").status_code == 403  # same answer: nothing leaks
        assert bob.get(f"/api/v1/faces/{face}/crop").status_code == 403
        crop = ivy.get(f"/api/v1/faces/{face}/crop")
    assert crop.status_code == 200 and crop.content[:2] == b"\xff\xd8"


def test_a_closed_case_takes_no_more_searches(deployment: Deployment) -> None:
    with deployment.client("ivy") as ivy:
        case = open_case(ivy)
        assert ivy.post(f"/api/v1/cases/{case['id']}/close").json()["status"] == "closed"
        refused = search(ivy, case["id"], probe(0))
    assert refused.status_code == 403 and "closed" in refused.json()["error"]["message"]


def test_an_investigator_waits_for_a_supervisor_of_their_own_organisation(
        deployment: Deployment) -> None:
    name = f"new{uuid.uuid4().hex[:6]}"
    with deployment.client("ada") as ada:
        user = ada.post("/api/v1/users", json={"username": name, "password": password_of(name),
                                               "role": "investigator",
                                               "organisation": "Agency A"}).json()
    assert user["status"] == "pending" and "password_hash" not in user
    with deployment.client() as browser:
        assert post_login(browser, name, password_of(name)).status_code == 401
    with deployment.client("bea") as bea, deployment.client("sam") as sam:
        assert bea.post(f"/api/v1/users/{user['id']}/approve").status_code == 404  # Agency B
        assert sam.post(f"/api/v1/users/{user['id']}/approve").json()["status"] == "active"
    with deployment.client() as browser:
        assert post_login(browser, name, password_of(name)).status_code == 303


def test_wrong_passwords_and_unknown_users_get_the_same_answer(deployment: Deployment) -> None:
    with deployment.client() as browser:
        wrong = post_login(browser, "ivy", "nope" * 4)
        nobody = post_login(browser, "zz", "nope" * 4)
    assert wrong.status_code == nobody.status_code == 401
    assert re.sub(r"\s+", " ", wrong.text) == re.sub(r"\s+", " ", nobody.text)


def browser_session(deployment: Deployment, username: str) -> tuple[httpx.Client, str]:
    """A client logged in through the form, and the CSRF token from a page."""
    client = httpx.Client(base_url=deployment.url, timeout=60)
    done = post_login(client, username, password_of(username))
    assert done.status_code == 303
    cookie = done.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = client.get("/account").text
    return client, re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def test_a_session_needs_its_csrf_token_to_change_anything(deployment: Deployment) -> None:
    client, csrf = browser_session(deployment, "ivy")
    try:
        body = {"number": f"C-{uuid.uuid4().hex[:8]}", "purpose": PURPOSE, "offence_type": "robbery"}
        before = deployment.state_digest()
        forged = client.post("/api/v1/cases", json=body)
        assert forged.status_code == 403 and deployment.state_digest() == before
        assert deployment.audit()[-1]["action"] == "request.refused"
        assert client.post("/api/v1/cases", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201
        before = deployment.state_digest()
        forged_form = client.post("/cases", data={"number": body["number"] + "f", "purpose": PURPOSE, "offence_type": "robbery"})
        assert forged_form.status_code == 403 and deployment.state_digest() == before
        assert deployment.audit()[-1]["action"] == "request.refused"
        form = client.post("/cases", data={"number": body["number"] + "b", "purpose": PURPOSE, "offence_type": "robbery",
                                           "csrf_token": csrf})
        assert form.status_code == 303
        assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
        assert client.get("/api/v1/me").status_code == 401  # the session ended
    finally:
        client.close()


def test_api_keys_are_shown_once_stored_hashed_and_revocable(deployment: Deployment) -> None:
    with deployment.client("aud") as aud:
        made = aud.post("/api/v1/me/api-keys", json={"name": "export job"}).json()
        key = made["key"]
        assert "key" not in aud.get("/api/v1/me/api-keys").json()[-1]
    with deployment.db() as db:
        stored = db.execute("SELECT key_hash FROM api_keys WHERE id = ?", (made["id"],)).fetchone()[0]
        assert key not in repr(db.execute("SELECT * FROM api_keys").fetchall())
    assert stored == hashlib.sha256(key.encode()).hexdigest()
    fresh = httpx.Client(base_url=deployment.url, headers={"Authorization": f"Bearer {key}"})
    with fresh:
        assert fresh.get("/api/v1/me").json()["username"] == "aud"
        assert fresh.delete(f"/api/v1/me/api-keys/{made['id']}").status_code == 204
        assert fresh.get("/api/v1/me").status_code == 401


def test_responses_carry_security_headers_and_uniform_errors(deployment: Deployment) -> None:
    with deployment.client("ivy") as ivy:
        page = ivy.get("/cases")
        missing = ivy.get("/api/v1/no-such-thing")
        bad = ivy.post("/api/v1/probe-faces", files={"probe": ("x.jpg", b"not an image", "image/jpeg")})
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert missing.status_code == 404 and missing.json() == {
        "error": {"code": "http_error", "message": "no such page"}}
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "bad_image"
    assert "Traceback" not in bad.text


def test_an_upload_over_the_limit_is_refused_before_it_is_read(deployment: Deployment) -> None:
    limit = Settings().max_upload_bytes
    with deployment.client("ivy") as ivy:
        response = ivy.post("/api/v1/probe-faces",
                            files={"probe": ("big.jpg", b"\0" * (limit + 1), "image/jpeg")})
    assert response.status_code == 413


def test_metrics_are_for_admins_and_count_searches(deployment: Deployment) -> None:
    with deployment.client("ivy") as ivy:
        case = open_case(ivy)
        search(ivy, case["id"], probe(0), face="largest").raise_for_status()
        assert ivy.get("/metrics").status_code == 403
    with deployment.client("ada") as ada:
        text = ada.get("/metrics").text
    assert re.search(r"^facesearch_search_seconds_count [1-9]", text, re.M)
    faces = float(re.search(r"^facesearch_faces_indexed (\S+)", text, re.M).group(1))
    assert faces >= 3 * len(PEOPLE)
    assert 'facesearch_http_requests_total{method="POST",route="/api/v1/cases/{case_id}/searches",status="201"}' in text


def test_server_logs_are_json_without_names_or_addresses(deployment: Deployment) -> None:
    import json

    lines = [json.loads(line) for line in (deployment.home / "server.log").read_text().splitlines()
             if line.startswith("{")]
    requests = [line for line in lines if line["event"] == "request"]
    assert requests and {"route", "status", "ms", "request_id"} <= set(requests[-1])
    text = (deployment.home / "server.log").read_text()
    assert "ivy" not in text and "127.0.0.1" not in text.split("(Press CTRL+C to quit)")[-1]


def test_ingest_runs_as_a_background_job_with_progress(deployment: Deployment) -> None:
    photos = lfw_photos(PEOPLE[5])[4:6] if len(lfw_photos(PEOPLE[5])) >= 6 else lfw_photos(PEOPLE[5])[:1]
    with deployment.client("ada") as ada:
        job = ada.post("/api/v1/ingest-jobs", data={"source": "lfw"},
                       files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos])
        assert job.status_code == 202
        done = wait_for_job(ada, job.json()["id"])
    assert done["status"] == "done"
    assert done["progress"]["images_seen"] == len(photos)
    assert not (deployment.home / "uploads" / f"job-{done['id']}").exists()  # staging removed
    with deployment.db() as db:
        locations = [r[0] for r in db.execute("SELECT location FROM images WHERE location LIKE ?",
                                              (f"upload:{done['id']}/%",))]
    assert len(locations) == done["progress"]["images_indexed"]
    with deployment.client("ada") as ada:
        text = ada.get("/metrics").text
    images = float(re.search(r"^facesearch_ingest_images_total (\S+)", text, re.M).group(1))
    faces = float(re.search(r"^facesearch_ingest_faces_total (\S+)", text, re.M).group(1))
    assert images >= len(photos) and faces >= done["progress"]["faces_indexed"] >= 1


def test_auditors_filter_export_and_verify_the_trail_over_http(deployment: Deployment) -> None:
    with deployment.client("ivy") as ivy:
        open_case(ivy)
    with deployment.client("aud") as aud:
        as_json = aud.get("/api/v1/audit", params={"actor": "ivy", "format": "json"})
        as_csv = aud.get("/api/v1/audit", params={"actor": "ivy", "action": "case.open",
                                                 "format": "csv"})
        page = aud.get("/audit", params={"actor": "ivy", "verify": "true"})
    exported = as_json.json()
    assert 'filename="audit.json"' in as_json.headers["content-disposition"]
    assert exported and {r["actor"] for r in exported} == {"ivy"}
    rows = as_csv.text.splitlines()
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert len(rows) >= 2 and all(",case.open," in row and ",ivy," in row for row in rows[1:])
    assert page.status_code == 200 and "Chain intact" in page.text
    # The page's filters and its export links use the API's names, so exports keep the filter.
    assert 'name="actor" value="ivy"' in page.text
    assert "format=csv&amp;actor=ivy" in page.text
    listed = re.findall(r"</time></td><td>([^<(]+) \(", page.text)  # each record's user
    assert listed and set(listed) == {"ivy"}


@pytest.fixture
def strict_server(deployment: Deployment):
    """A second server on the same data with a low per-user limit, and a fresh investigator."""
    service = FaceSearchService(Settings(home=deployment.home))
    try:
        admin, _, _ = log_in(service, "ada", password_of("ada"), "127.0.0.1")
        name = f"r{uuid.uuid4().hex[:6]}"
        user = service.create_user(admin, name, password_of(name), "investigator", "Agency A")
        sam, _, _ = log_in(service, "sam", password_of("sam"), "127.0.0.1")
        service.approve_user(sam, user.id)
        actor, _, _ = log_in(service, name, password_of(name), "127.0.0.1")
        key = service.create_api_key(actor, "limits")[1]
    finally:
        service.close()
    process, url = start_server(deployment.home, FACESEARCH_SEARCHES_PER_MINUTE_USER="2")
    yield url, key
    stop_server(process)


def test_searches_over_the_rate_limit_get_429_with_retry_after(strict_server, deployment) -> None:  # noqa: ANN001
    url, key = strict_server
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        case = open_case(client)
        for _ in range(2):
            assert search(client, case["id"], probe(0), face="largest").status_code == 201
        limited = search(client, case["id"], probe(0), face="largest")
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 61
    assert deployment.audit()[-1]["action"] == "search.refused"
