"""Logging of the flows and handler processes: one JSON object per line (or plain text), to stderr.

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
from typing import Literal

__all__ = ["LOG_LEVELS", "JsonFormatter", "LogFormat", "configure_logging"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

LogFormat = Literal["json", "text"]

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


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Log to stderr at ``level`` (one of :data:`LOG_LEVELS`) in ``log_format``, unless set up.

    The caller reads both from its settings (``STREAMBATCH_LOG_LEVEL`` and
    ``STREAMBATCH_LOG_FORMAT``, checked there); logging set up already (a
    test, an embedding program) is left as it is.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(_TEXT_FORMAT) if log_format == "text" else JsonFormatter()
    )
    root.addHandler(handler)
    root.setLevel(level)
