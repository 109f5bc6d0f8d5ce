"""Identities on real LFW photos with the default detector and embedder: a person's faces share
an identity as they are ingested batch by batch, the faces of one image never do (also two
photos of one person pasted side by side), erasure and purge leave no identity without faces,
and a full re-clustering groups the gallery as ingest did, audited."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from facesearch.config import Settings
from facesearch.errors import Forbidden
from facesearch.service import FaceSearchService
from facesearch.types import Box
from tests.conftest import OPERATOR, jpeg_bytes, lfw_photos
from tests.service.test_accounts_and_cases import Clock, people
from tests.service.test_governance import audited, rows
from tests.service.test_opt_out_at_scale import person_of

# Several photos each; Ali_Naimi's include photos with two and three faces.
PEOPLE = ["Ali_Naimi", "Ann_Veneman", "Antonio_Banderas", "Boris_Becker"]
PASTED = "Ann_Veneman"  # two of her photos side by side: one image, two faces of one person


def pasted_pair(folder: Path) -> Path:
    """One image holding two photos of PASTED: two faces that are one person."""
    left, right = (Image.open(p).convert("RGB") for p in lfw_photos(PASTED)[:2])
    both = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
    both.paste(left, (0, 0))
    both.paste(right, (left.width, 0))
    path = folder / "pasted" / f"{PASTED}_pair.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(both, quality=95))
    return path


def ingest_people(svc: FaceSearchService, folder: Path) -> None:
    svc.add_source(OPERATOR, "lfw", "public_task", "US")
    svc.add_source(OPERATOR, "other", "public_task", "FR")
    # Photos of each person arrive in several batches (eight images a batch).
    svc.ingest(OPERATOR, [p for name in PEOPLE for p in lfw_photos(name)], "lfw")
    svc.ingest(OPERATOR, [pasted_pair(folder)], "other")


def face_table(svc: FaceSearchService) -> list[tuple[int, int, int | None, str]]:
    """(face id, image id, identity id, whose face) of every stored face."""
    return [(face_id, image_id, identity, person_of(location, Box(*box)))
            for face_id, image_id, identity, location, *box in rows(
                svc, "SELECT faces.id, images.id, faces.identity_id, images.location, box_left, "
                "box_top, box_right, box_bottom FROM faces JOIN images ON images.id = faces.image_id "
                "ORDER BY faces.id")]


def identities_by_person(table: list[tuple[int, int, int | None, str]]) -> dict[str, Counter]:
    found: dict[str, Counter] = defaultdict(Counter)
    for _, _, identity, person in table:
        found[person][identity] += 1
    return found


def no_image_merged(table: list[tuple[int, int, int | None, str]]) -> bool:
    pairs = Counter((image, identity) for _, image, identity, _ in table if identity is not None)
    return max(pairs.values(), default=1) == 1


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("identities")
    svc = FaceSearchService(Settings(home=folder / "data", workers=1), Clock())
    ingest_people(svc, folder)
    yield svc
    svc.close()


def test_a_persons_faces_share_one_identity_and_no_identity_spans_two_people(gallery) -> None:
    table = face_table(gallery)
    by_person = identities_by_person(table)
    for name in PEOPLE:
        identity, count = by_person[name].most_common(1)[0]
        assert identity is not None, f"{name}'s faces were left ungrouped: {by_person[name]}"
        # Their photos are one identity (a face may stay apart: a profile, a blurred one).
        assert count >= 0.75 * sum(by_person[name].values()), (name, by_person[name])
    main = {name: by_person[name].most_common(1)[0][0] for name in PEOPLE}
    assert len(set(main.values())) == len(PEOPLE)
    # No named person's identity holds another named person's face.
    for name in PEOPLE:
        others = {i for other in PEOPLE if other != name for i in by_person[other]}
        assert main[name] not in others


def test_two_faces_of_one_image_never_share_an_identity(gallery) -> None:
    table = face_table(gallery)
    assert no_image_merged(table)
    # The pasted image: two faces of one person, apart; one of them in her identity.
    pasted = [identity for _, image, identity, _ in table
              if image == max(i for _, i, _, _ in table)]
    assert len(pasted) == 2 and pasted[0] != pasted[1]
    hers = identities_by_person(table)[PASTED].most_common(1)[0][0]
    assert hers in pasted


def test_recluster_groups_the_gallery_as_ingest_did_and_keeps_the_ids(gallery) -> None:
    before = face_table(gallery)
    report = gallery.recluster(OPERATOR)
    after = face_table(gallery)
    assert no_image_merged(after)
    for name in PEOPLE:
        # The same identity id, holding about the faces ingest gave it (a face whose
        # nearest core an ingest could not yet see may go elsewhere).
        was = identities_by_person(before)[name]
        now = identities_by_person(after)[name]
        assert now.most_common(1)[0][0] == was.most_common(1)[0][0], (name, was, now)
        assert now.most_common(1)[0][1] >= 0.75 * sum(now.values()), (name, was, now)
    assert report.faces == len(after) and report.kept >= len(PEOPLE)
    assert report.identities == len({i for _, _, i, _ in after if i is not None})
    record = audited(gallery, "identities.recluster")[-1]["detail"]
    assert record["faces"] == len(after) and record["min_faces"] == 3
    # Twice in a row: nothing changes.
    gallery.recluster(OPERATOR)
    assert face_table(gallery) == after


def test_recluster_is_for_admins(gallery) -> None:
    team = people(gallery)
    with pytest.raises(Forbidden):
        gallery.recluster(team["ivy"])
    assert audited(gallery, "identities.recluster.refused")


def test_identity_summaries_count_faces_images_and_pages(gallery) -> None:
    table = face_table(gallery)
    hers = identities_by_person(table)[PASTED].most_common(1)[0][0]
    summary = gallery.identity_summaries([hers, 10**6])
    faces_of_hers = [face for face, _, identity, _ in table if identity == hers]
    assert set(summary) == {hers}
    assert summary[hers].faces == len(faces_of_hers)
    assert summary[hers].images == len({image for face, image, identity, _ in table if identity == hers})
    assert summary[hers].pages == summary[hers].images  # each file seen in one place


def test_erasure_and_purge_leave_no_identity_without_faces(tmp_path: Path) -> None:
    svc = FaceSearchService(Settings(home=tmp_path / "data", workers=1), Clock())
    try:
        ingest_people(svc, tmp_path)
        table = face_table(svc)
        hers = identities_by_person(table)[PASTED].most_common(1)[0][0]
        # Every image of hers erased, one by one: her identity goes with its last face.
        for location in {loc for (loc,) in rows(
                svc, "SELECT DISTINCT images.location FROM faces JOIN images ON images.id = "
                "faces.image_id WHERE faces.identity_id = ?", hers)}:
            assert rows(svc, "SELECT id FROM identities WHERE id = ?", hers)
            svc.delete(OPERATOR, image=location)
        assert rows(svc, "SELECT id FROM identities WHERE id = ?", hers) == []
        # A purge of the jurisdiction holding the rest: no identity is left at all.
        svc.purge_jurisdiction(OPERATOR, "US")
        svc.purge_jurisdiction(OPERATOR, "FR")
        assert rows(svc, "SELECT count(*) FROM faces") == [(0,)]
        assert rows(svc, "SELECT count(*) FROM identities") == [(0,)]
    finally:
        svc.close()
