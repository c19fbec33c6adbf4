"""Schema-based fuzzing: every operation in /openapi.json, against a real running server.

schemathesis generates requests from the OpenAPI document photogram serves (valid ones
and hostile ones) and checks that no response is a 5xx and that every response matches
the document: its status is documented, its body fits the documented schema.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from tests.api import PASSWORD, bearer
from tests.posts.support import PHOTO
from tests.server import running_server

EXAMPLES = int(os.environ.get("PHOTOGRAM_FUZZ_EXAMPLES", "30"))


@dataclass
class Server:
    url: str
    headers: dict[str, str]
    #: Real IDs (and tags) by what they name, for path parameters: the generated ones
    #: almost never exist, and the code behind a real one would go unexercised.
    real: dict[str, list[str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        tmp_path_factory.mktemp("fuzz"),
        rate_limit_per_token="1000000",
        rate_limit_per_ip="1000000",
    ) as url:
        yield _set_up(url)


def _set_up(url: str) -> Server:
    """A signed-up user's token with every scope, so fuzzing reaches past authentication,
    and something real for it to reach: posts, comments, likes and photos of its own and
    of someone else's."""
    with httpx.Client(base_url=url) as http:
        app = http.post(
            "/api/v1/apps",
            data={
                "client_name": "fuzz",
                "redirect_uris": "urn:ietf:wg:oauth:2.0:oob",
                "scopes": "read write follow push",
            },
        ).json()
        client = {"client_id": app["client_id"], "client_secret": app["client_secret"]}
        app_token = http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "read write follow push", **client},
        ).json()["access_token"]
        tokens = {}
        # The fuzzing user, and someone to follow, block and look up.
        for username in ("fuzzer", "target"):
            created = http.post(
                "/api/v1/accounts",
                headers={"Authorization": f"Bearer {app_token}"},
                data={
                    "username": username,
                    "email": f"{username}@example.com",
                    "password": PASSWORD,
                    "agreement": "true",
                },
            )
            assert created.status_code == 200, created.text
            tokens[username] = created.json()["access_token"]
        fuzzer, target = bearer(tokens["fuzzer"]), bearer(tokens["target"])

        def call(headers: dict[str, str], method: str, path: str, **kwargs: Any) -> Any:
            response = http.request(method, path, headers=headers, **kwargs)
            assert response.status_code == 200, f"{method} {path}: {response.text}"
            return response.json()

        def upload(headers: dict[str, str]) -> str:
            files = {"file": ("photo.jpg", PHOTO, "image/jpeg")}
            return str(call(headers, "POST", "/api/v2/media", files=files)["id"])

        def post(headers: dict[str, str], caption: str) -> str:
            body = {"status": caption, "media_ids": [upload(headers)]}
            return str(call(headers, "POST", "/api/v1/statuses", json=body)["id"])

        def reply(headers: dict[str, str], on: str) -> str:
            body = {"status": "a comment", "in_reply_to_id": on}
            return str(call(headers, "POST", "/api/v1/statuses", json=body)["id"])

        accounts = [
            str(call(h, "GET", "/api/v1/accounts/verify_credentials")["id"])
            for h in (fuzzer, target)
        ]
        call(fuzzer, "POST", f"/api/v1/accounts/{accounts[1]}/follow")
        mine = post(fuzzer, "Mine #photo #fuzz")
        theirs = post(target, "Theirs #photo")
        comments = [reply(target, mine), reply(fuzzer, theirs)]
        call(fuzzer, "POST", f"/api/v1/statuses/{theirs}/favourite")
        call(fuzzer, "POST", f"/api/v1/statuses/{theirs}/bookmark")
        call(target, "POST", f"/api/v1/statuses/{mine}/favourite")
        # Deleting is for good: DELETE gets posts of its own to delete (and one it may not).
        doomed = [post(fuzzer, f"Doomed {n}") for n in range(3)]
        notified = call(fuzzer, "GET", "/api/v1/notifications")
        assert notified, "a like and a comment notify the fuzzing user"
        real = {
            "notifications": [str(n["id"]) for n in notified],
            "accounts": accounts,
            "statuses": [mine, theirs, *comments, *doomed],
            "doomed": [*doomed, comments[1], theirs],
            "media": [upload(fuzzer)],
            "hashtag": ["photo", "fuzz", "none"],
        }
        return Server(url, fuzzer, real)


def _pool(server: Server, method: str, path: str, name: str) -> list[str]:
    """The real values a path parameter may take (none: keep the generated one)."""
    if name == "hashtag":
        return server.real["hashtag"]
    if path.startswith("/api/v1/statuses/"):
        return server.real["doomed" if method == "DELETE" else "statuses"]
    if path.startswith(("/api/v1/accounts/", "/api/v1/follow_requests/")):
        return server.real["accounts"]
    if path.startswith("/api/v1/media/"):
        return server.real["media"]
    return server.real.get(path.split("/")[3], [])


def _use_real(case: schemathesis.Case, server: Server, pick: int) -> None:
    """Point ``case`` at real data: its path parameters, and a comment's parent."""
    method, path = case.operation.method.upper(), case.operation.path
    for name in list(case.path_parameters or {}):
        pool = _pool(server, method, path, name)
        if pool:
            case.path_parameters[name] = pool[pick % len(pool)]
    if path == "/api/v1/statuses" and isinstance(case.body, dict) and "in_reply_to_id" in case.body:
        statuses = server.real["statuses"]
        case.body["in_reply_to_id"] = statuses[pick % len(statuses)]


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def test_no_server_errors_and_responses_match_the_schema(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    failures: list[str] = []
    answered: dict[str, set[int]] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(
                case=operation.as_strategy(generation_mode=mode),
                real=st.booleans(),
                pick=st.integers(min_value=0, max_value=1000),
            )
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def fuzz(case: schemathesis.Case, real: bool, pick: int) -> None:
                if real:
                    _use_real(case, server, pick)
                response = case.call_and_validate(
                    base_url=server.url, headers=server.headers, checks=CHECKS
                )
                answered.setdefault(case.operation.label, set()).add(response.status_code)

            try:
                fuzz()
            except Unsatisfiable:
                # An operation without parameters has no invalid input to generate.
                assert mode is GenerationMode.NEGATIVE
                assert not operation.path_parameters
            except Exception as exc:  # collect every operation's failure, then report all
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
    # Each operation on a status was reached with a real one, and did its work at least once.
    on_real = [o.label for o in operations if o.path.startswith("/api/v1/statuses/{id}")]
    assert len(on_real) >= 12
    on_real.append("GET /api/v1/notifications/{id}")
    unreached = [label for label in on_real if 200 not in answered.get(label, set())]
    assert not unreached, f"never answered 200: {unreached}"
