"""An erasure holds across real, separate processes on one data directory: two `serve`
workers and the CLI beside them, and two ingesting processes. Each process that held the
erased face's vector in memory writes afterwards; then, with everything stopped, the vector
is in no file of the data directory and `facesearch verify` is clean."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from facesearch.store.metadata import to_blob
from tests.conftest import lfw_photos
from tests.web.conftest import (
    FACESEARCH,
    PEOPLE,
    PURPOSE,
    build_deployment,
    probe,
    start_server,
    stop_server,
)


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FACESEARCH, "--data", str(home), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "FACESEARCH_WORKERS": "1"})


def descriptors(home: Path, face_ids: list[int]) -> list[bytes]:
    service = FaceSearchService(Settings(home=home, workers=1))
    try:
        _, vectors = service.store.vectors_of(np.array(face_ids))
        return [to_blob(v) for v in vectors]
    finally:
        service.close()


def face_ids(home: Path) -> list[int]:
    service = FaceSearchService(Settings(home=home, workers=1))
    try:
        return [int(i) for i in service.store.face_ids()]
    finally:
        service.close()


def assert_gone_everywhere(home: Path, erased: list[bytes]) -> None:
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(vector in data for vector in erased), f"an erased descriptor is in {path}"
    check = run_cli(home, "verify")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "erased vectors on disk 0" in check.stdout


@pytest.fixture
def home(tmp_path: Path, lfw: Path) -> tuple[Path, dict]:
    home = tmp_path / "data"
    return home, build_deployment(home)


def test_an_erasure_by_the_cli_holds_against_two_server_workers(home) -> None:
    home, made = home
    ids = face_ids(home)
    erased = ids[:1]  # by the CLI, while both server workers hold it in memory
    by_server = ids[1:5]  # then each worker writes: deletions through the API
    vectors = descriptors(home, erased + by_server)
    process, url = start_server(home, FACESEARCH_SERVER_WORKERS="2")
    try:
        from tests.web.conftest import Deployment

        deployment = Deployment(url, home, process, made["keys"], made["user_ids"])
        investigator, admin = deployment.client("ivy"), deployment.client("ada")
        case = investigator.post("/api/v1/cases", json={"number": "X-1", "purpose": PURPOSE, "offence_type": "robbery"})
        assert case.status_code in (200, 201), case.text
        case_id = case.json()["id"]
        # Enough searches that both workers load the index (each holds its own copy).
        for _ in range(6):
            found = investigator.post(f"/api/v1/cases/{case_id}/searches",
                                      files={"probe": ("p.jpg", probe(0), "image/jpeg")})
            assert found.status_code == 201, found.text
        deleted = run_cli(home, "delete", "--face", str(erased[0]))
        assert deleted.returncode == 0, deleted.stderr
        for face_id in by_server:
            assert admin.delete(f"/api/v1/faces/{face_id}").status_code == 200
        after = investigator.post(f"/api/v1/cases/{case_id}/searches",
                                  files={"probe": ("p.jpg", probe(0), "image/jpeg")}).json()
        returned = {c["face_id"] for face in after["faces"] for c in face["candidates"]}
        assert returned.isdisjoint(erased + by_server)
    finally:
        stop_server(process)
    assert_gone_everywhere(home, vectors)


STALE_INGEST = textwrap.dedent("""
    import sys
    from pathlib import Path
    from facesearch.config import Settings
    from facesearch.service import FaceSearchService
    from facesearch.types import Actor

    service = FaceSearchService(Settings(home=Path(sys.argv[1]), workers=1))
    held = len(service.index)  # loaded now, with every vector
    print(held, flush=True)
    sys.stdin.readline()  # meanwhile another process erases
    service.ingest(Actor(name="second-ingest"), [Path(sys.argv[2])], "lfw")
    service.close()
""")


def test_an_erasure_holds_against_an_ingest_process_that_loaded_the_index_before_it(home) -> None:
    home, _ = home
    ids = face_ids(home)
    vectors = descriptors(home, ids[:2])
    stale = subprocess.Popen([sys.executable, "-c", STALE_INGEST, str(home),
                              str(lfw_photos(PEOPLE[0])[0])], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert int(stale.stdout.readline()) == len(ids)
        first = run_cli(home, "ingest", str(lfw_photos(PEOPLE[1])[0]), "--source", "lfw")
        assert first.returncode == 0, first.stderr
        for face_id in ids[:2]:
            deleted = run_cli(home, "delete", "--face", str(face_id))
            assert deleted.returncode == 0, deleted.stderr
        stale.stdin.write("go\n")
        stale.stdin.flush()
        assert stale.wait(300) == 0
    finally:
        stale.kill()
    assert_gone_everywhere(home, vectors)
    # Both ingests' images are there, and every live face is in the index a restart loads.
    service = FaceSearchService(Settings(home=home, workers=1))
    try:
        added = [hashlib.sha256(lfw_photos(PEOPLE[n])[0].read_bytes()).hexdigest() for n in (0, 1)]
        assert service.store.known_hashes(added) == set(added)
        assert sorted(service.index.held_ids()) == sorted(service.store.face_ids())
        assert not set(ids[:2]) & set(service.store.face_ids())
    finally:
        service.close()
