"""The dashboard's static side, without a browser: script budget, caching, licences, CSP.

The budget (docs/ui.md, "Assets and their limits") is measured as a browser
meets it: the scripts each served page references, fetched from the app,
raw and as transferred (gzip).
"""

from __future__ import annotations

import gzip
import hashlib
import re
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from shoal.interfaces import Actor, Caller, Service, Unauthenticated
from shoal.ui import create_ui_app

PACKAGE = Path(__file__).parents[2] / "packages/ui/src/shoal/ui"
VENDOR = PACKAGE / "static/vendor"

PAGE_RAW = 100_000
"""Bytes of JavaScript (uncompressed) a page without charts may load."""
CHART_PAGE_RAW = 130_000
"""Bytes of JavaScript (uncompressed) a page drawing charts may load: uPlot alone is 51 kB."""
CHART_LIBRARY = "/ui/static/vendor/uPlot-"
TRANSFERRED = 50_000
"""Bytes of JavaScript (gzip, as sent) any page transfers, and all pages together."""
A_LIBRARY = 60_000
"""The budget has to catch a library of this size added to any page."""

DETAIL_PAGES = (
    "/ui/workloads/default/web",
    "/ui/instances/default/web-0",
    "/ui/nodes/ui-node",
    "/ui/search?q=web",
)


class NoService:
    def with_actor(self, actor: Actor) -> Service:
        raise AssertionError("a page shell or a refused request must not reach the service")


def refuse(scope: Mapping[str, Any], body: bytes) -> Caller:
    raise Unauthenticated("not signed", reason="missing_signature")


@contextmanager
def client() -> Iterator[TestClient]:
    with TestClient(create_ui_app(NoService(), refuse)) as http:
        yield http


class Links(HTMLParser):
    """The scripts and the navigation links of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str | None] = []
        self.nav: list[str] = []
        self._in_nav = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            self.scripts.append(found.get("src"))
        elif tag == "nav":
            self._in_nav = True
        elif tag == "a" and self._in_nav and found.get("href"):
            self.nav.append(str(found["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "nav":
            self._in_nav = False


def links(http: TestClient, path: str) -> Links:
    response = http.get(path)
    assert response.status_code == 200, path
    parsed = Links()
    parsed.feed(response.text)
    return parsed


def every_page(http: TestClient) -> list[str]:
    """Every page of the dashboard: those in the navigation, and one of each detail page."""
    nav = links(http, "/ui").nav
    assert len(nav) >= 7, nav
    return [*nav, *DETAIL_PAGES]


def sizes(http: TestClient, src: str) -> tuple[int, int]:
    """The bytes of script ``src`` as it runs, and as it is transferred to a gzip browser."""
    raw = http.get(src, headers={"accept-encoding": "identity"})
    assert raw.status_code == 200 and "content-encoding" not in raw.headers, src
    with http.stream("GET", src, headers={"accept-encoding": "gzip, deflate, br"}) as sent:
        assert sent.headers["content-encoding"] == "gzip", src
        body = b"".join(sent.iter_raw())
    assert gzip.decompress(body) == raw.content, src
    return len(raw.content), len(body)


def test_every_page_keeps_to_the_javascript_budget() -> None:
    table: dict[str, tuple[int, int]] = {}
    loaded: dict[str, tuple[int, int]] = {}
    with client() as http:
        for path in every_page(http):
            scripts = links(http, path).scripts
            assert scripts and None not in scripts, f"{path}: an inline script"
            assert all(str(src).startswith("/ui/static/") for src in scripts), scripts
            for src in scripts:
                loaded.setdefault(str(src), sizes(http, str(src)))
            raw = sum(loaded[str(src)][0] for src in scripts)
            sent = sum(loaded[str(src)][1] for src in scripts)
            charts = any(str(src).startswith(CHART_LIBRARY) for src in scripts)
            budget = CHART_PAGE_RAW if charts else PAGE_RAW
            print(f"{path:32} {raw:7} bytes raw {sent:7} transferred")
            assert raw <= budget, f"{path} loads {raw} bytes of JavaScript (budget {budget})"
            assert sent <= TRANSFERRED, f"{path} transfers {sent} bytes of JavaScript"
            # A budget that cannot fail is no budget: a 60 kB library must break it.
            assert raw + A_LIBRARY > budget, f"{path}: the budget has grown loose"
            table[path] = (raw, sent)
    in_all = sum(sent for _, sent in loaded.values())
    print(f"{'all pages':32} {sum(r for r, _ in loaded.values()):7} bytes raw {in_all:7} sent")
    assert in_all <= TRANSFERRED, loaded
    assert "/ui/static/vendor/htmx-2.0.11.min.js" in {src.split("?")[0] for src in loaded}
    assert len(table) >= 11


def test_scripts_are_cached_by_version_and_revalidated_without_it() -> None:
    with client() as http:
        src = next(str(s) for s in links(http, "/ui").scripts if "app.js" in str(s))
        path, version = src.split("?v=")
        versioned = http.get(src, headers={"accept-encoding": "gzip"})
        assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert versioned.headers["vary"] == "Accept-Encoding"
        assert versioned.headers["content-type"] == "text/javascript; charset=utf-8"
        assert versioned.text == (PACKAGE / "static/app.js").read_text()  # httpx decodes gzip
        stale = http.get(path + "?v=0000", headers={"accept-encoding": "identity"})
        assert stale.headers["cache-control"] == "no-cache"
        assert stale.headers["etag"] == f'"{version}"' != versioned.headers["etag"]
        again = http.get(
            path, headers={"if-none-match": stale.headers["etag"], "accept-encoding": "identity"}
        )
        assert again.status_code == 304 and again.content == b""
        refused = http.get(path, headers={"accept-encoding": "gzip;q=0"})
        assert "content-encoding" not in refused.headers
        assert http.get("/ui/static/vendor/missing.js").status_code == 404
        assert http.post(path).status_code == 405


def test_every_vendored_file_is_npm_s_own_and_carries_its_licence() -> None:
    libraries = {re.sub(r"-[0-9][^/]*$", "", path.name) for path in VENDOR.glob("*.js")}
    assert libraries == {"htmx", "uPlot"}
    for library in libraries:
        assert "Permission" in (VENDOR / f"LICENSE.{library}").read_text()
    sources = tomllib.loads((VENDOR / "SOURCES.toml").read_text())
    files = {path.name for path in VENDOR.iterdir()} - {"SOURCES.toml"}
    assert set(sources) == files, "every vendored file, and only those, has its source"
    for name, source in sources.items():
        digest = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
        assert digest == source["sha256"], f"{name} differs from {source['npm']} {source['path']}"
        assert source["integrity"].startswith("sha512-"), name


def test_every_response_has_a_strict_csp_and_templates_hold_no_inline_code() -> None:
    with client() as http:
        app_js = next(str(s) for s in links(http, "/ui").scripts if "app.js" in str(s))
        for path in ("/ui", "/ui/nodes", "/ui/instances/default/web-0", "/ui/f/overview", app_js):
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
