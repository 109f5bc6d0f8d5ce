"""The metadata store on a real SQLite file, and on PostgreSQL when one is given."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy.exc import IntegrityError

from facesearch.store.metadata import MetadataStore, NewImage
from facesearch.types import Box, Face, FaceQuality


def face(seed: int) -> Face:
    rng = np.random.default_rng(seed)
    return Face(box=Box(10, 10, 60, 60), score=1.5, landmarks=[(20, 20)] * 5,
                quality=FaceQuality(face_pixels=50, sharpness=0.3, confidence=1.5),
                embedding=rng.normal(size=128).astype(np.float32), chip_jpeg=b"")


@pytest.fixture
def store(database_url: str) -> MetadataStore:
    db = MetadataStore(database_url)
    yield db
    db.close()


def add(store: MetadataStore, sha: str, source_id: int, faces: int, jurisdiction: str = "US") -> list[int]:
    image = NewImage(sha256=sha, location=f"/photos/{sha}.jpg", page_url=None, source_id=source_id,
                     jurisdiction=jurisdiction, collected_at="2026-01-01T00:00:00+00:00",
                     width=100, height=100, format="JPEG")
    found = [face(hash((sha, i)) % 1000) for i in range(faces)]
    with store.transaction() as conn:
        return store.add_image(conn, image, found, [f"{sha}_{i}.jpg" for i in range(faces)], withheld=0,
                               embedder="sface")


def test_images_are_unique_by_sha256(store: MetadataStore) -> None:
    source = store.add_source("s", "public_task", "US", "", 1095)
    add(store, "a" * 64, source.id, 1)
    with pytest.raises(IntegrityError):
        add(store, "a" * 64, source.id, 1)
    assert store.known_hashes(["a" * 64, "b" * 64]) == {"a" * 64}
    assert store.counts()["faces"] == 1  # the failed insert left nothing behind


def test_descriptors_round_trip_in_id_order_by_chunks(store: MetadataStore) -> None:
    source = store.add_source("s", "public_task", "US", "", 1095)
    ids = add(store, "a" * 64, source.id, 3) + add(store, "b" * 64, source.id, 2)
    chunks = list(store.face_vectors(chunk=2))
    assert [len(i) for i, _ in chunks] == [2, 2, 1]
    got_ids = np.concatenate([i for i, _ in chunks])
    assert got_ids.tolist() == sorted(ids)
    vectors = np.concatenate([v for _, v in chunks])
    assert np.array_equal(vectors[0], face(hash(("a" * 64, 0)) % 1000).embedding)
    assert [i.tolist() for i, _ in store.face_vectors(after_id=ids[3])] == [[ids[4]]]


def test_deleting_faces_journals_their_erasure_and_drops_emptied_images(store: MetadataStore) -> None:
    source = store.add_source("s", "public_task", "US", "", 1095)
    ids = add(store, "a" * 64, source.id, 2)
    with store.transaction() as conn:
        assert store.delete_faces([ids[0]], conn) == 1
    assert store.counts()["images"] == 1  # one face left
    with store.transaction() as conn:
        store.delete_faces([ids[1]], conn)
    assert store.counts()["images"] == 0
    assert sorted(store.pending_erasures()) == [(ids[0], "a" * 64 + "_0.jpg"), (ids[1], "a" * 64 + "_1.jpg")]
    store.clear_erasures(ids)
    assert store.pending_erasures() == []


def test_a_rolled_back_deletion_leaves_faces_and_no_journal(store: MetadataStore) -> None:
    source = store.add_source("s", "public_task", "US", "", 1095)
    ids = add(store, "a" * 64, source.id, 1)
    with pytest.raises(RuntimeError):
        with store.transaction() as conn:
            store.delete_faces(ids, conn)
            raise RuntimeError("crash before commit")
    assert store.counts()["faces"] == 1 and store.pending_erasures() == []


def test_deleting_by_jurisdiction_and_by_source(store: MetadataStore) -> None:
    us = store.add_source("us", "public_task", "US", "", 1095)
    fr = store.add_source("fr", "public_task", "FR", "", 1095)
    add(store, "a" * 64, us.id, 2)
    add(store, "b" * 64, fr.id, 1, jurisdiction="FR")
    add(store, "c" * 64, fr.id, 0, jurisdiction="FR")
    with store.transaction() as conn:
        assert store.delete_images_where(conn, jurisdiction="FR") == (2, 1)
    with store.transaction() as conn:
        assert store.delete_images_where(conn, source="us") == (1, 2)
    assert store.counts()["images"] == 0 and len(store.pending_erasures()) == 3


def test_candidate_rows_join_face_image_and_source(store: MetadataStore) -> None:
    source = store.add_source("archive", "consent", "DE", "", 1095)
    ids = add(store, "d" * 64, source.id, 1, jurisdiction="DE")
    row = store.candidate_rows(ids + [999])
    assert list(row) == ids
    assert row[ids[0]]["source"] == "archive" and row[ids[0]]["jurisdiction"] == "DE"
    assert row[ids[0]]["location"] == "/photos/" + "d" * 64 + ".jpg"


def test_suppression_templates_persist_with_their_embedder_and_chip(store: MetadataStore) -> None:
    templates = np.eye(2, 128, dtype=np.float32)
    faces = [Face(Box(0, 0, 9, 9), 1.0, [], 0.5, t, b"chip %d" % i, {"box": [0, 0, 9, 9]})
             for i, t in enumerate(templates)]
    with store.transaction() as conn:
        store.add_suppressions(conn, faces, "request 7", "sface")
    assert np.array_equal(store.suppression_templates(), templates)
    # What a re-embedding to another model describes again.
    waiting = store.suppressions_to_reembed("dlib-resnet")
    assert [(chip, geometry) for _, chip, geometry in waiting] == [
        (b"chip 0", {"box": [0, 0, 9, 9]}), (b"chip 1", {"box": [0, 0, 9, 9]})]
    assert store.suppressions_to_reembed("sface") == []


def test_identity_numbers_are_never_reused_after_the_newest_identity_is_deleted(
        store: MetadataStore) -> None:
    # Watches and reviews refer to identities by number: a reused one would point at a stranger.
    from facesearch.store.identities import IdentityStore, delete_empty_identities

    identities = IdentityStore(store.engine)
    with store.transaction() as conn:
        first = identities.create(conn, "2026-01-01T00:00:00+00:00")
        assert delete_empty_identities(conn, [first]) == 1
    with store.transaction() as conn:
        assert identities.create(conn, "2026-01-02T00:00:00+00:00") > first


def test_face_ids_are_never_reused_after_the_newest_face_is_deleted(store: MetadataStore) -> None:
    source = store.add_source("s", "public_task", "US", "", 1095)
    first = add(store, "a" * 64, source.id, 1)
    with store.transaction() as conn:
        store.delete_faces(first, conn)
    second = add(store, "b" * 64, source.id, 1)
    assert second[0] > first[0]
