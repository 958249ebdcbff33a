"""``streambatch config show`` and the README's settings table, both from the settings models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

import config.docs
from config.docs import TABLE_END, TABLE_START, render_settings_table
from config.settings import SETTINGS_MODELS, PipelineSettings
from tests.support import REPO_ROOT

CLI = (sys.executable, "-c", "from streambatch.cli import main; main()")


def _show(cwd: Path, env: dict[str, str], *options: str) -> subprocess.CompletedProcess[str]:
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KAFKA_", "STREAMBATCH_"))
    }
    return subprocess.run(
        [*CLI, "config", "show", *options],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_show_lists_every_setting_with_value_default_and_source(tmp_path: Path) -> None:
    (tmp_path / "streambatch.toml").write_text(
        "# settings\nwindow_seconds = 60\n\n[kafka]\n"
        '"ssl.key.password" = "hunter2-file"\n\n[streams.logs]\nwindow_seconds = 30\n'
    )
    env = {
        "STREAMBATCH_WINDOW_BYTES": "2048",
        "KAFKA_SASL_USERNAME": "app",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_PASSWORD": "hunter2-env",
        "STREAMBATCH_HANDLER_STORE": "postgresql://app:hunter2-store@db:5432/h",
    }
    shown = _show(tmp_path, env, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    rows = {row["name"]: row for row in json.loads(shown.stdout)}
    assert rows["STREAMBATCH_WINDOW_SECONDS"] | {"description": ""} == {
        "name": "STREAMBATCH_WINDOW_SECONDS",
        "value": "60",
        "default": "600",
        "source": "file",
        "where": "streambatch.toml:2",
        "description": "",
    }
    assert (
        rows["STREAMBATCH_WINDOW_BYTES"]["value"],
        rows["STREAMBATCH_WINDOW_BYTES"]["source"],
    ) == (
        "2048",
        "environment",
    )
    assert rows["STREAMBATCH_DATA_DIR"]["source"] == "default"
    assert rows["KAFKA_SSL_KEY_PASSWORD"]["source"] == "file"
    assert rows["STREAMBATCH_LOGS_WINDOW_SECONDS"]["value"] == "30"
    assert rows["STREAMBATCH_LOGS_WINDOW_SECONDS"]["where"] == "streambatch.toml:8"
    assert rows["STREAMBATCH_ORDERS_WINDOW_SECONDS"]["value"] == "60"
    assert rows["STREAMBATCH_ORDERS_TOPIC"]["value"] == "orders"
    assert rows["STREAMBATCH_HANDLER_STORE"]["value"] == "postgresql://app:**********@db:5432/h"
    for name in ("STREAMBATCH_LOG_LEVEL", "STREAMBATCH_HANDLERS_FILE", "KAFKA_SASL_PASSWORD"):
        assert name in rows
    # Every field of every model is a row: a new field needs no other edit.
    for model in SETTINGS_MODELS:
        prefix = model.model_config.get("env_prefix", "")
        for field in model.model_fields:
            assert field == "properties" or f"{prefix}{field.upper()}" in rows
    table = _show(tmp_path, env)
    assert table.returncode == 0, table.stderr
    assert "file (streambatch.toml:2)" in table.stdout
    for output in (shown.stdout + shown.stderr, table.stdout + table.stderr):
        assert "hunter2" not in output


def test_show_refuses_a_bad_value_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "streambatch.toml").write_text("window_seconds = 60\nwindow_secs = 6\n")
    shown = _show(tmp_path, {})
    assert shown.returncode == 2
    assert shown.stderr.strip().splitlines() == [
        "streambatch: streambatch.toml:2: unknown key 'window_secs'; did you mean "
        "'window_seconds'? the file takes the settings of 'streambatch config show' by field "
        "name (window_seconds = 60) or variable name, a [kafka] table and [streams.<name>] "
        "tables"
    ]


def test_readme_table_is_the_generated_one() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"{TABLE_START}\n{render_settings_table()}{TABLE_END}" in readme, (
        "README.md's settings table is stale: run .venv/bin/python -m config.docs"
    )


def test_every_setting_has_a_description() -> None:
    for model in SETTINGS_MODELS:
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"


def test_a_new_field_appears_in_the_table_with_no_other_edit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class WithLake(PipelineSettings):
        model_config = SettingsConfigDict(env_prefix="STREAMBATCH_", extra="ignore")

        lake_uri: str | None = Field(default=None, description="where the lake lives")

    monkeypatch.setattr(config.docs, "SETTINGS_MODELS", (*SETTINGS_MODELS, WithLake))
    assert (
        "| `STREAMBATCH_LAKE_URI` | `lake_uri` | unset | where the lake lives |"
        in render_settings_table()
    )
