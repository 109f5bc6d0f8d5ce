"""Files of the data directory: owner-only (biometric data, whatever the umask) and durable."""

from __future__ import annotations

import os
from pathlib import Path


def private_directory(path: Path) -> Path:
    """Create path and its missing parents as owner-only directories; tighten path if it
    exists. (mkdir's parents=True would give the parents the umask's mode.)"""
    for missing in reversed([path, *path.parents]):
        if not missing.exists():
            missing.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Replace path with data atomically (a reader sees the old file or the new one), readable
    by the owner only, and on the disk before this returns: written, fsynced, renamed, and
    the rename fsynced."""
    private_directory(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    handle = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(handle, view):]
        os.fsync(handle)
    finally:
        os.close(handle)
    os.replace(tmp, path)
    fsync_directory(path.parent)


def fsync_directory(path: Path) -> None:
    """Make a rename or an unlink in path durable."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
