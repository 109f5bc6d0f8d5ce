"""The JSON API under /api/v1: one thin route per use case. Routes parse and shape; the
service authorises, audits and does the work."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field

from facesearch.errors import InvalidRequest
from facesearch.service import (
    LEAD_LABEL,
    MAX_NOTE_CHARS,
    AuditFilter,
    CaseReport,
    SearchResult,
    record_in_words,
    without_server_paths,
)
from facesearch.types import Actor
from facesearch.web.auth import GuardedRoute, current_actor, service_of
from facesearch.web.report import report_filename, report_pdf

router = APIRouter(prefix="/api/v1", route_class=GuardedRoute)
operations = APIRouter(route_class=GuardedRoute)
Caller = Annotated[Actor, Depends(current_actor)]
# A row id in a path: database ids are 64-bit, and a larger number is a bad request (422),
# not a database overflow (500).
RowId = Annotated[int, Path(ge=-(2**63), le=2**63 - 1)]


# Bodies ---------------------------------------------------------------------------------------

class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)
    role: Literal["admin", "supervisor", "investigator", "auditor", "dpo"]
    organisation: str = Field(min_length=1, max_length=200)


class IdentityLink(BaseModel):
    provider: str = Field(min_length=1, max_length=200)
    subject: str = Field(max_length=255, description='The provider\'s "sub" for the user; "" unlinks.')


class NewSource(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    lawful_basis: str = Field(max_length=100)
    jurisdiction: str = Field(max_length=10)
    description: str = Field(default="", max_length=2000)
    retention_days: int | None = Field(default=None, ge=1, le=36500)
    display_name: str = Field(default="", max_length=200)  # shown to people; the name if empty


class NewCase(BaseModel):
    number: str = Field(min_length=1, max_length=100)
    purpose: str = Field(max_length=200)
    offence_type: str = Field(max_length=100)  # one of FACESEARCH_OFFENCE_TYPES
    authorisation: str = Field(default="", max_length=200)
    keep_probes: bool = False


class NewMark(BaseModel):
    mark: Literal["possible", "confirmed", "rejected"]
    note: str = Field(default="", max_length=MAX_NOTE_CHARS)


class NewKey(BaseModel):
    name: str = Field(default="api key", max_length=100)


class ServerPath(BaseModel):
    source: str = Field(min_length=1, max_length=200)
    path: str = Field(min_length=1, max_length=4096)


class Purge(BaseModel):
    jurisdiction: str = Field(min_length=1, max_length=10)


# Shaping ---------------------------------------------------------------------------------------

def user_json(user) -> dict:  # noqa: ANN001 - store.accounts.User
    data = asdict(user)
    for secret in ("password_hash", "totp_secret", "totp_last_step"):
        data.pop(secret)
    return data


def search_json(result: SearchResult) -> dict:
    data = asdict(result)
    for face in data["faces"]:
        for candidate in face["candidates"]:
            candidate.pop("crop_path")  # a server path: clients fetch crop_url
            candidate["crop_url"] = f"/api/v1/faces/{candidate['face_id']}/crop"
            candidate["label"] = LEAD_LABEL
    return without_server_paths(data)


def stored_search_json(search) -> dict:  # noqa: ANN001 - store.cases.StoredSearch
    data = asdict(search)
    for candidate, stored in zip(data["candidates"], search.candidates):
        candidate["status"] = stored.status
        candidate["decision"] = stored.decision
        candidate["band"] = stored.band  # as expected_false_matches: None where not recorded
        candidate["crop_url"] = f"/api/v1/faces/{candidate['face_id']}/crop"
        candidate["label"] = LEAD_LABEL
    return without_server_paths(data)


def report_json(report: CaseReport) -> dict:
    return {"case": asdict(report.case), "organisation": report.organisation,
            "generated_at": report.generated_at, "notice": report.notice,
            "score_meaning": report.score_meaning, "counts": report.counts,
            "searches": [stored_search_json(s) for s in report.searches],
            "photos": {search_id: without_server_paths([asdict(p) for p in photos])
                       for search_id, photos in report.photos.items()}}


def read_upload(upload: UploadFile) -> bytes:
    """The uploaded bytes. Routes that take uploads are plain functions, like all the others,
    so that FastAPI runs them in its thread pool: the service's work blocks."""
    return upload.file.read()


# Account ---------------------------------------------------------------------------------------

@router.get("/me", tags=["account"])
def me(actor: Caller) -> dict:
    """Who the credentials belong to."""
    return {"username": actor.name, "role": actor.role, "organisation": actor.organisation,
            "user_id": actor.user_id}


@router.get("/me/api-keys", tags=["account"])
def list_keys(request: Request, actor: Caller) -> list[dict]:
    return [asdict(k) for k in service_of(request).api_keys(actor)]


@router.post("/me/api-keys", tags=["account"], status_code=201)
def create_key(request: Request, actor: Caller, body: NewKey) -> dict:
    """A new API key. The key is in this answer only; it is stored hashed."""
    key, secret = service_of(request).create_api_key(actor, body.name)
    return dict(asdict(key), key=secret)


@router.delete("/me/api-keys/{key_id}", tags=["account"], status_code=204)
def revoke_key(request: Request, actor: Caller, key_id: RowId) -> Response:
    service_of(request).revoke_api_key(actor, key_id)
    return Response(status_code=204)


# Users -----------------------------------------------------------------------------------------

@router.get("/users", tags=["users"])
def list_users(request: Request, actor: Caller) -> list[dict]:
    return [user_json(u) for u in service_of(request).users(actor)]


@router.post("/users", tags=["users"], status_code=201)
def create_user(request: Request, actor: Caller, body: NewUser) -> dict:
    """Admins create users of their own organisation; investigators start pending until a
    supervisor approves them. Auditors and data-protection officers (who read every
    organisation's records) are the operator's to create, on the CLI: an admin is refused (403)."""
    return user_json(service_of(request).create_user(actor, body.username, body.password,
                                                     body.role, body.organisation))


@router.post("/users/{user_id}/approve", tags=["users"])
def approve_user(request: Request, actor: Caller, user_id: RowId) -> dict:
    return user_json(service_of(request).approve_user(actor, user_id))


@router.post("/users/{user_id}/disable", tags=["users"])
def disable_user(request: Request, actor: Caller, user_id: RowId) -> dict:
    return user_json(service_of(request).disable_user(actor, user_id))


@router.post("/users/{user_id}/reset-second-factor", tags=["users"])
def reset_second_factor(request: Request, actor: Caller, user_id: RowId) -> dict:
    """Forget the user's second factor (a lost phone): they set up a new one at next log-in."""
    return user_json(service_of(request).reset_second_factor(actor, user_id))


@router.put("/users/{user_id}/identity", tags=["users"])
def link_identity(request: Request, actor: Caller, user_id: RowId, body: IdentityLink) -> dict:
    """Link the user to their account at the organisation's identity provider; they then sign
    in there only, never with a password."""
    return user_json(service_of(request).link_identity(actor, user_id, body.provider, body.subject))


# Sources, ingest, deletion -------------------------------------------------------------------------

@router.get("/sources", tags=["gallery"])
def list_sources(request: Request, actor: Caller) -> list[dict]:
    return [asdict(s) for s in service_of(request).sources(actor)]


@router.post("/sources", tags=["gallery"], status_code=201)
def add_source(request: Request, actor: Caller, body: NewSource) -> dict:
    return asdict(service_of(request).add_source(actor, body.name, body.lawful_basis,
                                                 body.jurisdiction, body.description,
                                                 body.retention_days, body.display_name))


@router.delete("/sources/{name}", tags=["gallery"])
def delete_source(request: Request, actor: Caller, name: str) -> dict:
    return asdict(service_of(request).delete(actor, source=name))


@router.post("/ingest-jobs", tags=["gallery"], status_code=202)
def ingest_uploads(request: Request, actor: Caller, source: Annotated[str, Form()],
                         files: Annotated[list[UploadFile], File()]) -> dict:
    """Queue an ingest of uploaded images; poll the job for progress."""
    uploads = [(f.filename or "image", read_upload(f)) for f in files]
    return asdict(service_of(request).start_ingest_job(actor, source, uploads=uploads))


@router.post("/ingest-jobs/server-path", tags=["gallery"], status_code=202)
def ingest_server_path(request: Request, actor: Caller, body: ServerPath) -> dict:
    """Queue an ingest of a file or folder on the server (admins)."""
    return asdict(service_of(request).start_ingest_job(actor, body.source, path=body.path))


@router.get("/ingest-jobs", tags=["gallery"])
def list_jobs(request: Request, actor: Caller) -> list[dict]:
    return [asdict(j) for j in service_of(request).ingest_jobs(actor)]


@router.get("/ingest-jobs/{job_id}", tags=["gallery"])
def get_job(request: Request, actor: Caller, job_id: RowId) -> dict:
    return asdict(service_of(request).ingest_jobs(actor, job_id)[0])


@router.delete("/images/{sha256}", tags=["gallery"])
def delete_image(request: Request, actor: Caller, sha256: str) -> dict:
    if len(sha256) != 64:
        raise InvalidRequest("give the image's sha256")
    return asdict(service_of(request).delete(actor, image=sha256.lower()))


@router.delete("/faces/{face_id}", tags=["gallery"])
def delete_face(request: Request, actor: Caller, face_id: RowId) -> dict:
    return asdict(service_of(request).delete(actor, face_id=face_id))


@router.post("/purges", tags=["gallery"])
def purge(request: Request, actor: Caller, body: Purge) -> dict:
    """Delete everything collected under a jurisdiction."""
    return asdict(service_of(request).purge_jurisdiction(actor, body.jurisdiction))


@router.post("/suppressions", tags=["gallery"])
def suppress(request: Request, actor: Caller, photo: Annotated[UploadFile, File()],
                   reason: Annotated[str, Form(min_length=1, max_length=500)]) -> dict:
    """Remove the person in the photo and keep them out of ingest and search."""
    data = read_upload(photo)
    return asdict(service_of(request).suppress(actor, data, reason))


@router.post("/reindex", tags=["gallery"])
def reindex(request: Request, actor: Caller) -> dict:
    return {"faces": service_of(request).reindex(actor)}


@router.get("/stats", tags=["gallery"])
def stats(request: Request, actor: Caller) -> dict:
    return service_of(request).stats(actor)


@router.get("/policy", tags=["gallery"])
def policy(request: Request, actor: Caller) -> dict:
    return service_of(request).policy(actor)


@router.get("/faces/{face_id}/crop", tags=["search"],
            responses={200: {"content": {"image/jpeg": {}}}})
def face_crop(request: Request, actor: Caller, face_id: RowId,
              search: Annotated[int | None, Query(ge=-(2**63), le=2**63 - 1)] = None) -> Response:
    """A face's crop: for admins, and for organisations whose candidate lists hold it.
    search: the search whose candidates are being viewed (recorded in the audit trail)."""
    return Response(service_of(request).face_crop(actor, face_id, search), media_type="image/jpeg")


@router.get("/cases/{case_id}/searches/{search_id}/probe-faces/{probe_face}/crop", tags=["search"],
            responses={200: {"content": {"image/jpeg": {}}}})
def probe_crop(request: Request, actor: Caller, case_id: RowId, search_id: RowId,
               probe_face: Annotated[int, Path(ge=0, le=1000)]) -> Response:
    """The crop of a probe face as it was searched, kept with the search."""
    return Response(service_of(request).probe_crop(actor, case_id, search_id, probe_face),
                    media_type="image/jpeg")


@router.get("/cases/{case_id}/searches/{search_id}/candidates/{candidate_id}/source-image",
            tags=["search"], responses={200: {"content": {"image/jpeg": {}}}})
def source_image(request: Request, actor: Caller, case_id: RowId, search_id: RowId,
                 candidate_id: RowId) -> Response:
    """A candidate's full source image (JPEG, reduced), read from where it was collected if
    it is still the image indexed; 404 when it is no longer available there."""
    return Response(service_of(request).source_image(actor, case_id, search_id, candidate_id),
                    media_type="image/jpeg")


# Cases, search, review ----------------------------------------------------------------------

@router.get("/cases", tags=["cases"])
def list_cases(request: Request, actor: Caller) -> list[dict]:
    """The organisation's cases, newest first, with who opened each, its searches, confirmed
    leads and last activity."""
    return [{**asdict(s.case), "opened_by_name": s.opened_by_name, "searches": s.searches,
             "confirmed_leads": s.confirmed_leads, "last_activity": s.last_activity}
            for s in service_of(request).list_cases(actor)]


@router.post("/cases", tags=["cases"], status_code=201)
def open_case(request: Request, actor: Caller, body: NewCase) -> dict:
    return asdict(service_of(request).open_case(actor, body.number, body.purpose,
                                                body.authorisation, body.keep_probes,
                                                offence_type=body.offence_type))


@router.get("/cases/{case_id}", tags=["cases"])
def get_case(request: Request, actor: Caller, case_id: RowId) -> dict:
    case, searches = service_of(request).case_searches(actor, case_id)
    return {"case": asdict(case), "searches": [stored_search_json(s) for s in searches]}


@router.post("/cases/{case_id}/close", tags=["cases"])
def close_case(request: Request, actor: Caller, case_id: RowId) -> dict:
    return asdict(service_of(request).close_case(actor, case_id))


@router.post("/probe-faces", tags=["search"])
def probe_faces(request: Request, actor: Caller, probe: Annotated[UploadFile, File()]) -> list[dict]:
    """The faces in a probe photo, largest first, to choose one to search. Nothing is kept."""
    data = read_upload(probe)
    return [asdict(f) for f in service_of(request).detect_faces(actor, data)]


@router.post("/cases/{case_id}/searches", tags=["search"], status_code=201)
def search(request: Request, actor: Caller, case_id: RowId,
           probe: Annotated[list[UploadFile], File()],
           face: Annotated[str, Form(pattern=r"^(all|largest|[0-9]{1,3})$")] = "all",
           top: Annotated[int | None, Form(ge=1, le=50)] = None) -> dict:
    """Search the gallery with a probe photo inside an open case. Several `probe` files are
    photos of one person, searched as one (one face each; face `largest`: each photo's
    largest). Candidates are investigative leads for human review, not identifications."""
    photos = [read_upload(upload) for upload in probe]
    metrics = request.app.state.metrics
    with metrics.search_seconds.time():
        result = service_of(request).search(actor, case_id, photos, top,
                                            int(face) if face.isdigit() else face)
    return search_json(result)


@router.get("/cases/{case_id}/searches/{search_id}", tags=["search"])
def get_search(request: Request, actor: Caller, case_id: RowId, search_id: RowId) -> dict:
    """A stored search, its candidates grouped by identity and photo as the gallery stands."""
    _, search, groups = service_of(request).grouped_search(actor, case_id, search_id)
    return {**stored_search_json(search), **without_server_paths(asdict(groups))}


@router.post("/candidates/{candidate_id}/marks", tags=["search"], status_code=201)
def mark(request: Request, actor: Caller, candidate_id: RowId, body: NewMark) -> dict:
    """Mark a candidate, with an optional note; "confirmed" needs another investigator's
    earlier "possible" that is still live."""
    marked = service_of(request).mark_candidate(actor, candidate_id, body.mark, body.note)
    return dict(asdict(marked), status=marked.status)


@router.post("/candidates/{candidate_id}/marks/{mark_id}/withdraw", tags=["search"])
def withdraw_mark(request: Request, actor: Caller, candidate_id: RowId, mark_id: RowId) -> dict:
    """Withdraw a mark of one's own: it stays in the record and counts for nothing."""
    marked = service_of(request).withdraw_mark(actor, candidate_id, mark_id)
    return dict(asdict(marked), status=marked.status)


@router.get("/cases/{case_id}/report", tags=["cases"])
def case_report(request: Request, actor: Caller, case_id: RowId) -> dict:
    return report_json(service_of(request).case_report(actor, case_id))


@router.get("/cases/{case_id}/report.pdf", tags=["cases"],
            responses={200: {"content": {"application/pdf": {}}}})
def case_report_pdf(request: Request, actor: Caller, case_id: RowId) -> Response:
    service = service_of(request)
    report = service.case_report(actor, case_id)
    return Response(report_pdf(report, lambda face_id: service.face_crop(actor, face_id)),
                    media_type="application/pdf", headers={
                        "Content-Disposition": f'attachment; filename="{report_filename(report)}"'})


# Audit --------------------------------------------------------------------------------------

@router.get("/audit", tags=["audit"])
def audit(request: Request, actor: Caller,
          action: Annotated[str | None, Query(max_length=64)] = None,
          user: Annotated[str | None, Query(alias="actor", max_length=200)] = None,
          organisation: Annotated[str | None, Query(max_length=200)] = None,
          case: Annotated[str | None, Query(max_length=100)] = None,
          since: Annotated[str | None, Query(max_length=32)] = None,
          until: Annotated[str | None, Query(max_length=32)] = None,
          limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
          format: Annotated[Literal["json", "csv"] | None, Query()] = None) -> Response:
    """Audit records, oldest first; format=csv or json downloads an export."""
    where = AuditFilter(actor=user, organisation=organisation, action=action, case_number=case,
                        since=since, until=until, limit=limit)
    service = service_of(request)
    if format is None:
        return Response(json.dumps(service.audit_records(actor, where)), media_type="application/json")
    text = service.export_audit(actor, where, format)
    return PlainTextResponse(text, media_type="text/csv" if format == "csv" else "application/json",
                             headers={"Content-Disposition": f'attachment; filename="audit.{format}"'})


@router.get("/audit/verify", tags=["audit"])
def audit_verify(request: Request, actor: Caller) -> dict:
    """Recompute the hash chain; names the first record that breaks it."""
    check = service_of(request).verify_audit(actor)
    return {"records": check.records, "intact": check.intact, "broken_at": check.broken_at,
            "reason": check.reason}


@operations.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
def metrics(request: Request, actor: Caller) -> Response:
    """Prometheus metrics of this server process (admins)."""
    service_of(request).authorise(actor, "metrics", "metrics.read")
    return Response(request.app.state.metrics.exposition(),
                    media_type="text/plain; version=0.0.4; charset=utf-8")


# Data-protection officer and governance ----------------------------------------------------------

class Decision(BaseModel):
    note: str = Field(default="", max_length=1000)
    # Approval: faces listed by identity-faces that are the person's, disclosed too.
    disclose: list[int] = Field(default=[], max_length=10_000)


class Extension(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)


class Jurisdictions(BaseModel):
    jurisdictions: list[Annotated[str, Field(max_length=10)]] = Field(max_length=300)


class CaseNumbers(BaseModel):
    reveal: bool


@router.get("/me/notifications", tags=["account"])
def notifications(request: Request, actor: Caller) -> list[dict]:
    """Unseen notices (such as erased candidates); they count as seen once returned."""
    return [asdict(n) for n in service_of(request).take_notifications(actor)]


@router.get("/access-requests", tags=["data protection"])
def access_requests(request: Request, actor: Caller) -> list[dict]:
    """Access requests for the data-protection officer; `overdue` marks open ones past due."""
    return [asdict(r) for r in service_of(request).access_requests(actor)]


@router.post("/access-requests/{request_id}/approve", tags=["data protection"])
def approve_access(request: Request, actor: Caller, request_id: RowId, body: Decision) -> dict:
    """Approve after verifying identity outside the system: returns the one-time report link
    to send to the person (it is not stored); absolute where FACESEARCH_PUBLIC_URL is set."""
    service = service_of(request)
    token = service.decide_access_request(actor, request_id, True, body.note, body.disclose)
    base = service.settings.public_url
    return {"report_link": f"{base}/access/report/{token}",
            "api_link": f"{base}/api/v1/public/access-reports/{token}"}


@router.get("/access-requests/{request_id}/identity-faces", tags=["data protection"])
def access_identity_faces(request: Request, actor: Caller, request_id: RowId) -> list[dict]:
    """The other faces of the requester's identities, beyond the strict cut-off: disclosed
    only if named in the approval's `disclose`."""
    return [asdict(f) for f in service_of(request).access_identity_faces(actor, request_id)]


@router.post("/access-requests/{request_id}/reject", tags=["data protection"])
def reject_access(request: Request, actor: Caller, request_id: RowId, body: Decision) -> dict:
    service_of(request).decide_access_request(actor, request_id, False, body.note)
    return {"status": "rejected"}


@router.post("/access-requests/{request_id}/extend", tags=["data protection"])
def extend_access(request: Request, actor: Caller, request_id: RowId, body: Extension) -> dict:
    """Extend the deadline once, by two months, with a reason."""
    return asdict(service_of(request).extend_access_request(actor, request_id, body.reason))


@router.get("/records-of-processing", tags=["data protection"])
def records(request: Request, actor: Caller) -> dict:
    return service_of(request).record_of_processing(actor)


@router.get("/records-of-processing.md", tags=["data protection"], response_class=PlainTextResponse)
def records_document(request: Request, actor: Caller) -> Response:
    """The record of processing as a Markdown document."""
    record = record_in_words(service_of(request).record_of_processing(actor))
    return PlainTextResponse(record_markdown(record), media_type="text/markdown", headers={
        "Content-Disposition": 'attachment; filename="record-of-processing.md"'})


@router.put("/organisations/{organisation}/jurisdictions", tags=["users"])
def restrict_organisation(request: Request, actor: Caller, organisation: str, body: Jurisdictions) -> dict:
    """Limit an organisation's searches to faces from these jurisdictions (empty: no limit)."""
    codes = service_of(request).restrict_organisation(actor, organisation, body.jurisdictions)
    return {"organisation": organisation, "jurisdictions": codes}


@router.put("/organisations/{organisation}/reveal-case-numbers", tags=["users"])
def reveal_case_numbers(request: Request, actor: Caller, organisation: str, body: CaseNumbers) -> dict:
    """Whether the access reports of people its searches returned name the organisation's
    case numbers (by default they name only the organisation and the date)."""
    service_of(request).reveal_case_numbers(actor, organisation, body.reveal)
    return {"organisation": organisation, "reveal_case_numbers": body.reveal}


@router.post("/retention", tags=["data protection"])
def run_retention(request: Request, actor: Caller) -> dict:
    """Run the retention job now (the server also runs it on a schedule)."""
    return asdict(service_of(request).run_retention(actor))


def record_markdown(record: dict) -> str:
    """The record of processing as a document: one section per entry."""
    lines = ["# Record of processing activities", "", f"Generated {record['generated_at']}.", ""]
    for key, value in record.items():
        if key == "generated_at":
            continue
        lines += [f"## {key.replace('_', ' ').capitalize()}", ""]
        if isinstance(value, dict):
            lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in value.items()]
        elif isinstance(value, list):
            lines += [f"- {', '.join(f'{k}: {v}' for k, v in item.items()) if isinstance(item, dict) else item}"
                      for item in value] or ["- none"]
        else:
            lines.append(str(value))
        lines.append("")
    return "\n".join(lines)


# Case watches -----------------------------------------------------------------------------------

class WatchDecision(BaseModel):
    approve: bool
    note: str = Field(default="", max_length=1000)


class WatchStop(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)


@router.post("/cases/{case_id}/watches", tags=["watches"], status_code=201)
def request_watch(request: Request, actor: Caller, case_id: RowId,
                  authorisation: Annotated[str, Form(min_length=1, max_length=200)],
                  days: Annotated[int, Form(ge=1, le=366)],
                  photo: Annotated[UploadFile | None, File()] = None,
                  identity: Annotated[int | None, Form(ge=1, le=2**63 - 1)] = None,
                  note: Annotated[str, Form(max_length=1000)] = "") -> dict:
    """Ask to be told when new images match the person of a probe photo (its largest face)
    or an identity; it waits for a supervisor's approval."""
    data = read_upload(photo) if photo is not None else None
    return asdict(service_of(request).request_watch(actor, case_id, authorisation, days,
                                                    photo=data, identity_id=identity, note=note))


@router.get("/cases/{case_id}/watches", tags=["watches"])
def case_watches(request: Request, actor: Caller, case_id: RowId) -> list[dict]:
    """The case's watches, newest first, with their matches."""
    return [asdict(w) for w in service_of(request).case_watches(actor, case_id)[1]]


@router.get("/watches/pending", tags=["watches"])
def pending_watches(request: Request, actor: Caller) -> list[dict]:
    """The organisation's watches awaiting a supervisor's approval."""
    return [{**asdict(w), "case_number": number}
            for w, number in service_of(request).pending_watches(actor)]


@router.post("/watches/{watch_id}/decision", tags=["watches"])
def decide_watch(request: Request, actor: Caller, watch_id: RowId, body: WatchDecision) -> dict:
    """A supervisor (not the requester) approves or refuses a pending watch."""
    return asdict(service_of(request).decide_watch(actor, watch_id, body.approve, body.note))


@router.post("/watches/{watch_id}/stop", tags=["watches"])
def stop_watch(request: Request, actor: Caller, watch_id: RowId, body: WatchStop) -> dict:
    return asdict(service_of(request).stop_watch(actor, watch_id, body.reason))


# Crawling ---------------------------------------------------------------------------------------------

class NewCrawl(BaseModel):
    source: str = Field(min_length=1, max_length=200)
    purpose: str = Field(min_length=1, max_length=500)
    seeds: list[Annotated[str, Field(max_length=2000)]] = Field(default=[], max_length=1000)
    allow: list[Annotated[str, Field(max_length=2000)]] = Field(default=[], max_length=1000)
    image_urls: list[Annotated[str, Field(max_length=2000)]] = Field(default=[], max_length=100_000)
    max_depth: int = Field(default=2, ge=0, le=20)
    max_pages: int = Field(default=200, ge=1, le=1_000_000)


def crawl_json(status) -> dict:  # noqa: ANN001 - service CrawlStatus
    return asdict(status)


@router.post("/crawls", tags=["crawling"], status_code=202)
def start_crawl(request: Request, actor: Caller, body: NewCrawl) -> dict:
    """Start a crawl of a named scope (an allowlist is required) in the background."""
    service = service_of(request)
    job = service.start_crawl(actor, body.seeds, body.allow, body.source, body.purpose,
                              body.max_depth, body.max_pages, body.image_urls)
    service.run_crawl_in_background(actor, job.id)
    return crawl_json(service.crawl_status(actor, job.id))


@router.get("/crawls", tags=["crawling"])
def list_crawls(request: Request, actor: Caller) -> list[dict]:
    return [asdict(j) for j in service_of(request).crawl_jobs(actor)]


@router.get("/crawls/{job_id}", tags=["crawling"])
def crawl_status(request: Request, actor: Caller, job_id: RowId) -> dict:
    """A job's state and its frontier counted by kind, state and reason."""
    return crawl_json(service_of(request).crawl_status(actor, job_id))


CrawlCommand = Annotated[str, Path(pattern="^(pause|resume|cancel)$")]


def command_crawl(request: Request, actor: Actor, job_id: int, command: str) -> None:
    """pause, resume (run it again in the server's background thread) or cancel: for the
    API and the crawls page alike."""
    service = service_of(request)
    service.set_crawl_state(actor, job_id, command)
    if command == "resume":
        service.run_crawl_in_background(actor, job_id)


@router.post("/crawls/{job_id}/{command}", tags=["crawling"])
def crawl_command(request: Request, actor: Caller, job_id: RowId, command: CrawlCommand) -> dict:
    """pause, resume (runs it again in the background) or cancel."""
    command_crawl(request, actor, job_id, command)
    return crawl_json(service_of(request).crawl_status(actor, job_id))
