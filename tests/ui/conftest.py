"""A real agent (mock runtime, private port and data dir) and a real headless Chromium.

The agent runs in this process, in a thread of its own (anyio's blocking
portal), so that tests can write container log lines through its mock
runtime; it is the same ``run_agent`` that ``shoal agent`` runs, serving HTTP
on a free loopback port, and the ``shoal`` CLI reaches it from subprocesses.
(tests/ui/test_runc.py runs a ``shoal agent --runtime runc`` process instead.)
Chromium is Debian's, driven by Playwright through ``executable_path``
(Playwright's own browser download cannot work here; scripts/system-deps.sh
installs ``chromium``). Browser, contexts and agent are closed by the fixtures'
finalizers.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from shoal.agent import NodeConfig, ShoalNode, run_agent
from shoal.client import init_keypair
from shoal.interfaces import Capacity, load_yaml_documents
from shoal.kube import parse_documents
from shoal.runtime import MockRuntime
from tests.shoal_cli import run_shoal

CHROMIUM = os.environ.get("SHOAL_CHROMIUM", "/usr/bin/chromium")
NODE = "ui-node"
T = TypeVar("T")

WEB = """
kind: Workload
name: web
replicas: 2
template:
  containers:
    - name: web
      image: busybox:1.36
      command: ["httpd", "-f", "-p", "8080"]
      resources:
        requests: {cpu: 100m, memory: 32Mi}
"""


class Dashboard(Protocol):
    """An agent serving the dashboard, as the browser fixtures need it."""

    @property
    def url(self) -> str:
        """The agent's base URL (``http://127.0.0.1:PORT``)."""
        ...

    def authorize(self, key_id: str, public_key: str, role: str) -> None:
        """Authorize a browser's key with ``role``, as the enrolment page says."""
        ...


@dataclass
class LiveAgent:
    """An agent serving on a private port, and how tests reach it."""

    url: str
    data_dir: Path
    home: Path
    node: ShoalNode
    portal: BlockingPortal
    env: dict[str, str] = field(default_factory=dict)

    def call(self, function: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run a coroutine function in the agent's event loop and return its result."""
        return self.portal.call(functools.partial(function, *args, **kwargs))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the real `shoal` CLI against the agent, as its admin."""
        return run_shoal(self.env, *args)

    def authorize(self, key_id: str, public_key: str, role: str) -> None:
        """Authorize a browser's key the way the enrolment page says: `shoal keys authorize`."""
        self.cli(
            "keys",
            "authorize",
            key_id,
            public_key,
            "--role",
            role,
            "--data-dir",
            str(self.data_dir),
        )

    def write_log(self, instance_uid: str, container: str, text: str) -> None:
        """Have a mock container write a log line (in the agent's loop: it wakes followers)."""
        runtime = self.node.runtime
        assert isinstance(runtime, MockRuntime)
        self.portal.call(runtime.write_log, instance_uid, container, text)


@contextmanager
def running_agent(root: Path, seed: str, **settings: Any) -> Iterator[LiveAgent]:
    """Run an agent (mock runtime, memory store) with the workloads of YAML ``seed`` applied.

    ``settings`` are more ``NodeConfig`` fields (capacity, control_resync, ...).
    """
    home, data_dir = root / "home", root / "data"
    init_keypair(home, "ui-admin")
    config = NodeConfig(
        data_dir=data_dir,
        api_addr="127.0.0.1:0",
        runtime="mock",
        name=NODE,
        state="memory",
        **settings,
    )
    with start_blocking_portal() as portal:
        future, node = portal.start_task(run_agent, config, home)
        try:
            url = f"http://{node.config.api_addr}"
            env = {**os.environ, "SHOAL_HOME": str(home), "SHOAL_SERVER": url}
            live = LiveAgent(url, data_dir, home, node, portal, env)
            objects = parse_documents(load_yaml_documents(seed, "seed.yaml"), "seed.yaml").objects
            live.call(node.service.apply, objects)
            yield live
        finally:
            future.cancel()


BUSY_INSTANCES = 1000
"""Instances on the busy agent's one node (tests/ui/test_scale.py, bench/ui_render.py)."""

BUSY = f"""
kind: Workload
name: many
replicas: {BUSY_INSTANCES}
template:
  containers:
    - name: main
      image: busybox:1.36
"""


@contextmanager
def running_busy_agent(root: Path) -> Iterator[LiveAgent]:
    """Run an agent whose one node holds ``BUSY_INSTANCES`` instances of one workload."""
    capacity = Capacity(cpu=64_000, memory=256 << 30, pods=BUSY_INSTANCES + 10)
    # No periodic pass over every instance: the pages are opened on a settled node.
    with running_agent(root, BUSY, capacity=capacity, node_resync=3600.0) as live:
        yield live


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAgent]:
    with running_agent(tmp_path_factory.mktemp("ui-agent"), WEB) as live:
        yield live


@contextmanager
def chromium() -> Iterator[Browser]:
    """Launch headless Chromium (Debian's, at CHROMIUM) through Playwright; close it afterwards."""
    playwright = sync_playwright().start()
    try:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()
    finally:
        playwright.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run scripts/system-deps.sh (apt-get install chromium)"
        )
    with chromium() as launched:
        yield launched


@dataclass
class Enrolled:
    """A browser context whose key the agent authorized with ``role``."""

    context: BrowserContext
    key_id: str
    public_key: str
    role: str


def enrol(browser: Browser, agent: Dashboard, role: str) -> Enrolled:
    """Open the dashboard in a fresh context, authorize the key it shows, continue."""
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(agent.url + "/ui")
    expect(page.locator("#enrol")).to_be_visible()
    expect(page.locator("#enrol-reason")).to_contain_text("is not authorized")
    key_id = page.locator("#enrol-key-id").inner_text()
    public_key = page.locator("#enrol-public-key").inner_text()
    command = page.locator("#enrol-command").inner_text()
    assert command.startswith(f"shoal keys authorize {key_id} {public_key} "), command
    agent.authorize(key_id, public_key, role)
    page.click("#enrol-retry")
    expect(page.locator("#who")).to_have_text(f"{key_id} · {role}")
    page.close()
    return Enrolled(context, key_id, public_key, role)


@pytest.fixture(scope="module")
def operator(browser: Browser, agent: LiveAgent) -> Iterator[Enrolled]:
    enrolled = enrol(browser, agent, "operator")
    try:
        yield enrolled
    finally:
        enrolled.context.close()


@pytest.fixture(scope="module")
def viewer(browser: Browser, agent: LiveAgent) -> Iterator[Enrolled]:
    enrolled = enrol(browser, agent, "viewer")
    try:
        yield enrolled
    finally:
        enrolled.context.close()


@dataclass
class OpenPage:
    """A page of the dashboard, with every console error and uncaught exception it had."""

    page: Page
    errors: list[str]


class Pages:
    """Opens dashboard pages and closes them after the test.

    Each open page holds its live stream: Chromium allows six HTTP/1.1
    connections per host, so pages left open would starve the next ones.
    """

    def __init__(self) -> None:
        self.opened: list[Page] = []

    def open(self, enrolled: Enrolled, agent: Dashboard, path: str) -> OpenPage:
        """Open ``path`` in the enrolled context and wait until its fragment is shown."""
        page = enrolled.context.new_page()
        self.opened.append(page)
        errors: list[str] = []
        page.on(
            "console",
            lambda message: errors.append(message.text) if message.type == "error" else None,
        )
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(agent.url + path)
        try:
            expect(page.locator("#content > *").first).to_be_visible()
        except AssertionError as exc:
            raise AssertionError(f"{path} did not render (console: {errors}): {exc}") from None
        return OpenPage(page, errors)

    def track(self, page: Page) -> Page:
        """Close ``page`` after the test too."""
        self.opened.append(page)
        return page

    def close(self) -> None:
        """Close every page still open."""
        for page in self.opened:
            if not page.is_closed():
                page.close()


@pytest.fixture
def pages() -> Iterator[Pages]:
    tracker = Pages()
    try:
        yield tracker
    finally:
        tracker.close()
