"""CniNetwork with the real CNI plugins: addresses, published ports, teardown, adoption."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from shoal.interfaces import InvalidInput, NotFound, Port, RuntimeFailure
from shoal.runtime import (
    BridgeNetworking,
    CniNetwork,
    PodNetwork,
    create_netns,
    delete_netns,
    netns_exists,
)
from tests.ports import free_port
from tests.runtime.net.support import (
    BRIDGE,
    SUBNET,
    PodHarness,
    chains_mentioning,
    get_page,
    in_netns,
    in_subnet,
    ipam_reservations,
    link_exists,
    nat_rules,
)

pytestmark = pytest.mark.anyio


async def test_setup_gives_the_pod_eth0_with_an_address_in_the_subnet(pods: PodHarness) -> None:
    uid, net = await pods.attach()

    assert in_subnet(net.ip)
    assert net.gateway == "198.19.250.1"
    assert net.netns_path == Path("/var/run/netns") / f"shoal-{uid[:12]}"
    assert net.host_interface is not None and link_exists(net.host_interface)
    addresses = json.loads(await in_netns(uid, "ip", "-j", "-4", "addr", "show", "eth0"))
    assert [a["local"] for a in addresses[0]["addr_info"]] == [net.ip]
    loopback = json.loads(await in_netns(uid, "ip", "-j", "link", "show", "lo"))
    assert "UP" in loopback[0]["flags"]
    # Without outbound, a pod has no default route: it reaches the subnet only.
    assert await in_netns(uid, "ip", "-4", "route", "show", "default") == ""
    assert await pods.network.lookup(uid) == net
    assert await pods.network.check(uid) == net


async def test_a_published_port_answers_on_127_0_0_1(pods: PodHarness, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("hello from the pod\n")
    host_port = free_port()
    uid, _ = await pods.attach([Port(container_port=8080, host_port=host_port)])
    await pods.serve(uid, 8080, site)

    assert await get_page(host_port) == "hello from the pod\n"


async def test_two_pods_get_different_addresses(pods: PodHarness) -> None:
    results: list[PodNetwork] = []

    async def attach() -> None:
        results.append((await pods.attach())[1])

    async with anyio.create_task_group() as group:
        group.start_soon(attach)
        group.start_soon(attach)

    assert len({r.ip for r in results}) == 2
    assert all(in_subnet(r.ip) for r in results)
    assert ipam_reservations(pods.network) == sorted(r.ip for r in results)


async def test_two_pods_cannot_publish_the_same_host_port(pods: PodHarness) -> None:
    host_port = free_port()
    first, _ = await pods.attach([Port(container_port=80, host_port=host_port)])

    second = pods.new_uid()
    path = await create_netns(second)
    with pytest.raises(RuntimeFailure, match=rf"host port .*:{host_port}/tcp .* pod {first}"):
        await pods.network.setup(second, path, [Port(container_port=81, host_port=host_port)])

    assert await pods.network.attached() == [first]
    assert len(ipam_reservations(pods.network)) == 1
    assert second not in await nat_rules()
    assert first in await nat_rules()


async def test_a_host_port_a_host_process_listens_on_is_refused(pods: PodHarness) -> None:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        host_port = listener.extra(anyio.abc.SocketAttribute.local_port)
        with pytest.raises(RuntimeFailure, match="in use by a process on the node"):
            await pods.attach([Port(container_port=80, host_port=host_port)])

    assert await pods.network.attached() == []
    assert ipam_reservations(pods.network) == []


async def test_teardown_leaves_nothing_and_can_run_twice(pods: PodHarness) -> None:
    uid, net = await pods.attach([Port(container_port=80, host_port=free_port())])
    chains = await chains_mentioning(uid)
    assert chains and all(c.startswith("CNI-DN-") for c in chains)
    assert ipam_reservations(pods.network) == [net.ip]

    await pods.network.teardown(uid, net.netns_path)

    assert net.host_interface is not None and not link_exists(net.host_interface)
    assert "eth0" not in await in_netns(uid, "ip", "-br", "link")
    rules = await nat_rules()
    assert uid not in rules
    assert not any(chain in rules for chain in chains)
    assert ipam_reservations(pods.network) == []
    assert await pods.network.attached() == []
    await pods.network.teardown(uid, net.netns_path)
    await delete_netns(uid)
    assert not await netns_exists(uid)
    await delete_netns(uid)


async def test_teardown_after_the_namespace_is_gone_still_frees_everything(
    pods: PodHarness,
) -> None:
    uid, net = await pods.attach([Port(container_port=80, host_port=free_port())])
    await delete_netns(uid)

    await pods.network.teardown(uid, net.netns_path)

    assert uid not in await nat_rules()
    assert ipam_reservations(pods.network) == []


async def test_teardown_with_a_stale_netns_file_frees_everything_and_removes_it(
    pods: PodHarness,
) -> None:
    # As in a container restarted with a /run that is no tmpfs: the namespace's
    # mount is gone, its file stays, and CNI plugins refuse the file.
    uid, net = await pods.attach([Port(container_port=80, host_port=free_port())])
    assert net.netns_path is not None
    await anyio.run_process(["umount", str(net.netns_path)])
    assert net.netns_path.exists() and not await netns_exists(uid)

    await BridgeNetworking(pods.network).detach(uid)

    assert uid not in await nat_rules()
    assert ipam_reservations(pods.network) == []
    assert await pods.network.attached() == []
    assert not net.netns_path.exists()


async def test_a_new_network_object_on_the_same_root_tears_down_old_pods(
    pods: PodHarness,
) -> None:
    uid, net = await pods.attach([Port(container_port=80, host_port=free_port())])

    # The agent restarts, this time with another host address for new pods.
    restarted = CniNetwork(pods.network.root, bridge=BRIDGE, subnet=SUBNET, host_ip="0.0.0.0")
    assert await restarted.attached() == [uid]
    assert await restarted.lookup(uid) == net
    await restarted.teardown(uid)

    assert uid not in await nat_rules()
    assert ipam_reservations(restarted) == []
    assert await restarted.lookup(uid) is None


async def test_setting_up_an_attached_pod_again_keeps_or_replaces_its_network(
    pods: PodHarness,
) -> None:
    old_port, new_port = free_port(), free_port()
    uid, net = await pods.attach([Port(container_port=80, host_port=old_port)])
    assert net.netns_path is not None

    again = await pods.network.setup(
        uid, net.netns_path, [Port(container_port=80, host_port=old_port)]
    )
    assert again == net
    moved = await pods.network.setup(
        uid, net.netns_path, [Port(container_port=80, host_port=new_port)]
    )

    assert in_subnet(moved.ip)
    assert len(ipam_reservations(pods.network)) == 1
    rules = await nat_rules()
    assert f"--dport {new_port} -j DNAT --to-destination {moved.ip}:80" in rules
    assert f"--dport {old_port} " not in rules


async def test_outbound_adds_a_default_route_and_masquerading_that_teardown_removes(
    pods: PodHarness, tmp_path: Path
) -> None:
    outbound = CniNetwork(tmp_path / "out", bridge=BRIDGE, subnet=SUBNET, outbound=True)
    uid, net = await pods.attach(network=outbound)

    assert "via 198.19.250.1" in await in_netns(uid, "ip", "-4", "route", "show", "default")
    assert "MASQUERADE" in await nat_rules() and uid in await nat_rules()
    await outbound.teardown(uid, net.netns_path)
    assert uid not in await nat_rules()
    assert ipam_reservations(outbound) == []


async def test_a_failing_plugin_is_named_and_its_add_undone(
    pods: PodHarness, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for real in ("portmap", "loopback"):
        (plugins / real).symlink_to(Path("/usr/lib/cni", real))
    bridge = plugins / "bridge"
    bridge.write_text(
        '#!/bin/sh\ncat >/dev/null\n[ "$CNI_COMMAND" = ADD ] || exit 0\n'
        'echo \'{"cniVersion": "1.0.0", "code": 11, "msg": "no bridge today"}\'\nexit 1\n'
    )
    bridge.chmod(0o755)
    network = CniNetwork(tmp_path / "net", bridge=BRIDGE, subnet=SUBNET, plugin_dirs=[plugins])
    uid = pods.new_uid()
    netns = await create_netns(uid)

    with pytest.raises(RuntimeFailure, match="CNI plugin bridge ADD failed: no bridge today"):
        await network.setup(uid, netns, [Port(container_port=80, host_port=free_port())])
    assert await network.attached() == []
    assert uid not in await nat_rules()


async def test_a_pod_whose_del_fails_stays_listed_for_a_retry(
    pods: PodHarness, tmp_path: Path
) -> None:
    uid, _ = await pods.attach()
    broken = CniNetwork(
        pods.network.root, bridge=BRIDGE, subnet=SUBNET, plugin_dirs=[tmp_path / "nothing"]
    )

    with pytest.raises(RuntimeFailure, match="CNI plugin 'loopback' not found"):
        await broken.teardown(uid)
    assert await broken.attached() == [uid]
    await pods.network.teardown(uid)
    assert await pods.network.attached() == []
    assert ipam_reservations(pods.network) == []


async def test_a_missing_plugin_says_what_to_install(host_networking: None, tmp_path: Path) -> None:
    network = CniNetwork(tmp_path / "net", bridge=BRIDGE, subnet=SUBNET, plugin_dirs=[tmp_path])

    with pytest.raises(RuntimeFailure, match=r"'bridge' not found .*containernetworking-plugins"):
        await network.setup("0123456789abcdef", tmp_path / "no-netns", [])
    with pytest.raises(NotFound):
        await network.check("0123456789abcdef")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"bridge": "a-much-too-long-bridge"}, "bridge name"),
        ({"subnet": "198.18.0.1/24"}, "invalid network setting"),
        ({"subnet": "198.18.0.0/31"}, "too small"),
        ({"host_ip": "localhost"}, "invalid network setting"),
    ],
)
def test_invalid_settings_are_refused(
    setting: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match=message):
        CniNetwork(tmp_path, **setting)


async def test_a_uid_that_cannot_name_a_network_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="pod uid"):
        await CniNetwork(tmp_path).teardown("../etc")
