"""Fixtures for the cache tests: a moto server that counts the bytes it serves, and a fresh bucket on it."""
from __future__ import annotations

import json
import uuid
from typing import Iterator, Tuple

import pytest

from genostage.testing.counting import CountingApp, counting_moto_server
from genostage.testing.s3server import LocalS3


@pytest.fixture(scope="session")
def counting_server() -> Iterator[Tuple[LocalS3, CountingApp]]:
    with counting_moto_server() as pair:
        yield pair


@pytest.fixture
def counting(counting_server, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """(server, counting app, client, bucket): environment set so child processes reach the server."""
    server, app = counting_server
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    client = server.client()
    bucket = f"cache-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    app.delay, app.delay_from = 0.0, 0
    yield server, app, client, bucket
    app.delay, app.delay_from = 0.0, 0


def manifest_of(client, bucket: str, key: str) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
