"""Trace ids and contexts as the models take them: W3C form only, a clear refusal otherwise."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shoal.interfaces import Actor, Event, ObjectRef, Via, check_trace_id

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def event(trace_id: str | None) -> Event:
    return Event(
        time=datetime.now(UTC),
        object=ObjectRef(kind="Instance", namespace="default", name="web-1"),
        reason="Started",
        message="started",
        actor=Actor(id="n1", via=Via.NODE_LOOP),
        trace_id=trace_id,
    )


def test_a_trace_id_is_32_hex_digits_and_not_zero() -> None:
    assert check_trace_id(TRACE.upper()) == TRACE
    with pytest.raises(ValueError, match="32 hex digits"):
        check_trace_id("not-a-trace")
    with pytest.raises(ValueError, match="all-zero"):
        check_trace_id("0" * 32)


def test_an_event_or_instance_takes_only_a_w3c_trace_id() -> None:
    assert event(TRACE).trace_id == TRACE
    assert event(None).trace_id is None
    for bad in ("x" * 40, TRACE + "0", "<script>"):
        with pytest.raises(ValidationError, match="trace_id"):
            event(bad)
