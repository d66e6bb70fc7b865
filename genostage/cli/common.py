"""Options shared by the commands that move bytes (``run``, ``cp``, ``split fastq``), and the
checks that turn a bad number or size into one line and exit status 2."""
from __future__ import annotations

import argparse
import sys
from typing import List, NoReturn, Optional, Sequence, Tuple

from ..config import MiB, TransferConfig, check_endpoint_url
from ..errors import UsageError
from ..store import Stores
from ..units import format_size, parse_size

CONCURRENCY = (1, 256)
PART_SIZE = (5 * MiB, 5 * 1024**3)  # S3's limits for one part


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line (``genostage: split fastq: --parts: expected ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.replace("genostage ", "", 1)
        self.exit(2, f"genostage: {where}: {' '.join(message.split())} (see --help)\n")


class CommandTailParser(OneLineParser):
    """A :class:`OneLineParser` that keeps everything after the first ``--`` as it is
    (``command``), inner ``--`` included: the genostage run arguments a job definition holds."""

    def parse_known_args(self, args: Optional[Sequence[str]] = None,  # type: ignore[override]
                         namespace: Optional[argparse.Namespace] = None) -> Tuple[argparse.Namespace, List[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        tail: Optional[List[str]] = None
        if "--" in argv:
            cut = argv.index("--")
            argv, tail = argv[:cut], argv[cut + 1:]
        ns, extras = super().parse_known_args(argv, namespace)
        if hasattr(ns, "command"):
            ns.command = tail
        elif tail is not None:
            extras += ["--", *tail]
        return ns, extras


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make a parser made by another's ``add_parser`` report usage errors in one line."""
    parser.__class__ = OneLineParser
    return parser


def add_transfer_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("transfer")
    g.add_argument("--endpoint-url", metavar="URL",
                   help="any S3-compatible endpoint, http://host:port or https://host (default: $AWS_ENDPOINT_URL)")
    g.add_argument("--concurrency", default="10", metavar="N", help="parts and objects in flight, 1-256 (default 10)")
    g.add_argument("--part-size", metavar="SIZE",
                   help="multipart part size and ranged GET size, 5MiB-5GiB "
                        "(default: 16MiB parts, GETs of at least 64MiB)")
    g.add_argument("--sse", choices=("AES256", "aws:kms"), help="server-side encryption of uploads")
    g.add_argument("--sse-kms-key-id", metavar="ID", help="KMS key for --sse aws:kms")
    g.add_argument("--requester-pays", action="store_true", help="accept requester-pays charges")
    g.add_argument("--no-sign-request", dest="sign", action="store_false",
                   help="send requests unsigned, without credentials (public buckets)")
    g.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip end-to-end checksum verification (not recommended)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar or lines")


def whole_number(text: "str | int", option: str, low: int = 1, high: Optional[int] = None) -> int:
    """``text`` as a whole number in ``low..high``; else :class:`UsageError` naming ``option``."""
    span = f"{low}..{high}" if high is not None else f"at least {low}"
    try:
        value = int(str(text).strip())
    except ValueError:
        raise UsageError(f"{option} takes a whole number ({span}), not {text!r}") from None
    if value < low or (high is not None and value > high):
        raise UsageError(f"{option} must be {span}, got {value}")
    return value


def size_option(text: str, option: str, low: int = 0, high: Optional[int] = None, why: str = "") -> int:
    """``text`` as a size (``8MiB``) in ``low..high`` bytes; else :class:`UsageError` naming ``option``
    (and ``why`` the range is what it is)."""
    try:
        value = parse_size(text)
    except UsageError as exc:
        raise UsageError(f"{option}: {exc}") from None
    if value < low or (high is not None and value > high):
        span = f"{_size(low)}..{_size(high)}" if high is not None else f"at least {_size(low)}"
        raise UsageError(f"{option} must be {span}{why}, got {text} ({value} bytes)")
    return value


def _size(n: int) -> str:
    """5242880 -> '5MiB' (a size as it is written on the command line)."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return format_size(n)


def count_type(text: str) -> int:
    """An ``argparse`` type for counts (``--parts``, ``--records``; ``4k`` and ``1M`` work): a
    whole number of at least 1, or the error argparse prints in one line with exit status 2."""
    try:
        value = parse_size(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("a size", "a count")) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def size_type(text: str) -> int:
    """An ``argparse`` type for sizes (``--bytes 256M``): the error is parse_size's own line
    ("a size cannot be negative: '-1'"), not argparse's "invalid parse_size value"."""
    try:
        return parse_size(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def config_from(args: argparse.Namespace) -> TransferConfig:
    """The transfer settings the options ask for; a bad value is one :class:`UsageError` line."""
    concurrency = whole_number(args.concurrency, "--concurrency", *CONCURRENCY)
    endpoint = check_endpoint_url(args.endpoint_url, "--endpoint-url") if args.endpoint_url is not None else None
    config = TransferConfig(concurrency=concurrency, endpoint_url=endpoint, sse=args.sse,
                            sse_kms_key_id=args.sse_kms_key_id, requester_pays=args.requester_pays,
                            verify=args.verify, sign=args.sign)
    if args.part_size:  # sets the part size, the multipart threshold and the smallest ranged GET
        size = size_option(args.part_size, "--part-size", *PART_SIZE, why=" (S3's limits for a part)")
        config.part_size = config.multipart_threshold = config.download_part_size = size
    return config


def stores_from(args: argparse.Namespace) -> Stores:
    return Stores(config_from(args))
