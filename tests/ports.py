"""Free loopback ports for the servers tests start (registries, etcd, serf, HTTP)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """Return a TCP port nothing on 127.0.0.1 listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def free_tcp_udp_port() -> int:
    """Return a port free for both TCP and UDP on 127.0.0.1 (Serf gossip uses both)."""
    for _ in range(100):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")
