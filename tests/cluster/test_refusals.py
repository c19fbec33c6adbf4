"""`photogram cluster` refusing what it cannot do: one line, a non-zero exit, nothing started."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from tests.cluster.support import PHOTOGRAM, free_base_port


async def photogram(*args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOGRAM_")}
    env["COLUMNS"] = "200"
    proc = await asyncio.create_subprocess_exec(
        PHOTOGRAM,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


async def test_refusals(tmp_path: Path) -> None:
    base = free_base_port(12)
    directory = tmp_path / "cluster"
    with socket.socket() as taken:
        # Something else listens where memcached-1 would.
        taken.bind(("127.0.0.1", base + 5))
        taken.listen()
        cases = {
            "shards": ("cluster", "up", "--dir", str(directory), "--shards", "1000"),
            "broker": ("cluster", "up", "--dir", str(directory), "--broker-url", "http://x"),
            "spaces": ("cluster", "up", "--dir", str(tmp_path / "a b")),
            "port": ("cluster", "up", "--dir", str(directory), "--base-port", str(base)),
            "status": ("cluster", "status", "--dir", str(directory)),
            "down": ("cluster", "down", "--dir", str(directory)),
        }
        # At once: each run is mostly a process starting.
        results = await asyncio.gather(*(photogram(*case) for case in cases.values()))
    ran = dict(zip(cases, results, strict=True))

    assert ran["shards"][0] == 2
    assert one_line(ran["shards"][1]) == (
        "photogram: error: --shards must be a power of two from 1 to 8192, not 1000"
    )
    assert ran["broker"][0] == 2
    assert one_line(ran["broker"][1]).startswith(
        "photogram: error: --broker-url must be amqp://user:password@host:port"
    )
    assert ran["spaces"][0] == 1
    assert one_line(ran["spaces"][1]).startswith("photogram: error: choose a --dir without spaces")
    assert ran["port"][0] == 1
    assert one_line(ran["port"][1]) == (
        f"photogram: error: port {base + 5} (memcached-1) already in use: "
        "choose other ports with --base-port"
    )
    for command in ("status", "down"):
        assert ran[command][0] == 1
        assert one_line(ran[command][1]) == (
            f"photogram: error: no cluster in {directory} (`photogram cluster up` makes one)"
        )
    assert not directory.exists()  # nothing was started, nothing written
