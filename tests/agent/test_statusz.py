"""GET /v1/statusz: version, uptime, role, leader, store and the configuration, secrets hidden."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from shoal.agent import NodeConfig, ShoalNode, run_agent
from shoal.agent._statusz import redact_config
from shoal.client import SignedAuth, load_keypair
from shoal.interfaces import REDACTED_VALUE, SLOS, Statusz, WorkloadSpec

pytestmark = pytest.mark.anyio


def test_secret_values_and_address_credentials_are_redacted_paths_are_not() -> None:
    shown = redact_config(
        {
            "join_token_file": "/etc/shoal/token",
            "join_token": "s3cr3t",
            "etcd": ["https://root:pw@198.18.0.5:2379", "198.18.0.6:2379"],
            "labels": {
                "api_key": "abc",
                "zone": "a",
                "apikey": "abc",
                "private-key": "abc",
                "auth": "abc",
                "db-pwd": "abc",
            },
            "name": "n1",
            "leader_ttl": 10.0,
        }
    )
    assert shown == {
        "join_token_file": "/etc/shoal/token",
        "join_token": REDACTED_VALUE,
        "etcd": [f"https://{REDACTED_VALUE}@198.18.0.5:2379", "198.18.0.6:2379"],
        "labels": {
            "api_key": REDACTED_VALUE,
            "zone": "a",
            "apikey": REDACTED_VALUE,
            "private-key": REDACTED_VALUE,
            "auth": REDACTED_VALUE,
            "db-pwd": REDACTED_VALUE,
        },
        "name": "n1",
        "leader_ttl": 10.0,
    }


def node_config(tmp_path: Path, **extra: Any) -> tuple[Path, NodeConfig]:
    """A home (the admin's key goes there) and a mock node's configuration, under ``tmp_path``."""
    home = tmp_path / "home"
    home.mkdir()
    config = NodeConfig(
        data_dir=tmp_path / "data",
        name="s1",
        runtime="mock",
        state="memory",
        api_addr="127.0.0.1:0",
        **extra,
    )
    return home, config


async def test_statusz_says_what_the_node_is_and_who_leads(tmp_path: Path) -> None:
    home, config = node_config(tmp_path, labels={"deploy_token": "s3cr3t-value", "zone": "a"})
    async with anyio.create_task_group() as tg:
        node: ShoalNode = await tg.start(run_agent, config, home)
        url = f"http://{node.config.api_addr}"
        auth = SignedAuth(load_keypair(home))
        async with httpx.AsyncClient(base_url=url, auth=auth, timeout=10) as http:
            with anyio.fail_after(10):
                while True:  # the campaign may not have been won at the first look
                    reply = await http.get("/v1/statusz")
                    assert reply.status_code == 200, reply.text
                    status = Statusz.model_validate(reply.json())
                    if status.leading:
                        break
                    await anyio.sleep(0.05)
        async with httpx.AsyncClient(base_url=url, timeout=10) as anonymous:
            unsigned = await anonymous.get("/v1/statusz")
        tg.cancel_scope.cancel()
    assert unsigned.status_code == 401
    assert status.node == "s1"
    assert status.role == "both"
    assert status.leader == "s1"
    assert status.store == "memory"
    assert status.runtime == "mock"
    assert status.version
    assert status.uptime_seconds >= 0
    assert status.config["api_addr"] == node.config.api_addr
    assert status.config["labels"] == {"deploy_token": REDACTED_VALUE, "zone": "a"}
    assert "s3cr3t-value" not in reply.text


async def test_statusz_measures_the_slos_from_the_nodes_histograms(tmp_path: Path) -> None:
    home, config = node_config(tmp_path)
    spec = WorkloadSpec.model_validate(
        {"name": "web", "template": {"containers": [{"name": "main", "image": "busybox:1.36"}]}}
    )
    async with anyio.create_task_group() as tg:
        node: ShoalNode = await tg.start(run_agent, config, home)
        url = f"http://{node.config.api_addr}"
        auth = SignedAuth(load_keypair(home))
        async with httpx.AsyncClient(base_url=url, auth=auth, timeout=10) as http:
            before = Statusz.model_validate((await http.get("/v1/statusz")).json())
            documents = [spec.model_dump(mode="json", exclude_defaults=True)]
            applied = await http.post("/v1/workloads/apply", json={"documents": documents})
            assert applied.status_code == 200, applied.text
            with anyio.fail_after(20):
                while True:  # until the start is observed
                    after = Statusz.model_validate((await http.get("/v1/statusz")).json())
                    if after.slos[0].observed_seconds is not None:
                        break
                    await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert [s.name for s in before.slos] == [slo.name for slo in SLOS]
    assert all(s.observed_seconds is None and s.met is None for s in before.slos)
    start, apply, reschedule = after.slos
    assert start.met is True and start.observed_seconds is not None
    assert start.observed_seconds <= start.objective_seconds == 5.0
    assert apply.met is True and apply.observed_seconds is not None
    assert reschedule.observed_seconds is None and reschedule.met is None
