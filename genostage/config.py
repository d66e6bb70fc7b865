"""One validated settings object for transfers (units and memory cost documented)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlsplit

from .errors import UsageError
from .retry import RetryPolicy
from .units import parse_size

MiB = 1024 * 1024


@dataclass
class TransferConfig:
    """How genostage moves bytes.

    Memory cost: at most ``concurrency x part_size`` bytes of part buffers are
    held at once (uploads; with the defaults, 10 x 16 MiB = 160 MiB); downloads stream each
    part to disk as it arrives, through one 256 KiB receive buffer.

    - ``concurrency``: worker threads (objects and parts in flight), 1..256.
    - ``part_size``: bytes per multipart part (uploads), 5 MiB..5 GiB, and the smallest
      ranged GET.
    - ``download_part_size``: the smallest ranged GET of a download streamed to disk
      (default 64 MiB: each GET costs a server more than its bytes, a whole-object read
      on some; objects whose only checksum is an MD5 use ``part_size``, to hash in order).
    - ``multipart_threshold``: objects at least this large move in parts.
    - ``max_attempts`` and ``retry_budget``: a request (or a part) that fails in a way a retry
      may cure (5xx, throttling, resets, timeouts, corrupted bytes) is tried again, with
      jittered exponential backoff, up to ``max_attempts`` tries within ``retry_budget``
      seconds (:class:`genostage.retry.RetryPolicy`); missing objects and access denied are
      never retried.
    - ``low_speed_limit`` / ``low_speed_time``: a request whose bytes move slower than
      ``low_speed_limit`` bytes/s for ``low_speed_time`` seconds fails as a timeout (and is retried).
    - ``sign``: sign requests (credentials required); False for public buckets
      (``--no-sign-request``).
    - ``endpoint_url``: any S3-compatible endpoint, ``http://host:port`` or ``https://host``
      (default ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``); a URL without its scheme
      is refused (see :func:`check_endpoint_url`).
    - ``sse`` / ``sse_kms_key_id``: server-side encryption of uploads.
    - ``requester_pays``: send ``RequestPayer=requester``.
    - ``verify``: checksum every transfer end to end (on by default).
    - ``checksum_algorithm``: the full-object checksum sent with uploads.
    """

    concurrency: int = 10
    part_size: int = 16 * MiB
    multipart_threshold: int = 16 * MiB
    download_part_size: int = 64 * MiB
    max_attempts: int = 10
    retry_budget: float = 60.0
    low_speed_limit: int = 1024
    low_speed_time: float = 10.0
    sign: bool = True
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    sse: Optional[str] = None
    sse_kms_key_id: Optional[str] = None
    requester_pays: bool = False
    verify: bool = True
    checksum_algorithm: str = "crc64nvme"
    extra: dict = field(default_factory=dict)

    def retry_policy(self) -> RetryPolicy:
        """The one retry policy of every request and part these settings govern."""
        return RetryPolicy(max_attempts=self.max_attempts, budget=self.retry_budget)

    def __post_init__(self) -> None:
        self.part_size = parse_size(self.part_size)
        self.multipart_threshold = parse_size(self.multipart_threshold)
        self.download_part_size = parse_size(self.download_part_size)
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) \
                or not 1 <= self.concurrency <= 256:
            raise UsageError(f"concurrency must be a whole number 1..256, got {self.concurrency!r}")
        if not 5 * MiB <= self.part_size <= 5 * 1024**3:
            raise UsageError(f"part size must be 5 MiB..5 GiB (S3's limits for a part), got {self.part_size} bytes")
        if self.download_part_size < 1:
            raise UsageError(f"download part size must be at least 1 byte, got {self.download_part_size}")
        if self.max_attempts < 1:
            raise UsageError("max_attempts must be at least 1")
        if self.sse not in (None, "AES256", "aws:kms"):
            raise UsageError(f"--sse must be AES256 or aws:kms, got {self.sse!r}")
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise UsageError("--sse-kms-key-id needs --sse aws:kms")
        if self.sse_kms_key_id and not self.sse_kms_key_id.isascii():
            raise UsageError(f"--sse-kms-key-id must be an ASCII key id, alias or ARN, got {self.sse_kms_key_id!r}")
        if self.endpoint_url is not None:
            self.endpoint_url = check_endpoint_url(self.endpoint_url, "endpoint URL")
        else:
            for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
                if os.environ.get(name):
                    self.endpoint_url = check_endpoint_url(os.environ[name], name)
                    break


def check_endpoint_url(url: str, what: str = "endpoint URL") -> str:
    """``url`` when it is an ``http://`` or ``https://`` URL with a host (and a valid port);
    else :class:`UsageError` in one line naming ``what`` (the option or the variable).

    A URL without its scheme (``127.0.0.1:5123``) is refused with the spelling to use: taken
    as ``https://`` it would fail later with a TLS error against a plain-HTTP server."""
    text = url.strip()
    if text != url or any(c.isspace() for c in text):
        raise UsageError(f"{what} {url!r} contains white space")
    if text == "":
        raise UsageError(f"{what} is empty (expected http://host:port or https://host)")
    if "://" not in text:
        raise UsageError(f"{what} {text!r} has no scheme: write http://{text} "
                         f"(or https://{text} when the server speaks TLS)")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        hint = " (an S3 URI is not an endpoint: the endpoint is the server, e.g. http://127.0.0.1:9000)" \
            if scheme == "s3" else ""
        raise UsageError(f"{what} {text!r}: the scheme must be http or https, not {parts.scheme!r}{hint}")
    if not parts.hostname:
        raise UsageError(f"{what} {text!r} has no host (expected {scheme}://host:port)")
    try:
        parts.port
    except ValueError:
        raise UsageError(f"{what} {text!r}: the port must be a number 0-65535") from None
    if parts.query or parts.fragment:
        raise UsageError(f"{what} {text!r}: an endpoint has no query or fragment (expected {scheme}://host:port)")
    return text
