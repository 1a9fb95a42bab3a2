"""The busiest page, 1,000 instances on one node, in a real browser on loopback.

What a user checks: the instances page shows the first page of rows, the
pager counts all 1,000 and the next page follows. How fast it renders (the
300 ms budget of docs/ui.md) is measured by ``bench/ui_render.py`` against a
static page of the same document in the same run, not asserted here: this
machine is shared and a timed test fails on its noise.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from shoal.ui import PAGE_SIZE
from tests.ui.conftest import (
    BUSY_INSTANCES,
    Enrolled,
    LiveAgent,
    Pages,
    enrol,
    running_busy_agent,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def busy_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAgent]:
    with running_busy_agent(tmp_path_factory.mktemp("ui-busy")) as live:
        yield live


@pytest.fixture(scope="module")
def busy_operator(browser: Browser, busy_agent: LiveAgent) -> Iterator[Enrolled]:
    enrolled = enrol(browser, busy_agent, "operator")
    try:
        yield enrolled
    finally:
        enrolled.context.close()


def test_the_instances_page_of_1000_instances_shows_a_page_of_rows_and_pages_on(
    busy_operator: Enrolled, busy_agent: LiveAgent, pages: Pages
) -> None:
    workloads = pages.open(busy_operator, busy_agent, "/ui/workloads").page
    expect(workloads.locator(".replicas")).to_have_text(
        f"{BUSY_INSTANCES}/{BUSY_INSTANCES}", timeout=60_000
    )
    page = pages.open(busy_operator, busy_agent, "/ui/instances").page
    expect(page.locator(".pager")).to_contain_text(f"1\N{EN DASH}{PAGE_SIZE} of {BUSY_INSTANCES}")
    expect(page.locator("table.instances tbody tr")).to_have_count(PAGE_SIZE)
    page.click("text=next")
    expect(page.locator(".pager")).to_contain_text(
        f"{PAGE_SIZE + 1}\N{EN DASH}{2 * PAGE_SIZE} of {BUSY_INSTANCES}"
    )
    expect(page.locator("table.instances tbody tr")).to_have_count(PAGE_SIZE)


def test_a_workloads_and_a_nodes_page_list_a_page_of_their_instances_and_link_to_the_rest(
    busy_operator: Enrolled, busy_agent: LiveAgent, pages: Pages
) -> None:
    (workload,) = busy_agent.call(busy_agent.node.service.list_workloads)
    node = busy_agent.node.node.name
    for path, more in [
        (f"/ui/workloads/{workload.namespace}/{workload.name}", f"workload={workload.name}"),
        (f"/ui/nodes/{node}", f"node={node}"),
    ]:
        page = pages.open(busy_operator, busy_agent, path).page
        expect(page.locator("table.instances tbody tr")).to_have_count(PAGE_SIZE)
        note = page.locator("p.more")
        expect(note).to_contain_text(f"The first {PAGE_SIZE} of {BUSY_INSTANCES} instances")
        assert more in (note.locator("a").get_attribute("href") or "")
