"""What an operator sees of requests: IDs, metrics by route, database time by shard, logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from photogram.observe import JsonFormatter, TextFormatter
from tests.api import api_client
from tests.conftest import sqlite_settings


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text output (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and line.split(" ")[0] == f"{name}{{{wanted}}}":
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Lines(logging.Handler):
    """Log lines as JSON, formatted as they are logged (within the request)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


async def test_requests_are_counted_by_route_and_carry_an_id(tmp_path: Path) -> None:
    async with api_client(sqlite_settings(tmp_path)) as client:
        alice = await client.sign_up("alice")
        route = "/api/v1/accounts/{id:int}"
        before = sample(
            (await client.get("/metrics")).text,
            "photogram_http_requests_total",
            method="GET",
            route=route,
            status="200",
        )
        access = logging.getLogger("photogram.access")
        lines = Lines()
        access.addHandler(lines)
        access.setLevel(logging.INFO)
        try:
            mine = await client.get(
                f"/api/v1/accounts/{alice.id}", headers={"X-Request-Id": "given-by-nginx-42"}
            )
            theirs = await client.get(f"/api/v1/accounts/{alice.id}")
            missing = await client.get("/no/such/path", headers={"X-Request-Id": "bad id!"})
        finally:
            access.removeHandler(lines)
        assert mine.headers["x-request-id"] == "given-by-nginx-42"
        assert len(theirs.headers["x-request-id"]) == 16
        # An ID a client sends that does not look like one is replaced, not echoed.
        assert missing.headers["x-request-id"] != "bad id!"

        published = (await client.get("/metrics")).text
        assert (
            sample(
                published,
                "photogram_http_requests_total",
                method="GET",
                route=route,
                status="200",
            )
            == before + 2
        )
        assert sample(
            published,
            "photogram_http_requests_total",
            method="GET",
            route="unmatched",
            status="404",
        )
        assert 'photogram_http_request_seconds_bucket{le="0.005",method="GET"' in published
        # Database time is counted per shard (an account's reads hit its home shard).
        shard = int(alice.id) >> 10 & 0x1FFF
        assert sample(
            published, "photogram_db_statements_total", database="global", shard=str(shard)
        )
        line = lines.lines[0]
        assert line["request_id"] == "given-by-nginx-42"
        assert (line["route"], line["status"], line["method"]) == (route, 200, "GET")


def test_log_formats_carry_the_request_id() -> None:
    from photogram.observe import REQUEST_ID

    record = logging.LogRecord(
        "photogram.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None
    )
    token = REQUEST_ID.set("abc123def456")
    try:
        as_json = json.loads(JsonFormatter().format(record))
        as_text = TextFormatter().format(record)
    finally:
        REQUEST_ID.reset(token)
    assert as_json["request_id"] == "abc123def456"
    assert as_json["message"] == "hello you"
    assert as_json["level"] == "warning"
    assert "[abc123def456] hello you" in as_text
