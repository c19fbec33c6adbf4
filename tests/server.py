"""A real `photogram serve` process on a free loopback port, for clients that need HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

PHOTOGRAM = str(Path(sys.executable).with_name("photogram"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(data_dir: Path, **settings: str) -> Iterator[str]:
    """Start `photogram serve` on the embedded default in ``data_dir``; yield its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOGRAM_")}
    env |= {
        "PHOTOGRAM_DATA_DIR": str(data_dir),
        "PHOTOGRAM_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "PHOTOGRAM_PASSWORD_TIME_COST": "1",
        "PHOTOGRAM_PASSWORD_MEMORY_KIB": "8",
    }
    env |= {f"PHOTOGRAM_{name.upper()}": value for name, value in settings.items()}
    # The log goes to a file: a pipe nobody reads fills up and stalls the server.
    log_path = data_dir.parent / f"serve-{port}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [PHOTOGRAM, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(log_path.read_text(errors="replace") or "exited")
            if time.monotonic() > deadline:
                raise TimeoutError("photogram serve did not start")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
