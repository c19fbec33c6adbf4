"""A real S3-protocol server on loopback for tests: moto's standalone server, as a subprocess.

Tests talk to it over HTTP exactly as photogram talks to MinIO or AWS: nothing is patched
inside the process under test.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from aiobotocore.session import get_session

ACCESS_KEY_ID = "photogram-test"
SECRET_ACCESS_KEY = "photogram-test-secret"  # moto checks no credentials; these sign URLs
REGION = "us-east-1"
STARTUP_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def s3_server(log: Path) -> Iterator[str]:
    """Start moto's server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited at start-up:\n{log.read_text()}")
            try:
                if httpx.get(endpoint, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not answer in {STARTUP_SECONDS} s")
            time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_session = get_session()


async def create_bucket(endpoint: str, bucket: str) -> None:
    async with _session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    ) as client:
        await client.create_bucket(Bucket=bucket)


async def list_raw_keys(endpoint: str, bucket: str) -> list[str]:
    """Every key in the bucket as S3 has it (with any store prefix)."""
    async with _session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    ) as client:
        keys = []
        async for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys
