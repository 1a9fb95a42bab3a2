"""First render of the busiest page, 1,000 instances on one node, in a real browser on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from shoal.interfaces import Capacity
from shoal.ui import PAGE_SIZE
from tests.ui.conftest import Enrolled, LiveAgent, Pages, enrol, running_agent

pytestmark = pytest.mark.slow

INSTANCES = 1000
FIRST_RENDER = 0.3
"""Seconds from navigation to the rendered list (the issue's budget)."""

MANY = f"""
kind: Workload
name: many
replicas: {INSTANCES}
template:
  containers:
    - name: main
      image: busybox:1.36
"""


@pytest.fixture(scope="module")
def busy_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAgent]:
    capacity = Capacity(cpu=64_000, memory=256 << 30, pods=INSTANCES + 10)
    # No periodic pass over every instance: the page is measured on a settled node.
    root = tmp_path_factory.mktemp("ui-busy")
    with running_agent(root, MANY, capacity=capacity, node_resync=3600.0) as live:
        yield live


@pytest.fixture(scope="module")
def busy_operator(browser: Browser, busy_agent: LiveAgent) -> Iterator[Enrolled]:
    enrolled = enrol(browser, busy_agent, "operator")
    try:
        yield enrolled
    finally:
        enrolled.context.close()


def test_the_instances_page_of_1000_instances_renders_within_300_ms(
    busy_operator: Enrolled, busy_agent: LiveAgent, pages: Pages
) -> None:
    workloads = pages.open(busy_operator, busy_agent, "/ui/workloads").page
    expect(workloads.locator(".replicas")).to_have_text(f"{INSTANCES}/{INSTANCES}", timeout=60_000)
    timings = []
    for _ in range(7):  # the best of seven: the agent has work of its own meanwhile
        page = pages.track(busy_operator.context.new_page())
        started = time.perf_counter()
        page.goto(busy_agent.url + "/ui/instances")
        page.wait_for_function(  # polled on every animation frame
            "() => document.querySelectorAll('table.instances tbody tr').length > 0"
        )
        timings.append(time.perf_counter() - started)
        if len(timings) < 7:
            page.close()
    expect(page.locator(".pager")).to_contain_text(f"1\N{EN DASH}{PAGE_SIZE} of {INSTANCES}")
    expect(page.locator("table.instances tbody tr")).to_have_count(PAGE_SIZE)
    page.click("text=next")
    expect(page.locator(".pager")).to_contain_text(f"{PAGE_SIZE + 1}\N{EN DASH}{2 * PAGE_SIZE} of")
    shown = ", ".join(f"{t * 1000:.0f} ms" for t in timings)
    print(f"\nfirst render of {INSTANCES} instances: {shown}")
    assert min(timings) < FIRST_RENDER, shown
