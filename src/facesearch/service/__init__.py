"""The use cases, and the single place where policy is checked and actions are audited.

The CLI and the web app call only this package. Every policy decision and audit record is
made here, in the same transaction as the change it guards, before vision, index or store
are touched. FaceSearchService gathers the use cases of each module into one object.
"""

from __future__ import annotations

from facesearch.calibration import MEANING as SCORE_MEANING
from facesearch.config import Settings
from facesearch.policy.rules import lawful_basis_in_words
from facesearch.service.base import Clock, system_clock
from facesearch.service.cases import (
    BAND_WORDS,
    LEAD_LABEL,
    LEAD_NOTICE,
    MAX_NOTE_CHARS,
    CaseReport,
    Cases,
    ProbeFace,
    SearchResult,
    readable_place,
)
from facesearch.service.crawl import Crawling, CrawlProgress, CrawlStatus
from facesearch.service.engine import DeletionReport, IngestSummary
from facesearch.service.given_out import without_server_paths
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
from facesearch.service.signin import SignIn
from facesearch.service.trail import ChainCheck
from facesearch.service.watches import Watches
from facesearch.service.words import LAWFUL_BASES, days_in_words, hours_in_words, record_in_words
from facesearch.store.audit import AuditFilter


class FaceSearchService(Cases, Identities, Jobs, Queueing, Rights, Governance, Crawling, SignIn,
                        Integrity, Models, Watches):
    """Every use case of facesearch, for the CLI and the web app alike."""

    def __init__(self, settings: Settings, clock: Clock = system_clock) -> None:
        super().__init__(settings, clock)
        self.ingest_listeners: list = []  # callables(IngestSummary), e.g. the server's metrics


def build_service(settings: Settings, clock: Clock = system_clock) -> FaceSearchService:
    return FaceSearchService(settings, clock)


__all__ = ["BAND_WORDS", "LEAD_LABEL", "LEAD_NOTICE", "MAX_NOTE_CHARS", "SCORE_MEANING", "AccessAcknowledgement", "AccessReport", "AuditFilter",
           "CrawlProgress", "CrawlStatus", "Receipt", "RetentionReport", "CaseReport", "ChainCheck", "DeletionReport",
           "FaceSearchService", "IngestSummary", "IntegrityReport", "ProbeFace", "QueuedIngest", "ReclusterReport", "ReembedProgress",
           "SearchResult", "readable_place",
           "WorkerReport", "build_service", "lawful_basis_in_words",
           "days_in_words", "hours_in_words", "record_in_words", "LAWFUL_BASES", "without_server_paths"]
