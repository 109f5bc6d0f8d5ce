"""FaissIndex against the NumPy linear scan, on clustered vectors shaped like face descriptors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facesearch.index.exact import NumpyExactIndex
from facesearch.index.faiss_index import FaissIndex

DIM = 128


def clustered(n: int, centres: int, seed: int) -> np.ndarray:
    """n vectors around `centres` people: ~0.5 apart within a person, ~1.6 between people."""
    rng = np.random.default_rng(seed)
    people = np.random.default_rng(seed + 1000).normal(0, 0.1, (centres, DIM))
    return (people[rng.integers(0, centres, n)] + rng.normal(0, 0.03, (n, DIM))).astype(np.float32)


def both(ids: np.ndarray, vectors: np.ndarray, **faiss_args) -> tuple[FaissIndex, NumpyExactIndex]:
    fast, exact = FaissIndex(DIM, **faiss_args), NumpyExactIndex(DIM)
    fast.add(ids, vectors)
    exact.add(ids, vectors)
    return fast, exact


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def flat_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vectors = clustered(3100, centres=300, seed=3)
    ids = np.arange(3000, dtype=np.int64) * 7 + 11  # sparse, not positions
    return ids, vectors[:3000], vectors[3000:]  # the last 100 are held-out queries


@pytest.fixture(scope="module")
def hnsw_pair() -> tuple[FaissIndex, NumpyExactIndex, np.ndarray]:
    """20000 vectors of 1000 people (20 each) added to an index that switches to HNSW at 2000.

    With ef_search=32 (the default setting) recall@10 is 1.0 here. With only ~10 vectors per
    person the neighbours past a person's own are effectively random points, and ef_search=32
    then gives about 0.97 recall@10 (64 gives 0.99); those far neighbours are well beyond
    any match threshold.
    """
    vectors = clustered(20300, centres=1000, seed=5)
    ids = np.arange(1, 20001, dtype=np.int64) * 3
    fast, exact = both(ids, vectors[:20000], exact_max=2000, ef_search=32)
    return fast, exact, vectors[20000:]


# Flat ----------------------------------------------------------------------------------------


def test_flat_search_gives_the_same_ids_and_distances_as_numpy(flat_data):
    ids, vectors, queries = flat_data
    fast, exact = both(ids, vectors)
    assert fast.kind == "flat" and len(fast) == 3000
    fast_d, fast_i = fast.search(queries, 10)
    exact_d, exact_i = exact.search(queries, 10)
    assert fast_i.dtype == np.int64
    np.testing.assert_array_equal(fast_i, exact_i)
    np.testing.assert_allclose(fast_d, exact_d, atol=1e-4)


def test_flat_search_of_a_single_one_dimensional_query_matches_numpy(flat_data):
    ids, vectors, queries = flat_data
    fast, exact = both(ids, vectors)
    fast_d, fast_i = fast.search(queries[0], 5)
    exact_d, exact_i = exact.search(queries[0], 5)
    assert fast_i.shape == (1, 5)
    np.testing.assert_array_equal(fast_i, exact_i)
    np.testing.assert_allclose(fast_d, exact_d, atol=1e-4)


def test_asking_for_more_neighbours_than_held_pads_with_minus_one_and_infinity(flat_data):
    ids, vectors, queries = flat_data
    fast, exact = both(ids[:4], vectors[:4])
    fast_d, fast_i = fast.search(queries[:3], 6)
    exact_d, exact_i = exact.search(queries[:3], 6)
    np.testing.assert_array_equal(fast_i, exact_i)
    assert (fast_i[:, 4:] == -1).all() and np.isinf(fast_d[:, 4:]).all()
    np.testing.assert_allclose(fast_d[:, :4], exact_d[:, :4], atol=1e-4)


def test_an_empty_index_finds_nothing():
    index = FaissIndex(DIM)
    distances, ids = index.search(np.zeros((2, DIM), np.float32), 3)
    assert ids.shape == (2, 3) and (ids == -1).all() and np.isinf(distances).all()
    assert index.remove(np.array([1, 2])) == 0


# HNSW -----------------------------------------------------------------------------------------


def test_adding_past_exact_max_upgrades_to_hnsw(hnsw_pair):
    fast, exact, _ = hnsw_pair
    assert fast.kind == "hnsw"
    assert len(fast) == len(exact) == 20000


def test_hnsw_recall_at_10_against_numpy_is_at_least_0_99(hnsw_pair):
    fast, exact, queries = hnsw_pair
    fast_d, fast_i = fast.search(queries, 10)
    _, exact_i = exact.search(queries, 10)
    assert recall_at(fast_i, exact_i) >= 0.99
    assert (np.diff(fast_d, axis=1) >= 0).all()  # nearest first


def test_hnsw_all_vectors_returns_what_was_added(hnsw_pair):
    fast, exact, _ = hnsw_pair
    ids, vectors = fast.all_vectors()
    order = np.argsort(ids)
    expected = np.argsort(exact.ids)
    np.testing.assert_array_equal(ids[order], exact.ids[expected])
    np.testing.assert_array_equal(vectors[order], exact.vectors[expected])


def small_hnsw(seed: int = 9) -> tuple[FaissIndex, NumpyExactIndex, np.ndarray]:
    """A small index pushed into HNSW mode (3000 vectors, exact_max 500), with its data."""
    vectors = clustered(3000, centres=150, seed=seed)
    ids = np.arange(3000, dtype=np.int64) + 100
    fast, exact = both(ids, vectors, exact_max=500, ef_search=64)
    assert fast.kind == "hnsw"
    return fast, exact, vectors


# Removal -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["flat", "hnsw"])
def test_removed_ids_never_come_back_from_search(mode, flat_data):
    if mode == "flat":
        ids, vectors, _ = flat_data
        fast, _exact = both(ids, vectors)
    else:
        fast, _exact, vectors = small_hnsw()
        ids = np.arange(3000, dtype=np.int64) + 100
    assert fast.kind == mode
    gone = ids[::5]
    assert fast.remove(gone) == len(gone)
    assert len(fast) == len(ids) - len(gone)
    assert fast.remove(gone) == 0  # already gone
    # Search with the removed vectors themselves: their ids must not appear at any rank.
    _, found = fast.search(vectors[::5], 20)
    assert not np.isin(found, gone).any()
    held, _ = fast.all_vectors()
    assert not np.isin(held, gone).any() and len(held) == len(fast)


def test_removing_unknown_ids_changes_nothing(flat_data):
    ids, vectors, _ = flat_data
    fast, _ = both(ids[:50], vectors[:50])
    assert fast.remove(np.array([-5, 10**9], dtype=np.int64)) == 0
    assert len(fast) == 50


@pytest.mark.parametrize("mode", ["flat", "hnsw"])
def test_removing_then_re_adding_an_id_replaces_its_vector(mode, flat_data):
    if mode == "flat":
        ids, vectors, _ = flat_data
        fast, _ = both(ids, vectors)
    else:
        fast, _, vectors = small_hnsw()
        ids = np.arange(3000, dtype=np.int64) + 100
    size = len(fast)
    target = int(ids[42])
    moved = vectors[42] + 0.2  # far from where id 42 was (about 2.3 away)
    assert fast.remove(np.array([target])) == 1
    fast.add(np.array([target]), moved[None])
    assert len(fast) == size
    distances, found = fast.search(moved, 3)
    assert target in found[0] and distances[0][0] < 1e-3
    _, found = fast.search(vectors[42], 50)
    assert int((found[0] == target).sum()) == 0  # the old vector is gone
    held, _ = fast.all_vectors()
    assert int((held == target).sum()) == 1


# Persistence and reconstruction ------------------------------------------------------------


def test_flat_all_vectors_returns_what_was_added(flat_data):
    ids, vectors, _ = flat_data
    fast, _ = both(ids, vectors)
    held_ids, held = fast.all_vectors()
    np.testing.assert_array_equal(held_ids, ids)
    np.testing.assert_array_equal(held, vectors)


@pytest.mark.parametrize("mode", ["flat", "hnsw"])
def test_save_and_load_round_trip_gives_identical_results_and_watermark(mode, tmp_path: Path,
                                                                        flat_data):
    if mode == "flat":
        ids, vectors, queries = flat_data
        fast, _ = both(ids, vectors)
    else:
        fast, _, vectors = small_hnsw()
        queries = vectors[::97] + 0.01
    fast.watermark = 123456
    before = fast.search(queries, 10)
    fast.save(tmp_path / "index")
    loaded = FaissIndex.load(tmp_path / "index", DIM, exact_max=fast.exact_max, ef_search=fast.ef_search)
    assert loaded.kind == mode
    assert loaded.watermark == 123456
    assert len(loaded) == len(fast)
    after = loaded.search(queries, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    before_ids, before_vectors = fast.all_vectors()
    after_ids, after_vectors = loaded.all_vectors()
    np.testing.assert_array_equal(after_ids, before_ids)
    np.testing.assert_array_equal(after_vectors, before_vectors)


def test_loading_a_directory_with_no_saved_index_gives_an_empty_index(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    for directory in (tmp_path / "empty", tmp_path / "missing"):
        index = FaissIndex.load(directory, DIM, exact_max=1000, ef_search=8)
        assert len(index) == 0 and index.watermark == 0 and index.kind == "flat"
        assert (index.search(np.zeros(DIM, np.float32), 2)[1] == -1).all()


def test_a_loaded_index_keeps_working_for_adds_and_removals(tmp_path: Path, flat_data):
    ids, vectors, queries = flat_data
    fast, _ = both(ids[:1000], vectors[:1000])
    fast.save(tmp_path)
    loaded = FaissIndex.load(tmp_path, DIM, exact_max=200_000, ef_search=32)
    loaded.add(ids[1000:], vectors[1000:])
    loaded.remove(ids[:10])
    exact = NumpyExactIndex(DIM)
    exact.add(ids[10:], vectors[10:])
    assert len(loaded) == len(exact)
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], exact.search(queries, 10)[1])


def test_an_erased_hnsw_vector_is_zeroed_in_memory_and_on_disk(tmp_path: Path):
    fast, _, vectors = small_hnsw()
    victim = 100 + 7  # small_hnsw numbers its ids from 100
    fast.remove(np.array([victim]))
    ids, stored = fast.all_vectors()
    assert victim not in ids.tolist()
    assert not (fast._storage() == vectors[7]).all(axis=1).any()  # no copy left in the graph
    fast.save(tmp_path)
    loaded = FaissIndex.load(tmp_path, DIM, exact_max=fast.exact_max, ef_search=fast.ef_search)
    assert loaded.erased == {victim} and len(loaded) == len(fast)
    assert victim not in loaded.search(vectors[7], 20)[1][0].tolist()
    assert vectors[7].tobytes() not in (tmp_path / "vectors.faiss").read_bytes()


def test_erasing_a_tenth_of_the_hnsw_graph_rebuilds_it_without_them():
    fast, _, vectors = small_hnsw()
    doomed = np.arange(100, 100 + len(fast) // 10 + 1)
    fast.remove(doomed)
    assert fast.erased == set()  # compacted
    assert len(fast) == 3000 - len(doomed) and fast.index.ntotal == len(fast)
