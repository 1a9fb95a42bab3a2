"""The per-container shim: creates one container, keeps its output and records its exit.

Why a shim: a container's stdout and stderr must outlive the agent. If they
were pipes to the agent, SIGKILLing the agent would leave the container
writing into broken pipes, and nobody would be left to learn its exit code
(only a parent can ``waitpid`` a process). So every container gets a small
detached process of its own, like containerd's shim:

1. The agent starts ``python -I -S _shim.py <container dir>/shim.json``
   (stdlib only, run as a script so it does not import Shoal, pydantic or
   anyio and starts in a few milliseconds) and reads its stdout. (In fact
   one shim is started ahead with ``--standby`` and given the path on its
   stdin, see :mod:`._shimlaunch`.)
2. The shim forks, calls ``setsid()`` and forks again, so it belongs to no
   session and no process group of the agent's, and is reparented to init:
   killing the agent, its process group or its terminal does not reach it.
3. It makes itself a *child subreaper* (``PR_SET_CHILD_SUBREAPER``) and runs
   ``runc create`` with stdin on /dev/null and stdout/stderr on two pipes it
   holds, and waits for it on a pidfd (so it answers as soon as runc exits).
   The container's init process inherits those pipes. When ``runc
   create`` exits, the orphaned init is reparented to the nearest subreaper:
   the shim. The shim is thus the container's parent and the one process that
   can ``waitpid`` it: the exit status comes from the kernel, not from
   polling ``runc state`` after the fact. Being its one child is also how the
   shim learns the init's pid, which it writes to ``init.pid``
   (``runc --pid-file`` would write that file with ``O_SYNC``: a flush to
   disk on every start, about 2.5 ms here, for a file that need not survive
   the host, since the container does not).
4. It answers the agent with one JSON line (``{"ok": true, "pid": N}``, or
   ``{"ok": false, "error": "<runc's message>"}``) and closes its stdout: the
   agent reads to EOF and never depends on the shim again.
5. Then it loops: lines from the pipes become JSON lines
   (``{"time", "stream", "line"}``) in ``<pod dir>/<container>.log``, rotated
   by size (``.log.1``, ``.log.2``, ...); a pidfd of the container's init (and
   a one-second fallback timer) wakes it to reap children.
6. When init has exited, the shim drains the pipes (every other process of
   the container died with init, since it is PID 1 of its namespace), then
   writes ``exit.json`` (exit code, 128+signal for a signal, finish time, and
   whether the cgroup's ``oom_kill`` counter rose) atomically (write to a
   temporary file, ``rename``), and exits. Writing the exit file last means
   a reader that sees it also sees every log line.

The agent starts the container later with ``runc start``; the shim does not
care who does. When the agent asks for it (``"start": true`` in the shim's
config), the shim runs ``runc run --detach`` instead of ``runc create``: the
container is created and started in one runc call, and everything above is
the same. If the shim itself is killed, the container keeps running but
its exit code is lost: the runtime then reports exit code 255 and says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["RotatingLog", "main", "process_start_time"]

_PR_SET_CHILD_SUBREAPER = 36
_MAX_LINE = 16 * 1024
"""A longer line is cut into pieces of this many bytes."""
_DRAIN_SECONDS = 2.0
"""How long to wait for the pipes to close after the container exited."""
_CREATE_SECONDS = 120.0
"""How long ``runc create`` (or ``runc run --detach``) may take."""


class RotatingLog:
    """JSON-lines log file rotated by size: ``path``, ``path.1``, ... ``path.<files-1>``.

    Args:
        path: The current file.
        max_bytes: Rotate before a write would make the current file larger.
        max_files: How many files to keep, the current one included.

    """

    def __init__(self, path: Path, max_bytes: int, max_files: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_files = max(1, max_files)
        self._file: BinaryIO | None = None
        self._size = 0

    def write(self, stream: str, lines: list[bytes]) -> None:
        """Append ``lines`` (without newlines) of ``stream`` as JSON lines, now.

        A write that fails (disk full, pod directory gone) drops the lines:
        the shim must live on, or the container would get EPIPE on its output.
        """
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        records = b"".join(
            json.dumps(
                {"time": now, "stream": stream, "line": raw.decode("utf-8", "replace")},
                ensure_ascii=False,
            ).encode()
            + b"\n"
            for raw in lines
        )
        try:
            if self._file is None:
                self._file = open(self.path, "ab", buffering=0)
                self._size = self._file.tell()
            if self._size and self._size + len(records) > self.max_bytes:
                self._rotate()
            assert self._file is not None
            self._file.write(records)
            self._size += len(records)
        except OSError:
            self.close()

    def _rotate(self) -> None:
        self.close()
        for index in range(self.max_files - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            newer = (
                self.path if index == 1 else self.path.with_name(f"{self.path.name}.{index - 1}")
            )
            with contextlib.suppress(FileNotFoundError):
                os.replace(newer, older)
        if self.max_files == 1:
            self.path.unlink(missing_ok=True)
        self._file = open(self.path, "ab", buffering=0)
        self._size = 0

    def close(self) -> None:
        """Close the current file (the next write opens it again)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


class _Splitter:
    """Cuts one pipe's bytes into lines."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        while len(self.pending) > _MAX_LINE:
            lines.append(self.pending[:_MAX_LINE])
            self.pending = self.pending[_MAX_LINE:]
        return lines

    def flush(self) -> list[bytes]:
        rest, self.pending = self.pending, b""
        return [rest] if rest else []


def _detach() -> None:
    """Double-fork and ``setsid`` so that the agent's death does not reach us."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")


def _runc_error(runc_log: str, fallback: bytes) -> str:
    """Return runc's last error message from its JSON log, else from its stderr."""
    message = ""
    with contextlib.suppress(OSError):
        for line in _read(runc_log).decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("level") in ("error", "fatal"):
                    message = str(record.get("msg", ""))
    return message or fallback.decode("utf-8", "replace").strip() or "runc create failed"


def _answer(reply: dict[str, Any], diagnostics: str) -> None:
    """Send the one-line reply to the agent and stop writing to its pipe."""
    _write_all(1, (json.dumps(reply) + "\n").encode())
    fd = os.open(diagnostics, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _read_available(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


def _exit_status(status: int) -> tuple[int, int | None]:
    if os.WIFSIGNALED(status):
        signo = os.WTERMSIG(status)
        return 128 + signo, signo
    return os.WEXITSTATUS(status), None


def _oom_kills(path: str | None) -> int:
    if not path:
        return 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    return 0


def _supervise(config: dict[str, Any], pid: int, pipes: dict[int, _Splitter]) -> None:
    """Log the container's output until its init exits, then record the exit."""
    log = RotatingLog(Path(config["log"]), int(config["max_bytes"]), int(config["max_files"]))
    selector = selectors.DefaultSelector()
    for fd in pipes:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    pidfd: int | None = None
    with contextlib.suppress(OSError, AttributeError):
        pidfd = os.pidfd_open(pid)
        selector.register(pidfd, selectors.EVENT_READ)
    status: int | None = None
    drain_until: float | None = None
    while pipes:
        fired = False
        timeout = 1.0 if drain_until is None else max(0.0, drain_until - time.monotonic())
        for key, _ in selector.select(timeout):
            fd = key.fd
            if fd == pidfd:
                fired = True
                continue
            if fd not in pipes:
                continue
            data = _read_available(fd)
            splitter = pipes[fd]
            lines = splitter.feed(data) if data else splitter.flush()
            if lines:
                log.write(splitter.stream, lines)
            if not data:
                selector.unregister(fd)
                os.close(fd)
                del pipes[fd]
        if status is None:
            status = _reap(pid)
            if (status is not None or fired) and pidfd is not None:
                # Reaped, or not ours to reap: the one-second timer polls from now on.
                selector.unregister(pidfd)
                os.close(pidfd)
                pidfd = None
            if status is not None:
                drain_until = time.monotonic() + _DRAIN_SECONDS
        elif drain_until is not None and time.monotonic() >= drain_until:
            for splitter in pipes.values():
                lines = splitter.flush()
                if lines:
                    log.write(splitter.stream, lines)
            break
    while status is None:  # the pipes closed before init exited: wait for it
        status = _reap(pid, block=True)
        if status is None:
            select.select([], [], [], 1.0)
    log.close()
    code, signo = _exit_status(status)
    record = {
        "exit_code": code,
        "signal": signo,
        "finished_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "oom_killed": _oom_kills(config.get("oom_file")) > 0,
    }
    exit_file = Path(config["exit_file"])
    temporary = exit_file.with_name(exit_file.name + ".tmp")
    with contextlib.suppress(OSError):  # the pod may be gone already
        temporary.write_text(json.dumps(record))
        os.replace(temporary, exit_file)


def _run_create(command: list[str], stdout: int, stderr: int, meanwhile: Callable[[], None]) -> int:
    """Run ``runc create`` with stdout and stderr on the given fds; return its exit code.

    Its stdin is the shim's, /dev/null by then. ``meanwhile`` is called once
    runc has started (or failed to): what the shim must do anyway is done
    while runc works, not before it starts.

    Started with ``posix_spawnp`` (``vfork`` and ``exec``): ``subprocess.Popen``
    added about a tenth of a millisecond of bookkeeping to every start here,
    and the shim needs none of it (its other descriptors are close-on-exec). Waited
    for on a pidfd: ``subprocess.run(timeout=...)`` polls with sleeps that
    grow to 50 ms, which made a 25 ms ``runc create`` take 65 ms.

    Raises:
        OSError: it could not be started.
        NotRecorded: ``meanwhile`` failed (runc was waited for first: nothing is
            left half-created for the agent's clean-up to miss).
        subprocess.TimeoutExpired: it ran longer than ``_CREATE_SECONDS`` (it is killed).

    """
    try:
        pid = os.posix_spawnp(
            command[0],
            command,
            os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, stdout, 1), (os.POSIX_SPAWN_DUP2, stderr, 2)],
            # As subprocess does: Python ignores SIGPIPE, the container must not inherit that.
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    except OSError:
        with contextlib.suppress(OSError):  # the start's failure is the one to report
            meanwhile()
        raise
    try:
        meanwhile()
    except OSError as exc:
        with contextlib.suppress(subprocess.TimeoutExpired):
            _wait_exit(command, pid)
        raise NotRecorded(str(exc)) from exc
    return _wait_exit(command, pid)


class NotRecorded(Exception):
    """The shim could not record what it must before it answers (its pid file)."""


def _wait_exit(command: list[str], pid: int) -> int:
    """Wait for the child ``pid`` (runc) to exit and reap it; return its exit code.

    Raises:
        subprocess.TimeoutExpired: it ran longer than ``_CREATE_SECONDS`` (it is killed).

    """
    deadline = time.monotonic() + _CREATE_SECONDS
    try:
        pidfd = os.pidfd_open(pid)
    except (OSError, AttributeError):  # no pidfds (Linux before 5.3): poll
        pidfd = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise subprocess.TimeoutExpired(command, _CREATE_SECONDS)
            if pidfd is not None:
                select.select([pidfd], [], [], left)  # readable once it has exited
            else:
                select.select([], [], [], min(left, 0.002))
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _adopted_init(config: dict[str, Any]) -> int:
    """Return the pid of the container's init: the shim's one child once runc has exited.

    runc is the init's parent and exits once the container is created (or
    started); the kernel then hands the init to the nearest subreaper, this
    shim, before runc's own exit can be waited for. The shim has no other
    child then (runc itself was reaped). If it has several (a hook's process,
    another runtime's helper), the runtime's ``state`` names which is the init.

    Raises:
        RuntimeError: the shim has no child, or several and the runtime names none of them.

    """
    me = os.getpid()
    try:
        listed = [int(p) for p in _read(f"/proc/{me}/task/{me}/children").split()]
    except FileNotFoundError:  # a kernel built without CONFIG_PROC_CHILDREN
        listed = _children_by_scan(me)
    if len(listed) == 1:
        return listed[0]
    if not listed:
        raise RuntimeError(
            "the runtime exited and left no process for the shim to adopt: the container's "
            "init should have become the shim's child"
        )
    named = _state_pid(config)
    if named in listed:
        return named
    raise RuntimeError(
        f"the runtime left {len(listed)} processes ({' '.join(map(str, listed))}) and its "
        "state names none of them as the container's init"
    )


def _state_pid(config: dict[str, Any]) -> int | None:
    """Return the init's pid as ``<runtime> state`` reports it, or None if it does not say."""
    command = [config["runtime"], "--root", config["state_root"], "state", config["id"]]
    try:
        state = subprocess.run(
            command, capture_output=True, stdin=subprocess.DEVNULL, timeout=_CREATE_SECONDS
        )
        pid = json.loads(state.stdout)["pid"]
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        return None
    return pid if isinstance(pid, int) else None


def _children_by_scan(parent: int) -> list[int]:
    """Return the processes whose parent is ``parent``, read from every /proc/<pid>/stat."""
    children = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                # The command name (field 2) may hold spaces: count from its closing paren.
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == parent:
            children.append(int(name))
    return children


def _read(path: str) -> bytes:
    """Return the file's content.

    The shim's files on a start's path are read and written with bare ``os``
    calls: a text-mode ``open`` costs about 70 µs more each here.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _write(path: str, data: bytes) -> None:
    """Create or truncate the file ``path`` and write ``data`` to it (see :func:`_read`).

    Not atomic, and need not be: the agent reads the shim's pid files only to
    learn whether it is gone (``shim.pid``, written while runc runs) and,
    once it is, which init it left (``init.pid``); an empty or missing file
    says the same to it (the shim died before it knew).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _reap(pid: int, *, block: bool = False) -> int | None:
    """Reap every exited child; return the container init's wait status once it is reaped."""
    found: int | None = None
    while True:
        try:
            child, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            # No children left. If init was not ours to reap, its status is lost: 255.
            if found is not None or _alive(pid):
                return found
            return 255 << 8
        if child == 0:
            return found
        if child == pid:
            found = status
            if block:
                return found


def process_start_time(pid: int) -> str:
    """Return the start time of process ``pid`` in clock ticks after boot.

    Returns "" when the process is gone or a zombie (exited, not yet reaped).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # The command name (field 2) may hold spaces: count from its closing paren.
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return ""
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return ""
    return fields[19].decode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _warm_up() -> None:
    """Run once what a create runs first (a JSON file read, a small file written, /proc read).

    A fresh interpreter's first pass through that code costs about a
    millisecond; a standby shim pays it while it waits for its container.
    """
    json.loads(json.dumps({"warm": [_read(os.devnull).decode(), 1.0, None]}))
    _write(os.devnull, f"{os.getpid()} {process_start_time(os.getpid())}".encode())


def _close_inherited() -> None:
    """Close every descriptor above stderr, as listed in /proc/self/fd.

    Not ``os.closerange`` up to the descriptor limit: without the
    ``close_range`` system call it closes each possible descriptor, up to a
    million calls under a high ``nofile`` limit (``subprocess`` also lists
    /proc/self/fd).
    """
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
                os.close(fd)


def main(argv: list[str]) -> int:
    """Run the shim for the container described by the JSON file ``argv[1]``.

    With ``--standby`` instead, wait for that file's path on stdin first
    (the runtime keeps one shim started ahead); EOF there means: not needed.
    """
    # Started by posix_spawn, which closes nothing: hold none of the agent's
    # descriptors (its own are close-on-exec; a library's may not be).
    _close_inherited()
    # Detached and a subreaper before the path comes: a standby shim does the
    # work that needs no container ahead, so a create waits only for runc.
    _detach()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if argv[1] == "--standby":
        _warm_up()
    path = sys.stdin.readline().strip() if argv[1] == "--standby" else argv[1]
    if not path:
        return 0
    config: dict[str, Any] = json.loads(_read(path))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    runc_log = config["runc_log"]
    # Started at once when the agent asks (``runc run --detach``: create and
    # start in one call); else created, for a ``runc start`` of the agent's.
    verb = ["run", "--detach"] if config.get("start") else ["create"]
    command = [
        config["runtime"],
        "--root",
        config["state_root"],
        "--log",
        runc_log,
        "--log-format",
        "json",
        *verb,
        "--bundle",
        config["bundle"],
        config["id"],
    ]

    def record_shim_pid() -> None:
        # pid and start time (field 22 of /proc/<pid>/stat): a reused pid does not match.
        # Written while runc works (creating a file costs about 0.5 ms here), before the answer.
        started = process_start_time(os.getpid())
        _write(config["shim_pid_file"], f"{os.getpid()} {started}".encode())

    error = ""
    try:
        returncode = _run_create(command, out_write, err_write, record_shim_pid)
    except NotRecorded as exc:
        returncode, error = -1, f"the shim could not write its pid file: {exc}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        returncode, error = -1, f"{config['runtime']} {verb[0]}: {exc}"
    os.close(out_write)
    os.close(err_write)
    pipes = {out_read: _Splitter("stdout"), err_read: _Splitter("stderr")}
    if returncode != 0:
        os.set_blocking(err_read, False)
        stderr = _read_available(err_read)
        if returncode > 0:
            error = _runc_error(runc_log, stderr)
        _answer({"ok": False, "error": error}, config["diagnostics"])
        return 1
    try:
        pid = _adopted_init(config)
        _write(config["pid_file"], str(pid).encode())
    except (OSError, RuntimeError) as exc:
        error = f"{config['runtime']} {verb[0]}: {exc}"
        _answer({"ok": False, "error": error}, config["diagnostics"])
        return 1
    _answer({"ok": True, "pid": pid, "shim_pid": os.getpid()}, config["diagnostics"])
    _supervise(config, pid, pipes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
