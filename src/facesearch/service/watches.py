"""Case watches: tell an investigator when newly collected images match a person.

An investigator asks inside an open case of their organisation, with an authorisation
reference, for a probe photo (its largest face's descriptor is kept, never the photo) or an
identity (the mean of its faces' descriptors when asked), for at most watch_max_days. A
supervisor of the organisation, not the requester, approves or refuses. An active watch is
checked in the transaction of every batch of new faces (ingest, queue workers, crawl, WARC):
each new image, of a jurisdiction the case's organisation may see, with a face within the
watch cut-off of the template is one match (for an identity watch too: the identity a face
was assigned to, which chains at the looser grouping distance, never notifies alone),
notified once per image (sha256) in the app and, where mail is configured and the
requester's username is an address, by email. The notice names the match, never the face
or its distance; erasing the face blanks the match's image and face (metadata.delete_faces).

A watch meets every face collected while it runs, so its cut-off is set by the false
notifications it may raise over that whole stream: Engine.cut_off("watch") allows
watch_false_matches strangers over a gallery's worth of new faces. A watch ends when it
expires (by the service's clock, when next checked or listed), when its case closes, when
its requester or a supervisor stops it, and at once when a suppression or opt-out covers its
person (the template within the strict cut-off of the suppression's): a stopped watch never
matches again, and a face a suppression hides is never notified.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime

import numpy as np
from sqlalchemy.engine import Connection

from facesearch.errors import FacesearchError, Forbidden, InvalidRequest, NotFound
from facesearch.policy.roles import allowed
from facesearch.policy.rules import suppressed_mask
from facesearch.service.engine import Engine
from facesearch.store.cases import Case
from facesearch.store.watches import Watch
from facesearch.types import Actor, CutOff, Face

MATCH_MAIL = """A case watch has a new match.

Watch: {watch_id}
Case: {case}
Date: {at}

Log in to facesearch to see it in the case. A match is an investigative lead for human
review, not an identification.
"""


@dataclass(frozen=True)
class Mail:
    """A match to mail once its batch has committed."""

    match_id: int
    watch_id: int
    at: str
    address: str
    case: str  # its number


class Watches(Engine):
    _watch_mailer: ThreadPoolExecutor | None = None

    # Requests and decisions ------------------------------------------------------------------

    def request_watch(self, actor: Actor, case_id: int, authorisation: str, days: int, *,
                      photo: bytes | None = None, identity_id: int | None = None,
                      note: str = "") -> Watch:
        """Ask for a watch on the person of photo (its largest face) or on an identity, in an
        open case of the actor's organisation, for days (1 to watch_max_days) from now. It
        waits (pending) for a supervisor's approval. Audited `watch.request`."""
        self.authorise(actor, "watches.request", "watch.request")
        case = self._own_case(actor, case_id, "watch.request")
        authorisation = authorisation.strip()
        if case.status != "open":
            self._refuse(actor, "watch.request", "the case is closed", case)
        if not authorisation or len(authorisation) > 200:
            self._refuse(actor, "watch.request", "a watch needs an authorisation reference "
                         "(at most 200 characters)", case)
        if not 1 <= days <= self.settings.watch_max_days:
            self._refuse(actor, "watch.request", f"a watch lasts 1 to "
                         f"{self.settings.watch_max_days} days", case)
        if (photo is None) == (identity_id is None):
            raise InvalidRequest("watch either a probe photo or an identity")
        if photo is not None:
            face = self._largest_face(photo)[0]
            template, embedder, kind = face.embedding, face.embedder, "probe"
            photos = [hashlib.sha256(photo).hexdigest()]
        else:
            # Only the faces the organisation may see describe the person: an identity with
            # none in its jurisdictions is refused like a missing one.
            organisation = self.accounts.organisation_by_id(case.organisation_id)
            descriptors = self.watches.identity_descriptors(
                identity_id, organisation.jurisdiction_set if organisation else frozenset())
            if not len(descriptors):
                raise NotFound(f"identity {identity_id} has no faces")
            mean = descriptors.mean(axis=0)
            template, embedder, kind, photos = mean / np.linalg.norm(mean), self.live_embedder, "identity", []
        if embedder != self.live_embedder:  # a re-embedding switched meanwhile
            raise FacesearchError("the gallery changed its face model meanwhile: try again")
        now = self.clock()
        with self.store.transaction() as conn:
            suppressions = self.watches.suppression_templates(embedder, conn)
            if len(suppressions) and suppressed_mask(template[None, :], suppressions,
                                                     self.cut_off("suppress").distance)[0]:
                refused = "the person is suppressed (an opt-out or the operator's suppression)"
            else:
                refused = ""
                watch_id = self.watches.add(
                    conn, template, photos, case_id=case.id, organisation_id=case.organisation_id,
                    kind=kind, identity_id=identity_id, embedder=embedder,
                    authorisation=authorisation, note=note.strip()[:1000],
                    requested_by=actor.user_id, requested_actor=actor.name,
                    requested_at=now.isoformat(timespec="seconds"),
                    expires_at=(now + timedelta(days=days)).isoformat(timespec="seconds"))
                watch = self.watches.watch(watch_id, conn)
                assert watch is not None
                self._audit(conn, actor, "watch.request", {
                    "watch_id": watch_id, "case_id": case.id, "kind": kind,
                    "identity_id": identity_id, "probe_photos": photos,
                    "authorisation": authorisation, "expires_at": watch.expires_at}, case)
        if refused:  # audited once the transaction has let the write lock go
            self._refuse(actor, "watch.request", refused + ": they cannot be watched", case)
        return watch

    def decide_watch(self, actor: Actor, watch_id: int, approve: bool, note: str = "") -> Watch:
        """A supervisor of the watch's organisation, other than its requester, approves
        (active) or refuses (refused) a pending watch. Audited `watch.approve` or
        `watch.refuse`."""
        action = "watch.approve" if approve else "watch.refuse"
        self.authorise(actor, "watches.approve", action)
        watch, case = self._own_watch(actor, watch_id, action)
        if _is_requester(actor, watch):
            self._refuse(actor, action, "a watch needs another person's approval, not its "
                         "requester's", case)
        self._end_lapsed(actor)
        with self.store.transaction() as conn:
            if not self.watches.change(conn, watch.id, ("pending",),
                                       status="active" if approve else "refused",
                                       approved_by=actor.user_id, approved_at=self.now()):
                raise InvalidRequest("only a pending watch can be approved or refused")
            self._audit(conn, actor, action, {"watch_id": watch.id, "case_id": case.id,
                                              "note": note.strip()[:1000]}, case)
            decided = self.watches.watch(watch.id, conn)
        assert decided is not None
        return decided

    def stop_watch(self, actor: Actor, watch_id: int, reason: str) -> Watch:
        """Stop a pending or active watch: its requester or a supervisor of its organisation.
        Audited `watch.stop`."""
        self.authorise(actor, "watches.stop", "watch.stop")
        watch, case = self._own_watch(actor, watch_id, "watch.stop")
        if not (_is_requester(actor, watch) or allowed(actor.role, "watches.approve")):
            self._refuse(actor, "watch.stop", "only the requester or a supervisor stops a watch", case)
        reason = reason.strip()[:1000]
        if not reason:
            raise InvalidRequest("stopping a watch needs a reason")
        with self.store.transaction() as conn:
            if not self._end_watch(conn, actor, watch, case, reason):
                raise InvalidRequest("the watch has already ended")
            stopped = self.watches.watch(watch.id, conn)
        assert stopped is not None
        return stopped

    # Listing ---------------------------------------------------------------------------------

    def case_watches(self, actor: Actor, case_id: int) -> tuple[Case, list[Watch]]:
        """A case's watches, newest first, with their matches. Audited `watch.list`."""
        self.authorise(actor, "cases.read", "watch.list")
        case = self._own_case(actor, case_id, "watch.list")
        self._end_lapsed(actor)
        found = self.watches.of_case(case.id)
        self._audit_alone(actor, "watch.list", {"case_id": case.id, "watches": len(found)}, case)
        return case, found

    def pending_watches(self, actor: Actor) -> list[tuple[Watch, str]]:
        """The organisation's watches awaiting approval, oldest first, with their case's
        number: for its supervisors."""
        self.authorise(actor, "watches.approve", "watch.pending")
        self._end_lapsed(actor)
        found = self.watches.pending(actor.organisation_id or -1)
        numbers = {w.case_id: self.cases.case(w.case_id) for w in found}
        self._audit_alone(actor, "watch.pending", {"watches": len(found)})
        return [(w, numbers[w.case_id].number) for w in found]

    def _own_watch(self, actor: Actor, watch_id: int, action: str) -> tuple[Watch, Case]:
        """The watch and its case if of the actor's organisation; another organisation's is
        refused exactly like a missing one."""
        watch = self.watches.watch(watch_id)
        case = self.cases.case(watch.case_id) if watch else None
        if watch is None or case is None or watch.organisation_id != actor.organisation_id:
            self._audit_alone(actor, f"{action}.refused", {
                "reason": "no such watch in the organisation", "watch_id": watch_id})
            raise Forbidden("you are not permitted to do this")
        return watch, case

    # Ending watches ----------------------------------------------------------------------------

    def _end_watch(self, conn: Connection, actor: Actor, watch: Watch, case: Case | None,
              reason: str) -> bool:
        """Stop a pending or active watch in conn's transaction, audited; whether it was."""
        if not self.watches.change(conn, watch.id, ("pending", "active"), status="stopped",
                                   stopped_at=self.now(), stopped_reason=reason):
            return False
        self._audit(conn, actor, "watch.stop", {"watch_id": watch.id, "case_id": watch.case_id,
                                                "reason": reason}, case)
        return True

    def _end_lapsed(self, actor: Actor, conn: Connection | None = None) -> None:
        """Mark watches past their expiry expired (audited `watch.expire`), and stop those
        whose template is by another model than the gallery's (a re-embedding switched
        since: the probe photo was not kept, so it cannot be described again), in conn's
        transaction or one of their own."""
        if conn is None:
            with self.store.transaction() as own:
                return self._end_lapsed(actor, own)
        now = self.now()
        for watch in self.watches.expired(conn, now):
            if self.watches.change(conn, watch.id, ("pending", "active"), status="expired",
                                   stopped_at=now, stopped_reason="expired"):
                self._audit(conn, actor, "watch.expire", {
                    "watch_id": watch.id, "case_id": watch.case_id,
                    "expires_at": watch.expires_at}, self.cases.case(watch.case_id, conn))
        for watch in self.watches.by_other_model(conn, self.live_embedder):
            self._end_watch(conn, actor, watch, self.cases.case(watch.case_id, conn),
                       f"the gallery's face model changed from {watch.embedder}: request it again")
        return None

    def _case_closing(self, conn: Connection, actor: Actor, case: Case) -> None:
        super()._case_closing(conn, actor, case)
        for watch in self.watches.of_open_case(conn, case.id):
            self._end_watch(conn, actor, watch, case, "case closed")

    def _add_suppression(self, conn: Connection, actor: Actor, face: Face, reason: str) -> None:
        """Also stop, in the same transaction, every pending or active watch whose template
        is within the strict cut-off of the suppressed person's: from now on they are not
        to be followed."""
        super()._add_suppression(conn, actor, face, reason)
        found, templates = self.watches.live(conn, face.embedder, ("pending", "active"))
        if not found:
            return
        strict = self.cut_off("suppress")
        covered = suppressed_mask(templates, face.embedding[None, :], strict.distance)
        for watch, hit in zip(found, covered):
            case = self.cases.case(watch.case_id, conn)
            if hit and self._end_watch(conn, actor, watch, case, f"suppression: {reason}") \
                    and watch.requested_by is not None and case is not None:
                self.watches.notify(conn, watch.requested_by,
                                    f"Watch {watch.id} in case {case.number} was stopped: its "
                                    "person opted out or was suppressed.", self.now())

    def _suppression_dropped(self, conn: Connection, actor: Actor, reason: str) -> None:
        """Resume, in the same transaction, the watches that suppression stopped (an opt-out
        reinstated) where nothing else ends them: unexpired, by the gallery's model, in an
        open case, and not covered by another suppression. Each goes back to active if it
        had been approved, else to pending; its requester is told. Audited `watch.resume`."""
        super()._suppression_dropped(conn, actor, reason)
        now = self.now()
        suppressions = self.watches.suppression_templates(self.live_embedder, conn)
        strict = self.cut_off("suppress").distance
        for watch in self.watches.stopped_for(conn, f"suppression: {reason}"):
            case = self.cases.case(watch.case_id, conn)
            if (case is None or case.status != "open" or watch.expires_at <= now
                    or watch.embedder != self.live_embedder):
                continue
            if len(suppressions) and suppressed_mask(self.watches.template(conn, watch.id)[None, :],
                                                     suppressions, strict)[0]:
                continue
            status = "active" if watch.approved_at else "pending"
            if not self.watches.change(conn, watch.id, ("stopped",), status=status,
                                       stopped_at=None, stopped_reason=None):
                continue
            self._audit(conn, actor, "watch.resume", {"watch_id": watch.id, "case_id": case.id,
                                                      "status": status, "reason": reason}, case)
            if watch.requested_by is not None:
                self.watches.notify(conn, watch.requested_by,
                                    f"Watch {watch.id} in case {case.number} resumed ({status}): "
                                    "the opt-out that stopped it was reversed.", now)

    # Checking every batch ----------------------------------------------------------------------

    def _batch_committing(self, conn: Connection, actor: Actor,
                          added: list[tuple[int, np.ndarray]]) -> None:
        """Check the batch's new faces against every active, unexpired watch: one matrix
        product of (watches x new faces). A face matches a watch within the watch cut-off of
        its template, in an image of a jurisdiction the watch's organisation may see, unless a
        suppression hides it."""
        super()._batch_committing(conn, actor, added)
        self._end_lapsed(actor, conn)
        if not added:
            return
        found, templates = self.watches.live(conn, self.live_embedder, ("active",))
        if not found:
            return
        vectors = np.stack([v for _, v in added])
        # Unit vectors: |a - b|^2 = 2 - 2 a.b
        distances = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * templates @ vectors.T))
        limit = self.cut_off("watch")
        # A suppression committed after the batch read its templates (an opt-out takes no
        # writer lock) leaves its faces stored: they are hidden, so never notified.
        suppressions = self.watches.suppression_templates(self.live_embedder, conn)
        hidden = (suppressed_mask(vectors, suppressions, self.cut_off("suppress").distance)
                  if len(suppressions) else np.zeros(len(added), bool))
        rows = self.watches.batch_faces(conn, [face_id for face_id, _ in added])
        allowed_in = self.watches.organisation_jurisdictions(conn, {w.organisation_id for w in found})
        seen = [allowed_in.get(w.organisation_id, frozenset()) for w in found]
        visible = np.array([[not codes or rows[face_id][1] in codes for face_id, _ in added]
                            for codes in seen])
        hits = (distances < limit.distance) & visible & ~hidden
        matched: dict[int, dict[str, tuple[float, int]]] = {}  # watch -> image -> nearest face
        for w, f in zip(*np.nonzero(hits)):
            face_id = added[f][0]
            images, sha256 = matched.setdefault(int(w), {}), rows[face_id][0]
            if sha256 not in images or distances[w, f] < images[sha256][0]:
                images[sha256] = (float(distances[w, f]), face_id)
        mails: list[Mail] = []
        for w, images in sorted(matched.items()):
            mails += self._record_matches(conn, actor, found[w], images, limit)
        if mails:
            if self._watch_mailer is None:
                self._watch_mailer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watch-mail")
            self._watch_mailer.submit(self._mail_matches, actor, mails)

    def _record_matches(self, conn: Connection, actor: Actor, watch: Watch,
                        best: dict[str, tuple[float, int]], limit: CutOff) -> list[Mail]:
        """Record each image's match (once per image), notify the requester in the app and
        audit `watch.match`; the mails to send once the batch has committed."""
        case = self.cases.case(watch.case_id, conn)
        assert case is not None
        address = self._watch_mail_address(watch)
        now = self.now()
        mails = []
        # The audit lock first: a stop audits before it commits, so from here none commits
        # until this batch has, and add_match's fresh read of the status holds. (Waiting on
        # the watch's row instead could deadlock with a stop waiting on this lock.)
        self.trail.lock(conn)
        for sha256, (distance, face_id) in best.items():
            match_id = self.watches.add_match(conn, watch_id=watch.id, image_sha256=sha256,
                                              face_id=face_id, distance=round(distance, 4), at=now)
            if match_id is None:
                continue  # this image (the same bytes) matched this watch before
            if watch.requested_by is not None:  # naming the match: erasing its face erases all
                self.watches.notify(conn, watch.requested_by,
                                    f"Watch {watch.id} in case {case.number}: a new image "
                                    f"matches (match {match_id}); see the case. An "
                                    "investigative lead, not an identification.", now)
            self._audit(conn, actor, "watch.match", {
                "watch_id": watch.id, "case_id": case.id, "face_id": face_id,
                "image_sha256": sha256, "distance": round(distance, 4),
                "cut_off": asdict(limit), "match_id": match_id}, case)
            if address:
                mails.append(Mail(match_id, watch.id, now, address, case.number))
        return mails

    # Mail ------------------------------------------------------------------------------------

    def _watch_mail_address(self, watch: Watch) -> str:
        """Where a watch's matches are mailed: its requester's username where it is an
        address and mail is configured (FACESEARCH_SMTP_HOST); else "" (in the app only)."""
        from facesearch.service.rights import EMAIL

        if not self.settings.smtp_host or watch.requested_by is None:
            return ""
        username = self.watches.username(watch.requested_by) or ""
        return username if EMAIL.fullmatch(username) else ""

    def _mail_matches(self, actor: Actor, mails: list[Mail]) -> None:
        """Mail each committed match (text only: the case and watch, never an image), from
        the mail thread: it waits for the batch to let the writer lock go, so the batch has
        committed (or rolled back: its matches are then not found, and nothing is mailed),
        and no batch waits on the mail server. `emailed` records each one sent; audited
        `watch.mail` without the address."""
        with self._write_lock():
            pass
        committed = self.watches.committed_matches([m.match_id for m in mails])
        s = self.settings
        for mail in mails:
            if mail.match_id not in committed:
                continue
            message = EmailMessage()
            message["From"], message["To"] = s.smtp_from, mail.address
            message["Subject"] = f"facesearch: a case watch in case {mail.case} has a new match"
            message["Date"] = format_datetime(self.clock())
            message.set_content(MATCH_MAIL.format(watch_id=mail.watch_id, case=mail.case,
                                                  at=mail.at))
            outcome = self._send_mail(message)
            if outcome["sent"]:
                self.watches.mark_emailed(mail.match_id)
            self._audit_alone(actor, "watch.mail", {"watch_id": mail.watch_id,
                                                    "match_id": mail.match_id, **outcome})

    def wait_for_watch_mail(self) -> None:
        """Send the mail already queued and stop the mail thread (the service is closing;
        tests wait here); a later match starts it again."""
        if self._watch_mailer is not None:
            self._watch_mailer.shutdown(wait=True)
            self._watch_mailer = None

    def close(self) -> None:
        self.wait_for_watch_mail()
        super().close()


def _is_requester(actor: Actor, watch: Watch) -> bool:
    """Whether actor asked for the watch: the same user, or for the CLI (no user id) the same
    local operator's name."""
    return actor.user_id == watch.requested_by and (actor.user_id is not None
                                                    or actor.name == watch.requested_actor)
