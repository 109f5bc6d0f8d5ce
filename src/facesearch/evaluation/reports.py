"""Where the latest evaluation reports are noted, so that the record of processing can cite
them: one small JSON file per kind of report and embedder under the data directory's
evaluations/ (the reports themselves go wherever --output says)."""

from __future__ import annotations

import json
import re
from pathlib import Path


def _note(home: Path, kind: str, embedder: str) -> Path:
    # An embedder may be named by a manifest's path: keep the file name to safe characters.
    return home / "evaluations" / f"{kind}-{re.sub(r'[^A-Za-z0-9._-]+', '_', embedder)}.json"


def note_report(home: Path, kind: str, embedder: str, citation: dict) -> None:
    path = _note(home, kind, embedder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(citation, indent=2))


def latest_report(home: Path, kind: str, embedder: str) -> dict | None:
    """The citation noted by the latest report of this kind for this embedder, if any."""
    try:
        return json.loads(_note(home, kind, embedder).read_text())
    except (OSError, ValueError):
        return None
