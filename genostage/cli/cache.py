"""``genostage cache ls|du|prune|verify [DIR]``: look after a node-level reference cache."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional

from ..job.cache import Cache, Entry
from ..errors import ChecksumMismatch, UsageError
from ..fsutil import free_bytes
from ..units import format_size, parse_size

ACTIONS = {  # name: (one-line help, description)
    "ls": ("list the entries", "Every entry, least recently used first: size, last use, the processes "
                               "using it, URI."),
    "du": ("total size and free space", "Total size, number of entries, bytes in use by live jobs, free space."),
    "prune": ("remove unused entries (--max-size SIZE or --all)",
              "Remove the least recently used entries no live job uses, down to --max-size SIZE, or every "
              "one of them with --all (one of the two is required), and leftovers of interrupted downloads."),
    "verify": ("re-read and check every entry", "Re-read every entry and compare it with its recorded "
               "CRC64NVME; damaged entries are removed (exit status 6 when any was damaged)."),
}
EPILOG = "DIR defaults to $GENOSTAGE_CACHE (the variable genostage run --cache reads)."


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("cache", help="list, measure, prune or verify a node-level reference cache",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for name, (short, text) in ACTIONS.items():
        a = actions.add_parser(name, help=short, description=text, epilog=EPILOG)
        a.add_argument("dir", metavar="DIR", nargs="?",
                       help="the cache directory, as given to genostage run --cache (default: $GENOSTAGE_CACHE)")
        if name == "prune":
            limit = a.add_mutually_exclusive_group()
            limit.add_argument("--max-size", metavar="SIZE", help="the size to shrink the cache to (e.g. 200GiB)")
            limit.add_argument("--all", action="store_true", help="remove every entry no live job uses")
    p.set_defaults(func=run, max_size=None, all=False)


def cache_dir(given: Optional[str], action: str) -> str:
    """DIR, else ``$GENOSTAGE_CACHE``, else one line saying that one of them is needed."""
    root = given or os.environ.get("GENOSTAGE_CACHE")
    if not root:
        raise UsageError(f"cache {action}: which cache? give DIR or set GENOSTAGE_CACHE")
    return root


def prune_limit(args: argparse.Namespace) -> int:
    """The size ``prune`` shrinks to: --max-size, or 0 for --all; neither is one line."""
    if args.all:
        return 0
    if args.max_size is None:
        raise UsageError("cache prune needs --max-size SIZE (shrink the cache to SIZE) "
                         "or --all (remove every entry no live job uses)")
    try:
        return parse_size(args.max_size)
    except UsageError as exc:
        raise UsageError(f"--max-size: {exc}") from None


def _age(t: float) -> str:
    seconds = max(0.0, time.time() - t)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n:
            return f"{seconds / n:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _row(e: Entry) -> str:
    users = ",".join(str(p) for p in e.users) if e.users else ("yes" if e.in_use else "-")
    state = "" if e.complete else " (incomplete)"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.last_use))
    return f"{e.key[:12]}  {format_size(e.size):>10}  {when} ({_age(e.last_use)})  {users:<12}  {e.uri}{state}"


def run(args: argparse.Namespace) -> int:
    limit = prune_limit(args) if args.action == "prune" else 0
    cache = Cache(cache_dir(args.dir, args.action))
    cache.check_exists()
    out = sys.stdout
    if args.action == "ls":
        entries = cache.entries()
        out.write(f"{'key':<12}  {'size':>10}  {'last use':<33}  {'users':<12}  uri\n")
        for e in entries:
            out.write(_row(e) + "\n")
        return 0
    if args.action == "du":
        entries = cache.entries()
        total = sum(e.size for e in entries)
        used = sum(e.size for e in entries if e.in_use)
        out.write(f"{format_size(total)} in {len(entries)} entries ({total} bytes); "
                  f"{format_size(used)} in use; {format_size(free_bytes(cache.root))} free on {cache.root}\n")
        return 0
    if args.action == "prune":
        removed = cache.prune(limit)
        for e in removed:
            out.write(f"removed {e.key[:12]}  {format_size(e.size):>10}  {e.uri}\n")
        left = cache.total_size()
        out.write(f"removed {len(removed)} entries ({format_size(sum(e.size for e in removed))}); "
                  f"{format_size(left)} left\n")
        return 0
    results = cache.verify()
    bad: List[str] = []
    for e, problem in results:
        out.write(f"{'ok' if problem is None else 'DAMAGED'}  {e.key[:12]}  {e.uri}"
                  + (f": {problem}" + (" (in use: not removed)" if e.in_use else " (removed)") if problem else "")
                  + "\n")
        if problem:
            bad.append(e.uri)
    if bad:
        raise ChecksumMismatch(f"{len(bad)} of {len(results)} cache entries", "crc64nvme", "recorded value", "different bytes")
    out.write(f"{len(results)} entries verified\n")
    return 0
