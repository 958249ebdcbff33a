"""Conventions every command-line user expects: --version, -h, help without raw markup."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest
import typer
from typer.testing import CliRunner

from streambatch.cli import app

COMMAND = [sys.executable, "-c", "from streambatch.cli import main; main()"]


def _command_paths() -> list[list[str]]:
    """Every command and sub-command of the CLI, as argument lists."""
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(root, [])
    return paths


def test_version_prints_the_installed_version() -> None:
    result = subprocess.run([*COMMAND, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"streambatch {version('streambatch')}"


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "streambatch")
def test_short_help_works_and_shows_no_raw_markup(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "-h"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    assert "``" not in result.stdout, result.stdout
