"""Small helpers shared by the tests."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, Optional, Sequence


def genostage(args: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 120,
              **kwargs: object) -> subprocess.CompletedProcess:
    """Run the genostage CLI in a child process (as a container entrypoint would)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "genostage", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, **kwargs)  # type: ignore[call-overload]


def put(client, bucket: str, key: str, data: bytes) -> None:  # type: ignore[no-untyped-def]
    client.put_object(Bucket=bucket, Key=key, Body=data)


def get(client, bucket: str, key: str) -> bytes:  # type: ignore[no-untyped-def]
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(client, bucket: str, prefix: str = "") -> list:  # type: ignore[no-untyped-def]
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))
