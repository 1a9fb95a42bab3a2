"""Bridge networks owned host-wide: no two data dirs on one host share a bridge or a subnet.

Why: a node hands out pod addresses with CNI's ``host-local`` IPAM, whose
reservations live in the node's data dir. Two nodes on one host with the same
bridge and subnet would both hand out 198.18.0.2, and a port one of them
publishes could reach the other's pod. So every bridge network is *claimed*
in a registry of the host, :data:`HOST_NETWORKS_DIR`: one file per bridge,
``<bridge>.json``, naming its subnet and the data dir that owns it. The data
dir keeps its own copy in ``<data dir>/cni/network.json``. Separate bridges
also keep pods apart: a pod has a route to its own subnet only.

The rules, applied under an ``flock`` of the registry so that two agents
starting at once cannot both win:

* A data dir keeps its network across restarts. A data dir from before the
  registry, with pods attached, keeps the bridge those pods were attached to.
* With neither bridge nor subnet given, a data dir gets the first free pair
  ``shoalN`` / ``198.18.N.0/24``: a name no one claims and no interface of the
  host uses (an idle bridge left behind may be taken again), a subnet that
  overlaps no claim and no address of another interface of the host.
* A bridge or subnet given that another data dir owns (or a subnet that
  overlaps another owner's, or an address of the host) is refused with a
  Conflict that names the owner (its data dir, and its agent's pid or that
  none runs) and the flags that pick another.
* Asking for another network while pods are attached to the current one is
  refused: their teardown needs it.
* A claim whose data dir no longer names it (the data dir was deleted, or
  reset) is stale and dropped. ``shoal node reset`` releases a claim.

Why a registry of our own: CNI has no allocator across networks. Sharing one
``host-local`` data dir between nodes would keep addresses apart, but on one
bridge every node's pods would reach every other's.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from shoal.interfaces import Conflict, agent_pid

from ._cni import check_bridge
from ._cni_cache import AttachmentRecord, RecordStore

__all__ = [
    "HOST_NETWORKS_DIR",
    "HostNetworks",
    "NetworkClaim",
    "attachments_of",
    "legacy_network",
]

HOST_NETWORKS_DIR = Path("/var/lib/shoal/networks")
"""The host's registry of bridge networks: one ``<bridge>.json`` per claimed bridge."""

_POOL = ipaddress.IPv4Network("198.18.0.0/16")
"""Where networks are picked from when none is given: ``198.18.N.0/24``, bridge ``shoalN``."""
_RECORD = "network.json"


@dataclass(frozen=True)
class NetworkClaim:
    """A bridge network and the data dir that owns it."""

    bridge: str
    """The Linux bridge (and CNI network) name."""
    subnet: str
    """Its IPv4 subnet; the first address is the pods' gateway."""
    data_dir: Path
    """The data dir of the node that owns it."""

    def to_json(self) -> str:
        """Return the claim as the registry stores it."""
        data = {"bridge": self.bridge, "subnet": self.subnet, "data_dir": str(self.data_dir)}
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> NetworkClaim:
        """Parse :meth:`to_json`'s output.

        Raises:
            ValueError: it is not a claim.

        """
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a network claim")
        return cls(str(data["bridge"]), str(data["subnet"]), Path(str(data["data_dir"])))

    def owner(self) -> str:
        """Say who owns it, for messages: its data dir and whether an agent runs there."""
        pid = agent_pid(self.data_dir)
        running = f"agent pid {pid}" if pid is not None else "no agent running; its pods may"
        if pid is None:
            running += f" still run, `shoal node reset --data-dir {self.data_dir}` frees it"
        return f"the node on data dir {self.data_dir} ({running})"


class HostNetworks:
    """The host's registry of bridge networks.

    Args:
        root: The registry directory; :data:`HOST_NETWORKS_DIR` on a real host.

    """

    def __init__(self, root: Path = HOST_NETWORKS_DIR) -> None:
        self.root = root

    def owned_by(self, data_dir: Path) -> NetworkClaim | None:
        """Return the network ``data_dir`` has claimed, or None."""
        return _read_record(data_dir)

    def claim(
        self, data_dir: Path, *, bridge: str | None = None, subnet: str | None = None
    ) -> NetworkClaim:
        """Return the network of ``data_dir``: the one it has, the one asked for, or a free one.

        Args:
            data_dir: The node's data dir (resolved, existing).
            bridge: The bridge asked for (``--bridge``); None for any free one.
            subnet: The subnet asked for (``--bridge-subnet``); None for any free one.

        Raises:
            InvalidInput: the bridge name or subnet is not valid.
            Conflict: another data dir owns the bridge or an overlapping
                subnet, the subnet overlaps an address of the host, pods are
                attached to another network of this data dir, or no network is free.

        """
        data_dir = data_dir.resolve()
        if bridge is not None or subnet is not None:
            check_bridge(bridge or "shoal0", subnet or "198.18.0.0/24")
        with self._locked():
            claims = self._live_claims()
            mine = claims.pop(data_dir, None)
            if mine is None and (legacy := legacy_network(data_dir)) is not None:
                for other in claims.values():
                    if other.bridge == legacy.bridge:
                        raise Conflict(
                            f"data dir {data_dir} has pods on bridge {legacy.bridge} from before "
                            f"bridges were owned host-wide, but it belongs to {other.owner()}: "
                            f"stop that node, or remove these pods first with `shoal node reset "
                            f"--data-dir {data_dir}`",
                            bridge=legacy.bridge,
                            owner=str(other.data_dir),
                        )
                mine = legacy
            if mine is not None and (bridge or mine.bridge, subnet or mine.subnet) == (
                mine.bridge,
                mine.subnet,
            ):
                chosen = mine
            else:
                if mine is not None:
                    _check_unused(mine, data_dir)
                chosen = self._choose(data_dir, bridge, subnet, list(claims.values()))
            self._write(chosen)
            return chosen

    def release(self, data_dir: Path) -> NetworkClaim | None:
        """Give up ``data_dir``'s network; return it, or None if it had none."""
        data_dir = data_dir.resolve()
        with self._locked():
            mine = _read_record(data_dir)
            if mine is None:
                return None
            entry = self.root / f"{mine.bridge}.json"
            with contextlib.suppress(OSError, ValueError):
                if NetworkClaim.from_json(entry.read_text()).data_dir == data_dir:
                    entry.unlink()
            with contextlib.suppress(FileNotFoundError):
                (data_dir / "cni" / _RECORD).unlink()
            return mine

    @contextlib.asynccontextmanager
    async def ports_held(self) -> AsyncIterator[None]:
        """Hold the host's lock on publishing ports, across every node of this host.

        A node checks the host ports its neighbours publish and records its
        own under it, so two nodes publishing one port at the same instant
        cannot both pass the check. Held for that check and write only.
        """
        self.root.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(self.root / ".ports.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            # Not cancellable: a cancelled wait would leave the thread to take the lock.
            await anyio.to_thread.run_sync(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def neighbours(self, data_dir: Path) -> list[NetworkClaim]:
        """Return the live claims of every other data dir on this host."""
        data_dir = data_dir.resolve()
        with self._locked():
            return [c for owner, c in self._live_claims().items() if owner != data_dir]

    def _choose(
        self,
        data_dir: Path,
        bridge: str | None,
        subnet: str | None,
        others: list[NetworkClaim],
    ) -> NetworkClaim:
        """Pick the network for a data dir that has none, or is asked for another."""
        taken_names = {c.bridge: c for c in others}
        host = _host_addresses()
        if bridge is not None and bridge in taken_names:
            raise Conflict(
                f"bridge {bridge} belongs to {taken_names[bridge].owner()}: {_FIX}",
                bridge=bridge,
                owner=str(taken_names[bridge].data_dir),
            )
        if subnet is not None:
            _check_subnet(ipaddress.IPv4Network(subnet), others, host, bridge)
            return NetworkClaim(bridge or self._free_name(taken_names, host), subnet, data_dir)
        for candidate in _POOL.subnets(new_prefix=24):
            name = bridge or f"shoal{candidate.network_address.packed[2]}"
            if name in taken_names or (bridge is None and _in_use(name, host)):
                continue
            try:
                _check_subnet(candidate, others, host, name)
            except Conflict:
                continue
            return NetworkClaim(name, str(candidate), data_dir)
        raise Conflict(f"no free bridge network left in {_POOL}: {_FIX}")

    @staticmethod
    def _free_name(taken: dict[str, NetworkClaim], host: _HostLinks) -> str:
        for index in range(1024):
            name = f"shoal{index}"
            if name not in taken and not _in_use(name, host):
                return name
        raise Conflict(f"no free bridge name shoal0..shoal1023: {_FIX}")

    def _live_claims(self) -> dict[Path, NetworkClaim]:
        """Read the registry, dropping claims whose data dir no longer names them."""
        live: dict[Path, NetworkClaim] = {}
        for entry in sorted(self.root.glob("*.json")):
            try:
                claim = NetworkClaim.from_json(entry.read_text())
            except (OSError, ValueError, KeyError):
                continue  # not ours, or half-written by hand: leave it, ignore it
            if _read_record(claim.data_dir) == claim:
                live[claim.data_dir] = claim
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
        return live

    def _write(self, claim: NetworkClaim) -> None:
        """Write the claim to the registry and to its data dir (each atomically)."""
        previous = _read_record(claim.data_dir)
        _write_atomic(self.root / f"{claim.bridge}.json", claim.to_json())
        _write_atomic(claim.data_dir / "cni" / _RECORD, claim.to_json())
        if previous is not None and previous.bridge != claim.bridge:
            entry = self.root / f"{previous.bridge}.json"
            with contextlib.suppress(OSError, ValueError, KeyError):
                if NetworkClaim.from_json(entry.read_text()).data_dir == claim.data_dir:
                    entry.unlink()  # ours: another data dir's claim is never touched

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o755)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise Conflict(
                f"cannot use the host's network registry {self.root} ({exc.strerror or exc}): "
                "bridge networking needs root",
                path=str(self.root),
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


_FIX = (
    "start this node without --bridge and --bridge-subnet to get a free network, "
    "or pick another with --bridge NAME --bridge-subnet CIDR (inside 198.18.0.0/15)"
)


@dataclass(frozen=True)
class _HostLinks:
    links: set[str]
    """Names of the host's network interfaces."""
    addresses: list[tuple[str, ipaddress.IPv4Interface]]
    """(interface, address/prefix) of every IPv4 address of the host."""


def _host_addresses() -> _HostLinks:
    """Read the host's interfaces and IPv4 addresses (``ip -o -4 addr``)."""
    links = set(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else set()
    try:
        done = subprocess.run(
            ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False
        )
    except OSError:
        return _HostLinks(links, [])
    addresses = []
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "inet":
            with contextlib.suppress(ValueError):
                addresses.append((fields[1], ipaddress.IPv4Interface(fields[3])))
    return _HostLinks(links, addresses)


def _in_use(link: str, host: _HostLinks) -> bool:
    """Return whether an interface of this name exists and is not an idle bridge.

    A bridge with no port left (its node reset, or its data dir deleted) is
    free to take again; the bridge plugin reuses an existing bridge.
    """
    if link not in host.links:
        return False
    ports = Path("/sys/class/net", link, "brif")
    try:
        return any(ports.iterdir())
    except OSError:
        return True  # not a bridge: someone else's interface


def _check_subnet(
    subnet: ipaddress.IPv4Network,
    others: list[NetworkClaim],
    host: _HostLinks,
    bridge: str | None,
) -> None:
    """Refuse a subnet that overlaps another owner's or an address of the host.

    The bridge's own address (from an earlier start) is no overlap.
    """
    for other in others:
        if subnet.overlaps(ipaddress.IPv4Network(other.subnet)):
            raise Conflict(
                f"subnet {subnet} overlaps {other.subnet} of bridge {other.bridge}, which "
                f"belongs to {other.owner()}: {_FIX}",
                subnet=str(subnet),
                owner=str(other.data_dir),
            )
    for link, address in host.addresses:
        if link != bridge and address.network.overlaps(subnet):
            raise Conflict(
                f"subnet {subnet} overlaps address {address} of interface {link} on this "
                f"host: {_FIX}",
                subnet=str(subnet),
                interface=link,
            )


def _check_unused(mine: NetworkClaim, data_dir: Path) -> None:
    """Refuse to move a data dir to another network while pods are attached to its own."""
    attached = list((data_dir / "cni" / "pods").glob("*.json"))
    if attached:
        raise Conflict(
            f"data dir {data_dir} has {len(attached)} pod(s) attached to bridge {mine.bridge} "
            f"({mine.subnet}): start it with --bridge {mine.bridge} --bridge-subnet "
            f"{mine.subnet} (or without both), or stop its pods first with "
            f"`shoal node reset --data-dir {data_dir}`",
            bridge=mine.bridge,
        )


def _read_record(data_dir: Path) -> NetworkClaim | None:
    try:
        claim = NetworkClaim.from_json((data_dir / "cni" / _RECORD).read_text())
    except (OSError, ValueError, KeyError):
        return None
    return NetworkClaim(claim.bridge, claim.subnet, data_dir)


def legacy_network(data_dir: Path) -> NetworkClaim | None:
    """The network that pods attached before the registry existed were attached to."""
    for path in sorted((data_dir / "cni" / "pods").glob("*.json")):
        try:
            network = AttachmentRecord.from_json(path.read_text()).network
            bridge = network["plugins"][0]
            subnet = bridge["ipam"]["ranges"][0][0]["subnet"]
            return NetworkClaim(str(bridge["bridge"]), str(subnet), data_dir)
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            continue
    return None


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def attachments_of(claim: NetworkClaim) -> RecordStore:
    """Return the attachment records of the pods on ``claim``'s network."""
    return RecordStore(claim.data_dir / "cni" / "pods")
