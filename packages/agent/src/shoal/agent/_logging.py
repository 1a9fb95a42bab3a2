"""The agent's log lines: text for people, or JSON lines for a log pipeline (``--log-format``).

A JSON line is one object: ``time`` (UTC, ISO 8601 with milliseconds),
``level``, ``logger``, ``message``, ``exception`` when there is one, and —
for a line emitted inside an OpenTelemetry span (a request, a reconcile) —
that span's ``trace_id`` and ``span_id`` in their W3C hex form, so a line
can be joined to its trace. Outside a span, or when no tracing is set up,
the two fields are absent.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal, TextIO

from opentelemetry import trace

__all__ = ["LOG_FORMATS", "JsonFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")
"""The values of ``--log-format``."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The text format (the agent's default)."""


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line, with the current span's ids."""

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as a JSON line (no newline inside, whatever the message holds)."""
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = trace.format_trace_id(context.trace_id)
            line["span_id"] = trace.format_span_id(context.span_id)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(
    level: str = "INFO",
    log_format: Literal["text", "json"] = "text",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send the root logger's records at ``level`` and above to ``stream`` (stderr) as asked.

    Replaces the root logger's handlers, so calling it again changes the format.

    Raises:
        ValueError: ``level`` is not a logging level name.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
