"""The service with FACESEARCH_VECTOR_BACKEND=milvus, on a real Milvus server (loopback):
ingest real LFW faces, find the right person, delete a face and find it gone from Milvus,
reopen the collection from another service, reindex."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from pymilvus import utility

from facesearch.config import Settings
from facesearch.index.milvus_index import MilvusIndex
from facesearch.service import FaceSearchService
from tests.conftest import OPERATOR, lfw_photos
from tests.service.test_engine import PEOPLE, gallery, search


def test_a_milvus_backed_service_finds_the_person_and_forgets_a_deleted_face(
        tmp_path: Path, milvus_uri: str, lfw: Path) -> None:
    settings = Settings(home=tmp_path / "data", workers=1, vector_backend="milvus",
                        milvus_uri=milvus_uri, milvus_collection=f"test_{uuid.uuid4().hex}")
    service = FaceSearchService(settings)
    try:
        service.add_source(OPERATOR, "lfw", "legitimate_interests", "US")
        people = PEOPLE[:3]
        summary = service.ingest(OPERATOR, gallery(people), "lfw")
        index = service.index
        assert isinstance(index, MilvusIndex) and index.kind == "milvus-hnsw"
        assert len(index) == summary.faces_indexed == service.store.counts()["faces"]
        assert not (settings.index_dir / "vectors.faiss").exists()  # nothing held locally
        probe = lfw_photos(people[0])[0].read_bytes()
        found = search(service, probe, top_k=3, face="largest").faces[0].candidates
        assert [Path(c.location).parent.name for c in found] == [people[0]] * 3
        # Filed under the source's jurisdiction and name, as the metadata store has them.
        rows = index.collection.query(f"id in {[c.face_id for c in found]}",
                                      output_fields=["jurisdiction", "source"])
        assert {(r["jurisdiction"], r["source"]) for r in rows} == {("US", "lfw")}

        service.delete(OPERATOR, face_id=found[0].face_id)
        again = search(service, probe, top_k=3, face="largest").faces[0].candidates
        assert found[0].face_id not in [c.face_id for c in again]
        assert [c.face_id for c in again[:2]] == [c.face_id for c in found[1:]]
        assert index.collection.query(f"id == {found[0].face_id}", output_fields=["id"],
                                      consistency_level="Strong") == []
        assert len(index) == summary.faces_indexed - 1
    finally:
        service.close()

    # Another process opens the same collection: nothing to catch up, nothing added twice.
    reopened = FaceSearchService(settings)
    try:
        index = reopened.index
        assert index.watermark == max(int(i) for ids, _ in reopened.store.face_vectors() for i in ids)
        assert len(index) == summary.faces_indexed - 1
        stored, vectors = next(reopened.store.face_vectors())
        distances, ids = index.search(vectors, 1)
        assert (ids[:, 0] == stored).all() and np.allclose(distances[:, 0], 0, atol=1e-3)
        # reindex drops the collection and fills it again from the stored descriptors.
        assert reopened.reindex(OPERATOR) == len(stored) == len(reopened.index)
        assert (reopened.index.search(vectors, 1)[1][:, 0] == stored).all()
    finally:
        utility.drop_collection(settings.milvus_collection, using=index.alias)
        reopened.close()
