"""The compressed IVF-PQ index against the NumPy exact reference: recall after re-ranking,
removal from sealed shards, sealed memory-mapped shards, and save/load."""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pytest

from facesearch.index.compressed import CompressedIndex
from facesearch.index.exact import NumpyExactIndex

DIM = 128


def identities(people: int, per_person: int, seed: int = 0) -> np.ndarray:
    """Face-like data: clusters of a few unit vectors around each identity's centre."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, DIM))
    vectors = np.repeat(centres, per_person, axis=0) + rng.normal(scale=0.5, size=(people * per_person, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return identities(6000, 5)


def build(data: np.ndarray, **options: object) -> CompressedIndex:
    lookup = {}

    def exact_vectors(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        held = np.array([i for i in ids if i in lookup], np.int64)
        return held, np.stack([lookup[i] for i in held]) if len(held) else np.zeros((0, DIM), np.float32)

    index = CompressedIndex(DIM, lists=64, probes=32, rerank=100, exact_vectors=exact_vectors,
                            **options)
    index.train(data[::3])
    ids = np.arange(1, len(data) + 1, dtype=np.int64)
    lookup.update(zip(ids.tolist(), data))
    index.add(ids, data)
    return index


def exact(data: np.ndarray) -> NumpyExactIndex:
    reference = NumpyExactIndex(DIM)
    reference.add(np.arange(1, len(data) + 1, dtype=np.int64), data)
    return reference


def mate_recall(found: np.ndarray, truth: np.ndarray, true_distances: np.ndarray,
                threshold: float = 1.0) -> float:
    """Of the exact neighbours within threshold (the same identity here, as the match
    threshold does for faces), the share found: what a face search needs."""
    mates = [(set(f), set(t[d < threshold])) for f, t, d in zip(found, truth, true_distances)]
    return sum(len(f & m) for f, m in mates) / sum(len(m) for _, m in mates)


def test_re_ranked_results_find_the_exact_neighbours_with_exact_distances(data: np.ndarray) -> None:
    index, reference = build(data), exact(data)
    queries = data[::97] + 0.01
    distances, found = index.search(queries, 10)
    true_distances, truth = reference.search(queries, 10)
    assert (true_distances < 1.0).sum() >= 4 * len(queries)  # each query has its mates
    assert mate_recall(found, truth, true_distances) >= 0.99
    same = found[:, 0] == truth[:, 0]
    np.testing.assert_allclose(distances[same, 0], true_distances[same, 0], rtol=1e-4)


def test_without_re_ranking_codes_alone_recall_less(data: np.ndarray) -> None:
    index = build(data)
    index.exact_vectors = None
    queries = data[::97] + 0.01
    true_distances, truth = exact(data).search(queries, 10)
    approx, found = index.search(queries, 10)
    exact_first = true_distances[:, 0]
    # PQ codes give approximate distances: off by more than 1% for most first neighbours,
    # which is why the short list is re-ranked before a score is shown.
    off = np.abs(approx[:, 0] - exact_first) / exact_first
    assert np.median(off) > 0.01


def test_removed_faces_leave_their_shards_at_once_sealed_ones_included(
        data: np.ndarray, tmp_path: Path) -> None:
    index = build(data, shard_size=10_000)
    index.save(tmp_path / "index")
    assert index.sealed == 3
    victims = np.array([5, 15_000, 25_001], np.int64)  # one in each sealed shard
    assert index.remove(victims) == 3
    assert index.total == len(data) - 3 and not np.isin(index.held_ids(), victims).any()
    assert not np.isin(index.search(data[[4, 14_999, 25_000]], 10)[1], victims).any()
    index.save(tmp_path / "index")
    loaded = CompressedIndex.load(tmp_path / "index", DIM, probes=32, rerank=100)
    assert not np.isin(loaded.held_ids(), victims).any() and loaded.total == len(data) - 3
    assert CompressedIndex.stray_files(tmp_path / "index") == []  # the earlier shards are gone


def test_a_removal_rewrites_only_the_shard_it_touched(data: np.ndarray, tmp_path: Path) -> None:
    index = build(data, shard_size=10_000)
    index.save(tmp_path / "index")
    files = {p.name: p.stat().st_ino for p in (tmp_path / "index" / "compressed").glob("shard-*")}
    index.remove(np.array([3], np.int64))  # in the first shard
    assert index.memory_bytes() == (10_000 - 1) * 24
    index.save(tmp_path / "index")
    after = {p.name: p.stat().st_ino for p in (tmp_path / "index" / "compressed").glob("shard-*")}
    assert sorted(after) == ["shard-00000-9999.faiss", "shard-00001-10000.faiss",
                             "shard-00002-10000.faiss"]
    assert all(after[name] == files[name] for name in after if name in files)  # untouched
    assert index.sealed == 3 and index.memory_bytes() == 0


def test_a_manifest_from_before_the_erasure_log_drops_its_tombstoned_codes(
        data: np.ndarray, tmp_path: Path) -> None:
    build(data, shard_size=10_000).save(tmp_path / "index")
    manifest_path = tmp_path / "index" / "compressed" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["erasure_seq"]
    manifest["tombstones"] = [1, 2, 20_000]
    manifest_path.write_text(json.dumps(manifest))
    loaded = CompressedIndex.load(tmp_path / "index", DIM, probes=32, rerank=100)
    assert loaded.erasure_seq == 0  # the whole erasure log is replayed
    assert not np.isin(loaded.held_ids(), [1, 2, 20_000]).any()


def test_full_shards_are_sealed_and_mapped_and_reload_to_the_same_answers(
        data: np.ndarray, tmp_path: Path) -> None:
    index = build(data, shard_size=10_000)
    assert [int(s.ntotal) for s in index.shards] == [10_000, 10_000, 10_000]
    index.remove(np.array([7, 8], np.int64))
    queries = data[::301] + 0.01
    before = index.search(queries, 5)
    index.save(tmp_path / "index")
    assert index.sealed == 3 and index.memory_bytes() == 0
    loaded = CompressedIndex.load(tmp_path / "index", DIM, probes=32, rerank=100,
                                  exact_vectors=index.exact_vectors)
    assert loaded.sealed == 3 and loaded.total == len(data) - 2
    after = loaded.search(queries, 5)
    np.testing.assert_array_equal(before[1], after[1])
    loaded.add(np.array([10**6], np.int64), data[:1])  # a new shard takes new faces
    assert len(loaded.shards) == 4 and loaded.memory_bytes() == 24


def test_a_search_over_shards_finds_what_one_shard_finds(data: np.ndarray) -> None:
    """Shards are scanned one by one, each returning part of the short list; the merged
    answer must be the one a single shard holding every face gives."""
    whole = build(data)
    sharded = CompressedIndex(DIM, lists=64, probes=32, rerank=100, shard_size=7_000,
                              exact_vectors=whole.exact_vectors)
    sharded.template, sharded.searcher = whole.template, whole.searcher  # the same lists and codebooks
    sharded.add(np.arange(1, len(data) + 1, dtype=np.int64), data)
    assert len(sharded.shards) == 5
    queries = data[::97] + 0.01
    one, many = whole.search(queries, 10), sharded.search(queries, 10)
    np.testing.assert_array_equal(one[1], many[1])
    np.testing.assert_allclose(one[0], many[0], rtol=1e-6)


def test_a_face_costs_its_code_and_id_in_memory(data: np.ndarray) -> None:
    index = build(data)
    assert index.memory_bytes() / len(data) == 16 + 8
