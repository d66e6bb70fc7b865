"""``genostage cache ls|du|prune|verify DIR``: look after a node-level reference cache."""
from __future__ import annotations

import argparse
import sys
import time
from typing import List

from ..job.cache import Cache, Entry
from ..errors import ChecksumMismatch
from ..job.scratch import free_bytes
from ..units import format_size, parse_size

EPILOG = """\
ls      every entry, least recently used first: size, last use, the processes using it, URI
du      total size, number of entries, bytes in use by live jobs, free space
prune   remove the least recently used entries no live job uses, down to --max-size
        (default 0: all of them), and leftovers of interrupted downloads
verify  re-read every entry and compare with its recorded CRC64NVME; damaged entries
        are removed (exit status 6 when any was damaged)
"""


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("cache", help="list, measure, prune or verify a node-level reference cache",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("action", choices=("ls", "du", "prune", "verify"))
    p.add_argument("dir", metavar="DIR", help="the cache directory (as given to genostage run --cache)")
    p.add_argument("--max-size", default="0", metavar="SIZE", help="prune: the size to shrink to (default 0)")
    p.set_defaults(func=run)


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
    cache = Cache(args.dir)
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
        removed = cache.prune(parse_size(args.max_size))
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
