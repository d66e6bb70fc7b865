"""``genostage plan`` (make a chunk plan) and ``genostage chunk`` (fetch one chunk of a plan)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from ..errors import UsageError
from ..location import parse
from ..store import Stores
from ..units import format_size
from .common import OneLineParser, one_line_errors
from .split import count
from .split_bam import add_cut_options

log = logging.getLogger("genostage.cli.plan")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("plan", help="make a chunk plan for a BAM or FASTQ (local or s3://) from a few ranged reads")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", parser_class=OneLineParser)
    kinds.required = True
    b = kinds.add_parser("bam", help="plan BAM chunks")
    b.add_argument("uri", help="BAM file or s3:// object")
    add_cut_options(b, "chunk")
    b.add_argument("--index", help="the .bai/.csi (default: URI.bai, URI.csi)")
    b.add_argument("--by-name", action="store_true", help="never separate records with the same QNAME")
    b.add_argument("--threads", type=int, default=1, help="inflate threads for --records")
    b.add_argument("-o", "--output", required=True, help="plan file (local or s3://)")
    b.set_defaults(func=_plan_bam)
    f = kinds.add_parser("fastq", help="plan (BGZF) FASTQ chunks, paired when given two files")
    f.add_argument("uris", nargs="+", metavar="URI", help="FASTQ file(s) or s3:// object(s); two for pairs")
    f.add_argument("--parts", required=True, metavar="N", help="number of chunks")
    f.add_argument("-o", "--output", required=True, help="plan file (local or s3://)")
    f.set_defaults(func=_plan_fastq)
    register_chunk(subparsers)


def register_chunk(subparsers: Any) -> None:
    c = subparsers.add_parser("chunk", help="write chunk I of a plan as a whole BAM/FASTQ file (ranged reads only)")
    one_line_errors(c)
    c.add_argument("plan", help="plan file (local or s3://)")
    c.add_argument("--index", default=None, metavar="I",
                   help="chunk index (default: $AWS_BATCH_JOB_ARRAY_INDEX)")
    c.add_argument("-o", "--output", default="-", help="output file, or - for stdout (default)")
    c.add_argument("-2", "--output2", metavar="FILE", help="R2 output of a paired FASTQ plan")
    c.set_defaults(func=_chunk)


def _save(plan: Any, args: argparse.Namespace, stores: Stores) -> int:
    from ..split.plan import save

    save(plan, args.output, stores)
    log.info("plan %s: %d chunks, read %s from the source", args.output, len(plan.chunks), format_size(plan.bytes_read))
    return 0


def _plan_bam(args: argparse.Namespace) -> int:
    from ..split.bam import make_plan

    stores = Stores()
    counters = stores.for_location(parse(args.uri)).counters
    before = counters.snapshot()["bytes_read"]
    runs = None
    if args.by_reference or args.regions or args.equal_bases:
        from ..split.bam_index import index_runs

        runs = index_runs(args.uri, stores, index_uri=args.index, by_reference=args.by_reference,
                          regions=args.regions, equal_bases=args.equal_bases)
    plan = make_plan(args.uri, stores, parts=args.parts, records=args.records, size=args.bytes,
                     by_name=args.by_name, threads=args.threads, runs=runs)
    plan.bytes_read = counters.snapshot()["bytes_read"] - before  # index scans included
    return _save(plan, args, stores)


def _plan_fastq(args: argparse.Namespace) -> int:
    from ..split.plan import kind_module

    if len(args.uris) > 2:
        raise UsageError("plan fastq takes one FASTQ, or two for paired reads")
    parts = count(args.parts, "--parts", sizes=False)
    stores = Stores()
    plan = kind_module("fastq").make_plan(args.uris, parts, stores)
    return _save(plan, args, stores)


def chunk_index(value: "str | int | None") -> int:
    """``--index``, else ``$AWS_BATCH_JOB_ARRAY_INDEX``: a whole number from 0."""
    if value is None:
        value = os.environ.get("AWS_BATCH_JOB_ARRAY_INDEX")
        if value is None:
            raise UsageError("no --index given and AWS_BATCH_JOB_ARRAY_INDEX is not set")
        what = "AWS_BATCH_JOB_ARRAY_INDEX"
    else:
        what = "--index"
    text = str(value).strip()
    if not text.isdigit():
        raise UsageError(f"{what}: expected a chunk index (0, 1, 2...), got {value!r}")
    return int(text)


def _chunk(args: argparse.Namespace) -> int:
    from ..split.plan import fetch_chunk, load, write_chunk

    if args.output.startswith("s3://"):
        raise UsageError("chunk writes a local file or stdout (-o -), not an s3:// object")
    stores = Stores()
    index = chunk_index(args.index)
    plan = load(args.plan, stores)
    if args.output == "-":
        if args.output2:
            raise UsageError("a paired chunk cannot go to stdout: give -o FILE and -2 FILE")
        stats = write_chunk(plan, index, sys.stdout.buffer, stores)
        sys.stdout.buffer.flush()
    else:
        stats = fetch_chunk(plan, index, args.output, stores, dest2=args.output2)
    log.info("chunk %d: %s", index, json.dumps({k: v for k, v in stats.items() if k != "path"}))
    return 0
