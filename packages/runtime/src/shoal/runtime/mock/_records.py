"""The in-memory records behind :class:`~shoal.runtime.MockRuntime`.

A :class:`PodRecord` holds one pod's :class:`ContainerRecord` objects. They are
plain mutable objects with ``__slots__`` (a benchmark holds thousands of them);
pydantic status models are built only when somebody asks.

Time-based faults are *settled lazily*: a running container with a pending
exit carries its deadline on the runtime clock's monotonic scale, and
:meth:`ContainerRecord.settle` turns it into an exited container the first
time anybody looks after the deadline. The state is therefore a pure function
of the clock's reading, which is what makes it deterministic under a manual
clock: advance the clock, then inspect, and the exit is there, no task
scheduling involved.

A pod's file volumes are kept as dictionaries of :class:`ProjectedFile` by
path; a container's ``sub_path`` mounts of them are *pinned*: copied when the
container is created (and again when it is started anew after an exit), so
they keep what they had when ``update_files`` swaps the volume, as on a node.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import anyio

from shoal.interfaces import (
    Container,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    LogLine,
    NotFound,
    PodSpec,
    PodStatus,
    ProjectedFile,
    RuntimeFailure,
)

from ._faults import Fault

__all__ = ["ContainerRecord", "PodRecord"]

SIGTERM_EXIT = 143
"""Exit code of a process that ended on SIGTERM (128 + 15)."""
SIGKILL_EXIT = 137
"""Exit code of a process that was SIGKILLed (128 + 9)."""


class ContainerRecord:
    """One container of a mock pod and everything the mock knows about it."""

    __slots__ = (
        "_changed",
        "exit_code",
        "exit_deadline",
        "exit_fault",
        "finished_at",
        "id",
        "logs",
        "message",
        "pinned",
        "spec",
        "started_at",
        "state",
    )

    def __init__(self, uid: str, spec: Container) -> None:
        self.spec = spec
        self.id = f"mock-{uid}-{spec.name}"
        self.state = ContainerState.CREATED
        self.exit_code: int | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.message = ""
        self.logs: list[LogLine] = []
        # A pending injected exit: when (on the clock's monotonic scale), and which.
        self.exit_deadline: float | None = None
        self.exit_fault: Fault | None = None
        self._changed: anyio.Event | None = None
        self.pinned: dict[str, dict[str, ProjectedFile]] = {}
        """What each sub_path mount of a file volume holds, by mount path."""

    @property
    def name(self) -> str:
        """Return the container's name within its pod."""
        return self.spec.name

    def settle(self, monotonic_now: float) -> None:
        """Apply a pending injected exit whose deadline has passed."""
        fault, started = self.exit_fault, self.started_at
        if self.exit_deadline is None or monotonic_now < self.exit_deadline:
            return
        self.exit_deadline = self.exit_fault = None
        if fault is None or started is None or self.state != ContainerState.RUNNING:
            return
        self.state = ContainerState.EXITED
        self.exit_code = fault.exit_code
        # The exit happened at the deadline, whenever somebody notices it.
        self.finished_at = started + timedelta(seconds=fault.seconds)
        self.message = fault.message or f"exited with code {fault.exit_code} (injected fault)"
        self.notify()

    def run(self, now: datetime, monotonic_now: float, exits: Fault | None) -> None:
        """Mark the container running from ``now``, as its start does.

        Args:
            now: The clock's wall time, for ``started_at`` and the start log line.
            monotonic_now: The clock's monotonic time, to place an injected exit.
            exits: An EXITS fault to arm for this run, if one fired.

        """
        self.state = ContainerState.RUNNING
        self.started_at = now
        self.finished_at = None
        self.exit_code = None
        self.message = ""
        self.exit_fault = exits
        self.exit_deadline = None if exits is None else monotonic_now + exits.seconds
        self.append_log(now, "stdout", f"started {self.name}")

    def finish(self, now: datetime, exit_code: int, message: str = "") -> None:
        """Mark the container exited now with ``exit_code``."""
        self.state = ContainerState.EXITED
        self.exit_code = exit_code
        self.finished_at = now
        self.message = message
        self.exit_deadline = self.exit_fault = None
        self.notify()

    def append_log(self, now: datetime, stream: str, text: str) -> None:
        """Record that the container wrote ``text`` (one line per line) on ``stream``."""
        for line in text.splitlines() or [""]:
            self.logs.append(LogLine(time=now, stream=stream, line=line))
        self.notify()

    def changed(self) -> anyio.Event:
        """Return an event that is set on the next change (new line, state, removal)."""
        # Created lazily: only log followers need one, and thousands of pods do not.
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def notify(self) -> None:
        """Wake whoever waits on :meth:`changed`."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def stats(self, configured: ContainerStats | None) -> ContainerStats:
        """Return ``configured`` stats while running, else zeros, under this name."""
        if configured is None or self.state != ContainerState.RUNNING:
            return ContainerStats(name=self.name)
        return configured.model_copy(update={"name": self.name})

    def status(self) -> ContainerStatus:
        """Return the container's status model."""
        return ContainerStatus(
            name=self.spec.name,
            id=self.id,
            state=self.state,
            exit_code=self.exit_code,
            started_at=self.started_at,
            finished_at=self.finished_at,
            message=self.message,
        )


class PodRecord:
    """One mock pod: its spec and its containers in creation order."""

    __slots__ = ("containers", "files", "init_containers", "removed", "spec")

    def __init__(self, spec: PodSpec) -> None:
        self.spec = spec
        self.containers = {c.name: ContainerRecord(spec.uid, c) for c in spec.containers}
        self.init_containers = {c.name: ContainerRecord(spec.uid, c) for c in spec.init_containers}
        self.removed = False
        self.files: dict[str, dict[str, ProjectedFile]] = {
            volume.name: {file.path: file for file in spec.files.get(volume.name, [])}
            for volume in spec.volumes
            if volume.files
        }
        """The files of each file volume, by volume name, then path."""
        for container in self.containers.values():
            self.pin_sub_paths(container)

    def pin_sub_paths(self, container: ContainerRecord) -> None:
        """Copy what the container's sub_path mounts of file volumes name now.

        Raises:
            RuntimeFailure: a sub_path names nothing in its file volume.

        """
        container.pinned = {}
        for mount in container.spec.volume_mounts:
            files = self.files.get(mount.name)
            if mount.sub_path is None or files is None:
                continue
            pinned = _below(files, mount.sub_path)
            if not pinned:
                raise RuntimeFailure(
                    f"sub_path {mount.sub_path!r} does not exist in volume {mount.name!r}: "
                    "correct volume_mounts[].sub_path or add the key or file it names",
                    uid=self.spec.uid,
                    volume=mount.name,
                    sub_path=mount.sub_path,
                )
            container.pinned[mount.mount_path] = pinned

    def file(self, container: str, path: str) -> ProjectedFile:
        """Return the file of a file volume that container ``container`` sees at ``path``.

        Raises:
            NotFound: no such container, or no file volume's file is at ``path``.

        """
        record = self.container(container)
        mounts = sorted(record.spec.volume_mounts, key=lambda m: -len(m.mount_path))
        for mount in mounts:
            prefix = mount.mount_path.rstrip("/")
            if path != prefix and not path.startswith(prefix + "/"):
                continue
            relative = path[len(prefix) :].lstrip("/")
            if mount.sub_path is not None:
                files = record.pinned.get(mount.mount_path, {})
            else:
                files = self.files.get(mount.name, {})
            found = files.get(relative)
            if found is not None:
                return found
            break
        raise NotFound(
            f"container {container!r} of pod {self.spec.uid!r} has no file volume file at {path!r}",
            uid=self.spec.uid,
            container=container,
            path=path,
        )

    def container(self, name: str) -> ContainerRecord:
        """Return the container called ``name``.

        Raises:
            NotFound: the pod has no such container.

        """
        record = self.containers.get(name) or self.init_containers.get(name)
        if record is None:
            raise NotFound(
                f"pod {self.spec.uid!r} has no container {name!r} "
                f"(it has {', '.join([*self.init_containers, *self.containers])})",
                uid=self.spec.uid,
                container=name,
            )
        return record

    def settle(self, monotonic_now: float) -> None:
        """Apply every pending injected exit whose deadline has passed."""
        for container in self.containers.values():
            container.settle(monotonic_now)

    def kill_running(self, now: datetime, exit_code: int, message: str) -> None:
        """Make every running container exit now with ``exit_code``."""
        for container in self.containers.values():
            if container.state == ContainerState.RUNNING:
                container.finish(now, exit_code, message)

    def wake(self) -> None:
        """Wake every log follower of the pod, so it looks again."""
        for container in [*self.init_containers.values(), *self.containers.values()]:
            container.notify()

    def forget(self) -> None:
        """Mark the pod removed and wake its log followers, which then end."""
        self.removed = True
        self.wake()

    def status(self) -> PodStatus:
        """Return the pod's status model."""
        return PodStatus(
            uid=self.spec.uid,
            name=self.spec.name,
            namespace=self.spec.namespace,
            containers=[c.status() for c in self.containers.values()],
        )


def _below(files: dict[str, ProjectedFile], sub_path: str) -> dict[str, ProjectedFile]:
    """Return the files at or under ``sub_path``, by their path relative to it."""
    sub_path = sub_path.strip("/")
    return {
        ("" if path == sub_path else path[len(sub_path) + 1 :]): file
        for path, file in files.items()
        if path == sub_path or path.startswith(sub_path + "/")
    }
