"""People using photogram while its media moves: the load of the migration's chaos test.

Each person uploads photos, waits for them to be processed, posts them, looks at them and
then deletes the post, drops a photo from it or keeps it; readers keep looking at the posts
that are kept. Every request's answer is recorded, and every photo fetched is checked
against the MD5 the database records for it, so a person who is shown damaged bytes counts
as a failed request just as one who gets a 5xx does.

Each step is counted under the migration phase the app followed when the step began, so
the test can wait, phase by phase, until each kind of step has happened (progress, never
wall-clock time).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from sqlalchemy import select

from photogram.db.metadata import media_objects
from photogram.media.migration import objects
from photogram.media.migration.phases import Phase
from tests.accounts.images import quadrant_jpeg
from tests.api import Client, User

UPLOAD, READ, DELETE = "upload", "read", "delete"
KINDS = (UPLOAD, READ, DELETE)

#: Small photos: the load is about the stores, not about resizing.
IMAGES = 12
#: Between one person's steps, between a reader's, and while a photo is still processing
#: (the load leaves the CPU to the migration's processes too).
PAUSE = 0.1
READER_PAUSE = 0.2
POLL = 0.1


@dataclass
class Post:
    id: str
    owner: User
    media_ids: list[str]


class LoadCrashed(Exception):
    """The load itself broke (a bug in the test, not a failed request)."""


class Load:
    """Uploads, reads and deletes through the API until stopped."""

    def __init__(
        self,
        client: Client,
        users: list[User],
        *,
        direct: httpx.AsyncClient,
        s3_endpoint: str,
        seed: int,
    ) -> None:
        self.client = client
        self.users = users
        #: Presigned URLs point at the S3 server itself, not at photogram.
        self.direct = direct
        self.s3_endpoint = s3_endpoint
        self.random = random.Random(seed)
        self.images = [quadrant_jpeg(40 + 7 * n, 30 + 5 * n) for n in range(IMAGES)]
        #: Every request that got an answer no person should get: when, what and why.
        self.failures: list[str] = []
        self.requests = 0
        #: Steps done, by (phase as the app followed it when the step began, kind).
        self.done: Counter[tuple[str, str]] = Counter()
        #: Photos fetched, by where their URL pointed: "s3" (presigned) or "photogram".
        self.fetched: Counter[str] = Counter()
        #: Posts no one deletes, which the readers keep looking at.
        self.kept: list[Post] = []
        #: Posts made before the migration, which their owners delete as it goes (readers
        #: never look at them: a read racing a delete may rightly miss).
        self.doomed: dict[str, list[Post]] = {}
        #: Every photo uploaded, by ID, with its owner.
        self.uploaded: dict[str, User] = {}
        #: Deleted photos, and the keys their objects had (looked up before the delete).
        self.deleted_media: set[str] = set()
        self.deleted_keys: set[str] = set()
        #: Keys of deletes that finished after ``late`` was set.
        self.late = False
        self.deleted_late: set[str] = set()
        self._changed = asyncio.Condition()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._serial = 0

    # --- running ------------------------------------------------------------------------------

    def start(self, readers: int = 2) -> None:
        for user in self.users:
            self._spawn(self._person(user, random.Random(self.random.random())))
        for _ in range(readers):
            self._spawn(self._reader(random.Random(self.random.random())))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await work
            finally:  # a waiter must not wait for a load that is gone
                async with self._changed:
                    self._changed.notify_all()

        self._tasks.append(asyncio.create_task(guarded()))

    async def stop(self) -> None:
        """Let every step under way finish, then return."""
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._crashed()

    async def halt(self) -> None:
        """Stop, whatever has happened (for clean-up after a failure)."""
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _crashed(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise LoadCrashed(f"the load broke: {task.exception()!r}") from task.exception()

    async def wait_for(self, phase: str, at_least: int = 2) -> None:
        """Wait until uploads, reads and deletes have each begun and finished ``at_least``
        times while the app followed ``phase``."""

        def ready() -> bool:
            return all(self.done[phase, kind] >= at_least for kind in KINDS) or any(
                task.done() for task in self._tasks
            )

        async with self._changed:
            await self._changed.wait_for(ready)
        self._crashed()
        if any(task.done() for task in self._tasks):
            raise LoadCrashed("the load stopped by itself")

    def _failed(self, what: str) -> None:
        now = datetime.now(UTC)
        self.failures.append(f"{now:%H:%M:%S.%f} {what}")

    def phase(self) -> str:
        """The phase the app follows now, with the share of reads for a ramp."""
        state = self.client.runtime.media.known_state
        if state.phase is Phase.READ_RAMP:
            return f"{state.phase.value} {state.read_percent}%"
        return state.phase.value

    async def _count(self, phase: str, kind: str) -> None:
        async with self._changed:
            self.done[phase, kind] += 1
            self._changed.notify_all()

    # --- requests -----------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        url: str,
        user: User | None,
        expected: Iterable[int],
        **kwargs: Any,
    ) -> httpx.Response | None:
        """The answer, or None (and a failure recorded) if it is not one of ``expected``."""
        phase = self.phase()
        headers = user.headers if user is not None else {}
        self.requests += 1
        try:
            response = await self.client.request(method, url, headers=headers, **kwargs)
        except Exception as exc:  # the app raised: a 500 to the person
            self._failed(f"{method} {url} [{phase}]: raised {exc!r}")
            return None
        if response.status_code not in expected:
            self._failed(f"{method} {url} [{phase}]: {response.status_code} {response.text[:300]}")
            return None
        return response

    async def _fetch(self, url: str) -> None:
        """GET a media URL as a browser would, and check the bytes against the record."""
        phase = self.phase()
        parts = urlsplit(url)
        self.requests += 1
        try:
            if url.startswith(self.s3_endpoint + "/"):
                where = "s3"
                response = await self.direct.get(url)
                key = unquote(parts.path).split("/", 2)[2]  # /bucket/key: path-style
            else:
                where = "photogram"
                response = await self.client.get(f"{parts.path}?{parts.query}")
                key = unquote(parts.path).removeprefix("/media/p/")
        except Exception as exc:
            self._failed(f"GET {url} [{phase}]: raised {exc!r}")
            return
        if response.status_code != 200:
            self._failed(f"GET {url} [{phase}]: {response.status_code} {response.text[:300]}")
            return
        record = await objects.find(self.client.runtime.router, key)
        got = hashlib.md5(response.content, usedforsecurity=False).hexdigest()
        if record is None or record.md5 != got:
            self._failed(
                f"GET {url} [{phase}]: bytes with MD5 {got}, recorded "
                f"{record.md5 if record else 'nothing'}"
            )
            return
        self.fetched[where] += 1
        await self._count(phase, READ)

    # --- steps --------------------------------------------------------------------------------

    async def _upload(self, user: User) -> str | None:
        """Upload a photo and wait until it is processed; its ID."""
        phase = self.phase()
        self._serial += 1
        image = self.images[self._serial % IMAGES]
        response = await self._request(
            "POST",
            "/api/v2/media",
            user,
            (200, 202),
            files={"file": ("p.jpg", image, "image/jpeg")},
            data={"description": f"photo {self._serial}"},
        )
        if response is None:
            return None
        media_id = str(response.json()["id"])
        self.uploaded[media_id] = user
        await self._count(phase, UPLOAD)
        while response.status_code != 200:
            # 202: accepted, processed in the background (retried after a failed write).
            await asyncio.sleep(POLL)
            response = await self._request("GET", f"/api/v1/media/{media_id}", user, (200, 206))
            if response is None:
                return None
        return media_id

    async def post(self, user: User, photos: int) -> Post | None:
        """Upload ``photos`` photos and post them."""
        media_ids = []
        for _ in range(photos):
            media_id = await self._upload(user)
            if media_id is None:
                return None
            media_ids.append(media_id)
        response = await self._request(
            "POST",
            "/api/v1/statuses",
            user,
            (200,),
            json={"status": f"post {self._serial}", "media_ids": media_ids},
        )
        if response is None:
            return None
        return Post(str(response.json()["id"]), user, media_ids)

    async def view(self, post: Post) -> None:
        """Show a post, and fetch each of its photos full size and as a preview."""
        response = await self._request("GET", f"/api/v1/statuses/{post.id}", post.owner, (200,))
        if response is None:
            return
        for attachment in response.json()["media_attachments"]:
            for url in (attachment["url"], attachment["preview_url"]):
                await self._fetch(url)

    async def _keys(self, media_ids: list[str]) -> set[str]:
        router = self.client.runtime.router
        keys: set[str] = set()
        for media_id in media_ids:
            async with router.connect_for(int(media_id)) as conn:
                keys.update(
                    await conn.scalars(
                        select(media_objects.c.key).where(media_objects.c.media_id == int(media_id))
                    )
                )
        return keys

    async def _deleted(self, phase: str, media_ids: list[str], keys: set[str]) -> None:
        self.deleted_media.update(media_ids)
        self.deleted_keys |= keys
        if self.late:
            self.deleted_late |= keys
        await self._count(phase, DELETE)

    async def delete(self, post: Post) -> None:
        """Delete the post: its photos leave the stores."""
        phase = self.phase()
        keys = await self._keys(post.media_ids)
        if await self._request("DELETE", f"/api/v1/statuses/{post.id}", post.owner, (200,)):
            await self._deleted(phase, post.media_ids, keys)

    async def drop_photo(self, post: Post) -> None:
        """Keep the post with its first photo only: the others leave the stores."""
        phase = self.phase()
        kept, dropped = post.media_ids[:1], post.media_ids[1:]
        keys = await self._keys(dropped)
        response = await self._request(
            "PUT", f"/api/v1/statuses/{post.id}", post.owner, (200,), json={"media_ids": kept}
        )
        if response is not None:
            post.media_ids = kept
            await self._deleted(phase, dropped, keys)

    # --- people -------------------------------------------------------------------------------

    async def _person(self, user: User, rng: random.Random) -> None:
        while not self._stop.is_set():
            doomed = self.doomed.get(user.id)
            if doomed and rng.random() < 0.3:
                await self.delete(doomed.pop())
            post = await self.post(user, 2 if rng.random() < 0.4 else 1)
            if post is not None:
                await self.view(post)
                roll = rng.random()
                if roll < 0.45:
                    await self.delete(post)
                elif roll < 0.7 and len(post.media_ids) > 1:
                    await self.drop_photo(post)
                    self.kept.append(post)
                else:
                    self.kept.append(post)
            await asyncio.sleep(PAUSE)

    async def _reader(self, rng: random.Random) -> None:
        while not self._stop.is_set():
            if self.kept:
                await self.view(rng.choice(self.kept))
            await asyncio.sleep(READER_PAUSE)


def summary(failures: list[str], limit: int = 20) -> str:
    shown = "\n".join(failures[:limit])
    more = f"\n… and {len(failures) - limit} more" if len(failures) > limit else ""
    return f"{len(failures)} failed requests:\n{shown}{more}"
