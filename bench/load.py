"""Load test: a realistic mix of people using photogram, against any running instance.

Seeds a community through the public API (sign-ups, follows, photo posts, likes), then
drives an open-loop load — requests are started on a fixed schedule whatever the server's
latency, so a slow server sees queues build as real clients would make them — and reports
throughput, latency percentiles and errors:

1. **Read mix** (home timelines, profiles, single posts, hashtag pages, notifications) at
   rising rates (``--read-rates``), each for ``--duration`` seconds: the highest rate whose
   p99 stays under ``--p99-ms`` (100) with no errors is the headline figure.
2. **Write mix** for ``--duration`` seconds: ``--uploads`` photo posts per second (upload,
   then post) and ``--likes`` likes per second — 25 and 90 by default, Instagram's whole
   load in 2011 — with ``--write-reads`` timeline reads per second alongside.

    .venv/bin/python bench/load.py --url http://127.0.0.1:8080 [--users 200] [--follows 20]
        [--posts 2] [--duration 20] [--read-rates 50,100,200,400] [--uploads 25] [--likes 90]
        [--write-reads 50] [--p99-ms 100] [--json]

Run it against the local cluster (``photogram cluster up``; its nginx address) or a single
``photogram serve``. The load generator shares the machine with what it measures: on a
small machine the figures are a floor, not a ceiling. Rate limits must be raised on the
server (``rate_limit_per_token``, ``rate_limit_per_ip``): the cluster command does.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import secrets
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pyvips

PASSWORD = "load-test-password-1"
SCOPES = "read write follow"


@dataclass
class Person:
    id: str
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class World:
    people: list[Person]
    statuses: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=lambda: ["sea", "city", "food", "dogs", "light"])


@dataclass
class Outcome:
    kind: str
    seconds: float
    status: int  # 0: no answer (connection error, timeout)


def photos(count: int, seed: int) -> list[bytes]:
    """Small, distinct JPEGs (640x480 colour fields), made once."""
    rng = random.Random(seed)
    made = []
    for _ in range(count):
        image = pyvips.Image.black(640, 480, bands=3) + [rng.randrange(256) for _ in range(3)]
        noise = pyvips.Image.gaussnoise(640, 480, sigma=20, mean=0)
        made.append((image + noise).cast("uchar").jpegsave_buffer(Q=85))
    return made


class Refused(RuntimeError):
    """The server answered a step of a compound action (an upload, then a post) with an
    error: its status says which."""

    def __init__(self, method: str, path: str, response: httpx.Response) -> None:
        super().__init__(f"{method} {path}: {response.status_code} {response.text[:200]}")
        self.status = response.status_code


async def call(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    response = await client.request(method, path, **kwargs)
    if response.status_code >= 400:
        raise Refused(method, path, response)
    return response


async def seed(
    client: httpx.AsyncClient,
    users: int,
    follows: int,
    posts: int,
    images: list[bytes],
    patience: float = 10.0,
) -> World:
    """``users`` sign-ups, each following ``follows`` others and posting ``posts`` photos
    (each given ``patience`` seconds to be processed)."""
    run = secrets.token_hex(3)
    app = (
        await call(
            client,
            "POST",
            "/api/v1/apps",
            data={
                "client_name": "load",
                "redirect_uris": "urn:ietf:wg:oauth:2.0:oob",
                "scopes": SCOPES,
            },
        )
    ).json()
    app_token = (
        await call(
            client,
            "POST",
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": app["client_id"],
                "client_secret": app["client_secret"],
                "scope": SCOPES,
            },
        )
    ).json()["access_token"]
    limit = asyncio.Semaphore(8)

    async def sign_up(n: int) -> Person:
        username = f"load{run}_{n}"
        async with limit:
            made = await call(
                client,
                "POST",
                "/api/v1/accounts",
                headers={"Authorization": f"Bearer {app_token}"},
                data={
                    "username": username,
                    "email": f"{username}@load.invalid",
                    "password": PASSWORD,
                    "agreement": "true",
                },
            )
            token = made.json()["access_token"]
            me = await call(
                client,
                "GET",
                "/api/v1/accounts/verify_credentials",
                headers={"Authorization": f"Bearer {token}"},
            )
        return Person(me.json()["id"], username, token)

    people = list(await asyncio.gather(*(sign_up(n) for n in range(users))))
    world = World(people)
    rng = random.Random(7)

    async def befriend(person: Person) -> None:
        for other in rng.sample([p for p in people if p is not person], min(follows, users - 1)):
            async with limit:
                await call(
                    client, "POST", f"/api/v1/accounts/{other.id}/follow", headers=person.headers
                )

    await asyncio.gather(*(befriend(p) for p in people))

    async def publish(person: Person) -> None:
        for _ in range(posts):
            async with limit:
                world.statuses.append(
                    await post_photo(client, person, world, images, rng, patience)
                )

    await asyncio.gather(*(publish(p) for p in people))
    return world


async def post_photo(
    client: httpx.AsyncClient,
    person: Person,
    world: World,
    images: list[bytes],
    rng: random.Random,
    patience: float = 10.0,
) -> str:
    """Upload a photo, wait up to ``patience`` seconds for it to be processed (as an app
    does), then post it; the status's ID."""
    media = await call(
        client,
        "POST",
        "/api/v2/media",
        headers=person.headers,
        files={"file": ("photo.jpg", rng.choice(images), "image/jpeg")},
    )
    media_id = media.json()["id"]
    if media.status_code == 202:  # still processing: a post waits for its photo
        deadline = time.perf_counter() + patience
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
            try:
                polled = await client.get(f"/api/v1/media/{media_id}", headers=person.headers)
            except httpx.HTTPError:
                continue  # asked again: a poll is no request of the mix
            if polled.status_code == 200:
                break
    status = await call(
        client,
        "POST",
        "/api/v1/statuses",
        headers=person.headers,
        data={"status": f"a photo #{rng.choice(world.tags)}", "media_ids[]": media_id},
    )
    return str(status.json()["id"])


# --- the mixes ------------------------------------------------------------------------------------

Action = Callable[[httpx.AsyncClient, World, random.Random], Awaitable[httpx.Response]]


async def home(client: httpx.AsyncClient, world: World, rng: random.Random) -> httpx.Response:
    return await client.get("/api/v1/timelines/home", headers=rng.choice(world.people).headers)


async def profile(client: httpx.AsyncClient, world: World, rng: random.Random) -> httpx.Response:
    viewer, owner = rng.choice(world.people), rng.choice(world.people)
    return await client.get(f"/api/v1/accounts/{owner.id}/statuses", headers=viewer.headers)


async def one_post(client: httpx.AsyncClient, world: World, rng: random.Random) -> httpx.Response:
    status = rng.choice(world.statuses)
    return await client.get(f"/api/v1/statuses/{status}", headers=rng.choice(world.people).headers)


async def hashtag(client: httpx.AsyncClient, world: World, rng: random.Random) -> httpx.Response:
    return await client.get(f"/api/v1/timelines/tag/{rng.choice(world.tags)}")


async def notifications(
    client: httpx.AsyncClient, world: World, rng: random.Random
) -> httpx.Response:
    return await client.get("/api/v1/notifications", headers=rng.choice(world.people).headers)


async def like(client: httpx.AsyncClient, world: World, rng: random.Random) -> httpx.Response:
    status = rng.choice(world.statuses)
    return await client.post(
        f"/api/v1/statuses/{status}/favourite", headers=rng.choice(world.people).headers
    )


async def follow(client: httpx.AsyncClient, world: World, rng: random.Random) -> httpx.Response:
    person, other = rng.sample(world.people, 2)
    return await client.post(f"/api/v1/accounts/{other.id}/follow", headers=person.headers)


READ_MIX: list[tuple[str, Action, int]] = [
    ("home", home, 50),
    ("profile", profile, 15),
    ("post", one_post, 20),
    ("hashtag", hashtag, 5),
    ("notifications", notifications, 10),
]


async def open_loop(
    client: httpx.AsyncClient,
    schedule: list[tuple[str, float, Callable[[], Awaitable[Any]]]],
    seconds: float,
    max_in_flight: int = 2000,
    stop: asyncio.Event | None = None,
) -> list[Outcome]:
    """Start each stream's requests at its rate (per second) for ``seconds`` (or until
    ``stop`` is set, if sooner), whatever the answers' latency (open loop); wait for the
    stragglers; every outcome."""
    outcomes: list[Outcome] = []
    in_flight: set[asyncio.Task[None]] = set()

    async def one(kind: str, make: Callable[[], Awaitable[Any]]) -> None:
        started = time.perf_counter()
        try:
            response = await make()
            status = response.status_code if isinstance(response, httpx.Response) else 200
        except Refused as refused:
            status = refused.status
        except httpx.HTTPError:
            status = 0
        outcomes.append(Outcome(kind, time.perf_counter() - started, status))

    async def stream(kind: str, rate: float, make: Callable[[], Awaitable[Any]]) -> None:
        start = time.perf_counter()
        n = 0
        while (due := start + n / rate) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            if stop is not None and stop.is_set():
                break
            n += 1
            if len(in_flight) >= max_in_flight:
                outcomes.append(Outcome(kind, 0.0, 0))  # the client itself is saturated
                continue
            task = asyncio.create_task(one(kind, make))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

    await asyncio.gather(*(stream(kind, rate, make) for kind, rate, make in schedule if rate > 0))
    if in_flight:
        await asyncio.wait(set(in_flight))
    return outcomes


def summarise(
    outcomes: list[Outcome], seconds: float, elapsed: float | None = None
) -> dict[str, Any]:
    """Figures per kind of request: ``per_second`` is the rate requests were started at
    over ``seconds``; with ``elapsed`` (until the last answer), ``done_per_second`` is
    the rate answered without error: below the offered rate, the server fell behind."""

    def figures(rows: list[Outcome]) -> dict[str, Any]:
        latencies = sorted(o.seconds * 1000 for o in rows if o.status and o.status < 400)
        errors = [o for o in rows if not o.status or o.status >= 400]
        quantiles = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
        done = {}
        if elapsed:
            done["done_per_second"] = round(len(latencies) / max(elapsed, seconds), 1)
        return {
            "requests": len(rows),
            "per_second": round(len(rows) / seconds, 1),
            **done,
            "errors": len(errors),
            "error_statuses": dict(Counter(o.status for o in errors)),
            "p50_ms": round(quantiles[49], 1),
            "p90_ms": round(quantiles[89], 1),
            "p99_ms": round(quantiles[98], 1),
        }

    by_kind: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_kind[outcome.kind].append(outcome)
    return {"all": figures(outcomes), **{k: figures(v) for k, v in sorted(by_kind.items())}}


def read_schedule(
    client: httpx.AsyncClient, world: World, rate: float, rng: random.Random
) -> list[tuple[str, float, Callable[[], Awaitable[Any]]]]:
    total = sum(weight for _, _, weight in READ_MIX)

    def caller(action: Action) -> Callable[[], Awaitable[Any]]:
        return lambda: action(client, world, rng)

    return [(kind, rate * weight / total, caller(action)) for kind, action, weight in READ_MIX]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    images = photos(12, seed=1)
    limits = httpx.Limits(
        max_connections=args.connections, max_keepalive_connections=args.connections
    )
    timeout = httpx.Timeout(30.0)
    async with httpx.AsyncClient(base_url=args.url, limits=limits, timeout=timeout) as client:
        started = time.perf_counter()
        world = await seed(client, args.users, args.follows, args.posts, images)
        report: dict[str, Any] = {
            "url": args.url,
            "seed": {
                "users": len(world.people),
                "posts": len(world.statuses),
                "seconds": round(time.perf_counter() - started, 1),
            },
            "read": [],
        }
        rng = random.Random(11)
        best = None
        for rate in args.read_rates:
            began = time.perf_counter()
            outcomes = await open_loop(
                client, read_schedule(client, world, rate, rng), args.duration
            )
            figures = summarise(outcomes, args.duration, time.perf_counter() - began)
            report["read"].append({"target_per_second": rate, **figures})
            whole = figures["all"]
            say(
                f"read {rate}/s: {whole['done_per_second']}/s answered, p50 {whole['p50_ms']} ms, "
                f"p99 {whole['p99_ms']} ms, {whole['errors']} errors"
            )
            if whole["errors"] == 0 and whole["p99_ms"] < args.p99_ms:
                best = rate
        report["read_best_per_second_under_p99"] = best

        def upload() -> Awaitable[str]:
            return post_photo(client, rng.choice(world.people), world, images, rng)

        schedule = [
            ("upload+post", args.uploads, upload),
            ("like", args.likes, lambda: like(client, world, rng)),
            ("home", args.write_reads, lambda: home(client, world, rng)),
        ]
        began = time.perf_counter()
        outcomes = await open_loop(client, schedule, args.duration)
        elapsed = time.perf_counter() - began
        report["write"] = {
            "target": {"uploads": args.uploads, "likes": args.likes, "reads": args.write_reads},
            "seconds_until_answered": round(elapsed, 1),
            **summarise(outcomes, args.duration, elapsed),
        }
        w = report["write"]
        say(
            f"write: {w.get('upload+post', {}).get('done_per_second')} uploads/s, "
            f"{w.get('like', {}).get('done_per_second')} likes/s answered "
            f"(all answered after {elapsed:.1f} s), {w['all']['errors']} errors, "
            f"upload p99 {w.get('upload+post', {}).get('p99_ms')} ms"
        )
    return report


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the instance (e.g. the cluster's nginx)")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--follows", type=int, default=20)
    parser.add_argument("--posts", type=int, default=2, help="photo posts per user to seed")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per step")
    parser.add_argument(
        "--read-rates", default="50,100,200,400", type=lambda s: [float(r) for r in s.split(",")]
    )
    parser.add_argument("--p99-ms", type=float, default=100.0)
    parser.add_argument("--uploads", type=float, default=25.0)
    parser.add_argument("--likes", type=float, default=90.0)
    parser.add_argument("--write-reads", type=float, default=50.0)
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        out = io.StringIO()
        for step in report["read"]:
            a = step["all"]
            out.write(
                f"read  {step['target_per_second']:>6}/s  answered {a['done_per_second']:>7}/s  "
                f"p50 {a['p50_ms']:>7} ms  p99 {a['p99_ms']:>8} ms  errors {a['errors']}\n"
            )
        w = report["write"]
        for kind in ("upload+post", "like", "home"):
            k = w.get(kind)
            if k:
                out.write(
                    f"write {kind:<12} {k['per_second']:>7}/s offered  "
                    f"{k['done_per_second']:>7}/s answered  p50 {k['p50_ms']:>7} ms  "
                    f"p99 {k['p99_ms']:>8} ms  errors {k['errors']}\n"
                )
        out.write(
            f"best read rate with p99 < {args.p99_ms:g} ms: "
            f"{report['read_best_per_second_under_p99']}/s\n"
        )
        print(out.getvalue(), end="")


if __name__ == "__main__":
    main()
