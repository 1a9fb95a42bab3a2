"""Plan ids: a plan's digest sealed for one caller, one server process and half an hour at most."""

from __future__ import annotations

import hashlib
import json

import pytest
from mcp import Client

from shoal.mcp._seal import PLAN_TTL, PlanSeal
from tests.mcp.support import HELLO, Live, call, refused


def test_a_plan_id_opens_for_its_digest_caller_and_window_only() -> None:
    now = [10 * PLAN_TTL + 1]
    seal = PlanSeal(key=b"k" * 32, clock=lambda: now[0])
    plan_id = seal.seal("digest", "alice")
    assert len(plan_id) == 16 and plan_id != "digest"
    assert seal.opens(plan_id, "digest", "alice")
    assert not seal.opens(plan_id, "other digest", "alice")
    assert not seal.opens(plan_id, "digest", "bob")
    assert not PlanSeal(key=b"x" * 32, clock=lambda: now[0]).opens(plan_id, "digest", "alice")
    now[0] += PLAN_TTL  # the next window: still good
    assert seal.opens(plan_id, "digest", "alice")
    now[0] += PLAN_TTL  # two windows on: stale
    assert not seal.opens(plan_id, "digest", "alice")


@pytest.mark.anyio
async def test_a_plan_id_computed_by_hand_authorises_nothing(live: Live) -> None:
    async with Client(live.server()) as client:
        await call(client, "apply_workload", workload=HELLO)
        workload = (await call(client, "get_workload", name="hello"))["workload"]
        parts = ["delete", "default", "hello", workload["uid"], workload["generation"]]
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
        forged = hashlib.sha256(text.encode()).hexdigest()[:16]
        assert "stale_plan" in await refused(
            client, "delete_workload", name="hello", plan_id=forged
        )
        plan = await call(client, "plan_workload", action="delete", name="hello")
        assert plan["plan_id"] != forged
    # Another server process (a restart) does not take this one's plans either.
    async with Client(live.server()) as client:
        text = await refused(client, "delete_workload", name="hello", plan_id=plan["plan_id"])
        assert "stale_plan" in text and "made for another key or by another server" in text
    assert not (await live.service.get_workload("hello")).deleting
