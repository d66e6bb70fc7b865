"""``genostage gather bam PART... -o OUT``: concatenate BAM parts without recompression."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..errors import UsageError
from ..store import Stores
from ..units import format_size

log = logging.getLogger("genostage.cli.gather")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("gather", help="concatenate chunk outputs (BAM: without recompression, like samtools cat)")
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    b = kinds.add_parser("bam", help="concatenate BAM parts whose headers agree")
    b.add_argument("parts", nargs="+", metavar="PART", help="BAM files or s3:// objects, in order")
    b.add_argument("-o", "--output", required=True, help="output BAM, or - for stdout")
    b.set_defaults(func=_gather_bam)


def _gather_bam(args: argparse.Namespace) -> int:
    from ..split.bam_gather import gather_bam, gather_to_file

    if args.output.startswith("s3://"):
        raise UsageError("gather writes a local file or stdout (-o -); upload it with genostage cp")
    stores = Stores()
    if args.output == "-":
        stats = gather_bam(args.parts, sys.stdout.buffer, stores)
        sys.stdout.buffer.flush()
    else:
        stats = gather_to_file(args.parts, args.output, stores)
    log.info("gathered %d parts: %s written, %d blocks copied, %d re-encoded", stats["parts"],
             format_size(stats["bytes_written"]), stats["blocks_copied"], stats["blocks_reencoded"])
    return 0
