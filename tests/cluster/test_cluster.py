"""`photogram cluster up|status|down`: a real cluster on this machine, used as people would.

One cluster for the module (starting one is most of the time here): two PostgreSQL servers
behind PgBouncer, two memcached, Redis, a RabbitMQ vhost, two app servers under Gunicorn,
the Celery worker and nginx. The tests run in order: the cluster comes up, serves a user
session through nginx, survives an app server's death, and goes down leaving nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from photogram.cluster import control
from photogram.cluster.processes import (
    alive,
    children_of,
    identify,
    listening,
    wait_gone,
)
from tests.accounts.images import quadrant_jpeg
from tests.api import PASSWORD, SCOPES
from tests.cluster.support import APP_SERVERS, PHOTOGRAM, SPAN, free_base_port, up_arguments

RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
#: How long the test waits for background work (a photo, a feed) before it fails: work
#: stuck, not work slow.
PATIENCE_SECONDS = 120.0
PHOTO = quadrant_jpeg(64, 48)


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


def photogram(*args: str) -> Ran:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOGRAM_")}
    # Fast password hashing: carried into the cluster's settings file by `up`.
    env |= {"PHOTOGRAM_PASSWORD_TIME_COST": "1", "PHOTOGRAM_PASSWORD_MEMORY_KIB": "8"}
    env["COLUMNS"] = "200"
    ran = subprocess.run(
        [PHOTOGRAM, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    return Ran(ran.returncode, ran.stdout, ran.stderr)


@dataclass
class Cluster:
    dir: Path
    base_port: int
    up: Ran

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.base_port}"

    def status(self) -> tuple[int, dict[str, Any]]:
        ran = photogram("cluster", "status", "--dir", str(self.dir), "--json")
        return ran.code, ran.json

    def parts(self) -> dict[str, dict[str, Any]]:
        """What `status --json` says of each part (asked in this process: quicker)."""
        states = control.states(control.load(self.dir))
        return {state.part.name: state.as_json() for state in states}

    def logs(self) -> str:
        """Every log's tail, for a failure's message."""
        shown = []
        for log in sorted((self.dir / "logs").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-20:]
            shown.append(f"== {log.name}\n" + "\n".join(lines))
        return "\n".join(shown)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # PostgreSQL runs as the postgres user when the tests run as root: it must reach the
    # directory (pytest's own temporary directories are private to their owner).
    root = Path(tempfile.mkdtemp(prefix="photogram-cluster-"))
    root.chmod(0o755)
    directory = root / "cluster"
    base_port = free_base_port(SPAN)
    up = photogram(*up_arguments(directory, base_port))
    made = Cluster(directory, base_port, up)
    try:
        assert up.code == 0, f"{up.out}\n{up.err}\n{made.logs() if directory.exists() else ''}"
        yield made
    finally:
        if (directory / "cluster.json").exists():
            photogram("cluster", "down", "--dir", str(directory), "--purge")
        shutil.rmtree(root, ignore_errors=True)


def test_up_prints_where_every_part_listens(cluster: Cluster) -> None:
    settings = cluster.dir / "photogram.toml"
    for name in ("postgresql-1", "pgbouncer-2", "memcached-1", "redis", "rabbitmq", "nginx"):
        assert name in cluster.up.out
    assert f"127.0.0.1:{cluster.base_port}" in cluster.up.out
    assert f"settings: {settings}" in cluster.up.out
    assert (cluster.dir / "run" / "nginx.pid").is_file()

    # The settings file is the cluster's: any photogram command reaches it. Its shards are
    # spread over both PostgreSQL servers, each reached through its PgBouncer.
    shards = photogram("--config", str(settings), "shards", "status", "--json")
    assert shards.code == 0, shards.err
    placed = {db["name"]: db for db in shards.json["databases"]}
    assert {name: db["logical_shards"] for name, db in placed.items()} == {"db1": 4, "db2": 4}
    assert f":{cluster.base_port + 3}/" in placed["db1"]["url"]
    assert f":{cluster.base_port + 4}/" in placed["db2"]["url"]


async def test_the_postgresql_servers_are_two_clusters(cluster: Cluster) -> None:
    directories = []
    for port in (cluster.base_port + 1, cluster.base_port + 2):
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres")
        try:
            directories.append(await conn.fetchval("SHOW data_directory"))
            names = {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
        finally:
            await conn.close()
        assert "photogram" in names
    assert directories == [str(cluster.dir / "postgresql" / str(n)) for n in (1, 2)]


def test_status_shows_every_part_answering(cluster: Cluster) -> None:
    code, status = cluster.status()
    assert code == 0
    assert status["up"] is True
    assert status["settings"] == str(cluster.dir / "photogram.toml")
    parts = {part["name"]: part for part in status["parts"]}
    assert set(parts) == {
        *(f"{kind}-{n}" for kind in ("postgresql", "pgbouncer", "memcached") for n in (1, 2)),
        "redis",
        "rabbitmq",
        *(f"app-{n}" for n in range(1, APP_SERVERS + 1)),
        "worker",
        "nginx",
    }
    for name, part in parts.items():
        assert part["running"], part
        assert part["answers"], part
        assert listening(part["port"]), name
        if name != "rabbitmq":  # the machine's own RabbitMQ, with a vhost of the cluster's
            assert identify(part["pid"]) is not None, name
    assert parts["rabbitmq"]["pid"] is None
    assert len({part["port"] for part in parts.values()}) == len(parts)


def test_a_user_session_through_nginx(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        registered = client.post(
            "/api/v1/apps",
            data={"client_name": "cluster", "redirect_uris": "urn:ietf:wg:oauth:2.0:oob"}
            | {"scopes": SCOPES},
        )
        assert registered.status_code == 200, registered.text
        app = registered.json()
        app_token = client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": app["client_id"],
                "client_secret": app["client_secret"],
                "scope": SCOPES,
            },
        ).json()["access_token"]

        def sign_up(username: str) -> tuple[str, dict[str, str]]:
            made = client.post(
                "/api/v1/accounts",
                headers={"Authorization": f"Bearer {app_token}"},
                data={
                    "username": username,
                    "email": f"{username}@example.com",
                    "password": PASSWORD,
                    "agreement": "true",
                },
            )
            assert made.status_code == 200, made.text
            headers = {"Authorization": f"Bearer {made.json()['access_token']}"}
            me = client.get("/api/v1/accounts/verify_credentials", headers=headers)
            assert me.status_code == 200, me.text
            return str(me.json()["id"]), headers

        ana_id, ana = sign_up("ana")
        ben_id, ben = sign_up("ben")

        # Ben follows Ana; Ana posts a photo (processed by the worker, through RabbitMQ).
        followed = client.post(f"/api/v1/accounts/{ana_id}/follow", headers=ben)
        assert followed.status_code == 200, followed.text
        assert followed.json()["following"] is True
        uploaded = client.post(
            "/api/v2/media", headers=ana, files={"file": ("photo.jpg", PHOTO, "image/jpeg")}
        )
        assert uploaded.status_code in (200, 202), uploaded.text
        media = until(
            lambda: client.get(f"/api/v1/media/{uploaded.json()['id']}", headers=ana),
            lambda response: response.status_code == 200,
        ).json()
        posted = client.post(
            "/api/v1/statuses",
            headers=ana,
            json={"status": "from the cluster", "media_ids": [media["id"]]},
        )
        assert posted.status_code == 200, posted.text
        status_id = posted.json()["id"]

        # The photo itself, served through nginx.
        photo = client.get(media["url"].removeprefix(cluster.url))
        assert photo.status_code == 200
        assert photo.headers["content-type"] == "image/jpeg"

        liked = client.post(f"/api/v1/statuses/{status_id}/favourite", headers=ben)
        assert liked.status_code == 200, liked.text
        assert liked.json()["favourited"] is True
        assert liked.json()["favourites_count"] == 1

        # Ben's home feed (fanned out by the worker into Redis) shows the post.
        home = until(
            lambda: client.get("/api/v1/timelines/home", headers=ben),
            lambda response: status_id in [s["id"] for s in response.json()],
        )
        assert home.json()[0]["media_attachments"][0]["id"] == media["id"]
        # Ana is told of the follow and the like.
        until(
            lambda: client.get("/api/v1/notifications", headers=ana),
            lambda response: {"follow", "favourite"} <= {n["type"] for n in response.json()},
        )
        relationship = client.get(
            "/api/v1/accounts/relationships", headers=ana, params={"id[]": ben_id}
        )
        assert relationship.json()[0]["followed_by"] is True

    # nginx spread the session over both app servers.
    access = (cluster.dir / "logs" / "nginx-access.log").read_text()
    for port in range(cluster.base_port + 10, cluster.base_port + 10 + APP_SERVERS):
        assert f"upstream=127.0.0.1:{port}" in access


def until(ask: Any, done: Any) -> httpx.Response:
    """Ask again until ``done`` says so (background work); fail after PATIENCE_SECONDS."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    while True:
        response: httpx.Response = ask()
        assert response.status_code < 300, response.text
        if done(response):
            return response
        assert time.monotonic() < deadline, f"gave up waiting: {response.text}"
        time.sleep(0.2)


def test_up_again_says_it_is_running(cluster: Cluster) -> None:
    before = {name: part["pid"] for name, part in cluster.parts().items()}
    again = photogram("cluster", "up", "--dir", str(cluster.dir))
    assert again.code == 0, again.err
    assert "already running" in again.out
    assert {name: part["pid"] for name, part in cluster.parts().items()} == before

    changed = photogram("cluster", "up", "--dir", str(cluster.dir), "--app-servers", "3")
    assert changed.code == 1
    assert changed.err.strip().splitlines() == [
        f"photogram: error: the cluster in {cluster.dir} runs with --app-servers 2: "
        "`photogram cluster down` first to change it"
    ]


def test_an_app_server_that_dies_is_routed_around_then_restarted(cluster: Cluster) -> None:
    dead = cluster.parts()["app-1"]
    master = identify(dead["pid"])
    assert master is not None
    family = [master, *children_of([master])]
    for proc in family:
        os.kill(proc.pid, signal.SIGKILL)
    assert wait_gone(family, PATIENCE_SECONDS)
    assert not listening(dead["port"])

    # Reads go on: nginx retries a request that failed on the dead server on the other.
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        for _ in range(10):
            assert client.get("/api/v1/instance").status_code == 200

    code, status = cluster.status()
    assert code == 1
    assert status["up"] is False
    states = {part["name"]: part for part in status["parts"]}
    assert states["app-1"]["running"] is False
    assert states["app-1"]["answers"] is False
    assert all(part["answers"] for name, part in states.items() if name != "app-1")

    # `up` starts what is missing, and only that.
    again = photogram("cluster", "up", "--dir", str(cluster.dir))
    assert again.code == 0, again.err
    after = cluster.parts()
    assert after["app-1"]["answers"] is True
    assert after["app-1"]["pid"] != dead["pid"]
    assert after["app-2"]["pid"] == states["app-2"]["pid"]


def test_down_leaves_nothing_running(cluster: Cluster) -> None:
    parts = cluster.parts()
    leaders = [proc for part in parts.values() if part["pid"] and (proc := identify(part["pid"]))]
    everything = [*leaders, *children_of(leaders)]
    assert len(everything) > len(leaders)  # PostgreSQL's backends, Gunicorn's workers …
    vhost = control.load(cluster.dir).vhost
    assert parts["rabbitmq"]["answers"]  # an AMQP connection to the vhost

    down = photogram("cluster", "down", "--dir", str(cluster.dir))
    assert down.code == 0, down.err
    assert "Stopped 11 parts" in down.out

    assert [proc for proc in everything if alive(proc)] == []
    ports = [part["port"] for part in parts.values() if part["name"] != "rabbitmq"]
    assert [port for port in ports if listening(port)] == []
    assert vhost not in vhosts()
    assert list((cluster.dir / "run").glob("*.pid")) == []

    code, status = cluster.status()
    assert code == 1
    assert not any(part["running"] or part["answers"] for part in status["parts"])

    again = photogram("cluster", "down", "--dir", str(cluster.dir), "--purge")
    assert again.code == 0, again.err
    assert "Nothing of the cluster was running." in again.out
    assert not cluster.dir.exists()


def vhosts() -> set[str]:
    listed = subprocess.run(
        [RABBITMQCTL, "-q", "list_vhosts", "--no-table-headers"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(listed.stdout.split())
