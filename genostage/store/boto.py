"""A boto3 S3 client configured like genostage's transfers, for code that wants one (tests,
tools next to genostage). genostage's own data and control requests go through
:mod:`genostage.store.wire`; an injected boto3 client only lends its credentials and region."""
from __future__ import annotations

from typing import Any, Dict, Optional

from ..config import TransferConfig


def make_client(config: Optional[TransferConfig] = None) -> Any:
    """A boto3 S3 client sized for ``config.concurrency``, pointed at ``config.endpoint_url``,
    retrying transient errors in botocore's standard mode; request and response checksums
    are left to the caller, so S3-compatible servers without the newest headers work."""
    import boto3
    from botocore.config import Config

    config = config or TransferConfig()
    s3_opts: Dict[str, Any] = {}
    if config.endpoint_url:
        s3_opts["addressing_style"] = "path"
    bcfg = Config(
        max_pool_connections=config.concurrency + 4,
        retries={"mode": "standard", "max_attempts": config.max_attempts},
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        s3=s3_opts,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        tcp_keepalive=True,
    )
    session = boto3.session.Session()
    region = config.region or session.region_name or "us-east-1"
    return session.client("s3", endpoint_url=config.endpoint_url, region_name=region, config=bcfg)
