"""The instance page's usage charts in Chromium: against limits, a range that survives a reload."""

from __future__ import annotations

import re

import anyio
import pytest
from playwright.sync_api import expect

from shoal.interfaces import ContainerStats, Instance, InstanceState, WorkloadSpec
from shoal.runtime import MockRuntime
from tests.ui.conftest import Enrolled, LiveAgent, Pages

pytestmark = pytest.mark.slow

CAPPED = {
    "name": "capped",
    "replicas": 1,
    "template": {
        "containers": [
            {
                "name": "main",
                "image": "busybox:1.36",
                "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}},
            }
        ]
    },
}


async def running_capped(agent: LiveAgent) -> Instance:
    service = agent.node.service
    await service.apply([WorkloadSpec.model_validate(CAPPED)])
    with anyio.fail_after(20):  # polled: the node loop writes the state, no event to wait on
        while True:
            found = await service.list_instances("default", "capped")
            if found and found[0].state == InstanceState.RUNNING:
                return found[0]
            await anyio.sleep(0.05)


async def sampled(agent: LiveAgent) -> None:
    """Have the capped instance use half its CPU and a quarter of its memory; sample it."""
    runtime = agent.node.runtime
    assert isinstance(runtime, MockRuntime) and agent.node.sampler is not None
    runtime.set_stats(
        "main", ContainerStats(name="main", cpu_millicores=100, memory_bytes=16 << 20)
    )
    await agent.node.sampler.sample_once()


def test_charts_draw_usage_against_limits_and_keep_their_range(
    viewer: Enrolled, agent: LiveAgent, pages: Pages
) -> None:
    instance = agent.call(running_capped, agent)
    agent.call(sampled, agent)
    opened = pages.open(viewer, agent, f"/ui/instances/default/{instance.name}?range=6h")
    page = opened.page
    section = page.locator("[data-usage]")
    expect(section).to_have_attribute("data-usage-shown", "6h")
    expect(page.locator('[data-usage-range="6h"]')).to_have_attribute("aria-pressed", "true")
    summary = page.locator("[data-usage-summary]")
    expect(summary).to_contain_text("CPU peak 100m of 200m (50%)")
    expect(summary).to_contain_text("Memory peak 16Mi of 64Mi (25%)")
    for chart in ("cpu", "memory"):
        expect(page.locator(f'[data-usage-chart="{chart}"] canvas')).to_be_visible()
    # the limit is a series of its own in each chart's legend
    expect(page.locator('[data-usage-chart="cpu"] .u-legend')).to_contain_text("limit")

    page.click('[data-usage-range="15m"]')
    expect(section).to_have_attribute("data-usage-shown", "15m")
    assert re.search(r"[?&]range=15m\b", page.url), page.url
    page.reload()
    expect(page.locator('[data-usage-range="15m"]')).to_have_attribute("aria-pressed", "true")
    expect(page.locator("[data-usage]")).to_have_attribute("data-usage-shown", "15m")
    expect(page.locator('[data-usage-chart="memory"] canvas')).to_be_visible()
    assert opened.errors == []
