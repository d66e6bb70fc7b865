"""``genostage scatter``: one input fanned out over chunks, each a genostage job, gathered and proven.

    genostage scatter -i reads=s3://b/S1_R1.fq.gz,s3://b/S1_R2.fq.gz --parts 8 \\
        -r ref=s3://b/refs/bwa/ -o bam=s3://b/aln/S1.bam --gather bam=merge \\
        --shell -- 'bwa mem -t 2 {ref}/ref.fa {reads.1} {reads.2} | samtools sort -o {bam} -'
    genostage scatter --executor batch --job-queue spot --job-definition genostage-bwa ... (the same)
    genostage scatter status s3://b/aln/S1.bam.scatter/spec.json [--wait]
    genostage scatter gather s3://b/aln/S1.bam.scatter/spec.json
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Dict, List, NoReturn, Tuple

from ..cancel import Cancel, stop_on_signals
from ..config import TransferConfig
from ..errors import GenostageError, UsageError
from ..scatter import Scatter, load, run_gather, run_local, scatter_state
from ..scatter.status import summary
from ..store import Stores
from .common import config_from, count_type, size_type, whole_number
from .run import add_job_options, job_spec

if TYPE_CHECKING:  # pragma: no cover
    from ..scatter.batch import BatchScatter

log = logging.getLogger("genostage.scatter")

EPILOG = """\
the input to cut (--split NAME, or the only -i): a FASTQ file or a pair (NAME=R1,R2;
plain or BGZF is planned with ranged reads, plain gzip is split once into chunk
objects), or a BAM (by size, --by-name, --by-reference, --regions FILE); or
--sheet FILE: one child per row of a TSV sample sheet (columns are inputs; an id
column gives {id} in output URIs).

outputs: --gather NAME=RULE (bam=merge, bam=cat, vcf=concat, fastq=cat,
text=cat; the kind may be left out: merge, cat, concat) makes one object of the
children's parts; an output without a rule keeps one object per child and needs
{index} (or {id}) in its URI.

proof: children count the reads of their chunk and the records of their outputs;
the gather refuses to publish when a read was lost or doubled (--drops-reads for
a tool that filters on purpose), or when a gathered output does not hold exactly
its parts' records (exit 11).

AWS Batch (--executor batch --job-queue Q --job-definition D, or --image URI):
the children as an array job (one chunk each: genostage run --spec SPEC), the
gather as a job depending on it; --wait follows them and exits with the
gather's status; the same scatter again submits only the children not done.

also: genostage scatter status SPEC [--wait], genostage scatter gather SPEC
"""


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("scatter", help="fan one input out over chunks (each a genostage job), gather, prove",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                       usage="genostage scatter [OPTIONS] -- COMMAND [ARG]...\n"
                             "       genostage scatter status SPEC [--wait] | gather SPEC")
    s = p.add_argument_group("cutting")
    s.add_argument("--split", metavar="NAME", help="the input to cut (default: the only -i)")
    s.add_argument("--sheet", metavar="FILE", help="one child per row of this TSV sample sheet instead")
    s.add_argument("--parts", type=count_type, metavar="N", help="number of chunks")
    s.add_argument("--records", type=count_type, metavar="N", help="records per chunk (gzip FASTQ, BAM)")
    s.add_argument("--bytes", type=size_type, metavar="SIZE", help="bytes per chunk (gzip FASTQ, BAM)")
    s.add_argument("--by-name", action="store_true", help="BAM: never separate a read name's records")
    s.add_argument("--by-reference", action="store_true", help="BAM: one chunk per reference (needs its index)")
    s.add_argument("--regions", metavar="FILE", help="BAM: one chunk per region of this BED file")
    s.add_argument("--bam-index", metavar="URI", help="the BAM's .bai/.csi when it is not beside the BAM")
    g = p.add_argument_group("running and gathering")
    g.add_argument("--gather", action="append", default=[], metavar="NAME=RULE",
                   help="gather output NAME: merge, cat, concat (or bam=merge, vcf=concat, fastq=cat, text=cat)")
    g.add_argument("--jobs", metavar="N", help="children at once (default: the CPUs available / --threads)")
    g.add_argument("--threads", metavar="N", default="1", help="threads each child's tool uses (for --jobs)")
    g.add_argument("--attempts", metavar="N",
                   help="tries per child for retryable failures (default 2; on AWS Batch: the job definition's "
                        "retry strategy, or N attempts with genostage's rules)")
    g.add_argument("--allow-failed", metavar="N", default="0",
                   help="gather what succeeded when at most N children fail (default 0: any failure stops all)")
    g.add_argument("--drops-reads", action="store_true", help="the tool drops reads on purpose: no per-child read check")
    g.add_argument("--work", metavar="URI", help="spec, plan, parts and children's manifests (default: <output>.scatter/)")
    g.add_argument("--manifest", metavar="URI", help="the final manifest (default: beside the first gathered output)")
    g.add_argument("--executor", choices=("local", "batch"), default="local",
                   help="where children run: local processes (default), or an AWS Batch array job")
    b = p.add_argument_group("AWS Batch (--executor batch)")
    b.add_argument("--job-queue", metavar="NAME", help="the job queue children and gather go to")
    b.add_argument("--job-definition", metavar="NAME[:REV]",
                   help="a job definition whose image has genostage's entrypoint and the tool (e.g. genostage-bwa)")
    b.add_argument("--image", metavar="URI", help="or register one from this tool image (genostage-scatter-NAME)")
    b.add_argument("--job-role-arn", metavar="ARN", help="with --image: the IAM role the jobs use to reach S3")
    b.add_argument("--child-vcpus", metavar="N", help="vCPUs of each child (default: the job definition's)")
    b.add_argument("--child-memory", metavar="MiB", help="memory of each child in MiB (default: the definition's)")
    b.add_argument("--gather-vcpus", metavar="N", help="vCPUs of the gather job (default: the definition's)")
    b.add_argument("--gather-memory", metavar="MiB", help="memory of the gather job in MiB (default: the definition's)")
    b.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="a tag on every job (cost tracking; genostage:scatter and genostage:sample are added)")
    b.add_argument("--wait", action="store_true",
                   help="follow the jobs until the gather ends and exit with its status (default: print the job ids)")
    b.add_argument("--region", metavar="REGION", help="AWS region of the queue (default: $AWS_REGION)")
    b.add_argument("--poll", metavar="SECONDS", default="30", help="with --wait: seconds between looks (default 30)")
    add_job_options(p)
    p.set_defaults(func=run)


def _gathers(values: List[str]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for text in values:
        name, sep, rule = text.partition("=")
        if not sep or not name or not rule:
            raise UsageError(f"--gather expects NAME=RULE (e.g. bam=merge), got {text!r}")
        if name in out:
            raise UsageError(f"--gather {name} given twice")
        out[name] = rule
    return out


BATCH_ONLY = ("job_queue", "job_definition", "image", "job_role_arn", "child_vcpus", "child_memory", "gather_vcpus",
              "gather_memory", "region")


def run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command[:1] in (["status"], ["gather"]) and args.command[:1] != ["--"] and not (args.input or args.output):
        return _on_spec(command, args)
    spec = job_spec(args)
    threads = whole_number(args.threads, "--threads", 1, 1024)
    jobs = whole_number(args.jobs, "--jobs", 1, 4096) if args.jobs is not None else None
    attempts = whole_number(args.attempts, "--attempts", 1, 100) if args.attempts is not None else None
    config = config_from(args)
    batch = None
    if args.executor == "batch":
        batch = _batch_executor(args, attempts, config)
        if spec.cache == os.environ.get("GENOSTAGE_CACHE"):  # this machine's cache: children have their own
            spec.cache, spec.cache_max_size = None, None
    else:
        given = [o for o in BATCH_ONLY if getattr(args, o) is not None] + (["tag"] if args.tag else []) + (
            ["wait"] if args.wait else [])
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} is for --executor batch")
    scatter = Scatter(spec, split=args.split, sheet=args.sheet, parts=args.parts, records=args.records,
                      nbytes=args.bytes, by_name=args.by_name, by_reference=args.by_reference, regions=args.regions,
                      bam_index=args.bam_index, gather=_gathers(args.gather), attempts=attempts or 2,
                      allow_failed=whole_number(args.allow_failed, "--allow-failed", 0), drops_reads=args.drops_reads,
                      work=args.work, manifest=args.manifest, config=config, show_progress=args.progress)
    if args.parts is None and args.records is None and args.bytes is None and not (
            args.by_reference or args.regions or args.sheet):
        raise UsageError("say how to cut: --parts N, --records N, --bytes SIZE, --by-reference, --regions FILE, "
                         "or --sheet FILE")
    if batch is not None:
        return _run_batch(args, scatter, batch)
    from ..scatter import default_jobs

    with stop_on_signals(scatter.cancel):
        plan = scatter.plan()
        manifest = run_local(plan, scatter.stores, config, jobs=jobs or default_jobs(threads), cancel=scatter.cancel,
                             show_progress=args.progress)
    _report(manifest)
    return 0


# ---------------------------------------------------------------- --executor batch

def _batch_executor(args: argparse.Namespace, attempts: "int | None", config: TransferConfig) -> "BatchScatter":
    from ..deploy.batch import batch_client
    from ..scatter.batch import BatchOptions, BatchScatter

    if args.jobs is not None:
        raise UsageError("--jobs is for the local executor: on AWS Batch the queue's compute environments decide "
                         "how many children run at once")
    if args.scratch:
        raise UsageError("--scratch is for the local executor: on AWS Batch children work in their job definition's "
                         "scratch volume (set GENOSTAGE_SCRATCH for where this machine plans)")

    def number(value: "str | None", option: str, low: int) -> "int | None":
        return whole_number(value, option, low) if value is not None else None
    options = BatchOptions(queue=args.job_queue or "", definition=args.job_definition, image=args.image,
                           job_role_arn=args.job_role_arn, child_vcpus=number(args.child_vcpus, "--child-vcpus", 1),
                           child_memory=number(args.child_memory, "--child-memory", 4),
                           gather_vcpus=number(args.gather_vcpus, "--gather-vcpus", 1),
                           gather_memory=number(args.gather_memory, "--gather-memory", 4),
                           tags=_tags(args.tag), attempts=attempts)
    options.check()
    executor = BatchScatter(options, batch_client(args.region), Stores(config))
    executor.check()  # the queue and the definition exist: before planning
    return executor


def _tags(values: List[str]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag expects KEY=VALUE (e.g. project=wgs), got {text!r}")
        out[key] = value
    return out


def _poll(args: argparse.Namespace) -> float:
    try:
        value = float(args.poll)
    except ValueError:
        raise UsageError(f"--poll takes seconds, not {args.poll!r}") from None
    if not 0 < value <= 3600:
        raise UsageError(f"--poll must be more than 0 and at most 3600 seconds, got {args.poll}")
    return value


def _run_batch(args: argparse.Namespace, scatter: Scatter, executor: "BatchScatter") -> int:
    poll = _poll(args)
    executor.stores = scatter.stores
    with stop_on_signals(scatter.cancel):
        plan = scatter.plan()
        submission = executor.submit(plan, cancel=scatter.cancel)
    print(f"scatter {plan.id}: {submission.count:,} of {plan.children:,} children submitted to AWS Batch "
          f"(queue {submission.queue}, definition {submission.definition})")
    for array in submission.arrays:
        kind = f"array of {array.size:,}" if array.size > 1 else "one child"
        print(f"  children {array.name} {array.job_id} ({kind})")
    if submission.gather:
        print(f"  gather {submission.gather['jobName']} {submission.gather['jobId']} (after the children)")
    print(f"spec: {plan.uri}")
    sys.stdout.flush()
    if not args.wait:
        log.info("follow them: genostage scatter status %s --wait", plan.uri)
        return 0
    return _follow(executor, plan, submission, scatter.cancel, args.progress, poll)


def _follow(executor: "BatchScatter", spec: Any, submission: Any, cancel: Cancel, progress: bool, poll: float) -> int:
    with stop_on_signals(cancel):
        followed = executor.follow(spec, submission, cancel=cancel, show_progress=progress, poll=poll)
    if followed.state == "succeeded":
        if followed.manifest:
            _report(followed.manifest)
        else:
            log.warning("%s, but its manifest %s cannot be read", followed.message, spec.manifest)
        return followed.exit_status
    log.error("%s", followed.message)
    return followed.exit_status


def _report(manifest: Dict[str, Any]) -> None:
    info = manifest.get("scatter", {})
    proof = info.get("conservation", {})
    parts = ", ".join(f"{k} {v}" for k, v in sorted(info.get("summary", {}).items()))
    line = f"scatter {info.get('id')}: children {parts}"
    if proof.get("reads_in"):
        line += f"; {proof['reads_in']:,} reads in"
    for name, counts in (proof.get("gathered") or {}).items():
        line += f"; {name}: {counts.get('primary', counts.get('records')):,} records gathered"
    log.info("%s", line + (" (conserved)" if proof.get("checked") else ""))


SPEC_HELP = {
    "status": "What each child of a scatter did (succeeded, tool_failed, failed, interrupted, preempted, "
              "not run; outputs missing when a published output has changed since), from the children's "
              "manifests, and for --executor batch the Batch jobs' states.",
    "gather": "Gather the children's outputs of a scatter, prove every read is accounted for, "
              "publish, write the final manifest (what the gather job of --executor batch runs).",
}


class _SpecParser(argparse.ArgumentParser):
    def error(self, message: str) -> "NoReturn":
        raise UsageError(f"{self.prog}: {message}")


def _spec_options(what: str, rest: List[str], args: argparse.Namespace) -> Tuple[str, bool]:
    """``SPEC`` and, for status, ``--wait``, ``--region R``, ``--poll S`` after it (they may also
    come before the subcommand); the spec URI and whether to wait."""
    parser = _SpecParser(prog=f"genostage scatter {what}", description=SPEC_HELP[what])
    parser.add_argument("spec", metavar="SPEC", help="the spec.json a scatter wrote (local or s3://)")
    if what == "status":
        parser.add_argument("--wait", action="store_true",
                            help="follow the children until the gather ends; exit with its status")
        parser.add_argument("--region", help="AWS region of a Batch scatter's queue (default: $AWS_REGION)")
        parser.add_argument("--poll", metavar="SECONDS", help="with --wait: seconds between looks (default 30)")
    try:
        found = parser.parse_args(rest)
    except UsageError as exc:
        raise UsageError(f"scatter {what} SPEC{' [--wait] [--region R]' if what == 'status' else ''} "
                         f"(the spec.json a scatter wrote): {str(exc).split(': ', 1)[-1]}") from None
    for name in ("region", "poll"):
        if getattr(found, name, None) is not None:
            setattr(args, name, getattr(found, name))
    return found.spec, bool(getattr(found, "wait", False)) or bool(args.wait)


def _on_spec(command: List[str], args: argparse.Namespace) -> int:
    what = command[0]
    uri, wait = _spec_options(what, command[1:], args)
    config = config_from(args)
    stores = Stores(config)
    spec = load(uri, stores)
    if what == "gather":
        with stop_on_signals():
            _report(run_gather(spec, stores, config, show_progress=args.progress))
        return 0
    from ..scatter.batch import latest

    submission = latest(spec)
    if wait:
        return _follow_spec(args, spec, stores, submission)
    states = scatter_state(spec, stores)
    counts = summary(states)
    print(f"scatter {spec.id}: {spec.children} children; " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    for s in states:
        if not s.done:
            print(f"  child {s.index}: {s.status}" + (f", exit status {s.exit_status}" if s.exit_status else "")
                  + (f", attempt {s.attempt}" if s.attempt else "") + f"  {s.manifest_uri}")
    if submission is not None:
        _batch_status(args, submission)
    sys.stdout.flush()
    return 0 if counts.get("succeeded", 0) == spec.children else 1


def _batch_status(args: argparse.Namespace, submission: Any) -> None:
    """The Batch jobs of the last submission, beside what the manifests say (a failure to ask
    Batch is one line; the manifests' report stands)."""
    from ..deploy.batch import batch_client
    from ..scatter.batch import describe

    try:
        lines = describe(batch_client(args.region), submission)
    except GenostageError as exc:
        lines = [f"AWS Batch: submission {submission.number}: cannot describe its jobs: {exc}"]
    print("\n".join(lines))


def _follow_spec(args: argparse.Namespace, spec: Any, stores: Stores, submission: Any) -> int:
    from ..deploy.batch import batch_client
    from ..scatter.batch import BatchOptions, BatchScatter

    if submission is None:
        raise UsageError(f"scatter {spec.id} was not submitted to AWS Batch: nothing to wait for "
                         f"(genostage scatter status {spec.uri})")
    executor = BatchScatter(BatchOptions.of(submission), batch_client(args.region), stores)
    return _follow(executor, spec, submission, Cancel(), args.progress, _poll(args))
