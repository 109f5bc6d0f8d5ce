"""Whether access reports name an organisation's case numbers, set from the command line and
audited; an unknown organisation is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.cli.test_cli import run


def test_the_operator_lets_an_organisation_name_its_case_numbers_and_takes_it_back(
        tmp_path: Path) -> None:
    home = tmp_path / "data"
    run(home, "org", "restrict", "local", "--jurisdictions", "")  # the operator's organisation

    def revealed() -> int:
        with sqlite3.connect(home / "metadata.sqlite3") as db:
            return db.execute("SELECT reveal_case_numbers FROM organisations"
                              " WHERE name = 'local'").fetchone()[0]

    assert revealed() == 0  # by default reports name only the organisation and the date
    assert "local: access reports name its case numbers" in run(
        home, "org", "reveal-case-numbers", "local", "--yes").stdout
    assert revealed() == 1
    assert "do not name" in run(home, "org", "reveal-case-numbers", "local", "--no").stdout
    assert revealed() == 0
    assert run(home, "org", "reveal-case-numbers", "nobody", "--yes", ok=False).returncode == 3
    with sqlite3.connect(home / "metadata.sqlite3") as db:
        actions = [a for (a,) in db.execute("SELECT action FROM audit_log ORDER BY id")
                   if a.startswith("organisation.reveal")]
    assert actions == ["organisation.reveal_case_numbers"] * 2 + [
        "organisation.reveal_case_numbers.refused"]
