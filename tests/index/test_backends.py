"""The vector-backend suite: FAISS (in this process) and Milvus (a real 2.3.5 server on
loopback, tests/milvus_server.py) answer the same way on one small gallery, checked against
the NumPy exact scan. Random unit vectors: these are correctness tests, not benchmarks."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from pymilvus import utility

from facesearch.index.base import VectorIndex
from facesearch.index.exact import NumpyExactIndex
from facesearch.index.faiss_index import FaissIndex
from facesearch.index.milvus_index import MilvusIndex

DIM = 128
GALLERY = 2000
IDS = 7 + 3 * np.arange(GALLERY, dtype=np.int64)  # gaps, as after deletions
CODES = np.array(["GB", "FR", "US", "DE"])
JURISDICTIONS = CODES[np.random.default_rng(1).choice(4, GALLERY, p=[0.55, 0.2, 0.15, 0.1])]
STRANGER_ID = 10**6  # a face id the store does not hold
ATTRIBUTES = {int(i): (str(j), "press" if i % 2 else "archive") for i, j in zip(IDS, JURISDICTIONS)}


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


RNG = np.random.default_rng(0)
VECTORS = unit(RNG.normal(size=(GALLERY, DIM)))
# Probes near 20 gallery faces (a true mate among close strangers) and 10 far from all.
QUERIES = np.vstack([unit(VECTORS[::100] + 0.05 * RNG.normal(size=(20, DIM))),
                     unit(RNG.normal(size=(10, DIM)))])


def attributes(ids: np.ndarray) -> dict[int, tuple[str, str]]:
    return {int(i): ATTRIBUTES[int(i)] for i in ids if int(i) in ATTRIBUTES}


def reference(keep: np.ndarray | None = None) -> NumpyExactIndex:
    exact = NumpyExactIndex(DIM)
    keep = np.ones(GALLERY, bool) if keep is None else keep
    exact.add(IDS[keep], VECTORS[keep])
    return exact


@pytest.fixture(scope="module")
def milvus_index(request: pytest.FixtureRequest) -> Iterator[Callable[[str], MilvusIndex]]:
    """milvus_index(kind) -> an empty Milvus index of that kind ("flat" or "hnsw"). One
    collection a kind serves the whole module, emptied for each test: creating and loading
    one takes about 3 s."""
    made: dict[str, MilvusIndex] = {}

    def get(kind: str) -> MilvusIndex:
        if kind not in made:
            made[kind] = MilvusIndex(request.getfixturevalue("milvus_uri"),
                                     f"test_{uuid.uuid4().hex}", DIM, attributes=attributes,
                                     index_type=kind.upper(), ef_search=160)
        index = made[kind]
        index.remove(np.append(IDS, STRANGER_ID))
        index.watermark = 0
        assert len(index) == 0
        return index

    yield get
    for index in made.values():
        utility.drop_collection(index.name, using=index.alias)
        index.close()


@pytest.fixture(params=["faiss", "milvus"])
def make_index(request: pytest.FixtureRequest) -> Callable[[str], VectorIndex]:
    """make_index(kind) -> an empty index of that kind ("flat" or "hnsw") on the backend."""
    if request.param == "milvus":
        return request.getfixturevalue("milvus_index")
    return lambda kind: FaissIndex(DIM, exact_max=10**9 if kind == "flat" else 0, ef_search=160)


def reopen(index: VectorIndex, directory: Path) -> VectorIndex:
    """The same index as a new process would open it."""
    index.save(directory)
    if isinstance(index, FaissIndex):
        return FaissIndex.load(directory, DIM, index.exact_max, index.ef_search)
    assert isinstance(index, MilvusIndex)
    return MilvusIndex(index.uri, index.name, DIM, attributes=attributes)


def assert_same(found: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(found[1], expected[1])
    np.testing.assert_allclose(found[0], expected[0], atol=1e-4)


def test_exact_search_returns_the_reference_ids_and_euclidean_distances(make_index) -> None:
    index = make_index("flat")
    index.add(IDS, VECTORS)
    assert len(index) == GALLERY
    assert_same(index.search(QUERIES, 10), reference().search(QUERIES, 10))


def test_hnsw_search_finds_the_exact_neighbours_of_a_small_gallery(make_index) -> None:
    index = make_index("hnsw")
    index.add(IDS, VECTORS)
    assert index.kind.endswith("hnsw")
    if isinstance(index, MilvusIndex):
        # Seal the segments, build their graphs and load them, so that the search runs on them
        # rather than on the scan of growing segments. Only GB's partition (1,102 faces) holds
        # enough for a graph: Milvus scans segments under 1,024 rows.
        index.collection.flush()
        utility.wait_for_index_building_complete(index.name, using=index.alias)
        index.collection.release()
        index.collection.load()
        segments = utility.get_query_segment_info(index.name, using=index.alias)
        assert sum(s.num_rows for s in segments if s.index_name) == (JURISDICTIONS == "GB").sum()
    exact = reference().search(QUERIES, 10)
    assert_same(index.search(QUERIES, 10), exact)
    index.ef_search = 10  # a narrow search misses some: a graph answered, not a scan
    assert (index.search(QUERIES, 10)[1] == exact[1]).mean() < 0.95


def test_removed_ids_are_never_returned_and_missing_slots_are_padded(make_index) -> None:
    index = make_index("flat")
    empty = index.search(QUERIES[:2], 3)
    assert (empty[1] == -1).all() and np.isinf(empty[0]).all()
    index.add(IDS[:5], VECTORS[:5])  # fewer faces than asked for: the rest is padded
    distances, ids = index.search(QUERIES[:1], 8)
    assert sorted(ids[0, :5]) == sorted(IDS[:5]) and (ids[0, 5:] == -1).all()
    assert (np.diff(distances[0, :5]) >= 0).all() and np.isinf(distances[0, 5:]).all()
    index.add(IDS[5:], VECTORS[5:])
    mates = index.search(QUERIES[:20], 1)[1][:, 0]
    assert set(mates) <= set(IDS[::100])
    gone = np.unique(np.concatenate([mates, IDS[1:50]]))
    assert index.remove(np.concatenate([gone, [1, 2, 10**9]])) == len(gone)  # absent: not counted
    assert index.remove(mates) == 0
    assert len(index) == GALLERY - len(gone)
    keep = ~np.isin(IDS, gone)
    distances, ids = index.search(QUERIES, 10)
    assert not np.isin(ids, gone).any()
    assert_same((distances, ids), reference(keep).search(QUERIES, 10))
    # A removed face that comes back (ids are never reused by the store, but the index allows it).
    index.add(IDS[:1], VECTORS[:1])
    assert index.search(VECTORS[:1], 1)[1][0, 0] == IDS[0]


def test_the_vectors_and_the_watermark_survive_reopening(make_index, tmp_path: Path) -> None:
    index = make_index("flat")
    index.add(IDS, VECTORS)
    index.remove(IDS[:10])
    index.watermark = int(IDS[-1])  # as the service sets it after adding
    again = reopen(index, tmp_path)
    try:
        assert again.watermark == int(IDS[-1])
        assert len(again) == GALLERY - 10
        assert_same(again.search(QUERIES, 5), index.search(QUERIES, 5))
    finally:
        if isinstance(again, MilvusIndex):
            again.close()


# Jurisdictions: Milvus holds each face's jurisdiction (the partition key) and source. FAISS
# holds vectors only; the service filters its results by jurisdiction after the query.

@pytest.fixture
def milvus_gallery(milvus_index: Callable[[str], MilvusIndex]) -> MilvusIndex:
    index = milvus_index("flat")
    index.add(IDS, VECTORS)
    return index


def test_milvus_searches_only_the_jurisdictions_asked_for(milvus_gallery: MilvusIndex) -> None:
    for wanted in ({"FR"}, {"FR", "DE"}):
        keep = np.isin(JURISDICTIONS, list(wanted))
        found = milvus_gallery.search(QUERIES, 10, jurisdictions=wanted)
        assert {ATTRIBUTES[int(i)][0] for i in found[1].ravel()} == wanted
        assert_same(found, reference(keep).search(QUERIES, 10))
    stored = milvus_gallery.collection.query(f"id in {IDS[:4].tolist()}",
                                             output_fields=["jurisdiction", "source"])
    assert {r["id"]: (r["jurisdiction"], r["source"]) for r in stored} == {
        int(i): ATTRIBUTES[int(i)] for i in IDS[:4]}
    with pytest.raises(ValueError, match="not jurisdiction codes"):
        milvus_gallery.search(QUERIES, 1, jurisdictions={'GB"] or id > ["0'})


def test_milvus_purges_exactly_one_jurisdiction(milvus_gallery: MilvusIndex) -> None:
    purged = int((JURISDICTIONS == "GB").sum())
    assert milvus_gallery.purge("GB") == purged
    assert len(milvus_gallery) == GALLERY - purged
    found = milvus_gallery.search(QUERIES, 20)[1]
    assert {ATTRIBUTES[int(i)][0] for i in found.ravel()} == {"FR", "US", "DE"}
    assert_same(milvus_gallery.search(QUERIES, 20), reference(JURISDICTIONS != "GB").search(QUERIES, 20))
    assert milvus_gallery.purge("GB") == 0


def test_milvus_adds_only_faces_the_store_holds_and_it_does_not(milvus_gallery: MilvusIndex) -> None:
    stranger = unit(np.random.default_rng(2).normal(size=(1, DIM)))
    milvus_gallery.add(np.array([STRANGER_ID]), stranger)  # no attributes: deleted meanwhile
    assert len(milvus_gallery) == GALLERY
    assert milvus_gallery.search(stranger, 1)[1][0, 0] != STRANGER_ID
    # Two processes catching up on the same faces: each face is held once.
    milvus_gallery.add(IDS[-100:], VECTORS[-100:])
    assert len(milvus_gallery) == GALLERY
    again = MilvusIndex(milvus_gallery.uri, milvus_gallery.name, DIM, attributes=attributes)
    try:
        again.add(IDS[-100:], VECTORS[-100:])
        assert len(again) == GALLERY
    finally:
        again.close()
