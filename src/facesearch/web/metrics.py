"""Prometheus metrics of one server process: request counts, search latency, ingest rate and
the number of faces indexed."""

from __future__ import annotations

import weakref

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from facesearch.service import FaceSearchService, IngestSummary

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def known_method(method: str) -> str:
    """A request method as a label: the client chooses it, so anything unknown is "other"
    (each new label value is a new time series, kept for the life of the process)."""
    return method if method in METHODS else "other"


class Metrics:
    def __init__(self, service: FaceSearchService) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("facesearch_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.search_seconds = Histogram(
            "facesearch_search_seconds", "Search latency, probe upload to ranked candidates",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10), registry=self.registry)
        self.ingest_images = Counter("facesearch_ingest_images", "Images processed by ingest jobs",
                                     registry=self.registry)
        self.ingest_faces = Counter("facesearch_ingest_faces", "Faces indexed by ingest jobs",
                                    registry=self.registry)
        faces = Gauge("facesearch_faces_indexed", "Faces in the index", registry=self.registry)
        faces.set_function(service.face_count)
        self._seen: dict[int, tuple[int, int]] = {}  # id(summary) -> counts already reported

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        # The route is a template ("/cases/{case_id}"), or "unmatched": never a raw path.
        self.requests.labels(known_method(method), route, str(status)).inc()

    def ingest_progress(self, summary: IngestSummary) -> None:
        if id(summary) not in self._seen:
            # Forget it with the summary, before its id can be reused by another job's.
            weakref.finalize(summary, self._seen.pop, id(summary), None)
        images, faces = self._seen.get(id(summary), (0, 0))
        self.ingest_images.inc(summary.images_seen - images)
        self.ingest_faces.inc(summary.faces_indexed - faces)
        self._seen[id(summary)] = (summary.images_seen, summary.faces_indexed)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
