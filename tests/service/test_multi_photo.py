"""Multi-photo searches on real LFW people: several photos of one person searched as one fused
face, every probe photo's hash recorded, honest scores, clear refusals."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesearch.calibration import load_calibration
from facesearch.config import Settings
from facesearch.errors import InvalidRequest, NoFace
from facesearch.fusion import RULE
from facesearch.imaging import decode_for_analysis
from facesearch.service import AuditFilter, FaceSearchService
from facesearch.store.metadata import from_blob
from tests.conftest import LFW, OPERATOR, jpeg_bytes, lfw_photos, noise_image

# People with four or more photos, chosen in code: photos 0-2 probe, photo 3 is the gallery's.
PEOPLE = [p.name for p in sorted((LFW / "images").iterdir()) if len(list(p.glob("*.jpg"))) >= 4][:24]
# People with one photo: strangers in the gallery.
STRANGERS = [p.name for p in sorted((LFW / "images").iterdir()) if len(list(p.glob("*.jpg"))) == 1][:20]
UNLIMITED = 100_000


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory):
    settings = Settings(home=tmp_path_factory.mktemp("multi") / "data", workers=1,
                        searches_per_minute_user=UNLIMITED, searches_per_day_user=UNLIMITED,
                        searches_per_minute_organisation=UNLIMITED,
                        searches_per_day_organisation=UNLIMITED)
    service = FaceSearchService(settings)
    service.add_source(OPERATOR, "lfw", "legitimate_interests", "US")
    service.ingest(OPERATOR, [lfw_photos(name)[3] for name in PEOPLE]
                   + [lfw_photos(name)[0] for name in STRANGERS], "lfw")
    yield service
    service.close()


def search(service: FaceSearchService, photos: list[bytes] | bytes, **options: object):
    actor = service.local_operator(OPERATOR.name)
    case = (service.cases.case_by_number(actor.organisation_id, "M-1")
            or service.open_case(actor, "M-1", "criminal investigation", offence_type="robbery"))
    return service.search(actor, case.id, photos, **options)


def probes(name: str) -> list[bytes]:
    return [photo.read_bytes() for photo in lfw_photos(name)[:3]]


def own_rank(result, name: str) -> tuple[float, float]:
    """The rank of the person's first candidate (infinite when none is listed), and its
    margin: the nearest stranger's distance (or the cut-off's) less the person's."""
    face = result.faces[0]
    own = [c for c in face.candidates if Path(c.location).parent.name == name]
    stranger = min([c.distance for c in face.candidates if Path(c.location).parent.name != name],
                   default=face.cut_off.distance)
    return (own[0].rank, stranger - own[0].distance) if own else (float("inf"), -1.0)


@pytest.fixture(scope="module")
def ranks(indexed: FaceSearchService) -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
    """Each person's (rank, margin) of their gallery photo: first photo alone, first three."""
    return {name: (own_rank(search(indexed, probes(name)[0], face="largest", top_k=10), name),
                   own_rank(search(indexed, probes(name), face="largest", top_k=10), name))
            for name in PEOPLE}


def test_a_multi_photo_search_ranks_a_person_first_where_one_photo_ranks_them_no_better(
        ranks: dict[str, tuple[tuple[float, float], tuple[float, float]]]) -> None:
    fused_first = [name for name, (_, (fused, _)) in ranks.items() if fused == 1]
    # The person whose single photo did worst (lowest rank, then narrowest margin) among those
    # the fused search ranks first.
    chosen = max(fused_first, key=lambda name: (ranks[name][0][0], -ranks[name][0][1]))
    (single, single_margin), (fused, fused_margin) = ranks[chosen]
    assert fused == 1 <= single
    assert fused_margin > single_margin
    # Over all the people, fusion ranks at least as many first as their first photo alone,
    # and sets the person's gallery photo further apart from the nearest stranger on average.
    assert len(fused_first) >= sum(single[0] == 1 for single, _ in ranks.values())
    assert np.mean([f[1] for _, f in ranks.values()]) > np.mean([s[1] for s, _ in ranks.values()])


def test_every_probe_photo_is_recorded_in_the_case_and_the_audit(indexed: FaceSearchService) -> None:
    photos = probes(PEOPLE[0])
    result = search(indexed, photos, face="largest")
    hashes = [hashlib.sha256(photo).hexdigest() for photo in photos]
    assert result.probe_photos == hashes and result.probe_sha256 == hashes[0]
    assert result.fusion == RULE and len(result.faces) == 1
    actor = indexed.local_operator(OPERATOR.name)
    _, stored = indexed.case_searches(actor, indexed.cases.case_by_number(actor.organisation_id, "M-1").id,
                                      result.search_id)
    assert stored[0].probe_photos == hashes
    record = indexed.trail.records(AuditFilter(action="search"))[-1]
    assert record["detail"]["search_id"] == result.search_id
    assert record["detail"]["probe_photos"] == hashes and record["detail"]["fusion"] == RULE
    # One photo: recorded alike, a list of one, no fusion.
    single = search(indexed, photos[0], face="largest")
    assert single.probe_photos == hashes[:1] and single.fusion is None


def test_a_fused_candidate_is_ranked_and_scored_by_its_mean_distance_under_the_single_cut_off(
        indexed: FaceSearchService) -> None:
    name = PEOPLE[1]
    result = search(indexed, probes(name), face="largest", top_k=5)
    settings = indexed.settings
    described = [indexed.analyzer.analyse([decode_for_analysis(photo, settings).pixels],
                                          settings.mirror_probe)[0][0].embedding for photo in probes(name)]
    face = result.faces[0]
    single_cut = indexed.cut_off("search")
    # The single photo's calibration and cut-off: same target of expected strangers.
    assert face.cut_off == single_cut
    calibration = load_calibration(indexed.analyzer.embedder.name)
    rows = indexed.store.candidate_rows([c.face_id for c in face.candidates])
    assert face.candidates
    assert [c.distance for c in face.candidates] == sorted(c.distance for c in face.candidates)
    for candidate in face.candidates:
        stored = from_blob(rows[candidate.face_id]["embedding"])
        each = [float(np.linalg.norm(stored - photo)) for photo in described]
        assert candidate.distance == pytest.approx(np.mean(each), abs=1e-3)
        assert candidate.distance < single_cut.distance
        assert candidate.expected_false_matches == pytest.approx(
            calibration.false_match_probability(candidate.distance) * single_cut.faces, rel=1e-2)


def test_a_photo_without_a_face_is_refused_by_its_number(indexed: FaceSearchService) -> None:
    blank = jpeg_bytes(noise_image(320, 240))
    before = len(indexed.trail.records(AuditFilter(action="search")))
    with pytest.raises(NoFace, match="photo 2 of 3"):
        search(indexed, [probes(PEOPLE[2])[0], blank, probes(PEOPLE[2])[1]], face="largest")
    assert len(indexed.trail.records(AuditFilter(action="search"))) == before


def test_a_photo_showing_two_faces_is_refused_unless_the_largest_is_asked_for(
        indexed: FaceSearchService) -> None:
    left, right = (Image.open(io.BytesIO(probes(name)[0])) for name in PEOPLE[3:5])
    pair = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
    pair.paste(left, (0, 0))
    pair.paste(right, (left.width, 0))
    photos = [probes(PEOPLE[3])[1], jpeg_bytes(pair)]
    with pytest.raises(InvalidRequest, match="photo 2 of 2 .* shows [2-9] faces"):
        search(indexed, photos)
    assert search(indexed, photos, face="largest").probe_photos == [
        hashlib.sha256(photo).hexdigest() for photo in photos]


def test_too_many_or_too_large_probe_photos_are_refused(indexed: FaceSearchService,
                                                        tmp_path: Path) -> None:
    most = indexed.settings.max_probe_photos
    assert indexed.policy(indexed.local_operator(OPERATOR.name))["max_probe_photos"] == most == 5
    photos = [photo.read_bytes() for name in PEOPLE[:3] for photo in lfw_photos(name)[:2]][:most + 1]
    before = len(indexed.trail.records(AuditFilter(action="search")))
    with pytest.raises(InvalidRequest, match=f"1 to {most} photos"):
        search(indexed, photos)
    with pytest.raises(InvalidRequest, match="face number"):
        search(indexed, photos[:2], face=0)
    with pytest.raises(InvalidRequest, match="photo 3 of 3 .* is photo 1 again"):
        search(indexed, [photos[0], photos[1], photos[0]], face="largest")
    assert len(indexed.trail.records(AuditFilter(action="search"))) == before
    small = FaceSearchService(Settings(home=tmp_path / "data", workers=1,
                                       max_upload_bytes=sum(map(len, photos[:2])) - 1))
    try:
        with pytest.raises(InvalidRequest, match="bytes together"):
            search(small, photos[:2])
        search(small, photos[0])  # one of them alone fits
    finally:
        small.close()
