"""Log lines: JSON objects with the event's fields off a terminal, readable text on one."""

from __future__ import annotations

import io
import json
import logging
import sys

from imgstream.logs import JsonFormatter, TextFormatter, wants_json


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("imgstream.worker", logging.INFO, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_json_line_carries_the_event_fields() -> None:
    line = JsonFormatter().format(
        record("job %s done", "ab" * 16, job="ab" * 16, consumer="h-1-x", duration_s=0.25)
    )
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == f"job {'ab' * 16} done"
    assert data["level"] == "info" and data["logger"] == "imgstream.worker"
    assert data["job"] == "ab" * 16 and data["consumer"] == "h-1-x" and data["duration_s"] == 0.25
    assert data["ts"].endswith("Z") and isinstance(data["pid"], int)
    assert "args" not in data and "msg" not in data


def test_json_line_keeps_the_traceback_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failing = record("unexpected")
        failing.exc_info = sys.exc_info()
    data = json.loads(JsonFormatter().format(failing))
    assert "ValueError: boom" in data["exc"]


def test_text_line_appends_fields_for_a_person() -> None:
    line = TextFormatter().format(record("job started", job="cd" * 16, attempt=2))
    assert line.endswith(f"job started  job={'cd' * 16} attempt=2")
    assert "INFO imgstream.worker" in line


def test_auto_format_is_json_off_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert wants_json("auto", io.StringIO())
    assert not wants_json("auto", Terminal())
    assert wants_json("json", Terminal())
    assert not wants_json("text", io.StringIO())
