"""``genostage split bam``: valid BAM parts by block copy (registered by ``genostage.cli.split``)."""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from ..units import format_size, parse_size
from .. import cpu
from ..cancel import stop_on_signals
from .common import add_transfer_options, stores_from

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
    p.add_argument("--out-dir", "-O", required=True,
                   help="directory for the parts (NAME.part-NNNN.bam), or an s3:// prefix (the parts are split into a "
                        "local temporary directory, then uploaded, verified)")
    add_cut_options(p, "part")
    p.add_argument("--by-name", action="store_true", help="never separate records with the same QNAME")
    p.add_argument("--index", help="the .bai/.csi (default: INPUT.bai, INPUT.csi or INPUT without .bam + .bai)")
    p.add_argument("--threads", type=int, default=min(4, cpu.available()),
                   help="parts written (and their blocks checked) in parallel (default: the CPUs, at most 4)")
    p.add_argument("--level", type=int, default=6, help="deflate level of the re-encoded edge blocks")
    p.add_argument("--no-crc-check", dest="crc", action="store_false",
                   help="copy whole blocks without inflating them to check their CRC32 (faster, see the README)")
    p.add_argument("--tmp-dir", metavar="DIR", help="with an s3:// --out-dir: where the parts are written first "
                                                    "(default: the scratch root)")
    add_transfer_options(p)
    p.set_defaults(func=_split_bam)


def _split_bam(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from ..fsutil import os_error
    from ..job.scratch import default_root
    from ..split.bam import split_bam
    from ..split.bam_check import Check

    stores = stores_from(args)
    runs = None
    if args.by_reference or args.regions or args.equal_bases:
        from ..split.bam_index import index_runs

        runs = index_runs(args.input, stores, index_uri=args.index, by_reference=args.by_reference,
                          regions=args.regions, equal_bases=args.equal_bases)
    remote = args.out_dir.startswith("s3://")
    tmp = None
    try:
        out_dir = args.out_dir
        if remote:
            from ..location import parse

            prefix = parse(args.out_dir).as_prefix()  # a malformed URI fails before any work
            root = args.tmp_dir or default_root()
            try:
                tmp = tempfile.mkdtemp(prefix="genostage-split-", dir=root)
            except OSError as exc:
                raise os_error(exc, root) from None
            out_dir = tmp
        report = split_bam(args.input, out_dir, stores, parts=args.parts, records=args.records, size=args.bytes,
                           by_name=args.by_name, threads=max(1, args.threads), level=args.level, runs=runs,
                           check=Check(crc=args.crc))
        if remote:
            from ..split.gather import publish

            paths = [part["path"] for part in report["parts"]]
            with stop_on_signals() as cancel:
                publish(paths, [str(prefix.child(os.path.basename(p))) for p in paths], stores, args.progress, cancel)
            for part in report["parts"]:
                part["path"] = str(prefix.child(os.path.basename(part["path"])))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    for part in report["parts"]:
        log.debug("%s: %s", part["path"], format_size(part["bytes_written"]))
    log.info("%d parts in %s; read %s, wrote %s", len(report["parts"]), args.out_dir,
             format_size(report["bytes_read"]), format_size(report["bytes_written"]))
    return 0
