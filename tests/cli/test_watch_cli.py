"""Case watches from the command line, as two operators type them: one asks, another approves,
an ingest notifies, the list shows the match, and stopping ends it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import lfw_photos

FACESEARCH = str(Path(sys.executable).parent / "facesearch")
PERSON = "Gerhard_Schroeder"


def run(data: Path, user: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """The command run by the OS user `user` (the CLI's actor is the local user's name)."""
    done = subprocess.run([FACESEARCH, "--data", str(data), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "LOGNAME": user, "USER": user,
                                            "FACESEARCH_WORKERS": "1"})
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def test_one_operator_asks_another_approves_and_an_ingest_notifies(tmp_path: Path, lfw) -> None:
    data = tmp_path / "data"
    run(data, "alice", "source", "add", "press", "--lawful-basis", "legitimate_interests",
        "--jurisdiction", "de")
    run(data, "alice", "case", "open", "C-9", "--purpose", "missing person", "--offence", "robbery")
    asked = run(data, "alice", "watch", "request", "C-9", "--photo", str(lfw_photos(PERSON)[0]),
                "--authorisation", "warrant 7", "--days", "14").stdout
    watch = re.search(r"watch (\d+) requested", asked).group(1)
    assert f"{watch}\tcase C-9\tprobe\tby alice\twarrant 7" in run(data, "bob", "watch", "pending").stdout

    refused = run(data, "alice", "watch", "approve", watch, ok=False)
    assert refused.returncode == 4 and "another person" in refused.stderr + refused.stdout
    assert "active" in run(data, "bob", "watch", "approve", watch).stdout

    run(data, "alice", "ingest", str(lfw_photos(PERSON)[1]), "--source", "press")
    listed = run(data, "alice", "watch", "list", "C-9").stdout.splitlines()
    assert listed[0].startswith(f"{watch}\tactive\tprobe\t") and listed[0].endswith("1 matches")
    assert re.match(r"  \S+  image [0-9a-f]{64}  face \d+  distance 0\.\d{3}$", listed[1])

    run(data, "alice", "watch", "stop", watch, "--reason", "found")
    assert run(data, "alice", "watch", "list", "C-9").stdout.startswith(f"{watch}\tstopped\t")
