"""The `photogram` command."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from photogram import __version__
from photogram.db.ids import InvalidIdError, decompose, parse_id
from photogram.db.migrations import InitReport, init_cluster
from photogram.db.router import Router
from photogram.db.status import cluster_status
from photogram.demo_limits import ACTIONS_MAX_POSTS, ACTIONS_MAX_USERS
from photogram.errors import PhotogramError
from photogram.settings import Settings, load_settings
from photogram.tasks.outbox import QUEUES

T = TypeVar("T")

app = typer.Typer(
    name="photogram",
    help="photogram: a photo-sharing backend built the way Instagram built theirs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
shards_app = typer.Typer(help="Logical shards and their placement.", no_args_is_help=True)
ids_app = typer.Typer(help="Inspect photogram IDs.", no_args_is_help=True)
tasks_app = typer.Typer(help="Background work that keeps failing.", no_args_is_help=True)
app.add_typer(shards_app, name="shards")
app.add_typer(ids_app, name="ids")
app.add_typer(tasks_app, name="tasks")

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"photogram: error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; any error a user can cause becomes one line and exit code 1."""
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except PhotogramError as exc:
        fail(str(exc))


def with_router(settings: Settings, work: Callable[[Router], Awaitable[T]]) -> T:
    """Open the cluster's router (an unreachable or uninitialised cluster is one line and
    exit code 1), ``work`` with it, close it."""

    async def opened() -> T:
        router = await Router.open(settings)
        try:
            return await work(router)
        finally:
            await router.close()

    return run(opened)


def settings_from(ctx: typer.Context) -> Settings:
    try:
        return load_settings(ctx.obj)
    except PhotogramError as exc:
        fail(str(exc))


def _version(value: bool) -> None:
    if value:
        out.print(f"photogram {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", envvar="PHOTOGRAM_CONFIG", help="TOML settings file.", show_default=False
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    ctx.obj = config


# --- init -----------------------------------------------------------------------------------


def _init_with_progress(settings: Settings, shards: int | None, quiet: bool) -> InitReport:
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=quiet,
    )
    task = progress.add_task("migrating shard schemas", total=None)

    def tick(_database: str, _shard: int | None, _outcome: str) -> None:
        progress.advance(task)

    with progress:
        return run(lambda: init_cluster(settings, shards, on_schema=tick))


@app.command()
def init(
    ctx: typer.Context,
    shards: Annotated[
        int | None,
        typer.Option(
            "--shards",
            help="Logical shard count for a new cluster (a power of two up to 8192).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Create the global database and every shard schema, or upgrade them. Safe to repeat."""
    if shards is not None and (shards < 1 or shards > 8192 or shards & (shards - 1)):
        fail(f"--shards must be a power of two from 1 to 8192, not {shards}", code=2)
    settings = settings_from(ctx)
    report = _init_with_progress(settings, shards, quiet=as_json)
    if as_json:
        out.print_json(
            data={
                "logical_shards": report.logical_shards,
                "map_version": report.map_version,
                "created_cluster": report.created_cluster,
                "schemas": report.schemas,
            }
        )
        return
    verb = "created" if report.created_cluster else "checked"
    out.print(f"{verb} cluster: {report.logical_shards} logical shards, map v{report.map_version}")
    for name, counts in report.schemas.items():
        out.print(
            f"  {name}: {counts['created']} created, {counts['upgraded']} upgraded, "
            f"{counts['current']} already current",
            highlight=False,
        )


# --- serve ----------------------------------------------------------------------------------


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to bind.", show_default=False)] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind.", show_default=False)] = None,
) -> None:
    """Run the HTTP API (on the embedded default, initialising it on first start)."""
    import uvicorn

    from photogram.app import create_app
    from photogram.observe import configure_logging

    settings = settings_from(ctx)
    overrides = {"host": host, "port": port}
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if settings.embedded:
        _init_with_progress(settings, None, quiet=True)
    else:
        with_router(settings, lambda _: asyncio.sleep(0))  # reachable and initialised
    configure_logging(settings.log_format, settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # the logging configured above: one format, request IDs
        access_log=False,  # photogram logs each request itself, with its route and ID
    )


# --- worker and tasks -----------------------------------------------------------------------


@app.command()
def worker(
    ctx: typer.Context,
    queues: Annotated[
        str,
        typer.Option(
            help="Comma-separated queues to take work from: "
            "media, notifications, default, fanout, maintenance.",
        ),
    ] = ",".join(QUEUES),
    concurrency: Annotated[
        int, typer.Option(min=1, help="Tasks run at once, each on a thread of its own.")
    ] = 2 * (os.cpu_count() or 1),
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Serve Prometheus metrics on this port (at host)."),
    ] = None,
) -> None:
    """Run background work from RabbitMQ (needs broker_url), and the outbox relay's sweep."""
    from photogram.tasks.broker import run_worker

    settings = settings_from(ctx)
    if not settings.broker_url:
        fail(
            "no broker: set broker_url (PHOTOGRAM_BROKER_URL); without one, background "
            "work runs inside `photogram serve`"
        )
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in wanted if q not in QUEUES]
    if unknown or not wanted:
        fail(f"unknown queue {', '.join(unknown) or '(none)'}: choose from {', '.join(QUEUES)}")

    with_router(settings, lambda _: asyncio.sleep(0))  # reachable and initialised
    run_worker(
        settings,
        queues=wanted,
        concurrency=concurrency,
        loglevel=loglevel.upper(),
        metrics_port=metrics_port,
    )


@tasks_app.command("dead")
def tasks_dead(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Tasks that failed too often to be retried again by themselves, oldest first."""
    from photogram.tasks.admin import dead_tasks

    dead = with_router(settings_from(ctx), dead_tasks)
    if as_json:
        out.print_json(data=[task.as_json() for task in dead])
        return
    if not dead:
        out.print("No dead tasks.")
        return
    table = Table(title=f"{len(dead)} dead tasks")
    for heading in ("id", "task", "queue", "attempts", "dead since", "last error"):
        table.add_column(heading)
    for task in dead:
        table.add_row(
            task.id, task.task, task.queue, str(task.attempts), task.dead_at, task.last_error or ""
        )
    out.print(table)


@tasks_app.command("retry")
def tasks_retry(
    ctx: typer.Context,
    ids: Annotated[
        list[str] | None, typer.Argument(metavar="[ID]...", help="Dead task IDs.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead task.")] = False,
) -> None:
    """Run dead tasks again, with a fresh count of attempts."""
    from photogram.runtime import Runtime
    from photogram.tasks.admin import retry_dead

    if bool(ids) == all_:
        fail("name the dead tasks to retry, or say --all")
    settings = settings_from(ctx)

    async def revive() -> tuple[list[str], list[str]]:
        runtime = await Runtime.open(settings)
        try:
            return await retry_dead(runtime.relay, None if all_ else ids)
        finally:
            await runtime.close()

    revived, missing = run(revive)
    out.print(f"{len(revived)} tasks retried.", highlight=False)
    if missing:
        fail(f"not dead tasks: {', '.join(missing)}")


# --- demo -----------------------------------------------------------------------------------


@app.command()
def demo(
    ctx: typer.Context,
    users: Annotated[int, typer.Option(help="Accounts to make.")] = 50,
    posts: Annotated[int, typer.Option(help="Photo posts to make.")] = 300,
    follows: Annotated[
        int | None,
        typer.Option(
            help="Accounts each follows, on average [default: a quarter of --users, at most 150].",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Make the same community again [default: random].", show_default=False),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(help="The accounts' password [default: generated].", show_default=False),
    ] = None,
    photo_size: Annotated[int, typer.Option(help="Longest side of the photos, in pixels.")] = 1080,
    bulk: Annotated[
        bool | None,
        typer.Option(
            "--bulk/--actions",
            help="Write in batches per shard, or through the actions users' requests take "
            f"[default: actions up to {ACTIONS_MAX_USERS} users and {ACTIONS_MAX_POSTS} posts].",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Fill this instance with a small community: people, follows, photo posts, likes, comments."""
    # Imported here: it brings the web app and libvips, which no other command needs.
    from photogram import demo as demo_module

    settings = settings_from(ctx)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=as_json,
    )
    stages: dict[str, TaskID] = {}

    def tick(stage: str, done: int, total: int) -> None:
        if stage not in stages:
            stages[stage] = progress.add_task(stage, total=total)
        progress.update(stages[stage], completed=done, total=total)

    async def fill() -> demo_module.Report:
        # Media stores write (and sync) each object in a thread: more threads, more at once.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32))
        return await demo_module.fill(
            settings,
            users=users,
            posts=posts,
            follows=follows,
            seed=seed,
            password=password,
            bulk=bulk,
            photo_size=photo_size,
            progress=tick,
        )

    with progress:
        report = run(fill)
    if as_json:
        out.print_json(data=report.as_json())
    else:
        out.print(report.line(), markup=False, highlight=False, soft_wrap=True)


# --- shards ---------------------------------------------------------------------------------


@shards_app.command("status")
def shards_status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Where each logical shard lives, and rows per physical database."""
    status = with_router(settings_from(ctx), cluster_status)
    if as_json:
        out.print_json(data=status)
    else:
        table = Table(
            title=f"{status['logical_shards']} logical shards, map v{status['map_version']}"
        )
        for heading in ("database", "url", "shards", "logical", "rows"):
            table.add_column(heading)
        for db in status["databases"]:
            table.add_row(
                db["name"],
                db["url"],
                db["shard_ranges"],
                str(db["logical_shards"]),
                str(db["total_rows"]) if db["reachable"] else "unreachable",
            )
        out.print(table)
    if status["problems"]:
        for problem in status["problems"]:
            err.print(f"photogram: error: {problem}", markup=False, highlight=False)
        raise typer.Exit(1)


@shards_app.command("move")
def shards_move(
    ctx: typer.Context,
    shard: Annotated[int, typer.Argument(help="The logical shard.")],
    to: Annotated[str, typer.Option("--to", help="The physical database (under `databases`).")],
) -> None:
    """Move one logical shard to another physical database while the app keeps serving."""
    from photogram.db.moves import move_shard

    report = with_router(
        settings_from(ctx),
        lambda router: move_shard(router, shard, to, lambda line: err.print(line, highlight=False)),
    )
    out.print(
        f"shard {report.shard} moved from {report.source!r} to {report.target!r}: "
        f"{sum(report.rows.values()):,} rows verified; writes paused "
        f"{report.write_pause_seconds:.1f} s",
        highlight=False,
    )


@shards_app.command("rebalance")
def shards_rebalance(
    ctx: typer.Context,
    plan: Annotated[bool, typer.Option("--plan", help="Only print the moves.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many moves.")] = 64,
) -> None:
    """Even out the bytes each physical database holds by moving shards (--plan to look)."""
    from photogram.db.moves import PlannedMove, move_shard, plan_rebalance, shard_sizes

    settings = settings_from(ctx)

    async def work(router: Router) -> list[PlannedMove]:
        sizes = await shard_sizes(router)
        moves = plan_rebalance(
            sizes, router.shard_map.placement, list(router.engines.shard_engines), limit
        )
        if not plan:
            for move in moves:
                await move_shard(router, move.shard, move.target)
                err.print(f"moved shard {move.shard} to {move.target!r}", highlight=False)
        return moves

    moves = with_router(settings, work)
    if as_json:
        out.print_json(data=[vars(m) for m in moves])
        return
    if not moves:
        out.print("The databases are as even as moving whole shards can make them.")
        return
    table = Table(title=f"{len(moves)} moves" + (" (not made: --plan)" if plan else ""))
    for heading in ("shard", "from", "to", "bytes"):
        table.add_column(heading)
    for move in moves:
        table.add_row(str(move.shard), move.source, move.target, f"{move.bytes:,}")
    out.print(table)


# --- ids ------------------------------------------------------------------------------------


@ids_app.command("decode")
def ids_decode(id_: Annotated[str, typer.Argument(metavar="ID", help="A photogram ID.")]) -> None:
    """Print an ID's timestamp, logical shard and sequence as JSON."""
    try:
        parts = decompose(parse_id(id_))
    except InvalidIdError as exc:
        fail(str(exc), code=2)
    out.print(json.dumps(parts.as_json()), highlight=False, soft_wrap=True)


# --- media ----------------------------------------------------------------------------------

media_app = typer.Typer(help="The media store.", no_args_is_help=True)
app.add_typer(media_app, name="media")

# Below everything it uses from this module (fail, run, out …).
from photogram.media.migration.cli import migrate_app  # noqa: E402

media_app.add_typer(migrate_app, name="migrate")

from photogram.cluster.cli import cluster_app  # noqa: E402

app.add_typer(cluster_app, name="cluster")

from photogram.gates.cli import gates_app  # noqa: E402

app.add_typer(gates_app, name="gates")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
