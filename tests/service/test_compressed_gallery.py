"""Past compressed_index_min the service indexes with the compressed IVF-PQ index: the same
candidates and exact distances as exact search, deletions honoured, and it reloads."""

from __future__ import annotations

import numpy as np

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from facesearch.store.metadata import NewImage
from facesearch.types import Box, Face, FaceQuality
from tests.conftest import OPERATOR, lfw_photos

PEOPLE = ["Al_Sharpton", "Alastair_Campbell", "Albert_Costa"]


def add_distractors(service: FaceSearchService, count: int) -> None:
    """Stored faces far from any real one (unit vectors on random directions), written as
    ingest would write them, many to an image."""
    rng = np.random.default_rng(3)
    source = service.store.source("lfw")
    for start in range(0, count, 500):
        vectors = rng.normal(size=(min(500, count - start), 128)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        found = [Face(Box(0, 0, 10, 10), 1.0, [(0, 0)] * 5, FaceQuality(30, 0.5, 1.0), v, b"") for v in vectors]
        with service.store.transaction() as conn:
            service.store.add_image(conn, NewImage(
                sha256=f"{start:064d}", location=f"distractor-{start}", page_url=None,
                source_id=source.id, jurisdiction="US", collected_at=service.now(), width=10,
                height=10, format="JPEG"), found, ["none.jpg"] * len(found), withheld=0,
                embedder=service.live_embedder)


def test_a_gallery_past_the_threshold_is_searched_through_the_compressed_index(tmp_path) -> None:
    settings = Settings(home=tmp_path / "data", workers=1, compressed_index_min=3000, pq_probes=32)
    service = FaceSearchService(settings)
    try:
        service.add_source(OPERATOR, "lfw", "public_task", "US")
        add_distractors(service, 4000)
        service.ingest(OPERATOR, [p for n in PEOPLE for p in lfw_photos(n)[1:4]], "lfw")
        assert service.index.kind == "ivfpq"  # ingest switched it past the threshold
        assert (settings.index_dir / "compressed" / "manifest.json").exists()
        assert not (settings.index_dir / "vectors.faiss").exists()
        actor = service.local_operator("t")
        case = service.open_case(actor, "C-1", "missing person", offence_type="robbery")
        probe = lfw_photos(PEOPLE[0])[0].read_bytes()
        found = service.search(actor, case.id, probe, face="largest").faces[0].candidates
        assert [c.location.split("/")[-2] for c in found] == [PEOPLE[0]] * 3
        # Exact distances, as the flat index gives them.
        held, vectors = service.store.vectors_of(np.array([c.face_id for c in found]))
        query = service._probe_faces(probe, "largest")[1][0].embedding
        exact = dict(zip(held.tolist(), np.linalg.norm(vectors - query, axis=1)))
        assert all(abs(c.distance - exact[c.face_id]) < 1e-3 for c in found)
        service.delete(OPERATOR, face_id=found[0].face_id)
    finally:
        service.close()
    reloaded = FaceSearchService(settings)
    try:
        assert reloaded.index.kind == "ivfpq"
        actor = reloaded.local_operator("t")
        again = reloaded.search(actor, case.id, probe, face="largest").faces[0].candidates
        assert [c.face_id for c in again] == [c.face_id for c in found[1:]]
    finally:
        reloaded.close()
