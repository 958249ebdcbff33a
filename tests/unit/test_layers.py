"""Every package imports only the layers below it (pyproject.toml's ``[tool.importlinter]``).

``make lint`` checks the contract with ``lint-imports``; these tests check the
same contract with grimp, the import graph import-linter is built on, so that
an upward import also fails the unit tests. Imports inside functions count
like any other: importing lazily does not get round a layer.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

import grimp
import pytest

from tests.support import REPO_ROOT


def _contract() -> tuple[list[str], list[str]]:
    """The root packages and the layers (top first) of the layers contract."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [contract for contract in config["contracts"] if contract["type"] == "layers"]
    return config["root_packages"], layers["layers"]


def upward_imports(packages: Sequence[str], layers: Sequence[str]) -> list[str]:
    """Each import against ``layers`` as ``importer -> imported (line)``, sorted.

    A layer is a package name or names split by ``|``: side by side, neither
    may import the other.
    """
    graph = grimp.build_graph(*packages, cache_dir=None)
    illegal = graph.find_illegal_dependencies_for_layers(
        layers=[grimp.Layer(*(name.strip() for name in layer.split("|"))) for layer in layers]
    )
    found = []
    for dependency in illegal:
        for route in dependency.routes:
            for head in route.heads:
                for tail in route.tails:
                    chain = [head, *route.middle, tail]
                    lines = [
                        str(item["line_number"])
                        for item in graph.get_import_details(importer=head, imported=chain[1])
                    ]
                    found.append(f"{' -> '.join(chain)} (line {', '.join(lines)})")
    return sorted(found)


def test_every_top_level_package_is_in_the_layers() -> None:
    packages, layers = _contract()
    in_layers = [name.strip() for layer in layers for name in layer.split("|")]
    on_disk = {path.parent.name for path in REPO_ROOT.glob("*/__init__.py")}
    assert sorted(in_layers) == sorted(set(in_layers)), "a package is in two layers"
    assert set(in_layers) == on_disk, "every top-level package has its place in one layer"
    assert set(packages) == on_disk


def test_no_package_imports_upward() -> None:
    packages, layers = _contract()
    assert upward_imports(packages, layers) == []


def test_an_upward_import_inside_a_function_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check itself: a lazy upward import and a sideways one are both caught."""
    files = {
        "layered_top/__init__.py": "import layered_bottom\n",
        "layered_left/__init__.py": "import layered_right\n",
        "layered_right/__init__.py": "",
        "layered_bottom/__init__.py": "",
        "layered_bottom/low.py": "def f() -> None:\n    import layered_top  # noqa\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    packages = ["layered_top", "layered_left", "layered_right", "layered_bottom"]
    layers = ["layered_top", "layered_left | layered_right", "layered_bottom"]
    assert upward_imports(packages, layers) == [
        "layered_bottom.low -> layered_top (line 2)",
        "layered_left -> layered_right (line 1)",
    ]
