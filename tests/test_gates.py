"""Feature gates: stable shares of accounts and servers, set at runtime from the CLI."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from photogram.gates import Gate, Gates, bucket
from photogram.settings import Settings
from tests.api import api_client
from tests.conftest import sqlite_settings
from tests.test_cli import env_for, one_line_error, photogram


@given(
    name=st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True),
    subject=st.integers(min_value=1, max_value=2**63 - 1),
    low=st.integers(0, 100),
    high=st.integers(0, 100),
)
def test_a_share_only_grows(name: str, subject: int, low: int, high: int) -> None:
    """Whoever is in at one percentage is in at every higher one."""
    low, high = sorted((low, high))
    assert 0 <= bucket(name, str(subject)) < 100
    if bucket(name, str(subject)) < low:
        assert bucket(name, str(subject)) < high


def test_shares_are_close_to_the_percentage_and_independent_between_gates() -> None:
    people = [str(n) for n in range(1, 20_001)]
    for percent in (1, 10, 50):
        inside = {p for p in people if bucket("a", p) < percent}
        assert abs(len(inside) / len(people) - percent / 100) < 0.01
    first = {p for p in people if bucket("a", p) < 10}
    second = {p for p in people if bucket("b", p) < 10}
    assert len(first & second) < len(first) / 2  # not the same people every time


async def test_user_and_server_gates() -> None:
    table = {
        "by_user": Gate("by_user", 30, "user"),
        "by_server": Gate("by_server", 50, "server"),
        "off": Gate("off", 0, "user"),
    }

    async def load() -> dict[str, Gate]:
        return table

    servers = {name: Gates(load, server_name=name, refresh_seconds=60) for name in "abcdefgh"}
    for name, gates in servers.items():
        assert await gates.enabled("by_server", default=False) == (bucket("by_server", name) < 50)
        assert await gates.enabled("unset", default=True) is True
        assert await gates.enabled("off", user_id=1, default=True) is False
    one = servers["a"]
    for user in range(1, 200):
        expected = bucket("by_user", str(user)) < 30
        assert await one.enabled("by_user", user_id=user, default=False) == expected
    # Signed out: only a gate at 100% is on.
    assert await one.enabled("by_user", default=True) is False


async def test_gates_from_the_command_line(tmp_path: Path) -> None:
    settings: Settings = sqlite_settings(tmp_path)
    env = env_for(settings)
    async with api_client(settings) as client:
        ran = await photogram("gates", "set", "home.push_feeds", "25", env=env)
        assert ran.code == 0, ran.err
        assert "25% of users" in ran.out
        ran = await photogram("gates", "set", "upload.new_path", "50", "--by", "server", env=env)
        assert ran.code == 0, ran.err
        gates = await client.runtime.gates.refresh()
        assert gates["home.push_feeds"].percent == 25
        assert gates["upload.new_path"].unit == "server"
        ran = await photogram("gates", "list", "--json", env=env)
        assert ran.code == 0, ran.err
        listed = {g["name"]: g for g in ran.json}  # type: ignore[attr-defined, union-attr]
        assert listed["home.push_feeds"]["percent"] == 25
        assert listed["home.push_feeds"]["guards"]
        ran = await photogram("gates", "remove", "upload.new_path", env=env)
        assert ran.code == 0, ran.err
        assert "upload.new_path" not in await client.runtime.gates.refresh()

    for args, message in (
        (["set", "Bad Name", "5"], "invalid gate name"),
        (["set", "ok", "101"], "0 to 100"),
        (["set", "ok", "5", "--by", "planet"], "--by is user or server"),
        (["remove", "never.set"], "no gate 'never.set'"),
    ):
        one_line_error(await photogram("gates", *args, env=env), message)
