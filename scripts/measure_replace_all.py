"""Times IdentityStore.replace_all (the database half of `facesearch identities recluster`)
on a throwaway SQLite file: N faces (argument, default 1,000,000) with no identity yet, given
random labels (about 2.3 faces an identity, some unassigned), every face changing.

    .venv/bin/python scripts/measure_replace_all.py 1000000
"""

import sys
import tempfile
import time

import numpy as np
from sqlalchemy import create_engine

from facesearch.store.identities import IdentityStore
from facesearch.store.schema import metadata

count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
labels = np.random.default_rng(0).integers(-1, count // 2, count)
engine = create_engine(f"sqlite:///{tempfile.mkdtemp()}/metadata.sqlite3")
metadata.create_all(engine)
with engine.begin() as conn:
    # Only the columns replace_all reads and writes, with the identity index it relies on.
    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    conn.exec_driver_sql("DROP TABLE faces")
    conn.exec_driver_sql("CREATE TABLE faces (id INTEGER PRIMARY KEY, identity_id INTEGER)")
    conn.exec_driver_sql("CREATE INDEX ix_faces_identity_id ON faces (identity_id)")
    conn.exec_driver_sql("INSERT INTO faces (id) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
                         f"SELECT x + 1 FROM c WHERE x < {count}) SELECT x FROM c")
with engine.begin() as conn:
    start = time.perf_counter()
    kept, created, deleted = IdentityStore(engine).replace_all(
        conn, np.arange(1, count + 1, dtype=np.int64), labels, np.zeros(count, np.int64),
        "2026-01-01T00:00:00+00:00")
    print(f"replace_all: {count} faces, {created} identities created: "
          f"{time.perf_counter() - start:.1f} s")
