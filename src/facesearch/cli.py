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
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from facesearch.config import Settings
from facesearch.errors import FacesearchError, NotFound, PolicyRefused
from facesearch.service import FaceSearchService, IngestSummary, SearchResult, build_service
from facesearch.types import Actor

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Face search with provenance: every face has a source, and can be erased.")
source_app = typer.Typer(no_args_is_help=True, help="Register and list image sources.")
eval_app = typer.Typer(no_args_is_help=True, help="Measure accuracy on standard benchmarks.")
app.add_typer(source_app, name="source")
app.add_typer(eval_app, name="eval")
progress_console = Console(stderr=True)

EXIT_CODES = {NotFound: 3, PolicyRefused: 4}


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
    return Actor(name=getpass.getuser(), role="operator")


@app.callback()
def main_options(
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Data directory (default: $FACESEARCH_HOME or ./facesearch-data).")] = None,
) -> None:
    state.settings = Settings(home=data) if data else Settings()


@source_app.command("add")
def source_add(
    name: str,
    lawful_basis: Annotated[str, typer.Option(help="GDPR Art. 6 basis, e.g. public_task.")],
    jurisdiction: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2 code, or 'unknown'.")],
    description: Annotated[str, typer.Option(help="Where it comes from, Art. 9 condition.")] = "",
) -> None:
    """Register a source; ingest refuses images from unregistered sources."""
    source = service().add_source(actor(), name, lawful_basis, jurisdiction, description)
    echo(f"registered source {source.name} ({source.lawful_basis}, {source.jurisdiction})")


@source_app.command("list")
def source_list() -> None:
    """List registered sources."""
    for s in service().sources():
        echo(f"{s.name}\t{s.lawful_basis}\t{s.jurisdiction}\t{s.created_at}\t{s.description}")


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (recursive).")],
    source: Annotated[str, typer.Option(help="Registered source the images come from.")],
    workers: Annotated[int, typer.Option(help="Worker processes; 0 = one per core.")] = 0,
) -> None:
    """Index every face in the images under PATHS. Safe to re-run after an interruption."""
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
              f"already indexed {summary.already_indexed}, without faces "
              f"{summary.images_without_faces}")
    echo(f"faces indexed {summary.faces_indexed}, withheld (suppressed) "
              f"{summary.faces_withheld}, in {seconds:.1f} s")
    for reason, count in sorted(summary.skipped.items()):
        echo(f"skipped {count}: {reason}")
    for location, reason in summary.errors[:10]:
        typer.echo(f"  {location}: {reason}", err=True)


@app.command()
def search(
    photo: Annotated[Path, typer.Argument(help="Probe photo.")],
    top: Annotated[Optional[int], typer.Option(help="Candidates per probe face.")] = None,
    face: Annotated[str, typer.Option(help="'all' faces of the probe or the 'largest'.")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Find the indexed faces nearest to each face in PHOTO."""
    result = service().search(actor(), _read(photo), top, face)
    if as_json:
        echo(json.dumps(asdict(result), indent=2))
    else:
        _print_result(result)


def _print_result(result: SearchResult) -> None:
    echo(result.notice)
    echo(f"score = {result.score_meaning}")
    for probe in result.faces:
        b = probe.box
        echo(f"\nprobe face {probe.probe_face} at ({b.left},{b.top})-({b.right},{b.bottom}), "
                  f"quality {probe.quality:.2f}: {len(probe.candidates)} candidates")
        if not probe.candidates:
            echo("  no candidates")
        for c in probe.candidates:
            echo(f"  {c.rank:>3}. distance {c.distance:.3f}  score {c.false_match_probability:.2e}"
                      f"  {c.location}")
            echo(f"       source {c.source}, jurisdiction {c.jurisdiction}, collected "
                      f"{c.collected_at}, face {c.face_id}, crop {c.crop_path}")


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
    jurisdiction: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2 code.")],
) -> None:
    """Delete everything collected under a jurisdiction."""
    report = service().purge_jurisdiction(actor(), jurisdiction)
    echo(f"purged {report.images} images, {report.faces} faces from {jurisdiction.upper()}")


@app.command()
def suppress(
    photo: Annotated[Path, typer.Argument(help="A photo of the person (largest face is used).")],
    reason: Annotated[str, typer.Option(help="Why, e.g. 'erasure request 2026-114'.")],
) -> None:
    """Remove a person now and keep them out of future ingests and searches."""
    report = service().suppress(actor(), _read(photo), reason)
    echo(f"suppressed; removed {report.faces} indexed faces")


@app.command()
def reindex() -> None:
    """Rebuild the vector index from the stored descriptors."""
    count = service().reindex(actor())
    echo(f"reindexed {count} faces ({service().index.kind})")


@app.command()
def stats() -> None:
    """Counts of sources, images, faces and suppressions."""
    for key, value in service().stats().items():
        echo(f"{key}\t{value}")


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
