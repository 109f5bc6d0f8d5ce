"""The use cases, and the single place where policy is checked and actions are audited.

The CLI (and later the web app) call only this module. Every policy decision and audit record
is made here, in the same transaction as the change it guards, before vision, index or store
are touched. Search also filters deleted and suppressed faces after the index query, because
an index can lag behind the metadata.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facesearch.calibration import MEANING, load_calibration
from facesearch.config import Settings
from facesearch.errors import (
    BadImage,
    FacesearchError,
    InvalidRequest,
    NoFace,
    NotFound,
    PolicyRefused,
)
from facesearch.imaging import decode
from facesearch.index.faiss_index import FaissIndex
from facesearch.ingest import (
    Analysed,
    ImageTask,
    WorkerPool,
    analyse_batch,
    discover,
    read_task,
)
from facesearch.policy.rules import (
    check_jurisdiction_allowed,
    check_lawful_basis,
    normalise_jurisdiction,
    suppressed_mask,
)
from facesearch.store.crops import CropStore
from facesearch.store.metadata import MetadataStore, NewImage, Source, box_of, from_blob, utc_now
from facesearch.types import Actor, Candidate, Face, ProbeResult

LEAD_NOTICE = (
    "Candidates are investigative leads for human review, not identifications."
)
DIMENSION = 128
INGEST_BATCH = 8  # images per worker task: their faces are described in one batch


@dataclass
class IngestSummary:
    images_total: int = 0  # files found under the paths given
    images_seen: int = 0
    images_indexed: int = 0
    faces_indexed: int = 0
    faces_withheld: int = 0  # faces of suppressed people, never stored
    images_without_faces: int = 0
    already_indexed: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    errors: list[tuple[str, str]] = field(default_factory=list)  # (location, reason)


ProgressCallback = Callable[[IngestSummary], None]


@dataclass
class SearchResult:
    probe_sha256: str
    faces: list[ProbeResult]
    notice: str = LEAD_NOTICE
    score_meaning: str = MEANING


@dataclass
class DeletionReport:
    images: int
    faces: int


class FaceSearchService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.home.mkdir(parents=True, exist_ok=True)
        self.store = MetadataStore(settings.metadata_url)
        self.crops = CropStore(settings.crops_dir.resolve())
        self._index: FaissIndex | None = None
        self._index_dirty = False  # changed since last saved
        self._analyzer = None
        self._calibration = None

    def close(self) -> None:
        self.store.close()

    # Shared machinery --------------------------------------------------------------------

    @property
    def analyzer(self):  # noqa: ANN201 - FaceAnalyzer, imported lazily: dlib is slow to load
        if self._analyzer is None:
            from facesearch.vision import FaceAnalyzer

            self._analyzer = FaceAnalyzer(self.settings)
        return self._analyzer

    @property
    def index(self) -> FaissIndex:
        """The vector index, brought up to date with the metadata store."""
        if self._index is None:
            self._index = FaissIndex.load(self.settings.index_dir, DIMENSION,
                                          self.settings.exact_index_max, self.settings.hnsw_ef_search)
            self._index_dirty = False
        self._catch_up(self._index)
        return self._index

    def _catch_up(self, index: FaissIndex) -> None:
        """Add faces committed since the index was last saved (after a crash, or by another
        process), and drop the vectors of faces erased since."""
        for ids, vectors in self.store.face_vectors(after_id=index.watermark):
            index.add(ids, vectors)
            index.watermark = int(ids[-1])
            self._index_dirty = True
        pending = self.store.pending_erasures()
        if pending:
            index.remove(np.array([face_id for face_id, _ in pending], dtype=np.int64))
            self._index_dirty = True

    @contextmanager
    def _writer(self) -> Iterator[FaissIndex]:
        """One writer at a time per data directory. Yields the up-to-date index; on entry and
        on exit, finishes erasures and saves the index if it changed."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        with open(self.settings.home / ".writer.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._finish_erasures()
                yield self.index
                self._finish_erasures()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _finish_erasures(self) -> None:
        """Remove erased faces' vectors from the saved index and their crops from disk."""
        index = self.index
        pending = self.store.pending_erasures()
        for _, crop in pending:
            self.crops.remove(crop)
        if self._index_dirty:
            index.save(self.settings.index_dir)
            self._index_dirty = False
        if pending:
            self.store.clear_erasures([face_id for face_id, _ in pending])

    def _probe_faces(self, photo: bytes, which: str) -> tuple[str, list[Face]]:
        if which not in ("all", "largest"):
            raise InvalidRequest("face must be 'all' or 'largest'")
        image = decode(photo, max_pixels=self.settings.max_image_pixels,
                       max_bytes=self.settings.max_image_bytes)
        faces = self.analyzer.analyse([image.pixels], self.settings.mirror_probe)[0]
        if not faces:
            raise NoFace("no face found in the photo")
        return hashlib.sha256(photo).hexdigest(), faces[:1] if which == "largest" else faces

    # Sources -----------------------------------------------------------------------------

    def add_source(self, actor: Actor, name: str, lawful_basis: str, jurisdiction: str,
                   description: str = "") -> Source:
        name = name.strip()
        if not name:
            raise InvalidRequest("a source needs a name")
        basis = check_lawful_basis(lawful_basis)
        code = normalise_jurisdiction(jurisdiction)
        if self.store.source(name) is not None:
            raise InvalidRequest(f"source {name!r} is already registered")
        source = self.store.add_source(name, basis, code, description)
        with self.store.transaction() as conn:
            self.store.audit(conn, actor.name, "source.add",
                             {"source": name, "lawful_basis": basis, "jurisdiction": code})
        return source

    def sources(self) -> list[Source]:
        return self.store.sources()

    # Ingest ------------------------------------------------------------------------------

    def ingest(self, actor: Actor, paths: list[Path], source_name: str,
               progress: ProgressCallback | None = None) -> IngestSummary:
        """Index every face of every image under paths, as coming from a registered source.

        Images already indexed (same sha256) are skipped, so an interrupted run can simply
        be started again. Faces of suppressed people are never stored.
        """
        source = self.store.source(source_name)
        if source is None:
            self._refuse(actor, "ingest", f"source {source_name!r} is not registered; "
                         "register it first with `facesearch source add`")
        try:
            check_lawful_basis(source.lawful_basis)
            check_jurisdiction_allowed(source.jurisdiction, self.settings.excluded_jurisdictions)
        except PolicyRefused as exc:
            self._refuse(actor, "ingest", exc.message)
        summary = IngestSummary(images_total=sum(1 for _ in discover(paths)))
        with self._writer() as index:
            templates = self.store.suppression_templates()
            workers = self.settings.workers or _cores()
            with WorkerPool(self.settings, workers) as pool:
                try:
                    for results in pool.map(analyse_batch, self._new_tasks(paths, summary, progress)):
                        for result in results:
                            self._write_one(result, source, templates, summary, index)
                        if progress:
                            progress(summary)
                except BrokenProcessPool:
                    raise FacesearchError(
                        "a worker process died (out of memory?); what was committed is kept: "
                        "run the same ingest again to finish") from None
            with self.store.transaction() as conn:
                self.store.audit(conn, actor.name, "ingest", {
                    "source": source.name, "images_indexed": summary.images_indexed,
                    "faces_indexed": summary.faces_indexed,
                    "faces_withheld": summary.faces_withheld,
                    "skipped": dict(summary.skipped)})
        return summary

    def _new_tasks(self, paths: list[Path], summary: IngestSummary,
                   progress: ProgressCallback | None) -> Iterator[list[ImageTask]]:
        """Batches of images not yet indexed; duplicates and unreadable files are counted here."""
        seen: set[str] = set()
        pending: list[ImageTask] = []
        for path in discover(paths):
            try:
                task = read_task(path, self.settings.max_image_bytes)
            except BadImage as exc:
                summary.images_seen += 1
                self._skip(summary, str(path), exc.message)
                continue
            if task.sha256 in seen:
                summary.images_seen += 1
                summary.already_indexed += 1
                continue
            seen.add(task.sha256)
            pending.append(task)
            if len(pending) >= 4 * INGEST_BATCH:
                yield from self._batches(pending, summary, progress)
                pending = []
        yield from self._batches(pending, summary, progress)

    def _batches(self, tasks: list[ImageTask], summary: IngestSummary,
                 progress: ProgressCallback | None) -> Iterator[list[ImageTask]]:
        known = self.store.known_hashes([t.sha256 for t in tasks])
        fresh = [t for t in tasks if t.sha256 not in known]
        summary.already_indexed += len(tasks) - len(fresh)
        summary.images_seen += len(tasks) - len(fresh)
        if progress and known:
            progress(summary)
        for start in range(0, len(fresh), INGEST_BATCH):
            yield fresh[start:start + INGEST_BATCH]

    def _write_one(self, result: Analysed, source: Source, templates: np.ndarray,
                   summary: IngestSummary, index: FaissIndex) -> None:
        summary.images_seen += 1
        if result.error is not None:
            self._skip(summary, result.location, result.error)
            return
        faces = result.faces or []
        if faces:
            withheld = suppressed_mask(np.stack([f.embedding for f in faces]), templates,
                                       self.settings.suppress_threshold)
            kept = [f for f, w in zip(faces, withheld) if not w]
        else:
            withheld, kept = np.zeros(0, bool), []
        summary.faces_withheld += int(withheld.sum())
        if faces and not kept:
            return  # only suppressed people: not even the image's location is kept
        crop_paths = [self.crops.relative_path(result.sha256, i) for i in range(len(kept))]
        # Crops first, then one transaction: a crash in between leaves only files that the
        # re-run overwrites under the same names, never a row without its crop.
        for face, crop in zip(kept, crop_paths):
            self.crops.write(crop, face.chip_jpeg)
        face_ids = self.store.add_image(
            NewImage(sha256=result.sha256, location=result.location, page_url=None,
                     source_id=source.id, jurisdiction=source.jurisdiction,
                     collected_at=utc_now(), width=result.width, height=result.height,
                     format=result.format),
            kept, crop_paths, withheld=int(withheld.sum()))
        if kept:
            index.add(np.array(face_ids, dtype=np.int64), np.stack([f.embedding for f in kept]))
            index.watermark = max(index.watermark, max(face_ids))
            self._index_dirty = True
        summary.images_indexed += 1
        summary.faces_indexed += len(kept)
        summary.images_without_faces += not faces

    @staticmethod
    def _skip(summary: IngestSummary, location: str, reason: str) -> None:
        summary.skipped[reason.split(":")[0]] += 1
        summary.errors.append((location, reason))

    # Search ------------------------------------------------------------------------------

    def search(self, actor: Actor, photo: bytes, top_k: int | None = None,
               face: str = "all") -> SearchResult:
        """Ranked candidates for each face in the probe photo, nearest first."""
        k = top_k or self.settings.top_k
        if not 1 <= k <= 1000:
            raise InvalidRequest("top must be between 1 and 1000")
        probe_sha, probe_faces = self._probe_faces(photo, face)
        index = self.index
        templates = self.store.suppression_templates()
        calibration = self._calibration = self._calibration or load_calibration()
        results = []
        for number, probe in enumerate(probe_faces):
            # Over-fetch: some hits may be deleted or suppressed since the index was saved.
            distances, ids = index.search(probe.embedding, k + 32)
            hits = [(float(d), int(i)) for d, i in zip(distances[0], ids[0])
                    if i >= 0 and d < self.settings.match_threshold]
            rows = self.store.candidate_rows([i for _, i in hits])
            live = [(d, i) for d, i in hits if i in rows]
            if live and len(templates):
                vectors = np.stack([from_blob(rows[i]["embedding"]) for _, i in live])
                hidden = suppressed_mask(vectors, templates, self.settings.suppress_threshold)
                live = [hit for hit, h in zip(live, hidden) if not h]
            candidates = []
            for rank, (distance, face_id) in enumerate(live[:k], start=1):
                row = rows[face_id]
                candidates.append(Candidate(
                    rank=rank, face_id=face_id, distance=round(distance, 4),
                    false_match_probability=calibration.false_match_probability(distance),
                    image_id=row["image_id"], image_sha256=row["sha256"],
                    location=row["location"], page_url=row["page_url"], source=row["source"],
                    jurisdiction=row["jurisdiction"], collected_at=row["collected_at"],
                    crop_path=str(self.crops.path(row["crop_path"])), box=box_of(row)))
            results.append(ProbeResult(probe_face=number, box=probe.box, quality=probe.quality,
                                       candidates=candidates))
        with self.store.transaction() as conn:
            self.store.audit(conn, actor.name, "search", {
                "probe_sha256": probe_sha, "probe_faces": len(probe_faces),
                "results": [[c.face_id for c in r.candidates] for r in results]})
        return SearchResult(probe_sha256=probe_sha, faces=results)

    # Deletion, purge, suppression ------------------------------------------------------

    def delete(self, actor: Actor, *, image: str | None = None, face_id: int | None = None,
               source: str | None = None) -> DeletionReport:
        """Delete one image (by sha256 or location), one face, or everything from a source.

        Vectors, crops and metadata all go; a later search cannot return them."""
        chosen = [x is not None for x in (image, face_id, source)]
        if sum(chosen) != 1:
            raise InvalidRequest("delete exactly one of: an image, a face or a source")
        with self._writer():
            with self.store.transaction() as conn:
                if face_id is not None:
                    report = DeletionReport(0, self.store.delete_faces([face_id], conn))
                elif source is not None:
                    if self.store.source(source) is None:
                        raise NotFound(f"source {source!r} is not registered")
                    report = DeletionReport(*self.store.delete_images_where(conn, source=source))
                    self.store.delete_source(conn, source)
                else:
                    assert image is not None
                    by_hash = len(image) == 64 and all(c in "0123456789abcdef" for c in image)
                    report = DeletionReport(*self.store.delete_images_where(
                        conn, **({"image_sha256": image} if by_hash else
                                 {"image_location": str(Path(image).resolve())})))
                if source is None and report.faces == 0 and report.images == 0:
                    raise NotFound("nothing matched: no such image or face")
                self.store.audit(conn, actor.name, "delete", {
                    "image": image, "face_id": face_id, "source": source,
                    "images": report.images, "faces": report.faces})
        return report

    def purge_jurisdiction(self, actor: Actor, jurisdiction: str) -> DeletionReport:
        """Delete every image, face, vector and crop collected under a jurisdiction."""
        code = normalise_jurisdiction(jurisdiction)
        with self._writer():
            with self.store.transaction() as conn:
                report = DeletionReport(*self.store.delete_images_where(conn, jurisdiction=code))
                self.store.audit(conn, actor.name, "purge", {
                    "jurisdiction": code, "images": report.images, "faces": report.faces})
        return report

    def suppress(self, actor: Actor, photo: bytes, reason: str) -> DeletionReport:
        """Record the person in photo (its largest face) as never to be indexed or returned,
        and delete every indexed face of theirs now. Only their descriptor is kept."""
        if not reason.strip():
            raise InvalidRequest("a suppression needs a reason")
        _, faces = self._probe_faces(photo, "largest")
        template = faces[0].embedding
        with self._writer():
            # An exact scan of every stored descriptor, not the approximate index: an erasure
            # must not miss a face that the index's recall would.
            ids = [int(i) for chunk_ids, vectors in self.store.face_vectors()
                   for i in chunk_ids[suppressed_mask(vectors, template[None, :],
                                                      self.settings.suppress_threshold)]]
            with self.store.transaction() as conn:
                self.store.add_suppressions(template[None, :], reason, conn)
                removed = self.store.delete_faces(ids, conn)
                self.store.audit(conn, actor.name, "suppress", {"faces": removed, "reason": reason})
        return DeletionReport(0, removed)

    # Maintenance -------------------------------------------------------------------------

    def reindex(self, actor: Actor) -> int:
        """Rebuild the vector index from the stored descriptors; returns faces indexed."""
        with self._writer():
            fresh = FaissIndex(DIMENSION, self.settings.exact_index_max, self.settings.hnsw_ef_search)
            for ids, vectors in self.store.face_vectors():
                fresh.add(ids, vectors)
                fresh.watermark = int(ids[-1])
            self._index, self._index_dirty = fresh, True
            with self.store.transaction() as conn:
                self.store.audit(conn, actor.name, "reindex", {"faces": len(fresh), "kind": fresh.kind})
        return len(fresh)

    def evaluate_lfw(self, lfw_dir: Path, output: Path, write_calibration: bool,
                     log: Callable[[str], None]) -> dict:
        """LFW View 2 verification and identification with this service's pipeline settings."""
        from facesearch.evaluation.lfw import run_lfw_evaluation

        return run_lfw_evaluation(self.settings, lfw_dir, output, write_calibration, log)

    def stats(self) -> dict[str, object]:
        index = self.index
        counts: dict[str, object] = dict(self.store.counts())
        counts["index_kind"] = index.kind
        counts["index_vectors"] = len(index)
        return counts

    def _refuse(self, actor: Actor, action: str, message: str) -> None:
        with self.store.transaction() as conn:
            self.store.audit(conn, actor.name, f"{action}.refused", {"reason": message})
        raise PolicyRefused(message)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


def build_service(settings: Settings) -> FaceSearchService:
    return FaceSearchService(settings)
