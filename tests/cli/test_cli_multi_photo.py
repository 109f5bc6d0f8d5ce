"""`facesearch search` with several photos of one person: one search, every photo's hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.cli.test_cli import PERSON, data, run  # noqa: F401 - data is a fixture
from tests.conftest import jpeg_bytes, lfw_photos, noise_image


def test_several_photos_make_one_search_and_a_photo_without_a_face_is_named(
        data: Path, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    # Photos 1-3 of the person are the gallery's; 0, 4 and 5 were never indexed.
    photos = [lfw_photos(PERSON)[n] for n in (0, 4, 5)]
    out = run(data, "search", *map(str, photos), "--case", "C-1", "--face", "largest").stdout
    assert "multi-photo search of 3 photos of one person" in out
    result = json.loads(run(data, "search", *map(str, photos), "--case", "C-1", "--face", "largest",
                            "--json").stdout)
    assert result["probe_photos"] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in photos]
    assert len(result["faces"]) == 1 and PERSON in result["faces"][0]["candidates"][0]["location"]
    blank = tmp_path / "blank.jpg"
    blank.write_bytes(jpeg_bytes(noise_image(320, 240)))
    done = run(data, "search", str(photos[0]), str(blank), "--case", "C-1", ok=False)
    assert done.returncode == 2 and "photo 2 of 2" in done.stderr and "no face" in done.stderr
