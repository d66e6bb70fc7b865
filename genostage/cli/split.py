"""``genostage split fastq ...`` (and ``split bam`` when genostage.cli.split_bam exists)."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import re
import signal
import sys
from typing import Any, Iterator, Optional

from ..errors import UsageError
from ..units import parse_size
from .common import OneLineParser, add_transfer_options, stores_from

log = logging.getLogger("genostage.cli.split")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("split", help="split FASTQ (or BAM) files into chunks",
                                   description="Split sequencing files into contiguous chunks.")
    subsub = parser.add_subparsers(dest="split_kind", metavar="KIND", parser_class=OneLineParser)
    subsub.required = True
    register_fastq(subsub)
    try:  # `split bam` lives in its own module, added by the BAM splitter
        bam = importlib.import_module(f"{__package__}.split_bam")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.split_bam":
            raise
    else:
        bam.register_bam(subsub)


def count(text: Optional[str], option: str, sizes: bool = True) -> Optional[int]:
    """A count of at least 1 from the command line (``1M``, ``2G`` allowed when ``sizes``)."""
    if text is None:
        return None
    bare = text.strip()
    try:
        if bare.isdigit():
            value = int(bare)
        elif sizes and re.fullmatch(r"[0-9]+(\.[0-9]+)?\s*[A-Za-z]+", bare):
            value = parse_size(bare)
        else:
            raise ValueError(text)
    except (UsageError, ValueError):
        raise UsageError(f"{option}: expected a whole number of at least 1"
                         f"{' (or 1M, 2G)' if sizes else ''}, got {text!r}") from None
    if value < 1:
        raise UsageError(f"{option}: expected a whole number of at least 1, got {text!r}")
    return value


def register_fastq(subsub: Any) -> None:
    p = subsub.add_parser(
        "fastq", help="split one or two (paired) FASTQ files",
        description="Split FASTQ (plain, gzip or BGZF; local or s3://, streamed) into chunks of "
                    "contiguous records named PREFIX.part-NNNN[.R1|.R2].fastq[.gz].")
    p.add_argument("inputs", nargs="+", metavar="FASTQ", help="R1 [R2] (paths or s3:// URIs)")
    p.add_argument("--out-dir", "-O", required=True,
                   help="directory for the chunk files, or an s3:// prefix (uploaded, verified)")
    rule = p.add_mutually_exclusive_group(required=True)
    rule.add_argument("--parts", "-p", metavar="N", help="N balanced chunks")
    rule.add_argument("--records", "-n", metavar="N", help="records (pairs) per chunk")
    rule.add_argument("--bases", metavar="N", help="bases per chunk (R1's for paired input; 1G, 500M ok)")
    rule.add_argument("--bytes", dest="nbytes", metavar="SIZE",
                      help="uncompressed FASTQ bytes per chunk (R1's for paired input), e.g. 1G")
    p.add_argument("--interleaved", action="store_true", help="the input is interleaved: keep each pair in one chunk")
    p.add_argument("--compress", choices=("auto", "none", "gzip", "bgzf"), default="auto",
                   help="output compression (default: as the input)")
    p.add_argument("--level", default="6", metavar="L", help="compression level, zlib scale 0-9 (default 6)")
    p.add_argument("--threads", "-j", default="2", metavar="T", help="compression threads (default 2)")
    p.add_argument("--prefix", help="chunk name prefix (default: the input name without extensions)")
    p.add_argument("--summary", metavar="FILE", help="write the summary as JSON to FILE")
    add_transfer_options(p)
    p.set_defaults(func=run_fastq)


def _whole(text: str, option: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise UsageError(f"{option}: expected a whole number from {low} to {high}, got {text!r}")
    return value


@contextlib.contextmanager
def _signals(handler: Any) -> Iterator[None]:
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def run_fastq(args: argparse.Namespace) -> int:
    from ..split.fastq import Stop, split_fastq

    parts = count(args.parts, "--parts", sizes=False)
    records = count(args.records, "--records")
    bases = count(args.bases, "--bases")
    nbytes = count(args.nbytes, "--bytes")
    level = _whole(args.level, "--level", 0, 9)
    threads = _whole(args.threads, "--threads", 1, 256)
    stores = stores_from(args)
    stop = Stop()
    with _signals(stop.signal):  # SIGTERM/SIGINT: every file of the run removed, exit 128+N
        summary = split_fastq(args.inputs, args.out_dir, parts=parts, records=records, bases=bases,
                              nbytes=nbytes, interleaved=args.interleaved, compress=args.compress,
                              level=level, threads=threads, prefix=args.prefix, stores=stores,
                              progress=args.progress, summary_path=args.summary, stop=stop)
        if log.isEnabledFor(logging.INFO):
            print(summary.text(), file=sys.stderr)
    return 0


__all__ = ["count", "register", "register_fastq"]
