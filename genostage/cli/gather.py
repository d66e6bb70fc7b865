"""``genostage gather KIND PART... -o OUT``: one verified output from the parts of a scatter.

``bam`` (``--cat``, the default: block copy; ``--merge``: samtools merge of per-part sorted BAMs),
``vcf`` (bcftools-concat-like, ``--index tbi|csi``), ``fastq`` and ``text``. Parts are local paths
or ``s3://`` URIs, globs included (``s3://b/out/part*.bam``, natural order); OUT is a local path,
``-`` (stdout) or an ``s3://`` URI (gathered into a local temporary file, then uploaded, verified).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, List

from ..errors import FormatError, GenostageError, UsageError
from ..fsutil import os_error, write_atomic
from ..location import parse
from ..units import format_size
from ..cancel import stop_on_signals
from .common import add_transfer_options, stores_from

log = logging.getLogger("genostage.cli.gather")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("gather", help="gather the parts of a scatter into one verified output (BAM, VCF, "
                                             "FASTQ, text)",
                              description="Gather parts (local or s3://, globs in natural order) into one output "
                                          "(local, - for stdout, or s3://), verified and written atomically.")
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    b = _kind(kinds, "bam", "BAM parts: block copy of parts in order (--cat, default) or samtools merge (--merge)")
    how = b.add_mutually_exclusive_group()
    how.add_argument("--cat", dest="how", action="store_const", const="cat",
                     help="concatenate parts that are in order (a split's parts), no recompression (default)")
    how.add_argument("--merge", dest="how", action="store_const", const="merge",
                     help="merge per-part sorted BAMs (by coordinate or name, from @HD SO) with samtools merge")
    b.add_argument("--no-crc-check", dest="crc", action="store_false",
                   help="--cat: copy the parts' blocks without inflating them to check their CRC32 (and so "
                        "without counting the records)")
    b.add_argument("--engine", choices=("auto", "pysam", "binary"), default="auto",
                   help="--merge: pysam's samtools, or the samtools binary (default: pysam when importable)")
    b.add_argument("--level", type=int, default=6, help="deflate level of the blocks written (default 6)")
    b.add_argument("--recompress", action="store_true",
                   help="--merge: samtools writes uncompressed blocks and genostage compresses them with ISA-L on "
                        "--threads threads (faster; the output is 10-25%% larger than samtools' own)")
    b.set_defaults(func=_gather, how="cat")
    v = _kind(kinds, "vcf", "bgzipped VCF/BCF parts in region order (as bcftools concat)")
    v.add_argument("--index", choices=("tbi", "csi"), help="also write OUT.tbi or OUT.csi (bcftools index)")
    v.add_argument("--engine", choices=("auto", "pysam", "binary"), default="auto",
                   help="--index: pysam's bcftools, or the bcftools binary (default: pysam when importable)")
    v.set_defaults(func=_gather, how="concat")
    f = _kind(kinds, "fastq", "FASTQ parts (plain, gzip or BGZF, all alike), each validated as it is copied")
    f.set_defaults(func=_gather, how="cat")
    t = _kind(kinds, "text", "text parts, a header shared by all parts written once")
    t.add_argument("--header", default="auto", metavar="auto|first|none|N",
                   help="auto (default): leading '#' lines, else a first line every part shares, must be the same in "
                        "all parts; first: the first part's header, the others' dropped; none; N: the first N lines")
    t.set_defaults(func=_gather, how="cat")


def _kind(kinds: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    k = kinds.add_parser(name, help=help_text, description=help_text)
    k.add_argument("parts", nargs="+", metavar="PART", help="parts in order: paths, s3:// URIs or globs of either")
    k.add_argument("-o", "--output", required=True, help="output: a local path, - for stdout, or s3://bucket/key")
    k.add_argument("--threads", type=int, default=2, help="threads for checking, merging and counting (default 2)")
    k.add_argument("--expect", type=int, metavar="N",
                   help="refuse (exit 11, nothing written) unless the output holds N records (BAM: primary records)")
    k.add_argument("--tmp-dir", metavar="DIR",
                   help="where s3:// parts and an s3:// output are held (default: the scratch root)")
    k.add_argument("--summary", metavar="FILE", help="write what was gathered (counts per part) as JSON to FILE")
    add_transfer_options(k)
    return k


def _named(exc: GenostageError, names: Dict[str, str]) -> GenostageError:
    """``exc`` with the downloaded parts' local paths put back as the URIs the user gave."""
    if not names:
        return exc
    if isinstance(exc, FormatError):
        message = exc.message
        for path, uri in names.items():
            message = message.replace(path, uri)
        return FormatError(message, path=names.get(exc.path or "", exc.path), fmt=exc.fmt, line=exc.line,
                           record=exc.record, offset=exc.offset)
    return exc


def _command_line(args: argparse.Namespace) -> str:
    words = ["genostage", "gather", args.kind]
    if args.kind == "bam" and args.how == "merge":
        words.append("--merge")
    return " ".join(words + list(args.parts) + ["-o", args.output])


def _gather(args: argparse.Namespace) -> int:
    from ..job.scratch import default_root
    from ..split.gather import expand_parts, fetch_parts, gather, gather_stream, publish

    rule = f"{args.kind}={args.how}"
    out = args.output
    if out != "-" and (out.endswith("/") or (not out.startswith("s3://") and os.path.isdir(out))):
        raise UsageError(f"-o {out}: a directory or prefix; give the output file's path or key")
    if out == "-" and getattr(args, "index", None):
        raise UsageError("--index needs an output file, not stdout")
    stores = stores_from(args)
    parts = expand_parts(args.parts, stores)
    remote_out = out.startswith("s3://")
    needs_local = rule != "bam=cat" and any(p.startswith("s3://") for p in parts)
    tmp = None
    try:
        if remote_out or needs_local:
            root = args.tmp_dir or default_root()
            try:
                tmp = tempfile.mkdtemp(prefix="genostage-gather-", dir=root)
            except OSError as exc:
                raise os_error(exc, root) from None
        options = dict(stores=stores, threads=args.threads, crc=getattr(args, "crc", True),
                       command_line=_command_line(args), header=getattr(args, "header", "auto"),
                       engine=getattr(args, "engine", "auto"), level=getattr(args, "level", 6), expect=args.expect,
                       recompress=getattr(args, "recompress", False))
        names = {}
        with stop_on_signals() as cancel:
            if needs_local:
                assert tmp is not None
                os.makedirs(os.path.join(tmp, "parts"))
                local = fetch_parts(parts, os.path.join(tmp, "parts"), stores, args.progress, cancel)
                names = {path: uri for path, uri in zip(local, parts) if path != uri}
                parts = local
        try:
            if out == "-":
                res = gather_stream(rule, parts, sys.stdout.buffer, **options)  # type: ignore[arg-type]
                sys.stdout.buffer.flush()
            else:
                dest = os.path.join(tmp, parse(out).name) if remote_out and tmp else out
                res = gather(rule, parts, dest, index=getattr(args, "index", None), **options)  # type: ignore[arg-type]
        except GenostageError as exc:
            raise _named(exc, names) from None
        if remote_out:
            files: List[str] = [res.path] + ([res.index] if res.index else [])
            uris = [out] + ([f"{out}.{args.index}"] if res.index else [])
            with stop_on_signals() as cancel:
                publish(files, uris, stores, args.progress, cancel)
            res.path, res.index = out, (uris[1] if res.index else None)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    c = res.counts
    if c is None:
        what = "records not counted (--no-crc-check)"
    else:
        what = f"{c.records} records ({c.primary} primary)" if args.kind == "bam" else f"{c.records} records"
    log.info("gathered %d parts (%s): %s, %s written to %s%s", len(parts), rule, what, format_size(res.bytes_written),
             res.path, f" (index {res.index})" if res.index else "")
    if args.summary:
        write_atomic(args.summary, (json.dumps(res.to_json(), indent=1) + "\n").encode())
    return 0
