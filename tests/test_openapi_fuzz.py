"""Schema-based fuzzing: every operation in /openapi.json, against a real running server.

schemathesis generates requests from the OpenAPI document photogram serves (valid ones
and hostile ones) and checks that no response is a 5xx and that every response matches
the document: its status is documented, its body fits the documented schema.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from tests.api import PASSWORD, bearer
from tests.server import running_server

EXAMPLES = int(os.environ.get("PHOTOGRAM_FUZZ_EXAMPLES", "30"))


@dataclass
class Server:
    url: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        tmp_path_factory.mktemp("fuzz"),
        rate_limit_per_token="1000000",
        rate_limit_per_ip="1000000",
    ) as url:
        yield Server(url, _user_headers(url))


def _user_headers(url: str) -> dict[str, str]:
    """A signed-up user's token with every scope, so fuzzing reaches past authentication."""
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
        return bearer(tokens["fuzzer"])


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
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def fuzz(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=server.url, headers=server.headers, checks=CHECKS)

            try:
                fuzz()
            except Unsatisfiable:
                # An operation without parameters has no invalid input to generate.
                assert mode is GenerationMode.NEGATIVE
                assert not operation.path_parameters
            except Exception as exc:  # collect every operation's failure, then report all
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
