"""Models: what is installed, which embedder the gallery lives on, and re-embedding a gallery
when the configured embedder changes.

Re-embedding describes every stored face chip again with the configured embedder, in batches
that commit as they go (a killed run resumes where it stopped), while search keeps answering
with the live embedder. Once every face and suppression has a new descriptor, the switch
swaps them in, under the writer lock and in one transaction, and rebuilds the index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from facesearch.errors import FacesearchError
from facesearch.ingest import WorkerPool, reembed_batch
from facesearch.service.engine import Engine, _cores
from facesearch.types import Actor

REEMBED_BATCH = 32  # face chips per worker task


@dataclass
class ReembedProgress:
    embedder: str  # the one being moved to
    live: str  # the one search answers with meanwhile
    faces: int  # in the gallery
    done: int  # with a descriptor by embedder
    failed: int = 0  # face chips that could not be read: the switch waits until there are none
    switched: bool = False


ReembedCallback = Callable[[ReembedProgress], None]


class Models(Engine):
    def model_status(self, actor: Actor) -> dict[str, object]:
        """The registered model files, the live and configured embedders, and how far a
        re-embedding to the configured one has come."""
        from facesearch.vision.registry import MODELS

        self.authorise(actor, "reindex", "models.status")
        from facesearch.vision import embedder_name

        live, target = self.live_embedder, embedder_name(self.settings.embedder)
        return {
            "detector": self.settings.detector, "embedder_live": live, "embedder_configured": target,
            "faces": self.store.counts()["faces"],
            "reembedded": self.store.reembedded(target) if target != live else None,
            "models": [{**m.__dict__} for m in MODELS.values()],
        }

    def install_models(self, log: Callable[[str], None]) -> list[str]:
        """Fetch and verify the ONNX model files (set-up; no audit: no personal data)."""
        from facesearch.vision.registry import install_models

        return [str(p) for p in install_models(self.settings.model_dir, log)]

    def reembed(self, actor: Actor, progress: ReembedCallback | None = None) -> ReembedProgress:
        """Describe the gallery again with the configured embedder, then switch to it."""
        self.authorise(actor, "reindex", "reembed")
        from facesearch.calibration import load_calibration
        from facesearch.vision import FaceAnalyzer, embedder_name

        target, live = embedder_name(self.settings.embedder), self.live_embedder
        state = ReembedProgress(target, live, self.store.face_total(), 0)
        if target == live:
            return state
        # Every cut-off comes from the calibration: without one, the switch would stop search.
        load_calibration(target)
        with self.store.transaction() as conn:
            self._audit(conn, actor, "reembed", {"from": live, "to": target,
                                                 "faces": state.faces})
        settings = self.settings
        with WorkerPool(settings, self.settings.workers or _cores()) as pool:
            self._describe_missing(pool, target, state, progress)
            with self._writer():
                # Faces and suppressions added since the pass above, caught up under the lock.
                state.failed = 0
                self._describe_missing(pool, target, state, progress)
                missing = self.store.suppressions_to_reembed(target)
                unusable = [i for i, chip, _ in missing if chip is None]
                if unusable or state.failed:
                    raise FacesearchError(
                        f"cannot switch to {target}: {state.failed} face chips could not be read "
                        f"and {len(unusable)} suppressions keep no face chip (made before "
                        "facesearch kept them); a switch would leave them unmatched. Run "
                        "`facesearch verify --repair`, or suppress those people again")
                # Described as probes are (mirror_probe), in this process: they are few.
                analyzer = FaceAnalyzer(settings)
                described = list(zip([i for i, _, _ in missing], analyzer.describe_chips(
                    [(decode_chip(chip, settings), geometry) for _, chip, geometry in missing],
                    settings.mirror_probe)))
                with self.store.transaction() as conn:
                    self.store.add_descriptors(conn, target, [], described)
                    self.store.switch_embedder(conn, live, target)
                    self._audit(conn, actor, "reembed.switch", {
                        "from": live, "to": target, "faces": state.done,
                        "suppressions": len(described)})
                self._live_settings = None
                self._build_index()
        state.switched = True
        if progress:
            progress(state)
        return state

    def _describe_missing(self, pool: WorkerPool, target: str, state: ReembedProgress,
                          progress: ReembedCallback | None) -> None:
        """Describe every face that has no descriptor by target yet, committing per batch."""
        after = 0
        while True:
            rows = self.store.faces_to_reembed(target, after, REEMBED_BATCH * 8)
            if not rows:
                return
            after = rows[-1][0]
            batches = [[(i, _read(self.crops.path(crop)), geometry)
                        for i, crop, geometry in rows[start:start + REEMBED_BATCH]]
                       for start in range(0, len(rows), REEMBED_BATCH)]
            for described in pool.map(reembed_batch, batches):
                found = [(i, v) for i, v in described if v is not None]
                state.failed += len(described) - len(found)
                with self.store.transaction() as conn:
                    # A face erased meanwhile has no row to refer to: leave it out.
                    live_ids = set(self.store.existing_faces(conn, [i for i, _ in found]))
                    self.store.add_descriptors(conn, target, [(i, v) for i, v in found
                                                              if i in live_ids])
                state.done += len(found)
                if progress:
                    progress(state)


def _read(path) -> bytes:  # noqa: ANN001 - a Path
    """A crop's bytes; empty (undecodable) if it is gone, e.g. erased meanwhile."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def decode_chip(jpeg: bytes, settings) -> np.ndarray:  # noqa: ANN001 - Settings
    """A stored face chip's pixels (a damaged one raises BadImage: the switch waits)."""
    from facesearch.imaging import decode

    return decode(jpeg, max_pixels=settings.max_image_pixels,
                  max_bytes=settings.max_image_bytes).pixels
