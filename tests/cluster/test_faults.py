"""Faults under load on a real cluster (`photogram cluster up`), each measured.

Part of the suite; run on its own with ``.venv/bin/pytest tests/cluster/test_faults.py -rP``
to see each fault's report (docs/operations.md#fault-drills).

One cluster for the module, a small community seeded through its API (bench/load.py's
``seed``), and for each fault an open-loop mix of people using it (bench/load.py's
``open_loop``) for a few seconds before, during and after: home timelines, profiles and
single posts read; likes, follows and photo posts written, every acknowledged write noted.

- an app server killed (``kill -9``), then started again by ``photogram cluster up``;
- a memcached killed, then started again the same way;
- Redis emptied (``FLUSHALL``): home feeds are rebuilt from the shards;
- RabbitMQ stopped and started (``rabbitmqctl stop_app``, ``start_app``): the machine's own,
  which the tests in tests/tasks share (they run one after another, on one xdist worker);
- a PostgreSQL server stopped for 10 s (``pg_ctl stop -m fast``, then ``start``).

No read fails under any fault but the last; under the last, only requests that needed
the stopped server's shards (the reader's own, or the account or post read or written, or
for a home timeline an account followed) fail, and only while it is down. A write fails
only with the server saying so (a 5xx): every acknowledged like, follow and post is there
after each fault. The test's output is the report: run with ``-rP`` (or ``-s``) to see
each fault's figures and every request that failed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from photogram.cluster import control
from photogram.cluster.processes import children_of, identify, wait_gone
from photogram.db.ids import shard_of
from tests.cluster.support import APP_SERVERS, PHOTOGRAM, SPAN, free_base_port, up_arguments

ROOT = Path(__file__).parents[2]


def _bench(name: str) -> ModuleType:
    """A script of bench/ as a module (bench/ is no package): its load generator is the
    one these tests drive."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


load = _bench("load")

#: The PostgreSQL server stopped: the one without the global database (sign-ins, the
#: shard map), whose loss would be everybody's.
STOPPED = 2
#: Settings for `up` (carried into the cluster's settings file): limits no load test
#: reaches, cheap password hashing for the sign-ups, and background work whose hand-over
#: to RabbitMQ was lost (around a restart) handed over again after 15 s rather than 120.
SETTINGS = {
    "PHOTOGRAM_RATE_LIMIT_PER_TOKEN": "1000000",
    "PHOTOGRAM_RATE_LIMIT_PER_IP": "1000000",
    "PHOTOGRAM_PASSWORD_TIME_COST": "1",
    "PHOTOGRAM_PASSWORD_MEMORY_KIB": "8",
    "PHOTOGRAM_TASK_REPUBLISH_SECONDS": "15",
}
USERS = 16
#: The mix, per second: reads (home timelines, profiles, single posts) and writes.
READS = 8.0
LIKES = 2.0
FOLLOWS = 1.0
POSTS = 0.5
#: Seconds of load before a fault is injected, and after it is repaired.
BEFORE = 3.0
AFTER = 3.0
#: How long anything may take to come back or show up before the test fails: work stuck,
#: not work slow.
PATIENCE = 120.0
PG_DOWN_SECONDS = 10.0
RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


def photogram(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOGRAM_")}
    env |= SETTINGS | {"COLUMNS": "200"}
    return subprocess.run(
        [PHOTOGRAM, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


@dataclass
class Cluster:
    dir: Path
    base_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.base_port}"

    def layout(self) -> Any:
        return control.load(self.dir)

    def pid(self, name: str) -> int:
        states = {state.part.name: state for state in control.states(self.layout())}
        pid = states[name].as_json()["pid"]
        assert isinstance(pid, int), states[name].as_json()
        return pid

    def up_again(self) -> None:
        """`photogram cluster up` on the running cluster: starts what is missing."""
        again = photogram("cluster", "up", "--dir", str(self.dir), "--timeout", "300")
        assert again.returncode == 0, f"{again.stdout}\n{again.stderr}"

    def troubles(self) -> str:
        """What nginx, the app servers and the Celery worker logged of trouble: failed
        upstreams, Gunicorn workers that died or were booted, errors, and the Celery
        worker's warnings."""
        wanted = ("upstream", "[error]", "[crit]", "Booting worker", "WORKER TIMEOUT", "exited")
        wanted += ('"level": "error"', '"level": "critical"')
        lines = []
        logs = ("nginx-error", *(f"app-{n}" for n in range(1, APP_SERVERS + 1)), "worker")
        for name in logs:
            log = self.dir / "logs" / f"{name}.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            # The worker's warnings too: a lost broker connection, a task that failed.
            said = (*wanted, '"level": "warning"') if name == "worker" else wanted
            found = [line for line in text.splitlines() if any(w in line for w in said)]
            # One line for nginx's refusals when it has no app server left to ask.
            refused = [line for line in found if "no live upstreams" in line]
            found = [line for line in found if "no live upstreams" not in line]
            lines += [f"   {name}: {line[:240]}" for line in found[-15:]]
            if refused:
                lines.append(f"   {name}: {len(refused)} times no live upstreams (all disabled)")
        return "\n".join(lines)

    def upstream_statuses(self) -> Counter[str]:
        """What the app servers answered nginx, by status (a request nginx passed on to
        the next server shows each answer: ``503, 503``)."""
        text = (self.dir / "logs" / "nginx-access.log").read_text(errors="replace")
        return Counter(
            line.split("upstream_status=", 1)[1].split(" id=", 1)[0]
            for line in text.splitlines()
            if "upstream_status=" in line
        )

    def shards_on(self, database: str) -> set[int]:
        settings = str(self.dir / "photogram.toml")
        shown = photogram("--config", settings, "shards", "status", "--json")
        assert shown.returncode == 0, shown.stderr
        placed = {db["name"]: db for db in json.loads(shown.stdout)["databases"]}
        shards: set[int] = set()
        for span in placed[database]["shard_ranges"].split(","):
            first, _, last = span.strip().partition("-")
            shards.update(range(int(first), int(last or first) + 1))
        return shards


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # PostgreSQL runs as the postgres user when the tests run as root: it must reach the
    # directory (pytest's own temporary directories are private to their owner).
    root = Path(tempfile.mkdtemp(prefix="photogram-faults-"))
    root.chmod(0o755)
    directory = root / "cluster"
    base_port = free_base_port(SPAN)
    try:
        up = photogram(*up_arguments(directory, base_port))
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        yield Cluster(directory, base_port)
    finally:
        if (directory / "cluster.json").exists():
            photogram("cluster", "down", "--dir", str(directory), "--purge")
        shutil.rmtree(root, ignore_errors=True)


# --- the community and what was written to it ----------------------------------------------


@dataclass
class Ledger:
    """Every write the cluster acknowledged (2xx), to be found again after each fault."""

    likes: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # status: ids
    follows: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # id: ids
    posts: set[str] = field(default_factory=set)


@dataclass
class Community:
    world: Any  # load.World
    by_token: dict[str, Any]  # token: load.Person
    ledger: Ledger
    images: list[bytes]


@pytest.fixture(scope="module")
async def community(cluster: Cluster) -> Community:
    images = load.photos(4, seed=1)
    async with httpx.AsyncClient(base_url=cluster.url, timeout=PATIENCE) as client:
        world = await load.seed(client, USERS, 3, 1, images, PATIENCE)
        ledger = Ledger()
        for person in world.people:  # the seed's follows: a home timeline reads them too
            following = await client.get(
                f"/api/v1/accounts/{person.id}/following",
                params={"limit": 80},
                headers=person.headers,
            )
            assert following.status_code == 200, following.text
            ledger.follows[person.id] = {account["id"] for account in following.json()}
    return Community(world, {p.token: p for p in world.people}, ledger, images)


# --- a run of the mix around a fault ---------------------------------------------------------


@dataclass
class Request:
    kind: str
    method: str
    viewer: Any  # load.Person
    target: str | None  # the account or status read or written
    started: float  # time.monotonic()
    ended: float
    status: int  # 0: no answer

    @property
    def failed(self) -> bool:
        return not 200 <= self.status < 300


@dataclass
class Run:
    name: str
    requests: list[Request]
    started: float
    #: When the fault was injected, and when it was repaired (the part answering again).
    broken: float
    repaired: float
    #: Seconds of load in all.
    seconds: float = 0.0


def target_of(path: str) -> str | None:
    parts = path.strip("/").split("/")  # api v1 statuses|accounts ID …
    return parts[3] if len(parts) > 3 and parts[2] in ("statuses", "accounts") else None


def mix(
    client: httpx.AsyncClient, community: Community, rng: random.Random, requests: list[Request]
) -> list[tuple[str, float, Callable[[], Awaitable[Any]]]]:
    world, ledger = community.world, community.ledger

    def recorded(kind: str, action: Any) -> Callable[[], Awaitable[httpx.Response]]:
        async def make() -> httpx.Response:
            started = time.monotonic()
            try:
                response: httpx.Response = await action(client, world, rng)
            except httpx.HTTPError as error:
                note(kind, error.request, started, 0)
                raise
            note(kind, response.request, started, response.status_code)
            if response.request.method == "POST" and response.status_code == 200:
                viewer = community.by_token[bearer(response.request)]
                target = target_of(response.request.url.path)
                assert target is not None
                if kind == "like":
                    ledger.likes[target].add(viewer.id)
                else:
                    ledger.follows[viewer.id].add(target)
            return response

        return make

    def note(kind: str, request: httpx.Request, started: float, status: int) -> None:
        viewer = community.by_token[bearer(request)]
        target = target_of(request.url.path)
        requests.append(
            Request(kind, request.method, viewer, target, started, time.monotonic(), status)
        )

    async def post() -> str:
        person = rng.choice(world.people)
        started = time.monotonic()
        status = 200
        try:
            posted: str = await load.post_photo(
                client, person, world, community.images, rng, patience=PATIENCE
            )
        except load.Refused as refused:
            status = refused.status
            raise
        except httpx.HTTPError:
            status = 0
            raise
        finally:
            requests.append(
                Request("post", "POST", person, None, started, time.monotonic(), status)
            )
        ledger.posts.add(posted)
        return posted

    return [
        ("home", READS * 0.5, recorded("home", load.home)),
        ("profile", READS * 0.25, recorded("profile", load.profile)),
        ("post", READS * 0.25, recorded("post", load.one_post)),
        ("like", LIKES, recorded("like", load.like)),
        ("follow", FOLLOWS, recorded("follow", load.follow)),
        ("photo post", POSTS, post),
    ]


def bearer(request: httpx.Request) -> str:
    return request.headers["authorization"].removeprefix("Bearer ")


async def under_load(
    cluster: Cluster, community: Community, name: str, fault: Callable[[], tuple[float, float]]
) -> Run:
    """The mix for BEFORE seconds, then while ``fault`` breaks something and repairs it
    (it says when it broke and when the repair answered), then AFTER seconds more."""
    requests: list[Request] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=cluster.url, timeout=PATIENCE, limits=limits) as client:
        started = time.monotonic()
        schedule = mix(client, community, random.Random(name), requests)
        loading = asyncio.create_task(load.open_loop(client, schedule, 3600.0, stop=stop))
        try:
            await asyncio.sleep(BEFORE)
            broken, repaired = await asyncio.to_thread(fault)
            await asyncio.sleep(AFTER)
        finally:
            stop.set()
            outcomes = await loading
    run = Run(name, requests, started, broken, repaired, time.monotonic() - started)
    summary = load.summarise(outcomes, run.seconds)
    print(report(run, summary))
    return run


def report(run: Run, summary: dict[str, Any]) -> str:
    at = run.started
    lines = [
        f"== {run.name}: {run.seconds:.1f} s of load; broken at {run.broken - at:.1f} s, "
        f"repaired (answering) at {run.repaired - at:.1f} s",
    ]
    for kind, figures in summary.items():
        lines.append(
            f"   {kind:<11} {figures['requests']:>5} requests  {figures['per_second']:>6}/s  "
            f"p50 {figures['p50_ms']:>7} ms  p99 {figures['p99_ms']:>8} ms  "
            f"failed {figures['errors']} {figures['error_statuses'] or ''}"
        )
    for request in sorted((r for r in run.requests if r.failed), key=lambda r: r.started):
        lines.append(
            f"   failed: {request.kind} ({request.method}) by {request.viewer.username} "
            f"(shard {shard_of(int(request.viewer.id))}), target {request.target} "
            f"({'-' if request.target is None else shard_of(int(request.target))}): "
            f"{request.status or 'no answer'}, {request.started - at:.2f}-"
            f"{request.ended - at:.2f} s"
        )
    return "\n".join(lines)


def assert_no_read_failed(run: Run) -> None:
    failed = [r for r in run.requests if r.method == "GET" and r.failed]
    assert failed == [], f"{run.name}: {len(failed)} reads failed"


def assert_writes_failed_only_with_a_5xx(run: Run) -> None:
    """A write the server did not take must say so: no connection dropped, no 4xx."""
    unsaid = [r for r in run.requests if r.method == "POST" and r.failed and r.status < 500]
    assert unsaid == [], f"{run.name}: writes failed without a 5xx: {unsaid}"


async def assert_every_write_is_there(cluster: Cluster, community: Community) -> None:
    """Every like, follow and post acknowledged since the module began can be read back
    (background work given PATIENCE to catch up)."""
    ledger, reader = community.ledger, community.world.people[0]
    async with httpx.AsyncClient(
        base_url=cluster.url, timeout=PATIENCE, headers=reader.headers
    ) as client:

        async def likes(status_id: str, likers: set[str]) -> None:
            async def counted() -> bool:
                likers_shown = await client.get(
                    f"/api/v1/statuses/{status_id}/favourited_by", params={"limit": 80}
                )
                shown = await client.get(f"/api/v1/statuses/{status_id}")
                assert likers_shown.status_code == shown.status_code == 200, shown.text
                ids = {account["id"] for account in likers_shown.json()}
                return likers <= ids and shown.json()["favourites_count"] >= len(likers)

            await until(counted, f"the likes of {status_id}")

        async def follows(follower: str, followed: set[str]) -> None:
            async def listed() -> bool:
                following = await client.get(
                    f"/api/v1/accounts/{follower}/following", params={"limit": 80}
                )
                assert following.status_code == 200, following.text
                return followed <= {account["id"] for account in following.json()}

            await until(listed, f"whom {follower} follows")

        async def post(status_id: str) -> None:
            shown = await client.get(f"/api/v1/statuses/{status_id}")
            assert shown.status_code == 200, f"post {status_id}: {shown.text}"

        await asyncio.gather(
            *(likes(s, likers) for s, likers in ledger.likes.items()),
            *(follows(f, followed) for f, followed in ledger.follows.items()),
            *(post(s) for s in ledger.posts),
        )


async def until(done: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not await done():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.2)


def wait_for(answers: Callable[[], bool], what: str) -> float:
    """Wait until ``answers()``; when it did."""
    deadline = time.monotonic() + PATIENCE
    while not answers():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)
    return time.monotonic()


def kill(pid: int) -> None:
    """``kill -9`` a process and everything it started, and wait until they are gone."""
    leader = identify(pid)
    assert leader is not None
    family = [leader, *children_of([leader])]
    for proc in family:
        os.kill(proc.pid, signal.SIGKILL)
    assert wait_gone(family, PATIENCE)


# --- the faults ------------------------------------------------------------------------------


async def survives(
    cluster: Cluster, community: Community, name: str, fault: Callable[[], tuple[float, float]]
) -> None:
    """The mix around ``fault``: no read failed, writes failed only with a 5xx, and every
    acknowledged write is there. A failed check ends the report with the cluster's
    troubles (what nginx, the app servers and the worker logged)."""
    run = await under_load(cluster, community, name, fault)
    try:
        assert_no_read_failed(run)
        assert_writes_failed_only_with_a_5xx(run)
        await assert_every_write_is_there(cluster, community)
    except AssertionError:
        print(cluster.troubles())
        raise


def down_for_a_moment(
    stop: Callable[[], object], start: Callable[[], object]
) -> Callable[[], tuple[float, float]]:
    """A fault: ``stop`` something, 2 s later ``start`` it again (returning once it answers)."""

    def fault() -> tuple[float, float]:
        broken = time.monotonic()
        stop()
        time.sleep(2.0)
        start()
        return broken, time.monotonic()

    return fault


async def test_an_app_server_killed(cluster: Cluster, community: Community) -> None:
    # Its Gunicorn master (run/app-1.pid) and its worker; `up` starts them again.
    fault = down_for_a_moment(lambda: kill(cluster.pid("app-1")), cluster.up_again)
    await survives(cluster, community, "app server app-1 killed", fault)


async def test_a_memcached_killed(cluster: Cluster, community: Community) -> None:
    fault = down_for_a_moment(lambda: kill(cluster.pid("memcached-1")), cluster.up_again)
    await survives(cluster, community, "memcached-1 killed", fault)


async def test_redis_flushed(cluster: Cluster, community: Community) -> None:
    def fault() -> tuple[float, float]:
        with redis.Redis(host="127.0.0.1", port=cluster.base_port + 7) as client:
            broken = time.monotonic()
            client.flushall()
        return broken, time.monotonic()

    await survives(cluster, community, "Redis flushed", fault)


async def test_rabbitmq_restarted(cluster: Cluster, community: Community) -> None:
    """Photos uploaded while the broker is away are answered 202 and processed once it is
    back (the worker's sweep hands their rows over again); every write is kept."""

    def rabbitmqctl(*commands: str) -> None:
        for command in commands:
            subprocess.run([RABBITMQCTL, "-q", command], check=True, timeout=PATIENCE)

    fault = down_for_a_moment(
        lambda: rabbitmqctl("stop_app"), lambda: rabbitmqctl("start_app", "await_startup")
    )
    await survives(cluster, community, "RabbitMQ stopped and started", fault)


async def test_a_postgresql_server_stopped_for_10_s(cluster: Cluster, community: Community) -> None:
    layout = cluster.layout()
    pg_ctl = [
        str(control.Binaries.find().postgresql / "pg_ctl"),
        "--pgdata",
        str(layout.pg_data(STOPPED)),
    ]
    bouncer = cluster.base_port + 2 + STOPPED
    on_stopped = cluster.shards_on(f"db{STOPPED}")
    assert on_stopped
    assert on_stopped != set(range(8))

    def as_postgres(*args: str) -> None:
        subprocess.run(
            [*pg_ctl, *args],
            user=layout.run_as,
            cwd=layout.postgresql_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=PATIENCE,
        )

    def through_pgbouncer() -> bool:
        async def ask() -> bool:
            try:
                conn = await asyncpg.connect(
                    host="127.0.0.1", port=bouncer, user="postgres", database="photogram"
                )
            except (OSError, asyncpg.PostgresError):
                return False
            try:
                return bool(await conn.fetchval("SELECT 1") == 1)
            except (OSError, asyncpg.PostgresError):
                return False
            finally:
                await conn.close()

        return asyncio.run(ask())

    times: dict[str, float] = {}

    def fault() -> tuple[float, float]:
        broken = time.monotonic()
        as_postgres("--mode", "fast", "stop")
        times["stopped"] = time.monotonic()
        time.sleep(PG_DOWN_SECONDS)
        log = str(layout.log(layout.part(f"postgresql-{STOPPED}")))
        as_postgres("--log", log, "--wait", "start")
        times["started"] = time.monotonic()
        return broken, wait_for(through_pgbouncer, "PgBouncer to reach the server again")

    run = await under_load(cluster, community, f"postgresql-{STOPPED} stopped", fault)
    print(
        f"   postgresql-{STOPPED} (shards {sorted(on_stopped)}): stopped "
        f"{times['stopped'] - run.started:.1f} s, started {times['started'] - run.started:.1f} s, "
        f"reachable through pgbouncer-{STOPPED} again {run.repaired - run.started:.1f} s"
    )

    print(f"   app servers' answers to nginx, all module: {dict(cluster.upstream_statuses())}")
    print(cluster.troubles())
    following = community.ledger.follows

    def needs_the_stopped_server(request: Request) -> bool:
        accounts = {request.viewer.id}
        if request.target is not None:
            accounts.add(request.target)
        if request.kind == "home":  # its posts are read from their authors' shards
            accounts |= following[request.viewer.id]
        return any(shard_of(int(account)) in on_stopped for account in accounts)

    failed = [r for r in run.requests if r.failed]
    elsewhere = [r for r in failed if not needs_the_stopped_server(r)]
    assert elsewhere == [], (
        f"{len(elsewhere)} requests failed that needed only the other server "
        f"(statuses {dict(Counter(r.status for r in elsewhere))})"
    )
    # Down from the stop until PgBouncer reaches the server again.
    outside = [r for r in failed if r.ended < run.broken or r.started > run.repaired]
    assert outside == [], f"{len(outside)} requests failed while the server was up"
    assert_writes_failed_only_with_a_5xx(run)
    by_viewer = Counter(shard_of(int(r.viewer.id)) in on_stopped for r in failed)
    print(
        f"   {len(failed)} of {len(run.requests)} requests failed: {by_viewer[True]} by people "
        f"whose own shard is on postgresql-{STOPPED}, {by_viewer[False]} by others reading "
        "its shards"
    )
    await assert_every_write_is_there(cluster, community)


async def test_a_shard_moved_to_the_other_server(cluster: Cluster, community: Community) -> None:
    """Not a fault but the operator's move: a logical shard people in the mix live on goes
    from one PostgreSQL server to the other while they use it. No request fails, and every
    acknowledged write is there afterwards; the move itself compared row counts and
    checksums per table on both servers before it switched."""
    lived_on = {shard_of(int(person.id)) for person in community.world.people}
    on_first = cluster.shards_on("db1") & lived_on
    assert on_first
    shard = min(on_first)
    said: list[str] = []

    def fault() -> tuple[float, float]:
        broken = time.monotonic()
        settings = str(cluster.dir / "photogram.toml")
        moved = photogram("--config", settings, "shards", "move", str(shard), "--to", "db2")
        said.append(moved.stdout + moved.stderr)
        assert moved.returncode == 0, said[-1]
        return broken, time.monotonic()

    run = await under_load(cluster, community, f"shard {shard} moved to db2", fault)
    print("".join(f"   move: {line}\n" for line in said[0].splitlines()), end="")
    failed = [r for r in run.requests if r.failed]
    assert failed == [], f"{len(failed)} requests failed during the move"
    assert shard in cluster.shards_on("db2")
    await assert_every_write_is_there(cluster, community)
