"""Logging set-up for the process entry points (one call, at start-up).

One line per event. Where the lines go to a file or a log collector they are JSON objects,
so a job can be followed by its id across the API and every worker (``grep`` or a query on
``"job"``); on a terminal they are plain text for a person. Events carry their facts as
``extra=`` fields (``job``, ``consumer``, ``operation``, ``duration_s``, ``outcome``, …),
which both formats show.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from imgstream.jobs import format_timestamp

_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName", "color_message"}  # the last: uvicorn's ANSI copy
)
QUIET_LOGGERS = ("pyvips", "httpx", "httpcore")
"""Libraries that log every step (or every request) at INFO: only their warnings are shown."""


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record: everything the standard attributes don't name."""
    return {
        name: value
        for name, value in record.__dict__.items()
        if name not in _STANDARD_ATTRIBUTES and not name.startswith("_")
    }


def _timestamp(record: logging.LogRecord) -> str:
    return format_timestamp(datetime.fromtimestamp(record.created, UTC))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``pid``, ``message``, fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for name, value in event_fields(record).items():
            line.setdefault(name, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """For a person at a terminal: the usual line, then the event's fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = event_fields(record)
        if not fields:
            return text
        head, _, tail = text.partition("\n")
        pairs = " ".join(f"{name}={value}" for name, value in fields.items())
        return f"{head}  {pairs}" + (f"\n{tail}" if tail else "")


def wants_json(log_format: str, stream: TextIO) -> bool:
    """``auto`` means JSON unless the stream is a terminal."""
    if log_format == "auto":
        return not stream.isatty()
    return log_format == "json"


def configure_logging(level: str, log_format: str = "auto") -> None:
    stream = sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if wants_json(log_format, stream) else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    threshold = max(logging.getLevelName(level.upper()), logging.WARNING)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(threshold)
