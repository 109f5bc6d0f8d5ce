"""Retention, jurisdiction restrictions and the record of processing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from facesearch.errors import InvalidRequest, NotFound, PolicyRefused
from facesearch.evaluation.reports import latest_report
from facesearch.policy.roles import OPERATOR
from facesearch.policy.rules import normalise_jurisdiction
from facesearch.service.engine import DeletionReport, Engine
from facesearch.types import Actor


@dataclass
class RetentionReport:
    images: int = 0  # past their source's retention
    faces: int = 0
    # Other places images were seen, past the retention of the source that saw them there
    # (the image itself kept by its own source's).
    sightings: int = 0
    probes: int = 0  # kept probe photos past probe retention
    probe_crops: int = 0  # probe face crops past probe retention (kept for every search)
    searches: int = 0  # searches and their candidate lists past candidate retention
    watch_matches: int = 0  # case watches' matches past candidate retention
    audit_records: int = 0
    sessions: int = 0  # expired web sessions
    request_contacts: int = 0  # contacts (and unused templates) of access requests answered long ago
    public_counters: int = 0  # per-client counters of public requests, a day past their window
    public_refusals: int = 0  # refusals those counted that no audit record reported one by one


class Governance(Engine):
    def run_retention(self, actor: Actor) -> RetentionReport:
        """Destroy exactly what is past its date, by the service's clock: images (with faces,
        vectors and crops) past their source's retention, sightings past the retention of the
        source that saw them, kept probes and probe face crops, searches with their
        candidate lists, audit records (the chain is anchored past them), expired sessions, and
        the contact details of access requests answered over access_report_hours ago (long
        enough to send the link or the refusal; the link has expired by then), with the
        template of a link that was never used, and the per-client counters of public requests
        whose windows ended over a day ago (the refusals they counted beyond each window's
        audited first one are summed in this run's audit record)."""
        self.authorise(actor, "retention.run", "retention")
        now, s = self.clock(), self.settings

        def cut(**ago: int) -> str:
            return (now - timedelta(**ago)).isoformat(timespec="seconds")

        report = RetentionReport()
        with self._writer():
            expired = self.store.expired_images(now)
            with self.store.transaction() as conn:
                report.images, report.faces = self.store.delete_images_where(conn, image_ids=expired)
                report.sightings = self.store.delete_expired_sightings(conn, now)
                for path in self.cases.old_probe_paths(conn, cut(days=s.probe_retention_days)):
                    Path(path).unlink(missing_ok=True)
                    report.probes += 1
                report.probe_crops = self.cases.delete_probe_crops_before(
                    conn, cut(days=s.probe_retention_days))
                report.searches = self.cases.delete_searches_before(conn, cut(days=s.candidate_retention_days))
                report.watch_matches = self.watches.delete_matches_before(
                    conn, cut(days=s.candidate_retention_days))
                report.sessions = self.accounts.end_expired_sessions(conn, self.now())
                report.request_contacts = self.requests.forget_contacts(conn, cut(hours=s.access_report_hours))
                report.public_counters, report.public_refusals = self.requests.forget_clients(
                    conn, cut(days=2))
                report.audit_records = self.trail.prune_before(conn, cut(days=s.audit_retention_days))
                self._audit(conn, actor, "retention", report.__dict__)
        return report

    def purge_excluded(self, actor: Actor) -> dict[str, DeletionReport]:
        """Purge every jurisdiction in FACESEARCH_EXCLUDED_JURISDICTIONS (each audited as a
        `purge`): ingest refuses them from now on, and this removes what came before."""
        self.authorise(actor, "delete", "purge")
        if not self.settings.excluded_jurisdictions:
            raise InvalidRequest("no jurisdiction is excluded: set FACESEARCH_EXCLUDED_JURISDICTIONS")
        return {code: self.purge_jurisdiction(actor, code)
                for code in self.settings.excluded_jurisdictions}

    def check_ready_to_serve(self) -> None:
        """Refuse to serve in production mode before an impact assessment is on record."""
        if self.settings.mode == "production" and not self.settings.dpia_reference.strip():
            raise PolicyRefused("production mode needs the reference of a data-protection impact "
                                "assessment: set FACESEARCH_DPIA_REFERENCE")

    def restrict_organisation(self, actor: Actor, organisation: str, jurisdictions: list[str]) -> list[str]:
        """Limit an organisation's searches to faces collected under these jurisdictions
        (an empty list lifts the restriction)."""
        self.authorise(actor, "organisations.manage", "organisation.restrict")
        found = self.accounts.organisation(organisation)
        # An admin restricts their own organisation; another is refused like a missing one.
        if found is None or (actor.role != OPERATOR and found.id != actor.organisation_id):
            self._audit_alone(actor, "organisation.restrict.refused", {
                "reason": "no such organisation of the actor's", "organisation": organisation[:200]})
            raise NotFound(f"you have no organisation {organisation!r}")
        codes = sorted({normalise_jurisdiction(code) for code in jurisdictions if code.strip()})
        if "unknown" in codes:
            raise InvalidRequest("restrict to ISO 3166-1 codes, not 'unknown'")
        with self.store.transaction() as conn:
            self.accounts.set_jurisdictions(conn, found.id, codes)
            self._audit(conn, actor, "organisation.restrict", {"organisation": organisation,
                                                               "jurisdictions": codes})
        return codes

    def record_of_processing(self, actor: Actor) -> dict:
        """The record of processing activities (GDPR Art. 30), from the settings in force and
        live statistics."""
        self.authorise(actor, "records.read", "records.read")
        s = self.settings
        counts = self.store.counts()
        sources = self.store.sources()
        return {
            "controller": s.controller,
            "dpia_reference": s.dpia_reference or "none recorded",
            "mode": s.mode,
            "purposes": s.search_purposes,
            "data_subjects": "people whose faces appear in images from the registered sources; "
                             "people who make opt-out or access requests; the system's users",
            "categories_of_data": [
                "face crops (150 px, aligned) and 128-number face descriptors (biometric data)",
                "image provenance: location, page URL, source, jurisdiction, collection date",
                "suppression templates of people who opted out (descriptors only, no photos)",
                "user accounts, cases, searches (probe hashes, not probes unless a case keeps them) "
                "and candidate lists",
                "audit records (who, when, what, from which address)",
            ],
            "recipients": [o.name for o in self.accounts.organisations()],
            "sources": [{"name": x.name, "display_name": x.display_name, "lawful_basis": x.lawful_basis,
                         "jurisdiction": x.jurisdiction, "retention_days": x.retention_days}
                        for x in sources],
            "retention": {"images": "per source (above)", "kept_probes_days": s.probe_retention_days,
                          "searches_and_candidates_days": s.candidate_retention_days,
                          "audit_records_days": s.audit_retention_days,
                          "sessions_hours": s.session_hours},
            "excluded_jurisdictions": s.excluded_jurisdictions,
            # Art. 35(7)(c) risks to the rights of data subjects: error rates by group.
            "demographic_evaluation": latest_report(s.home, "demographics", self.live_embedder) or (
                f"none recorded for embedder {self.live_embedder}: run `facesearch eval demographics`"),
            "security_measures": [
                "accounts with roles; investigators approved by a supervisor of their organisation",
                "argon2id passwords, hashed API keys, session cookies with CSRF tokens",
                "every search tied to a user, a case and a purpose; rate limits per user and organisation",
                "two-person confirmation of candidates",
                "hash-chained audit trail of every access and refusal",
                "deletion of vectors, crops and metadata together, journalled against crashes",
                "server bound to loopback by default; security headers; upload limits",
            ],
            "statistics": {**counts, "faces_by_jurisdiction": self.store.faces_by_jurisdiction(),
                           # Hidden (awaiting their second photo) or erased; not reversed ones.
                           "opt_outs": sum(r.status in ("hidden", "review", "done")
                                           for r in self.requests.all("erasure")),
                           "access_requests": len(self.requests.all("access"))},
            # Case watches follow people into new collections: who holds them, until when.
            "case_watches": self.watches.active_by_organisation(self.now()),
            "generated_at": self.now(),
        }
