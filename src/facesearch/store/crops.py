"""Face crops on disk: one JPEG per face, named by image hash and face position."""

from __future__ import annotations

import os
from pathlib import Path


class CropStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def relative_path(self, sha256: str, face_index: int) -> str:
        # Deterministic names: a re-run after a crash overwrites, never duplicates.
        return f"{sha256[:2]}/{sha256}_{face_index}.jpg"

    def write(self, relative: str, jpeg: bytes) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(jpeg)
        os.replace(tmp, path)

    def remove(self, relative: str) -> None:
        (self.root / relative).unlink(missing_ok=True)

    def path(self, relative: str) -> Path:
        return self.root / relative

    def files(self) -> list[Path]:
        return sorted(self.root.rglob("*.jpg")) if self.root.exists() else []
