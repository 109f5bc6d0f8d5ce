"""The commands as a user types them, in a real subprocess."""

from __future__ import annotations

import csv
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import lfw_photos

FACESEARCH = str(Path(sys.executable).parent / "facesearch")
PERSON = "Gerhard_Schroeder"


def run(data: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([FACESEARCH, "--data", str(data), *args], capture_output=True,
                          text=True, timeout=300)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def data(tmp_path_factory, lfw) -> Path:
    home = tmp_path_factory.mktemp("cli") / "data"
    run(home, "source", "add", "press", "--lawful-basis", "legitimate_interests",
        "--jurisdiction", "de", "--description", "press photos")
    photos = [str(p) for p in lfw_photos(PERSON)[1:4] + lfw_photos("Hugo_Chavez")[1:3]]
    done = run(home, "ingest", *photos, "--source", "press", "--workers", "1")
    assert "indexed 5" in done.stdout and "faces indexed 5" in done.stdout
    run(home, "case", "open", "C-1", "--purpose", "missing person", "--offence", "robbery")
    return home


def test_source_list_shows_the_registered_source(data: Path) -> None:
    assert run(data, "source", "list").stdout.startswith(
        "press\tlegitimate interests (GDPR Art. 6(1)(f))\tDE\timages kept 3 years\t")


def test_search_prints_ranked_candidates_with_provenance_and_the_lead_notice(data: Path) -> None:
    out = run(data, "search", str(lfw_photos(PERSON)[0]), "--case", "C-1", "--top", "2").stdout
    assert "investigative leads for human review, not identifications" in out
    assert "false-match" in out.replace("_", "-") or "different-person pairs" in out
    lines = [line for line in out.splitlines() if line.strip().startswith(("1.", "2."))]
    assert len(lines) == 2 and all(PERSON in line for line in lines)
    assert "source press, jurisdiction DE" in out
    assert "strangers expected within it among the" in out  # the cut-off used
    assert all(re.search(r"strangers this close [0-9.e+-]+ \((strong|moderate|weak)", line)
               for line in lines)


def test_search_json_groups_the_candidates_by_identity_and_photo(data: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.jpg"  # the same bytes at another place: one photo seen twice
    copy.write_bytes(lfw_photos(PERSON)[1].read_bytes())
    assert "(new places they were seen: 1)" in run(data, "ingest", str(copy), "--source", "press").stdout
    result = json.loads(run(data, "search", str(lfw_photos(PERSON)[0]), "--case", "C-1", "--json",
                            "--face", "largest").stdout)
    ranks = [c["rank"] for c in result["faces"][0]["candidates"]]
    assert sorted(r for g in result["identities"] for r in g["ranks"]) == ranks
    assert sorted(rank for p in result["photos"] for _, rank in p["candidates"]) == ranks
    [seen_twice] = [p for p in result["photos"] if len(p["sightings"]) == 2]
    # Each place a file's name in words: the JSON never tells where the server keeps files.
    assert {s["location"] for s in seen_twice["sightings"]} == {
        f"file {lfw_photos(PERSON)[1].name} on the server", "file copy.jpg on the server"}
    out = json.dumps(result)
    assert str(tmp_path) not in out and str(lfw_photos(PERSON)[1].parent) not in out


def test_search_json_is_machine_readable(data: Path) -> None:
    out = run(data, "search", str(lfw_photos(PERSON)[0]), "--case", "C-1", "--json",
              "--face", "largest").stdout
    result = json.loads(out)
    assert result["notice"].startswith("Candidates are investigative leads")
    candidates = result["faces"][0]["candidates"]
    assert candidates[0]["source"] == "press" and PERSON in candidates[0]["location"]
    assert 0 < candidates[0]["false_match_probability"] < 0.01
    assert Path(candidates[0]["crop_path"]).is_file()
    # Every candidate says how many strangers this gallery holds at least as close, and its band.
    cut_off = result["faces"][0]["cut_off"]
    assert cut_off["faces"] > 0 and cut_off["target_false_matches"] == 10
    for c in candidates:
        assert c["expected_false_matches"] == pytest.approx(
            c["false_match_probability"] * cut_off["faces"], rel=1e-2)
        assert c["band"] in ("strong", "moderate", "weak") and c["distance"] < cut_off["distance"]


def test_a_bad_probe_gives_one_line_and_exit_code_2(data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "probe.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    done = run(data, "search", str(bad), "--case", "C-1", ok=False)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_ingest_into_an_unregistered_source_is_refused_with_exit_code_4(data: Path) -> None:
    done = run(data, "ingest", str(lfw_photos(PERSON)[5]), "--source", "nope", ok=False)
    assert done.returncode == 4 and "not registered" in done.stderr


def test_delete_then_search_no_longer_returns_the_image(data: Path) -> None:
    photo = str(lfw_photos("Hugo_Chavez")[1])
    assert "deleted 1 images" in run(data, "delete", "--image", photo).stdout
    out = run(data, "search", str(lfw_photos("Hugo_Chavez")[0]), "--case", "C-1", "--json").stdout
    assert photo not in out
    assert "images\t4" in run(data, "stats").stdout


def test_a_search_without_an_open_case_is_refused(data: Path) -> None:
    done = run(data, "search", str(lfw_photos(PERSON)[0]), "--case", "NO-SUCH", ok=False)
    assert done.returncode == 3 and "no case NO-SUCH" in done.stderr
    run(data, "case", "open", "C-closed", "--purpose", "missing person", "--offence", "robbery")
    run(data, "case", "close", "C-closed")
    done = run(data, "search", str(lfw_photos(PERSON)[0]), "--case", "C-closed", ok=False)
    assert done.returncode == 4 and "closed" in done.stderr


def test_a_case_needs_a_configured_purpose(data: Path) -> None:
    done = run(data, "case", "open", "C-2", "--purpose", "curiosity", "--offence", "robbery", ok=False)
    assert done.returncode == 2 and "purpose must be one of" in done.stderr


def test_editing_one_audit_record_makes_verify_fail_at_exactly_that_record(tmp_path: Path) -> None:
    home = tmp_path / "data"
    for number in range(1, 6):
        run(home, "source", "add", f"s{number}", "--lawful-basis", "public_task", "--jurisdiction", "us")
    assert "audit trail intact: 5 records" in run(home, "audit", "verify").stdout
    with sqlite3.connect(home / "metadata.sqlite3") as db:
        db.execute("UPDATE audit_log SET detail = replace(detail, 's3', 's9') WHERE id = 3")
    done = run(home, "audit", "verify", ok=False)
    assert done.returncode == 6
    assert "broken at record 3" in done.stdout and "edited" in done.stdout


def test_deleting_an_audit_record_breaks_the_chain_at_the_next_one(tmp_path: Path) -> None:
    home = tmp_path / "data"
    for number in range(1, 5):
        run(home, "source", "add", f"s{number}", "--lawful-basis", "public_task", "--jurisdiction", "us")
    with sqlite3.connect(home / "metadata.sqlite3") as db:
        db.execute("DELETE FROM audit_log WHERE id = 2")
    done = run(home, "audit", "verify", ok=False)
    assert done.returncode == 6 and "broken at record 3" in done.stdout


def test_audit_export_writes_csv_and_json_with_filters(data: Path, tmp_path: Path) -> None:
    out = run(data, "audit", "export", "--action", "case.", "--format", "json").stdout
    records = json.loads(out)
    assert records and all(r["action"].startswith("case.") for r in records)
    assert all(len(r["hash"]) == 64 for r in records)
    target = tmp_path / "audit.csv"
    run(data, "audit", "export", "--format", "csv", "--output", str(target))
    rows = list(csv.DictReader(target.open()))
    assert {"source.add", "ingest"} <= {r["action"] for r in rows}
    assert rows[0]["id"] == "1" and rows[0]["prev_hash"] == "0" * 64


def test_bootstrap_admin_works_once(tmp_path: Path) -> None:
    home = tmp_path / "data"
    env = {"FACESEARCH_ADMIN_PASSWORD": "correct horse battery"}
    first = run_env(home, env, "user", "bootstrap-admin", "root", "--organisation", "Agency")
    assert "created admin root of Agency" in first.stdout
    again = run_env(home, env, "user", "bootstrap-admin", "root2", "--organisation", "Agency", ok=False)
    assert again.returncode == 4 and "already exists" in again.stderr
    listed = run(home, "user", "list").stdout
    assert "root\tadmin\tAgency\tactive" in listed and "root2" not in listed


def run_env(data: Path, env: dict, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([FACESEARCH, "--data", str(data), *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def test_retention_records_and_organisation_limits_from_the_command_line(data: Path) -> None:
    out = run(data, "retention", "run").stdout
    assert out.startswith("removed 0 images (0 faces)")  # everything here is new
    record = json.loads(run(data, "records", "--format", "json").stdout)
    assert record["sources"][0]["name"] == "press" and record["sources"][0]["retention_days"] == 1095
    assert "missing person" in record["purposes"]
    assert "local: searches limited to DE" in run(data, "org", "restrict", "local",
                                                  "--jurisdictions", "de").stdout
    assert "all jurisdictions" in run(data, "org", "restrict", "local", "--jurisdictions", "").stdout
    assert run(data, "org", "restrict", "nobody", "--jurisdictions", "de", ok=False).returncode == 3
    assert "faces_by_jurisdiction.DE\t" in run(data, "stats").stdout
