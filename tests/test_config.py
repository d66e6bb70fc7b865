"""TransferConfig: defaults, sizes as strings, the limits S3 sets, and endpoint URLs checked where
they are read (a scheme-less one used to become https:// and fail later with a TLS error)."""
from __future__ import annotations

import pytest

from genostage.config import MiB, TransferConfig, check_endpoint_url
from genostage.errors import UsageError
from genostage.store import Stores


@pytest.fixture(autouse=True)
def _no_endpoint_from_the_environment(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "GENOSTAGE_S3_TRANSPORT"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_and_their_memory_cost():
    c = TransferConfig()
    assert (c.concurrency, c.part_size, c.multipart_threshold, c.download_part_size) == (10, 16 * MiB, 16 * MiB, 64 * MiB)
    assert c.concurrency * c.part_size == 160 * MiB  # what the docstring promises
    assert c.endpoint_url is None and c.verify and c.sign
    assert (c.max_attempts, c.retry_budget) == (10, 60.0)


def test_sizes_may_be_written_as_strings():
    c = TransferConfig(part_size="8MiB", multipart_threshold="100MB", download_part_size="1G")
    assert (c.part_size, c.multipart_threshold, c.download_part_size) == (8 * MiB, 100_000_000, 1 << 30)


@pytest.mark.parametrize("kwargs,reason", [
    (dict(concurrency=0), "concurrency must be a whole number 1..256, got 0"),
    (dict(concurrency=-1), "1..256"),
    (dict(concurrency=257), "1..256"),
    (dict(concurrency="10"), "whole number"),
    (dict(concurrency=True), "whole number"),
    (dict(part_size="1KB"), "5 MiB..5 GiB .*got 1000 bytes"),
    (dict(part_size=5 * MiB - 1), "5 MiB..5 GiB"),
    (dict(part_size="6GiB"), "5 MiB..5 GiB"),
    (dict(part_size="-1"), "cannot be negative"),
    (dict(multipart_threshold="lots"), "not a size"),
    (dict(download_part_size=0), "at least 1 byte"),
    (dict(max_attempts=0), "max_attempts"),
    (dict(sse="AES128"), "AES256 or aws:kms"),
    (dict(sse_kms_key_id="key"), "needs --sse aws:kms"),
    (dict(sse="aws:kms", sse_kms_key_id="clé"), "ASCII"),
])
def test_bad_settings_are_one_usage_error(kwargs, reason):
    with pytest.raises(UsageError, match=reason) as info:
        TransferConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_limits_are_inclusive():
    assert TransferConfig(part_size=5 * MiB, concurrency=1).part_size == 5 * MiB
    assert TransferConfig(part_size="5GiB", concurrency=256).concurrency == 256


def test_one_retry_policy_from_the_settings():
    policy = TransferConfig(max_attempts=3, retry_budget=2.0).retry_policy()
    assert (policy.max_attempts, policy.budget) == (3, 2.0)
    assert policy.delay(3, 0.0) is None  # three tries: no fourth
    assert policy.delay(2, 1.99) is None  # the next wait would end past the budget
    assert policy.delay(1, 1.99) is not None  # but a first try that took the budget gets a second
    assert 0.05 <= (policy.delay(1, 0.0) or 0) < 0.1


@pytest.mark.parametrize("url", ["http://127.0.0.1:5123", "https://s3.eu-west-1.amazonaws.com",
                                 "http://[::1]:9000", "HTTP://localhost:9000", "http://minio:9000/"])
def test_good_endpoint_urls_pass_unchanged(url):
    assert TransferConfig(endpoint_url=url).endpoint_url == url


@pytest.mark.parametrize("url,reason", [
    ("127.0.0.1:5123", "has no scheme: write http://127.0.0.1:5123 "),
    ("localhost:9000", "has no scheme: write http://localhost:9000 "),  # urlsplit reads 'localhost' as a scheme
    ("minio.internal", "has no scheme: write http://minio.internal "),
    ("s3://bucket", "not 's3'.*the endpoint is the server"),
    ("ftp://host", "http or https, not 'ftp'"),
    ("http://", "has no host"),
    ("http://host:99999", "port"),
    ("http://host:port", "port"),
    ("http://host:9000?x=1", "no query"),
    (" http://host:9000", "white space"),
    ("http://ho st", "white space"),
    ("", "empty"),
])
def test_bad_endpoint_urls_are_refused_in_one_line(url, reason):
    with pytest.raises(UsageError, match=reason) as info:
        TransferConfig(endpoint_url=url)
    assert "\n" not in str(info.value)


def test_the_endpoint_comes_from_the_environment_and_is_checked_there_too(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1111")
    assert TransferConfig().endpoint_url == "http://127.0.0.1:1111"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2222")  # the S3-specific one wins
    assert TransferConfig().endpoint_url == "http://127.0.0.1:2222"
    assert TransferConfig(endpoint_url="http://127.0.0.1:3333").endpoint_url == "http://127.0.0.1:3333"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "127.0.0.1:2222")
    with pytest.raises(UsageError, match="AWS_ENDPOINT_URL_S3 '127.0.0.1:2222' has no scheme"):
        TransferConfig()


def test_check_endpoint_url_names_what_it_checks():
    with pytest.raises(UsageError, match="^--endpoint-url '1.2.3.4:80' has no scheme"):
        check_endpoint_url("1.2.3.4:80", "--endpoint-url")


def test_a_checked_endpoint_reaches_a_real_server(s3, s3_client, bucket, monkeypatch):
    """The config's endpoint is what the stores use: a listing through it sees the bucket."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"x")
    from genostage.location import parse

    stores = Stores(TransferConfig(endpoint_url=s3.endpoint_url))
    info = stores.for_location(parse(f"s3://{bucket}/k")).stat(parse(f"s3://{bucket}/k"))
    assert info.size == 1
