"""``genostage split fastq ...`` (and ``split bam`` when genostage.cli.split_bam exists)."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any

from ..units import parse_size
from .common import add_transfer_options, stores_from

log = logging.getLogger("genostage.cli.split")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("split", help="split FASTQ (or BAM) files into chunks",
                                   description="Split sequencing files into contiguous chunks.")
    subsub = parser.add_subparsers(dest="split_kind", metavar="KIND")
    subsub.required = True
    register_fastq(subsub)
    try:  # `split bam` lives in its own module, added by the BAM splitter
        bam = importlib.import_module(f"{__package__}.split_bam")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.split_bam":
            raise
    else:
        bam.register_bam(subsub)


def _positive(text: str) -> int:
    value = int(parse_size(text))
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register_fastq(subsub: Any) -> None:
    p = subsub.add_parser(
        "fastq", help="split one or two (paired) FASTQ files",
        description="Split FASTQ (plain, gzip or BGZF; local or s3://, streamed) into chunks of "
                    "contiguous records named PREFIX.part-NNNN[.R1|.R2].fastq[.gz].")
    p.add_argument("inputs", nargs="+", metavar="FASTQ", help="R1 [R2] (paths or s3:// URIs)")
    p.add_argument("--out-dir", "-O", required=True, help="directory for the chunk files")
    rule = p.add_mutually_exclusive_group(required=True)
    rule.add_argument("--parts", "-p", type=_positive, help="N balanced chunks")
    rule.add_argument("--records", "-n", type=_positive, help="records (pairs) per chunk")
    rule.add_argument("--bases", type=_positive, help="bases per chunk (R1's for paired input; 1G, 500M ok)")
    rule.add_argument("--bytes", dest="nbytes", type=_positive,
                      help="uncompressed FASTQ bytes per chunk (R1's for paired input), e.g. 1G")
    p.add_argument("--interleaved", action="store_true", help="the input is interleaved: keep each pair in one chunk")
    p.add_argument("--compress", choices=("auto", "none", "gzip", "bgzf"), default="auto",
                   help="output compression (default: as the input)")
    p.add_argument("--level", type=int, default=6, help="compression level, zlib scale 1-9 (default 6)")
    p.add_argument("--threads", "-j", type=int, default=2, help="compression threads (default 2)")
    p.add_argument("--prefix", help="chunk name prefix (default: the input name without extensions)")
    p.add_argument("--summary", metavar="FILE", help="write the summary as JSON to FILE")
    add_transfer_options(p)
    p.set_defaults(func=run_fastq)


def run_fastq(args: argparse.Namespace) -> int:
    from ..split.fastq import split_fastq

    stores = stores_from(args)
    summary = split_fastq(args.inputs, args.out_dir, parts=args.parts, records=args.records, bases=args.bases,
                          nbytes=args.nbytes, interleaved=args.interleaved, compress=args.compress,
                          level=args.level, threads=args.threads, prefix=args.prefix, stores=stores,
                          progress=args.progress, summary_path=args.summary)
    if log.isEnabledFor(logging.INFO):
        print(summary.text(), file=sys.stderr)
    return 0


__all__ = ["register", "register_fastq"]
