"""Ingest workers: decode, detect and describe in worker processes; the service is the one writer."""

from __future__ import annotations

import hashlib
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from facesearch.config import Settings
from facesearch.errors import BadImage
from facesearch.imaging import DecodedImage, decode, decode_for_analysis, perceptual_hashes
from facesearch.types import Face

if TYPE_CHECKING:  # importing vision loads dlib: workers do it, the writer need not
    from facesearch.vision import FaceAnalyzer

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class ImageTask:
    sha256: str
    location: str
    data: bytes


@dataclass
class Analysed:
    sha256: str
    location: str
    width: int = 0
    height: int = 0
    format: str = ""
    faces: list[Face] | None = None
    error: str | None = None  # one-line reason when the image was rejected
    embedder: str = ""  # that described its faces
    phash: str = ""  # of the pixels (imaging.perceptual_hashes), to group copies of a photo


# Why a file gave no searchable face, as the ingest job page counts and lists them.
NOT_AN_IMAGE = "not an image"
TOO_LARGE = "too large"
UNREADABLE = "unreadable"
NOT_ANALYSED = "could not be analysed"
DUPLICATE = "duplicate"  # the same bytes as an image already stored, or earlier in the run
NO_FACE = "no face"
SUPPRESSED = "suppressed person"  # every face withheld: not even the location is kept
TOO_POOR = "too poor to search"  # faces below the quality minimums only (service.quality)
SKIP_REASONS = (NOT_AN_IMAGE, TOO_LARGE, UNREADABLE, NOT_ANALYSED, DUPLICATE, NO_FACE, SUPPRESSED,
                TOO_POOR)


def skip_reason(error: str) -> str:
    """The reason in words of a file refused with error, one of the one-line messages of
    read_task, imaging.decode and analyse_batch."""
    if error.startswith(("analysis failed", "described with")):
        return NOT_ANALYSED
    if error.startswith(("not a regular file", "cannot read file")):
        return UNREADABLE
    if "-byte limit" in error or "-pixel limit" in error or "scans" in error:
        return TOO_LARGE
    return NOT_AN_IMAGE


def discover(paths: Iterable[Path]) -> Iterator[Path]:
    """Files under each path, recursively, in a stable order; hidden files are left out."""
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        else:
            yield path


def read_task(path: Path, max_bytes: int) -> ImageTask:
    """Read a file and hash it; BadImage if it is missing, unreadable, not a regular file or
    too large. At most max_bytes + 1 bytes are read, whatever the file claims: a file that
    grows while read, or a device or pipe in the folder, cannot exhaust memory or block."""
    try:
        with open(path, "rb", opener=_open_nonblocking) as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise BadImage("not a regular file")
            if info.st_size > max_bytes:
                raise BadImage(f"file is {info.st_size} bytes, over the {max_bytes}-byte limit")
            data = file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise BadImage(f"file is over the {max_bytes}-byte limit")
        location = str(path.resolve())
    except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: a symlink loop
        raise BadImage(f"cannot read file: {getattr(exc, 'strerror', None) or exc}") from None
    return ImageTask(hashlib.sha256(data).hexdigest(), location, data)


def _open_nonblocking(path: str, flags: int) -> int:
    # Opening a FIFO for reading blocks until a writer comes; O_NONBLOCK lets fstat refuse it.
    return os.open(path, flags | os.O_NONBLOCK)


_analyzer = None  # one per worker process, built on first use


def process_analyzer(settings: Settings) -> "FaceAnalyzer":
    """This process's FaceAnalyzer: models load once, again only if analysis settings change."""
    global _analyzer
    if _analyzer is None or _analysis_settings(_analyzer.settings) != _analysis_settings(settings):
        from facesearch.vision import FaceAnalyzer

        _analyzer = FaceAnalyzer(settings)
    return _analyzer


def analyse_batch(tasks: list[ImageTask], settings: Settings) -> list[Analysed]:
    """Decode every image, detect its faces and describe all of them in one batch. An image
    that cannot be decoded or analysed, for whatever reason, fails alone with a one-line
    error; the rest of the batch goes on."""
    from facesearch.vision import embedder_name

    analyzer = process_analyzer(settings)
    results, decoded = [], []
    for task in tasks:
        try:
            image = decode_for_analysis(task.data, settings)
        except BadImage as exc:
            results.append(Analysed(task.sha256, task.location, error=exc.message))
            continue
        except Exception as exc:  # noqa: BLE001 - a decoding bug is that image's, not the run's
            error = f"cannot decode: {type(exc).__name__}: {exc}".splitlines()[0]
            results.append(Analysed(task.sha256, task.location, error=error))
            continue
        results.append(Analysed(task.sha256, task.location, image.width, image.height, image.format,
                                embedder=embedder_name(settings.embedder),
                                phash=perceptual_hashes(image.pixels)[0]))
        decoded.append((results[-1], image))
    try:
        _analyse_together(analyzer, decoded, settings.mirror_gallery)
    except Exception:  # noqa: BLE001 - find the image at fault, keep the rest of the batch
        for one in decoded:
            try:
                _analyse_together(analyzer, [one], settings.mirror_gallery)
            except Exception as exc:  # noqa: BLE001 - a model error is that image's, not the run's
                one[0].error = f"analysis failed: {type(exc).__name__}: {exc}".splitlines()[0]
    return results


def _analysis_settings(settings: Settings) -> dict:
    return settings.model_dump(include={"detector", "embedder", "device", "model_dir", "upsample",
                                        "min_face_size", "detect_max_side", "embed_batch"})


def _analyse_together(analyzer: "FaceAnalyzer", decoded: list[tuple[Analysed, DecodedImage]],
                      mirror: bool) -> None:
    per_image = [(image.pixels, analyzer.detect(image.pixels)) for _, image in decoded]
    for (result, image), faces in zip(decoded, analyzer.describe(per_image, mirror)):
        result.faces = image.in_original(faces)  # boxes in the image's pixels, as stored


class WorkerPool:
    """Runs a batch function in worker processes, results in submission order, a bounded window
    of batches in flight so that memory stays flat however many files there are."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self.executor: ProcessPoolExecutor | None = None
        if workers > 1:
            # spawn, not fork: forking a process that has started BLAS threads can deadlock.
            self.executor = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))

    def map(self, work: Callable[[list[T], Settings], R], batches: Iterable[list[T]]) -> Iterator[R]:
        """work(batch, settings) for each batch, in a worker when there are several."""
        if self.executor is None:
            for batch in batches:
                yield work(batch, self.settings)
            return
        window: deque[Future] = deque()
        for batch in batches:
            window.append(self.executor.submit(work, batch, self.settings))
            if len(window) >= 3 * self.workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



def reembed_batch(chips: list[tuple[int, bytes, dict | None]], settings: Settings
                  ) -> list[tuple[int, np.ndarray | None]]:
    """(id, descriptor) of stored face chips (id, JPEG, geometry) with settings.embedder;
    None for a chip that cannot be decoded."""
    analyzer = process_analyzer(settings)
    readable = []
    for key, jpeg, geometry in chips:
        try:
            readable.append((key, decode(jpeg, max_pixels=settings.max_image_pixels,
                                         max_bytes=settings.max_image_bytes).pixels, geometry))
        except BadImage:
            continue
    vectors = analyzer.describe_chips([(p, g) for _, p, g in readable], settings.mirror_gallery)
    described = {key: v for (key, _, _), v in zip(readable, vectors)}
    return [(key, described.get(key)) for key, _, _ in chips]
