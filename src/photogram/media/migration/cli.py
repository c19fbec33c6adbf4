"""``photogram media migrate …``: move the media store to another, a phase at a time."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from photogram.cli import err, fail, out, run, settings_from
from photogram.media.migration import jobs, phases
from photogram.media.migration.jobs import Limits, Mover
from photogram.media.migration.phases import MigrationError, Phase, State
from photogram.runtime import Runtime
from photogram.settings import Settings

T = TypeVar("T")

migrate_app: typer.Typer = typer.Typer(
    help="Move the media store to another with no downtime: start, backfill, verify, "
    "ramp, promote, retire (or roll back at any step before retire).",
    no_args_is_help=True,
)

NEXT = {
    Phase.LEGACY: "start with `photogram media migrate start --to STORE`",
    Phase.DUAL_WRITE: "next: `photogram media migrate backfill`",
    Phase.BACKFILL: "next: `photogram media migrate backfill` to the end, then `verify`",
    Phase.VERIFY: "next: `photogram media migrate verify` until clean, then `ramp PERCENT`",
    Phase.READ_RAMP: "next: `ramp` up to 100, then `photogram media migrate promote`",
    Phase.NEW_PRIMARY: "next: `photogram media migrate verify` until clean, then `retire`",
    Phase.RETIRED: "done; set media_store to the new store in the settings",
}


def with_runtime(settings: Settings, work: Callable[[Runtime], Awaitable[T]]) -> T:
    async def opened() -> T:
        runtime = await Runtime.open(settings)
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    return run(opened)


def _said(state: State) -> None:
    percent = (
        f", {state.read_percent}% of reads from {state.target!r}"
        if (state.phase is Phase.READ_RAMP)
        else ""
    )
    out.print(
        f"phase {state.phase} ({state.source!r} → {state.target!r}, primary "
        f"{state.primary!r}{percent}); {NEXT[state.phase]}",
        highlight=False,
    )


def _say(message: str) -> None:
    err.print(message, highlight=False)


def _limits(concurrency: int, rate: float | None, bandwidth: float | None) -> Limits:
    if concurrency < 1:
        fail("--concurrency must be at least 1")
    if (rate is not None and rate <= 0) or (bandwidth is not None and bandwidth <= 0):
        fail("--rate and --bandwidth must be positive")
    return Limits(
        concurrency=concurrency,
        objects_per_second=rate,
        bytes_per_second=None if bandwidth is None else bandwidth * 1024 * 1024,
    )


Concurrency = Annotated[int, typer.Option(help="Objects in flight at once.")]
Rate = Annotated[float | None, typer.Option(help="At most this many objects per second.")]
Bandwidth = Annotated[float | None, typer.Option(help="At most this many MiB per second.")]


async def _check_stores(runtime: Runtime, *names: str | None) -> None:
    for name in names:
        if name is not None:
            await runtime.stores[name].check()


async def _run_job(runtime: Runtime, mover: Mover, job: jobs.Job, title: str) -> bool:
    """Run (or resume) ``job``'s pass with a progress bar; True if it finished."""
    total, done = await mover.prepare(job)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, mover.stop)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=err, disable=not err.is_terminal) as bar:
            task = bar.add_task(title, total=total, completed=done)
            mover.progress = lambda n: bar.advance(task, n)
            return await mover.run(job)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _job_line(status: dict[str, Any], job: str) -> str:
    s = status["jobs"][job]
    counts = ", ".join(
        f"{s[name]:,} {name}" for name in jobs.COUNTS if s[name] or name in ("copied", "verified")
    )
    return f"{job}: {s['done']:,} of {s['total']:,} objects ({counts})"


# --- the commands ------------------------------------------------------------------------------


@migrate_app.command("start")
def start(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="The media store to move to (by name).")],
) -> None:
    """Begin: every new object is written to both stores (phase dual_write)."""
    settings = settings_from(ctx)
    if to not in settings.media_stores:
        known = ", ".join(sorted(settings.media_stores))
        fail(f"unknown media store {to!r} (media_stores: {known})")
    if to == settings.media_spool_store:
        fail(f"{to!r} is the media_spool_store (private uploads); choose another store")

    async def work(runtime: Runtime) -> State:
        await _check_stores(runtime, to)
        async with runtime.router.global_begin() as conn:
            state = await phases.start(conn, settings.media_store, to)
        await runtime.media.refresh()
        await _check_stores(runtime, state.source)
        return state

    _said(with_runtime(settings, work))


@migrate_app.command("status")
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The phase, and how far the backfill and the verifier have got."""
    found = with_runtime(settings_from(ctx), jobs.status)
    if as_json:
        out.print_json(data=found)
        return
    table = Table(title=f"media migration: phase {found['phase']}", show_header=False)
    table.add_column()
    table.add_column()
    table.add_row("from → to", f"{found['source']} → {found['target'] or '-'}")
    table.add_row("primary", found["primary"])
    table.add_row("reads from the target", f"{found['read_percent']}%")
    table.add_row("last clean verification", found["verified_at"] or "none")
    table.add_row("quarantined", f"{found['quarantined']:,}")
    for job in ("backfill", "verify"):
        s = found["jobs"][job]
        if not s["shards"]:
            table.add_row(job, "not run")
            continue
        rate = s["objects_per_second"]
        eta = s["eta_seconds"]
        table.add_row(
            job,
            _job_line(found, job)
            + ("" if rate is None else f"; {rate:,.1f} objects/s")
            + ("; finished" if s["finished"] else "" if eta is None else f"; ETA {eta:,.0f} s"),
        )
    out.print(table)


@migrate_app.command("backfill")
def backfill(
    ctx: typer.Context,
    concurrency: Concurrency = 16,
    rate: Rate = None,
    bandwidth: Bandwidth = None,
) -> None:
    """Copy every recorded object the target lacks (resumes where it was stopped)."""
    settings = settings_from(ctx)
    limits = _limits(concurrency, rate, bandwidth)

    async def work(runtime: Runtime) -> tuple[bool, dict[str, Any]]:
        state = await jobs.begin_backfill(runtime, _say)
        await _check_stores(runtime, state.source, state.target)
        mover = Mover(runtime, state, limits)
        finished = await _run_job(runtime, mover, "backfill", "backfill")
        return finished, await jobs.status(runtime)

    finished, found = with_runtime(settings, work)
    out.print(_job_line(found, "backfill"), highlight=False)
    if not finished:
        fail("the backfill stopped before the end; run it again to resume", 130)
    out.print("next: `photogram media migrate verify`", highlight=False)


@migrate_app.command("verify")
def verify(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep verifying, pass after pass, until stopped.")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between passes with --follow.")] = 60,
    concurrency: Concurrency = 16,
    rate: Rate = None,
    bandwidth: Bandwidth = None,
) -> None:
    """Read every live object back from the target and repair what differs."""
    settings = settings_from(ctx)
    limits = _limits(concurrency, rate, bandwidth)

    async def work(runtime: Runtime) -> tuple[bool, int]:
        state = await jobs.begin_verify(runtime)
        await _check_stores(runtime, state.source, state.target)
        while True:
            mover = Mover(runtime, state, limits)
            if not await _run_job(runtime, mover, "verify", "verify"):
                raise MigrationError("verification stopped before the end of its pass")
            removed = await mover.sweep(settings.media_migration_orphan_grace_seconds)
            clean, left = await mover.finish_pass()
            found = await jobs.status(runtime)
            _say(
                _job_line(found, "verify")
                + f"; {removed:,} deleted objects removed"
                + ("; clean" if clean else f"; {left:,} quarantined")
            )
            if not follow:
                return clean, left
            await asyncio.sleep(interval)
            state = await jobs.still_active(runtime)

    clean, left = with_runtime(settings, work)
    if not clean:
        fail(f"{left:,} objects are quarantined; `status` counts them, a later pass retries them")
    out.print("every live object is intact in the target", highlight=False)


@migrate_app.command("ramp")
def ramp(
    ctx: typer.Context,
    percent: Annotated[int, typer.Argument(help="Share of reads served by the target, 0-100.")],
) -> None:
    """Serve a stable share of reads from the target (falling back to the source)."""
    if not 0 <= percent <= 100:
        fail(f"PERCENT is 0 to 100, not {percent}")
    _said(
        with_runtime(
            settings_from(ctx),
            lambda runtime: jobs.enter(runtime, Phase.READ_RAMP, read_percent=percent),
        )
    )


@migrate_app.command("promote")
def promote(ctx: typer.Context) -> None:
    """Make the target primary; the source is still written, so rollback stays safe."""
    _said(with_runtime(settings_from(ctx), lambda runtime: jobs.enter(runtime, Phase.NEW_PRIMARY)))


@migrate_app.command("retire")
def retire(ctx: typer.Context) -> None:
    """Stop writing the source: the end of the migration (no rollback past this)."""
    _said(with_runtime(settings_from(ctx), lambda runtime: jobs.enter(runtime, Phase.RETIRED)))


@migrate_app.command("rollback")
def rollback(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="The earlier phase to go back to.")] = "legacy",
) -> None:
    """Go back to an earlier phase (default legacy: the source alone), losing nothing."""
    try:
        phase = Phase(to)
    except ValueError:
        fail(f"unknown phase {to!r} (phases: {', '.join(p.value for p in Phase)})")
    settings = settings_from(ctx)

    async def work(runtime: Runtime) -> State:
        async with runtime.router.global_begin() as conn:
            state = await phases.rollback(conn, settings.media_store, phase)
        await runtime.media.refresh()
        return state

    _said(with_runtime(settings, work))
