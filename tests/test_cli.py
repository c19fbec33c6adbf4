"""The `photogram` command as an operator runs it: a real process, settings from the environment."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import insert

from photogram.db.ids import decompose, next_id
from photogram.db.metadata import outbox
from photogram.db.router import Router
from photogram.settings import Settings
from tests.conftest import MakeSettings

PHOTOGRAM = str(Path(sys.executable).with_name("photogram"))


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def json(self) -> object:
        return json.loads(self.out)


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOGRAM_")}
    env["PHOTOGRAM_DATA_DIR"] = str(settings.data_dir)
    if settings.global_database:
        env["PHOTOGRAM_GLOBAL_DATABASE"] = settings.global_database
    if settings.databases:
        env["PHOTOGRAM_DATABASES"] = json.dumps(settings.databases)
    env["COLUMNS"] = "200"
    return env | extra


async def photogram(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Ran:
    proc = await asyncio.create_subprocess_exec(
        PHOTOGRAM,
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def one_line_error(ran: Ran, *fragments: str) -> None:
    assert ran.code != 0
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1, ran.err
    assert lines[0].startswith("photogram: error: ")
    assert "Traceback" not in ran.err
    for fragment in fragments:
        assert fragment in lines[0]


async def test_version() -> None:
    ran = await photogram("--version")
    assert ran.code == 0
    assert ran.out.startswith("photogram 0.")


async def test_ids_decode() -> None:
    ran = await photogram("ids", "decode", "235009983530442752")
    assert ran.code == 0
    assert ran.json == decompose(235009983530442752).as_json()
    assert ran.json["shard"] == 40  # type: ignore[index]


async def test_ids_decode_refuses_malformed() -> None:
    bad_ids = ["abc", "-1", "0", "99999999999999999999", "1e5"]
    # At once: each run is mostly a process starting.
    runs = await asyncio.gather(*(photogram("ids", "decode", "--", bad) for bad in bad_ids))
    for bad, ran in zip(bad_ids, runs, strict=True):
        assert ran.code == 2, bad
        one_line_error(ran, "not a photogram ID")


async def test_init_twice_is_harmless(make_settings: MakeSettings) -> None:
    settings = await make_settings()
    env = env_for(settings)
    first = await photogram("init", "--shards", "8", "--json", env=env)
    assert first.code == 0, first.err
    second = await photogram("init", "--json", env=env)
    assert second.code == 0, second.err
    assert first.json["created_cluster"] is True  # type: ignore[index]
    assert second.json["created_cluster"] is False  # type: ignore[index]
    for counts in second.json["schemas"].values():  # type: ignore[index]
        assert counts["created"] == counts["upgraded"] == 0
    human = await photogram("init", env=env)
    assert "8 logical shards" in human.out

    router = await Router.open(settings)
    try:
        for shard in (1, 6):
            async with router.begin(shard) as conn:
                await conn.execute(insert(outbox).values(id=next_id(shard), task="t", payload={}))
    finally:
        await router.close()

    status, table = await asyncio.gather(
        photogram("shards", "status", "--json", env=env), photogram("shards", "status", env=env)
    )
    assert status.code == 0, status.err
    report = status.json
    assert report["logical_shards"] == 8  # type: ignore[index]
    placed = sum(db["logical_shards"] for db in report["databases"])  # type: ignore[index]
    assert placed == 8
    assert sum(db["total_rows"] for db in report["databases"]) == 2  # type: ignore[index]
    assert report["problems"] == []  # type: ignore[index]
    assert table.code == 0
    assert "8 logical shards" in table.out


async def test_shard_count_is_fixed_at_init(make_settings: MakeSettings) -> None:
    env = env_for(await make_settings())
    assert (await photogram("init", "--shards", "8", env=env)).code == 0
    other, bad = await asyncio.gather(
        photogram("init", "--shards", "16", env=env), photogram("init", "--shards", "1000", env=env)
    )
    one_line_error(other, "initialised with 8")
    assert bad.code == 2
    one_line_error(bad, "power of two")


async def test_status_before_init(make_settings: MakeSettings) -> None:
    ran = await photogram("shards", "status", env=env_for(await make_settings()))
    one_line_error(ran, "not initialised", "photogram init")


UNUSABLE_GLOBAL_DATABASES = [
    ("postgresql://postgres@127.0.0.1:1/x", ["cannot connect to database 'global'"]),
    ("postgresql://postgres@127.0.0.1:5432/photogram_absent_db", ["photogram_absent_db"]),
    ("mysql://root@127.0.0.1/x", ["unsupported database URL"]),
    ("sqlite:////proc/photogram-cannot-write-here/x.db", ["photogram-cannot-write-here"]),
]


async def test_unusable_global_database(tmp_path: Path) -> None:
    """Each command that needs the global database, with each kind of unusable one."""
    runs = [
        (dsn, fragments, command, tmp_path / str(n))
        for n, (dsn, fragments) in enumerate(UNUSABLE_GLOBAL_DATABASES)
        for command in (["init"], ["shards", "status"], ["serve"])
    ]
    # At once: each run is mostly a process starting.
    ran = await asyncio.gather(
        *(
            photogram(*command, env=env_for(Settings(data_dir=data), PHOTOGRAM_GLOBAL_DATABASE=dsn))
            for dsn, _, command, data in runs
        )
    )
    for (dsn, fragments, command, _), result in zip(runs, ran, strict=True):
        assert result.code != 0, (dsn, command)
        one_line_error(result, *fragments)


async def test_missing_schema_and_unreachable_shard_database(
    make_settings: MakeSettings, postgres: object
) -> None:
    settings = await make_settings()
    env = env_for(settings)
    assert (await photogram("init", "--shards", "8", env=env)).code == 0
    if settings.embedded:
        return  # one SQLite file: no per-shard schema to lose, no second server
    pg_a = settings.databases["pg_a"].replace("+asyncpg", "")
    conn = await asyncpg.connect(pg_a)
    try:
        await conn.execute("DROP SCHEMA s0003 CASCADE")
    finally:
        await conn.close()
    ran = await photogram("shards", "status", env=env)
    assert ran.code == 1
    assert "s0003" in ran.err
    assert "photogram init" in ran.err
    assert (await photogram("init", env=env)).code == 0

    broken = dict(settings.databases, pg_b="postgresql://postgres@127.0.0.1:1/x")
    repaired, ran = await asyncio.gather(
        photogram("shards", "status", env=env),
        photogram(
            "shards", "status", "--json", env=env | {"PHOTOGRAM_DATABASES": json.dumps(broken)}
        ),
    )
    assert repaired.code == 0
    assert ran.code == 1
    assert "cannot connect to database 'pg_b'" in ran.err
    assert [db["reachable"] for db in ran.json["databases"]] == [True, False]  # type: ignore[index]


async def test_map_naming_a_database_settings_lack(make_settings: MakeSettings) -> None:
    settings = await make_settings()
    env = env_for(settings)
    assert (await photogram("init", "--shards", "8", env=env)).code == 0
    renamed = {"other": next(iter(settings.shard_dsns.values()))}
    ran = await photogram(
        "shards", "status", env=env | {"PHOTOGRAM_DATABASES": json.dumps(renamed)}
    )
    one_line_error(ran, "settings do not name")


async def test_placeholder_secret_refused_in_production(tmp_path: Path) -> None:
    env = env_for(Settings(data_dir=tmp_path), PHOTOGRAM_ENVIRONMENT="production")
    one_line_error(await photogram("serve", env=env), "secret_key", "placeholder")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_on_an_empty_directory(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOGRAM_")}
    proc = await asyncio.create_subprocess_exec(
        PHOTOGRAM,
        "serve",
        "--port",
        str(port),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 60
            while True:
                assert proc.returncode is None, "photogram serve exited"
                try:
                    health = await client.get("/healthz")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            assert health.status_code == 200
            assert health.json() == {"status": "ok"}
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert (tmp_path / "photogram-data" / "photogram.sqlite3").is_file()
    finally:
        proc.terminate()
        await proc.wait()


def test_the_command_starts_without_the_web_app_or_libvips() -> None:
    """Every `photogram` run imports the command line: operators' commands, workers and
    the cluster's tooling start without loading what only `serve` and `demo` need."""
    heavy = ("photogram.demo", "photogram.web.app", "fastapi", "pyvips", "celery", "PIL")
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, photogram.cli; print(','.join(m for m in {heavy!r} if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == ""


def test_a_process_that_imported_no_task_module_still_knows_every_task() -> None:
    """The command line imports few modules (above), yet `tasks dead` shows a task's queue
    and `tasks retry` routes and runs it: the outbox finds tasks it was not shown."""
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from photogram.tasks import outbox; "
            "before = 'photogram.media.actions' in sys.modules; "
            "print(before, outbox.queue_of('media.process'), "
            "outbox._known('feeds.fanout') is not None)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.split() == ["False", "media", "True"]
