"""Milvus: the vector index of a cluster, reached by URI through pymilvus (2.3).

One collection holds a row per face: its id (the primary key, chosen by the metadata store),
its descriptor (L2) and, as scalar fields, the jurisdiction and source it was collected under.
The jurisdiction is the partition key, so a search restricted to some jurisdictions and a
purge of one touch only their partitions. `add` reads both fields through the `attributes`
callback (the metadata store's), since the VectorIndex interface carries only vectors.

`add` skips ids the collection holds already, so that two processes catching up on the same
rows do not file a face twice. (Not an upsert: Milvus 2.3.5's upsert files rows under a
partition computed from the wrong field, milvus-io/milvus#30607, fixed after 2.3.5.)

The collection's consistency level is Session: this process's reads see its own writes,
without the Strong level's wait for the cluster's time tick (about 200 ms a read). Milvus 2.3
answers a delete with no timestamp, so pymilvus cannot wait for it at the Session level: the
first read after a delete is Strong. Another process's writes show within Milvus's bounded
staleness, and the service's filters after the query cover what an index has not caught up
with.

Milvus persists every acknowledged insert and delete in its log (the message queue) before
answering, so `save` has nothing to write: flushing would only seal small segments early.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from pymilvus import (
    Collection,
    CollectionSchema,
    DataType,
    FieldSchema,
    connections,
    utility,
)

from facesearch.index.base import VectorIndex
from facesearch.index.faiss_index import HNSW_EF_CONSTRUCTION, HNSW_M  # the same graph as FAISS

# face ids -> {face id: (jurisdiction, source)} for those that still exist
Attributes = Callable[[np.ndarray], dict[int, tuple[str, str]]]

INDEX_TYPES = ("FLAT", "HNSW", "IVF_FLAT", "IVF_SQ8", "IVF_PQ")
IVF_LISTS = 1024  # inverted lists per segment (a sealed segment holds up to about 1M faces)
IVF_PROBES = 64  # a sixteenth of the lists, the compressed FAISS index's rule
PQ_CODE_BYTES = 16  # as the compressed FAISS index: 16 sub-quantizers of 8 bits
BATCH = 10_000  # rows per request: well under the proxy's 64 MiB message limit
CODE = re.compile(r"[A-Za-z_]{1,16}")  # jurisdiction codes, checked before they enter an expr


class MilvusIndex(VectorIndex):
    """A Milvus collection of face descriptors, created on first use."""

    def __init__(self, uri: str, collection: str, dimension: int, *, attributes: Attributes,
                 index_type: str = "HNSW", ef_search: int = 64, token: str = "") -> None:
        if index_type not in INDEX_TYPES:
            raise ValueError(f"Milvus index type {index_type!r} is not one of {INDEX_TYPES}")
        self.uri, self.name, self.dimension = uri, collection, dimension
        self.attributes, self.ef_search = attributes, ef_search
        self.index_type = index_type
        self.alias = f"facesearch-{id(self)}"
        self._deleted = False  # since the last read (see the module doc)
        connections.connect(self.alias, uri=uri, token=token)
        self.collection = self._open()
        self.watermark = self._highest_id()  # the highest face id this index holds

    @property
    def kind(self) -> str:
        return f"milvus-{self.index_type.lower()}"

    # The collection ---------------------------------------------------------------------------

    def _open(self) -> Collection:
        """The collection, created with its index if missing, loaded for search. An existing
        collection keeps the index it was built with until `clear` (reindex) rebuilds it."""
        if utility.has_collection(self.name, using=self.alias):
            collection = Collection(self.name, using=self.alias)
            if collection.indexes:
                self.index_type = collection.indexes[0].params["index_type"]
        else:
            schema = CollectionSchema([
                FieldSchema("id", DataType.INT64, is_primary=True, auto_id=False),
                FieldSchema("vector", DataType.FLOAT_VECTOR, dim=self.dimension),
                FieldSchema("jurisdiction", DataType.VARCHAR, max_length=16, is_partition_key=True),
                FieldSchema("source", DataType.VARCHAR, max_length=256),
            ], description="facesearch face descriptors")
            collection = Collection(self.name, schema, using=self.alias, consistency_level="Session")
        if not collection.indexes:
            collection.create_index("vector", {"index_type": self.index_type, "metric_type": "L2",
                                               "params": self._build_params()})
        collection.load()
        return collection

    def _build_params(self) -> dict:
        if self.index_type == "HNSW":
            return {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
        if self.index_type == "IVF_PQ":
            return {"nlist": IVF_LISTS, "m": PQ_CODE_BYTES, "nbits": 8}
        return {"nlist": IVF_LISTS} if self.index_type.startswith("IVF") else {}

    def _search_params(self, k: int) -> dict:
        if self.index_type == "HNSW":
            return {"ef": max(self.ef_search, k)}
        return {"nprobe": IVF_PROBES} if self.index_type.startswith("IVF") else {}

    def clear(self, index_type: str | None = None) -> None:
        """Drop the collection and create it empty again (with index_type, if given)."""
        if index_type is not None:
            self.index_type = index_type
        utility.drop_collection(self.name, using=self.alias)
        self.collection = self._open()
        self.watermark = 0

    def close(self) -> None:
        connections.disconnect(self.alias)

    def _consistency(self, strong: bool = False) -> dict:
        """Session, but Strong when asked or for the first read after a delete."""
        strong, self._deleted = strong or self._deleted, False
        return {"consistency_level": "Strong"} if strong else {}

    def _exists(self, expr: str, strong: bool = False) -> bool:
        return bool(self.collection.query(expr, output_fields=["id"], limit=1,
                                          **self._consistency(strong)))

    def _held(self, ids: list[int]) -> list[int]:
        """Those of ids (up to BATCH) that the collection holds."""
        return [r["id"] for r in self.collection.query(f"id in {ids}", output_fields=["id"],
                                                       **self._consistency())]

    def _delete(self, expr: str) -> None:
        self.collection.delete(expr)
        self._deleted = True

    def _highest_id(self) -> int:
        """The highest id held, 0 if none: Milvus 2.3 has no max(), so an exponential then a
        binary search on `id >= x`, about 2 log2(id) queries of a few ms. The first is Strong,
        so that all of them see what other processes wrote before it."""
        if not self._exists("id >= 1", strong=True):
            return 0
        low = 1  # held: some id >= low; and none >= high
        high = next(2 ** p for p in itertools.count(1) if not self._exists(f"id >= {2 ** p}"))
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if self._exists(f"id >= {middle}") else (low, middle)
        return low

    # VectorIndex ----------------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert the faces that still exist in the metadata store (a face deleted meanwhile
        has no jurisdiction to file it under, and must not come back) and that the collection
        does not hold yet."""
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dimension)
        for start in range(0, len(ids), BATCH):
            chunk = [int(i) for i in ids[start:start + BATCH]]
            known = self.attributes(np.array(chunk, dtype=np.int64))
            held = set(self._held(chunk))
            keep = np.array([i in known and i not in held for i in chunk], dtype=bool)
            if not keep.any():
                continue
            kept = [i for i, k in zip(chunk, keep) if k]
            self.collection.insert([kept, vectors[start:start + BATCH][keep],
                                    [known[i][0] for i in kept], [known[i][1] for i in kept]])

    def remove(self, ids: np.ndarray) -> int:
        ids = [int(i) for i in ids]
        removed = 0
        for start in range(0, len(ids), BATCH):
            held = self._held(ids[start:start + BATCH])  # Milvus counts the ids asked for
            if held:
                self._delete(f"id in {held}")
            removed += len(held)
        return removed

    def purge(self, jurisdiction: str) -> int:
        """Delete every face filed under a jurisdiction (its partition only); returns how many."""
        expr = _jurisdiction_expr([jurisdiction])
        count = self.collection.query(expr, output_fields=["count(*)"],
                                      **self._consistency())[0]["count(*)"]
        if count:
            self._delete(expr)
        return int(count)

    def search(self, queries: np.ndarray, k: int,
               jurisdictions: Iterable[str] = ()) -> tuple[np.ndarray, np.ndarray]:
        """As VectorIndex.search, restricted inside Milvus to the jurisdictions given (their
        partitions only), if any. Distances are Euclidean: Milvus's L2 gives their squares."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        distances = np.full((len(queries), k), np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        hits = self.collection.search(
            queries, "vector", {"metric_type": "L2", "params": self._search_params(k)}, limit=k,
            expr=_jurisdiction_expr(jurisdictions) if jurisdictions else None,
            **self._consistency())
        for row, found in enumerate(hits):
            n = len(found.ids)
            ids[row, :n] = found.ids
            distances[row, :n] = np.sqrt(np.maximum(np.asarray(found.distances, np.float32), 0))
        return distances, ids

    def __len__(self) -> int:
        return int(self.collection.query("", output_fields=["count(*)"],
                                         **self._consistency())[0]["count(*)"])

    def save(self, directory: Path | None = None) -> None:
        """Nothing to write: Milvus logged every write before acknowledging it (module doc)."""


def _jurisdiction_expr(codes: Iterable[str]) -> str:
    codes = sorted(set(codes))
    bad = [c for c in codes if not CODE.fullmatch(c)]
    if bad:
        raise ValueError(f"not jurisdiction codes: {bad}")
    return f"jurisdiction in {json.dumps(codes)}"
