"""Mastodon.py, a standard client library, used against photogram exactly as against Mastodon."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mastodon import Mastodon

from tests.api import PASSWORD
from tests.server import running_server


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(tmp_path_factory.mktemp("mastodon-py")) as url:
        yield url


def _signed_up(base_url: str, username: str, tmp_path: Path) -> Mastodon:
    client_id, client_secret = Mastodon.create_app(
        "photogram tests", api_base_url=base_url, scopes=["read", "write", "follow"]
    )
    api = Mastodon(
        client_id=client_id,
        client_secret=client_secret,
        api_base_url=base_url,
        version_check_mode="created",
    )
    api.create_account(
        username,
        PASSWORD,
        f"{username}@example.com",
        agreement=True,
        scopes=["read", "write", "follow"],
    )
    # A fresh log-in, as an app would do on another device.
    again = Mastodon(
        client_id=client_id,
        client_secret=client_secret,
        api_base_url=base_url,
        version_check_mode="created",
    )
    # The test server speaks plain HTTP on loopback; Mastodon.py wants this said explicitly.
    again.log_in(
        f"{username}@example.com", PASSWORD, scopes=["read", "write", "follow"], allow_http=True
    )
    return again


def test_mastodon_py_works_unchanged(base_url: str, tmp_path: Path) -> None:
    alice = _signed_up(base_url, "alice", tmp_path)
    bob = _signed_up(base_url, "bob", tmp_path)

    assert alice.verify_minimum_version("4.0.0", cached=True)
    me = alice.account_verify_credentials()
    assert me.username == "alice"
    bob_id = bob.account_verify_credentials().id

    relationship = alice.account_follow(bob_id)
    assert relationship.following is True
    (rel,) = alice.account_relationships([bob_id])
    assert rel.following is True
    assert rel.id == bob_id

    assert bob.account(bob_id).followers_count == 1
    assert [a.username for a in bob.account_followers(bob_id)] == ["alice"]
    assert alice.account_lookup("bob").id == bob_id
    assert [a.username for a in alice.account_search("bo")] == ["bob"]

    alice.account_unfollow(bob_id)
    assert alice.account_relationships([bob_id])[0].following is False
    assert alice.instance().version.startswith("4.3.0")
    alice.revoke_access_token(allow_http=True)
