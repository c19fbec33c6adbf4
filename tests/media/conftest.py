"""What the media tests share: one S3-protocol server (moto's) per test process, started
when a test first needs it. Tests keep apart by bucket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.media.s3server import s3_server


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint
