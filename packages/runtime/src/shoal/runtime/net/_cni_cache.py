"""What a pod's network attachment is, and the per-pod cache that outlives the agent.

:class:`PodNetwork` is what the runtime gets back from attaching a pod: the
address its network namespace answers on, the gateway, the namespace path to
put into ``config.json`` and the host end of its veth pair.

:class:`AttachmentRecord` is the cache libcni keeps too (``/var/lib/cni``):
for every attached pod, the exact network configuration and port mappings it
was added with and the result ADD returned. DEL and CHECK must be given the
same configuration and that result (``prevResult``), so after a restart of
the agent, or a change of the node's network settings, a pod is still torn
down with what it was set up with. A record without a result is written just
before ADD, so that a crash in the middle still leaves enough to undo it.
Records are JSON files, replaced atomically.

The records also say which host ports are taken (:func:`check_host_ports`).
The portmap plugin checks nothing: given the same host port twice, it adds a
second DNAT rule that silently never matches, and a DNAT rule for a port a
host process listens on hijacks that process's traffic. So before a pod is
attached, its port mappings are checked against every attached pod's record
(which survives an agent restart) and against the host, by binding the
address and port.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from shoal.interfaces import InvalidInput, RuntimeFailure

__all__ = ["AttachmentRecord", "PodNetwork", "RecordStore", "check_host_ports", "check_pod_uid"]

_FORMAT = 1
_ANY = ("", "0.0.0.0")
_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_pod_uid(pod_uid: str) -> str:
    """Return ``pod_uid`` if it is usable as a CNI container id and a file name.

    Raises:
        InvalidInput: it is empty or has characters other than letters, digits,
            ``_``, ``.`` and ``-`` (or does not start with a letter or digit).

    """
    if not _UID.match(pod_uid) or len(pod_uid) > 128:
        raise InvalidInput(
            f"pod uid {pod_uid!r} cannot name a network: use 1-128 letters, digits, "
            "'_', '.' or '-', starting with a letter or digit",
            field="pod_uid",
        )
    return pod_uid


@dataclass(frozen=True, slots=True)
class PodNetwork:
    """A pod's place on the network, as the runtime needs it."""

    ip: str
    """Address the pod answers on (127.0.0.1 with host networking)."""
    gateway: str | None
    """The pod's gateway (the bridge's address); None with host networking."""
    netns_path: Path | None
    """The pod's network namespace, for ``config.json``; None with host networking."""
    host_interface: str | None = None
    """The host end of the pod's veth pair; None with host networking."""


@dataclass(frozen=True, slots=True)
class AttachmentRecord:
    """One attached pod: how it was added and what ADD answered."""

    pod_uid: str
    """The instance uid, also the CNI container id."""
    netns_path: str
    """``CNI_NETNS`` it was added with."""
    ifname: str
    """``CNI_IFNAME`` it was added with."""
    network: dict[str, Any]
    """The network configuration list it was added with."""
    port_mappings: list[dict[str, Any]]
    """The portmap plugin's ``runtimeConfig.portMappings``."""
    result: dict[str, Any] | None = None
    """The result of ADD; None while ADD has not finished."""

    def to_json(self) -> str:
        """Return the record as a JSON document."""
        return json.dumps(
            {
                "format": _FORMAT,
                "pod_uid": self.pod_uid,
                "netns_path": self.netns_path,
                "ifname": self.ifname,
                "network": self.network,
                "port_mappings": self.port_mappings,
                "result": self.result,
            },
            indent=1,
        )

    def attachment(self, bridge: str) -> PodNetwork:
        """Read the pod's address, gateway and host veth out of the ADD result.

        Raises:
            RuntimeFailure: the result has no IPv4 address on the pod's interface.

        """
        result = self.result or {}
        interfaces: list[dict[str, Any]] = result.get("interfaces") or []
        inside = [
            i
            for i, itf in enumerate(interfaces)
            if itf.get("name") == self.ifname and itf.get("sandbox")
        ]
        for entry in result.get("ips") or []:
            address = str(entry.get("address", ""))
            if entry.get("interface") in inside and ":" not in address:
                host = [itf["name"] for itf in interfaces if not itf.get("sandbox")]
                return PodNetwork(
                    ip=address.split("/")[0],
                    gateway=entry.get("gateway"),
                    netns_path=Path(self.netns_path),
                    host_interface=next((name for name in host if name != bridge), None),
                )
        raise RuntimeFailure(
            f"CNI ADD gave pod {self.pod_uid} no IPv4 address on {self.ifname}",
            plugin="bridge",
            result=result,
        )

    @classmethod
    def from_json(cls, text: str) -> AttachmentRecord:
        """Parse a record written by :meth:`to_json`.

        Raises:
            ValueError: it is not such a record.

        """
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError("not a Shoal CNI attachment record")
        result = data["result"]
        return cls(
            pod_uid=str(data["pod_uid"]),
            netns_path=str(data["netns_path"]),
            ifname=str(data["ifname"]),
            network=dict(data["network"]),
            port_mappings=[dict(m) for m in data["port_mappings"]],
            result=None if result is None else dict(result),
        )


class RecordStore:
    """The attachment records of one network, a JSON file per pod in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, pod_uid: str) -> Path:
        """Return the record file of ``pod_uid`` (a valid uid: see ``check_pod_uid``)."""
        return self.directory / f"{pod_uid}.json"

    async def load(self, pod_uid: str) -> AttachmentRecord | None:
        """Return the pod's record, or None if it has none.

        Raises:
            RuntimeFailure: the file exists but is not a record.

        """
        path = self.path(pod_uid)
        try:
            text = await anyio.Path(path).read_text()
        except FileNotFoundError:
            return None
        try:
            return AttachmentRecord.from_json(text)
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeFailure(
                f"the network cache {path} is damaged ({exc}): remove it and delete the "
                "pod's network namespace by hand",
                path=str(path),
            ) from exc

    async def save(self, record: AttachmentRecord) -> None:
        """Write the record atomically (a crash leaves the old one or the new one)."""
        await anyio.Path(self.directory).mkdir(parents=True, exist_ok=True)
        path = self.path(record.pod_uid)
        partial = anyio.Path(path.with_suffix(".tmp"))
        await partial.write_text(record.to_json())
        await partial.replace(path)

    async def remove(self, pod_uid: str) -> None:
        """Forget the pod; forgetting an unknown pod does nothing."""
        await anyio.Path(self.path(pod_uid)).unlink(missing_ok=True)

    async def all(self) -> list[AttachmentRecord]:
        """Return every readable record (damaged files are skipped), ordered by pod uid."""
        directory = anyio.Path(self.directory)
        if not await directory.is_dir():
            return []
        records = []
        async for path in directory.glob("*.json"):
            try:
                records.append(AttachmentRecord.from_json(await path.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return sorted(records, key=lambda r: r.pod_uid)


def check_host_ports(
    mappings: Sequence[dict[str, Any]],
    others: Sequence[AttachmentRecord],
    *,
    elsewhere: Sequence[tuple[str, Sequence[AttachmentRecord]]] = (),
) -> None:
    """Fail if another pod or a host process holds a host port in ``mappings``.

    Args:
        mappings: The new pod's portmap ``portMappings``.
        others: The records of the other pods attached to the network.
        elsewhere: The records of the pods of other nodes on this host, each
            list with the data dir of its node.

    Raises:
        RuntimeFailure: a port is taken; ``details`` has ``reason``
            ``host_port_in_use``, the ``host_port`` and, for a pod, its uid
            as ``holder``.

    """
    for mapping in mappings:
        where = f"{mapping['hostIP'] or '*'}:{mapping['hostPort']}/{mapping['protocol']}"
        for other in others:
            if any(_same_host_port(mapping, theirs) for theirs in other.port_mappings):
                raise RuntimeFailure(
                    f"host port {where} is already published by pod {other.pod_uid}: "
                    "pick another host_port",
                    reason="host_port_in_use",
                    host_port=mapping["hostPort"],
                    holder=other.pod_uid,
                )
        for data_dir, records in elsewhere:
            for other in records:
                if any(_same_host_port(mapping, theirs) for theirs in other.port_mappings):
                    raise RuntimeFailure(
                        f"host port {where} is already published by pod {other.pod_uid} of "
                        f"the node on data dir {data_dir}: pick another host_port",
                        reason="host_port_in_use",
                        host_port=mapping["hostPort"],
                        holder=other.pod_uid,
                        data_dir=data_dir,
                    )
        if not _bindable(mapping["hostIP"], mapping["hostPort"], mapping["protocol"]):
            raise RuntimeFailure(
                f"host port {where} is in use by a process on the node: pick another host_port",
                reason="host_port_in_use",
                host_port=mapping["hostPort"],
            )


def _same_host_port(mine: dict[str, Any], theirs: dict[str, Any]) -> bool:
    if (mine["hostPort"], mine["protocol"]) != (theirs["hostPort"], theirs["protocol"]):
        return False
    return mine["hostIP"] == theirs["hostIP"] or mine["hostIP"] in _ANY or theirs["hostIP"] in _ANY


def _bindable(host_ip: str, port: int, protocol: str) -> bool:
    """Return whether nothing on the host holds ``host_ip:port`` (a bind succeeds)."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        if kind == socket.SOCK_STREAM:
            # Only a listener should count, not connections lingering in TIME_WAIT.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host_ip or "0.0.0.0", port))
        except OSError:
            return False
    return True
