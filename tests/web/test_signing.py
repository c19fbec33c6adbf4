from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from photogram.web.signing import WINDOW_SECONDS, sign, verify

SECRET = "s" * 40


def _parts(url: str) -> tuple[str, str, str]:
    split = urlsplit(url)
    query = parse_qs(split.query)
    return split.path, query["expires"][0], query["signature"][0]


def test_a_signed_url_verifies_until_it_expires() -> None:
    url = sign(SECRET, "/media/p/a/b.jpg", ttl=600, now=1_000_000)
    path, expires, signature = _parts(url)
    assert verify(SECRET, path, expires, signature, now=1_000_000)
    assert verify(SECRET, path, expires, signature, now=1_000_600)
    assert not verify(SECRET, path, expires, signature, now=int(expires) + 1)


def test_urls_are_stable_within_a_window() -> None:
    start = 10 * WINDOW_SECONDS + 1
    assert sign(SECRET, "/x", 600, now=start) == sign(SECRET, "/x", 600, now=start + 100)


@given(st.text(min_size=1, max_size=40), st.text(max_size=30))
def test_tampering_fails(path: str, other: str) -> None:
    url = sign(SECRET, "/media/p/" + path, ttl=600, now=0)
    query = parse_qs(url[len("/media/p/" + path) + 1 :])
    expires, signature = query["expires"][0], query["signature"][0]
    assert verify(SECRET, "/media/p/" + path, expires, signature, now=0)
    assert not verify("another secret", "/media/p/" + path, expires, signature, now=0)
    assert not verify(SECRET, "/media/p/" + path + "x", expires, signature, now=0)
    assert not verify(SECRET, "/media/p/" + path, str(int(expires) + 1), signature, now=0)
    assert not verify(SECRET, "/media/p/" + path, expires, other, now=0) or other == signature
    assert not verify(SECRET, "/media/p/" + path, None, signature, now=0)
    assert not verify(SECRET, "/media/p/" + path, "abc", signature, now=0)
