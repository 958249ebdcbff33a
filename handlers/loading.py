"""Handlers named in the handlers file: by an entry point name or ``package.module:attribute``.

Queue handlers and batch handlers are found the same way. A package names its
handler kinds in an entry point group (``streambatch.handlers``,
``streambatch.batch_handlers``); this package names the workflow's handlers
and the built-in batch handlers there, as any installed package can.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from foundation.errors import ConfigError

__all__ = ["build_named", "named_in"]


def named_in(group: str) -> dict[str, str]:
    """The names of entry point group ``group``, sorted, each with its ``module:attribute``."""
    points = entry_points(group=group)
    return {point.name: point.value for point in sorted(points, key=lambda p: p.name)}


def build_named(kind: str, group: str, spec: str, options: Mapping[str, Any]) -> Any:
    """Build ``spec`` (a name of ``group`` or ``module:attribute``) with ``options``.

    Raises:
        ConfigError: naming the ``kind`` and ``spec`` when it is unknown, cannot
            be loaded or refuses its options.
    """
    named = named_in(group)
    target = named.get(spec, spec)
    if ":" not in target:
        known = ", ".join(named) or "none installed"
        raise ConfigError(f"unknown {kind} {spec!r}; named: {known}; or 'module:attribute'")
    module_name, _, attribute = target.partition(":")
    try:
        factory: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{kind} {spec!r} cannot be loaded: {exc}") from None
    try:
        return factory(options)
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"{kind} {spec!r}: bad options {dict(options)!r}: {exc}") from None
