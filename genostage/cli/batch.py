"""``genostage batch job-definition``: an AWS Batch job definition for a tool image."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from ..errors import UsageError

log = logging.getLogger("genostage.batch")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("batch", help="AWS Batch job definitions for the tool images")
    sub = parser.add_subparsers(dest="batch_command", metavar="ACTION")
    sub.required = True
    jd = sub.add_parser(
        "job-definition", help="print (or register) a job definition for a tool image",
        description="Print an AWS Batch job definition as JSON (or register it with --register). "
        "Its command is the arguments of the image's 'genostage run' entrypoint; each input/output "
        "is a Ref:: parameter whose value is the whole NAME=URI, e.g. bam=s3://bucket/x.bam. "
        "--command-json replaces the tool's template.")
    jd.add_argument("tool", metavar="TOOL", help="samtools, bwa or bcftools (or any image, with --command-json)")
    jd.add_argument("--vcpus", type=int, required=True, metavar="N")
    jd.add_argument("--memory", type=int, required=True, metavar="MiB")
    jd.add_argument("--image", metavar="URI", help="image URI (default: the local tag genostage/TOOL:VERSION; "
                    "required with --register)")
    jd.add_argument("--timeout", type=int, metavar="S", help="attempt duration limit in seconds (>= 60)")
    jd.add_argument("--attempts", type=int, default=3, metavar="N", help="attempts in all (default 3)")
    jd.add_argument("--name", help="job definition name (default genostage-TOOL)")
    jd.add_argument("--job-role-arn", metavar="ARN", help="IAM role the job uses to reach S3")
    jd.add_argument("--host-scratch", default="/scratch", metavar="DIR",
                    help="host directory mounted at /scratch (default /scratch; must be writable by uid 1000)")
    jd.add_argument("--register", action="store_true", help="register with AWS Batch instead of printing")
    jd.add_argument("--region", help="AWS region for --register")
    jd.add_argument("--command-json", metavar="JSON",
                    help='genostage run arguments replacing the template, as a JSON list, e.g. '
                    '\'["-i", "Ref::vcf", "--", "bcftools", "index", "{vcf}"]\'')
    jd.set_defaults(func=_job_definition)


def _default_image(tool: str) -> str:
    from ..deploy import image

    try:
        return image.image_spec(image.find_repo(), tool).tag
    except UsageError:
        raise UsageError(f"--image is needed: no containers/{tool} in a genostage source tree here") from None


def _command(text: "str | None") -> "list[str] | None":
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

    command = _command(args.command_json)
    if args.register and not args.image:
        raise UsageError("--register needs --image (the pushed image URI, as printed by 'genostage image push')")
    definition = batch.job_definition(
        args.tool, args.image or _default_image(args.tool), args.vcpus, args.memory, timeout=args.timeout,
        attempts=args.attempts, name=args.name, job_role_arn=args.job_role_arn, host_scratch=args.host_scratch,
        command=command)
    if args.register:
        result = batch.register(definition, region=args.region)
        json.dump(result, sys.stdout, indent=2)
    else:
        json.dump(definition, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
