"""The two sides of an edge converge: whatever dies, fails, repeats or runs out of order."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

import pytest

from photogram.graph import tasks
from photogram.tasks import outbox
from photogram.tasks.outbox import Payload, Relay
from tests.api import Client, User, api_client
from tests.conftest import MakeSettings
from tests.graph.helpers import (
    assert_converged,
    counts,
    ids_of,
    lock,
    make_due,
    pending_tasks,
    post,
    relationship,
    sign_up_spread,
    stored_counts,
)


class Recorder:
    """Stands in for ``Relay.dispatch``: keeps the row IDs instead of running them, as if
    the process died right after each commit."""

    def __init__(self) -> None:
        self.row_ids: list[int] = []

    async def __call__(self, row_ids: Iterable[int]) -> None:
        self.row_ids.extend(row_ids)

    def take(self) -> list[int]:
        taken, self.row_ids = self.row_ids, []
        return taken


def record(client: Client, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(client.runtime.relay, "dispatch", recorder)
    return recorder


async def run_rows(client: Client, row_ids: Iterable[int]) -> None:
    """Run these outbox rows now, in this order (what dispatch would have done)."""
    await Relay.dispatch(client.runtime.relay, row_ids)


async def test_process_dies_after_the_follow_commits(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        record(client, monkeypatch)

        rel = await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        # The follower's side is written and answers at once ...
        assert rel["following"] is True
        assert await counts(client, bob) == (0, 1)
        assert await ids_of(client, f"/api/v1/accounts/{bob.id}/following") == [alice.id]
        # ... the followee's mirror is not, and the work waits in the outbox.
        assert await counts(client, alice) == (0, 0)
        assert await ids_of(client, f"/api/v1/accounts/{alice.id}/followers") == []
        assert (await relationship(client, alice, bob))["followed_by"] is False
        assert await pending_tasks(client.runtime) == [tasks.SYNC_FOLLOW]

        await client.settle()  # what every process's periodic sweep does
        assert await counts(client, alice) == (1, 0)
        assert await ids_of(client, f"/api/v1/accounts/{alice.id}/followers") == [bob.id]
        assert (await relationship(client, alice, bob))["followed_by"] is True
        assert await pending_tasks(client.runtime) == []
        await assert_converged(client.runtime, [int(alice.id), int(bob.id)])


async def test_process_dies_at_every_step_of_an_authorization(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        await lock(client, alice)
        record(client, monkeypatch)

        await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        assert (await client.get("/api/v1/follow_requests", headers=alice.headers)).json() == []
        await client.settle()
        pending = await client.get("/api/v1/follow_requests", headers=alice.headers)
        assert [a["id"] for a in pending.json()] == [bob.id]

        await post(client, alice, f"/api/v1/follow_requests/{bob.id}/authorize")
        # The command has not reached bob's shard: still a request there, no follow.
        to_alice = await relationship(client, bob, alice)
        assert (to_alice["requested"], to_alice["following"]) == (True, False)
        assert await pending_tasks(client.runtime) == [tasks.AUTHORIZE]

        # The sweep runs the command; the process dies again before its mirror sync.
        await client.runtime.relay.sweep()
        to_alice = await relationship(client, bob, alice)
        assert (to_alice["requested"], to_alice["following"]) == (False, True)
        assert await counts(client, bob) == (0, 1)
        assert await counts(client, alice) == (0, 0)
        assert await pending_tasks(client.runtime) == [tasks.SYNC_FOLLOW]

        await client.settle()
        assert await counts(client, alice) == (1, 0)
        assert (await relationship(client, alice, bob))["followed_by"] is True
        await assert_converged(client.runtime, [int(alice.id), int(bob.id)])


async def test_process_dies_after_a_block(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        await post(client, alice, f"/api/v1/accounts/{bob.id}/follow")
        record(client, monkeypatch)

        rel = await post(client, alice, f"/api/v1/accounts/{bob.id}/block")
        assert (rel["blocking"], rel["following"], rel["followed_by"]) == (True, False, False)
        assert await counts(client, alice) == (0, 0)
        # Bob's shard has not heard yet: his follow of alice still stands there.
        to_alice = await relationship(client, bob, alice)
        assert (to_alice["blocked_by"], to_alice["following"]) == (False, True)
        # Even so, bob cannot follow again: the block is checked on alice's own shard.
        await post(client, bob, f"/api/v1/accounts/{alice.id}/unfollow")
        refused = await client.post(f"/api/v1/accounts/{alice.id}/follow", headers=bob.headers)
        assert refused.status_code == 403

        await client.settle()
        to_alice = await relationship(client, bob, alice)
        assert (to_alice["blocked_by"], to_alice["following"]) == (True, False)
        assert await counts(client, bob) == (0, 0)
        await assert_converged(client.runtime, [int(alice.id), int(bob.id)])


async def test_failed_mirror_task_is_retried_by_the_sweep(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        real = outbox._TASKS[tasks.SYNC_FOLLOW]
        failures: list[Payload] = []

        async def fails_once(relay: Relay, payload: Payload) -> None:
            if not failures:
                failures.append(payload)
                raise ConnectionError("the followee's database went away")
            await real(relay, payload)

        monkeypatch.setitem(outbox._TASKS, tasks.SYNC_FOLLOW, fails_once)

        rel = await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        assert rel["following"] is True
        assert failures == [{"follower_id": int(bob.id), "followee_id": int(alice.id)}]
        assert await counts(client, bob) == (0, 1)
        assert await counts(client, alice) == (0, 0)

        await client.settle()  # backing off: not due yet
        assert await counts(client, alice) == (0, 0)
        await make_due(client.runtime)
        await client.settle()
        assert await counts(client, alice) == (1, 0)
        assert await pending_tasks(client.runtime) == []
        await assert_converged(client.runtime, [int(alice.id), int(bob.id)])


async def test_sync_tasks_run_twice_change_nothing(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob, carol = await sign_up_spread(client, "alice", "bob", "carol")
        await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        await post(client, carol, f"/api/v1/accounts/{alice.id}/block")
        ids = [int(u.id) for u in (alice, bob, carol)]
        before = [await stored_counts(client.runtime, i) for i in ids]

        relay = client.runtime.relay
        for _ in range(2):
            await tasks.sync_follow(relay, {"follower_id": ids[1], "followee_id": ids[0]})
            await tasks.sync_follow(relay, {"follower_id": ids[0], "followee_id": ids[1]})
            await tasks.sync_block(relay, {"blocker_id": ids[2], "blocked_id": ids[0]})
        await client.settle()

        assert (
            [await stored_counts(client.runtime, i) for i in ids]
            == before
            == [
                (1, 0),
                (0, 1),
                (0, 0),
            ]
        )
        assert (await relationship(client, alice, carol))["blocked_by"] is True
        await assert_converged(client.runtime, ids)


async def test_tasks_delivered_in_reverse_order(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        recorder = record(client, monkeypatch)
        ids = [int(alice.id), int(bob.id)]

        # follow, unfollow: the unfollow's sync runs first, then the follow's.
        await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        await post(client, bob, f"/api/v1/accounts/{alice.id}/unfollow")
        await run_rows(client, reversed(recorder.take()))
        assert await counts(client, alice) == (0, 0)
        assert await ids_of(client, f"/api/v1/accounts/{alice.id}/followers") == []
        await assert_converged(client.runtime, ids)

        # follow, unfollow, follow again: the mirror ends up as the newest follow (its ID).
        for verb in ("follow", "unfollow", "follow"):
            await post(client, bob, f"/api/v1/accounts/{alice.id}/{verb}")
        rows = recorder.take()
        await run_rows(client, rows[-1:])
        await run_rows(client, reversed(rows[:-1]))
        assert await counts(client, alice) == (1, 0)
        assert await ids_of(client, f"/api/v1/accounts/{alice.id}/followers") == [bob.id]
        await assert_converged(client.runtime, ids)

        # block then unblock, syncs reversed: no blocked_by left behind.
        await post(client, alice, f"/api/v1/accounts/{bob.id}/block")
        await post(client, alice, f"/api/v1/accounts/{bob.id}/unblock")
        await run_rows(client, reversed(recorder.take()))
        while rows := recorder.take():  # what those tasks queued in turn
            await run_rows(client, reversed(rows))
        to_alice = await relationship(client, bob, alice)
        assert (to_alice["blocked_by"], to_alice["following"]) == (False, False)
        assert await counts(client, alice) == (0, 0)
        assert await counts(client, bob) == (0, 0)
        await assert_converged(client.runtime, ids)


async def test_block_lifted_before_its_tasks_run(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block still ends the other account's follow (its one-time effect), and the
    blocker's mirrors, dropped at once, match that side again."""
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        assert await counts(client, alice) == (1, 0)
        recorder = record(client, monkeypatch)

        await post(client, alice, f"/api/v1/accounts/{bob.id}/block")
        await post(client, alice, f"/api/v1/accounts/{bob.id}/unblock")
        await run_rows(client, reversed(recorder.take()))
        while rows := recorder.take():
            await run_rows(client, rows)

        to_alice = await relationship(client, bob, alice)
        assert (to_alice["blocked_by"], to_alice["following"]) == (False, False)
        assert await counts(client, alice) == (0, 0)
        assert await counts(client, bob) == (0, 0)
        await assert_converged(client.runtime, [int(alice.id), int(bob.id)])

        # Only edges made before the block go: a follow made after a quick unblock
        # survives the block's late work. (IDs order by time to the millisecond; the
        # pause keeps the follow's millisecond clear of the block's.)
        await post(client, alice, f"/api/v1/accounts/{bob.id}/block")
        await post(client, alice, f"/api/v1/accounts/{bob.id}/unblock")
        await asyncio.sleep(0.005)
        await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        await run_rows(client, reversed(recorder.take()))
        while rows := recorder.take():
            await run_rows(client, rows)
        assert (await relationship(client, bob, alice))["following"] is True
        assert await counts(client, alice) == (1, 0)
        assert await counts(client, bob) == (0, 1)
        await assert_converged(client.runtime, [int(alice.id), int(bob.id)])


class StubRelay:
    def __init__(self) -> None:
        self.dispatched: list[int] = []

    async def dispatch(self, row_ids: Iterable[int]) -> None:
        self.dispatched.extend(row_ids)


async def test_converge_goes_round_until_a_read_confirms_its_write() -> None:
    reads = iter([1, 2, 3, 3])
    written: list[int] = []

    async def read() -> int:
        return next(reads)

    async def write(state: int) -> list[int]:
        written.append(state)
        return [state * 10]

    relay = StubRelay()
    await tasks.converge(relay, read, write)  # type: ignore[arg-type]
    assert written == [1, 2, 3]
    assert relay.dispatched == [10, 20, 30]


async def test_converge_gives_up_to_the_sweep_when_the_state_keeps_moving() -> None:
    counter = iter(range(100))

    async def read() -> int:
        return next(counter)

    async def write(state: int) -> list[int]:
        return []

    with pytest.raises(RuntimeError, match="kept changing"):
        await tasks.converge(StubRelay(), read, write)  # type: ignore[arg-type]


async def test_concurrent_actions_converge(make_settings: MakeSettings) -> None:
    """Many actions at once, their background work racing them: real interleavings on
    PostgreSQL (row locks, two databases), queued writers on SQLite."""
    async with api_client(await make_settings()) as client:
        users = await sign_up_spread(client, "alice", "bob", "carol", "dave")
        await lock(client, users[0])
        ids = [int(u.id) for u in users]
        chooser = random.Random(20260101)
        verbs = [
            "follow",
            "follow",
            "follow",
            "unfollow",
            "block",
            "unblock",
            "remove_from_followers",
        ]

        async def one(actor: User, verb: str, other: User) -> int:
            response = await client.post(
                f"/api/v1/accounts/{other.id}/{verb}", headers=actor.headers
            )
            return response.status_code

        async def answer(verb: str, requester: User) -> int:
            response = await client.post(
                f"/api/v1/follow_requests/{requester.id}/{verb}", headers=users[0].headers
            )
            return response.status_code

        for _ in range(4):
            calls = []
            for _ in range(24):
                actor, other = chooser.sample(users, 2)
                calls.append(one(actor, chooser.choice(verbs), other))
            for requester in users[1:]:
                calls.append(answer(chooser.choice(["authorize", "reject"]), requester))
            statuses = await asyncio.gather(*calls)
            assert set(statuses) <= {200, 403, 404}, statuses
            assert 200 in statuses

        await client.settle()
        await assert_converged(client.runtime, ids)
