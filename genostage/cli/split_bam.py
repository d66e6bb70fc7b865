"""``genostage split bam``: valid BAM parts by block copy (registered by ``genostage.cli.split``)."""
from __future__ import annotations

import argparse
import logging
from typing import Any

from ..store import Stores
from ..units import format_size, parse_size

log = logging.getLogger("genostage.cli.split_bam")


def add_cut_options(p: Any, noun: str) -> None:
    """How a BAM is cut (one of them required): shared by ``split bam`` and ``plan bam``."""
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--parts", type=int, help=f"number of {noun}s of about equal compressed size")
    how.add_argument("--records", type=int, help=f"records per {noun} (inflates the whole file)")
    how.add_argument("--bytes", type=parse_size, help=f"compressed bytes per {noun} (e.g. 256M)")
    how.add_argument("--by-reference", action="store_true", help=f"one {noun} per reference (needs .bai/.csi)")
    how.add_argument("--regions", metavar="FILE", help=f"one {noun} per region of a BED or chr:beg-end file (.bai/.csi)")
    how.add_argument("--equal-bases", type=int, metavar="N", help=f"N {noun}s covering equal genomic lengths (.bai/.csi)")


def register_bam(subparsers: Any) -> None:
    """Add the ``bam`` parser to the sub-subparsers of ``genostage split``."""
    p = subparsers.add_parser("bam", help="split a BAM into valid BAM files; whole blocks copied, edges re-encoded")
    p.add_argument("input", help="BAM file or s3:// object")
    p.add_argument("--out-dir", required=True, help="directory for the parts (NAME.partNNN.bam)")
    add_cut_options(p, "part")
    p.add_argument("--by-name", action="store_true", help="never separate records with the same QNAME")
    p.add_argument("--index", help="the .bai/.csi (default: INPUT.bai, INPUT.csi or INPUT without .bam + .bai)")
    p.add_argument("--threads", type=int, default=1, help="parts written (and blocks inflated) in parallel")
    p.add_argument("--level", type=int, default=6, help="deflate level of the re-encoded edge blocks")
    p.set_defaults(func=_split_bam)


def _split_bam(args: argparse.Namespace) -> int:
    from ..split.bam import split_bam

    stores = Stores()
    runs = None
    if args.by_reference or args.regions or args.equal_bases:
        from ..split.bam_index import index_runs

        runs = index_runs(args.input, stores, index_uri=args.index, by_reference=args.by_reference,
                          regions=args.regions, equal_bases=args.equal_bases)
    report = split_bam(args.input, args.out_dir, stores, parts=args.parts, records=args.records, size=args.bytes,
                       by_name=args.by_name, threads=max(1, args.threads), level=args.level, runs=runs)
    for part in report["parts"]:
        log.debug("%s: %s", part["path"], format_size(part["bytes_written"]))
    log.info("%d parts in %s; read %s, wrote %s", len(report["parts"]), args.out_dir,
             format_size(report["bytes_read"]), format_size(report["bytes_written"]))
    return 0
