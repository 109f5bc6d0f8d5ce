"""The engine's use cases: sources, ingest, ranking, deletion, purge, suppression, reindex.

Search also filters deleted and suppressed faces after the index query, because an index can
lag behind the metadata.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from facesearch.calibration import Calibration, band, cut_off, load_calibration
from facesearch.config import Settings
from facesearch.errors import (
    BadImage,
    FacesearchError,
    InvalidRequest,
    NoFace,
    NotFound,
    PolicyRefused,
)
from facesearch.fusion import fused_distances
from facesearch.imaging import decode_for_analysis
from facesearch.index.compressed import CompressedIndex
from facesearch.index.faiss_index import FaissIndex
from facesearch.index.milvus_index import MilvusIndex
from facesearch.ingest import (
    DUPLICATE,
    NO_FACE,
    SUPPRESSED,
    TOO_POOR,
    Analysed,
    ImageTask,
    WorkerPool,
    analyse_batch,
    discover,
    read_task,
    skip_reason,
)
from facesearch.policy.rules import (
    check_jurisdiction_allowed,
    check_lawful_basis,
    normalise_jurisdiction,
    suppressed_mask,
)
from facesearch.service.base import Clock, ServiceBase, system_clock
from facesearch.service.quality import accuracy_bound, shortfalls
from facesearch.store.cases import Case
from facesearch.store.files import private_directory
from facesearch.store.metadata import NewImage, Source, box_of, from_blob
from sqlalchemy.engine import Connection
from facesearch.types import Actor, Candidate, CutOff, Face, ProbeResult

INGEST_BATCH = 8  # images per worker task: their faces are described in one batch
SKIPPED_FILES_KEPT = 1000  # skipped files named in a summary (and a job's progress); all counted
TRAIN_PER_LIST = 40  # compressed index training sample: faces a list (FAISS wants 39 or more)
AnyIndex = FaissIndex | CompressedIndex | MilvusIndex


@dataclass
class IngestSummary:
    images_total: int = 0  # files found under the paths given
    images_seen: int = 0
    images_indexed: int = 0
    faces_indexed: int = 0
    faces_withheld: int = 0  # faces of suppressed people, never stored
    # Faces below a quality minimum (service.quality), never stored: measure -> count.
    faces_low_quality: Counter = field(default_factory=Counter)
    images_without_faces: int = 0
    already_indexed: int = 0
    sightings: int = 0  # new places where images already stored were seen (store.sightings)
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    errors: list[tuple[str, str]] = field(default_factory=list)  # (location, reason)
    # Files that gave no searchable face, by reason in words (ingest.SKIP_REASONS), and the
    # first SKIPPED_FILES_KEPT of them as (location, reason): the job page lists them.
    skipped_by_reason: Counter = field(default_factory=Counter)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)

    def skip_file(self, location: str, reason: str) -> None:
        self.skipped_by_reason[reason] += 1
        if len(self.skipped_files) < SKIPPED_FILES_KEPT:
            self.skipped_files.append((location, reason))


ProgressCallback = Callable[[IngestSummary], None]


@dataclass
class DeletionReport:
    images: int
    faces: int
    # A suppression's look-alikes, beyond its strict cut-off but within the search cut-off:
    # left as they are (they may be strangers), for a person to check.
    look_alikes: int = 0
    # Places a deleted source (or a purged jurisdiction's) saw images that other sources
    # collected: those images stay, seen there no more.
    sightings: int = 0


class Engine(ServiceBase):
    def __init__(self, settings: Settings, clock: Clock = system_clock) -> None:
        super().__init__(settings, clock)
        self._index: AnyIndex | None = None
        self._index_generation = 0  # the generation of the files self._index was loaded from
        self._index_dirty = False  # changed since last saved
        self._unsaved_faces = 0  # faces added since last saved
        self._saved_at = time.monotonic()
        self._analyzer = None
        self._live_settings: Settings | None = None
        # Server requests run in threads: dlib's networks and FAISS indexes that are being
        # added to are not safe to share between them. Each lock guards one of the two.
        self._analysis_lock = threading.Lock()
        self._index_lock = threading.RLock()

    # Shared machinery --------------------------------------------------------------------

    @property
    def live_embedder(self) -> str:
        """The embedder of the gallery's descriptors, which probes and new faces must use: the
        configured one until the first descriptor is stored, and the previous one until a
        re-embedding switches (`facesearch reembed`). A name: a manifest's own."""
        from facesearch.vision import embedder_name

        return self.store.live_embedder() or embedder_name(self.settings.embedder)

    @property
    def live_settings(self) -> Settings:
        """The settings analysis runs with: these settings, with the live embedder."""
        from facesearch.vision import EMBEDDERS, embedder_name

        live = self.live_embedder
        if self._live_settings is None or embedder_name(self._live_settings.embedder) != live:
            if live == embedder_name(self.settings.embedder):
                self._live_settings = self.settings
            elif live in EMBEDDERS:
                self._live_settings = self.settings.model_copy(update={"embedder": live})
            else:
                raise FacesearchError(f"the gallery's descriptors are by the manifest model "
                                      f"{live!r}: set FACESEARCH_EMBEDDER to its manifest")
            self._analyzer = None
        return self._live_settings

    @property
    def analyzer(self):  # noqa: ANN201 - FaceAnalyzer, imported lazily: dlib is slow to load
        settings = self.live_settings
        if self._analyzer is None:
            from facesearch.vision import FaceAnalyzer

            self._analyzer = FaceAnalyzer(settings)
        return self._analyzer

    @property
    def dimension(self) -> int:
        """Of the live embedder's descriptors, and so of the vector index."""
        return self.analyzer.embedder.dimension

    @property
    def index(self) -> AnyIndex:
        """The vector index, brought up to date with the metadata store: every face added
        and every face erased since, by any process."""
        with self._index_lock:
            if self._index is not None and self._index_generation != self.store.index_generation():
                self._index = None  # another process rebuilt it (reindex, a new embedder)
            if self._index is None:
                # The generation is read before the files: a rebuild in between only costs a reload.
                self._index_generation = self.store.index_generation()
                if self.settings.vector_backend == "milvus":
                    self._index = self._milvus_index()
                elif CompressedIndex.present(self.settings.index_dir):
                    self._index = CompressedIndex.load(self.settings.index_dir, self.dimension,
                                                       **self._compressed_options())
                else:
                    self._index = FaissIndex.load(self.settings.index_dir, self.dimension,
                                                  self.settings.exact_index_max,
                                                  self.settings.hnsw_ef_search)
                self._index_dirty, self._unsaved_faces = False, 0
            self._catch_up(self._index)
            return self._index

    def _milvus_index(self) -> MilvusIndex:
        # Milvus files each face under its jurisdiction and source, read from the store.
        index = MilvusIndex(self.settings.milvus_uri, self.settings.milvus_collection,
                            self.dimension,
                            attributes=self.store.face_attributes,
                            index_type=self.settings.milvus_index,
                            ef_search=self.settings.hnsw_ef_search, token=self.settings.milvus_token)
        # One collection for every process: whoever erased a face removed it there, and
        # erasures not yet applied are still in the journal, which the next writer finishes.
        index.erasure_seq = self.store.last_erasure()
        return index

    def _compressed_options(self) -> dict:
        # Re-ranking reads the exact descriptors of the short list from the metadata store.
        return {"probes": self.settings.pq_probes or None, "rerank": self.settings.pq_rerank,
                "exact_vectors": self.store.vectors_of}

    def _catch_up(self, index: AnyIndex) -> None:
        """Add faces committed since the index was last saved (after a crash, or by another
        process), and replay the erasure log past the last entry the index applied, so that
        no copy of the index, however old, holds or saves a vector that was erased."""
        for ids, vectors in self.store.face_vectors(after_id=index.watermark):
            index.add(ids, vectors)
            index.watermark = int(ids[-1])
            self._index_dirty = True
            self._unsaved_faces += len(ids)
        erased, last = self.store.erasures_after(index.erasure_seq)
        if len(erased):
            index.remove(erased)
            self._index_dirty = True
        index.erasure_seq = last

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """One writer at a time per data directory, across threads and processes (an flock:
        each call opens the file, so threads of one process exclude each other too). Face ids
        then grow in commit order, which the index's watermark catch-up relies on."""
        private_directory(self.settings.home)
        handle = os.open(self.settings.home / ".writer.lock", os.O_CREAT | os.O_RDWR, 0o600)
        with open(handle, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def _writer(self, save: bool = False) -> Iterator[AnyIndex]:
        """The write lock, yielding the up-to-date index; on entry and on exit, finishes
        erasures. The index is saved on exit when erasures call for it, when save is asked,
        or when its unsaved additions are due (index_save_faces, index_save_seconds)."""
        with self._write_lock():
            self._finish_erasures()
            yield self.index
            self._finish_erasures(save)

    def _finish_erasures(self, save: bool = False) -> None:
        """Under the write lock: remove journalled erasures' vectors from the saved index and
        their crops from disk, then clear the journal. Additions alone are saved only when
        due: after a crash they are caught up from the metadata store, while an erased
        vector must leave the disk before the journal lets go of it."""
        with self._index_lock:
            index = self.index  # reloaded if another process rebuilt it
            pending = self.store.pending_erasures()
            if pending:
                # Also in the erasure log; removed here for a shared index (Milvus) that other
                # processes do not replay the log into.
                index.remove(np.array([face_id for face_id, _ in pending], dtype=np.int64))
                self._index_dirty = True
            due = (self._unsaved_faces >= self.settings.index_save_faces
                   or time.monotonic() - self._saved_at >= self.settings.index_save_seconds)
            if self._index_dirty and (pending or save or due):
                index.save(self.settings.index_dir)
                self._index_dirty, self._unsaved_faces = False, 0
                self._saved_at = time.monotonic()
        self.crops.remove([crop for _, crop in pending])
        if pending:
            self.store.clear_erasures([face_id for face_id, _ in pending])
            self.store.flush_deleted()

    def _probe_faces(self, photo: bytes, which: str | int = "all") -> tuple[str, list[Face]]:
        """The probe's sha256 and its chosen faces: "all", the "largest", or one by its number
        (faces are numbered largest first, as `detect_faces` lists them)."""
        if which not in ("all", "largest") and not isinstance(which, int):
            raise InvalidRequest("face must be 'all', 'largest' or a face number")
        image = decode_for_analysis(photo, self.settings)
        faces = image.in_original(self.analyzer.analyse([image.pixels], self.settings.mirror_probe)[0])
        if not faces:
            raise NoFace("no face found in the photo")
        if isinstance(which, int):
            if not 0 <= which < len(faces):
                raise InvalidRequest(f"the photo has {len(faces)} faces; face {which} does not exist")
            return hashlib.sha256(photo).hexdigest(), [faces[which]]
        return hashlib.sha256(photo).hexdigest(), faces[:1] if which == "largest" else faces

    def _fused_probe(self, photos: list[bytes], which: str | int) -> tuple[list[str], list[Face]]:
        """Several photos of one person as one probe: each photo's sha256 and its face, which
        _rank(fused=True) ranks by fusion.RULE.

        Each photo gives one face. With which "all" (the default) a photo showing several
        is refused: which of them is the person only the investigator knows, and a bystander
        fused in would pull every distance towards a stranger without a sign in the result.
        With "largest" each photo's largest face is taken, as a one-photo search's "largest"
        does. A photo without a face, unreadable or given twice is refused by its number."""
        if which not in ("all", "largest"):
            raise InvalidRequest("a search of several photos takes each photo's only face ('all') "
                                 "or its 'largest', not a face number")
        hashes, faces = [], []
        for number, photo in enumerate(photos, start=1):
            sha = hashlib.sha256(photo).hexdigest()
            named = f"photo {number} of {len(photos)} (sha256 {sha[:12]})"
            if sha in hashes:  # it would count twice in the mean
                raise InvalidRequest(f"{named} is photo {hashes.index(sha) + 1} again")
            try:
                _, found = self._probe_faces(photo, which)
            except (NoFace, BadImage, InvalidRequest) as exc:  # say which photo
                raise type(exc)(f"{named}: {exc.message}") from None
            if len(found) > 1:
                raise InvalidRequest(f"{named} shows {len(found)} faces: crop it to the person, "
                                     "or search each photo's largest face (face 'largest')")
            hashes.append(sha)
            faces.append(found[0])
        return hashes, faces

    # Sources -----------------------------------------------------------------------------

    def add_source(self, actor: Actor, name: str, lawful_basis: str, jurisdiction: str,
                   description: str = "", retention_days: int | None = None,
                   display_name: str = "") -> Source:
        """Register a source; its images are destroyed retention_days after collection
        (default FACESEARCH_SOURCE_RETENTION_DAYS). display_name is what reviewers and the
        public are shown (at most 200 characters; the name where empty)."""
        self.authorise(actor, "sources.manage", "source.add")
        name = name.strip()
        if not name:
            raise InvalidRequest("a source needs a name")
        basis = check_lawful_basis(lawful_basis)
        code = normalise_jurisdiction(jurisdiction)
        if self.store.source(name) is not None:
            raise InvalidRequest(f"source {name!r} is already registered")
        days = self.settings.source_retention_days if retention_days is None else retention_days
        if not 1 <= days <= 100 * 365:
            raise InvalidRequest("retention must be between 1 day and 100 years")
        display_name = " ".join(display_name.split())
        if len(display_name) > 200:
            raise InvalidRequest("a display name has at most 200 characters")
        source = self.store.add_source(name, basis, code, description, days, display_name)
        with self.store.transaction() as conn:
            self._audit(conn, actor, "source.add",
                             {"source": name, "lawful_basis": basis, "jurisdiction": code,
                              "retention_days": days, "display_name": display_name})
        return source

    def sources(self, actor: Actor) -> list[Source]:
        self.authorise(actor, "sources.read", "source.list")
        return self.store.sources()

    # Ingest ------------------------------------------------------------------------------

    def ingest(self, actor: Actor, paths: list[Path], source_name: str,
               progress: ProgressCallback | None = None,
               location_of: Callable[[Path], str] | None = None,
               queue_job: dict[str, object] | None = None,
               provenance_of: Callable[[str], dict] | None = None) -> IngestSummary:
        """Index every face of every image under paths, as coming from a registered source.

        Images already indexed (same sha256) are skipped, so an interrupted run can simply
        be started again. Faces of suppressed people are never stored, nor faces below the
        quality minimums (counted by reason, see _searchable). location_of names where a
        file came from when its path is only a staging copy (an upload); provenance_of gives
        a new image's provenance record by its location (an upload's original file name).

        Faces are found outside the write lock and each batch is written under it, so that
        ingests in other processes (queue workers) analyse at the same time. queue_job
        ({"queue_job": id, "worker": name}, for the audit record) marks one job of a queued
        ingest run by a queue worker: it analyses in its own process, since workers are the
        unit of parallelism there, and leaves the vector index to the processes that search,
        which catch up from the metadata store (a worker holding and saving the whole index
        after every job would cost memory and time for nothing).
        """
        self.authorise(actor, "ingest", "ingest")
        source = self._collecting_source(actor, source_name, "ingest")
        summary = IngestSummary(images_total=sum(1 for _ in discover(paths)))
        workers = 1 if queue_job else self.settings.workers or _cores()
        with WorkerPool(self.live_settings, workers) as pool:
            try:
                copies: list[tuple[str, str]] = []  # (sha256, location) of stored bytes seen again
                tasks = self._new_tasks(paths, summary, progress, location_of, copies)
                for results in pool.map(analyse_batch, tasks):
                    self._write_batch(actor, source.name, results, summary,
                                      update_index=queue_job is None, copies=copies,
                                      provenance_of=provenance_of)
                    if progress:
                        progress(summary)
                if copies:  # seen after the last batch, or in a run with nothing new
                    self._write_batch(actor, source.name, [], summary,
                                      update_index=queue_job is None, copies=copies)
            except BrokenProcessPool:
                raise FacesearchError(
                    "a worker process died (out of memory?); what was committed is kept: "
                    "run the same ingest again to finish") from None
        if queue_job is None:
            with self._writer(save=True) as index:  # finishes erasures and saves the index
                if isinstance(index, FaissIndex) and len(index) > self.settings.compressed_index_min:
                    self._build_index()  # the gallery has outgrown HNSW's memory
        with self.store.transaction() as conn:
            self._audit(conn, actor, "ingest", {
                "source": source.name, "images_indexed": summary.images_indexed,
                "faces_indexed": summary.faces_indexed,
                "faces_withheld": summary.faces_withheld,
                "faces_low_quality": dict(summary.faces_low_quality),
                "sightings": summary.sightings,
                "skipped": dict(summary.skipped),
                "skipped_by_reason": dict(summary.skipped_by_reason), **(queue_job or {})})
        return summary

    def _write_batch(self, actor: Actor, source_name: str, results: list[Analysed],
                     summary: IngestSummary, update_index: bool,
                     copies: list[tuple[str, str]],
                     provenance_of: Callable[[str], dict] | None = None) -> None:
        """Write one analysed batch under the write lock, in one transaction with its audit
        record (`ingest.batch`), so that a killed ingest leaves no face unaudited. Policy is
        checked again there: the source may have been deleted or barred, or a person
        suppressed, while the batch was analysed, and another process may have indexed one
        of its images meanwhile. copies: (sha256, location) of files whose bytes were stored
        before or come earlier in the run; each is recorded as a sighting of the stored image
        once its bytes have been written (or found unstorable: withheld, unreadable), and
        taken off the list."""
        with self._write_lock():
            source = self._collecting_source(actor, source_name, "ingest")
            templates = self.store.suppression_templates()
            known = self.store.known_hashes([r.sha256 for r in results])
            copies += [(r.sha256, r.location) for r in results if r.sha256 in known]
            settled = self.store.known_hashes([sha for sha, _ in copies]) | {r.sha256 for r in results}
            seen_again = [(sha, location) for sha, location in copies if sha in settled]
            copies[:] = [(sha, location) for sha, location in copies if sha not in settled]
            # Caught up under the lock: no face can be committed between it and ours.
            index = self.index if update_index else None
            before = (summary.images_indexed, summary.faces_indexed, summary.faces_withheld,
                      summary.faces_low_quality.copy())
            added: list[tuple[int, np.ndarray]] = []
            with self.store.transaction() as conn:
                live = self.store.claim_embedder(conn, self.live_embedder)
                within = self.cut_off("suppress").distance if len(templates) else 0.0
                for result in results:
                    if result.sha256 in known:
                        summary.images_seen += 1
                        summary.already_indexed += 1
                        summary.skip_file(result.location, DUPLICATE)
                    else:
                        provenance = provenance_of(result.location) if provenance_of else {}
                        added += self._write_one(conn, result, source, templates, summary,
                                                 provenance=json.dumps(provenance),
                                                 embedder=live, withhold_within=within)
                sightings = sum(self.store.add_sighting(conn, sha, location, None, source.id,
                                                        self.now())
                                for sha, location in seen_again)
                summary.sightings += sightings
                self._batch_committing(conn, actor, added)
                self._audit(conn, actor, "ingest.batch", {
                    "source": source.name,
                    "images_indexed": summary.images_indexed - before[0],
                    "faces_indexed": summary.faces_indexed - before[1],
                    "faces_withheld": summary.faces_withheld - before[2],
                    "faces_low_quality": dict(summary.faces_low_quality - before[3]),
                    "sightings": sightings,
                    "face_ids": [face_id for face_id, _ in added]})
            if index is not None:  # None: the index catches up from the store later
                self._index_added(index, added)

    def _batch_committing(self, conn: Connection, actor: Actor,
                          added: list[tuple[int, np.ndarray]]) -> None:
        """Runs in the transaction of every batch of new faces (ingest, queue workers, crawl,
        WARC), under the writer lock, before it commits: added is each new face's (id,
        descriptor). The use cases that follow the gallery as it grows (identities, case
        watches) extend it and call super(), so that nothing is committed without them."""

    def _case_closing(self, conn: Connection, actor: Actor, case: Case) -> None:
        """Runs in the transaction that closes a case: what lives in a case and follows the
        gallery (case watches) ends with it. Mixins extend it and call super()."""

    def _suppression_dropped(self, conn: Connection, actor: Actor, reason: str) -> None:
        """Runs in the transaction that drops the suppressions of this reason (an opt-out
        reinstated): what they stopped (case watches) may resume. Mixins extend it and call
        super()."""

    def _collecting_source(self, actor: Actor, name: str, action: str) -> Source:
        """The registered source images are collected for, if policy lets it collect now:
        a lawful basis, and a jurisdiction not excluded. Refusals are audited."""
        source = self.store.source(name)
        if source is None:
            self._refuse(actor, action, f"source {name!r} is not registered; "
                         "register it first with `facesearch source add`")
        try:
            check_lawful_basis(source.lawful_basis)
            check_jurisdiction_allowed(source.jurisdiction, self.settings.excluded_jurisdictions)
        except PolicyRefused as exc:
            self._refuse(actor, action, exc.message)
        return source

    def _new_tasks(self, paths: list[Path], summary: IngestSummary,
                   progress: ProgressCallback | None,
                   location_of: Callable[[Path], str] | None,
                   copies: list[tuple[str, str]]) -> Iterator[list[ImageTask]]:
        """Batches of images not yet indexed; duplicates and unreadable files are counted here,
        and duplicates' (sha256, location) added to copies, to be recorded as sightings."""
        seen: set[str] = set()
        pending: list[ImageTask] = []
        for path in discover(paths):
            try:
                task = read_task(path, self.settings.max_image_bytes)
            except BadImage as exc:
                summary.images_seen += 1
                self._skip(summary, location_of(path) if location_of else str(path), exc.message)
                continue
            if location_of:
                task.location = location_of(path)
            if task.sha256 in seen:
                summary.images_seen += 1
                summary.already_indexed += 1
                summary.skip_file(task.location, DUPLICATE)
                copies.append((task.sha256, task.location))
                continue
            seen.add(task.sha256)
            pending.append(task)
            if len(pending) >= 4 * INGEST_BATCH:
                yield from self._batches(pending, summary, progress, copies)
                pending = []
        yield from self._batches(pending, summary, progress, copies)

    def _batches(self, tasks: list[ImageTask], summary: IngestSummary,
                 progress: ProgressCallback | None,
                 copies: list[tuple[str, str]]) -> Iterator[list[ImageTask]]:
        known = self.store.known_hashes([t.sha256 for t in tasks])
        fresh = [t for t in tasks if t.sha256 not in known]
        copies += [(t.sha256, t.location) for t in tasks if t.sha256 in known]
        for task in tasks:
            if task.sha256 in known:
                summary.skip_file(task.location, DUPLICATE)
        summary.already_indexed += len(tasks) - len(fresh)
        summary.images_seen += len(tasks) - len(fresh)
        if progress and known:
            progress(summary)
        for start in range(0, len(fresh), INGEST_BATCH):
            yield fresh[start:start + INGEST_BATCH]

    def _write_one(self, conn: Connection, result: Analysed, source: Source,
                   templates: np.ndarray, summary: IngestSummary, page_url: str | None = None,
                   provenance: str = "{}", *, embedder: str,
                   withhold_within: float) -> list[tuple[int, np.ndarray]]:
        """Record one analysed image in conn's transaction, its crops written (durably)
        first: a crash before the commit leaves only files that the re-run overwrites under
        the same names, never a row without its crop. Returns the (face id, descriptor) of
        each face stored, for the index once the transaction has committed. embedder: the
        live one, which the image must have been described with; withhold_within: the
        strict cut-off to the suppression templates (once per batch: it counts the gallery)."""
        summary.images_seen += 1
        if result.error is None and result.faces and result.embedder != embedder:
            result.error = (f"described with {result.embedder}, but the gallery switched to "
                            f"{embedder} meanwhile: run the same ingest again")
        if result.error is not None:
            self._skip(summary, result.location, result.error)
            return []
        faces = result.faces or []
        if faces and len(templates):
            withheld = suppressed_mask(np.stack([f.embedding for f in faces]), templates,
                                       withhold_within)
        else:
            withheld = np.zeros(len(faces), bool)
        kept = [f for f, w in zip(faces, withheld) if not w]
        summary.faces_withheld += int(withheld.sum())
        kept = self._searchable(kept, summary)
        if withheld.any() and not kept:
            # A suppressed person and nobody else searchable: not even the image's location
            # is kept (an image whose faces are only too poor to search is recorded).
            summary.skip_file(result.location, SUPPRESSED)
            return []
        if not kept:
            summary.skip_file(result.location, TOO_POOR if faces else NO_FACE)
        crop_paths = [self.crops.relative_path(result.sha256, i) for i in range(len(kept))]
        for face, crop in zip(kept, crop_paths):
            self.crops.write(crop, face.chip_jpeg)
        face_ids = self.store.add_image(
            conn, NewImage(sha256=result.sha256, location=result.location, page_url=page_url,
                           source_id=source.id, jurisdiction=source.jurisdiction,
                           collected_at=self.now(), width=result.width, height=result.height,
                           format=result.format, provenance=provenance,
                           phash=result.phash or None),
            kept, crop_paths, withheld=int(withheld.sum()), embedder=embedder)
        summary.images_indexed += 1
        summary.faces_indexed += len(kept)
        summary.images_without_faces += not faces
        return [(i, f.embedding) for i, f in zip(face_ids, kept)]

    def _searchable(self, faces: list[Face], summary: IngestSummary) -> list[Face]:
        """The faces that meet every quality minimum (service.quality); the others are counted
        by their first shortfall. The image is still recorded when none is left: it was
        collected lawfully, and its location and hash keep a later ingest from analysing it
        again; only its poor faces are kept out of search."""
        kept = []
        for face in faces:
            short = shortfalls(face.quality, self.settings)
            if short:
                summary.faces_low_quality[short[0].measure] += 1
            else:
                kept.append(face)
        return kept

    def _index_added(self, index: AnyIndex, added: list[tuple[int, np.ndarray]]) -> None:
        """Add just-committed faces to an index caught up under the same write lock."""
        with self._index_lock:
            # A search in another thread may have caught these up from the database already.
            fresh = [(i, v) for i, v in added if i > index.watermark]
            if fresh:
                index.add(np.array([i for i, _ in fresh], dtype=np.int64),
                          np.stack([v for _, v in fresh]))
                index.watermark = max(i for i, _ in fresh)
                self._index_dirty = True
                self._unsaved_faces += len(fresh)

    @staticmethod
    def _skip(summary: IngestSummary, location: str, reason: str) -> None:
        summary.skipped[reason.split(":")[0]] += 1
        summary.errors.append((location, reason))
        summary.skip_file(location, skip_reason(reason))

    # Ranking ------------------------------------------------------------------------------

    def _calibration_of_live(self) -> Calibration:
        """The calibration of the embedder searches answer on: the gallery's live one."""
        return load_calibration(self.analyzer.embedder.name)  # a manifest's own name

    def cut_off(self, use: Literal["search", "suppress", "watch"], faces: int | None = None) -> CutOff:
        """The distance cut-off of a use, from the live embedder's calibration and the faces
        one face is compared with (default: the gallery's face count), capped at
        false_match_ceiling. "search": the candidates of one probe face, to
        search_false_matches expected strangers. "suppress": the strict cut-off of a
        suppression or opt-out template, to suppress_false_matches; it erases, withholds at
        ingest and hides from search, and over its life a template meets every face of the
        gallery, so the gallery's face count is the count for all three. "watch": the cut-off
        of a case watch, to watch_false_matches over a gallery's worth of new faces (a watch
        meets every face collected while it runs)."""
        s = self.settings
        target = {"search": s.search_false_matches, "suppress": s.suppress_false_matches,
                  "watch": s.watch_false_matches}[use]
        if faces is None:  # the index's size where this process holds it (caught up)
            faces = len(self.index) if self._index is not None else self.store.face_total()
        distance, probability = cut_off(self._calibration_of_live(), target, faces,
                                        s.false_match_ceiling)
        return CutOff(distance, probability, target, faces)

    def _rank(self, probe_faces: list[Face], k: int, jurisdictions: frozenset[str] = frozenset(),
              fused: bool = False) -> list[ProbeResult]:
        """Ranked live, unsuppressed candidates within the search cut-off for each probe face;
        only faces from the given jurisdictions, if any are given. Faces searched is the
        whole gallery's count, also for an organisation restricted to some jurisdictions:
        a stricter cut-off than its share alone would give, never a looser one.

        fused: probe_faces are one face from each of several photos of one person, ranked as
        one probe face (number 0; the first photo's box and quality stand for it) by their
        mean distance (fusion.RULE), scored and cut off with the single photo's calibration:
        on LFW fewer strangers come within the cut-off at a mean distance than at one
        photo's (README, multi-photo searches), so the scores overstate strangers if anything."""
        index = self.index
        templates = self.store.suppression_templates()
        calibration = self._calibration_of_live()
        limit = self.cut_off("search")
        hidden_within = self.cut_off("suppress", limit.faces).distance
        results = []
        for number, photos in enumerate([probe_faces] if fused else [[f] for f in probe_faces]):
            probe = photos[0]
            if fused:
                live, rows = self._fused_hits(index, np.stack([f.embedding for f in photos]), k,
                                              jurisdictions, templates, limit.distance, hidden_within)
            else:
                live, rows = self._live_hits(index, probe.embedding, k, jurisdictions, templates,
                                             limit.distance, hidden_within)
            candidates = []
            for rank, (distance, face_id) in enumerate(live, start=1):
                row = rows[face_id]
                probability = calibration.false_match_probability(distance)
                expected = float(f"{probability * limit.faces:.3g}")
                candidates.append(Candidate(
                    rank=rank, face_id=face_id, distance=round(distance, 4),
                    false_match_probability=probability,
                    image_id=row["image_id"], image_sha256=row["sha256"],
                    location=row["location"], page_url=row["page_url"], source=row["source"],
                    jurisdiction=row["jurisdiction"], collected_at=row["collected_at"],
                    crop_path=str(self.crops.path(row["crop_path"])), box=box_of(row),
                    expected_false_matches=expected, band=band(expected)))
            results.append(ProbeResult(
                probe_face=number, box=probe.box, quality=probe.quality, cut_off=limit,
                candidates=candidates,
                # Every photo of a fused probe is warned about by its number.
                quality_warnings=[f"photo {n}: {s.words()}" if fused else s.words()
                                  for n, face in enumerate(photos, start=1)
                                  for s in shortfalls(face.quality, self.settings)],
                quality_bound=accuracy_bound(probe.quality, self.live_embedder)))
        return results

    def _fused_hits(self, index: AnyIndex, queries: np.ndarray, k: int,
                    jurisdictions: frozenset[str], templates: np.ndarray, limit: float,
                    hidden_within: float) -> tuple[list[tuple[float, int]], dict[int, dict]]:
        """_live_hits for several photos of one person (queries: photos x dimension): up to k
        (fused distance, face id) under limit, nearest first. A face whose mean distance is
        under the limit is under it for at least one photo, so candidates are drawn from each
        photo's own live hits (4k each; a face far down every photo's list yet near on average
        can be missed) and their exact fused distances computed from the stored descriptors."""
        found: dict[int, dict] = {}
        for query in queries:
            live, rows = self._live_hits(index, query, 4 * k, jurisdictions, templates, limit,
                                         hidden_within)
            found.update((face_id, rows[face_id]) for _, face_id in live)
        if not found:
            return [], found
        ids = list(found)
        fused = fused_distances(queries, np.stack([from_blob(found[i]["embedding"]) for i in ids]))
        return sorted((float(d), i) for d, i in zip(fused, ids) if d < limit)[:k], found

    def _live_hits(self, index: AnyIndex, query: np.ndarray, k: int,
                   jurisdictions: frozenset[str], templates: np.ndarray, limit: float,
                   hidden_within: float) -> tuple[list[tuple[float, int]], dict[int, dict]]:
        """Up to k (distance, face id) under the distance limit, nearest first, that are
        live, not within hidden_within of a suppression template and (if given) from the
        jurisdictions, with their rows. The index is asked again for four times as many
        while filtering left fewer than k and it still had neighbours under the limit, up to
        max_fetch: a fixed over-fetch of a few hundred would silently miss matches for an
        organisation restricted to a small share of the gallery."""
        fetch, most = k + 32, max(k + 32, self.settings.max_fetch)
        while True:
            with self._index_lock:
                distances, ids = index.search(query, fetch, jurisdictions=jurisdictions)
            hits = [(float(d), int(i)) for d, i in zip(distances[0], ids[0])
                    if i >= 0 and d < limit]
            rows = self.store.candidate_rows([i for _, i in hits])
            live = [(d, i) for d, i in hits if i in rows
                    and (not jurisdictions or rows[i]["jurisdiction"] in jurisdictions)]
            if live and len(templates):
                vectors = np.stack([from_blob(rows[i]["embedding"]) for _, i in live])
                hidden = suppressed_mask(vectors, templates, hidden_within)
                live = [hit for hit, h in zip(live, hidden) if not h]
            if len(live) >= k or len(hits) < fetch or fetch >= min(len(index), most):
                return live[:k], rows
            fetch = min(4 * fetch, len(index), most)

    # Deletion, purge, suppression ------------------------------------------------------

    def delete(self, actor: Actor, *, image: str | None = None, face_id: int | None = None,
               source: str | None = None) -> DeletionReport:
        """Delete one image (by sha256, or a path or URL it was seen at), one face, or
        everything from a source (with the places it saw other sources' images).

        Vectors, crops and metadata all go; a later search cannot return them."""
        self.authorise(actor, "delete", "delete")
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
                    report.sightings = self.store.delete_sightings_by(conn, source=source)
                    self.store.delete_source(conn, source)
                else:
                    assert image is not None
                    by_hash = len(image) == 64 and all(c in "0123456789abcdef" for c in image)
                    location = image if "://" in image else str(Path(image).resolve())
                    report = DeletionReport(*self.store.delete_images_where(
                        conn, **({"image_sha256": image} if by_hash else {"image_location": location})))
                if source is None and report.faces == 0 and report.images == 0:
                    raise NotFound("nothing matched: no such image or face")
                self._audit(conn, actor, "delete", {
                    "image": image, "face_id": face_id, "source": source,
                    "images": report.images, "faces": report.faces, "sightings": report.sightings})
        return report

    def purge_jurisdiction(self, actor: Actor, jurisdiction: str) -> DeletionReport:
        """Delete every image, face, vector and crop collected under a jurisdiction, and every
        place its sources saw another jurisdiction's image."""
        self.authorise(actor, "delete", "purge")
        code = normalise_jurisdiction(jurisdiction)
        with self._writer():
            with self.store.transaction() as conn:
                report = DeletionReport(*self.store.delete_images_where(conn, jurisdiction=code))
                report.sightings = self.store.delete_sightings_by(conn, jurisdiction=code)
                self._audit(conn, actor, "purge", {
                    "jurisdiction": code, "images": report.images, "faces": report.faces,
                    "sightings": report.sightings})
        return report

    def suppress(self, actor: Actor, photo: bytes, reason: str) -> DeletionReport:
        """Record the person in photo (its largest face) as never to be indexed or returned,
        and delete every indexed face of theirs now. Only their descriptor is kept."""
        self.authorise(actor, "suppress", "suppress")
        if not reason.strip():
            raise InvalidRequest("a suppression needs a reason")
        face = self._template_of(photo)
        template = face.embedding
        with self._writer():
            self._check_embedder(face, self.live_embedder)
            within, near, strict, _ = self._faces_near(template)
            ids = [face_id for face_id, _ in within]
            with self.store.transaction() as conn:
                images = self.store.images_of_faces(conn, ids)
                self._add_suppression(conn, actor, face, reason)
                removed = self.store.delete_faces(ids, conn)
                self._audit(conn, actor, "suppress", {"faces": removed, "images": images,
                                                      "reason": reason,
                                                      "cut_off": asdict(strict),
                                                      "look_alikes": len(near)})
        return DeletionReport(images, removed, len(near))

    def _template_of(self, photo: bytes) -> Face:
        """A person's photo's largest face, described."""
        return self._largest_face(photo)[0]

    def _largest_face(self, photo: bytes, alone_ratio: float | None = None) -> tuple[Face, np.ndarray]:
        """The photo's largest face, the only one used (every face is detected to find the
        largest, only that one is aligned and described), and the photo's pixels. With
        alone_ratio, a second face at least that share of the largest's width refuses the
        photo before any describing: two people, and no telling which one is meant."""
        image = decode_for_analysis(photo, self.settings)
        with self._analysis_lock:
            found = self.analyzer.detect(image.pixels)
            if not found:
                raise NoFace("no face found in the photo")
            if (alone_ratio is not None and len(found) > 1
                    and found[1].box.width >= alone_ratio * found[0].box.width):
                raise InvalidRequest("the photo shows more than one person: send a photo of "
                                     "yourself alone")
            face = self.analyzer.describe([(image.pixels, found[:1])], self.settings.mirror_probe)[0][0]
        return face, image.pixels

    def _add_suppression(self, conn: Connection, actor: Actor, face: Face, reason: str) -> None:
        """Suppress the person of face (described with the live embedder), in conn's
        transaction, for actor (case watches of the person stop in it). Its face chip is kept
        with the descriptor: a re-embedding describes it again, so that the block outlives a
        change of model."""
        self._check_embedder(face, self.store.claim_embedder(conn, self.live_embedder))
        self.store.add_suppressions(conn, [face], reason, face.embedder)

    @staticmethod
    def _check_embedder(face: Face, live: str) -> None:
        """A template must be by the live embedder: a re-embedding may have switched while
        the photo was described (the switch holds the writer lock; check under it)."""
        if face.embedder != live:
            raise FacesearchError("the gallery changed its face model meanwhile: try again")

    def _faces_of(self, template: np.ndarray) -> list[int]:
        """Ids of every stored face within the strict ("suppress") cut-off of the template."""
        return [face_id for face_id, _ in self._faces_near(template)[0]]

    def _faces_near(self, template: np.ndarray) -> tuple[list[tuple[int, float]],
                                                         list[tuple[int, float]], CutOff, CutOff]:
        """The faces near a person's template, as (id, distance) nearest first: those within
        the strict cut-off, those beyond it but within the search cut-off (theirs or
        strangers', for a person to tell), and the two cut-offs. An exact scan of every
        stored descriptor, not the approximate index: an erasure or an access report must
        not miss a face that the index's recall would."""
        strict = self.cut_off("suppress")
        review = self.cut_off("search", strict.faces)
        hits: list[tuple[int, float]] = []
        for chunk_ids, vectors in self.store.face_vectors():
            distances = np.linalg.norm(vectors - template[None, :], axis=1)
            near = distances < review.distance
            hits += [(int(i), float(d)) for i, d in zip(chunk_ids[near], distances[near])]
        hits.sort(key=lambda hit: hit[1])
        return ([h for h in hits if h[1] < strict.distance],
                [h for h in hits if h[1] >= strict.distance], strict, review)

    # Maintenance -------------------------------------------------------------------------

    def reindex(self, actor: Actor) -> int:
        """Rebuild the vector index from the stored descriptors; returns faces indexed."""
        self.authorise(actor, "reindex", "reindex")
        with self._writer():
            fresh = self._build_index()
            with self.store.transaction() as conn:
                self._audit(conn, actor, "reindex", {"faces": len(fresh), "kind": fresh.kind})
        return len(fresh)

    def _build_index(self) -> AnyIndex:
        """A new index of every stored descriptor, of the kind the gallery's size calls for:
        flat or HNSW (FaissIndex), or past compressed_index_min the compressed IVF-PQ index,
        trained on a sample of the gallery. Replaces the index in use and saves it. With the
        Milvus backend, drops the collection and fills it again (with milvus_index)."""
        faces = self.store.counts()["faces"]
        if self.settings.vector_backend == "milvus":
            # A new embedder may have another dimension: the collection is made anew for it.
            fresh: AnyIndex = (self._index if isinstance(self._index, MilvusIndex)
                               and self._index.dimension == self.dimension
                               else self._milvus_index())
            fresh.clear(self.settings.milvus_index)
        elif faces > self.settings.compressed_index_min:
            fresh = CompressedIndex(
                self.dimension, lists=self.settings.pq_lists or CompressedIndex.lists_for(faces),
                code_bytes=self.settings.pq_code_bytes, **self._compressed_options())
            fresh.train(self._training_sample(TRAIN_PER_LIST * fresh.lists, faces))
        else:
            fresh = FaissIndex(self.dimension, self.settings.exact_index_max, self.settings.hnsw_ef_search)
        fresh.erasure_seq = self.store.last_erasure()  # erasures wait for the write lock we hold
        for ids, vectors in self.store.face_vectors():
            fresh.add(ids, vectors)
            fresh.watermark = int(ids[-1])
        with self._index_lock:
            self._index, self._index_dirty, self._unsaved_faces = fresh, False, 0
            # Other processes holding the old index reload it rather than save over these files.
            self._index_generation = self.store.next_index_generation()
            fresh.save(self.settings.index_dir)
            self._saved_at = time.monotonic()
            if isinstance(fresh, FaissIndex):  # one kind on disk, so that a restart loads it
                shutil.rmtree(self.settings.index_dir / "compressed", ignore_errors=True)
            else:
                (self.settings.index_dir / "vectors.faiss").unlink(missing_ok=True)
        return fresh

    def _training_sample(self, size: int, faces: int) -> np.ndarray:
        """Up to size stored descriptors spread over the whole gallery (every n-th chunk row)."""
        step = max(1, faces // size)
        return np.concatenate([vectors[::step] for _, vectors in self.store.face_vectors()])[:size]

    def evaluate_lfw(self, lfw_dir: Path, output: Path, write_calibration: bool,
                     log: Callable[[str], None]) -> dict:
        """LFW View 2 verification and identification with this service's pipeline settings."""
        from facesearch.evaluation.lfw import run_lfw_evaluation

        return run_lfw_evaluation(self.settings, lfw_dir, output, write_calibration, log)

    def evaluate_identify(self, folder: Path, log: Callable[[str], None],
                          distractors: Path | None = None, limit_people: int | None = None) -> dict:
        """Identification on PERSON/photo folders with this service's pipeline (see
        evaluation.identify for the split); touches no gallery of this service."""
        from facesearch.evaluation.identify import run_identify

        return run_identify(self.settings, folder, log, distractors, limit_people)

    def evaluate_quality(self, folder: Path, log: Callable[[str], None],
                         limit_people: int | None, copies_every: int, write: bool) -> dict:
        """Rank-1/rank-10 by probe quality band with this service's pipeline (see
        evaluation.quality); write ships the figures searches quote for the live embedder."""
        from facesearch.evaluation.quality import run_quality, write_figures

        report = run_quality(self.live_settings, folder, log, limit_people, copies_every)
        if write:
            report["written"] = str(write_figures(report, self.live_embedder))
        return report

    def evaluate_demographics(self, fairface_dir: Path, lfw_dir: Path, output: Path,
                              log: Callable[[str], None], false_match_probability: float = 1e-3,
                              limit: int | None = None) -> dict:
        """Error rates by demographic group with this service's pipeline; the report is noted
        in the data directory, where the record of processing cites it for this embedder."""
        from facesearch.evaluation.demographics import run_demographics
        from facesearch.evaluation.reports import note_report

        report = run_demographics(self.settings, fairface_dir, lfw_dir, output, log,
                                  false_match_probability, limit)
        note_report(self.settings.home, "demographics", report["embedder"], {
            "report": str(Path(report["written"][0]).resolve()), "date": report["date"],
            "embedder": report["embedder"], "detector": report["detector"],
            "photos": report["fairface"]["photos"] + sum(
                g["photos"] for g in report["lfw_gender"]["groups"].values()),
            "subset": limit is not None, "headline": _headline(report["headline"])})
        return report

    def face_count(self) -> int:
        """Faces in the metadata store: a number, no personal data (for /metrics)."""
        return self.store.counts()["faces"]

    def stats(self, actor: Actor) -> dict[str, object]:
        """Counts of sources, images, faces and suppressions, and the index's kind and size."""
        self.authorise(actor, "stats", "stats")
        index = self.index
        counts: dict[str, object] = dict(self.store.counts())
        counts["embedder"] = self.live_embedder
        counts["index_kind"] = index.kind
        counts["index_vectors"] = len(index)
        counts["faces_by_jurisdiction"] = self.store.faces_by_jurisdiction()
        return counts


def _headline(headline: dict) -> str:
    if headline["ratio"] is None:
        return f"{headline['measure']}: too few pairs to compare groups"
    return f"{headline['measure']}: {headline['ratio']} ({headline['worst']} / {headline['best']})"


def _cores() -> int:
    return len(os.sched_getaffinity(0))
