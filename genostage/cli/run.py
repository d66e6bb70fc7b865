"""``genostage run``: the generic container entrypoint."""
from __future__ import annotations

import argparse
import os

from ..errors import UsageError
from ..job.scratch import KEEP_POLICIES
from ..job.spec import JobSpec, named, run_job
from .common import add_transfer_options, config_from, whole_number

EPILOG = """\
placeholders: {NAME} in COMMAND becomes the local path of input or output NAME
({NAME.1} and {NAME.2}: the files of a paired chunk input; {{ and }} are literal
braces). With --shell, COMMAND is run by bash -o pipefail -c and each path
reaches it through an environment variable, quoted for where it stands, so no
object key can run code. {index} (or {index:04}) in an output URI is the array
index; an input plan.json# stages that index's chunk.

example:
  genostage run -i bam=s3://bucket/sample.bam -i ref=s3://bucket/refs/hg38/ \\
      -o stats=s3://bucket/results/sample.stats.txt --stdout stats \\
      -- samtools stats --reference {ref}/hg38.fa {bam}

exit status: the tool's own status when it fails; 0 on success; 2 usage, 3 not
found, 4 access denied, 5 transfer failed, 6 checksum mismatch, 7 no space,
8 unsafe path, 9 scratch unusable, 10 spot interruption, 1 other errors;
128+N when stopped by signal N.
"""


def add_job_options(p: argparse.ArgumentParser) -> None:
    """The options that declare one job (shared with ``genostage scatter``)."""
    p.add_argument("-i", "--input", action="append", default=[], metavar="NAME=URI",
                   help="staged before the run; URI: s3://bucket/key, s3://bucket/prefix/ (a directory), "
                        "a local path, plan.json#I (chunk I of a chunk plan; plan.json# for the array index), "
                        "or URI1,URI2 (a read pair: {NAME.1}, {NAME.2})")
    p.add_argument("-o", "--output", action="append", default=[], metavar="NAME=URI",
                   help="{NAME} is the path the tool must write (a directory for a URI ending in /); "
                        "{index} in the URI is the array index")
    p.add_argument("-r", "--ref", action="append", default=[], metavar="NAME=URI",
                   help="reference data like --input, but read-only and served from the node cache (--cache)")
    p.add_argument("--stream", action="append", default=[], metavar="NAME",
                   help="input or output NAME is a named pipe: read while it downloads, or uploaded as it is "
                        "written (verified; for tools that read or write in order, not ones that seek)")
    p.add_argument("--stdout", metavar="NAME", help="write the tool's stdout to output NAME")
    p.add_argument("--stderr", metavar="NAME", help="write the tool's stderr to output NAME")
    p.add_argument("--shell", action="store_true",
                   help="run COMMAND with bash -o pipefail -c (paths passed as quoted environment variables)")
    p.add_argument("--scratch", metavar="DIR",
                   help="scratch root (default: $GENOSTAGE_SCRATCH, else /scratch if writable, else the temp dir)")
    p.add_argument("--keep-scratch", choices=KEEP_POLICIES, default="never")
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


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("run", help="stage inputs, run a tool, publish outputs, clean up",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                       usage="genostage run [OPTIONS] -- COMMAND [ARG]...")
    p.add_argument("--manifest", metavar="URI",
                   help="where the manifest goes (default: beside the first output, named after it)")
    p.add_argument("--index", metavar="N", help="the job's array index (default: $AWS_BATCH_JOB_ARRAY_INDEX)")
    p.add_argument("--spec", metavar="URI",
                   help="run child INDEX of the scatter whose spec.json this is (all else comes from the spec)")
    p.add_argument("--index-offset", metavar="K",
                   help="with --spec: the child is K + the array index (the later arrays of a large scatter)")
    p.add_argument("--indices", metavar="URI",
                   help="with --spec: a scatter's indices list; the child is its entry at the array index "
                        "(+ --index-offset): the arrays of a rerun")
    add_job_options(p)
    p.set_defaults(func=run)


def job_spec(args: argparse.Namespace) -> JobSpec:
    """The job the options declare."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return JobSpec(command=command, inputs=named(args.input, "--input", lists=True), refs=named(args.ref, "--ref"),
                   outputs=named(args.output, "--output"), shell=args.shell, stdout=args.stdout,
                   stderr=args.stderr, manifest=getattr(args, "manifest", None), scratch=args.scratch,
                   keep=args.keep_scratch, grace=args.grace, cache=args.cache,
                   cache_max_size=args.cache_max_size, cache_link=args.cache_link, stream=list(args.stream))


def run(args: argparse.Namespace) -> int:
    index = whole_number(args.index, "--index", low=0) if args.index is not None else None
    if args.spec:
        return _child(args, index)
    if args.index_offset is not None or args.indices:
        raise UsageError("--index-offset and --indices pick a scatter's child: they go with --spec")
    spec = job_spec(args)
    spec.check()
    run_job(spec, config_from(args), index=index, show_progress=args.progress)
    return 0


def _child(args: argparse.Namespace, index: "int | None") -> int:
    """One child of a scatter, as AWS Batch (or the local executor) starts it."""
    from ..job.manifest import array_index
    from ..scatter import load
    from ..store import Stores

    if args.input or args.output or args.ref or args.command:
        raise UsageError("--spec runs a scatter's child: its inputs, outputs and command come from the spec")
    position = array_index() if index is None else index
    if position is None:
        raise UsageError("--spec needs the child's index: --index N, or AWS_BATCH_JOB_ARRAY_INDEX")
    if args.index_offset is not None:
        position += whole_number(args.index_offset, "--index-offset", low=0)
    config = config_from(args)
    stores = Stores(config)
    spec = load(args.spec, stores)
    index = position
    if args.indices:  # a rerun's array: its array indices stand for the children listed
        from ..scatter.batch import child_index, read_indices

        index = child_index(position, read_indices(args.indices, stores), args.indices)
    # the tool (and the manifest) see the child's index, as under the local executor
    os.environ["AWS_BATCH_JOB_ARRAY_INDEX"] = str(index)
    job = spec.child(index)
    if job.cache is None and args.cache:  # the node's cache (GENOSTAGE_CACHE of the job definition)
        job.cache, job.cache_max_size, job.cache_link = args.cache, args.cache_max_size, args.cache_link
    run_job(job, spec.transfer_config(config), index=index, show_progress=args.progress)
    return 0
