"""A source's display name, given as a user types it: what reviewers and the public are shown."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.cli.test_cli import run


def test_source_add_keeps_the_display_name_people_are_shown(tmp_path: Path) -> None:
    home = tmp_path / "data"
    run(home, "source", "add", "dpa-2026", "--lawful-basis", "legitimate_interests",
        "--jurisdiction", "de", "--display-name", "  Press archive   of Agency X ")
    run(home, "source", "add", "plain", "--lawful-basis", "public_task", "--jurisdiction", "de")
    with sqlite3.connect(home / "metadata.sqlite3") as db:
        shown = dict(db.execute("SELECT name, display_name FROM sources"))
    assert shown == {"dpa-2026": "Press archive of Agency X", "plain": ""}  # "": its name is shown
    refused = run(home, "source", "add", "long", "--lawful-basis", "public_task",
                  "--jurisdiction", "de", "--display-name", "x" * 201, ok=False)
    assert refused.returncode == 2 and "at most 200 characters" in refused.stderr
