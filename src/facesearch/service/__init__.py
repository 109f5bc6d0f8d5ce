"""The use cases, and the single place where policy is checked and actions are audited.

The CLI and the web app call only this package. Every policy decision and audit record is
made here, in the same transaction as the change it guards, before vision, index or store
are touched. FaceSearchService gathers the use cases of each module into one object.
"""

from __future__ import annotations

from facesearch.calibration import MEANING as SCORE_MEANING
from facesearch.config import Settings
from facesearch.service.accounts import Accounts
from facesearch.service.base import Clock, system_clock
from facesearch.service.cases import (
    LEAD_LABEL,
    LEAD_NOTICE,
    CaseReport,
    Cases,
    ProbeFace,
    SearchResult,
)
from facesearch.service.crawl import Crawling, CrawlProgress, CrawlStatus
from facesearch.service.engine import DeletionReport, IngestSummary
from facesearch.service.governance import Governance, RetentionReport
from facesearch.service.identities import Identities, ReclusterReport
from facesearch.service.integrity import Integrity, IntegrityReport
from facesearch.service.jobs import Jobs
from facesearch.service.models import Models, ReembedProgress
from facesearch.service.queue import QueuedIngest, Queueing, WorkerReport
from facesearch.service.rights import (
    AccessAcknowledgement,
    AccessReport,
    Receipt,
    Rights,
)
from facesearch.service.trail import ChainCheck
from facesearch.service.watches import Watches
from facesearch.store.audit import AuditFilter


class FaceSearchService(Cases, Identities, Jobs, Queueing, Rights, Governance, Crawling, Accounts,
                        Integrity, Models, Watches):
    """Every use case of facesearch, for the CLI and the web app alike."""

    def __init__(self, settings: Settings, clock: Clock = system_clock) -> None:
        super().__init__(settings, clock)
        self.ingest_listeners: list = []  # callables(IngestSummary), e.g. the server's metrics


def build_service(settings: Settings, clock: Clock = system_clock) -> FaceSearchService:
    return FaceSearchService(settings, clock)


__all__ = ["LEAD_LABEL", "LEAD_NOTICE", "SCORE_MEANING", "AccessAcknowledgement", "AccessReport", "AuditFilter",
           "CrawlProgress", "CrawlStatus", "Receipt", "RetentionReport", "CaseReport", "ChainCheck", "DeletionReport",
           "FaceSearchService", "IngestSummary", "IntegrityReport", "ProbeFace", "QueuedIngest", "ReclusterReport", "ReembedProgress",
           "SearchResult",
           "WorkerReport", "build_service"]
