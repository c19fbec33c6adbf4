"""``photogram gates …``: switch new code paths on for a share of people or servers."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from photogram.cli import fail, out, settings_from, with_router
from photogram.db.router import Router
from photogram.gates import KNOWN, Gate, GateError, check_name, load, remove_gate, set_gate

gates_app: typer.Typer = typer.Typer(
    help="Feature gates: a code path on for a share of accounts or of app servers.",
    no_args_is_help=True,
)


@gates_app.command("set")
def gates_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The gate.")],
    percent: Annotated[int, typer.Argument(help="Share switched on, 0-100.")],
    by: Annotated[
        str, typer.Option("--by", help="What the share counts: user (accounts) or server.")
    ] = "user",
) -> None:
    """Switch a gate on for PERCENT of accounts (or of app servers), within seconds."""
    if by not in ("user", "server"):
        fail(f"--by is user or server, not {by!r}")
    if not 0 <= percent <= 100:
        fail(f"PERCENT is 0 to 100, not {percent}")
    try:
        check_name(name)
    except GateError as exc:
        fail(str(exc))

    async def work(router: Router) -> Gate:
        async with router.global_begin() as conn:
            return await set_gate(conn, name, percent, by)  # type: ignore[arg-type]

    gate = with_router(settings_from(ctx), work)
    unknown = "" if name in KNOWN else " (no code consults it yet)"
    out.print(f"gate {gate.name}: {gate.percent}% of {gate.unit}s{unknown}", highlight=False)


@gates_app.command("remove")
def gates_remove(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The gate.")]
) -> None:
    """Remove a gate: the code it guards goes back to its default."""

    async def work(router: Router) -> bool:
        async with router.global_begin() as conn:
            return await remove_gate(conn, name)

    try:
        check_name(name)
    except GateError as exc:
        fail(str(exc))
    if not with_router(settings_from(ctx), work):
        fail(f"no gate {name!r} is set")
    out.print(f"gate {name} removed", highlight=False)


@gates_app.command("list")
def gates_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every gate set, and the gates the code consults."""

    async def work(router: Router) -> dict[str, Gate]:
        async with router.global_connect() as conn:
            return await load(conn)

    found = with_router(settings_from(ctx), work)
    names = sorted({*found, *KNOWN})
    if as_json:
        out.print_json(
            data=[
                {
                    "name": name,
                    "percent": found[name].percent if name in found else None,
                    "by": found[name].unit if name in found else None,
                    "guards": KNOWN.get(name),
                }
                for name in names
            ]
        )
        return
    table = Table(title="feature gates")
    for heading in ("gate", "on for", "guards"):
        table.add_column(heading)
    for name in names:
        gate = found.get(name)
        table.add_row(
            name,
            "default" if gate is None else f"{gate.percent}% of {gate.unit}s",
            KNOWN.get(name, ""),
        )
    out.print(table)
