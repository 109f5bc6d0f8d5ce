"""Face quality as a user types the commands: ingest counts the faces it withholds by reason,
search warns about a poor probe and says what probes of its quality achieved."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageFilter

from tests.cli.test_cli import run
from tests.conftest import jpeg_bytes, lfw_photos

PERSON = "Gerhard_Schroeder"


def test_ingest_counts_withheld_faces_by_reason_and_search_warns_about_a_poor_probe(
        tmp_path: Path, lfw) -> None:
    home = tmp_path / "data"
    blurred = tmp_path / "blurred.jpg"  # sharpness about 0.007, under the default 0.02
    blurred.write_bytes(jpeg_bytes(Image.open(lfw_photos(PERSON)[0]).filter(ImageFilter.GaussianBlur(3)),
                                   quality=95))
    run(home, "source", "add", "press", "--lawful-basis", "legitimate_interests", "--jurisdiction", "de")
    done = run(home, "ingest", str(blurred), str(lfw_photos(PERSON)[1]), "--source", "press",
               "--workers", "1")
    assert "faces indexed 1," in done.stdout
    assert "faces withheld for quality (sharpness past its minimum): 1" in done.stdout
    run(home, "case", "open", "C-1", "--purpose", "missing person", "--offence", "robbery")
    out = run(home, "search", str(blurred), "--case", "C-1", "--face", "largest").stdout
    assert "warning: the face is blurred: sharpness 0.0" in out and "under the minimum of 0.02" in out
    assert "Probes of this sharpness band (0-0.02) found their person first in" in out
