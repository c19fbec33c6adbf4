"""Captions and comments: the hashtags and @mentions in them, and the HTML clients show.

Statuses are stored as the plain text that was written; HTML is made when they are
shown, so a change to how it is made (or a renamed account) never needs a migration.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote

MAX_TAG = 100

# A hashtag starts after a space or punctuation (not inside a word, URL or another tag)
# and holds at least one letter, so "#1" or "C#" are not tags.
HASHTAG = re.compile(r"(?<![\w/#&])#(\w*[^\W\d]\w*)")
# A local mention: @name, or @name@domain (the domain is checked by the caller).
MENTION = re.compile(r"(?<![\w/@])@([A-Za-z0-9_]{1,30})(?:@([A-Za-z0-9.-]+\.[A-Za-z]{2,}))?")
TOKENS = re.compile(f"{HASHTAG.pattern}|{MENTION.pattern}")


def normalise_tag(name: str) -> str:
    return name.lower()


def hashtags(text: str) -> list[str]:
    """The distinct hashtags of ``text``, lower-cased, in order of first use."""
    found = (normalise_tag(m.group(1)) for m in HASHTAG.finditer(text))
    return list(dict.fromkeys(t for t in found if len(t) <= MAX_TAG))


@dataclass(frozen=True)
class Mention:
    username: str
    domain: str | None


def mentions(text: str) -> list[Mention]:
    """The distinct @mentions of ``text`` in order of first use (usernames as written)."""
    seen: dict[tuple[str, str | None], Mention] = {}
    for match in MENTION.finditer(text):
        domain = match.group(2).lower() if match.group(2) else None
        seen.setdefault((match.group(1).lower(), domain), Mention(match.group(1), domain))
    return list(seen.values())


def _pieces(text: str) -> Iterator[tuple[str, re.Match[str] | None]]:
    at = 0
    for match in TOKENS.finditer(text):
        yield text[at : match.start()], None
        yield match.group(0), match
        at = match.end()
    yield text[at:], None


def to_html(
    text: str, base_url: str, mentioned: Mapping[str, str], is_local: Callable[[str], bool]
) -> str:
    """``text`` as Mastodon-style HTML: escaped, paragraphs and line breaks, hashtags
    linked to their tag page and @mentions of ``mentioned`` (lower-cased username ->
    profile URL) linked to the account; anything else stays text."""
    paragraphs = [p for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    out = []
    for paragraph in paragraphs:
        parts = []
        for piece, match in _pieces(paragraph):
            if match is None:
                parts.append(html.escape(piece).replace("\n", "<br>"))
            elif match.group(1) is not None:  # a hashtag
                tag = match.group(1)
                href = f"{base_url}/tags/{quote(normalise_tag(tag))}"
                parts.append(
                    f'<a href="{html.escape(href)}" class="mention hashtag" rel="tag">'
                    f"#<span>{html.escape(tag)}</span></a>"
                )
            else:
                username, domain = match.group(2), match.group(3)
                url = mentioned.get(username.lower())
                if url is None or (domain is not None and not is_local(domain)):
                    parts.append(html.escape(piece))
                else:
                    parts.append(
                        f'<span class="h-card"><a href="{html.escape(url)}" class="u-url mention">'
                        f"@<span>{html.escape(username)}</span></a></span>"
                    )
        out.append(f"<p>{''.join(parts)}</p>")
    return "".join(out)
