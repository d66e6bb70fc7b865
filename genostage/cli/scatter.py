"""``genostage scatter``: one input fanned out over chunks, each a genostage job, gathered and proven.

    genostage scatter -i reads=s3://b/S1_R1.fq.gz,s3://b/S1_R2.fq.gz --parts 8 \\
        -r ref=s3://b/refs/bwa/ -o bam=s3://b/aln/S1.bam --gather bam=merge \\
        --shell -- 'bwa mem -t 2 {ref}/ref.fa {reads.1} {reads.2} | samtools sort -o {bam} -'
    genostage scatter status s3://b/aln/S1.bam.scatter/spec.json
    genostage scatter gather s3://b/aln/S1.bam.scatter/spec.json
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Dict, List

from ..cancel import stop_on_signals
from ..errors import UsageError
from ..scatter import Scatter, load, run_gather, run_local, scatter_state
from ..scatter.status import summary
from ..store import Stores
from .common import config_from, count_type, size_type, whole_number
from .run import add_job_options, job_spec

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

also: genostage scatter status SPEC, genostage scatter gather SPEC
"""


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("scatter", help="fan one input out over chunks (each a genostage job), gather, prove",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                       usage="genostage scatter [OPTIONS] -- COMMAND [ARG]...\n"
                             "       genostage scatter status|gather SPEC")
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
    g.add_argument("--attempts", metavar="N", default="2", help="tries per child for retryable failures (default 2)")
    g.add_argument("--allow-failed", metavar="N", default="0",
                   help="gather what succeeded when at most N children fail (default 0: any failure stops all)")
    g.add_argument("--drops-reads", action="store_true", help="the tool drops reads on purpose: no per-child read check")
    g.add_argument("--work", metavar="URI", help="spec, plan, parts and children's manifests (default: <output>.scatter/)")
    g.add_argument("--manifest", metavar="URI", help="the final manifest (default: beside the first gathered output)")
    g.add_argument("--executor", choices=("local",), default="local", help="where children run (default local)")
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


def run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command[:1] in (["status"], ["gather"]) and args.command[:1] != ["--"] and not (args.input or args.output):
        return _on_spec(command, args)
    spec = job_spec(args)
    threads = whole_number(args.threads, "--threads", 1, 1024)
    jobs = whole_number(args.jobs, "--jobs", 1, 4096) if args.jobs is not None else None
    config = config_from(args)
    scatter = Scatter(spec, split=args.split, sheet=args.sheet, parts=args.parts, records=args.records,
                      nbytes=args.bytes, by_name=args.by_name, by_reference=args.by_reference, regions=args.regions,
                      bam_index=args.bam_index, gather=_gathers(args.gather), attempts=whole_number(
                          args.attempts, "--attempts", 1, 100),
                      allow_failed=whole_number(args.allow_failed, "--allow-failed", 0), drops_reads=args.drops_reads,
                      work=args.work, manifest=args.manifest, config=config, show_progress=args.progress)
    if args.parts is None and args.records is None and args.bytes is None and not (
            args.by_reference or args.regions or args.sheet):
        raise UsageError("say how to cut: --parts N, --records N, --bytes SIZE, --by-reference, --regions FILE, "
                         "or --sheet FILE")
    from ..scatter import default_jobs

    with stop_on_signals(scatter.cancel):
        plan = scatter.plan()
        manifest = run_local(plan, scatter.stores, config, jobs=jobs or default_jobs(threads), cancel=scatter.cancel,
                             show_progress=args.progress)
    _report(manifest)
    return 0


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


def _on_spec(command: List[str], args: argparse.Namespace) -> int:
    if len(command) != 2:
        raise UsageError(f"genostage scatter {command[0]} SPEC (the spec.json a scatter wrote)")
    what, uri = command
    config = config_from(args)
    stores = Stores(config)
    spec = load(uri, stores)
    if what == "gather":
        with stop_on_signals():
            _report(run_gather(spec, stores, config, show_progress=args.progress))
        return 0
    states = scatter_state(spec, stores)
    counts = summary(states)
    print(f"scatter {spec.id}: {spec.children} children; " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    for s in states:
        if not s.done:
            print(f"  child {s.index}: {s.status}" + (f", exit status {s.exit_status}" if s.exit_status else "")
                  + (f", attempt {s.attempt}" if s.attempt else "") + f"  {s.manifest_uri}")
    sys.stdout.flush()
    return 0 if counts.get("succeeded", 0) == spec.children else 1
