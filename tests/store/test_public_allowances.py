"""The per-client counters of anonymous requests, on SQLite and (with
FACESEARCH_TEST_POSTGRES_URL) PostgreSQL: parallel transactions taking from one allowance get no
further than its limit, a window past its time starts again, and a refusal counter reports a
window only when one opens."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from facesearch.store.metadata import MetadataStore
from facesearch.store.requests import RequestStore

AT_ONCE = 12
LIMIT = 5
NOW, LATER = "2026-01-05T09:00:00+00:00", "2026-01-05T10:00:01+00:00"
HOUR_BEFORE_LATER = "2026-01-05T09:00:01+00:00"


@pytest.fixture
def stores(database_url: str) -> Iterator[tuple[MetadataStore, RequestStore]]:
    store = MetadataStore(database_url)
    yield store, RequestStore(store.engine)
    store.close()


def test_parallel_takes_from_one_allowance_stop_at_its_limit(stores) -> None:  # noqa: ANN001
    store, requests = stores
    barrier = threading.Barrier(AT_ONCE)
    taken: list[bool] = []

    def take() -> None:
        barrier.wait()
        with store.transaction() as conn:
            taken.append(requests.take(conn, "client", "requests", "2026-01-04T09:00:00+00:00",
                                       NOW, LIMIT))

    threads = [threading.Thread(target=take) for _ in range(AT_ONCE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == [False] * (AT_ONCE - LIMIT) + [True] * LIMIT
    with store.transaction() as conn:
        requests.give_back(conn, "client", "requests")  # a failed request returns its place
        assert requests.take(conn, "client", "requests", "2026-01-04T09:00:00+00:00", NOW, LIMIT)
        assert not requests.take(conn, "client", "requests", "2026-01-04T09:00:00+00:00", NOW, LIMIT)
        # Another client, or another kind, has an allowance of its own.
        assert requests.take(conn, "other", "requests", "2026-01-04T09:00:00+00:00", NOW, LIMIT)
        assert requests.take(conn, "client", "attempts", "2026-01-05T08:00:00+00:00", NOW, LIMIT)
        # A window begun before the cut-off starts again.
        assert requests.take(conn, "client", "requests", HOUR_BEFORE_LATER, LATER, LIMIT)


def test_a_refusal_counter_reports_only_the_refusals_that_open_a_window(stores) -> None:  # noqa: ANN001
    store, requests = stores
    barrier = threading.Barrier(AT_ONCE)
    reported: list[int | None] = []

    def refuse() -> None:
        barrier.wait()
        with store.transaction() as conn:
            reported.append(requests.count_refusal(conn, "client", "refused:x",
                                                   "2026-01-05T08:00:00+00:00", NOW))

    threads = [threading.Thread(target=refuse) for _ in range(AT_ONCE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(reported, key=str) == [0] + [None] * (AT_ONCE - 1)  # one window opened
    with store.transaction() as conn:
        # An hour on: a new window opens, reporting how many the last one counted.
        assert requests.count_refusal(conn, "client", "refused:x", HOUR_BEFORE_LATER, LATER) == AT_ONCE
        assert requests.count_refusal(conn, "client", "refused:x", HOUR_BEFORE_LATER, LATER) is None
        # Retention drops counters whose window is over, with the refusals left unreported.
        assert requests.forget_clients(conn, LATER) == (0, 0)
        assert requests.forget_clients(conn, "2026-01-07T10:00:01+00:00") == (1, 1)
