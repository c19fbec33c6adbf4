"""Random interleavings of the migration's copies with deletes, re-uploads, uploads in
flight and phase changes (forward steps and rollbacks): nothing deleted comes back, nothing
uploaded is lost.

Each example is a fresh instance (4 logical shards) with two accounts, each with an avatar
and a photo, all stored before the migration starts. The migration starts and a backfill
pass runs in the background, one object at a time; its copy of one chosen object stops
between reading it from the source and writing it to the target (or after the write,
before the backfill looks again at the object's record) until the history releases it.
Meanwhile the history deletes photos (the one the copy stopped at among them), replaces
avatars (a new key; the old object is deleted), uploads, starts an upload that stops after
its first write to the source until the history lets it land, makes the target fail every
write or lose an object, runs the queued tasks, moves the migration (forward as an
operator would, any command with its refusals, or back) and starts other jobs in the
background (a verification pass stops at its first repair).

Then, once every task has run: no object whose record was ever deleted is in either store,
every object the database records is in the source with its recorded MD5 and nothing else
is, every photo and avatar uploaded is recorded, and, after a clean verification pass
(the migration brought to phase verify if it is at an earlier active phase), every
recorded object is in the target with its MD5 and nothing else is.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from photogram.accounts import actions as accounts
from photogram.accounts.actions import ProfileChange
from photogram.db.ids import next_id, shard_of
from photogram.db.metadata import accounts as accounts_table
from photogram.db.metadata import media_attachments
from photogram.db.router import Router
from photogram.media import actions as media
from photogram.media.migration import jobs
from photogram.media.migration.jobs import Mover
from photogram.media.migration.objects import owner_of
from photogram.media.migration.phases import ORDER, MigrationError, Phase
from photogram.media.stores import (
    BlobStore,
    StoredObject,
    StoreError,
    WrappingStore,
    open_stores,
)
from photogram.runtime import Runtime
from photogram.tasks.outbox import Relay
from photogram.tasks.registry import import_tasks
from tests.accounts.images import quadrant_jpeg
from tests.api import FAST
from tests.conftest import init_test_cluster, sqlite_settings
from tests.media.migration.support import (
    MIGRATION_SETTINGS,
    SOURCE,
    SOURCE_DISK,
    TARGET,
    TARGET_DISK,
    backfill,
    directory,
    drain,
    held,
    no_retry_pauses,
    photo_keys,
    records,
    rollback,
    run_pass,
    set_writes_failing,
    start,
    verify,
)

SHARDS = 4


class Pause(WrappingStore):
    """Another store as one caller sees it: the first write ``arm`` matches stops, before
    or after it reaches the store, until ``release``."""

    def __init__(self, inner: BlobStore) -> None:
        super().__init__(inner, name=inner.name)
        self.matches: Callable[[str], bool] | None = None
        self.matched = ""  # the key of the write that stopped
        self.after_write = False
        self.reached = asyncio.Event()
        self._go = asyncio.Event()

    def arm(self, matches: Callable[[str], bool], *, after_write: bool) -> None:
        self.matches = matches
        self.after_write = after_write
        self.reached.clear()
        self._go.clear()

    def release(self) -> None:
        """Let the stopped write go on; and stop none that comes later."""
        self.matches = None
        self._go.set()

    async def _stop(self) -> None:
        self.reached.set()
        await self._go.wait()

    async def put(self, key: str, data: bytes) -> StoredObject:
        if self.matches is None or not self.matches(key):
            return await self.inner.put(key, data)
        self.matches = None
        self.matched = key
        if not self.after_write:
            await self._stop()
        written = await self.inner.put(key, data)
        if self.after_write:
            await self._stop()
        return written

    async def digest(self, key: str) -> StoredObject:
        return await self.inner.digest(key)


async def until_stopped(pause: Pause, work: asyncio.Task[Any]) -> None:
    """Wait until ``work`` stops at ``pause`` (or ends without reaching it)."""
    stopped = asyncio.ensure_future(pause.reached.wait())
    await asyncio.wait({stopped, work}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()


# --- the operator's moves -----------------------------------------------------------------------


def _rollback(to: Phase) -> Callable[[Runtime], Coroutine[Any, Any, Any]]:
    return lambda runtime: rollback(runtime, to)


async def _ramp(runtime: Runtime, percent: int) -> None:
    await jobs.enter(runtime, Phase.READ_RAMP, read_percent=percent)


#: The commands (a job's runs its whole pass), by their command line.
COMMANDS: dict[str, Callable[[Runtime], Coroutine[Any, Any, Any]]] = {
    "start --to new": start,
    "backfill": backfill,
    "verify": verify,
    "ramp 50": lambda runtime: _ramp(runtime, 50),
    "ramp 100": lambda runtime: _ramp(runtime, 100),
    "promote": lambda runtime: jobs.enter(runtime, Phase.NEW_PRIMARY),
    **{
        f"rollback --to {to}": _rollback(to)
        for to in (Phase.LEGACY, Phase.DUAL_WRITE, Phase.BACKFILL, Phase.VERIFY, Phase.READ_RAMP)
    },
}


async def forward(runtime: Runtime) -> None:
    """The next step an operator takes towards new_primary (and, there, a verification)."""
    state = await runtime.media.refresh()
    if state.phase is Phase.LEGACY:
        await start(runtime)
    elif state.phase is Phase.DUAL_WRITE:
        await backfill(runtime)
    elif state.phase is Phase.BACKFILL:
        await backfill(runtime)  # to the end, if another pass is under way
        await verify(runtime)
    elif state.phase is Phase.VERIFY and state.verified_at is None:
        await verify(runtime)
    elif state.phase is Phase.VERIFY:
        await _ramp(runtime, 50)
    elif state.phase is Phase.READ_RAMP and state.read_percent < 100:
        await _ramp(runtime, 100)
    elif state.phase is Phase.READ_RAMP:
        await jobs.enter(runtime, Phase.NEW_PRIMARY)
    else:
        await verify(runtime)


async def back(runtime: Runtime, phases: int) -> None:
    """Roll back ``phases`` phases (at most to legacy)."""
    here = (await runtime.media.refresh()).phase
    if here is not Phase.LEGACY:
        await rollback(runtime, ORDER[max(0, here.rank - phases)])


# --- one example ---------------------------------------------------------------------------------


@dataclass
class World:
    """The instance, and what its users did to it."""

    runtime: Runtime
    avatar: bytes
    people: list[int] = field(default_factory=list)
    photos: dict[int, int] = field(default_factory=dict)  # every photo uploaded: its owner
    deleted: set[int] = field(default_factory=set)  # photos deleted
    ever: set[str] = field(default_factory=set)  # every key the database ever recorded
    uploads: int = 0

    async def note(self) -> None:
        self.ever |= (await records(self.runtime)).keys()

    async def person(self, shard: int) -> int:
        name = f"p{len(self.people)}"
        async with self.runtime.router.begin(shard) as conn:
            account_id = await conn.scalar(
                insert(accounts_table)
                .values(
                    id=next_id(shard),
                    username=name,
                    email=f"{name}@example.com",
                    password_hash="-",
                )
                .returning(accounts_table.c.id)
            )
        self.people.append(int(account_id))
        return int(account_id)

    async def replace_avatar(self, account_id: int) -> None:
        """A new avatar (a new key; the old object deleted), as update_credentials does."""
        # Refused if the primary store fails the write: nothing changes then.
        with contextlib.suppress(StoreError):
            await accounts.do_update_profile(
                self.runtime, account_id, ProfileChange(avatar_jpeg=self.avatar)
            )

    async def upload(self, account_id: int) -> None:
        """A photo uploaded and processed at once (or, if the primary fails its writes,
        left processing for a retry), as /api/v2/media does."""
        runtime = self.runtime
        spool = media.spool_directory(runtime)
        spool.mkdir(parents=True, exist_ok=True)
        self.uploads += 1
        spooled = spool / f"upload-{self.uploads}.part"
        spooled.write_bytes(quadrant_jpeg(48 + self.uploads, 40))
        media_id, row_id = await media.do_upload(
            runtime, account_id, spooled, media.Edit(None, None), media.check_filter(None)
        )
        self.photos[media_id] = account_id
        await runtime.relay.dispatch([row_id])

    async def ready(self) -> list[int]:
        """The photos that can be deleted now (only a ready photo can be posted)."""
        found = []
        for media_id in sorted(set(self.photos) - self.deleted):
            async with self.runtime.router.connect_for(media_id) as conn:
                state = await conn.scalar(
                    select(media_attachments.c.state).where(media_attachments.c.id == media_id)
                )
            if state == "ready":
                found.append(media_id)
        return found

    async def delete(self, media_id: int) -> None:
        """What deleting the post a photo is in does: the delete_photos task."""
        runtime = self.runtime
        async with runtime.router.begin_for(media_id) as conn:
            row_id = await media.enqueue_delete_media(conn, shard_of(media_id), [media_id])
        self.deleted.add(media_id)
        await runtime.relay.dispatch([row_id])

    async def remove(self, key: str) -> bool:
        """Delete the photo ``key`` belongs to, or replace the avatar it is; whether it
        was still there to remove."""
        owner = owner_of(key)
        assert owner is not None
        if key.startswith("avatars/"):
            if key not in await records(self.runtime):
                return False
            await self.replace_avatar(owner)
        elif owner in await self.ready():
            await self.delete(owner)
        else:
            return False
        return True


@dataclass
class Example:
    """The parts of a history that run in the background: a job (a backfill or a
    verification pass) whose copy of one object stops, and an upload in flight."""

    world: World
    source: Pause  # the source as every caller sees it: it stops an upload in flight
    refusals: list[str] = field(default_factory=list)
    job: asyncio.Task[None] | None = None
    copy: Pause | None = None  # the target as the job sees it
    chosen: str = ""  # the key its copy stops at
    landing: asyncio.Task[None] | None = None

    @property
    def stopped(self) -> str | None:
        """Where the job's copy is stopped now, if it is."""
        if self.job is None or self.copy is None or not self.copy.reached.is_set():
            return None
        return "a copy stopped " + ("after" if self.copy.after_write else "before") + " its write"

    async def start_job(self, job: jobs.Job, at: int, after_write: bool) -> None:
        """Start a pass of ``job`` in the background, as its command would, and return
        once it has stopped or finished. A backfill's copy of the at-th recorded object (in
        the order it walks them) stops; a verification pass's first repair does."""
        await self.release()  # one at a time
        runtime = self.world.runtime
        try:
            if job == "backfill":
                state = await jobs.enter(runtime, Phase.BACKFILL)
            else:
                state = await jobs.begin_verify(runtime)
        except MigrationError as refused:
            self.refused(refused)
            return
        walk = sorted(
            (shard_of(owner), owner, key)
            for key in await records(runtime)
            if (owner := owner_of(key)) is not None
        )
        chosen = walk[at % len(walk)][2]
        mover = Mover(runtime, state, jobs.Limits(concurrency=1))
        self.copy = copy = Pause(mover.target)
        mover.target = copy
        copy.arm(lambda key: job == "verify" or key == chosen, after_write=after_write)
        await mover.prepare(job)

        async def whole() -> None:
            if await mover.run(job) and job == "verify":
                await mover.sweep(runtime.settings.media_migration_orphan_grace_seconds)
                await mover.finish_pass()

        self.job = asyncio.ensure_future(whole())
        await until_stopped(copy, self.job)
        self.chosen = copy.matched
        hypothesis.event(f"{job} copy: " + ("stopped" if copy.reached.is_set() else "none"))

    async def release(self) -> None:
        if self.job is not None:
            assert self.copy is not None
            self.copy.release()
            await self.job
            self.job = None

    async def in_flight(self, account_id: int, photo: bool) -> None:
        """Start an upload that stops after its first write to the source."""
        if self.landing is not None:
            return
        self.source.arm(lambda key: True, after_write=True)
        work = self.world.upload(account_id) if photo else self.world.replace_avatar(account_id)
        self.landing = asyncio.ensure_future(work)
        await until_stopped(self.source, self.landing)
        if not self.source.reached.is_set():
            await self.land()  # it failed (or finished) before writing to the source

    async def land(self) -> None:
        if self.landing is not None:
            self.source.release()
            await self.landing
            self.landing = None

    async def move(self, step: tuple[Any, ...]) -> None:
        runtime = self.world.runtime
        stopped, flying = self.stopped, self.landing is not None
        before = runtime.media.known_state.phase
        try:
            match step:
                case ("forward", steps):
                    for _ in range(steps):
                        await forward(runtime)
                case ("back", phases):
                    await back(runtime, phases)
                case ("command", command):
                    await COMMANDS[command](runtime)
        except MigrationError as refused:
            self.refused(refused)
            return
        after = runtime.media.known_state.phase
        if after is not before:
            hypothesis.event(f"moved from {before} to {after}")
            if stopped:
                hypothesis.event(f"moved with {stopped}")
            if flying:
                hypothesis.event("moved with an upload in flight")

    def refused(self, refusal: MigrationError) -> None:
        message = str(refusal)
        assert "\n" not in message, message
        self.refusals.append(message)

    async def step(self, step: tuple[Any, ...]) -> None:
        world = self.world
        match step:
            case ("job", job, at, after_write):
                await self.start_job(job, at, after_write)
            case ("release",):
                await self.release()
            case ("remove",):
                stopped = self.stopped
                if self.chosen and await world.remove(self.chosen) and stopped:
                    hypothesis.event(f"the object of {stopped} removed")
            case ("delete", n):
                ready = await world.ready()
                if ready:
                    await world.delete(ready[n % len(ready)])
            case ("avatar", n):
                await world.replace_avatar(world.people[n])
            case ("upload", n):
                await world.upload(world.people[n])
            case ("in_flight", n, photo):
                await self.in_flight(world.people[n], photo)
            case ("land",):
                await self.land()
            case ("forward", _) | ("back", _) | ("command", _):
                await self.move(step)
            case ("lose", n):
                # The target loses an object (a disk, a bucket): the verifier must notice.
                recorded = sorted(await records(world.runtime))
                lost = directory(world.runtime, TARGET_DISK) / recorded[n % len(recorded)]
                lost.unlink(missing_ok=True)
            case ("target_fails", failing):
                set_writes_failing(world.runtime, TARGET, failing)
            case ("drain",):
                await drain(world.runtime)
            case _:
                raise AssertionError(f"no step {step!r}")
        await world.note()


async def check(world: World) -> None:
    """The invariants, once every task has run."""
    runtime = world.runtime
    recorded = await records(runtime)
    gone = world.ever - recorded.keys()
    source = held(directory(runtime, SOURCE_DISK))
    target = held(directory(runtime, TARGET_DISK))
    assert not gone & source.keys(), "a deleted object is in the source"
    assert not gone & target.keys(), "a deleted object is in the target"
    for media_id in world.deleted:
        prefix = f"{shard_of(media_id):04d}/{media_id}/"
        assert not await photo_keys(runtime, media_id), f"deleted photo {media_id} is recorded"
        stored = [key for key in (*source, *target) if key.startswith(prefix)]
        assert not stored, f"deleted photo {media_id} is stored"
    assert {key: source.get(key) for key in recorded} == recorded
    assert source.keys() <= recorded.keys(), "the source holds objects nothing records"
    for media_id in set(world.photos) - world.deleted:
        assert len(await photo_keys(runtime, media_id)) == 5, f"photo {media_id} was lost"
    for account_id in world.people:
        async with runtime.router.connect_for(account_id) as conn:
            key = await conn.scalar(
                select(accounts_table.c.avatar_key).where(accounts_table.c.id == account_id)
            )
        assert key in recorded, f"the avatar of {account_id} was lost"


async def finish_migration(runtime: Runtime) -> bool:
    """Bring an active migration to a clean verification pass; whether there was one."""
    state = await runtime.media.refresh()
    if not state.active:
        return False
    if state.phase is Phase.DUAL_WRITE:
        await jobs.enter(runtime, Phase.BACKFILL)
    if state.phase in (Phase.DUAL_WRITE, Phase.BACKFILL):
        await run_pass(runtime, "backfill")
        await jobs.begin_verify(runtime)
    assert await verify(runtime), "a verification pass with a healthy target was not clean"
    return True


async def open_world(root: Path) -> World:
    settings = sqlite_settings(root, **MIGRATION_SETTINGS).model_copy(update=FAST)
    await init_test_cluster(settings, SHARDS)
    router = await Router.open(settings)
    runtime = Runtime(settings, router, Relay(router), open_stores(settings))
    avatar = await accounts.check_avatar(settings, quadrant_jpeg(40, 40))
    return World(runtime, avatar)


async def history(
    root: Path, shards: list[int], at: int, after_write: bool, steps: list[tuple[Any, ...]]
) -> list[str]:
    """One example; the refusals met on the way."""
    import_tasks()
    world = await open_world(root)
    runtime = world.runtime
    try:
        for shard in shards:
            account_id = await world.person(shard)
            await world.replace_avatar(account_id)
            await world.upload(account_id)
        await world.note()
        await start(runtime)
        source = Pause(runtime.stores[SOURCE])
        runtime.stores[SOURCE] = source
        example = Example(world, source)
        await example.start_job("backfill", at, after_write)
        assert example.stopped, "the backfill never copied the chosen object"
        for step in steps:
            await example.step(step)

        await example.release()
        await example.land()
        set_writes_failing(runtime, TARGET, False)
        await drain(runtime)
        await world.note()
        await check(world)
        if await finish_migration(runtime):
            await drain(runtime)
            await world.note()
            await check(world)
            recorded = await records(runtime)
            target = held(directory(runtime, TARGET_DISK))
            assert {key: target.get(key) for key in recorded} == recorded
            assert target.keys() <= recorded.keys(), "the target holds objects nothing records"
    finally:
        await runtime.close()
    return example.refusals


def run_history(
    root: Path, shards: list[int], at: int, after_write: bool, steps: list[tuple[Any, ...]]
) -> list[str]:
    """One example, in an event loop and a new directory of its own under ``root``."""
    hypothesis.note(f"shards={shards} at={at} after_write={after_write} steps={steps}")
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(history(Path(tempfile.mkdtemp(dir=root)), shards, at, after_write, steps))


ACCOUNT = st.integers(0, 1)
STEP = st.one_of(
    st.tuples(
        st.just("job"), st.sampled_from(["backfill", "verify"]), st.integers(0, 30), st.booleans()
    ),
    st.tuples(st.just("release")),
    st.tuples(st.just("remove")),  # the object the last job's copy stopped at
    st.tuples(st.just("delete"), st.integers(0, 5)),
    st.tuples(st.just("avatar"), ACCOUNT),
    st.tuples(st.just("upload"), ACCOUNT),
    st.tuples(st.just("in_flight"), ACCOUNT, st.booleans()),
    st.tuples(st.just("in_flight"), ACCOUNT, st.booleans()),
    st.tuples(st.just("land")),
    st.tuples(st.just("forward"), st.integers(1, 4)),
    st.tuples(st.just("forward"), st.integers(1, 4)),
    st.tuples(st.just("lose"), st.integers(0, 30)),
    st.tuples(st.just("back"), st.integers(1, 5)),
    st.tuples(st.just("command"), st.sampled_from(list(COMMANDS))),
    st.tuples(st.just("target_fails"), st.booleans()),
    st.tuples(st.just("drain")),
)
EXAMPLE = {
    "shards": st.lists(st.integers(0, SHARDS - 1), min_size=2, max_size=2),
    "at": st.integers(0, 11),
    "after_write": st.booleans(),
    "steps": st.lists(STEP, max_size=12),
}


#: The interleavings that matter most, run every time besides the generated ones.
EXPLICIT = [
    # A backfill copy stops before its write; the photo is deleted; the copy lands.
    {"at": 2, "after_write": False, "steps": [("remove",), ("release",)]},
    # The same for an avatar replaced, the copy stopped after its write.
    {"at": 0, "after_write": True, "steps": [("remove",), ("release",)]},
    # Rolled back to legacy while the copy is stopped; the object deleted there; started
    # again and copied again; the stopped copy lands last.
    {
        "at": 3,
        "after_write": False,
        "steps": [("back", 2), ("remove",), ("upload", 1), ("forward", 2), ("release",)],
    },
    # A verification pass repairs an object the target lost, its copy stopped; the object
    # is deleted meanwhile.
    {
        "at": 0,
        "after_write": False,
        "steps": [
            ("release",),
            ("forward", 1),
            ("lose", 7),
            ("job", "verify", 0, False),
            ("remove",),
            ("release",),
        ],
    },
    # Uploads in flight across a rollback to legacy and a new start.
    {
        "at": 5,
        "after_write": True,
        "steps": [
            ("in_flight", 0, True),
            ("back", 2),
            ("land",),
            ("in_flight", 1, False),
            ("forward", 3),
            ("land",),
            ("release",),
        ],
    },
    # The upload's processing runs twice at once (a sweep starts a run still under way):
    # the second run makes the photo ready, it is posted and deleted, then the first run
    # finishes and records its objects again.
    {
        "at": 0,
        "after_write": False,
        "steps": [("release",), ("in_flight", 0, True), ("drain",), ("delete", 2), ("land",)],
    },
]


def explicit(test: Callable[..., None]) -> Callable[..., None]:
    for case in reversed(EXPLICIT):
        test = example(shards=[1, 2], **case)(test)
    return test


# Each example takes about a second, so a failure is reported as found, not shrunk.
@settings(
    max_examples=30,
    deadline=None,
    database=None,
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(**EXAMPLE)
@explicit
def test_a_copy_never_undoes_a_delete_and_no_upload_is_lost(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shards: list[int],
    at: int,
    after_write: bool,
    steps: list[tuple[Any, ...]],
) -> None:
    no_retry_pauses(monkeypatch)
    run_history(tmp_path, shards, at, after_write, steps)


def test_the_property_catches_a_copy_that_does_not_look_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the backfill's second look at the records taken out, the property fails on
    histories that delete the object a copy stopped before writing: the copy lands after
    the delete and brings the object back."""
    no_retry_pauses(monkeypatch)

    async def never_look_again(self: Mover, batch: Any) -> None:
        batch.quarantine.clear()

    monkeypatch.setattr(Mover, "_undo_deleted", never_look_again)
    user_steps = st.one_of(
        *(st.tuples(st.just(name)) for name in ("release", "remove", "drain")),
        *(st.tuples(st.just(name), ACCOUNT) for name in ("delete", "avatar", "upload")),
        st.tuples(st.just("back"), st.integers(1, 5)),
    )

    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        shards=EXAMPLE["shards"],
        at=EXAMPLE["at"],
        steps=st.lists(user_steps, min_size=2, max_size=6),
    )
    def planted(shards: list[int], at: int, steps: list[tuple[Any, ...]]) -> None:
        run_history(tmp_path, shards, at, False, steps)

    with pytest.raises(AssertionError, match="a deleted object is in the target"):
        planted()
