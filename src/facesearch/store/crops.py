"""Face crops on disk: one JPEG per face, named by image hash and face position."""

from __future__ import annotations

from pathlib import Path

from facesearch.store.files import fsync_directory, write_private


class CropStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def relative_path(self, sha256: str, face_index: int) -> str:
        # Deterministic names: a re-run after a crash overwrites, never duplicates.
        return f"{sha256[:2]}/{sha256}_{face_index}.jpg"

    def write(self, relative: str, jpeg: bytes) -> None:
        """Owner-only and durable: on the disk before the transaction that records it commits."""
        write_private(self.root / relative, jpeg)

    def remove(self, relatives: list[str]) -> None:
        """Delete crops, then fsync each folder they were in once, so that an erased face's
        crop stays erased after a power cut (one fsync per folder, not per crop: a purge
        erases thousands)."""
        folders = set()
        for relative in relatives:
            path = self.root / relative
            if path.exists():
                path.unlink()
                folders.add(path.parent)
        for folder in folders:
            fsync_directory(folder)

    def path(self, relative: str) -> Path:
        return self.root / relative

    def files(self) -> list[Path]:
        """Every file under the crops directory: crops, and any temporary file a crash left."""
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.rglob("*") if p.is_file())
