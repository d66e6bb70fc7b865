"""``genostage run``: the generic container entrypoint."""
from __future__ import annotations

import argparse
import logging
import os
from typing import Dict, List

from ..errors import UsageError
from ..job.job import Job
from ..job.scratch import KEEP_POLICIES
from ..job.staging import parse_assignment
from ..job.tool import expand
from .common import add_transfer_options, config_from

log = logging.getLogger("genostage.run")

EPILOG = """\
placeholders: {NAME} in COMMAND becomes the local path of input or output NAME
({{ and }} are literal braces). With --shell, COMMAND is run by bash -c and
values are shell-quoted.

example:
  genostage run -i bam=s3://bucket/sample.bam -i ref=s3://bucket/refs/hg38/ \\
      -o stats=s3://bucket/results/sample.stats.txt --stdout stats \\
      -- samtools stats --reference {ref}/hg38.fa {bam}

exit status: the tool's own status when it fails; 0 on success; 2 usage, 3 not
found, 4 access denied, 5 transfer failed, 6 checksum mismatch, 7 no space,
8 unsafe path, 1 other errors; 128+N when stopped by signal N.
"""


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("run", help="stage inputs, run a tool, publish outputs, clean up",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                       usage="genostage run [OPTIONS] -- COMMAND [ARG]...")
    p.add_argument("-i", "--input", action="append", default=[], metavar="NAME=URI",
                   help="staged before the run; URI: s3://bucket/key, s3://bucket/prefix/ (a directory), or a local path")
    p.add_argument("-o", "--output", action="append", default=[], metavar="NAME=URI",
                   help="{NAME} is the path the tool must write (a directory for a URI ending in /)")
    p.add_argument("-r", "--ref", action="append", default=[], metavar="NAME=URI",
                   help="reference data like --input, but read-only and served from the node cache (--cache)")
    p.add_argument("--stdout", metavar="NAME", help="write the tool's stdout to output NAME")
    p.add_argument("--stderr", metavar="NAME", help="write the tool's stderr to output NAME")
    p.add_argument("--shell", action="store_true", help="run COMMAND with bash -c (values shell-quoted)")
    p.add_argument("--scratch", metavar="DIR",
                   help="scratch root (default: $GENOSTAGE_SCRATCH, else /scratch if writable, else the temp dir)")
    p.add_argument("--keep-scratch", choices=KEEP_POLICIES, default="never")
    p.add_argument("--manifest", metavar="URI", help="where the manifest goes (default: manifest.json beside the first output)")
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="on SIGTERM, SIGKILL the tool this long after forwarding SIGTERM (default 10)")
    c = p.add_argument_group("node cache (for --ref)")
    c.add_argument("--cache", metavar="DIR", default=os.environ.get("GENOSTAGE_CACHE") or None,
                   help="node-level cache shared by concurrent jobs (default: $GENOSTAGE_CACHE; none if unset)")
    c.add_argument("--cache-max-size", metavar="SIZE", default=os.environ.get("GENOSTAGE_CACHE_MAX_SIZE") or None,
                   help="evict least recently used unused entries down to SIZE (default: $GENOSTAGE_CACHE_MAX_SIZE, "
                        "else only as free space requires)")
    c.add_argument("--cache-link", choices=("auto", "reflink", "hardlink", "copy"),
                   default=os.environ.get("GENOSTAGE_CACHE_LINK") or "auto",
                   help="how jobs get cached files (default auto: reflink if possible, else hard link unless root, else copy)")
    add_transfer_options(p)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the tool and its arguments, after --")
    p.set_defaults(func=run)


def _named(values: List[str], option: str) -> Dict[str, str]:
    named: Dict[str, str] = {}
    for text in values:
        name, uri = parse_assignment(text, option)
        if name in named:
            raise UsageError(f"{option} {name} given twice")
        named[name] = uri
    return named


def run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("no command given (expected: genostage run [OPTIONS] -- COMMAND [ARG]...)")
    inputs = _named(args.input, "--input")
    outputs = _named(args.output, "--output")
    refs = _named(args.ref, "--ref")
    both = (set(inputs) & set(outputs)) | (set(refs) & (set(inputs) | set(outputs)))
    if both:
        raise UsageError(f"name used twice (inputs, references, outputs): {', '.join(sorted(both))}")
    for option, name in (("--stdout", args.stdout), ("--stderr", args.stderr)):
        if name is not None and name not in outputs:
            raise UsageError(f"{option} {name}: no output named {name!r} (declare it with -o {name}=URI)")
    cache = None
    if args.cache:
        from ..job.cache import Cache

        cache = Cache(args.cache, args.cache_max_size, link=args.cache_link)
    with Job(scratch_root=args.scratch, keep=args.keep_scratch, config=config_from(args),
             manifest=args.manifest, grace=args.grace, show_progress=args.progress, cache=cache) as job:
        paths = {name: str(p) for name, p in job.stage_refs(refs).items()} if refs else {}
        paths.update({name: str(p) for name, p in job.stage_inputs(inputs).items()} if inputs else {})
        for name, uri in outputs.items():
            paths[name] = str(job.output(uri, name))
        argv = expand(command, paths, args.shell)
        job.run(argv, shell=args.shell,
                stdout=paths[args.stdout] if args.stdout else None,
                stderr=paths[args.stderr] if args.stderr else None)
    return 0
