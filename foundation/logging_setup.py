"""Logging of the flows: one JSON object per line (or plain text), to stderr.

``STREAMBATCH_LOG_FORMAT=json`` (the default) writes lines like
``{"ts": "...", "level": "INFO", "logger": "sinks.lake_sink", "message":
"batch committed", "batch": {...}}``: a collector parses them without
regexes. ``text`` is for people at a terminal. Fields passed with
``extra={"fields": {...}}`` are merged into the object.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from config.settings import load_log_settings

__all__ = ["LOG_LEVELS", "JsonFormatter", "configure_logging"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``record.fields`` (a dict) is merged in."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def configure_logging() -> None:
    """Log to stderr at ``STREAMBATCH_LOG_LEVEL`` in ``STREAMBATCH_LOG_FORMAT``, unless set up.

    Both come from :class:`~config.settings.LogSettings` (environment, then
    ``streambatch.toml``).

    Raises:
        ConfigError: either variable has a value we don't know, naming it.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    settings = load_log_settings()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(_TEXT_FORMAT) if settings.log_format == "text" else JsonFormatter()
    )
    root.addHandler(handler)
    root.setLevel(settings.log_level)
