"""AWS Batch job definitions for the genostage tool images.

The images' entrypoint is ``genostage run``, so a job definition's ``command`` holds the
arguments of ``genostage run``: the staged inputs and outputs as ``Ref::`` placeholders
(each a whole argument, which Batch substitutes from the job's parameters), ``--``, and the
tool's command with ``{NAME}`` placeholders that genostage fills with local paths. The host's
scratch volume is mounted at ``/scratch``; spot interruptions (status reason ``Host EC2*``)
and transfers that failed after genostage's own retries (exit status 5) are retried.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import AccessDenied, GenostageError, UsageError

log = logging.getLogger("genostage.batch")

SCRATCH = "/scratch"
SCRATCH_VOLUME = "scratch"
EXIT_TRANSFER = 5  # genostage's exit status for a transfer that failed after retries


@dataclass(frozen=True)
class Template:
    """What a tool's job runs: ``Ref::`` parameters (each NAME=URI for -i/-o) and the command."""

    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]
    command: Tuple[str, ...]
    stdout: Optional[str] = None
    description: str = ""

    def run_args(self) -> List[str]:
        args: List[str] = []
        for name in self.inputs:
            args += ["-i", f"Ref::{name}"]
        for name in self.outputs:
            args += ["-o", f"Ref::{name}"]
        if self.stdout:
            args += ["--stdout", self.stdout]
        return [*args, "--", *self.command]

    def parameters(self) -> List[str]:
        return [*self.inputs, *self.outputs]


# Parameter values are the whole NAME=URI argument of -i/-o, e.g. bam=s3://bucket/sample.bam.
TEMPLATES: Dict[str, Template] = {
    "samtools": Template(("bam",), ("stats",), ("samtools", "stats", "{bam}"), stdout="stats",
                         description="samtools stats of one BAM"),
    "bwa": Template(("reference", "reads1", "reads2"), ("sam",),
                    ("bwa", "mem", "-t", "2", "{reference}/ref.fa", "{reads1}", "{reads2}"), stdout="sam",
                    description="bwa mem of a read pair against an indexed reference prefix (ref.fa*)"),
    "bcftools": Template(("vcf",), ("stats",), ("bcftools", "stats", "{vcf}"), stdout="stats",
                         description="bcftools stats of one VCF/BCF"),
}


def job_definition(tool: str, image: str, vcpus: int, memory: int, timeout: Optional[int] = None,
                   attempts: int = 3, name: Optional[str] = None, job_role_arn: Optional[str] = None,
                   host_scratch: str = SCRATCH, command: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """A ``register_job_definition`` request for ``tool`` (``command`` overrides the template)."""
    if tool not in TEMPLATES and command is None:
        raise UsageError(f"no job template for {tool!r}: choose from {', '.join(sorted(TEMPLATES))} "
                         "or give the genostage run arguments after --")
    if vcpus < 1:
        raise UsageError(f"--vcpus must be at least 1, not {vcpus}")
    if memory < 4:
        raise UsageError(f"--memory is in MiB and must be at least 4, not {memory}")
    if not 1 <= attempts <= 10:
        raise UsageError(f"--attempts must be between 1 and 10 (AWS Batch's limit), not {attempts}")
    if timeout is not None and timeout < 60:
        raise UsageError(f"--timeout must be at least 60 seconds (AWS Batch's minimum), not {timeout}")
    if not host_scratch.startswith("/"):
        raise UsageError(f"--host-scratch must be an absolute path, not {host_scratch!r}")
    name = name or f"genostage-{tool}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}", name):
        raise UsageError(f"job definition name {name!r}: up to 128 letters, digits, '-' and '_'")
    args = list(command) if command is not None else TEMPLATES[tool].run_args()
    container: Dict[str, Any] = {
        "image": image,
        "command": args,
        "resourceRequirements": [
            {"type": "VCPU", "value": str(vcpus)},
            {"type": "MEMORY", "value": str(memory)},
        ],
        "volumes": [{"name": SCRATCH_VOLUME, "host": {"sourcePath": host_scratch}}],
        "mountPoints": [{"sourceVolume": SCRATCH_VOLUME, "containerPath": SCRATCH, "readOnly": False}],
        "environment": [{"name": "GENOSTAGE_SCRATCH", "value": SCRATCH}],
    }
    if job_role_arn:
        container["jobRoleArn"] = job_role_arn
    definition: Dict[str, Any] = {
        "jobDefinitionName": name,
        "type": "container",
        "platformCapabilities": ["EC2"],  # host volumes: not on Fargate
        "containerProperties": container,
        "retryStrategy": retry_strategy(attempts),
        "propagateTags": True,
        "tags": {"genostage:tool": tool},
    }
    if timeout is not None:
        definition["timeout"] = {"attemptDurationSeconds": timeout}
    return definition


def retry_strategy(attempts: int) -> Dict[str, Any]:
    """Retry spot interruptions and exhausted transfers; any other failure ends the job."""
    return {
        "attempts": attempts,
        "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},
            {"onExitCode": str(EXIT_TRANSFER), "action": "RETRY"},
            {"onReason": "*", "action": "EXIT"},
        ],
    }


def register(definition: Dict[str, Any], client: Any = None, region: Optional[str] = None) -> Dict[str, Any]:
    """Register with AWS Batch; returns ``{jobDefinitionName, jobDefinitionArn, revision}``."""
    from botocore.exceptions import BotoCoreError, ClientError

    if client is None:
        import boto3

        client = boto3.client("batch", region_name=region)
    try:
        reply = client.register_job_definition(**definition)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("AccessDeniedException", "UnrecognizedClientException"):
            raise AccessDenied(f"registering job definition {definition['jobDefinitionName']}: access denied") from exc
        raise GenostageError(f"registering job definition {definition['jobDefinitionName']}: {exc}") from exc
    except BotoCoreError as exc:
        raise GenostageError(f"registering job definition {definition['jobDefinitionName']}: {exc}") from exc
    log.info("registered %s revision %s", reply["jobDefinitionArn"], reply["revision"])
    return {k: reply[k] for k in ("jobDefinitionName", "jobDefinitionArn", "revision")}
