"""The dashboard's static side, without a browser: script budget, licences, CSP, no inline code."""

from __future__ import annotations

import gzip
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from shoal.interfaces import Actor, Caller, Service, Unauthenticated
from shoal.ui import create_ui_app

PACKAGE = Path(__file__).parents[2] / "packages/ui/src/shoal/ui"
VENDOR = PACKAGE / "static/vendor"
SCRIPT_BUDGET = 100_000
"""Bytes of JavaScript a page may load (the issue's 100 kB)."""


class NoService:
    def with_actor(self, actor: Actor) -> Service:
        raise AssertionError("a page shell or a refused request must not reach the service")


def refuse(scope: Mapping[str, Any], body: bytes) -> Caller:
    raise Unauthenticated("not signed", reason="missing_signature")


def client() -> TestClient:
    return TestClient(create_ui_app(NoService(), refuse))


def test_a_page_loads_at_most_100_kb_of_javascript_from_this_origin() -> None:
    with client() as http:
        shell = http.get("/ui/workloads")
        scripts = re.findall(r"<script[^>]*>", shell.text)
        sources = [re.search(r'src="([^"]+)"', tag) for tag in scripts]
        assert all(sources), f"an inline script: {scripts}"
        sizes = {m.group(1): len(http.get(m.group(1)).content) for m in sources if m}
    assert all(path.startswith("/ui/static/") for path in sizes)
    assert 0 < sum(sizes.values()) <= SCRIPT_BUDGET, sizes


def test_all_vendored_javascript_compresses_under_the_budget_and_carries_its_licence() -> None:
    scripts = [*VENDOR.glob("*.js"), PACKAGE / "static/app.js"]
    assert sum(len(gzip.compress(path.read_bytes())) for path in scripts) <= SCRIPT_BUDGET
    for library in ("htmx", "htmx-ext-sse", "uPlot"):
        assert (VENDOR / f"LICENSE.{library}").read_text().strip(), library
        assert list(VENDOR.glob(f"{library}-[0-9]*.js")), library


def test_every_response_has_a_strict_csp_and_templates_hold_no_inline_code() -> None:
    with client() as http:
        for path in ("/ui", "/ui/nodes", "/ui/f/overview", "/ui/static/app.js"):
            policy = http.get(path).headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe" not in policy, policy
    for template in (PACKAGE / "templates").rglob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template
        assert not re.search(r"\son[a-z]+=|\sstyle=|hx-on", text), template


def test_an_unsigned_data_request_is_refused_with_its_reason() -> None:
    with client() as http:
        response = http.get("/ui/f/workloads")
    assert response.status_code == 401
    assert response.json()["error"]["details"]["reason"] == "missing_signature"
