"""The shoal://manifests resource: the watched directory's files, read over MCP."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp_types import TextResourceContents

from shoal.kube import ManifestWatcher
from tests.mcp.support import Live

pytestmark = pytest.mark.anyio

WEB = """kind: Workload
name: web
template:
  containers:
    - name: main
      image: busybox:1.36
"""


async def test_reads_the_watched_files(live: Live, tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(WEB)
    (tmp_path / "web.yaml~").write_text("an editor's backup: not listed")
    watcher = ManifestWatcher(live.service, [tmp_path], "n1", debounce=0.1)
    live.service.manifests = watcher.statuses
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        async with Client(live.server()) as client:
            result = await client.read_resource("shoal://manifests")
        tg.cancel_scope.cancel()
    (content,) = result.contents
    assert isinstance(content, TextResourceContents)
    assert content.mime_type == "application/json"
    (web,) = json.loads(content.text)["manifests"]
    assert web["path"] == str(tmp_path / "web.yaml")
    assert web["objects"] == ["Workload default/web"]
    assert web["error"] == "" and web["applied_at"]


async def test_no_watched_directory_reads_empty(live: Live) -> None:
    async with Client(live.server()) as client:
        result = await client.read_resource("shoal://manifests")
    (content,) = result.contents
    assert isinstance(content, TextResourceContents)
    assert json.loads(content.text) == {"manifests": []}
