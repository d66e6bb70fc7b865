"""Transient faults (503 SlowDown, connections dropped mid-body) are retried; permanent ones are not."""
from __future__ import annotations

import os

import pytest

from genostage.config import TransferConfig
from genostage.errors import AccessDenied, NotFound
from genostage.store import Stores
from genostage.store.boto import make_client
from genostage.transfer import copy

from .faultproxy import FaultProxy
from .helpers import put

MiB = 1 << 20


def test_transient_faults_are_retried(s3, s3_client, bucket, tmp_path):
    data = os.urandom(23 * MiB)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    for i in range(6):
        put(s3_client, bucket, f"small/{i}.txt", b"%d" % i * 100)
    with FaultProxy(s3.endpoint_url, error_every=4, cut_every=2) as proxy:
        cfg = TransferConfig(endpoint_url=proxy.url, part_size=5 * MiB, multipart_threshold=5 * MiB,
                             download_part_size=5 * MiB,
                             concurrency=3, max_attempts=6)
        stores = Stores(cfg, make_client(cfg))
        copy(str(src), f"s3://{bucket}/big.bin", stores=stores)
        copy(f"s3://{bucket}/big.bin", str(tmp_path / "back.bin"), stores=stores)
        copy(f"s3://{bucket}/small/", str(tmp_path / "small") + "/", stores=stores)
        assert proxy.errors > 0 and proxy.cuts > 0
    assert (tmp_path / "back.bin").read_bytes() == data
    assert (tmp_path / "small" / "5.txt").read_bytes() == b"5" * 100


def test_permanent_errors_are_not_retried(s3, bucket, tmp_path):
    with FaultProxy(s3.endpoint_url, error_every=10**9, cut_every=10**9) as proxy:
        cfg = TransferConfig(endpoint_url=proxy.url, max_attempts=5)
        stores = Stores(cfg, make_client(cfg))
        with pytest.raises(NotFound):
            copy(f"s3://{bucket}/missing.bam", str(tmp_path / "x"), stores=stores)
        assert proxy.requests <= 3  # HEAD object, HEAD bucket: no retries


@pytest.mark.parametrize("s3", ["rclone"], indirect=True)
def test_access_denied_is_reported(s3, bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")  # rclone serve s3 checks its auth keys
    cfg = TransferConfig(endpoint_url=s3.endpoint_url, max_attempts=1)
    stores = Stores(cfg, make_client(cfg))
    with pytest.raises(AccessDenied, match="x.bam"):
        copy(f"s3://{bucket}/x.bam", str(tmp_path / "x"), stores=stores)
    assert not (tmp_path / "x").exists()
