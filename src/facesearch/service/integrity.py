"""`facesearch verify`: check that the data directory keeps every promise made about it, and
repair what can be repaired.

Checked under the writer lock (writers wait; searches go on), against the files on disk, not
this process's memory: every vector in an index file belongs to a live face and none to an
erased one, every face up to the file's watermark has its vector, every crop file has its face
and every face its crop, no temporary file is left, the erasure journal is empty, files are
owner-only, and the audit chain verifies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facesearch.index.compressed import SUBDIRECTORY, CompressedIndex
from facesearch.index.faiss_index import INDEX_FILE, FaissIndex
from facesearch.service.engine import Engine
from facesearch.service.trail import AuditTrail
from facesearch.store.files import private_directory
from facesearch.types import Actor

SHOWN = 20  # ids named in a problem's text at most


@dataclass
class IntegrityReport:
    faces: int = 0
    vectors: int = 0  # in the index files on disk
    crops: int = 0
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    erased_vectors_on_disk: int = 0  # must be 0

    @property
    def clean(self) -> bool:
        return not self.problems


@dataclass
class _Findings:
    rebuild_index: bool = False  # stray, erased or missing vectors, or a stale file
    stray_files: list[Path] = field(default_factory=list)
    orphan_crops: list[Path] = field(default_factory=list)
    loose_modes: list[Path] = field(default_factory=list)
    journal: bool = False


class Integrity(AuditTrail, Engine):
    def verify(self, actor: Actor, repair: bool = False) -> IntegrityReport:
        """Check the data directory; with repair, rebuild the index from the stored
        descriptors, finish the erasure journal, delete orphaned crops and temporary files
        and make files owner-only, audited as `verify.repair`. Missing crops and a broken
        audit chain cannot be repaired: they stay reported."""
        self.authorise(actor, "integrity", "verify")
        report = IntegrityReport()
        with self._write_lock():
            found = self._inspect(report)
            if repair and (found.rebuild_index or found.stray_files or found.orphan_crops
                           or found.loose_modes or found.journal):
                self._repair(actor, found, report)
        chain = self.verify_audit(actor)
        if not chain.intact:
            report.problems.append(f"audit chain broken at record {chain.broken_at}: {chain.reason}")
        self._audit_alone(actor, "verify", {
            "faces": report.faces, "vectors": report.vectors, "crops": report.crops,
            "erased_vectors_on_disk": report.erased_vectors_on_disk,
            "problems": len(report.problems), "repaired": len(report.repaired)})
        return report

    def _inspect(self, report: IntegrityReport) -> _Findings:
        found = _Findings()
        face_ids = self.store.face_ids()
        report.faces = len(face_ids)
        erased, _ = self.store.erasures_after(0)
        self._inspect_index(report, found, face_ids, erased)
        journal = len(self.store.pending_erasures())
        if journal:
            found.journal = True
            report.problems.append(f"erasure journal holds {journal} faces not yet erased "
                                   "from index and disk")
        crops = self.store.crop_paths()
        files = self.crops.files()
        report.crops = len(files)
        known = {str(self.crops.path(c)) for c in crops}
        found.orphan_crops = [f for f in files if str(f) not in known]
        if found.orphan_crops:
            report.problems.append(f"{len(found.orphan_crops)} files in crops/ belong to no face: "
                                   + _names(found.orphan_crops))
        missing = [c for c in crops if not self.crops.path(c).exists()]
        if missing:
            report.problems.append(f"{len(missing)} faces have no crop file: {_names(missing)}")
        found.loose_modes = _loose_modes(self.settings.home)
        if found.loose_modes:
            report.problems.append(f"{len(found.loose_modes)} files or folders are readable by "
                                   f"others: {_names(found.loose_modes)}")
        return found

    def _inspect_index(self, report: IntegrityReport, found: _Findings, face_ids: np.ndarray,
                       erased: np.ndarray) -> None:
        if self.settings.vector_backend == "milvus":
            report.repaired.append("vector checks skipped: the Milvus collection is not a file here")
            return
        index_dir = self.settings.index_dir
        stray = set(index_dir.rglob("*.tmp")) if index_dir.exists() else set()
        if CompressedIndex.present(index_dir):
            stray.update(CompressedIndex.stray_files(index_dir))
        found.stray_files = sorted(stray)
        if found.stray_files:
            report.problems.append("index files that no index uses (left by a crash, or an "
                                   f"earlier version of a shard): {_names(found.stray_files)}")
        indexes: list[tuple[str, FaissIndex | CompressedIndex]] = []
        if CompressedIndex.present(index_dir):
            indexes.append((SUBDIRECTORY, CompressedIndex.load(index_dir, self.dimension)))
        if (index_dir / INDEX_FILE).exists():
            indexes.append((INDEX_FILE, FaissIndex.load(index_dir, self.dimension, 1, 1)))
        if len(indexes) > 1:
            found.rebuild_index = True
            report.problems.append("two kinds of index are on disk; one is stale")
        for name, index in indexes:
            held = index.held_ids()
            report.vectors += len(held)
            on_disk_erased = held[np.isin(held, erased)]
            report.erased_vectors_on_disk += len(on_disk_erased)
            if len(on_disk_erased):
                report.problems.append(f"{name} holds the vectors of {len(on_disk_erased)} erased "
                                       f"faces: {_ids(on_disk_erased)}")
            unknown = held[~np.isin(held, face_ids) & ~np.isin(held, erased)]
            if len(unknown):
                report.problems.append(f"{name} holds {len(unknown)} vectors of no face: {_ids(unknown)}")
            expected = face_ids[face_ids <= index.watermark]
            absent = expected[~np.isin(expected, held)]
            if len(absent):
                report.problems.append(f"{name} lacks the vectors of {len(absent)} faces: {_ids(absent)}")
            found.rebuild_index |= bool(len(on_disk_erased) or len(unknown) or len(absent))

    def _repair(self, actor: Actor, found: _Findings, report: IntegrityReport) -> None:
        done: dict[str, int] = {}
        if found.journal:
            done["journal_finished"] = len(self.store.pending_erasures())
            self._finish_erasures(save=True)
        if found.rebuild_index and self.settings.vector_backend != "milvus":
            done["index_rebuilt_faces"] = len(self._build_index())
        for path in found.stray_files:
            path.unlink(missing_ok=True)
        for path in found.orphan_crops:
            path.unlink(missing_ok=True)
        done["temporary_files_removed"] = len(found.stray_files)
        done["orphan_crops_removed"] = len(found.orphan_crops)
        for path in found.loose_modes:
            if path.is_dir():
                private_directory(path)
            elif path.exists():
                os.chmod(path, 0o600)
        done["modes_tightened"] = len(found.loose_modes)
        self._audit_alone(actor, "verify.repair", {k: v for k, v in done.items() if v})
        report.repaired += [f"{k.replace('_', ' ')}: {v}" for k, v in done.items() if v]
        # What is left after repairing is what the report says.
        left = IntegrityReport()
        self._inspect(left)
        report.problems, report.erased_vectors_on_disk = left.problems, left.erased_vectors_on_disk
        report.vectors, report.crops = left.vectors, left.crops


def _loose_modes(home: Path) -> list[Path]:
    """The data directory and everything in it that its group or others may read or enter."""
    if not home.exists():
        return []
    paths = [home, *home.rglob("*")]
    return [p for p in paths if not p.is_symlink() and p.stat().st_mode & 0o077]


def _ids(ids: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:SHOWN])
    return shown + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")


def _names(paths: list) -> str:
    shown = ", ".join(str(p) for p in paths[:SHOWN])
    return shown + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")
