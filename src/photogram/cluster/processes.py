"""The cluster's processes: started detached, recorded in pid files, stopped with their children.

A pid file holds the pid and the process's start time (``/proc/<pid>/stat``, clock ticks
since boot). Together they name one process for good: a pid the kernel has handed to
another process since is not taken for the part, so ``down`` never signals a stranger.
A zombie counts as gone: it runs nothing and holds no port.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    """One process, told apart from any later one with the same pid by its start time."""

    pid: int
    started: int


def _stat(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat``'s fields after the command name (the first is the state), or
    None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rpartition(")")[2].split()


def identify(pid: int) -> Proc | None:
    """The live process ``pid`` is now (None when it is gone or a zombie)."""
    fields = _stat(pid)
    if fields is None:
        return None
    if fields[0] in ("Z", "X") and not _threads_left(pid):
        return None
    return Proc(pid, int(fields[19]))


def _threads_left(pid: int) -> bool:
    """Whether threads of ``pid`` still run: a process's first thread turns zombie while the
    others are still exiting, and its files (listening sockets …) close after the last."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    for task in tasks:
        try:
            state = (task / "stat").read_text().rpartition(")")[2].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if state not in ("Z", "X"):
            return True
    return False


def alive(proc: Proc) -> bool:
    return identify(proc.pid) == proc


def children_of(roots: Iterable[Proc]) -> list[Proc]:
    """Every live descendant of ``roots`` (PostgreSQL's backends, Gunicorn's workers …),
    found by parent pid: some of them start sessions of their own."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[Proc] = []
    todo = [root.pid for root in roots if alive(root)]
    while todo:
        for child in parents.get(todo.pop(), []):
            proc = identify(child)
            if proc is not None and proc not in found:
                found.append(proc)
                todo.append(child)
    return found


def read_pidfile(path: Path) -> Proc | None:
    """The process ``path`` records, if it still runs."""
    try:
        pid, started = path.read_text().split()[:2]
        proc = Proc(int(pid), int(started))
    except (FileNotFoundError, ValueError):
        return None
    return proc if alive(proc) else None


def write_pidfile(path: Path, proc: Proc) -> None:
    path.write_text(f"{proc.pid}\n{proc.started}\n")


def spawn(
    command: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str],
    cwd: Path,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own (a terminal's Ctrl-C does not reach it,
    and it outlives the command that started it), output appended to ``log``, as
    ``user`` when given (set in the child before it runs ``command``)."""
    with log.open("ab") as output:
        return subprocess.Popen(  # noqa: S603 (commands are built from fixed parts)
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            user=user,
            start_new_session=True,
        )


def signal_all(procs: Iterable[Proc], signum: int) -> None:
    for proc in procs:
        if alive(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signum)


def wait_gone(procs: Sequence[Proc], timeout: float) -> bool:
    """Wait until none of ``procs`` runs; False when some still do after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while any(alive(proc) for proc in procs):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    return True


def stop(leader: Proc, signum: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Ask ``leader`` to stop with ``signum`` and wait; then kill whatever of it and its
    descendants is left (descendants as they were before the signal, so orphans count)."""
    family = [leader, *children_of([leader])]
    signal_all([leader], signum)
    if not wait_gone([leader], timeout):
        signal_all([leader], signal.SIGKILL)
    if not wait_gone(family, 5.0):
        signal_all(family, signal.SIGKILL)
        wait_gone(family, 5.0)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now (sockets left waiting from a
    connection already closed do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log, for a message about a part that failed."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
