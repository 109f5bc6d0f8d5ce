"""The operator resets a user's second factor and links a user to an identity provider with
the CLI, in a real subprocess."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from tests.conftest import OPERATOR, log_in

FACESEARCH = str(Path(sys.executable).parent / "facesearch")
PASSWORD = "a-long-enough-password"
PROVIDERS = json.dumps([{"name": "agency", "issuer": "http://127.0.0.1:9", "client_id": "c",
                         "client_secret": "s", "organisation": "Org"}])


def run(data: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([FACESEARCH, "--data", str(data), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "FACESEARCH_OIDC_PROVIDERS": PROVIDERS})
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def test_the_operator_resets_a_second_factor_and_links_a_user(tmp_path: Path) -> None:
    home = tmp_path / "data"
    service = FaceSearchService(Settings(home=home))
    try:
        service.bootstrap_admin(OPERATOR, "ada", PASSWORD, "Org")
        log_in(service, "ada", PASSWORD)  # sets up ada's second factor
        sam = service.create_user(OPERATOR, "sam", PASSWORD, "supervisor", "Org")
    finally:
        service.close()

    done = run(home, "user", "reset-second-factor", "ada")
    assert done.stdout.startswith("second factor of ada reset")
    assert run(home, "user", "reset-second-factor", "nobody", ok=False).returncode != 0
    done = run(home, "user", "link", str(sam.id), "--provider", "agency", "--subject", "agency-7")
    assert done.stdout.strip() == "sam signs in through agency"

    with sqlite3.connect(home / "metadata.sqlite3") as db:
        ada = db.execute("SELECT totp_secret, totp_enrolled_at FROM users WHERE username = 'ada'").fetchone()
        trail = db.execute("SELECT action, actor FROM audit_log ORDER BY id").fetchall()
    assert ada == (None, None)
    assert [a for a, _ in trail][-3:] == ["second_factor.reset", "second_factor.reset.refused", "user.link"]
