"""memcached servers of the tests' own: a real memcached (>= 1.6) on a free loopback port.

Started and stopped by fixtures (tests/conftest.py: one for the session's cluster
instances; tests/cache/conftest.py: servers of a test's own, which it may kill, pause or
resume mid-test).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Memcached:
    def __init__(self, memory_mb: int = 32) -> None:
        self.port = free_port()
        self.memory_mb = memory_mb
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            MEMCACHED,
            "-p",
            str(self.port),
            "-U",
            "0",
            "-l",
            "127.0.0.1",
            "-m",
            str(self.memory_mb),
        ]
        if os.geteuid() == 0:
            command += ["-u", "root"]  # memcached refuses to run as root unless told so
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(200):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                assert self.proc.stderr is not None
                raise RuntimeError(f"memcached did not start: {self.proc.stderr.read()!r}")
            time.sleep(0.025)
        raise RuntimeError(f"memcached on port {self.port} does not answer")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def pause(self) -> None:
        """The process stops answering but keeps its connections and its data."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        # The signal lands asynchronously: wait until every thread is stopped, or a
        # request sent right after could still be answered.
        tasks = Path(f"/proc/{self.proc.pid}/task")
        for _ in range(400):
            states = [
                (task / "stat").read_text().rpartition(")")[2].split()[0]
                for task in tasks.iterdir()
            ]
            if all(state == "T" for state in states):
                return
            time.sleep(0.005)
        raise RuntimeError("memcached did not stop")

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # nothing in it is worth a graceful shutdown
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
