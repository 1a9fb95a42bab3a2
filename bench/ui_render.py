"""Benchmark: first render of the dashboard's instances page with 1,000 instances on one node.

Shoal's number: an agent in this process (``running_busy_agent`` of
``tests/ui/conftest.py``: mock runtime, memory store, one node holding 1,000
instances of one workload, settled before the first round) and Debian's
headless Chromium driven by Playwright, as ``tests/ui`` launch it, in a
browser context enrolled as an operator. The clock starts before a new
page's ``goto`` of ``/ui/instances`` and stops when the first row of
``table.instances`` is in the document (``wait_for_function``, polled on
every animation frame: the wait ``tests/ui/test_scale.py`` used when it
timed this). In between: the shell page, its stylesheet and scripts, the
fragment request the browser signs with its WebCrypto key, the agent's
verification and rendering of the first 200 rows, and the browser's swap.

Its floor: the same browser, the same context, a new page navigating to the
same document as a static file: the instances page as rendered once (its
DOM from ``page.content()``, rows included) with the scripts taken out and
its stylesheet beside it, served by a stdlib ``http.server`` on a free
loopback port, waited for the same way. What is left is what any server
costs the browser to parse and paint the same rows.

The two alternate, one of each per round and who goes first in turn, after
one warm-up round of each; every page is closed after its round (an open
page holds a live stream). Prints the median and minimum of each, the ratio
of the medians, and Shoal's median against the 300 ms budget of docs/ui.md.
Needs Chromium (``scripts/system-deps.sh`` installs Debian's; ``SHOAL_CHROMIUM``
to use another). Run with ``make bench`` or ``uv run python bench/ui_render.py
[--rounds N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, Page, expect

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script, only bench/ is on the path
    sys.path.insert(0, str(ROOT))

from bench.common import bounded  # noqa: E402

from tests.ui.conftest import (  # noqa: E402
    BUSY_INSTANCES,
    CHROMIUM,
    LiveAgent,
    Pages,
    chromium,
    enrol,
    running_busy_agent,
)

PATH = "/ui/instances"
FIRST_ROW = "() => document.querySelectorAll('table.instances tbody tr').length > 0"
"""What a round waits for, polled on every animation frame."""
BUDGET = 0.3
"""Seconds from navigation to the first row on the page (docs/ui.md)."""
SETTLE = 60_000
"""Milliseconds the agent has to run all its instances before the first round."""
SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.DOTALL | re.IGNORECASE)
STYLESHEET = re.compile(r'<link rel="stylesheet" href="([^"]+)"')


def first_render(context: BrowserContext, url: str) -> tuple[float, Page]:
    """Open ``url`` in a new page of ``context``; return the seconds to its first row, and it."""
    page = context.new_page()
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_function(FIRST_ROW, polling="raf")
    return time.perf_counter() - started, page


def round_of(context: BrowserContext, url: str) -> float:
    """Time one first render of ``url`` and close its page."""
    seconds, page = first_render(context, url)
    page.close()
    return seconds


def static_copy(page: Page, agent_url: str, directory: Path) -> tuple[str, int]:
    """Write ``page``'s document, scripts out, and its stylesheets under ``directory``.

    Returns the document's path on the static server and its size in bytes.
    """
    html = SCRIPT.sub("", page.content())
    for href in STYLESHEET.findall(html):
        with urllib.request.urlopen(agent_url + href, timeout=10) as response:
            body: bytes = response.read()
        target = directory / href.split("?", 1)[0].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    document = directory / "instances.html"
    document.write_text(html, encoding="utf-8")
    return "/instances.html", len(html.encode())


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves files with keep-alive, as the agent does, and logs nothing."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: the bench prints its own figures."""


@contextlib.contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on a free loopback port; yield its base URL."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def settle(context: BrowserContext, agent: LiveAgent, pages: Pages) -> None:
    """Wait until the workloads page shows every instance running."""
    page = context.new_page()
    pages.track(page)
    page.goto(agent.url + "/ui/workloads")
    expect(page.locator(".replicas")).to_have_text(
        f"{BUSY_INSTANCES}/{BUSY_INSTANCES}", timeout=SETTLE
    )
    page.close()


def report(rounds: int, size: int, shoal: list[float], floor: list[float]) -> None:
    """Print medians and minimums of both, their ratio and the budget check."""
    shoal_median, floor_median = statistics.median(shoal), statistics.median(floor)
    print(f"instances page, {BUSY_INSTANCES} instances on one node, {rounds} rounds")
    print(
        f"shoal  /ui/instances → first row  median {shoal_median * 1000:6.1f} ms"
        f"  min {min(shoal) * 1000:6.1f} ms"
    )
    print(
        f"floor  static copy ({size / 1024:.0f} KiB)  median {floor_median * 1000:6.1f} ms"
        f"  min {min(floor) * 1000:6.1f} ms"
    )
    print(f"ratio (shoal / floor): medians {shoal_median / floor_median:.2f}")
    verdict = "within" if shoal_median <= BUDGET else "over"
    print(
        f"first render median {shoal_median * 1000:.0f} ms "
        f"(budget {BUDGET * 1000:.0f} ms): {verdict}"
    )


def main(rounds: int) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="shoal-bench-ui-") as tmp,
        running_busy_agent(Path(tmp) / "agent") as agent,
        chromium() as browser,
    ):
        pages = Pages()
        operator = enrol(browser, agent, "operator")
        try:
            settle(operator.context, agent, pages)
            shoal_url = agent.url + PATH
            _, page = first_render(operator.context, shoal_url)  # warm-up, and the copy
            pages.track(page)
            expect(page.locator("table.instances tbody tr").first).to_be_visible()
            static = Path(tmp) / "static"
            static.mkdir()
            path, size = static_copy(page, agent.url, static)
            page.close()
            with static_server(static) as floor_base:
                floor_url = floor_base + path
                round_of(operator.context, floor_url)  # warm-up
                shoal_times: list[float] = []
                floor_times: list[float] = []
                for number in range(rounds):  # who goes first alternates
                    if number % 2:
                        floor_times.append(round_of(operator.context, floor_url))
                        shoal_times.append(round_of(operator.context, shoal_url))
                    else:
                        shoal_times.append(round_of(operator.context, shoal_url))
                        floor_times.append(round_of(operator.context, floor_url))
        finally:
            pages.close()
            operator.context.close()
    report(rounds, size, shoal_times, floor_times)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=bounded("rounds", 1, 100), default=9)
    args = parser.parse_args()
    if shutil.which(CHROMIUM) is None:
        sys.exit(f"ui_render needs Chromium at {CHROMIUM} (scripts/system-deps.sh installs it)")
    main(args.rounds)
