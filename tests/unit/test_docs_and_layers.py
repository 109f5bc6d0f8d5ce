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


def test_every_audited_action_is_documented_in_the_readme() -> None:
    service = ast.parse((SOURCE / "service.py").read_text())
    actions = {node.args[2].value for node in ast.walk(service)
               if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "audit"
               and isinstance(node.args[2], ast.Constant)}
    assert {"search", "ingest", "delete", "purge", "suppress"} <= actions
    assert [a for a in sorted(actions) if f"`{a}`" not in README] == []


def test_the_cli_imports_nothing_below_the_service() -> None:
    allowed = {"facesearch.config", "facesearch.errors", "facesearch.service", "facesearch.types"}
    tree = ast.parse((SOURCE / "cli.py").read_text())
    imported = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("facesearch")}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names if alias.name.startswith("facesearch")}
    assert imported <= allowed, imported - allowed


def test_only_imaging_decodes_bytes_into_pixels() -> None:
    offenders = [p.name for p in SOURCE.rglob("*.py")
                 if "Image.open(" in p.read_text() and p.name != "imaging.py"]
    assert offenders == []
