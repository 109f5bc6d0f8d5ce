"""A SIGKILLed ingest, run again, ends with exactly the state of an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from facesearch.index.faiss_index import FaissIndex
from tests.conftest import LFW

FACESEARCH = str(Path(sys.executable).parent / "facesearch")
PHOTOS = [str(p) for p in sorted((LFW / "images").glob("A*/*.jpg"))[:40]]


def facesearch(home: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([FACESEARCH, "--data", str(home), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def ingest(home: Path) -> None:
    done = facesearch(home, "ingest", *PHOTOS, "--source", "lfw", "--workers", "2")
    assert done.wait(timeout=600) == 0, done.stderr.read().decode()


def images_committed(home: Path) -> int:
    try:
        with sqlite3.connect(home / "metadata.sqlite3", timeout=1) as db:
            return db.execute("select count(*) from images").fetchone()[0]
    except sqlite3.Error:
        return 0


def snapshot(home: Path) -> dict:
    """Everything ingest leaves behind, without ids and timestamps, which may differ."""
    with sqlite3.connect(home / "metadata.sqlite3") as db:
        images = sorted(db.execute(
            "select sha256, location, jurisdiction, width, height, format, withheld_faces "
            "from images").fetchall())
        rows = list(db.execute(
                "select i.sha256, f.face_index, f.box_left||','||f.box_top||','||f.box_right||','"
                "||f.box_bottom, f.landmarks, f.detector_score, f.quality, f.crop_path, f.embedding "
                "from faces f join images i on i.id = f.image_id"))
        faces = sorted((sha, index, box, marks, round(float(score), 5), round(float(quality), 5), crop)
                       for sha, index, box, marks, score, quality, crop, _ in rows)
        descriptors = {(r[0], r[1]): np.frombuffer(r[7], "<f4") for r in rows}
        face_ids = sorted(r[0] for r in db.execute("select id from faces"))
    saved = FaissIndex.load(home / "index", 128, 200_000, 32)
    crops = sorted((str(p.relative_to(home / "crops")), hashlib.sha256(p.read_bytes()).hexdigest())
                   for p in (home / "crops").rglob("*") if p.is_file())
    return {"images": images, "faces": faces, "crops": crops, "descriptors": descriptors,
            "index_matches_faces": sorted(saved.all_vectors()[0].tolist()) == face_ids,
            "faces_in_index": len(saved)}


def test_an_ingest_killed_mid_run_resumes_to_the_uninterrupted_state(tmp_path: Path, lfw) -> None:
    homes = {name: tmp_path / name for name in ("clean", "killed")}
    for home in homes.values():
        done = facesearch(home, "source", "add", "lfw", "--lawful-basis", "public_task",
                          "--jurisdiction", "US")
        assert done.wait(timeout=120) == 0
    ingest(homes["clean"])

    victim = facesearch(homes["killed"], "ingest", *PHOTOS, "--source", "lfw", "--workers", "2")
    deadline = time.monotonic() + 300
    while images_committed(homes["killed"]) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)  # the writer and its worker processes, mid-run
    victim.wait()
    interrupted = images_committed(homes["killed"])
    assert 8 <= interrupted < len(PHOTOS), "the kill should land mid-run"
    # Every face committed before the kill is in an audit record committed with it.
    with sqlite3.connect(homes["killed"] / "metadata.sqlite3") as db:
        face_ids = {r[0] for r in db.execute("select id from faces")}
        audited = {i for (detail,) in db.execute(
            "select detail from audit_log where action = 'ingest.batch'")
            for i in json.loads(detail)["face_ids"]}
    assert face_ids and face_ids <= audited
    ingest(homes["killed"])

    clean, resumed = snapshot(homes["clean"]), snapshot(homes["killed"])
    assert clean["index_matches_faces"] and resumed["index_matches_faces"]
    assert len(clean["images"]) == len(PHOTOS)
    # Descriptors to 1e-5: a resumed run describes faces in other batches, and BLAS sums a
    # batch in another order, which moves the last bits of a float.
    ours, theirs = resumed.pop("descriptors"), clean.pop("descriptors")
    assert ours.keys() == theirs.keys()
    assert all(np.allclose(ours[key], theirs[key], atol=1e-5) for key in ours)
    assert resumed == clean
