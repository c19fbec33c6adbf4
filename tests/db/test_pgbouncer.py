"""The cluster behind PgBouncer in transaction mode, with the settings docs/sharding.md gives."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from photogram.db.ids import next_id, shard_of
from photogram.db.metadata import outbox
from photogram.db.migrations import init_cluster
from photogram.db.router import Router
from tests.conftest import ADMIN_DSN, PostgresFactory

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[int]:
    """A PgBouncer in transaction mode in front of the test server; yields its port.

    PgBouncer refuses to run as root, so it runs as postgres from a directory that
    user can write (pytest's own temporary directories are private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="photogram-pgbouncer-"))
    directory.chmod(0o777)
    port = _free_port()
    upstream = ADMIN_DSN.split("@", 1)[1].split("/", 1)[0]
    host, _, server_port = upstream.partition(":")
    config = directory / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={host} port={server_port or 5432} user=postgres\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = any\n"
        "pool_mode = transaction\n"
        "default_pool_size = 4\n"
        "max_client_conn = 200\n"
        f"logfile = {directory / 'pgbouncer.log'}\n"
    )
    config.chmod(0o644)
    proc = subprocess.Popen(
        [PGBOUNCER, "-u", "postgres", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, (directory / "pgbouncer.log").read_text()
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def bounced_router(pgbouncer: int, postgres: PostgresFactory) -> AsyncIterator[Router]:
    direct = await postgres.cluster_settings()

    def through_pgbouncer(dsn: str) -> str:
        database = dsn.rsplit("/", 1)[1]
        return f"postgresql+asyncpg://postgres@127.0.0.1:{pgbouncer}/{database}"

    assert direct.global_database is not None
    settings = direct.model_copy(
        update={
            "pgbouncer": True,
            "global_database": through_pgbouncer(direct.global_database),
            "databases": {n: through_pgbouncer(d) for n, d in direct.databases.items()},
        }
    )
    await init_cluster(settings, 16)
    router = await Router.open(settings)
    yield router
    await router.close()


async def test_ids_and_scatter_through_transaction_pooling(bounced_router: Router) -> None:
    router = bounced_router

    async def writer(n: int) -> list[int]:
        made = []
        for i in range(40):
            shard = (n + i) % router.logical_shards
            async with router.begin(shard) as conn:
                made.append(
                    await conn.scalar(
                        insert(outbox)
                        .values(id=next_id(shard), task="bounced", payload={"n": n})
                        .returning(outbox.c.id)
                    )
                )
        return made

    # More concurrent clients than PgBouncer has server connections: transactions
    # of different clients interleave on the same server sessions.
    batches = await asyncio.gather(*(writer(n) for n in range(12)))
    made = [id_ for batch in batches for id_ in batch]
    assert len(set(made)) == len(made) == 480
    assert all(
        shard_of(id_) == (n + i) % 16 for n, b in enumerate(batches) for i, id_ in enumerate(b)
    )

    newest = await router.scatter(
        select(outbox.c.id)
        .where(outbox.c.task == "bounced")
        .order_by(outbox.c.id.desc())
        .limit(30),
        limit=30,
    )
    assert [row.id for row in newest] == sorted(made, reverse=True)[:30]
    async with router.connect(3) as conn:
        on_three = await conn.scalar(select(func.count()).select_from(outbox))
    assert on_three == sum(1 for id_ in made if shard_of(id_) == 3)


async def test_pgbouncer_has_no_client_encoding_to_resend(bounced_router: Router) -> None:
    """PgBouncer re-sends a client's settings to a server connection whenever the two
    differ as text, before every transaction it hands over. asyncpg alone asks for
    'utf-8' where the server reports UTF8, which would cost a SET per transaction."""
    async with bounced_router.global_connect() as conn:
        raw = await conn.get_raw_connection()
        asked = raw.driver_connection.get_settings().client_encoding
        server = await conn.scalar(select(func.current_setting("client_encoding")))
    assert asked == server == "UTF8"


def test_pgbouncer_settings_in_the_docs_are_the_tested_ones() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "sharding.md").read_text()
    for line in ("pool_mode = transaction", "pgbouncer = true"):
        assert line in doc
