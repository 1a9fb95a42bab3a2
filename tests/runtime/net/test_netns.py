"""Named network namespaces for pods, created and deleted with iproute2."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.interfaces import InvalidInput
from shoal.runtime import create_netns, delete_netns, netns_exists, netns_name, netns_path
from tests.runtime.net.support import PodHarness, in_netns

pytestmark = pytest.mark.anyio


async def test_a_namespace_is_created_and_deleted_idempotently(pods: PodHarness) -> None:
    uid = pods.new_uid()
    path = await create_netns(uid)

    assert path == Path("/var/run/netns") / f"shoal-{uid[:12]}" == netns_path(uid)
    assert await netns_exists(uid)
    assert await create_netns(uid) == path
    assert "lo" in await in_netns(uid, "ip", "-br", "link")
    await delete_netns(uid)
    assert not await netns_exists(uid)
    assert not path.exists()
    await delete_netns(uid)


async def test_a_stale_namespace_file_is_replaced(pods: PodHarness) -> None:
    uid = pods.new_uid()
    path = netns_path(uid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()  # what a crash between creating the file and mounting on it leaves
    assert not await netns_exists(uid)

    assert await create_netns(uid) == path
    assert await netns_exists(uid)


def test_a_uid_that_cannot_name_a_namespace_is_refused() -> None:
    assert netns_name("0123456789abcdef") == "shoal-0123456789ab"
    with pytest.raises(InvalidInput, match=r"pod uid '\.\./x' cannot name a network"):
        netns_name("../x")
