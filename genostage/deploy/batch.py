"""AWS Batch: job definitions for the genostage tool images, and the API calls around them.

The images' entrypoint is ``genostage run``, so a job definition's ``command`` holds the
arguments of ``genostage run``: the staged references, inputs and outputs as ``Ref::``
placeholders (each a whole argument, which Batch substitutes from the job's parameters; the
value of one is the whole ``NAME=URI``), ``--``, and the tool: ``bash -c SCRIPT NAME ARG...``,
whose arguments are the plain parameters (threads, a FASTA name...) and the staged paths
(``{NAME}``, filled in by genostage). Scripts take everything as positional arguments, so no
value is ever parsed by a shell.

What a definition carries: the host's scratch directory at ``/scratch`` and the node cache at
``/cache`` (``GENOSTAGE_CACHE``; references come through ``-r``), ``initProcessEnabled``, a
``nofile`` ulimit, a timeout, ``resourceRequirements`` (never the deprecated vcpus/memory
fields) and a retry strategy: spot reclaims (status reason ``Host EC2*``, no exit code) and
genostage's retryable exit codes (:data:`genostage.exitcodes.RETRYABLE`) are retried, every
other failure ends the job at once.

For a scatter executor: :func:`submit_job` and :func:`describe_jobs` retry throttling with
jittered backoff within a time budget, refuse payloads over Batch's limits before sending,
and turn Batch's ClientException for a missing queue, definition or role into one line.
"""
from __future__ import annotations

import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ..errors import AccessDenied, GenostageError, NotFound, TransferFailed, UsageError
from ..exitcodes import RETRYABLE

log = logging.getLogger("genostage.batch")

SCRATCH = "/scratch"          # container path of the scratch volume (GENOSTAGE_SCRATCH)
CACHE = "/cache"              # container path of the node cache volume (GENOSTAGE_CACHE)
SCRATCH_VOLUME = "scratch"
CACHE_VOLUME = "genostage-cache"
HOST_SCRATCH = "/scratch"
# Beside the jobs' directories on the scratch disk; a dot name, so a job's sweep of dead
# genostage-* directories never takes it for one.
HOST_CACHE = "/scratch/.genostage-cache"
NOFILE = 65536                # open files: samtools sort's temporary files, many staged objects
DEFAULT_TIMEOUT = 24 * 3600   # a command given after -- (the templates have their own)
PLATFORMS = ("x86_64", "arm64")
MAX_RETRY_RULES = 5           # AWS Batch's limit on evaluateOnExit

# Batch's limits on what one SubmitJob may carry.
MAX_SUBMIT_BYTES = 30 * 1024
MAX_OVERRIDES_CHARS = 8192
MAX_ARRAY_SIZE = 10_000
MAX_DEPENDS_ON = 20
DESCRIBE_BATCH = 100
THROTTLE_CODES = frozenset({"TooManyRequestsException", "ThrottlingException", "Throttling",
                            "ThrottledException", "RequestLimitExceeded"})


# ---------------------------------------------------------------- templates

@dataclass(frozen=True)
class Template:
    """What a tool's job runs.

    ``values`` are plain parameters (their ``Ref::`` value is the value itself: ``threads``,
    ``memory`` and the like); ``refs``, ``inputs`` and ``outputs`` are ``-r``/``-i``/``-o`` of
    ``genostage run`` (their value is ``NAME=URI``). The script sees all of them, in that order,
    as ``$1``, ``$2``... and gets them as shell variables of the same names. The script is one
    line (its commands joined by ``;``), so a failure's message stays one line too.
    """

    image: str
    description: str
    values: Tuple[str, ...]
    refs: Tuple[str, ...]
    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]
    body: Tuple[str, ...]
    timeout: int

    @property
    def staged(self) -> Tuple[str, ...]:
        return self.refs + self.inputs + self.outputs

    def parameters(self) -> List[str]:
        """Every ``Ref::`` parameter, in the order they appear in the command."""
        return [*self.refs, *self.inputs, *self.outputs, *self.values]

    def script(self) -> str:
        names = self.values + self.staged
        lines = ["set -euo pipefail",
                 # Batch leaves Ref::NAME as it is when the job's parameters lack NAME
                 'for arg in "$@"; do case $arg in Ref::*) '
                 'echo "$0: job parameter ${arg#Ref::} was not given" >&2; exit 2;; esac; done',
                 " ".join(f"{n}=${i}" if i < 10 else f"{n}=${{{i}}}" for i, n in enumerate(names, 1))]
        for name in ("threads", "memory"):
            if name in self.values:
                lines.append(f'case ${name} in ""|*[!0-9]*|0) echo "$0: {name} must be a positive integer, '
                             f'not \'${name}\'" >&2; exit 2;; esac')
        return "; ".join([*lines, *self.body])

    def run_args(self, tool: str) -> List[str]:
        args: List[str] = []
        for option, names in (("-r", self.refs), ("-i", self.inputs), ("-o", self.outputs)):
            for name in names:
                args += [option, f"Ref::{name}"]
        return [*args, "--", "bash", "-c", self.script(), f"genostage-{tool}",
                *[f"Ref::{n}" for n in self.values], *[f"{{{n}}}" for n in self.staged]]

    def defaults(self, vcpus: int, memory: int) -> Dict[str, str]:
        """Parameter defaults: threads follow the vCPUs, ``memory`` the MiB asked for."""
        known = {"threads": str(vcpus), "memory": str(memory)}
        return {n: known[n] for n in self.values if n in known}


HOURS = 3600
TEMPLATES: Dict[str, Template] = {
    "samtools": Template(
        "samtools", "samtools stats of one BAM",
        values=("threads",), refs=(), inputs=("bam",), outputs=("stats",),
        body=('samtools stats -@ "$((threads - 1))" "$bam" > "$stats"',),
        timeout=6 * HOURS),
    # samtools sort buffers: a quarter of the job's memory, split between the threads (bwa needs the rest)
    "bwa": Template(
        "bwa", "bwa mem of a read pair against an indexed reference prefix, sorted into a BAM and its index",
        values=("threads", "memory", "fasta", "sample"), refs=("reference",), inputs=("reads1", "reads2"),
        outputs=("bam", "bai"),
        body=('sort_mib=$((memory / 4 / threads))',
              'if [ "$sort_mib" -lt 64 ]; then sort_mib=64; fi',
              'bwa mem -t "$threads" -R "@RG\\tID:$sample\\tSM:$sample" "$reference/$fasta" "$reads1" "$reads2"'
              ' | samtools sort -@ "$threads" -m "$sort_mib"M -o "$bam" -',
              'samtools index -@ "$threads" "$bam" "$bai"'),
        timeout=24 * HOURS),
    "bcftools": Template(
        "bcftools", "bcftools mpileup | bcftools call of one BAM: a bgzipped VCF of the variant sites and its index",
        values=("threads", "fasta"), refs=("reference",), inputs=("bam",), outputs=("vcf", "tbi"),
        body=('bcftools mpileup --threads "$threads" -Ou -a FORMAT/AD,FORMAT/DP -f "$reference/$fasta" "$bam"'
              ' | bcftools call --threads "$threads" -mv -Oz -o "$vcf"',
              'bcftools index --threads "$threads" -t -o "$tbi" "$vcf"'),
        timeout=24 * HOURS),
    # the JVM heap follows the container's memory limit; the database comes staged (-nodownload)
    "snpeff": Template(
        "snpeff", "snpEff ann of one VCF against a snpEff database: a bgzipped annotated VCF and its index",
        values=("threads", "genome"), refs=("database",), inputs=("vcf",), outputs=("annotated", "tbi"),
        body=('java -XX:MaxRAMPercentage=75 -jar /usr/share/java/snpeff.jar ann -nodownload -noStats'
              ' -c /etc/snpeff/snpEff.config -dataDir "$database" -configOption "$genome.genome=$genome"'
              ' "$genome" "$vcf" | bgzip -@ "$threads" -c > "$annotated"',
              'tabix -p vcf "$annotated"',
              'if [ "$annotated.tbi" != "$tbi" ]; then mv "$annotated.tbi" "$tbi"; fi'),
        timeout=12 * HOURS),
}


# ---------------------------------------------------------------- job definitions

def retry_strategy(attempts: int) -> Dict[str, Any]:
    """Retry spot reclaims and genostage's retryable exit codes; every other failure ends the job.

    Rules apply in order, the first match wins. A spot reclaim has no exit code, so it is
    matched on the status reason; ``onReason: *`` then ends every other failure (bad input,
    usage, unusable scratch, the tool's own status, a timeout) instead of Batch's default of
    retrying what no rule matched.
    """
    rules: List[Dict[str, str]] = [{"onStatusReason": "Host EC2*", "action": "RETRY"}]
    rules += [{"onExitCode": str(code), "action": "RETRY"} for code in sorted(RETRYABLE)]
    rules.append({"onReason": "*", "action": "EXIT"})
    if len(rules) > MAX_RETRY_RULES:  # pragma: no cover - guards a change to RETRYABLE
        raise GenostageError(f"{len(rules)} retry rules: AWS Batch takes at most {MAX_RETRY_RULES}")
    return {"attempts": attempts, "evaluateOnExit": rules}


def _check(vcpus: int, memory: int, attempts: int, timeout: int, host_scratch: str, host_cache: str,
           name: str, platform: str, nofile: int) -> None:
    if vcpus < 1:
        raise UsageError(f"--vcpus must be at least 1, not {vcpus}")
    if memory < 4:
        raise UsageError(f"--memory is in MiB and must be at least 4, not {memory}")
    if not 1 <= attempts <= 10:
        raise UsageError(f"--attempts must be between 1 and 10 (AWS Batch's limit), not {attempts}")
    if timeout < 60:
        raise UsageError(f"--timeout must be at least 60 seconds (AWS Batch's minimum), not {timeout}")
    for option, path in (("--host-scratch", host_scratch), ("--host-cache", host_cache)):
        if not path.startswith("/"):
            raise UsageError(f"{option} must be an absolute path, not {path!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}", name):
        raise UsageError(f"job definition name {name!r}: up to 128 letters, digits, '-' and '_'")
    if platform not in PLATFORMS:
        raise UsageError(f"--platform must be x86_64 or arm64, not {platform!r}")
    if nofile < 1024:
        raise UsageError(f"--nofile must be at least 1024, not {nofile}")


def job_definition(tool: str, image: str, vcpus: int, memory: int, timeout: Optional[int] = None,
                   attempts: int = 3, name: Optional[str] = None, job_role_arn: Optional[str] = None,
                   host_scratch: str = HOST_SCRATCH, host_cache: str = HOST_CACHE,
                   cache_max_size: Optional[str] = None, platform: str = "x86_64",
                   command: Optional[Sequence[str]] = None, nofile: int = NOFILE) -> Dict[str, Any]:
    """A ``register_job_definition`` request for ``tool`` (``command`` replaces the template)."""
    template = TEMPLATES.get(tool)
    if template is None and command is None:
        raise UsageError(f"no job template for {tool!r}: choose from {', '.join(sorted(TEMPLATES))} "
                         "or give the genostage run arguments after --")
    if timeout is None:
        timeout = template.timeout if template is not None and command is None else DEFAULT_TIMEOUT
    suffix = "" if platform == "x86_64" else f"-{platform}"
    name = name or f"genostage-{tool}{suffix}"
    _check(vcpus, memory, attempts, timeout, host_scratch, host_cache, name, platform, nofile)
    if command is not None:
        args, defaults = list(command), {}
    else:
        assert template is not None
        args, defaults = template.run_args(tool), template.defaults(vcpus, memory)
    environment = [{"name": "GENOSTAGE_SCRATCH", "value": SCRATCH}, {"name": "GENOSTAGE_CACHE", "value": CACHE}]
    if cache_max_size:
        environment.append({"name": "GENOSTAGE_CACHE_MAX_SIZE", "value": cache_max_size})
    container: Dict[str, Any] = {
        "image": image,
        "command": args,
        "resourceRequirements": [
            {"type": "VCPU", "value": str(vcpus)},
            {"type": "MEMORY", "value": str(memory)},
        ],
        "volumes": [{"name": SCRATCH_VOLUME, "host": {"sourcePath": host_scratch}},
                    {"name": CACHE_VOLUME, "host": {"sourcePath": host_cache}}],
        "mountPoints": [{"sourceVolume": SCRATCH_VOLUME, "containerPath": SCRATCH, "readOnly": False},
                        {"sourceVolume": CACHE_VOLUME, "containerPath": CACHE, "readOnly": False}],
        "environment": environment,
        # an init process as PID 1: signals reach genostage, orphans are reaped
        "linuxParameters": {"initProcessEnabled": True},
        "ulimits": [{"name": "nofile", "softLimit": nofile, "hardLimit": nofile}],
    }
    if job_role_arn:
        container["jobRoleArn"] = job_role_arn
    definition: Dict[str, Any] = {
        "jobDefinitionName": name,
        "type": "container",
        # host volumes and ulimits: EC2 (on-demand or spot), not Fargate. An EC2 job runs on the
        # architecture of its compute environment's instances (runtimePlatform is Fargate's).
        "platformCapabilities": ["EC2"],
        "containerProperties": container,
        "retryStrategy": retry_strategy(attempts),
        "timeout": {"attemptDurationSeconds": timeout},
        "propagateTags": True,
        "tags": {"genostage:tool": tool, "genostage:architecture": platform},
    }
    if defaults:
        definition["parameters"] = defaults
    return definition


def validate(definition: Mapping[str, Any], operation: str = "RegisterJobDefinition") -> None:
    """Check a request against botocore's service model for Batch (what the SDK would refuse)."""
    from botocore.session import get_session
    from botocore.validate import ParamValidator

    shape = get_session().get_service_model("batch").operation_model(operation).input_shape
    report = ParamValidator().validate(dict(definition), shape)
    if report.has_errors():
        raise UsageError(f"{operation} request: {_one_line(report.generate_report())}")


def register(definition: Dict[str, Any], client: Any = None, region: Optional[str] = None) -> Dict[str, Any]:
    """Register with AWS Batch; returns ``{jobDefinitionName, jobDefinitionArn, revision}``."""
    from botocore.exceptions import BotoCoreError, ClientError

    validate(definition)
    if client is None:
        client = batch_client(region)
    what = f"registering job definition {definition['jobDefinitionName']}"
    try:
        reply = client.register_job_definition(**definition)
    except ClientError as exc:
        raise client_error(exc, what) from None
    except BotoCoreError as exc:
        raise botocore_error(exc, what) from None
    log.info("registered %s revision %s", reply["jobDefinitionArn"], reply["revision"])
    return {k: reply[k] for k in ("jobDefinitionName", "jobDefinitionArn", "revision")}


def batch_client(region: Optional[str] = None) -> Any:
    import boto3
    from botocore.exceptions import NoRegionError

    try:
        return boto3.client("batch", region_name=region)
    except NoRegionError:
        raise UsageError("AWS Batch needs a region: pass --region or set AWS_REGION") from None


# ---------------------------------------------------------------- errors

def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def botocore_error(exc: Exception, what: str) -> GenostageError:
    """One line for an SDK-side failure (no credentials, no connection)."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AccessDenied(f"{what}: no AWS credentials found (environment, profile or instance role)")
    return GenostageError(f"{what}: {_one_line(str(exc))}")


def client_error(exc: Any, what: str) -> GenostageError:
    """One line for a Batch ClientError: a missing queue, job definition or role named as such."""
    error = getattr(exc, "response", {}).get("Error", {})
    code, message = error.get("Code", ""), _one_line(error.get("Message", "") or str(exc))
    lower = message.lower()
    if code in ("AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
                "ExpiredTokenException"):
        return AccessDenied(f"{what}: access denied ({code}: {message})")
    missing = any(w in lower for w in ("does not exist", "not found", "doesn't exist", "could not find",
                                       "is not valid", "invalid", "cannot be assumed", "unable to assume"))
    if code in ("ClientException", "InvalidParameterValue", "InvalidParameterValueException") and missing:
        if "job queue" in lower or "jobqueue" in lower:
            return NotFound(f"{what}: no such job queue ({message})")
        if "job definition" in lower or "jobdefinition" in lower:
            return NotFound(f"{what}: no such job definition, or not ACTIVE ({message})")
        if "role" in lower:
            return NotFound(f"{what}: the IAM role does not exist or AWS Batch cannot assume it ({message})")
    return GenostageError(f"{what}: {code or 'error'}: {message}")


def is_throttled(exc: Any) -> bool:
    response = getattr(exc, "response", {}) or {}
    code = response.get("Error", {}).get("Code", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in THROTTLE_CODES or status == 429


# ---------------------------------------------------------------- submitting and following jobs

@dataclass
class Backoff:
    """Jittered exponential backoff (full jitter) within a time budget."""

    budget: float = 120.0
    base: float = 0.5
    cap: float = 20.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, again after a pause while Batch answers "throttled"; other errors pass through."""
        from botocore.exceptions import ClientError

        start = self.clock()
        attempt = 0
        while True:
            try:
                return fn()
            except ClientError as exc:
                if not is_throttled(exc):
                    raise
                pause = self.rng.uniform(0, min(self.cap, self.base * 2 ** attempt))
                elapsed = self.clock() - start
                if elapsed + pause > self.budget:
                    raise TransferFailed(f"{what}: still throttled by AWS Batch after {attempt + 1} attempts "
                                         f"in {elapsed:.0f} s (budget {self.budget:.0f} s)") from None
                attempt += 1
                log.debug("%s throttled; retrying in %.2f s", what, pause)
                self.sleep(pause)


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def check_payload(request: Mapping[str, Any]) -> None:
    """Refuse a SubmitJob request Batch would refuse for its size or shape, naming what is over."""
    overrides = request.get("containerOverrides")
    if overrides is not None:
        chars = len(json.dumps(overrides, separators=(",", ":"), ensure_ascii=False))
        if chars > MAX_OVERRIDES_CHARS:
            raise UsageError(f"job {request.get('jobName')}: containerOverrides is {chars:,} characters, over "
                             f"AWS Batch's {MAX_OVERRIDES_CHARS:,}: keep the details in a spec on S3")
    size = _size(request)
    if size > MAX_SUBMIT_BYTES:
        raise UsageError(f"job {request.get('jobName')}: the SubmitJob request is {size:,} bytes, over AWS "
                         f"Batch's {MAX_SUBMIT_BYTES:,} (30 KiB): keep the details in a spec on S3")
    array = request.get("arrayProperties", {}).get("size")
    if array is not None and not 2 <= array <= MAX_ARRAY_SIZE:
        raise UsageError(f"job {request.get('jobName')}: an array job has 2 to {MAX_ARRAY_SIZE:,} children, "
                         f"not {array:,}")
    depends = request.get("dependsOn") or []
    if len(depends) > MAX_DEPENDS_ON:
        raise UsageError(f"job {request.get('jobName')}: depends on {len(depends)} jobs; AWS Batch allows "
                         f"{MAX_DEPENDS_ON}")
    name = str(request.get("jobName", ""))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}", name):
        raise UsageError(f"job name {name!r}: up to 128 letters, digits, '-' and '_', starting with a letter or digit")


def submit_request(job_name: str, job_queue: str, job_definition: str,
                   parameters: Optional[Mapping[str, str]] = None, array_size: Optional[int] = None,
                   depends_on: Sequence[str] = (), vcpus: Optional[int] = None, memory: Optional[int] = None,
                   environment: Optional[Mapping[str, str]] = None, command: Optional[Sequence[str]] = None,
                   tags: Optional[Mapping[str, str]] = None, timeout: Optional[int] = None,
                   attempts: Optional[int] = None) -> Dict[str, Any]:
    """A SubmitJob request. ``vcpus``/``memory`` override the definition's resources and set the
    ``threads``/``memory`` parameters the templates use (so threads follow the vCPUs asked for)."""
    request: Dict[str, Any] = {"jobName": job_name, "jobQueue": job_queue, "jobDefinition": job_definition}
    params: Dict[str, str] = {}
    overrides: Dict[str, Any] = {}
    resources = []
    if vcpus is not None:
        resources.append({"type": "VCPU", "value": str(vcpus)})
        params["threads"] = str(vcpus)
    if memory is not None:
        resources.append({"type": "MEMORY", "value": str(memory)})
        params["memory"] = str(memory)
    if resources:
        overrides["resourceRequirements"] = resources
    if environment:
        overrides["environment"] = [{"name": k, "value": v} for k, v in environment.items()]
    if command is not None:
        overrides["command"] = list(command)
    params.update(parameters or {})
    if params:
        request["parameters"] = params
    if overrides:
        request["containerOverrides"] = overrides
    if array_size is not None:
        request["arrayProperties"] = {"size": array_size}
    if depends_on:
        request["dependsOn"] = [{"jobId": j} for j in depends_on]
    if tags:
        request["tags"] = dict(tags)
        request["propagateTags"] = True
    if timeout is not None:
        request["timeout"] = {"attemptDurationSeconds": timeout}
    if attempts is not None:
        request["retryStrategy"] = {"attempts": attempts}
    return request


def submit_job(client: Any, request: Mapping[str, Any], backoff: Optional[Backoff] = None) -> Dict[str, str]:
    """Submit one job (checked first; throttling retried): ``{jobId, jobName, jobArn}``."""
    from botocore.exceptions import BotoCoreError, ClientError

    check_payload(request)
    validate(request, "SubmitJob")
    what = f"submitting job {request['jobName']} to {request['jobQueue']}"
    try:
        reply = (backoff or Backoff()).call(what, lambda: client.submit_job(**request))
    except ClientError as exc:
        raise client_error(exc, what) from None
    except BotoCoreError as exc:
        raise botocore_error(exc, what) from None
    log.info("submitted %s: %s", request["jobName"], reply["jobId"])
    return {k: reply[k] for k in ("jobId", "jobName", "jobArn") if k in reply}


def call(client: Any, method: str, what: str, backoff: Optional[Backoff] = None, **kwargs: Any) -> Dict[str, Any]:
    """``client.<method>(**kwargs)`` (any Batch API call: ``list_jobs``, ``terminate_job``,
    ``describe_job_queues``...) with throttling retried and Batch's errors in one line."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        reply = (backoff or Backoff()).call(what, lambda: getattr(client, method)(**kwargs))
    except ClientError as exc:
        raise client_error(exc, what) from None
    except BotoCoreError as exc:
        raise botocore_error(exc, what) from None
    return dict(reply or {})


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def describe_jobs(client: Any, job_ids: Sequence[str], backoff: Optional[Backoff] = None) -> List[Dict[str, Any]]:
    """``describe_jobs`` of any number of ids, 100 a call (Batch's limit), throttling retried."""
    from botocore.exceptions import BotoCoreError, ClientError

    backoff = backoff or Backoff()
    jobs: List[Dict[str, Any]] = []
    for batch in _batches(list(job_ids), DESCRIBE_BATCH):
        what = f"describing {len(batch)} jobs"
        try:
            reply = backoff.call(what, lambda: client.describe_jobs(jobs=list(batch)))
        except ClientError as exc:
            raise client_error(exc, what) from None
        except BotoCoreError as exc:
            raise botocore_error(exc, what) from None
        jobs.extend(reply.get("jobs", []))
    return jobs


__all__ = ["Template", "TEMPLATES", "Backoff", "job_definition", "retry_strategy", "validate", "register",
           "batch_client", "client_error", "is_throttled", "check_payload", "submit_request", "submit_job",
           "describe_jobs", "call", "MAX_ARRAY_SIZE", "MAX_DEPENDS_ON", "PLATFORMS", "DEFAULT_TIMEOUT", "NOFILE",
           "HOST_SCRATCH", "HOST_CACHE"]
