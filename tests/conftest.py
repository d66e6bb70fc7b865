"""Shared fixtures: real HTTP S3 servers on loopback (moto, and rclone as a second one)."""
from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest

from genostage.config import TransferConfig
from genostage.testing.s3server import LocalS3, moto_server, rclone_server
from genostage.store import Stores


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[LocalS3]:
    with moto_server() as server:
        yield server


@pytest.fixture(scope="session")
def rclone_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    with rclone_server(str(tmp_path_factory.mktemp("rclone-root"))) as server:
        yield server


@pytest.fixture(params=["moto"])
def s3(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> LocalS3:
    """The S3 server a test runs against; environment set so child processes reach it too.

    Tests that should also run against rclone parametrise indirectly:
    ``@pytest.mark.parametrize("s3", ["moto", "rclone"], indirect=True)``.
    """
    server: LocalS3 = request.getfixturevalue(f"{request.param}_s3")
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    return server


@pytest.fixture
def s3_client(s3: LocalS3):  # type: ignore[no-untyped-def]
    return s3.client()


@pytest.fixture
def bucket(s3_client) -> str:  # type: ignore[no-untyped-def]
    """A fresh, empty bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def stores(s3: LocalS3, s3_client) -> Stores:  # type: ignore[no-untyped-def]
    return Stores(TransferConfig(endpoint_url=s3.endpoint_url), s3_client)


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never reach a real AWS account from tests."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID", "genostage-test"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "genostage-test-secret"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(autouse=True)
def _no_armed_exit() -> Iterator[None]:
    """A test must not leave a split's stop watchdog armed: it would end pytest itself
    (``os._exit(143)``) seconds later, in the middle of another test."""
    import threading

    yield
    armed = [t for t in threading.enumerate()
             if isinstance(t, threading.Timer) and not t.finished.is_set()
             and getattr(getattr(t, "function", None), "__name__", "") == "_give_up"]
    for timer in armed:
        timer.cancel()
    assert not armed, "a split's stop watchdog was left armed (call Stop.settled())"
