"""Options shared by the commands that move bytes."""
from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from typing import Any, Iterator

from ..config import TransferConfig
from ..store import Stores


def add_transfer_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("transfer")
    g.add_argument("--endpoint-url", metavar="URL", help="any S3-compatible endpoint (default: $AWS_ENDPOINT_URL)")
    g.add_argument("--concurrency", type=int, default=10, metavar="N", help="parts and objects in flight (default 10)")
    g.add_argument("--part-size", metavar="SIZE",
                   help="multipart part size and ranged GET size (default: 16MiB parts, GETs of at least 64MiB)")
    g.add_argument("--sse", choices=("AES256", "aws:kms"), help="server-side encryption of uploads")
    g.add_argument("--sse-kms-key-id", metavar="ID", help="KMS key for --sse aws:kms")
    g.add_argument("--requester-pays", action="store_true", help="accept requester-pays charges")
    g.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip end-to-end checksum verification (not recommended)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar or lines")


def config_from(args: argparse.Namespace) -> TransferConfig:
    sizes = {}
    if args.part_size:
        sizes = dict(part_size=args.part_size, multipart_threshold=args.part_size, download_part_size=args.part_size)
    return TransferConfig(concurrency=args.concurrency, **sizes, endpoint_url=args.endpoint_url,
                          sse=args.sse, sse_kms_key_id=args.sse_kms_key_id,
                          requester_pays=args.requester_pays, verify=args.verify)


def stores_from(args: argparse.Namespace) -> Stores:
    return Stores(config_from(args))


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGTERM and SIGINT set (with the signal's number as ``signum``), for a
    :class:`~genostage.transfer.Transfer` to stop on: parts in flight are cancelled, multipart
    uploads aborted and temporary files removed before the command exits 128+N."""
    cancel = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        if not cancel.is_set():
            cancel.signum = signum  # type: ignore[attr-defined]
            cancel.set()

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield cancel
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
