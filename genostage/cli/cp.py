"""``genostage cp SRC DST``: one object or a whole prefix, either direction, or S3 to S3."""
from __future__ import annotations

import argparse
import logging
import sys
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
    if "-" in (args.src, args.dst):
        return _stream(args)
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


def _stream(args: argparse.Namespace) -> int:
    """``cp - DST`` (stdin, uploaded as it comes) and ``cp SRC -`` (stdout, in order), verified."""
    from ..location import Location
    from ..store.pipe import ReaderGone
    from ..transfer.stream import StreamUpload

    if args.src == args.dst:
        raise UsageError("cp - -: copy from a store to stdout, or from stdin to a store")
    stores = stores_from(args)
    started = time.monotonic()
    with stop_on_signals() as cancel:
        if args.src == "-":
            dst = parse(args.dst)
            if dst.is_prefix:
                raise UsageError(f"cp - {args.dst}: stdin becomes one object; name it (not a prefix ending in /)")
            upload = StreamUpload(stores, dst, stores.config, cancel=cancel, show_progress=args.progress,
                                  label=f"cp - {dst.name}")
            try:
                upload.send(sys.stdin.fileno())
                result = upload.commit()
            except BaseException:
                upload.abort()
                raise
        else:
            src = parse(args.src)
            if src.is_prefix:
                raise UsageError(f"cp {args.src} -: stdout takes one object, not a prefix")
            info = stores.for_location(src).stat(src)
            transfer = Transfer(stores, stores.config, cancel=cancel, show_progress=args.progress)
            try:
                result = transfer.copy(info, Location("pipe", path="<stdout>", fd=sys.stdout.fileno()),
                                       label=f"cp {src.name} -")
            except ReaderGone as gone:  # the reader had what it wanted (| head): not an error
                log.info("%s", gone)
                return 0
    seconds = max(time.monotonic() - started, 1e-6)
    log.info("copied %s (%s/s), verified by %s", format_size(result.size), format_size(result.size / seconds),
             result.verified or "size")
    return 0
