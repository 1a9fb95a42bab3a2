"""Liveness and readiness probes with Kubernetes semantics, run by the node loop.

Each running instance's containers are probed on their own schedule:
``initial_delay_seconds`` after the instance started, then every
``period_seconds``; a check slower than ``timeout_seconds`` fails. A probe
*passes* after ``success_threshold`` consecutive successes and *fails* after
``failure_threshold`` consecutive failures; in between it keeps its last
verdict. Readiness starts failing (an instance with a readiness probe is not
ready until it passes once); liveness starts passing.

Checks: ``exec`` runs a command through the runtime (exit 0 passes);
``http_get`` sends an HTTP/1.0 GET to the pod's address and passes on a 2xx or
3xx status; ``tcp_socket`` passes when a connection opens. HTTP is spoken by
hand over an anyio socket: one request line and one status line do not need
an HTTP client dependency in the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import anyio

from shoal.interfaces import ContainerRuntime, Instance, PodStatus, Probe, ShoalError

__all__ = ["ProbeKind", "ProbeTracker", "run_check"]

ProbeKind = str  # "liveness" or "readiness"


async def _http_get(host: str, port: int, path: str) -> tuple[bool, str]:
    async with await anyio.connect_tcp(host, port) as stream:
        request = f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: shoal-probe\r\n\r\n"
        await stream.send(request.encode())
        head = b""
        while b"\r\n" not in head and len(head) < 4096:
            try:
                head += await stream.receive(1024)
            except anyio.EndOfStream:
                break
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f"HTTP GET {path}: no HTTP status in {status_line[:60]!r}"
    code = int(parts[1])
    return 200 <= code < 400, f"HTTP GET {path} answered {code}"


async def run_check(
    probe: Probe, runtime: ContainerRuntime, pod: PodStatus, container: str
) -> tuple[bool, str]:
    """Run one check of ``probe``; return whether it passed and what was seen."""
    host = pod.ip or "127.0.0.1"
    try:
        with anyio.fail_after(probe.timeout_seconds):
            if probe.exec is not None:
                result = await runtime.exec(
                    pod.uid, container, probe.exec.command, probe.timeout_seconds
                )
                tail = (result.stdout + result.stderr).strip()[-120:]
                return result.exit_code == 0, f"exec exited {result.exit_code} {tail}".strip()
            if probe.http_get is not None:
                return await _http_get(host, probe.http_get.port, probe.http_get.path)
            assert probe.tcp_socket is not None
            async with await anyio.connect_tcp(host, probe.tcp_socket.port):
                return True, f"TCP {probe.tcp_socket.port} open"
    except TimeoutError:
        return False, f"timed out after {probe.timeout_seconds:g}s"
    except OSError as exc:
        return False, f"connection failed: {exc.strerror or exc}"
    except ShoalError as exc:
        return False, exc.message


@dataclass
class _Record:
    passing: bool
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0
    message: str = ""


@dataclass
class ProbeTracker:
    """Consecutive-result bookkeeping for every probe of every running instance."""

    records: dict[tuple[str, str, ProbeKind], _Record] = field(default_factory=dict)

    def due(self, inst: Instance, now: datetime, mono: float) -> list[tuple[str, ProbeKind, Probe]]:
        """Return the probes of ``inst`` whose next check is due."""
        started = inst.started_at or now
        age = (now - started).total_seconds()
        found: list[tuple[str, ProbeKind, Probe]] = []
        for container in inst.template.containers:
            for kind, probe in (
                ("liveness", container.liveness_probe),
                ("readiness", container.readiness_probe),
            ):
                if probe is None or age < probe.initial_delay_seconds:
                    continue
                record = self._record(inst.uid, container.name, kind)
                if mono >= record.next_at:
                    found.append((container.name, kind, probe))
        return found

    def next_due_in(self, inst: Instance, now: datetime, mono: float) -> float | None:
        """Return in how many seconds the next check of ``inst`` is due (None: it has no probe)."""
        started = inst.started_at or now
        age = (now - started).total_seconds()
        waits: list[float] = []
        for container in inst.template.containers:
            for kind, probe in (
                ("liveness", container.liveness_probe),
                ("readiness", container.readiness_probe),
            ):
                if probe is None:
                    continue
                if age < probe.initial_delay_seconds:
                    waits.append(probe.initial_delay_seconds - age)
                else:
                    record = self._record(inst.uid, container.name, kind)
                    waits.append(max(record.next_at - mono, 0.0))
        return min(waits) if waits else None

    def _record(self, uid: str, container: str, kind: ProbeKind) -> _Record:
        key = (uid, container, kind)
        if key not in self.records:
            self.records[key] = _Record(passing=kind == "liveness")
        return self.records[key]

    def observe(
        self,
        uid: str,
        container: str,
        kind: ProbeKind,
        probe: Probe,
        ok: bool,
        message: str,
        mono: float,
    ) -> bool:
        """Record one result; return whether it made the probe fail (its failure_threshold-th).

        That failure is a verdict once per run of failures: the next ones,
        and the successes, return False.
        """
        record = self._record(uid, container, kind)
        record.next_at = mono + probe.period_seconds
        record.message = message
        if ok:
            record.successes, record.failures = record.successes + 1, 0
            if record.successes >= probe.success_threshold:
                record.passing = True
            return False
        record.successes, record.failures = 0, record.failures + 1
        if record.failures >= probe.failure_threshold:
            record.passing = False
        return record.failures == probe.failure_threshold

    def ready(self, inst: Instance) -> bool:
        """Return whether every readiness probe of ``inst`` passes (True without probes)."""
        return all(
            self._record(inst.uid, c.name, "readiness").passing
            for c in inst.template.containers
            if c.readiness_probe is not None
        )

    def failing_liveness(self, inst: Instance) -> tuple[str, str] | None:
        """Return (container, last message) of a failed liveness probe, if any."""
        for c in inst.template.containers:
            if c.liveness_probe is None:
                continue
            record = self._record(inst.uid, c.name, "liveness")
            if not record.passing:
                return c.name, record.message
        return None

    def forget(self, keep: set[str]) -> None:
        """Drop the records of instances not in ``keep`` (uids)."""
        for key in [k for k in self.records if k[0] not in keep]:
            del self.records[key]
