"""The Jinja environment of every server-rendered page (the web app's and the OAuth page's),
and the few helpers templates call.

Static files are named with a hash of their contents (``asset``), so a browser may keep
them as long as it likes and still never runs an old script against a new page.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files

from jinja2 import Environment, PackageLoader, StrictUndefined

STATIC_PACKAGE = "photogram.web"
STATIC_DIRECTORY = "static"
STATIC_PREFIX = "/static"

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@cache
def _version(name: str) -> str:
    data = files(STATIC_PACKAGE).joinpath(STATIC_DIRECTORY, name).read_bytes()
    return hashlib.sha256(data).hexdigest()[:12]


def asset(name: str) -> str:
    """The URL of a static file, with its content's hash as a cache buster."""
    return f"{STATIC_PREFIX}/{name}?v={_version(name)}"


def parse_time(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def ago(value: str | datetime, now: datetime | None = None) -> str:
    """How long ago, as a photo app says it: ``now``, ``5m``, ``3h``, ``2d``, ``4w``, then
    the date."""
    moment = parse_time(value)
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 60:
        return "now"
    for unit, size, limit in (("m", 60, 60), ("h", 3600, 24), ("d", 86400, 7), ("w", 604800, 5)):
        if seconds // size < limit:
            return f"{seconds // size}{unit}"
    day = f"{MONTHS[moment.month - 1]} {moment.day}"
    this_year = (now or datetime.now(UTC)).year == moment.year
    return day if this_year else f"{day}, {moment.year}"


def full_time(value: str | datetime) -> str:
    """The date and time for a tooltip and for screen readers."""
    moment = parse_time(value)
    return (
        f"{MONTHS[moment.month - 1]} {moment.day}, {moment.year}, "
        f"{moment.hour:02d}:{moment.minute:02d} UTC"
    )


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 like``, ``2 likes``; ``many`` when adding an s is wrong."""
    word = one if count == 1 else (many or one + "s")
    return f"{count:,} {word}"


templates = Environment(
    loader=PackageLoader("photogram.web", "templates"),
    autoescape=True,  # every value shown may come from a person, an app or a URL
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.globals["asset"] = asset
templates.filters["ago"] = ago
templates.filters["full_time"] = full_time
templates.filters["plural"] = plural
