"""An event says what happened in a bounded size, whatever output it quotes."""

from __future__ import annotations

from shoal.core._repo import MAX_MESSAGE, new_event
from shoal.interfaces import MAX_EVENT_BYTES, Actor, ObjectRef, SystemClock, Via


def test_a_long_message_is_cut_and_the_event_stays_under_the_workers_limit() -> None:
    ref = ObjectRef(kind="Instance", namespace="default", name="web-1")
    actor = Actor(id="w1", via=Via.NODE_LOOP)
    long = new_event(SystemClock(), ref, "StartFailed", "runc said: " + "x" * 100_000, actor)
    short = new_event(SystemClock(), ref, "Started", "started on w1", actor)
    assert len(long.message) == MAX_MESSAGE and long.message.endswith("…")
    assert long.message.startswith("runc said: xxx")
    assert len(long.model_dump_json().encode()) < MAX_EVENT_BYTES
    assert short.message == "started on w1"


def test_an_event_of_wide_characters_or_escapes_is_cut_to_the_byte_limit_too() -> None:
    ref = ObjectRef(kind="Instance", namespace="default", name="web-1")
    actor = Actor(id="w1", via=Via.NODE_LOOP)
    for text in ("🐟" * 5000, "\x01" * 5000):
        made = new_event(SystemClock(), ref, "StartFailed", text, actor)
        assert len(made.model_dump_json().encode()) <= MAX_EVENT_BYTES
        assert made.message.endswith("…") and len(made.message) > 100
