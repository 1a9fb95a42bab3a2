"""--log-format json: one JSON object per line, with the span's ids inside a span."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from shoal.agent import configure_logging

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """Where the root logger writes, as JSON lines, while the test runs."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def logged(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_inside_a_span_carries_its_trace_and_span_ids(lines: io.StringIO) -> None:
    log = logging.getLogger("shoal.test")
    log.info("outside")
    context = SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(context)):
        log.warning("inside %s", "a request")
    outside, inside = logged(lines)
    assert outside["message"] == "outside"
    assert "trace_id" not in outside and "span_id" not in outside
    assert inside["message"] == "inside a request"
    assert inside["level"] == "WARNING"
    assert inside["logger"] == "shoal.test"
    assert inside["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert inside["span_id"] == "00f067aa0ba902b7"


def test_a_multi_line_message_and_its_exception_stay_on_one_line(lines: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("shoal.test").exception("first\nsecond")
    (line,) = logged(lines)
    assert line["message"] == "first\nsecond"
    assert "RuntimeError: boom" in str(line["exception"])
    assert str(line["time"]).endswith("+00:00")


@pytest.mark.slow
def test_the_agent_logs_json_lines_with_log_format_json(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["SHOAL_HOME"] = str(tmp_path / "home")
    command = [
        *(sys.executable, "-m", "shoal.cli", "agent", "--log-format", "json"),
        *("--data-dir", str(tmp_path / "data"), "--api-addr", "127.0.0.1:0"),
        *("--state", "memory", "--runtime", "mock", "--name", "j1"),
    ]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        assert process.stderr is not None
        # readline blocks, but the agent either logs that it is ready or exits (EOF).
        for line in process.stderr:
            seen.append(line)
            if "ready: API on http://" in line:
                break
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()
    assert seen and "ready: API on http://" in seen[-1], "".join(seen)
    records = [json.loads(line) for line in seen]  # every line is one JSON object
    assert records[-1]["logger"] == "shoal.agent"
    assert records[-1]["level"] == "INFO"
