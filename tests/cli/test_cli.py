"""The commands as a user types them, in a real subprocess."""

from __future__ import annotations

import json
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
    return home


def test_source_list_shows_the_registered_source(data: Path) -> None:
    assert run(data, "source", "list").stdout.startswith("press\tlegitimate_interests\tDE\t")


def test_search_prints_ranked_candidates_with_provenance_and_the_lead_notice(data: Path) -> None:
    out = run(data, "search", str(lfw_photos(PERSON)[0]), "--top", "2").stdout
    assert "investigative leads for human review, not identifications" in out
    assert "false-match" in out.replace("_", "-") or "different-person pairs" in out
    lines = [line for line in out.splitlines() if line.strip().startswith(("1.", "2."))]
    assert len(lines) == 2 and all(PERSON in line for line in lines)
    assert "source press, jurisdiction DE" in out


def test_search_json_is_machine_readable(data: Path) -> None:
    out = run(data, "search", str(lfw_photos(PERSON)[0]), "--json", "--face", "largest").stdout
    result = json.loads(out)
    assert result["notice"].startswith("Candidates are investigative leads")
    candidates = result["faces"][0]["candidates"]
    assert candidates[0]["source"] == "press" and PERSON in candidates[0]["location"]
    assert 0 < candidates[0]["false_match_probability"] < 0.01
    assert Path(candidates[0]["crop_path"]).is_file()


def test_a_bad_probe_gives_one_line_and_exit_code_2(data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "probe.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    done = run(data, "search", str(bad), ok=False)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_ingest_into_an_unregistered_source_is_refused_with_exit_code_4(data: Path) -> None:
    done = run(data, "ingest", str(lfw_photos(PERSON)[5]), "--source", "nope", ok=False)
    assert done.returncode == 4 and "not registered" in done.stderr


def test_delete_then_search_no_longer_returns_the_image(data: Path) -> None:
    photo = str(lfw_photos("Hugo_Chavez")[1])
    assert "deleted 1 images" in run(data, "delete", "--image", photo).stdout
    out = run(data, "search", str(lfw_photos("Hugo_Chavez")[0]), "--json").stdout
    assert photo not in out
    assert "images\t4" in run(data, "stats").stdout
