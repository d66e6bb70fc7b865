"""``genostage cp SRC DST``: one object or a whole prefix, either direction, or S3 to S3."""
from __future__ import annotations

import argparse
import logging
import time

from ..cancel import stop_on_signals
from ..errors import UsageError
from ..location import parse
from ..transfer import Transfer, expand_lazily
from ..units import format_size
from .common import add_transfer_options, stores_from

log = logging.getLogger("genostage.cp")


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("cp", help="copy one object or a whole prefix (verified, atomic)",
                       description="Copy SRC to DST: s3://bucket/key, s3://bucket/prefix/ (every object under it) "
                                   "or a local path, in either direction or S3 to S3. A SRC ending in / copies "
                                   "everything under it (there is no --recursive); a DST ending in / is a "
                                   "directory/prefix. Every copy is verified end to end.")
    p.add_argument("src")
    p.add_argument("dst")
    # not options: there only to answer with the spelling genostage uses (aws s3 cp's habit)
    p.add_argument("-r", "--recursive", "-R", dest="recursive", action="store_true", help=argparse.SUPPRESS)
    add_transfer_options(p)
    p.set_defaults(func=run)


def recursive_hint(src: str, dst: str) -> str:
    """The one line for ``cp --recursive``: a trailing / is how a prefix is copied."""
    prefix = src if src.endswith("/") else src + "/"
    target = dst if dst.endswith("/") else dst + "/"
    return (f"cp has no --recursive: a SRC ending in / copies every object under it: "
            f"genostage cp {prefix} {target}")


def run(args: argparse.Namespace) -> int:
    if args.recursive:
        raise UsageError(recursive_hint(args.src, args.dst))
    src, dst = parse(args.src), parse(args.dst)
    stores = stores_from(args)
    if src.is_prefix and not dst.is_prefix:
        dst = dst.as_prefix()
    started = time.monotonic()
    items = expand_lazily(stores, src, dst, what=args.src)  # copies start with the listing's first page
    with stop_on_signals() as cancel:
        transfer = Transfer(stores, stores.config, cancel=cancel, show_progress=args.progress)
        results = transfer.copy_all(items, label=f"cp {src.name}")
    total = sum(r.size for r in results)
    seconds = max(time.monotonic() - started, 1e-6)  # the whole copy, listing included
    log.info("copied %d object(s), %s (%s/s), verified by %s", len(results), format_size(total),
             format_size(total / seconds), ", ".join(sorted({r.verified or "size" for r in results})))
    return 0
