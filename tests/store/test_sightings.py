"""Sightings, every place an image was seen, on SQLite and (when given) PostgreSQL: recorded
once per place, erased with their image by the database's cascade, with the source or the
jurisdiction that saw them, and past their own source's retention."""

from __future__ import annotations

import pytest
from datetime import datetime, timedelta

from sqlalchemy import func, select

from facesearch.store.metadata import MetadataStore
from facesearch.store.schema import sightings
from tests.store.test_metadata import add

SEEN = "2026-02-01T00:00:00+00:00"


@pytest.fixture
def store(database_url: str) -> MetadataStore:
    db = MetadataStore(database_url)
    yield db
    db.close()


def places(store: MetadataStore, sha: str) -> list[tuple[str, str, str]]:
    rows = store.grouping_rows([int(i) for i in store.face_ids()])
    found = store.sightings_of(sorted({r["image_id"] for r in rows.values() if r["sha256"] == sha}))
    return [(s["location"], s["page_url"], s["source"]) for seen in found.values() for s in seen]


def sighting_rows(store: MetadataStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(sightings)).scalar_one()


def test_an_image_is_seen_where_it_was_collected_and_each_other_place_once(
        store: MetadataStore) -> None:
    files = store.add_source("files", "public_task", "US", "", 1095)
    web = store.add_source("web", "public_task", "FR", "", 1095)
    sha = "a" * 64
    add(store, sha, files.id, 1)
    assert places(store, sha) == [(f"/photos/{sha}.jpg", "", "files")]
    with store.transaction() as conn:
        assert store.add_sighting(conn, sha, "https://b.example/x.jpg", "https://b.example/", web.id, SEEN)
        # The same place again, and bytes that are not stored, add nothing.
        assert not store.add_sighting(conn, sha, "https://b.example/x.jpg", "https://b.example/",
                                      web.id, SEEN)
        assert not store.add_sighting(conn, "b" * 64, "/elsewhere.jpg", None, files.id, SEEN)
        # The same URL on another page is another place.
        assert store.add_sighting(conn, sha, "https://b.example/x.jpg", "https://c.example/", web.id, SEEN)
    assert sorted(places(store, sha)) == [
        (f"/photos/{sha}.jpg", "", "files"), ("https://b.example/x.jpg", "https://b.example/", "web"),
        ("https://b.example/x.jpg", "https://c.example/", "web")]
    assert store.sightings_of([1])[1][1]["jurisdiction"] == "FR"


def test_erasing_an_image_erases_every_sighting_of_it(store: MetadataStore) -> None:
    source = store.add_source("s", "public_task", "US", "", 1095)
    kept, erased, emptied = "a" * 64, "b" * 64, "c" * 64
    add(store, kept, source.id, 1)
    add(store, erased, source.id, 2)
    last_face = add(store, emptied, source.id, 1)
    with store.transaction() as conn:
        for sha in (kept, erased, emptied):
            store.add_sighting(conn, sha, f"https://copy.example/{sha[0]}.jpg", None, source.id, SEEN)
    assert sighting_rows(store) == 6
    with store.transaction() as conn:
        assert store.delete_images_where(conn, image_sha256=erased) == (1, 2)
        # An image left with no face goes too, with its sightings.
        store.delete_faces(last_face, conn)
    assert sighting_rows(store) == 2
    assert len(places(store, kept)) == 2


def test_a_source_and_a_jurisdiction_take_their_sightings_of_other_sources_images(
        store: MetadataStore) -> None:
    files = store.add_source("files", "public_task", "US", "", 1095)
    web = store.add_source("web", "public_task", "FR", "", 1095)
    press = store.add_source("press", "public_task", "FR", "", 1095)
    sha = "a" * 64
    add(store, sha, files.id, 1)
    with store.transaction() as conn:
        store.add_sighting(conn, sha, "https://web.example/a.jpg", None, web.id, SEEN)
        store.add_sighting(conn, sha, "https://press.example/a.jpg", None, press.id, SEEN)
    with store.transaction() as conn:
        assert store.delete_sightings_by(conn, source="web") == 1
        store.delete_source(conn, "web")  # nothing refers to it any more
    assert [p[2] for p in places(store, sha)] == ["files", "press"]
    with store.transaction() as conn:
        assert store.delete_sightings_by(conn, jurisdiction="FR") == 1
        assert store.delete_sightings_by(conn, jurisdiction="US") == 1  # its first place too
    assert sighting_rows(store) == 0 and store.counts()["images"] == 1


def test_a_sighting_expires_by_its_own_sources_retention(store: MetadataStore) -> None:
    files = store.add_source("files", "public_task", "US", "", 1095)
    web = store.add_source("web", "public_task", "US", "", 30)
    sha = "a" * 64
    add(store, sha, files.id, 1)
    with store.transaction() as conn:
        store.add_sighting(conn, sha, "https://web.example/a.jpg", None, web.id, SEEN)
    seen = datetime.fromisoformat(SEEN)
    with store.transaction() as conn:
        assert store.delete_expired_sightings(conn, seen + timedelta(days=30)) == 0
        assert store.delete_expired_sightings(conn, seen + timedelta(days=30, seconds=1)) == 1
    # The place it was collected from stays: its source keeps it three years.
    assert places(store, sha) == [(f"/photos/{sha}.jpg", "", "files")]


def test_an_image_is_deleted_by_any_place_it_was_seen(store: MetadataStore) -> None:
    source = store.add_source("s", "public_task", "US", "", 1095)
    kept, erased = "a" * 64, "b" * 64
    add(store, kept, source.id, 1)
    add(store, erased, source.id, 1)
    with store.transaction() as conn:
        store.add_sighting(conn, erased, "https://copy.example/b.jpg", None, source.id, SEEN)
    with store.transaction() as conn:
        assert store.delete_images_where(conn, image_location="https://nowhere.example/") == (0, 0)
        assert store.delete_images_where(conn, image_location="https://copy.example/b.jpg") == (1, 1)
    assert store.known_hashes([kept, erased]) == {kept}
