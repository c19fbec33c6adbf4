"""Consistent hashing: a server joining or leaving moves its share of the keys, no more."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from photogram.cache import status_key
from photogram.cache.ring import Ring

KEYS = [status_key(i) for i in range(1, 4001)]
ADDRESS = st.builds(
    "{}.{}:{}".format,
    st.sampled_from(["cache", "mc", "10.0.0"]),
    st.integers(1, 254),
    st.integers(1024, 65535),
)
SERVERS = st.lists(ADDRESS, min_size=1, max_size=8, unique=True)


def owners(ring: Ring) -> dict[str, str | None]:
    return {key: ring.server_for(key) for key in KEYS}


def assert_about(share: float, expected: float) -> None:
    # 160 points a server keep each share within some 10% of 1/N; this allows five times that.
    assert expected * 0.5 < share < expected * 1.5, (share, expected)


@settings(max_examples=25, deadline=None)
@given(servers=SERVERS, new=ADDRESS)
def test_a_new_server_takes_about_one_nth_and_only_for_itself(servers: list[str], new: str) -> None:
    assume(new not in servers)
    before, after = owners(Ring(servers)), owners(Ring([*servers, new]))
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(after[key] == new for key in moved)
    assert_about(len(moved) / len(KEYS), 1 / (len(servers) + 1))


@settings(max_examples=25, deadline=None)
@given(servers=SERVERS.filter(lambda s: len(s) >= 2), data=st.data())
def test_a_server_leaving_moves_only_its_own_keys(servers: list[str], data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(servers))
    ring = Ring(servers)
    before, after = owners(ring), owners(ring.without([gone]))
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(before[key] == gone for key in moved)
    assert all(after[key] != gone for key in KEYS)
    assert_about(len(moved) / len(KEYS), 1 / len(servers))
    # …and its keys spread over the survivors rather than all landing on one.
    if len(servers) >= 3:
        assert len({after[key] for key in moved}) > 1


def test_the_order_servers_are_listed_in_does_not_matter() -> None:
    servers = ["a:11211", "b:11211", "c:11211"]
    assert owners(Ring(servers)) == owners(Ring(reversed(servers)))


def test_an_empty_ring_has_no_server() -> None:
    assert Ring([]).server_for(KEYS[0]) is None
