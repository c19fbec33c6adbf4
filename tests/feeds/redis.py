"""Redis servers of the tests' own: a real redis-server on free loopback ports, alone or as a
three-node Redis Cluster, started and stopped by fixtures (tests/feeds/conftest.py).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.memcached import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

#: Slots a Redis Cluster has.
SLOTS = 16384


class RedisServer:
    def __init__(self, *, cluster: bool = False) -> None:
        self.port = free_port()
        self.bus_port = free_port() if cluster else 0
        self.cluster = cluster
        self.directory = tempfile.mkdtemp(prefix="photogram-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self.start()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        command = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.directory,
        ]
        if self.cluster:
            # The bus port too is a free one (by default it is port + 10000, which may be
            # taken, or past 65535).
            command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            command += ["--cluster-port", str(self.bus_port)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(400):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                assert self.proc.stderr is not None
                raise RuntimeError(f"redis-server did not start: {self.proc.stderr.read()!r}")
            time.sleep(0.025)
        raise RuntimeError(f"redis-server on port {self.port} does not answer")

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

    def pause(self) -> None:
        """The server stops answering but keeps its connections and its data."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{self.proc.pid}/stat")
        for _ in range(400):
            if stat.read_text().rpartition(")")[2].split()[0] == "T":
                return
            time.sleep(0.005)
        raise RuntimeError("redis-server did not stop")

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Gone, with everything it held; ``start`` brings it back empty on the same port."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # nothing in it is worth saving
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisClusterNodes:
    """Three primaries with a third of the slots each (no replicas), slots assigned and
    nodes introduced directly: about two seconds, most of it the nodes' gossip."""

    def __init__(self, nodes: int = 3) -> None:
        self.servers: list[RedisServer] = []
        try:
            for _ in range(nodes):
                self.servers.append(RedisServer(cluster=True))
            self._form()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.servers[0].port}"

    def _form(self) -> None:
        share = SLOTS // len(self.servers)
        for i, server in enumerate(self.servers):
            last = SLOTS - 1 if i == len(self.servers) - 1 else (i + 1) * share - 1
            with server.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        with self.servers[0].client() as first:
            for server in self.servers[1:]:
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", server.port, server.bus_port)
        for _ in range(800):
            if all(self._ok(server) for server in self.servers):
                return
            time.sleep(0.025)
        raise RuntimeError("the Redis Cluster did not come up")

    def _ok(self, server: RedisServer) -> bool:
        with server.client() as client:
            info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
            nodes = client.execute_command("CLUSTER", "NODES")
            listed = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
            lines = listed.strip().splitlines()
            return len(lines) == len(self.servers) and all("connected" in n for n in lines)

    def flush(self) -> None:
        for server in self.servers:
            server.flush()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
