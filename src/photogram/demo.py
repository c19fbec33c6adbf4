"""``photogram demo``: fill an instance with a small community that looks alive.

Everything is decided first, from the seed, as a ``Plan`` (pure data): people with names,
bios and avatars (some accounts locked, with follow requests still pending), a follow
graph where a few accounts are popular and most are not, photo posts (skies, seas, city
lights, stripes and shapes drawn with libvips in varied palettes; sometimes a carousel)
whose captions carry hashtags and @mentions, and likes and comments from people who can
see the post. Then one of two writers carries the plan out:

* ``write_with_actions``: every step is the domain action a user's request goes through
  (sign-up, profile, follow and accepting requests, upload and processing, post, comment,
  like), so what it makes is exactly what users make. The default for small communities.
* ``write_in_bulk``: for benchmark scale (thousands of accounts, hundreds of thousands of
  posts). Profiles and avatars still go through the profile action; the rest is written
  in batches per logical shard (IDs reserved a block at a time), in the shapes the actions
  write: the password is hashed once, a pool of photos is processed once and every post
  stores its own copies of the variants (keys from its media IDs; size and MD5 recorded
  as processing records them), and the counters, the mirrors (``followers``,
  ``follow_requests_in``, ``account_favourites``), the tag index and the notifications
  are written with them. tests/test_demo.py holds the two writers to the same rows.

Posts are not backdated. A post's ID carries its creation time, and both writers record
that time as the post's: the actions take "now" for both, the bulk writer the time of the
IDs it reserved. So a demo's posts date from the minutes it ran.

A community is made once, on an instance that has none (``fill`` refuses otherwise), and
while nobody else writes to it.
"""

from __future__ import annotations

import asyncio
import colorsys
import math
import multiprocessing
import os
import random
import secrets
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cache, partial
from itertools import accumulate
from pathlib import Path
from typing import Any, TypeVar

import pyvips
from sqlalchemy import Table, bindparam, func, insert, select, update

from photogram.accounts.actions import (
    MAX_PASSWORD,
    MIN_PASSWORD,
    check_avatar,
    check_profile_change,
    check_sign_up,
    do_sign_up,
    do_update_profile,
)
from photogram.accounts.passwords import hash_password
from photogram.cache import account_counters_key, account_key
from photogram.concurrency import gather
from photogram.db.ids import decompose, reserve_ids, shard_of
from photogram.db.metadata import (
    account_favourites,
    accounts,
    emails,
    favourites,
    follow_requests_in,
    follow_requests_out,
    followers,
    follows,
    media_attachments,
    media_objects,
    notifications,
    status_mentions,
    status_tags,
    statuses,
    usernames,
)
from photogram.db.migrations import init_cluster
from photogram.demo_limits import ACTIONS_MAX_POSTS, ACTIONS_MAX_USERS
from photogram.errors import PhotogramError
from photogram.graph.actions import check_follow, do_answer_request, do_follow
from photogram.media import processing
from photogram.media.actions import (
    Edit,
    check_filter,
    check_photo,
    do_upload,
    object_key,
    spool_directory,
)
from photogram.media.stores import open_store
from photogram.posts import text
from photogram.posts.actions import check_draft, do_comment, do_favourite, do_post
from photogram.posts.schemas import StatusForm
from photogram.runtime import Runtime
from photogram.settings import Settings
from photogram.web.errors import ApiError

T = TypeVar("T")
RGB = tuple[int, int, int]

#: Demo accounts' e-mail domain: reserved (RFC 2606), so no mail can ever reach anyone.
EMAIL_DOMAIN = "demo.invalid"
#: Distinct photos drawn (and, for the bulk writer, processed); posts beyond reuse them.
PHOTO_POOL = 300
AVATAR_POOL = 64
AVATAR_SIDE = 400
#: Posts written per round of the bulk writer: IDs carry time, so writing the plan a slice
#: at a time keeps the timelines in (roughly) the plan's order across shards.
BULK_SLICE = 20_000
#: Photos whose objects a store worker writes per request, and its threads writing them.
STORE_BATCH = 2000
STORE_THREADS = 32

#: Called as work goes on: (stage, done so far, total).
Progress = Callable[[str, int, int], None]


class DemoError(PhotogramError):
    pass


def _no_progress(_stage: str, _done: int, _total: int) -> None:
    pass


def _words(line: str) -> tuple[str, ...]:
    return tuple(line.split())


def seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 (reproducible on purpose; nothing secret)


# --- words -----------------------------------------------------------------------------------

FIRST_NAMES = _words(
    "Ada Aiko Akira Alba Alex Amara Amir Ana Anders Anika Arjun Aroha Ayla Bea Bilal Bo Caio "
    "Carmen Chen Chiara Cleo Dani Dara Diego Dmitri Elif Ella Emeka Emil Esme Ezra Farah Felix "
    "Finn Freya Gabi Hana Hiro Ines Ingrid Isla Ivan Jada Jamal Jonas Juno Kai Kalani Karim "
    "Kenji Kira Lars Layla Leo Lina Lior Luca Luna Maya Mateo Mei Mila Milo Nadia Naomi Nico "
    "Nia Noor Nora Olu Omar Oscar Paloma Pia Priya Quinn Rafa Rania Ravi Remy Rhea Rosa Rumi "
    "Sami Sana Santi Sara Selin Sol Sora Tala Tariq Teo Thea Tomas Uma Vera Viktor Wren Yara "
    "Yuki Yusuf Zadie Zara Zeno Zoe"
)
LAST_NAMES = _words(
    "Abe Adeyemi Alvarez Andersen Bauer Becker Bianchi Castro Chen Cohen Costa Dubois Eriksen "
    "Farouk Fischer Garcia Haddad Hansen Hoang Ito Jansen Kaur Khan Kim Kowalski Larsen "
    "Lefebvre Li Lindqvist Lopez Mahmoud Martin Meyer Moreau Mori Murphy Nakamura Nguyen "
    "Novak Okafor Olsen Ortiz Park Patel Petrov Quinn Reyes Rossi Sato Schmidt Silva Singh "
    "Sousa Suzuki Tanaka Torres Varga Walsh Weber Wong Yilmaz Zhang Ziegler"
)
HANDLE_WORDS = _words(
    "light lens frames shoots sees film pixels studio daily wanders colour sky roams snaps "
    "draws hues grain focus"
)
ROLES = (
    "Photographer",
    "Designer",
    "Illustrator",
    "Film student",
    "Architect",
    "Weekend hiker",
    "Barista",
    "Nurse on nights",
    "Teacher",
    "Sound engineer",
    "Painter",
    "Software person",
    "Florist",
    "Cyclist",
    "Baker",
    "Bookseller",
)
CITIES = (
    "Lisbon",
    "Osaka",
    "Nairobi",
    "Montreal",
    "Berlin",
    "Mexico City",
    "Auckland",
    "Istanbul",
    "Seoul",
    "Cape Town",
    "Glasgow",
    "São Paulo",
    "Oslo",
    "Lagos",
    "Melbourne",
    "Bogotá",
    "Marseille",
    "Taipei",
    "Vancouver",
    "Kraków",
)
INTERESTS = (
    "Chasing light.",
    "Mostly skies, sometimes people.",
    "Colour first, questions later.",
    "Film and phone.",
    "Sunsets are my cardio.",
    "Shapes, patterns, coffee.",
    "Posting every day-ish.",
    "Prints on request.",
    "Slow walks, fast shutter.",
    "Trying to see things twice.",
    "",
)
EMOJI = ("✨", "🌅", "🌊", "🎨", "📷", "💛", "🔥", "🌙", "🌿", "☀️")

#: Per scene: captions, hashtags, and how its description (alt text) reads.
CAPTIONS = {
    "sunset": (
        "Golden hour never gets old",
        "Chasing the last light",
        "Evening walk, no filter needed",
        "That sky tonight",
        "Sun's going down, colours coming up",
    ),
    "sea": (
        "Salt air and a slow horizon",
        "Sea days",
        "Ferry ride home",
        "The water was glass this morning",
        "Low tide, high spirits",
    ),
    "bokeh": (
        "City lights, out of focus on purpose",
        "Night walk through the market",
        "Festival season",
        "Blurry on purpose",
        "Lights on the river",
    ),
    "stripes": (
        "Lines and more lines",
        "Found this wall on the way to work",
        "Stripes season",
        "Pattern hunting downtown",
        "Geometry everywhere",
    ),
    "shapes": (
        "New series: shapes",
        "Playing with colour again",
        "Studio experiments",
        "Print drop soon?",
        "Sketchbook, digitised",
    ),
}
AFTERTHOUGHTS = (
    "Shot on my phone.",
    "Which one's your favourite?",
    "More on my profile.",
    "Weekend mood.",
    "Can't stop making these.",
    "",
    "",
    "",
)
SCENE_TAGS = {
    "sunset": ("sunset", "goldenhour", "sky", "nofilter"),
    "sea": ("sea", "ocean", "coast", "travel"),
    "bokeh": ("bokeh", "nightlights", "city", "night"),
    "stripes": ("pattern", "lines", "streetphotography", "architecture"),
    "shapes": ("abstract", "art", "colour", "design"),
}
GENERAL_TAGS = ("photography", "photooftheday", "weekend", "mobilephotography", "instadaily")
COMMENTS = (
    "Love this!",
    "Stunning 😍",
    "These colours!",
    "Wow",
    "Where is this?",
    "So good",
    "Need this as a print",
    "🔥🔥🔥",
    "The light here ✨",
    "Beautiful shot",
    "Obsessed with this palette",
    "This made my day",
    "Frame-worthy",
    "How do you do it?",
    "👏👏",
)
REPLIES = (
    "@{name} thank you!",
    "@{name} thanks so much 💛",
    "@{name} glad you like it",
    "@{name} it's near my place!",
    "@{name} more coming soon",
)
FILTERS = ("normal", "normal", "normal", "clarendon", "gingham", "juno", "lark", "moon")
SCENES = tuple(CAPTIONS)
#: Instagram's three shapes: square, portrait 4:5 and landscape 1.91:1.
ASPECTS = ((1.0, 1.0), (0.8, 1.0), (1.0, 0.523))


# --- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PhotoSpec:
    """A photo to draw: a scene in a palette, and its description (alt text)."""

    seed: int
    kind: str
    width: int
    height: int
    palette: tuple[RGB, ...]
    filter: str
    description: str


@dataclass(slots=True)
class Person:
    username: str
    display_name: str
    note: str
    locked: bool
    avatar: int  # index in Plan.avatars

    @property
    def email(self) -> str:
        return f"{self.username}@{EMAIL_DOMAIN}"


@dataclass(slots=True)
class PlannedComment:
    author: int
    text: str
    #: The earlier comment (index in its post's comments) this answers; None: the post.
    parent: int | None = None


@dataclass(slots=True)
class PlannedPost:
    author: int
    caption: str
    photos: list[int]  # indices in Plan.photos, in carousel order
    likers: list[int] = field(default_factory=list)
    comments: list[PlannedComment] = field(default_factory=list)


@dataclass
class Plan:
    seed: int
    people: list[Person]
    avatars: list[PhotoSpec]
    photos: list[PhotoSpec]
    #: Per account, the accounts it follows (approved), and its requests still pending.
    following: list[list[int]]
    requested: list[list[int]]
    posts: list[PlannedPost]

    @property
    def follow_count(self) -> int:
        return sum(len(f) for f in self.following)

    @property
    def pending_count(self) -> int:
        return sum(len(r) for r in self.requested)

    @property
    def photo_count(self) -> int:
        return sum(len(p.photos) for p in self.posts)

    @property
    def like_count(self) -> int:
        return sum(len(p.likers) for p in self.posts)

    @property
    def comment_count(self) -> int:
        return sum(len(p.comments) for p in self.posts)

    def followers_of(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in self.people]
        for follower, targets in enumerate(self.following):
            for target in targets:
                out[target].append(follower)
        return out


def default_follows(users: int) -> int:
    """How many accounts a demo account follows by default: about a quarter of a small
    community, and 150 (a typical active account) from 600 accounts up."""
    return min(150, max(5, users // 4), max(users - 1, 0))


def check_scale(users: int, posts: int, follows: int | None, photo_size: int) -> int:
    """The follows each account makes on average, if the rest can be made; else DemoError."""
    if users < 2:
        raise DemoError(f"a community needs at least 2 users, not {users}")
    if posts < 0:
        raise DemoError(f"--posts cannot be negative ({posts})")
    wanted = default_follows(users) if follows is None else follows
    if not 0 <= wanted < users:
        raise DemoError(f"--follows must be from 0 to {users - 1} for {users} users, not {wanted}")
    if not processing.THUMB_SIZE <= photo_size <= processing.ORIGINAL_SIZE:
        raise DemoError(
            f"--photo-size must be from {processing.THUMB_SIZE} to "
            f"{processing.ORIGINAL_SIZE} pixels, not {photo_size}"
        )
    return wanted


def make_plan(
    seed: int,
    users: int,
    posts: int,
    follows: int | None = None,
    *,
    photo_size: int = 1080,
    taken: Iterable[str] = (),
) -> Plan:
    """The whole community, decided from ``seed`` alone (and the usernames ``taken``)."""
    wanted = check_scale(users, posts, follows, photo_size)
    rng = seeded(seed)
    people = _people(rng, users, set(taken))
    avatars = [
        _photo_spec(rng, rng.choice(SCENES), AVATAR_SIDE, (1.0, 1.0), "normal")
        for _ in range(min(users, AVATAR_POOL))
    ]
    following, requested = _graph(rng, people, wanted)
    plan = Plan(seed, people, avatars, [], following, requested, [])
    _posts(rng, plan, posts, photo_size)
    return plan


def _people(rng: random.Random, count: int, taken: set[str]) -> list[Person]:
    seen = {t.lower() for t in taken}
    people = []
    locked = set(rng.sample(range(count), max(1 if count >= 5 else 0, round(count * 0.1))))
    for n in range(count):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        pattern = rng.randrange(6)
        handle = [
            f"{first}_{last}",
            f"{first}{last}",
            f"{first}.{rng.choice(HANDLE_WORDS)}".replace(".", "_"),
            f"{first}{last[0]}",
            f"{rng.choice(HANDLE_WORDS)}by{first}",
            f"{first}_{rng.randrange(10, 100)}",
        ][pattern].lower()[:26]
        username, bump = handle, 1
        while username in seen:
            bump += 1
            username = f"{handle}{bump}"
        seen.add(username)
        display = f"{first} {last}" if rng.random() < 0.8 else first
        if rng.random() < 0.15:
            display = f"{display} {rng.choice(EMOJI)}"
        role, city = rng.choice(ROLES), rng.choice(CITIES)
        note = f"{role} in {city}. {rng.choice(INTERESTS)}".strip()
        people.append(Person(username, display, note, n in locked, n % AVATAR_POOL))
    return people


def _graph(
    rng: random.Random, people: list[Person], wanted: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Who follows whom: mostly by popularity (a few accounts are followed by many), then
    some follow back. A follow of a locked account was approved, or is still a request."""
    n = len(people)
    ranks = list(range(n))
    rng.shuffle(ranks)
    cumulative = list(accumulate(1 / (r + 5) ** 0.85 for r in ranks))
    chosen: list[set[int]] = [set() for _ in range(n)]
    for me in range(n):
        goal = min(n - 1, max(0, round(wanted * rng.uniform(0.4, 1.2))))
        while len(chosen[me]) < goal:
            for target in rng.choices(range(n), cum_weights=cumulative, k=goal):
                if target != me:
                    chosen[me].add(target)
                    if len(chosen[me]) == goal:
                        break
    for me in range(n):  # follow-backs, to about the wanted count on average
        for target in sorted(chosen[me]):
            if len(chosen[target]) < wanted * 1.5 and rng.random() < 0.25:
                chosen[target].add(me)
    following: list[list[int]] = [[] for _ in range(n)]
    requested: list[list[int]] = [[] for _ in range(n)]
    for me in range(n):
        for target in sorted(chosen[me]):
            if target == me:
                continue
            if people[target].locked and rng.random() < 0.25:
                requested[me].append(target)
            else:
                following[me].append(target)
        rng.shuffle(following[me])  # follows happen in no particular order
    return following, requested


def _posts(rng: random.Random, plan: Plan, count: int, photo_size: int) -> None:
    people = plan.people
    n = len(people)
    activity = list(accumulate(rng.lognormvariate(0, 1.0) for _ in range(n)))
    fans = plan.followers_of()
    by_kind: dict[str, list[int]] = defaultdict(list)

    def photo(kind: str) -> int:
        if len(plan.photos) >= PHOTO_POOL:
            return rng.choice(by_kind[kind] or range(len(plan.photos)))
        aspect = rng.choice(ASPECTS)
        plan.photos.append(_photo_spec(rng, kind, photo_size, aspect, rng.choice(FILTERS)))
        by_kind[kind].append(len(plan.photos) - 1)
        return len(plan.photos) - 1

    for author in rng.choices(range(n), cum_weights=activity, k=count):
        kind = rng.choice(SCENES)
        carousel = rng.random() < 0.12
        photos = [photo(kind) for _ in range(rng.randint(2, 5) if carousel else 1)]
        post = PlannedPost(author, _caption(rng, plan, author, kind, carousel), photos)
        audience = fans[author]
        likes = min(len(audience), _around(rng, 1 + 0.7 * math.sqrt(len(audience))))
        post.likers = rng.sample(audience, likes)
        if not people[author].locked:  # a public post: strangers find it too
            for stranger in rng.sample(range(n), min(n, rng.randrange(3))):
                if stranger != author and stranger not in post.likers:
                    post.likers.append(stranger)
        talk = _around(rng, 0.2 + 0.08 * math.sqrt(len(audience)))
        talkers = rng.sample(audience, min(len(audience), talk))
        for commenter in talkers:
            post.comments.append(PlannedComment(commenter, _comment(rng, plan, commenter)))
            if rng.random() < 0.3:
                name = people[commenter].username
                reply = rng.choice(REPLIES).format(name=name)
                post.comments.append(PlannedComment(author, reply, parent=len(post.comments) - 1))
        plan.posts.append(post)


def _around(rng: random.Random, mean: float) -> int:
    """A count that averages ``mean`` and varies the way likes do (skewed, never negative)."""
    return max(0, int(rng.expovariate(1 / mean) + 0.5)) if mean > 0 else 0


def _caption(rng: random.Random, plan: Plan, author: int, kind: str, carousel: bool) -> str:
    line = rng.choice(CAPTIONS[kind])
    if carousel:
        line = f"{line} (swipe ➡️)"
    if rng.random() < 0.4:
        line = f"{line} {rng.choice(EMOJI)}"
    more = rng.choice(AFTERTHOUGHTS)
    friends = plan.following[author]
    if friends and rng.random() < 0.15:
        friend = plan.people[rng.choice(friends)].username
        more = rng.choice((f"With @{friend}.", f"Thanks @{friend} for the tip!", f"cc @{friend}"))
    tags = rng.sample(SCENE_TAGS[kind], rng.randint(0, 3)) + rng.sample(
        GENERAL_TAGS, rng.randint(0, 2)
    )
    parts = [line, more, " ".join(f"#{t}" for t in tags)]
    return "\n\n".join(p for p in parts if p)


def _comment(rng: random.Random, plan: Plan, commenter: int) -> str:
    said = rng.choice(COMMENTS)
    friends = plan.following[commenter]
    if friends and rng.random() < 0.1:
        return f"@{plan.people[rng.choice(friends)].username} look at this!"
    return said


# --- colours and photos ----------------------------------------------------------------------

_HUE_NAMES = (
    (15, "red"),
    (40, "orange"),
    (50, "amber"),
    (65, "yellow"),
    (90, "lime"),
    (150, "green"),
    (180, "teal"),
    (200, "cyan"),
    (220, "sky-blue"),
    (250, "blue"),
    (275, "violet"),
    (300, "purple"),
    (330, "magenta"),
    (345, "pink"),
    (360, "red"),
)


def colour_name(rgb: RGB) -> str:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    if v < 0.2:
        return "black"
    if s < 0.15:
        return "white" if v > 0.85 else "grey"
    name = next(n for limit, n in _HUE_NAMES if h * 360 < limit)
    if v < 0.45:
        return f"deep {name}"
    return f"pale {name}" if s < 0.4 else name


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _palette(rng: random.Random, kind: str) -> tuple[RGB, ...]:
    # Sunsets are warm; seas have a sky; the rest take any hue.
    base = {"sunset": rng.uniform(-0.1, 0.12), "sea": rng.uniform(0.45, 0.65)}.get(
        kind, rng.random()
    )
    offsets = rng.choice(
        ((0, 0.05, 0.5, 0.55, 0.1), (0, 0.08, 0.16, 0.24, 0.5), (0, 0.1, 0.66, 0.33, 0.5))
    )
    out = []
    for offset in offsets:
        hue = (base + offset + rng.uniform(-0.03, 0.03)) % 1
        r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.45, 0.95), rng.uniform(0.6, 1.0))
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return tuple(out)


def _photo_spec(
    rng: random.Random, kind: str, long_side: int, aspect: tuple[float, float], filter_: str
) -> PhotoSpec:
    aw, ah = aspect
    scale = long_side / max(aw, ah)
    width, height = max(16, round(aw * scale)), max(16, round(ah * scale))
    palette = _palette(rng, kind)
    names = [colour_name(c) for c in palette]
    sky, ground = f"{_a(names[0])} {names[0]}", names[2]
    description = {
        "sunset": f"{sky.capitalize()} sky fading to {names[1]} over dark hills, the sun low",
        "sea": f"A calm {ground} sea under {sky} sky, the sun near the horizon",
        "bokeh": f"Out-of-focus {names[2]} and {names[3]} lights against the dark",
        "stripes": f"Diagonal stripes of {names[0]} and {names[2]}",
        "shapes": f"{ground.capitalize()} and {names[3]} shapes on {sky} gradient",
    }[kind]
    return PhotoSpec(rng.getrandbits(32), kind, width, height, palette, filter_, description)


def _clamp(image: Any) -> Any:
    return (image > 1).ifthenelse(1.0, (image < 0).ifthenelse(0.0, image))


def _mix(base: Any, colour: Sequence[float] | Any, amount: Any) -> Any:
    return base * (1 - amount) + amount * colour


def _gradient(t: Any, a: Sequence[float], b: Sequence[float]) -> Any:
    return t * [y - x for x, y in zip(a, b, strict=True)] + list(a)


def _disc(xy: Any, cx: float, cy: float, radius: float, softness: float) -> Any:
    distance = ((xy[0] - cx) ** 2 + (xy[1] - cy) ** 2) ** 0.5
    return _clamp((radius - distance) / softness)


def _shaded(palette: tuple[RGB, ...], i: int, factor: float) -> list[float]:
    return [c * factor for c in palette[i]]


@cache
def _grain_tile() -> Any:
    """Film grain: one noise tile, tiled under every photo (noise per photo is slow)."""
    # Seeded: the same photos from the same plan, in any process.
    return pyvips.Image.gaussnoise(256, 256, sigma=1.0, mean=0.0, seed=1).copy_memory()


def render(spec: PhotoSpec) -> bytes:
    """``spec`` drawn as a JPEG: composed at a quarter size (the scenes are smooth), scaled
    up, then given a little grain. Deterministic; CPU-bound (libvips releases the GIL)."""
    rng = seeded(spec.seed)
    w, h = spec.width, spec.height
    lw, lh = max(8, w // 4), max(8, h // 4)
    xy = pyvips.Image.xyz(lw, lh).cast("float")
    x, y = xy[0] / lw, xy[1] / lh
    p = spec.palette
    if spec.kind in ("sunset", "sea"):
        horizon = rng.uniform(0.52, 0.72)
        sky = _gradient(y / horizon, p[0], p[1])
        cx, r = rng.uniform(0.2, 0.8) * lw, rng.uniform(0.05, 0.1) * lw
        cy = horizon * lh * rng.uniform(0.6, 0.95)
        sun = [255, rng.randint(200, 245), rng.randint(120, 210)]
        sky = _mix(sky, sun, _disc(xy, cx, cy, r * 3, r * 2.5) * 0.55)
        sky = _mix(sky, sun, _disc(xy, cx, cy, r, 1.2)).copy_memory()
        depth = (y - horizon) / (1 - horizon)
        if spec.kind == "sunset":
            ridge = (x * rng.uniform(6, 20) + rng.uniform(0, 6.3)).sin() * rng.uniform(
                0.01, 0.05
            ) + (x * rng.uniform(1, 4) + rng.uniform(0, 6.3)).sin() * rng.uniform(0.03, 0.09)
            ground = _gradient(depth, _shaded(p, 2, 0.4), _shaded(p, 2, 0.15))
        else:
            ridge = x * 0
            ground = _gradient(depth, _shaded(p, 2, 0.9), _shaded(p, 2, 0.45))
            glint = _clamp(1 - (x * lw - cx).abs() / (r * 1.3)) * _clamp(1 - depth * 1.5)
            ground = _mix(ground, sun, glint * 0.5)
        edge = _clamp((y - horizon - ridge) * lh)
        image = _mix(sky, ground, edge)
    elif spec.kind == "stripes":
        angle = rng.uniform(0, math.pi)
        t = (x * math.cos(angle) * lw / lh + y * math.sin(angle)) * rng.randint(3, 9)
        band = t - t.floor()
        image = (band > rng.uniform(0.35, 0.65)).ifthenelse(
            _gradient(x, p[0], p[1]), _gradient(y, p[2], p[3])
        )
        image = image.gaussblur(0.6)
    else:
        if spec.kind == "bokeh":
            image = _gradient(y, _shaded(p, 0, 0.25), _shaded(p, 1, 0.12))
            count, sizes = rng.randint(15, 40), (0.02, 0.08)
        else:
            tilt = rng.random()
            image = _gradient(x * tilt + y * (1 - tilt), p[0], p[1])
            count, sizes = rng.randint(2, 6), (0.08, 0.3)
        image = image.copy_memory()
        for colour in p[2:]:
            # One mask a colour: shapes drawn into it (cheap), softened once, laid on once.
            mask = pyvips.Image.black(lw, lh)
            for _ in range(max(1, count // 3)):
                cx, cy = rng.uniform(0, lw), rng.uniform(0, lh)
                r = max(
                    1, int(rng.uniform(*sizes) * min(lw, lh) * (2 if spec.kind == "shapes" else 1))
                )
                ink = int(rng.uniform(0.3, 0.7 if spec.kind == "bokeh" else 0.95) * 255)
                shape = rng.random()
                if spec.kind == "bokeh" or shape < 0.5:
                    mask = mask.draw_circle(ink, int(cx), int(cy), r, fill=True)
                elif shape < 0.8:
                    mask = mask.draw_rect(ink, int(cx - r), int(cy - r), 2 * r, 2 * r, fill=True)
                else:
                    for ring in range(max(1, r // 6)):
                        mask = mask.draw_circle(ink, int(cx), int(cy), r - ring)
            soft = mask.gaussblur(rng.uniform(0.8, 2.0) if spec.kind == "bokeh" else 0.6)
            image = _mix(image, list(colour), soft / 255).copy_memory()
    small = image.cast("uchar").copy_memory()
    big = small.resize(w / lw, vscale=h / lh, kernel="cubic")
    big = big.gravity("centre", w, h, extend="copy")
    tile = _grain_tile()
    across, down = w // tile.width + 2, h // tile.height + 2
    grain = tile.replicate(across, down).crop(
        rng.randrange(tile.width), rng.randrange(tile.height), w, h
    )
    photo = (big + grain * rng.uniform(1.5, 3.0)).cast("uchar").copy(interpretation="srgb")
    data: bytes = photo.jpegsave_buffer(Q=92)
    return data


# --- filling an instance ---------------------------------------------------------------------


@dataclass
class Report:
    users: int
    locked: int
    follows: int
    pending: int
    posts: int
    photos: int
    likes: int
    comments: int
    password: str
    example_email: str
    seed: int
    writer: str
    seconds: float

    def line(self) -> str:
        return (
            f"made {self.users:,} users ({self.locked:,} locked), {self.follows:,} follows "
            f"({self.pending:,} requests pending), {self.posts:,} posts ({self.photos:,} photos), "
            f"{self.likes:,} likes and {self.comments:,} comments in {self.seconds:.0f}s; "
            f"sign in as any <username>@{EMAIL_DOMAIN}, e.g. {self.example_email}, "
            f"with the password {self.password}"
        )

    def as_json(self) -> dict[str, object]:
        return {
            "users": self.users,
            "locked": self.locked,
            "follows": self.follows,
            "pending_requests": self.pending,
            "posts": self.posts,
            "photos": self.photos,
            "likes": self.likes,
            "comments": self.comments,
            "email_domain": EMAIL_DOMAIN,
            "example_email": self.example_email,
            "password": self.password,
            "seed": self.seed,
            "writer": self.writer,
            "seconds": round(self.seconds, 1),
        }


def new_password() -> str:
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(14))


async def demo_accounts(runtime: Runtime) -> int:
    """How many accounts with a demo e-mail address the instance has."""
    async with runtime.router.global_connect() as conn:
        found = await conn.scalar(
            select(func.count()).select_from(emails).where(emails.c.email.like(f"%@{EMAIL_DOMAIN}"))
        )
    return int(found or 0)


async def fill(
    settings: Settings,
    *,
    users: int = 50,
    posts: int = 300,
    follows: int | None = None,
    seed: int | None = None,
    password: str | None = None,
    bulk: bool | None = None,
    photo_size: int = 1080,
    progress: Progress = _no_progress,
) -> Report:
    """Fill the instance ``settings`` names with a demo community; what was made.

    The embedded default is initialised first if need be (as ``serve`` does); a cluster
    must have been initialised. An instance that already has demo accounts is refused:
    a community is made once, on a fresh instance.
    """
    started = time.monotonic()
    seed = secrets.randbelow(2**31) if seed is None else seed
    password = new_password() if password is None else password
    check_scale(users, posts, follows, photo_size)
    try:
        check_sign_up("demo", f"demo@{EMAIL_DOMAIN}", password, True)
    except ApiError:
        raise DemoError(f"--password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters") from None
    use_bulk = (
        bulk if bulk is not None else (users > ACTIONS_MAX_USERS or posts > ACTIONS_MAX_POSTS)
    )
    if settings.embedded:
        await init_cluster(settings)
    runtime = await Runtime.open(settings)
    try:
        existing = await demo_accounts(runtime)
        if existing:
            raise DemoError(
                f"this instance already has a demo community ({existing:,} accounts "
                f"@{EMAIL_DOMAIN}); photogram demo fills a fresh instance once"
            )
        plan = await _plan_for(runtime, seed, users, posts, follows, photo_size)
        try:
            if use_bulk:
                await write_in_bulk(runtime, plan, password, progress)
            else:
                await write_with_actions(runtime, plan, password, progress)
        except ApiError as exc:
            raise DemoError(f"the demo could not be written: {exc.message}") from exc
    finally:
        await runtime.close()
    return Report(
        users=len(plan.people),
        locked=sum(p.locked for p in plan.people),
        follows=plan.follow_count,
        pending=plan.pending_count,
        posts=len(plan.posts),
        photos=plan.photo_count,
        likes=plan.like_count,
        comments=plan.comment_count,
        password=password,
        example_email=plan.people[0].email,
        seed=seed,
        writer="bulk" if use_bulk else "actions",
        seconds=time.monotonic() - started,
    )


async def _plan_for(
    runtime: Runtime, seed: int, users: int, posts: int, follows: int | None, photo_size: int
) -> Plan:
    """The plan, with usernames the instance already has avoided."""
    taken: set[str] = set()
    while True:
        plan = make_plan(seed, users, posts, follows, photo_size=photo_size, taken=taken)
        names = [p.username for p in plan.people]
        clashes: set[str] = set()
        async with runtime.router.global_connect() as conn:
            for start in range(0, len(names), 5000):
                chunk = names[start : start + 5000]
                found = await conn.scalars(
                    select(usernames.c.username).where(usernames.c.username.in_(chunk))
                )
                clashes.update(found)
        if not clashes:
            return plan
        taken |= clashes


async def _each(
    items: Sequence[T],
    work: Callable[[T], Awaitable[None]],
    *,
    concurrency: int,
    stage: str,
    progress: Progress,
) -> None:
    """``work`` on every item, ``concurrency`` at a time, reporting progress."""
    pending = iter(items)
    done = 0

    async def worker() -> None:
        nonlocal done
        for item in pending:  # one iterator shared by the workers: each item once
            await work(item)
            done += 1
            progress(stage, done, len(items))

    progress(stage, 0, len(items))
    await gather(*(worker() for _ in range(max(1, concurrency))))


def _cores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


async def _avatars(runtime: Runtime, plan: Plan) -> list[bytes]:
    async def one(spec: PhotoSpec) -> bytes:
        return await check_avatar(runtime.settings, await asyncio.to_thread(render, spec))

    return list(await gather(*(one(spec) for spec in plan.avatars)))


async def _profiles(
    runtime: Runtime, plan: Plan, ids: list[int], progress: Progress, concurrency: int
) -> None:
    """Names, bios, locks and avatars, through the profile action (both writers)."""
    avatars = await _avatars(runtime, plan)

    async def one(index: int) -> None:
        person = plan.people[index]
        change = check_profile_change(person.display_name, person.note, person.locked, None)
        change = replace(change, avatar_jpeg=avatars[person.avatar % len(avatars)])
        await do_update_profile(runtime, ids[index], change)

    await _each(range(len(ids)), one, concurrency=concurrency, stage="profiles", progress=progress)


# --- the writer through the actions -----------------------------------------------------------


async def write_with_actions(
    runtime: Runtime, plan: Plan, password: str, progress: Progress = _no_progress
) -> list[int]:
    """Carry ``plan`` out the way users would, one action at a time; the account IDs."""
    ids: list[int] = [0] * len(plan.people)
    cores = _cores()

    async def sign_up(index: int) -> None:
        person = plan.people[index]
        ids[index] = await do_sign_up(
            runtime, check_sign_up(person.username, person.email, password, True)
        )

    # Each sign-up hashes the password (argon2, deliberately slow): one a core.
    await _each(range(len(ids)), sign_up, concurrency=cores, stage="accounts", progress=progress)
    await _profiles(runtime, plan, ids, progress, concurrency=4)

    asked = [
        (me, target)
        for me in range(len(ids))
        for target in (*plan.following[me], *plan.requested[me])
    ]

    async def follow(edge: tuple[int, int]) -> None:
        me, target = edge
        row = await check_follow(runtime, ids[me], str(ids[target]))
        await do_follow(runtime, ids[me], row, None, None)

    await _each(asked, follow, concurrency=4, stage="follows", progress=progress)
    approved = [
        (me, t) for me in range(len(ids)) for t in plan.following[me] if plan.people[t].locked
    ]

    async def approve(edge: tuple[int, int]) -> None:
        me, target = edge
        await do_answer_request(runtime, ids[target], ids[me], accept=True)

    await _each(approved, approve, concurrency=4, stage="requests", progress=progress)

    drawn: dict[int, bytes] = {}
    uploads = [(p, n) for p, post in enumerate(plan.posts) for n in range(len(post.photos))]
    media: dict[tuple[int, int], int] = {}
    directory = spool_directory(runtime)
    directory.mkdir(parents=True, exist_ok=True)

    async def upload(slot: tuple[int, int]) -> None:
        post = plan.posts[slot[0]]
        index = post.photos[slot[1]]
        spec = plan.photos[index]
        if index not in drawn:
            drawn[index] = await asyncio.to_thread(render, spec)
        spooled = await asyncio.to_thread(_spool, directory, drawn[index])
        try:
            await check_photo(runtime, spooled)
            media_id, row_id = await do_upload(
                runtime,
                ids[post.author],
                spooled,
                Edit(spec.description, None),
                check_filter(spec.filter),
            )
        finally:
            await asyncio.to_thread(spooled.unlink, missing_ok=True)  # gone if taken
        await runtime.relay.dispatch([row_id])  # processing, as after an upload
        media[slot] = media_id

    await _each(uploads, upload, concurrency=cores, stage="photos", progress=progress)

    post_ids: list[int] = []

    async def publish(index: int) -> None:
        post = plan.posts[index]
        media_ids = [str(media[(index, n)]) for n in range(len(post.photos))]
        draft = check_draft(StatusForm(status=post.caption, media_ids=media_ids))
        post_ids.append(await do_post(runtime, ids[post.author], draft, None, None))

    # One at a time: posts get their IDs (their time) in the plan's order.
    await _each(range(len(plan.posts)), publish, concurrency=1, stage="posts", progress=progress)

    async def discuss(index: int) -> None:
        post = plan.posts[index]
        made: list[int] = []
        for comment in post.comments:
            parent = post_ids[index] if comment.parent is None else made[comment.parent]
            draft = check_draft(StatusForm(status=comment.text, in_reply_to_id=str(parent)))
            made.append(await do_comment(runtime, ids[comment.author], draft, None, None))

    await _each(range(len(plan.posts)), discuss, concurrency=4, stage="comments", progress=progress)
    likes = [(p, liker) for p, post in enumerate(plan.posts) for liker in post.likers]

    async def like(pair: tuple[int, int]) -> None:
        post, liker = pair
        await do_favourite(runtime, ids[liker], str(post_ids[post]), like=True)

    await _each(likes, like, concurrency=4, stage="likes", progress=progress)
    # Anything whose first run failed (and is due again now) gets its second chance here.
    while await runtime.relay.sweep():
        pass
    return ids


def _spool(directory: Path, data: bytes) -> Path:
    """``data`` in a private file in the spool directory, as an upload arrives."""
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".part", delete=False) as handle:
        handle.write(data)
    return Path(handle.name)


# --- the bulk writer ---------------------------------------------------------------------------


Note = tuple[int, str, int, int]  # recipient, type, sender, status (0: none)


class BulkWriter:
    """Writes a plan in batches, one transaction per logical shard and step."""

    def __init__(self, runtime: Runtime, plan: Plan, progress: Progress) -> None:
        self.runtime = runtime
        self.router = runtime.router
        self.plan = plan
        self.progress = progress
        self.rng = seeded(plan.seed ^ 0x5EED)
        self.shard = [self.rng.randrange(self.router.logical_shards) for _ in plan.people]
        self.ids: list[int] = [0] * len(plan.people)
        self.by_name = {p.username.lower(): i for i, p in enumerate(plan.people)}
        # SQLite has one writer at a time; PostgreSQL shards take writes side by side.
        self.parallel = 1 if runtime.settings.embedded else 4
        self.post_ids: list[int] = [0] * len(plan.posts)
        self.media_ids: list[list[int]] = [[] for _ in plan.posts]
        self.slices: list[dict[int, list[int]]] = []
        self.stored: list[asyncio.Event] = []
        self.last_status: dict[int, datetime] = {}

    def visibility(self, author: int) -> str:
        # do_post's default: a locked account's posts are followers-only.
        return "private" if self.plan.people[author].locked else "public"

    async def per_shard(
        self,
        groups: dict[int, T],
        work: Callable[[int, T], Awaitable[None]],
        stage: str | None = None,
        weight: Callable[[T], int] = lambda _g: 1,
    ) -> None:
        done, total = 0, sum(weight(g) for g in groups.values())
        gate = asyncio.Semaphore(self.parallel)

        async def one(shard: int, group: T) -> None:
            nonlocal done
            async with gate:
                await work(shard, group)
            done += weight(group)
            if stage is not None:
                self.progress(stage, done, total)

        # In no fixed order: IDs carry the time they were made, so shard after shard in
        # order would make the last shards' posts the newest on every timeline.
        order = sorted(groups)
        self.rng.shuffle(order)
        await gather(*(one(shard, groups[shard]) for shard in order))

    async def insert(self, shard: int, rows: Sequence[tuple[Table, list[dict[str, Any]]]]) -> None:
        async with self.router.begin(shard) as conn:
            for table, values in rows:
                if values:
                    await conn.execute(insert(table), values)

    async def notify(self, notes: Iterable[Note]) -> None:
        """Notifications, on their recipients' shards (as the notify task writes them)."""
        by_shard: dict[int, list[Note]] = defaultdict(list)
        for note in sorted(set(notes)):
            if note[0] != note[2]:  # nobody is notified of their own doing
                by_shard[shard_of(note[0])].append(note)

        async def write(shard: int, group: list[Note]) -> None:
            async with self.router.begin(shard) as conn:
                made = await reserve_ids(conn, shard, len(group))
                await conn.execute(
                    insert(notifications),
                    [
                        {
                            "id": i,
                            "account_id": r,
                            "type": kind,
                            "from_account_id": s,
                            "status_id": status,
                        }
                        for i, (r, kind, s, status) in zip(made, group, strict=True)
                    ],
                )

        await self.per_shard(by_shard, write)

    # --- accounts --------------------------------------------------------------------------

    async def accounts(self, password_hash: str) -> None:
        plan, router = self.plan, self.router
        by_shard: dict[int, list[int]] = defaultdict(list)
        for index, shard in enumerate(self.shard):
            by_shard[shard].append(index)

        async def reserve(shard: int, members: list[int]) -> None:
            async with router.begin(shard) as conn:
                for index, id_ in zip(
                    members, await reserve_ids(conn, shard, len(members)), strict=True
                ):
                    self.ids[index] = id_

        await self.per_shard(by_shard, reserve)
        # As do_sign_up: claimed in the directory, written on the shard, then confirmed.
        people = list(enumerate(plan.people))
        for start in range(0, len(people), 5000):
            chunk = people[start : start + 5000]
            async with router.global_begin() as conn:
                await conn.execute(
                    insert(usernames),
                    [{"username": p.username.lower(), "account_id": self.ids[i]} for i, p in chunk],
                )
                await conn.execute(
                    insert(emails),
                    [{"email": p.email.lower(), "account_id": self.ids[i]} for i, p in chunk],
                )
        fans = [0] * len(plan.people)
        for targets in plan.following:
            for target in targets:
                fans[target] += 1
        posted = [0] * len(plan.people)
        for post in plan.posts:
            posted[post.author] += 1

        async def write(shard: int, members: list[int]) -> None:
            rows = [
                {
                    "id": self.ids[i],
                    "username": plan.people[i].username,
                    "email": plan.people[i].email,
                    "password_hash": password_hash,
                    "followers_count": fans[i],
                    "following_count": len(plan.following[i]),
                    "statuses_count": posted[i],
                }
                for i in members
            ]
            await self.insert(shard, [(accounts, rows)])

        await self.per_shard(by_shard, write, "accounts", len)
        for start in range(0, len(self.ids), 5000):
            async with router.global_begin() as conn:
                await conn.execute(
                    update(usernames)
                    .where(usernames.c.account_id.in_(self.ids[start : start + 5000]))
                    .values(confirmed=True)
                )

    # --- follows ---------------------------------------------------------------------------

    async def write(self, password_hash: str) -> None:
        await self.accounts(password_hash)
        # Profiles first: each stores an avatar too, and would queue behind the photos.
        await _profiles(
            self.runtime, self.plan, self.ids, self.progress, concurrency=self.parallel * 2
        )
        await self.reserve_posts()
        pool = await self.process_pool()
        # Storing the photos waits on the disk (a file synced per object), the rest on the
        # databases: side by side. The database writes stay one after another: SQLite has
        # one writer at a time (and a second one waits by sleeping).
        async with asyncio.TaskGroup() as work:
            work.create_task(self.store_photos(pool))
            work.create_task(self.write_rows(pool))

    async def write_rows(self, pool: list[processing.Processed]) -> None:
        await self.follows()
        await self.comments()
        await self.likes()
        await self.posts(pool)

    async def follows(self) -> None:
        await self.edges(self.plan.following, follows, followers, "follow", "follows")
        await self.edges(
            self.plan.requested, follow_requests_out, follow_requests_in, "follow_request", None
        )

    async def edges(
        self,
        lists: list[list[int]],
        table: Table,
        mirror: Table,
        note: str,
        stage: str | None,
    ) -> None:
        """Authoritative edges on each account's shard, mirrors (same IDs) on the other's."""
        by_shard: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for me, targets in enumerate(lists):
            for target in targets:
                by_shard[self.shard[me]].append((me, target))
        mirrors: dict[int, list[dict[str, Any]]] = defaultdict(list)
        extra = {"show_reblogs": True, "notify": False} if table is follows else {}

        async def write(shard: int, edges: list[tuple[int, int]]) -> None:
            async with self.router.begin(shard) as conn:
                made = await reserve_ids(conn, shard, len(edges))
                rows = []
                for id_, (me, target) in zip(made, edges, strict=True):
                    a, b = self.ids[me], self.ids[target]
                    rows.append({"id": id_, "account_id": a, "target_id": b, **extra})
                    mirrors[self.shard[target]].append({"id": id_, "account_id": b, "target_id": a})
                await conn.execute(insert(table), rows)

        await self.per_shard(by_shard, write, stage, len)

        async def write_mirror(shard: int, rows: list[dict[str, Any]]) -> None:
            await self.insert(shard, [(mirror, rows)])

        await self.per_shard(mirrors, write_mirror)
        await self.notify(
            (self.ids[t], note, self.ids[me], 0) for me, ts in enumerate(lists) for t in ts
        )

    # --- posts -----------------------------------------------------------------------------

    async def reserve_posts(self) -> None:
        """IDs for every post and photo, a slice at a time on each author's shard.

        A post's ID is its creation time (and the time its row records): reserving them
        slice after slice keeps the timelines in the plan's order, roughly, and lets the
        photos be stored while everything else is written.
        """
        posts = self.plan.posts
        for start in range(0, len(posts), BULK_SLICE):
            by_shard: dict[int, list[int]] = defaultdict(list)
            for index in range(start, min(len(posts), start + BULK_SLICE)):
                by_shard[self.shard[posts[index].author]].append(index)
            self.slices.append(by_shard)
            self.stored.append(asyncio.Event())
            await self.per_shard(by_shard, self.reserve_slice)

    async def reserve_slice(self, shard: int, indices: list[int]) -> None:
        posts = self.plan.posts
        async with self.router.begin(shard) as conn:
            # Photos are uploaded before the post that shows them: their IDs come first.
            media_ids = iter(
                await reserve_ids(conn, shard, sum(len(posts[i].photos) for i in indices))
            )
            post_ids = await reserve_ids(conn, shard, len(indices))
        for index, post_id in zip(indices, post_ids, strict=True):
            self.post_ids[index] = post_id
            self.media_ids[index] = [next(media_ids) for _ in posts[index].photos]

    async def store_photos(self, pool: list[processing.Processed]) -> None:
        """Every post's own copies of its photos' objects, a slice at a time, each slice's
        ``stored`` event set when it is done: its rows may then name them.

        The copies are written by worker processes. Storing is a file written and synced
        per object, from threads, and the Python around each of a million writes would
        otherwise take the interpreter from the database writes going on meanwhile.
        """
        variants = [list(made.variants.values()) for made in pool]
        context = multiprocessing.get_context("spawn")  # not fork: this process has threads
        loop = asyncio.get_running_loop()
        done, total = 0, sum(len(m) for m in self.media_ids)
        with ProcessPoolExecutor(
            max_workers=max(1, _cores() - 1),
            mp_context=context,
            initializer=_start_store_worker,
            initargs=(self.runtime.settings, variants),
        ) as workers:
            for by_shard, stored in zip(self.slices, self.stored, strict=True):
                copies = [
                    (media_id, photo)
                    for group in by_shard.values()
                    for index in group
                    for media_id, photo in zip(
                        self.media_ids[index], self.plan.posts[index].photos, strict=True
                    )
                ]
                batches = [
                    copies[at : at + STORE_BATCH] for at in range(0, len(copies), STORE_BATCH)
                ]
                for batch in asyncio.as_completed(
                    [loop.run_in_executor(workers, _store_copies, b) for b in batches]
                ):
                    done += await batch
                    self.progress("photo copies", done, total)
                stored.set()

    async def posts(self, pool: list[processing.Processed]) -> None:
        """The posts' rows, a slice at a time once its objects are stored (as processing
        records a photo only once its objects are written)."""
        total, done = len(self.plan.posts), 0
        self.progress("posts", 0, total)
        for by_shard, stored in zip(self.slices, self.stored, strict=True):
            await stored.wait()
            notes: list[Note] = []
            await self.per_shard(by_shard, partial(self.write_posts, pool=pool, notes=notes))
            await self.notify(notes)
            done += sum(len(group) for group in by_shard.values())
            self.progress("posts", done, total)
        await self.write_last_status()

    async def process_pool(self) -> list[processing.Processed]:
        settings = self.runtime.settings
        photos = self.plan.photos

        def make(spec: PhotoSpec) -> processing.Processed:
            return processing.process(
                render(spec),
                filter_name=spec.filter,
                max_pixels=settings.media_max_pixels,
                max_bytes=settings.media_max_bytes,
            )

        made: list[processing.Processed | None] = [None] * len(photos)

        async def one(index: int) -> None:
            made[index] = await asyncio.to_thread(make, photos[index])

        await _each(
            range(len(photos)), one, concurrency=_cores(), stage="photos", progress=self.progress
        )
        return [m for m in made if m is not None]

    def mentioned(self, body: str) -> list[int]:
        """As posts.actions.mentioned_accounts: the existing accounts ``body`` mentions."""
        found = (
            self.by_name.get(m.username.lower()) for m in text.mentions(body) if m.domain is None
        )
        return list(dict.fromkeys(self.ids[i] for i in found if i is not None))

    async def write_posts(
        self,
        shard: int,
        indices: list[int],
        pool: list[processing.Processed],
        notes: list[Note],
    ) -> None:
        plan = self.plan
        store_name = self.runtime.media.name
        media = self.media_ids
        processed_at = datetime.now(UTC)
        status_rows, media_rows, object_rows, tag_rows, mention_rows = [], [], [], [], []
        for index in indices:
            post, post_id = plan.posts[index], self.post_ids[index]
            author = self.ids[post.author]
            # As do_post, which takes the time for the row as it makes the ID.
            created_at = decompose(post_id).timestamp
            last = self.last_status.get(post.author)
            self.last_status[post.author] = created_at if last is None else max(last, created_at)
            visibility = self.visibility(post.author)
            status_rows.append(
                {
                    "id": post_id,
                    "account_id": author,
                    "post_id": post_id,
                    "post_account_id": author,
                    "text": post.caption,
                    "spoiler_text": "",
                    "sensitive": False,
                    "visibility": visibility,
                    "language": None,
                    "media_ids": [str(m) for m in media[index]],
                    "application": None,
                    "favourites_count": len(post.likers),
                    "replies_count": sum(c.parent is None for c in post.comments),
                    "created_at": created_at,
                }
            )
            for media_id, photo in zip(media[index], post.photos, strict=True):
                spec, made = plan.photos[photo], pool[photo]
                media_rows.append(
                    {
                        "id": media_id,
                        "account_id": author,
                        "status_id": post_id,
                        "state": "ready",
                        "filter": made.filter,
                        "description": spec.description,
                        "focus_x": 0.0,
                        "focus_y": 0.0,
                        "width": made.width,
                        "height": made.height,
                        "blurhash": made.blurhash,
                        "processed_at": processed_at,
                    }
                )
                object_rows += [
                    {
                        "media_id": media_id,
                        "variant": variant.name,
                        "store": store_name,
                        "key": object_key(media_id, variant.name, variant.extension),
                        "size": variant.size,
                        "md5": variant.md5,
                        "width": variant.width,
                        "height": variant.height,
                        "content_type": variant.mime_type,
                    }
                    for variant in made.variants.values()
                ]
            if visibility == "public":
                tag_rows += [
                    {"tag": tag, "status_id": post_id, "account_id": author}
                    for tag in text.hashtags(post.caption)
                ]
            for account_id in self.mentioned(post.caption):
                mention_rows.append({"status_id": post_id, "account_id": account_id})
                notes.append((account_id, "mention", author, post_id))
        await self.insert(
            shard,
            [
                (statuses, status_rows),
                (media_attachments, media_rows),
                (media_objects, object_rows),
                (status_tags, tag_rows),
                (status_mentions, mention_rows),
            ],
        )

    async def write_last_status(self) -> None:
        by_shard: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for author, when in self.last_status.items():
            by_shard[self.shard[author]].append({"account": self.ids[author], "when": when})
        stmt = (
            update(accounts)
            .where(accounts.c.id == bindparam("account"))
            .values(last_status_at=bindparam("when"))
        )

        async def write(shard: int, rows: list[dict[str, Any]]) -> None:
            async with self.router.begin(shard) as conn:
                await conn.execute(stmt, rows)

        await self.per_shard(by_shard, write)

    # --- comments and likes ----------------------------------------------------------------

    def posts_by_shard(self, has: Callable[[PlannedPost], int]) -> dict[int, list[int]]:
        by_shard: dict[int, list[int]] = defaultdict(list)
        for index, post in enumerate(self.plan.posts):
            if has(post):
                by_shard[self.shard[post.author]].append(index)
        return by_shard

    async def comments(self) -> None:
        notes: list[Note] = []

        async def write(shard: int, indices: list[int]) -> None:
            plan = self.plan
            async with self.router.begin(shard) as conn:
                made = iter(
                    await reserve_ids(
                        conn, shard, sum(len(plan.posts[i].comments) for i in indices)
                    )
                )
                rows, mention_rows = [], []
                for index in indices:
                    post = plan.posts[index]
                    post_id, owner = self.post_ids[index], self.ids[post.author]
                    ids: list[int] = []
                    for number, comment in enumerate(post.comments):
                        id_ = next(made)
                        ids.append(id_)
                        author = self.ids[comment.author]
                        if comment.parent is None:
                            parent, parent_author = post_id, owner
                        else:
                            parent = ids[comment.parent]
                            parent_author = self.ids[post.comments[comment.parent].author]
                        rows.append(
                            {
                                "id": id_,
                                "account_id": author,
                                "post_id": post_id,
                                "post_account_id": owner,
                                "in_reply_to_id": parent,
                                "in_reply_to_account_id": parent_author,
                                "text": comment.text,
                                "spoiler_text": "",
                                "sensitive": False,
                                "visibility": self.visibility(post.author),
                                "language": None,
                                "media_ids": [],
                                "application": None,
                                "replies_count": sum(c.parent == number for c in post.comments),
                            }
                        )
                        # As do_comment: those named are mentioned, and the author of what
                        # it answers is notified as if named.
                        for account_id in self.mentioned(comment.text):
                            mention_rows.append({"status_id": id_, "account_id": account_id})
                            notes.append((account_id, "mention", author, id_))
                        notes.append((parent_author, "mention", author, id_))
                await conn.execute(insert(statuses), rows)
                if mention_rows:
                    await conn.execute(insert(status_mentions), mention_rows)

        by_shard = self.posts_by_shard(lambda p: len(p.comments))
        await self.per_shard(
            by_shard, write, "comments", lambda g: sum(len(self.plan.posts[i].comments) for i in g)
        )
        await self.notify(notes)

    async def likes(self) -> None:
        mirrors: dict[int, list[dict[str, Any]]] = defaultdict(list)
        notes: list[Note] = []

        async def write(shard: int, indices: list[int]) -> None:
            plan = self.plan
            async with self.router.begin(shard) as conn:
                made = iter(
                    await reserve_ids(conn, shard, sum(len(plan.posts[i].likers) for i in indices))
                )
                rows = []
                for index in indices:
                    post_id, owner = self.post_ids[index], self.ids[plan.posts[index].author]
                    for liker in plan.posts[index].likers:
                        id_, account_id = next(made), self.ids[liker]
                        rows.append({"id": id_, "status_id": post_id, "account_id": account_id})
                        mirrors[self.shard[liker]].append(
                            {"id": id_, "account_id": account_id, "target_id": post_id}
                        )
                        notes.append((owner, "favourite", account_id, post_id))
                await conn.execute(insert(favourites), rows)

        by_shard = self.posts_by_shard(lambda p: len(p.likers))
        await self.per_shard(
            by_shard, write, "likes", lambda g: sum(len(self.plan.posts[i].likers) for i in g)
        )

        async def write_mirror(shard: int, rows: list[dict[str, Any]]) -> None:
            await self.insert(shard, [(account_favourites, rows)])

        await self.per_shard(mirrors, write_mirror)
        await self.notify(notes)


class _StoreWorker:
    """In a worker process: the media store, and the processed photos to copy into it."""

    def __init__(self, settings: Settings, variants: list[list[processing.Variant]]) -> None:
        self.settings = settings
        self.variants = variants

    async def store(self, copies: list[tuple[int, int]]) -> int:
        # Each object is a file written and synced by a thread: many at once keep the
        # disk busy (the default pool has a few threads a core).
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(STORE_THREADS))
        store = open_store(self.settings)

        async def put(item: tuple[int, processing.Variant]) -> None:
            media_id, variant = item
            key = object_key(media_id, variant.name, variant.extension)
            written = await store.put(key, variant.data)
            if written.md5_hex != variant.md5 or written.size != variant.size:
                raise DemoError(f"store {store.name!r} wrote {key} differently")

        objects = [(m, v) for m, photo in copies for v in self.variants[photo]]
        try:
            await _each(objects, put, concurrency=STORE_THREADS, stage="", progress=_no_progress)
        finally:
            await store.close()
        return len(copies)


_worker: _StoreWorker | None = None


def _start_store_worker(settings: Settings, variants: list[list[processing.Variant]]) -> None:
    global _worker
    _worker = _StoreWorker(settings, variants)


def _store_copies(copies: list[tuple[int, int]]) -> int:
    """In a worker process: store each (media ID, photo) copy's objects; how many copies."""
    assert _worker is not None
    return asyncio.run(_worker.store(copies))


async def write_in_bulk(
    runtime: Runtime, plan: Plan, password: str, progress: Progress = _no_progress
) -> list[int]:
    """Carry ``plan`` out in batches per shard (see the module docstring); the account IDs."""
    writer = BulkWriter(runtime, plan, progress)
    async with runtime.invalidating() as changed:
        await writer.write(await hash_password(runtime.settings, password))
        # Written past the actions, which invalidate what they change: an account read
        # (and cached) while this ran may since have gained its last post's time.
        changed.update(k for i in writer.ids for k in (account_key(i), account_counters_key(i)))
    return writer.ids
