"""Real etcd members for the state tests: start one on loopback, stop it, start it again.

One member serves a whole test session (the ``etcd_endpoint`` fixture); tests
that stop etcd start their own. Data lives under /dev/shm when it exists, so
etcd's fsyncs cost nothing. Readiness is etcd's ``/health`` answering
``true`` (a leader is elected), polled with a bound; the poll is paced by
waiting on the process itself, so an etcd that exits is reported at once
with its log.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aetcd import Client, rpc

from tests.ports import free_port

__all__ = ["EtcdMember", "etcd_missing", "free_port", "revoke_every_lease", "running_etcd"]

READY_WITHIN = 20.0  # seconds for etcd to elect itself leader and answer /health
_SHM = Path("/dev/shm")


def etcd_missing() -> str | None:
    """Return why etcd tests cannot run here, or None."""
    if shutil.which("etcd") is None:
        return "etcd is missing: install etcd-server (scripts/system-deps.sh does)"
    return None


@contextmanager
def running_etcd(name: str = "shoal-test") -> Iterator[EtcdMember]:
    """Start an :class:`EtcdMember` (skip the test without etcd); remove it on exit."""
    reason = etcd_missing()
    if reason is not None:
        pytest.skip(reason)
    member = EtcdMember(name)
    try:
        member.start()
        yield member
    finally:
        member.remove()


class EtcdMember:
    """One single-member etcd cluster on loopback, as a subprocess."""

    def __init__(self, name: str = "shoal-test") -> None:
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        parent = _SHM if _SHM.is_dir() else None
        self.data_dir = Path(tempfile.mkdtemp(prefix="shoal-etcd-", dir=parent))
        self.log_path = self.data_dir / "etcd.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """Return the ``host:port`` that clients connect to."""
        return f"127.0.0.1:{self.client_port}"

    def start(self) -> None:
        """Start etcd (again, on the same data and ports) and wait until it is healthy."""
        client_url = f"http://{self.endpoint}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        command = [
            "etcd",
            f"--name={self.name}",
            f"--data-dir={self.data_dir / 'data'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster={self.name}={peer_url}",
            "--initial-cluster-state=new",
            # Short raft timings make etcd's minimum lease ttl one second.
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--logger=zap",
            "--log-level=warn",
        ]
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            if _healthy(f"http://{self.endpoint}/health"):
                return
            try:
                # Paces the polls, and notices at once if etcd exited.
                code = self._process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            raise RuntimeError(f"etcd exited with {code}:\n{self.log()}")
        self.stop()
        raise RuntimeError(f"etcd was not healthy within {READY_WITHIN} s:\n{self.log()}")

    def stop(self) -> None:
        """Kill etcd (SIGKILL: no goodbye to its clients) and reap it."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def remove(self) -> None:
        """Stop etcd and delete its data."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def log(self) -> str:
        """Return the end of etcd's log."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(json.load(response).get("health") == "true")
    except (OSError, urllib.error.URLError, ValueError):
        return False


async def revoke_every_lease(endpoint: str) -> None:
    """Revoke all leases, so none left by one test expires during the next."""
    host, _, port = endpoint.rpartition(":")
    async with Client(host, int(port), timeout=5) as client:
        listing = await client.leasestub.LeaseLeases(rpc.LeaseLeasesRequest(), timeout=5)
        for lease in listing.leases:
            try:
                await client.revoke_lease(lease.ID)
            except Exception as exc:  # expired meanwhile: fine
                if "not found" not in str(exc):
                    raise
