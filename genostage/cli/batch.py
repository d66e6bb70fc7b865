"""``genostage batch job-definition``: an AWS Batch job definition for a tool image."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, List

from ..errors import UsageError
from .common import CommandTailParser

log = logging.getLogger("genostage.batch")

EPILOG = """\
templates (TOOL): samtools (stats), bwa (mem | samtools sort, BAM + index), bcftools
(mpileup | call, VCF.gz + index), snpeff (ann, VCF.gz + index). Any other TOOL takes
the genostage run arguments after --, e.g.

  genostage batch job-definition fastqc --vcpus 2 --memory 4096 --image IMAGE \\
      -- -i Ref::reads -o Ref::report -- fastqc --outdir {report} {reads}
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("batch", help="AWS Batch job definitions for the tool images")
    sub = parser.add_subparsers(dest="batch_command", metavar="ACTION", parser_class=CommandTailParser)
    sub.required = True
    jd = sub.add_parser(
        "job-definition", help="print (or register) a job definition for a tool image",
        usage="genostage batch job-definition TOOL --vcpus N --memory MiB [OPTIONS] [-- RUN_ARGS...]",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Print an AWS Batch job definition as JSON (or register it with --register). "
        "Its command is the arguments of the image's 'genostage run' entrypoint; each reference, "
        "input and output is a Ref:: parameter whose value is the whole NAME=URI, e.g. "
        "bam=s3://bucket/x.bam; threads follow --vcpus. Arguments after -- (or --command-json) "
        "replace the tool's template.")
    jd.add_argument("tool", metavar="TOOL", help="samtools, bwa, bcftools or snpeff (or any name, with -- ARGS)")
    jd.add_argument("--vcpus", type=int, required=True, metavar="N")
    jd.add_argument("--memory", type=int, required=True, metavar="MiB")
    jd.add_argument("--platform", choices=["x86_64", "arm64"], default="x86_64",
                    help="instance architecture (default x86_64); arm64 uses the -arm64 image tag")
    jd.add_argument("--image", metavar="URI", help="image URI (default: the local tag genostage/TOOL:VERSION"
                    "[-arm64]; required with --register)")
    jd.add_argument("--timeout", type=int, metavar="S",
                    help="attempt duration limit in seconds (>= 60; default: the template's, 24 h otherwise)")
    jd.add_argument("--attempts", type=int, default=3, metavar="N", help="attempts in all (default 3)")
    jd.add_argument("--name", help="job definition name (default genostage-TOOL[-arm64])")
    jd.add_argument("--job-role-arn", metavar="ARN", help="IAM role the job uses to reach S3")
    jd.add_argument("--host-scratch", default="/scratch", metavar="DIR",
                    help="host directory mounted at /scratch (default /scratch; writable by uid 1000)")
    jd.add_argument("--host-cache", default="/scratch/.genostage-cache", metavar="DIR",
                    help="host directory of the node cache, mounted at /cache (default /scratch/.genostage-cache; "
                    "writable by uid 1000)")
    jd.add_argument("--cache-max-size", metavar="SIZE", help="GENOSTAGE_CACHE_MAX_SIZE for the jobs, e.g. 500GiB")
    jd.add_argument("--nofile", type=int, default=65536, metavar="N", help="open files limit (default 65536)")
    jd.add_argument("--register", action="store_true", help="register with AWS Batch instead of printing")
    jd.add_argument("--region", help="AWS region for --register")
    jd.add_argument("--command-json", metavar="JSON",
                    help='genostage run arguments replacing the template, as a JSON list, e.g. '
                    '\'["-i", "Ref::vcf", "--", "bcftools", "index", "{vcf}"]\'')
    jd.set_defaults(func=_job_definition, command=None)


def _default_image(tool: str, platform: str) -> str:
    from ..deploy import batch, image

    template = batch.TEMPLATES.get(tool)
    folder = template.image if template is not None else tool
    try:
        return image.image_spec(image.containers_dir(), folder).tag_for(platform)
    except UsageError:
        raise UsageError(f"--image is needed: no image {folder!r} among genostage's containers") from None


def _command(text: "str | None", after: "List[str] | None") -> "List[str] | None":
    if text is not None and after is not None:
        raise UsageError("give the genostage run arguments either after -- or with --command-json, not both")
    if after is not None:
        if not after:
            raise UsageError("nothing after --: expected the genostage run arguments, e.g. -i Ref::x -- TOOL {x}")
        return after
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--command-json: not JSON: {exc}") from None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise UsageError("--command-json: expected a non-empty JSON list of strings")
    return value


def _job_definition(args: argparse.Namespace) -> int:
    from ..deploy import batch

    command = _command(args.command_json, args.command)
    if args.register and not args.image:
        raise UsageError("--register needs --image (the pushed image URI, as printed by 'genostage image push')")
    definition = batch.job_definition(
        args.tool, args.image or _default_image(args.tool, args.platform), args.vcpus, args.memory,
        timeout=args.timeout, attempts=args.attempts, name=args.name, job_role_arn=args.job_role_arn,
        host_scratch=args.host_scratch, host_cache=args.host_cache, cache_max_size=args.cache_max_size,
        platform=args.platform, command=command, nofile=args.nofile)
    batch.validate(definition)
    if args.register:
        result = batch.register(definition, region=args.region)
        json.dump(result, sys.stdout, indent=2)
    else:
        json.dump(definition, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
