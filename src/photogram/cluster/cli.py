"""``photogram cluster up|down|status``: a real multi-node deployment on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from photogram.cli import err, fail, out, settings_from
from photogram.cluster import control, files
from photogram.cluster.layout import DEFAULT_BASE_PORT, MAX_APP_SERVERS, ClusterError, Layout

cluster_app: typer.Typer = typer.Typer(
    help="A real multi-node cluster on this machine, on loopback ports: two PostgreSQL "
    "servers behind PgBouncer, memcached, Redis, RabbitMQ, app servers under Gunicorn, a "
    "worker and nginx.",
    no_args_is_help=True,
)

DEFAULTS: dict[str, Any] = {
    "base_port": DEFAULT_BASE_PORT,
    "app_servers": 2,
    "web_workers": 2,
    "shards": 64,
    "broker": "amqp://guest:guest@127.0.0.1:5672",
}

DirOption = Annotated[
    Path,
    typer.Option("--dir", help="The cluster's directory: settings, data, logs, pid files."),
]


def _say(message: str) -> None:
    err.print(f"[dim]{message}…[/dim]", highlight=False)


def _print_parts(layout: Layout, parts: list[control.PartState]) -> None:
    table = Table(title=f"photogram cluster in {layout.dir}")
    for heading in ("part", "listens on", "pid", "state", "what"):
        table.add_column(heading)
    for state in parts:
        if state.answers:
            shown = "[green]answers[/green]"
        elif state.running:
            shown = "[yellow]running, not answering[/yellow]"
        else:
            shown = "[red]stopped[/red]"
        table.add_row(
            state.part.name,
            f"127.0.0.1:{state.part.port}",
            str(state.proc.pid) if state.proc else "-",
            shown,
            state.part.role,
        )
    out.print(table)


@cluster_app.command("up")
def cluster_up(
    ctx: typer.Context,
    directory: DirOption = Path("photogram-cluster"),
    app_servers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_APP_SERVERS,
            help=f"App servers behind nginx (default {DEFAULTS['app_servers']}).",
            show_default=False,
        ),
    ] = None,
    web_workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help=f"Uvicorn workers per app server (default {DEFAULTS['web_workers']}).",
            show_default=False,
        ),
    ] = None,
    base_port: Annotated[
        int | None,
        typer.Option(
            min=1024,
            max=65000,
            help="nginx's port; the other parts take the ports after it "
            f"(default {DEFAULT_BASE_PORT}).",
            show_default=False,
        ),
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option(
            help="Logical shards of a new cluster, a power of two up to 8192 "
            f"(default {DEFAULTS['shards']}).",
            show_default=False,
        ),
    ] = None,
    broker_url: Annotated[
        str | None,
        typer.Option(
            help="The RabbitMQ to make the cluster's vhost on, without a vhost "
            f"(default {DEFAULTS['broker']}).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds each part may take to answer.")
    ] = 120.0,
) -> None:
    """Start the cluster (what of it is not running), initialise it, wait until every part
    answers, and print where each listens. Settings given to photogram (--config,
    PHOTOGRAM_*) go into the cluster's settings file, but for its addresses."""
    if shards is not None and (shards < 1 or shards > 8192 or shards & (shards - 1)):
        fail(f"--shards must be a power of two from 1 to 8192, not {shards}", code=2)
    if broker_url is not None and (
        not broker_url.startswith(("amqp://", "amqps://")) or broker_url.count("/") > 2
    ):
        fail(f"--broker-url must be amqp://user:password@host:port, not {broker_url!r}", code=2)
    given = files.carried(settings_from(ctx))
    directory = directory.resolve()
    try:
        layout, already = control.up(
            directory,
            base_port=base_port,
            app_servers=app_servers,
            web_workers=web_workers,
            shards=shards,
            broker=broker_url,
            given=given,
            defaults=DEFAULTS,
            timeout=timeout,
            say=_say,
        )
        parts = control.states(layout)
    except ClusterError as exc:
        fail(str(exc))
    if already:
        out.print(f"The cluster in {layout.dir} is already running.", highlight=False)
    _print_parts(layout, parts)
    out.print(f"settings: {layout.settings_file}", highlight=False, soft_wrap=True)
    out.print(f"open:     {layout.url}/", highlight=False, soft_wrap=True)


@cluster_app.command("status")
def cluster_status(
    directory: DirOption = Path("photogram-cluster"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each part of the cluster: its pid and port, and whether it answers. Exits 1 unless
    every part answers."""
    try:
        layout = control.load(directory.resolve())
        parts = control.states(layout)
    except ClusterError as exc:
        fail(str(exc))
    everything = all(state.answers for state in parts)
    if as_json:
        out.print_json(
            data={
                "dir": str(layout.dir),
                "settings": str(layout.settings_file),
                "url": layout.url,
                "up": everything,
                "parts": [state.as_json() for state in parts],
            }
        )
    else:
        _print_parts(layout, parts)
        out.print(f"settings: {layout.settings_file}", highlight=False, soft_wrap=True)
    if not everything:
        raise typer.Exit(1)


@cluster_app.command("down")
def cluster_down(
    directory: DirOption = Path("photogram-cluster"),
    purge: Annotated[
        bool, typer.Option("--purge", help="Remove the directory too: data, logs, settings.")
    ] = False,
) -> None:
    """Stop every part of the cluster and delete its RabbitMQ vhost. The data stays for the
    next `up`, unless --purge."""
    directory = directory.resolve()
    try:
        stopped = control.down(directory, purge=purge, say=_say)
    except ClusterError as exc:
        fail(str(exc))
    if stopped:
        out.print(f"Stopped {len(stopped)} parts: {', '.join(stopped)}.", highlight=False)
    else:
        out.print("Nothing of the cluster was running.", highlight=False)
    if purge:
        out.print(f"Removed {directory}.", highlight=False, soft_wrap=True)
