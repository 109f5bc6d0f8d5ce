"""Search results grouped by photo and by identity, on real LFW photos: copies of one photo
(resized, recompressed, cropped) are one photo with every place it was seen; a mirrored copy
is another photo; the same bytes seen at a second place are one image with two sightings,
erased together; deleting the source, or purging the jurisdiction, that saw an image another
source collected takes only that sighting; naming any place an image was seen deletes it."""

from __future__ import annotations

import hashlib
import io
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from facesearch.service import FaceSearchService
from facesearch.imaging import hash_bits_apart
from facesearch.service.grouping import NEAR_DUPLICATE_BITS, PhotoGroup
from tests.conftest import OPERATOR, lfw_photos
from tests.crawl.test_crawl import write_warc

# Three of the crawl test site's people (tests/crawl/site.py): photo 1 and its copies are
# collected, photo 0 probes.
PEOPLE = ["Aaron_Peirsol", "Abdullah_Gul", "Adam_Sandler"]


def jpeg(image: Image.Image, quality: int = 95) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def copies_of(photo: Path) -> dict[str, bytes]:
    """The photo and the copies a web page might show: half the size, recompressed at JPEG
    quality 40, cropped by 10% (its right and bottom edges), and mirrored."""
    image = Image.open(photo).convert("RGB")
    w, h = image.size
    return {"original": photo.read_bytes(),
            "resized": jpeg(image.resize((w // 2, h // 2), Image.LANCZOS)),
            "recompressed": jpeg(image, quality=40),
            "cropped": jpeg(image.crop((0, 0, int(w * 0.9), int(h * 0.9)))),
            "mirrored": jpeg(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))}


def url_of(person: str, kind: str) -> str:
    return f"https://{kind}.example/{person}.jpg"


def search(service: FaceSearchService, photo: bytes):  # noqa: ANN201 - a SearchResult
    actor = service.local_operator(OPERATOR.name)
    case = (service.cases.case_by_number(actor.organisation_id, "T-1")
            or service.open_case(actor, "T-1", "criminal investigation", offence_type="robbery"))
    return service.search(actor, case.id, photo, top_k=20, face="largest")


def group_of(photos: list[PhotoGroup], sha: str) -> PhotoGroup:
    return next(group for group in photos if sha in group.images)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def gallery(service: FaceSearchService, tmp_path: Path) -> dict[str, dict[str, bytes]]:
    """Every person's photo 1 and its copies, each at a place of its own."""
    service.add_source(OPERATOR, "web", "legitimate_interests", "US")
    folder = tmp_path / "collected"
    folder.mkdir()
    made, where = {}, {}
    for person in PEOPLE:
        made[person] = copies_of(lfw_photos(person)[1])
        for kind, data in made[person].items():
            path = folder / f"{person}-{kind}.jpg"
            path.write_bytes(data)
            where[path.resolve()] = url_of(person, kind)
    summary = service.ingest(OPERATOR, [folder], "web", location_of=lambda p: where[p.resolve()])
    assert summary.images_indexed == 5 * len(PEOPLE)
    return made


def test_resized_recompressed_and_cropped_copies_are_one_photo_and_a_mirrored_one_another(
        service: FaceSearchService, gallery: dict[str, dict[str, bytes]]) -> None:
    for person in PEOPLE:
        result = search(service, lfw_photos(person)[0].read_bytes())
        copies = gallery[person]
        listed = {c.image_sha256 for c in result.faces[0].candidates}
        assert {sha(data) for data in copies.values()} <= listed, person
        same = group_of(result.photos, sha(copies["original"]))
        assert set(same.images) == {sha(copies[k]) for k in ("original", "resized", "recompressed",
                                                             "cropped")}, person
        assert {s.location for s in same.sightings} == {
            url_of(person, k) for k in ("original", "resized", "recompressed", "cropped")}
        assert len(same.candidates) == 4
        mirrored = group_of(result.photos, sha(copies["mirrored"]))
        assert mirrored.images == [sha(copies["mirrored"])], person
        assert [s.location for s in mirrored.sightings] == [url_of(person, "mirrored")]
        # Each image once: the groups partition the candidate list's images.
        grouped = [image for group in result.photos for image in group.images]
        assert sorted(grouped) == sorted(listed)
        assert sorted(c for g in result.photos for c in g.candidates) == sorted(
            (0, c.rank) for c in result.faces[0].candidates)


def test_identity_groups_hold_each_candidate_once_with_the_gallery_counts(
        service: FaceSearchService, gallery: dict[str, dict[str, bytes]]) -> None:
    result = search(service, lfw_photos(PEOPLE[0])[0].read_bytes())
    candidates = result.faces[0].candidates
    with sqlite3.connect(service.settings.home / "metadata.sqlite3") as db:
        identity_of = dict(db.execute("SELECT id, identity_id FROM faces"))
        counts = {i: (faces, images) for i, faces, images in db.execute(
            "SELECT identity_id, count(*), count(DISTINCT image_id) FROM faces"
            " WHERE identity_id IS NOT NULL GROUP BY identity_id")}
    assert sorted(r for g in result.identities for r in g.ranks) == [c.rank for c in candidates]
    for group in result.identities:
        members = [c for c in candidates if c.rank in group.ranks]
        assert group.best_rank == min(group.ranks) and group.best_face_id == members[0].face_id
        assert {identity_of[c.face_id] for c in members} == {group.identity_id}
        if group.identity_id is None:  # a face no identity holds is a group of its own
            assert (group.faces, group.images, group.pages, len(members)) == (1, 1, 1, 1)
        else:
            assert (group.faces, group.images) == counts[group.identity_id]
            assert group.pages == group.images  # each of these images was seen at one place


def test_the_same_bytes_at_a_second_page_are_one_image_seen_twice_and_erased_with_it(
        service: FaceSearchService, tmp_path: Path) -> None:
    service.add_source(OPERATOR, "archive", "legitimate_interests", "US")
    photo = lfw_photos(PEOPLE[1])[1].read_bytes()
    first, second = tmp_path / "first.warc.gz", tmp_path / "second.warc.gz"
    write_warc(first, [("https://news.example/a.jpg", photo)], "https://news.example/story.html")
    write_warc(second, [("https://blog.example/copy.jpg", photo)], "https://blog.example/post.html")
    assert service.ingest_warc(OPERATOR, first, "archive") == {"done": 1}
    assert service.ingest_warc(OPERATOR, second, "archive") == {"skipped:duplicate": 1}
    assert service.ingest_warc(OPERATOR, second, "archive") == {"skipped:duplicate": 1}  # again
    # A local copy of the same file is a third place.
    local = tmp_path / "copy.jpg"
    local.write_bytes(photo)
    assert service.ingest(OPERATOR, [local], "archive").sightings == 1
    assert service.ingest(OPERATOR, [local], "archive").sightings == 0  # a re-run adds nothing

    result = search(service, lfw_photos(PEOPLE[1])[0].read_bytes())
    [group] = result.photos
    assert group.images == [sha(photo)]
    assert [(s.location, s.page_url) for s in group.sightings] == [
        ("https://news.example/a.jpg", "https://news.example/story.html"),
        ("https://blog.example/copy.jpg", "https://blog.example/post.html"),
        (str(local.resolve()), "")]
    batches = [r["detail"] for r in service.trail.records() if r["action"] == "crawl.warc.batch"]
    assert [b["sightings"] for b in batches] == [0, 1, 0]
    ingests = [r["detail"] for r in service.trail.records() if r["action"] == "ingest"]
    assert [b["sightings"] for b in ingests] == [1, 0]

    service.delete(OPERATOR, image=sha(photo))
    with sqlite3.connect(service.settings.home / "metadata.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM sightings").fetchone() == (0,)


def test_no_sighting_is_kept_of_a_suppressed_persons_photo(
        service: FaceSearchService, tmp_path: Path) -> None:
    service.add_source(OPERATOR, "web", "legitimate_interests", "US")
    service.suppress(OPERATOR, lfw_photos(PEOPLE[2])[0].read_bytes(), "objection")
    photo = lfw_photos(PEOPLE[2])[1].read_bytes()
    for name in ("a.jpg", "b.jpg"):  # the same bytes at two places
        (tmp_path / name).write_bytes(photo)
    summary = service.ingest(OPERATOR, [tmp_path / "a.jpg", tmp_path / "b.jpg"], "web")
    assert (summary.images_indexed, summary.faces_withheld, summary.sightings) == (0, 1, 0)
    with sqlite3.connect(service.settings.home / "metadata.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM sightings").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM images").fetchone() == (0,)


def test_every_stored_image_carries_its_perceptual_hash(
        service: FaceSearchService, gallery: dict[str, dict[str, bytes]]) -> None:
    with sqlite3.connect(service.settings.home / "metadata.sqlite3") as db:
        hashes = dict(db.execute("SELECT location, phash FROM images"))
    assert len(hashes) == 5 * len(PEOPLE)
    for person in PEOPLE:
        original = hashes[url_of(person, "original")]
        for kind in ("resized", "recompressed"):
            assert hash_bits_apart(original, hashes[url_of(person, kind)]) <= NEAR_DUPLICATE_BITS
        assert hash_bits_apart(original, hashes[url_of(person, "mirrored")]) > NEAR_DUPLICATE_BITS


def test_an_organisation_sees_only_the_sightings_of_its_jurisdictions(
        service: FaceSearchService, tmp_path: Path) -> None:
    service.add_source(OPERATOR, "us-press", "legitimate_interests", "US")
    service.add_source(OPERATOR, "fr-press", "legitimate_interests", "FR")
    photo = lfw_photos(PEOPLE[0])[1].read_bytes()
    for name, source in (("us.jpg", "us-press"), ("fr.jpg", "fr-press")):
        (tmp_path / name).write_bytes(photo)
        service.ingest(OPERATOR, [tmp_path / name], source)
    probe = lfw_photos(PEOPLE[0])[0].read_bytes()
    assert [s.source for s in search(service, probe).photos[0].sightings] == ["us-press", "fr-press"]
    service.restrict_organisation(service.local_operator(OPERATOR.name), "local", ["US"])
    assert [s.source for s in search(service, probe).photos[0].sightings] == ["us-press"]


def test_a_deleted_source_or_purged_jurisdiction_takes_its_sightings_of_another_sources_image(
        service: FaceSearchService, tmp_path: Path) -> None:
    service.add_source(OPERATOR, "files", "legitimate_interests", "US")
    service.add_source(OPERATOR, "web", "legitimate_interests", "FR")
    local = tmp_path / "a.jpg"
    local.write_bytes(lfw_photos(PEOPLE[0])[1].read_bytes())
    service.ingest(OPERATOR, [local], "files")
    web_url = "https://web.example/a.jpg"

    def seen_on_the_web() -> int:
        return service.ingest(OPERATOR, [local], "web", location_of=lambda _: web_url).sightings

    def places() -> list[tuple[str, str]]:
        with sqlite3.connect(service.settings.home / "metadata.sqlite3") as db:
            return db.execute("SELECT location, sources.name FROM sightings JOIN sources"
                              " ON sources.id = sightings.source_id ORDER BY sightings.id").fetchall()

    def last_audited(action: str) -> dict:
        return [r["detail"] for r in service.trail.records() if r["action"] == action][-1]

    collected = [(str(local.resolve()), "files")]
    assert seen_on_the_web() == 1
    report = service.delete(OPERATOR, source="web")  # was refused by the sighting's foreign key
    assert (report.images, report.faces, report.sightings) == (0, 0, 1)
    assert last_audited("delete")["sightings"] == 1
    assert places() == collected and service.store.source("web") is None

    service.add_source(OPERATOR, "web", "legitimate_interests", "FR")
    assert seen_on_the_web() == 1
    report = service.purge_jurisdiction(OPERATOR, "FR")
    assert (report.images, report.faces, report.sightings) == (0, 0, 1)
    assert last_audited("purge")["sightings"] == 1
    assert places() == collected

    # Asked to remove "the photo at" a place it was only seen at later, the photo goes.
    assert seen_on_the_web() == 1
    report = service.delete(OPERATOR, image=web_url)
    assert (report.images, report.faces) == (1, 1)
    assert places() == [] and service.store.counts()["images"] == 0


def test_identity_counts_are_of_the_organisations_jurisdictions_only(
        service: FaceSearchService, tmp_path: Path) -> None:
    """A US-only organisation is never told how much of a person lies in France: an identity's
    faces, images and pages, and a lone face's pages, count only what it may search."""
    service.add_source(OPERATOR, "us-press", "legitimate_interests", "US")
    service.add_source(OPERATOR, "fr-press", "legitimate_interests", "FR")
    person, lone = "Abdullah_Gul", PEOPLE[2]
    photos = lfw_photos(person)
    where: dict[Path, str] = {}

    def placed(name: str, data: bytes, url: str) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        where[path.resolve()] = url
        return path

    us = [placed(f"us{n}.jpg", p.read_bytes(), f"https://us.example/{n}") for n, p in
          enumerate(photos[1:4])]
    fr = [placed(f"fr{n}.jpg", p.read_bytes(), f"https://fr.example/{n}") for n, p in
          enumerate(photos[4:12])]
    alone = lfw_photos(lone)[1].read_bytes()
    us.append(placed("lone-us.jpg", alone, "https://us.example/lone"))
    fr.append(placed("lone-fr.jpg", alone, "https://fr.example/lone"))  # the same image, seen again
    # Each of his US photos also seen on a French page.
    fr += [placed(f"again{n}.jpg", p.read_bytes(), f"https://fr.example/again{n}") for n, p in
           enumerate(photos[1:4])]
    service.ingest(OPERATOR, us, "us-press", location_of=lambda p: where[p.resolve()])
    service.ingest(OPERATOR, fr, "fr-press", location_of=lambda p: where[p.resolve()])

    def identity_of(probe: Path):  # noqa: ANN202 - the best candidate's IdentityGroup
        return min(search(service, probe.read_bytes()).identities, key=lambda g: g.best_rank)

    everywhere = identity_of(photos[0])
    assert everywhere.identity_id is not None and everywhere.faces == 11 and everywhere.pages == 14
    assert identity_of(lfw_photos(lone)[0]).pages == 2
    service.restrict_organisation(service.local_operator(OPERATOR.name), "local", ["US"])
    restricted = identity_of(photos[0])
    assert restricted.identity_id == everywhere.identity_id
    assert (restricted.faces, restricted.images, restricted.pages) == (3, 3, 3)
    lonely = identity_of(lfw_photos(lone)[0])
    assert lonely.identity_id is None and lonely.pages == 1
