"""The README documents every setting and command; front ends reach nothing below the service."""

from __future__ import annotations

import ast
from pathlib import Path

import typer.main

from facesearch.cli import app
from facesearch.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SOURCE = ROOT / "src" / "facesearch"


def test_every_setting_is_documented_in_the_readme() -> None:
    missing = [name for name in Settings.model_fields
               if f"`FACESEARCH_{name.upper()}`" not in README]
    assert missing == []


def test_every_cli_command_is_documented_in_the_readme() -> None:
    group = typer.main.get_command(app)
    commands = []
    for name, command in group.commands.items():
        sub = getattr(command, "commands", None)
        commands += [f"{name} {s}" for s in sub] if sub else [name]
    assert len(commands) >= 10
    missing = [c for c in commands if f"$fs {c}" not in README]
    assert missing == []


def audited_actions() -> set[str]:
    """Every action name the service passes to its audit and authorisation helpers."""
    actions = set()
    for path in (SOURCE / "service").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", "")
            position = {"_audit": 2, "_audit_alone": 1, "authorise": 2, "_refuse": 1,
                        "_own_case": 2, "_audit_anonymous_refusal": 2}.get(name)
            if position is not None and len(node.args) > position and isinstance(
                    node.args[position], ast.Constant):
                actions.add(node.args[position].value)
    return actions


def test_every_audited_action_is_documented_in_the_readme() -> None:
    actions = audited_actions()
    assert {"search", "ingest", "delete", "purge", "suppress", "case.open", "candidate.mark",
            "login", "auth.refused", "audit.verify"} <= actions
    assert [a for a in sorted(actions) if f"`{a}`" not in README] == []


def facesearch_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    imported = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("facesearch")}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names if alias.name.startswith("facesearch")}
    return imported


def test_the_front_ends_import_nothing_below_the_service() -> None:
    allowed = {"facesearch.config", "facesearch.errors", "facesearch.service", "facesearch.types"}
    front_ends = [SOURCE / "cli.py", *(SOURCE / "web").glob("*.py")]
    assert len(front_ends) >= 6
    for path in front_ends:
        outside = {m for m in facesearch_imports(path) - allowed if not m.startswith("facesearch.web")}
        assert outside == set(), (path.name, outside)


def test_only_imaging_decodes_bytes_into_pixels() -> None:
    offenders = [p.name for p in SOURCE.rglob("*.py")
                 if "Image.open(" in p.read_text() and p.name != "imaging.py"]
    assert offenders == []
