"""The dashboard's smoke test on real containers: a `shoal agent` process running runc.

The other browser tests drive an agent on the mock runtime; this one checks
the same page machinery against a real agent whose containers are real: an
image pulled from a loopback registry (busybox, built by the tests), a
workload applied by the CLI in another process showing up on an open page
and turning running without a reload, and its instance page following the
container's own log. The agent, every pod it started, the registry and the
browser context are removed by the fixtures' finalizers, pass or fail.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect
from scripts.build_busybox_image import build_busybox_layout

from tests.e2e.conftest import Agent
from tests.runtime.images.support import LoopbackRegistry
from tests.ui.conftest import Enrolled, Pages, enrol

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="real containers need root"),
    pytest.mark.skipif(
        shutil.which("runc") is None, reason="runc missing: run scripts/system-deps.sh"
    ),
]

STARTED = 60_000
"""Milliseconds for a pulled busybox to start on runc and the page to show it."""


@dataclass
class RuncDashboard:
    """A `shoal agent --runtime runc` process, as the browser fixtures reach it."""

    agent: Agent

    @property
    def url(self) -> str:
        return self.agent.url

    def authorize(self, key_id: str, public_key: str, role: str) -> None:
        self.agent.cli(
            "keys",
            "authorize",
            key_id,
            public_key,
            "--role",
            role,
            "--data-dir",
            str(self.agent.data_dir),
        )


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """busybox:1.36 in a loopback registry: the reference to pull."""
    missing = LoopbackRegistry.missing()
    if missing:
        pytest.skip(missing)
    layout = build_busybox_layout(tmp_path_factory.mktemp("ui-layout") / "busybox", "1.36")
    registry = LoopbackRegistry(tmp_path_factory.mktemp("ui-registry"))
    registry.start()
    try:
        yield registry.push(layout.layout, "1.36")
    finally:
        registry.stop()


@pytest.fixture
def runc_agent(tmp_path: Path, image: str) -> Iterator[RuncDashboard]:
    """A started agent on runc with ``image`` pulled; killed, and its pods removed, after."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env |= {"SHOAL_HOME": str(home), "SHOAL_LOG_LEVEL": "INFO"}
    agent = Agent(tmp_path / "data", home, env, runtime="runc")
    try:
        agent.start()
        agent.cli("images", "pull", image)
        yield RuncDashboard(agent)
    finally:
        # Playwright's sync API runs an event loop in this thread, and the
        # cleanup (``shoal node reset``'s code) runs one of its own.
        with ThreadPoolExecutor(1) as worker:
            worker.submit(agent.cleanup).result(timeout=120)


@pytest.fixture
def runc_operator(browser: Browser, runc_agent: RuncDashboard) -> Iterator[Enrolled]:
    enrolled = enrol(browser, runc_agent, "operator")
    try:
        yield enrolled
    finally:
        enrolled.context.close()


def test_a_workload_applied_on_runc_runs_live_on_the_page_and_its_log_follows(
    runc_agent: RuncDashboard,
    runc_operator: Enrolled,
    pages: Pages,
    image: str,
    tmp_path: Path,
) -> None:
    listing = pages.open(runc_operator, runc_agent, "/ui/instances").page
    expect(listing.locator("table.instances tbody")).to_contain_text("No instances.")

    workload = tmp_path / "ticker.yaml"
    workload.write_text(
        f"""kind: Workload
name: ticker
replicas: 1
template:
  containers:
    - name: ticker
      image: {image}
      command: ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done"]
      resources:
        requests: {{cpu: 10m, memory: 16Mi}}
"""
    )
    listing.evaluate("window.notReloaded = true")
    runc_agent.agent.cli("apply", "-f", str(workload))

    # The open page learns of it from its live stream: no reload, no polling.
    row = listing.locator('tr[data-instance^="default/ticker-"]')
    expect(row.locator("td.state-running")).to_be_visible(timeout=STARTED)
    expect(row.locator("td").nth(3)).to_have_text("yes")
    assert listing.evaluate("window.notReloaded") is True

    row.locator("a").first.click()
    expect(listing.locator("#page h1").first).to_have_text(re.compile(r"Instance default/ticker-"))
    lines = listing.locator("[data-log-lines] .line")
    expect(lines.first).to_contain_text("tick ")
    # Follow: a line the container writes after the log was opened shows up.
    seen = int(lines.last.inner_text().rsplit("tick ", 1)[1])
    later = listing.locator("[data-log-lines] .line", has_text=re.compile(rf"tick {seen + 3}$"))
    expect(later).to_have_count(1)
    expect(listing.locator("[data-log-count]")).to_contain_text("lines")
