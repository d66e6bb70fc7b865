"""One validated settings object for transfers (units and memory cost documented)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from .errors import UsageError
from .retry import RetryPolicy
from .units import parse_size

MiB = 1024 * 1024


@dataclass
class TransferConfig:
    """How genostage moves bytes.

    Memory cost: at most ``concurrency x part_size`` bytes of part buffers are
    held at once (uploads) and ``concurrency x io_chunk`` (downloads, which stream
    each part to disk); with the defaults, 10 x 16 MiB = 160 MiB.

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
    - ``endpoint_url``: any S3-compatible endpoint (also ``AWS_ENDPOINT_URL``).
    - ``sse`` / ``sse_kms_key_id``: server-side encryption of uploads.
    - ``requester_pays``: send ``RequestPayer=requester``.
    - ``verify``: checksum every transfer end to end (on by default).
    - ``checksum_algorithm``: the full-object checksum sent with uploads.
    """

    concurrency: int = 10
    part_size: int = 16 * MiB
    multipart_threshold: int = 16 * MiB
    download_part_size: int = 64 * MiB
    io_chunk: int = 1 * MiB
    max_attempts: int = 10
    retry_budget: float = 60.0
    low_speed_limit: int = 1024
    low_speed_time: float = 30.0
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
        if not 1 <= self.concurrency <= 256:
            raise UsageError(f"concurrency must be 1..256, got {self.concurrency}")
        if not 5 * MiB <= self.part_size <= 5 * 1024**3:
            raise UsageError(f"part size must be 5 MiB..5 GiB, got {self.part_size}")
        if self.max_attempts < 1:
            raise UsageError("max_attempts must be at least 1")
        if self.sse not in (None, "AES256", "aws:kms"):
            raise UsageError(f"--sse must be AES256 or aws:kms, got {self.sse!r}")
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise UsageError("--sse-kms-key-id needs --sse aws:kms")
        if self.sse_kms_key_id and not self.sse_kms_key_id.isascii():
            raise UsageError(f"--sse-kms-key-id must be an ASCII key id, alias or ARN, got {self.sse_kms_key_id!r}")
        if self.endpoint_url is None:
            self.endpoint_url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
