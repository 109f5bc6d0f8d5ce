"""Hostile image files through every route that takes an upload, over a real `facesearch serve`
process: each is answered 422 with the JSON error shape (or the error page), never 500; an
ingest skips each with its reason and indexes none of them; and the server's own peak memory
hardly moves while the bombs are refused. The whole corpus goes through the probe-faces route
and an ingest job; the other routes get a representative few (tests/unit/test_imaging.py covers
the corpus at the decode level)."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from PIL import Image

from tests.conftest import lfw_photos, log_in
from tests.hostile_images import Sample, corpus, encoded, sample
from tests.web.conftest import PEOPLE, password_of, start_server, stop_server, wait_for_job

REFUSED = [s for s in corpus() if s.refusal is not None]
DECODED = [s for s in corpus() if s.refusal is None]
# One of each kind of refusal, for the routes that do not get the whole corpus.
FEW = ["ico-bomb", "png-huge-ihdr", "gif-huge-frame", "jpeg-truncated", "zero-bytes", "html"]
MiB = 1024 * 1024
# The server's resident memory may rise this far while it refuses every bomb of the corpus:
# they are refused before decoding (an ICO bomb once took it up 441 MiB).
REFUSAL_MEMORY_MIB = 24
# Small, so that a modest photo is decoded reduced: over 2 x 400 pixels a side.
DETECT_MAX_SIDE = 400


@dataclass
class Site:
    url: str
    home: Path
    pid: int
    keys: dict[str, str]

    def client(self, username: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[username]}"} if username else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def indexed_hashes(self) -> set[str]:
        with closing(sqlite3.connect(self.home / "metadata.sqlite3", timeout=30)) as db:
            return {row[0] for row in db.execute("SELECT sha256 FROM images")}


def make_users(home: Path) -> dict[str, str]:
    """An admin (ingest, suppress) and an investigator (probe, search) with API keys, and a
    source; no gallery is needed."""
    service = FaceSearchService(Settings(home=home, workers=1))
    try:
        operator = service.local_operator("test-operator")
        service.bootstrap_admin(operator, "ada", password_of("ada"), "Agency A")
        admin, _, _ = log_in(service, "ada", password_of("ada"), "127.0.0.1")
        keys = {"ada": service.create_api_key(admin, "tests")[1]}
        service.create_user(admin, "sam", password_of("sam"), "supervisor", "Agency A")
        ivy = service.create_user(admin, "ivy", password_of("ivy"), "investigator", "Agency A")
        supervisor, _, _ = log_in(service, "sam", password_of("sam"), "127.0.0.1")
        service.approve_user(supervisor, ivy.id)
        investigator, _, _ = log_in(service, "ivy", password_of("ivy"), "127.0.0.1")
        keys["ivy"] = service.create_api_key(investigator, "tests")[1]
        service.add_source(admin, "uploads", "legitimate_interests", "US", "hostile uploads")
        return keys
    finally:
        service.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A server of its own, so that the public routes' allowances here touch no other test's."""
    home = tmp_path_factory.mktemp("hostile") / "data"
    keys = make_users(home)
    process, url = start_server(home, FACESEARCH_PUBLIC_REQUESTS_PER_DAY="1000",
                                FACESEARCH_PUBLIC_ATTEMPTS_PER_HOUR="1000",
                                FACESEARCH_DETECT_MAX_SIDE=str(DETECT_MAX_SIDE))
    yield Site(url, home, process.pid, keys)
    stop_server(process)


def upload(field: str, s: Sample) -> dict:
    return {field: (f"{s.name}.jpg", s.data, "image/jpeg")}


def assert_refused(response: httpx.Response, s: Sample) -> None:
    assert response.status_code == 422, (s.name, response.status_code, response.text[:300])
    error = response.json()["error"]
    assert set(response.json()) == {"error"} and set(error) == {"code", "message"}
    assert error["code"] == "bad_image", (s.name, error)
    assert s.refusal in error["message"] and "\n" not in error["message"], (s.name, error)


def memory_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0])


# Every upload route -----------------------------------------------------------------------


def test_the_whole_corpus_through_probe_faces_is_refused_without_the_server_growing(site: Site):
    with site.client("ivy") as ivy:
        # Warm up: the detector loads on the first image decoded, and the error path runs once.
        assert ivy.post("/api/v1/probe-faces", files=upload("probe", sample("png-1x1"))).status_code == 200
        assert_refused(ivy.post("/api/v1/probe-faces", files=upload("probe", sample("html"))),
                       sample("html"))
        Path(f"/proc/{site.pid}/clear_refs").write_text("5")  # peak mark back to resident size
        before = memory_kib(site.pid, "VmRSS")
        for s in REFUSED:
            assert_refused(ivy.post("/api/v1/probe-faces", files=upload("probe", s)), s)
        growth = (memory_kib(site.pid, "VmHWM") - before) / 1024
        assert growth < REFUSAL_MEMORY_MIB, f"the server grew {growth:.0f} MiB refusing bombs"
        for s in DECODED:
            response = ivy.post("/api/v1/probe-faces", files=upload("probe", s))
            assert response.status_code == 200, (s.name, response.text[:300])
            assert response.json() == []  # decoded, upright, and no face in any of them


def test_a_search_refuses_hostile_probes_and_records_nothing(site: Site):
    with site.client("ivy") as ivy:
        case = ivy.post("/api/v1/cases", json={"number": f"H-{uuid.uuid4().hex[:8]}",
                                               "purpose": Settings().search_purposes[0], "offence_type": "robbery"})
        assert case.status_code == 201, case.text
        searches = f"/api/v1/cases/{case.json()['id']}/searches"
        for name in FEW:
            assert_refused(ivy.post(searches, files=upload("probe", sample(name))), sample(name))
        no_face = ivy.post(searches, files=upload("probe", sample("jpeg-exif-rotated")))
        assert no_face.status_code == 422 and no_face.json()["error"]["code"] == "no_face"
        stored = ivy.get(f"/api/v1/cases/{case.json()['id']}")
        assert stored.status_code == 200 and stored.json()["searches"] == []


def test_a_suppression_refuses_hostile_photos(site: Site):
    with site.client("ada") as ada:
        for name in FEW:
            response = ada.post("/api/v1/suppressions", data={"reason": "hostile"},
                                files=upload("photo", sample(name)))
            assert_refused(response, sample(name))


@pytest.mark.parametrize("route,form", [("/api/v1/public/opt-out", {}),
                                        ("/api/v1/public/access-requests",
                                         {"contact": "someone@example.org"})])
def test_the_public_routes_refuse_hostile_selfies_without_a_login(site: Site, route, form):
    with site.client() as anonymous:
        for name in FEW:
            assert_refused(anonymous.post(route, data=form, files=upload("selfie", sample(name))),
                           sample(name))


@pytest.mark.parametrize("page,form", [("/opt-out", {}), ("/access", {"contact": "me@example.org"})])
def test_the_public_pages_answer_hostile_selfies_with_an_error_page(site: Site, page, form):
    with site.client() as browser:
        for name in ("ico-bomb", "png-huge-ihdr"):
            response = browser.post(page, data=form, files=upload("selfie", sample(name)),
                                    headers={"Accept": "text/html"})
            assert response.status_code == 422, (page, name, response.status_code)
            assert "text/html" in response.headers["content-type"]
            # The page says why, as a sentence (its first letter capitalised).
            assert sample(name).refusal in response.text.lower()


def test_an_ingest_of_the_whole_corpus_skips_each_hostile_file_and_indexes_none(site: Site):
    files = [("files", (f"{s.name}.img", s.data, "application/octet-stream")) for s in corpus()]
    with site.client("ada") as ada:
        started = ada.post("/api/v1/ingest-jobs", data={"source": "uploads"}, files=files)
        assert started.status_code == 202, started.text
        job = wait_for_job(ada, started.json()["id"])
    assert job["status"] == "done", job
    progress = job["progress"]
    assert progress["images_seen"] == len(corpus())
    assert sum(progress["skipped"].values()) == len(REFUSED), progress["skipped"]
    reasons = " | ".join(progress["skipped"])
    for s in REFUSED:
        assert s.refusal in reasons, (s.name, reasons)
    bombs = {hashlib.sha256(s.data).hexdigest() for s in REFUSED}
    assert not bombs & site.indexed_hashes()


# Reduced decoding ---------------------------------------------------------------------------


def test_faces_of_a_probe_decoded_reduced_are_boxed_in_the_photos_own_pixels(site: Site, lfw):
    photo = lfw_photos(PEOPLE[0])[0]
    small = Image.open(photo).convert("RGB")
    large = small.resize((small.width * 7, small.height * 7), Image.Resampling.BICUBIC)
    with site.client("ivy") as ivy:
        # 1750 pixels a side: decoded at half size (875, not below 2 x 400), boxes mapped back.
        found = {size: ivy.post("/api/v1/probe-faces", files={"probe": (
            "p.jpg", encoded(image, "JPEG", quality=95), "image/jpeg")}) for size, image
            in (("small", small), ("large", large))}
        case = ivy.post("/api/v1/cases", json={"number": f"H-{uuid.uuid4().hex[:8]}",
                                               "purpose": Settings().search_purposes[0], "offence_type": "robbery"})
        searched = ivy.post(f"/api/v1/cases/{case.json()['id']}/searches", files={"probe": (
            "p.jpg", encoded(large, "JPEG", quality=95), "image/jpeg")})
    assert all(r.status_code == 200 for r in found.values()), {k: r.text for k, r in found.items()}
    [small_face], [large_face] = found["small"].json(), found["large"].json()
    assert searched.status_code == 201, searched.text
    searched_box = searched.json()["faces"][0]["box"]
    for box in (large_face["box"], searched_box):
        for side in ("left", "top", "right", "bottom"):
            assert abs(box[side] - 7 * small_face["box"][side]) <= 0.1 * 7 * small.width, (
                side, box, small_face["box"])
