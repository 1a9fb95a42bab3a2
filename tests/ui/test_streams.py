"""The dashboard's change stream: a burst in one message, heartbeats, and a bounded life."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio
import pytest

from shoal.interfaces import Actor, Event, ObjectRef, Via
from shoal.ui._streams import changes

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def event(name: str) -> Event:
    return Event(
        time=datetime.now(UTC),
        object=ObjectRef(kind="Workload", namespace="default", name=name),
        reason="Updated",
        message="updated",
        actor=Actor(id="k", via=Via.CLI),
    )


async def two_then_silence() -> AsyncIterator[Event]:
    yield event("web")
    yield event("api")
    await anyio.sleep_forever()  # a cluster where nothing else happens


async def test_a_burst_is_one_message_none_lost_and_the_stream_ends_after_its_lifetime() -> None:
    with anyio.fail_after(10):  # a stream that outlived its lifetime would hang here
        chunks = [chunk async for chunk in changes(two_then_silence(), lifetime=0.5)]
    assert chunks[0] == b": connected\n\n"
    changed = [c for c in chunks if c.startswith(b"event: changed\n")]
    named = {name for c in changed for name in json.loads(c.split(b"data: ", 1)[1])}
    assert named == {"Workload/api", "Workload/web"}
    assert len(changed) == 1  # one burst, one message
    assert all(c == b": heartbeat\n\n" for c in chunks[1:] if c not in changed)
