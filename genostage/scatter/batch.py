"""The AWS Batch executor: a scatter's children as an AWS Batch array job, its gather as a job
that depends on it.

The spec is planned and written to S3 as for the local executor; then:

- **children**: one array job of N children (Batch takes 2 to 10,000 a job). Every image's
  entrypoint is ``genostage run``, so a child's command is only ``--spec SPEC``: its index
  comes from ``AWS_BATCH_JOB_ARRAY_INDEX`` and everything else from the spec, so the request
  stays small whatever the scatter holds. One child: a plain job with ``--index 0``. More
  than 10,000: several arrays of at most 10,000, the second and later ones with
  ``--index-offset K`` (child = K + array index). At most 20 arrays (200,000 children):
  the gather depends on every array and Batch allows 20 dependencies; a larger scatter is
  refused before anything is submitted (cut it into fewer parts).
- **a rerun** of the same scatter submits only the children without verified outputs
  (:func:`unfinished`). When those are not one run of consecutive indices, their indices go
  into a small JSON object under the work prefix (``<work>batch/<id>/submission-NNN.indices.json``)
  and each child's command is ``--spec SPEC --indices LIST [--index-offset K]``: the child is
  ``LIST[K + array index]``.
- **the gather**: ``genostage run -- genostage scatter gather SPEC`` (the gather as a tool of
  ``genostage run``, the images' entrypoint), depending on every array. Batch fails a job
  whose dependency failed without running it; when at most ``allow_failed`` children failed,
  :meth:`BatchScatter.follow` submits the gather again without dependencies.

Resources (``resourceRequirements`` overrides for the children and the gather), tags for cost
tracking (``genostage:scatter``, ``genostage:sample``, ``genostage:role`` and the caller's, with
``propagateTags``), and the retry strategy (the definition's, or ``attempts`` with genostage's
rules: :func:`genostage.deploy.batch.retry_strategy`) go with every request; each request is
checked against Batch's limits and botocore's model before it is sent, throttling is retried
(:mod:`genostage.deploy.batch`). What was submitted is recorded in the spec
(``spec.extra["batch"]["submissions"]``), so ``genostage scatter status`` and a rerun find it.
A failure part way through a submission terminates what it had submitted: nothing is left
half-submitted.
"""
from __future__ import annotations

import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ..cancel import Cancel
from ..deploy import batch as B
from ..errors import AccessDenied, ChildrenFailed, FormatError, GenostageError, NotFound, UsageError
from ..exitcodes import TRANSFER
from ..job.manifest import iso
from ..location import parse
from ..progress import Progress
from ..store import Stores
from ..transfer import put_verified
from .spec import ScatterSpec, save
from .status import child_state, read_manifest

log = logging.getLogger("genostage.scatter")

MAX_CHILDREN = B.MAX_ARRAY_SIZE * B.MAX_DEPENDS_ON  # 200,000: 20 arrays, the gather's 20 dependencies
INDICES_FORMAT = "genostage-scatter-indices/1"
ACTIVE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
ENDED = ("SUCCEEDED", "FAILED")
MAX_TAGS = 50
POLL = 30.0  # seconds between two looks at the jobs while waiting
MAX_LOOK_ERRORS = 5  # looks in a row that may fail (a network fault) before waiting gives up


# ---------------------------------------------------------------- what is submitted

@dataclass
class BatchOptions:
    """Where and how the jobs run. ``definition``: a job definition (``NAME``, ``NAME:REV`` or
    an ARN) whose image has genostage's entrypoint; or ``image``: register one from this image
    (``genostage-scatter-<repository>``, reused while it is the same). ``attempts``: None keeps
    the definition's retry strategy; a number sends genostage's (spot reclaims and exit codes
    5, 6, 10 retried, everything else ends the job)."""

    queue: str
    definition: Optional[str] = None
    image: Optional[str] = None
    job_role_arn: Optional[str] = None
    child_vcpus: Optional[int] = None
    child_memory: Optional[int] = None
    gather_vcpus: Optional[int] = None
    gather_memory: Optional[int] = None
    tags: Dict[str, str] = field(default_factory=dict)
    attempts: Optional[int] = None

    RECORDED = ("child_vcpus", "child_memory", "gather_vcpus", "gather_memory", "tags", "attempts")

    def record(self) -> Dict[str, Any]:
        """What a submission keeps of these options (so a gather submitted later is the same)."""
        return {k: getattr(self, k) for k in self.RECORDED if getattr(self, k) not in (None, {})}

    @classmethod
    def of(cls, submission: "Submission") -> "BatchOptions":
        """The options ``submission`` was made with (for following it, or a gather again)."""
        known = {k: v for k, v in submission.options.items() if k in cls.RECORDED}
        return cls(queue=submission.queue, definition=submission.definition, **known)

    def check(self) -> None:
        if not self.queue:
            raise UsageError("--executor batch needs --job-queue NAME")
        if bool(self.definition) == bool(self.image):
            raise UsageError("--executor batch needs --job-definition NAME[:REV] or --image URI (to register one), "
                             "not " + ("both" if self.definition else "neither"))
        if self.job_role_arn and not self.image:
            raise UsageError("--job-role-arn goes into a definition registered from --image; "
                             "--job-definition already names its role")
        for option, value, low in (("--child-vcpus", self.child_vcpus, 1), ("--gather-vcpus", self.gather_vcpus, 1),
                                   ("--child-memory", self.child_memory, 4), ("--gather-memory", self.gather_memory, 4)):
            if value is not None and value < low:
                raise UsageError(f"{option} must be at least {low}, got {value}")
        if self.attempts is not None and not 1 <= self.attempts <= 10:
            raise UsageError(f"--attempts must be between 1 and 10 on AWS Batch, got {self.attempts}")
        check_tags(self.tags)


def check_tags(tags: Mapping[str, str]) -> None:
    """Batch's rules for tags: at most 50, keys of 1-128 characters not starting with ``aws:``,
    values of at most 256."""
    for key, value in tags.items():
        if not 1 <= len(key) <= 128 or key.lower().startswith("aws:"):
            raise UsageError(f"--tag {key}={value}: a tag key has 1 to 128 characters and does not start with 'aws:'")
        if len(value) > 256:
            raise UsageError(f"--tag {key}=...: a tag value has at most 256 characters, not {len(value)}")
    if len(tags) > MAX_TAGS - 3:  # genostage adds three
        raise UsageError(f"{len(tags)} tags: AWS Batch takes {MAX_TAGS} a job, genostage's 3 included")


@dataclass
class ArrayJob:
    """One submitted job of children: an array of ``size`` (or a plain job when ``size`` is 1),
    covering positions ``offset .. offset+size-1`` of the submission's children."""

    job_id: str
    name: str
    offset: int
    size: int

    def to_json(self) -> Dict[str, Any]:
        return {"jobId": self.job_id, "jobName": self.name, "offset": self.offset, "size": self.size}


@dataclass
class Submission:
    """What one ``genostage scatter --executor batch`` submitted. ``children`` are the child
    indices in the order of the arrays' positions: a run ``first..first+count-1``
    (``first`` set, no list) or the list written to ``indices``."""

    number: int
    queue: str
    definition: str
    count: int
    arrays: List[ArrayJob] = field(default_factory=list)
    gathers: List[Dict[str, str]] = field(default_factory=list)  # the last one is the one that counts
    first: Optional[int] = 0
    indices: Optional[str] = None
    submitted: float = field(default_factory=time.time)
    options: Dict[str, Any] = field(default_factory=dict)  # resources, tags, attempts (for a gather again)
    children: Optional[List[int]] = None  # in memory only (the list behind ``indices``)

    @property
    def gather(self) -> Optional[Dict[str, str]]:
        return self.gathers[-1] if self.gathers else None

    def job_ids(self) -> List[str]:
        return [a.job_id for a in self.arrays] + ([self.gather["jobId"]] if self.gather else [])

    def child_index(self, array: ArrayJob, array_index: int, stores: Optional[Stores] = None) -> int:
        """The child that ``array``'s child ``array_index`` runs."""
        position = array.offset + array_index
        if self.first is not None:
            return self.first + position
        if self.children is None:
            if self.indices is None or stores is None:
                raise UsageError("this submission's children are listed in its indices file: give the stores to read it")
            self.children = read_indices(self.indices, stores)
        return self.children[position]

    def to_json(self) -> Dict[str, Any]:
        return {"submission": self.number, "submitted": iso(self.submitted), "submitted_at": self.submitted,
                "queue": self.queue, "definition": self.definition, "children": self.count, "first": self.first,
                "indices": self.indices, "arrays": [a.to_json() for a in self.arrays], "gathers": self.gathers,
                "options": self.options}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Submission":
        try:
            return cls(number=int(data["submission"]), queue=str(data["queue"]), definition=str(data["definition"]),
                       count=int(data["children"]),
                       arrays=[ArrayJob(str(a["jobId"]), str(a["jobName"]), int(a["offset"]), int(a["size"]))
                               for a in data.get("arrays", [])],
                       gathers=[{"jobId": str(g["jobId"]), "jobName": str(g["jobName"])}
                                for g in data.get("gathers", [])],
                       first=None if data.get("first") is None else int(data["first"]),
                       indices=data.get("indices"), submitted=float(data.get("submitted_at", 0)),
                       options=dict(data.get("options") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"the spec's batch submission record is malformed: {exc}") from None


def submissions(spec: ScatterSpec) -> List[Submission]:
    """What earlier runs submitted for this spec, oldest first."""
    record = spec.extra.get("batch") or {}
    return [Submission.from_json(s) for s in record.get("submissions", [])]


def latest(spec: ScatterSpec) -> Optional[Submission]:
    found = submissions(spec)
    return found[-1] if found else None


def _record(spec: ScatterSpec, submission: Submission) -> None:
    record = dict(spec.extra.get("batch") or {})
    done = [s for s in record.get("submissions", []) if s.get("submission") != submission.number]
    record["submissions"] = [*done, submission.to_json()]
    spec.extra["batch"] = record


# ---------------------------------------------------------------- which children, which commands

def slices(count: int, size: int = B.MAX_ARRAY_SIZE) -> List[Tuple[int, int]]:
    """(offset, size) of the jobs ``count`` children take: arrays of at most ``size``."""
    return [(start, min(size, count - start)) for start in range(0, count, size)]


def child_command(spec_uri: str, array: ArrayJob, first: Optional[int], indices: Optional[str]) -> List[str]:
    """The arguments of ``genostage run`` (the image's entrypoint) for one job of children."""
    command = ["--spec", spec_uri]
    if array.size == 1:  # a plain job: no array index
        index = array.offset + first if first is not None else None
        if index is not None:
            return command + ["--index", str(index)]
        return command + ["--indices", str(indices), "--index", str(array.offset)]
    if indices is not None:
        command += ["--indices", indices]
    offset = array.offset + (first or 0) if indices is None else array.offset
    return command + (["--index-offset", str(offset)] if offset else [])


def gather_command(spec_uri: str) -> List[str]:
    """The gather as a tool of ``genostage run``: ``genostage scatter gather SPEC``."""
    return ["--", "genostage", "scatter", "gather", spec_uri]


def read_indices(uri: str, stores: Stores) -> List[int]:
    """The child indices a rerun's array maps its array indices to (written by :meth:`BatchScatter.submit`)."""
    raw = stores.read_whole(uri, "indices list")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise FormatError(f"not JSON: {exc}", path=uri) from None
    values = data.get("indices") if isinstance(data, dict) and data.get("format") == INDICES_FORMAT else None
    if not isinstance(values, list) or not all(isinstance(v, int) and v >= 0 for v in values):
        raise FormatError(f"not a genostage indices list (expected {{\"format\": \"{INDICES_FORMAT}\", "
                          "\"indices\": [whole numbers]}})", path=uri)
    return values


def child_index(position: int, indices: Optional[Sequence[int]] = None, where: str = "") -> int:
    """The child at ``position`` (array index + offset): itself, or the list's entry there."""
    if indices is None:
        return position
    if not 0 <= position < len(indices):
        raise UsageError(f"array position {position} is outside the indices list{' ' + where if where else ''} "
                         f"({len(indices)} children: 0..{len(indices) - 1})")
    return indices[position]


def unfinished(spec: ScatterSpec, stores: Stores) -> List[int]:
    """The children without verified outputs, in order. One listing of the children's manifests
    first: children with no manifest have not run (no read each), so a fresh scatter of 25,000
    costs a LIST of 25 pages, not 25,000 HEADs."""
    prefix = parse(f"{spec.work}children/{spec.id}/")
    present = set()
    try:
        for info in stores.for_location(prefix).list(prefix):
            name = (info.relative or "").rsplit("/", 1)[-1]
            stem = name[:-len(".manifest.json")] if name.endswith(".manifest.json") else ""
            if stem.isdigit() and int(stem) < spec.children:
                present.add(int(stem))
    except NotFound:
        pass
    if not present:
        return list(range(spec.children))
    with ThreadPoolExecutor(8) as pool:
        done = {i for i, state in zip(sorted(present), pool.map(lambda i: child_state(spec, i, stores), sorted(present)))
                if state.done}
    return [i for i in range(spec.children) if i not in done]


def job_name(spec: ScatterSpec, role: str) -> str:
    """``<scatter id>-<role>`` in Batch's alphabet (letters, digits, ``-``, ``_``; 128 at most)."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "-", spec.id).strip("-_") or "scatter"
    return f"{stem[:100]}-{role}"


def _stem(name: str) -> str:
    for suffix in (".scatter", ".gz", ".bgz", ".bam", ".cram", ".sam", ".vcf", ".bcf", ".fastq", ".fq", ".txt", ".tsv"):
        if name.lower().endswith(suffix):
            name = name[:-len(suffix)]
    return name


def sample_of(spec: ScatterSpec) -> str:
    """What the scatter is about, for a tag: the first output's name without its format suffixes
    (``S1.bam`` -> ``S1``); where outputs are per child (``{id}.txt``), the work prefix's name."""
    first = spec.gather[0].output if spec.gather else next(iter(spec.job.outputs.values()), "")
    for uri in (first, spec.work.rstrip("/")):
        name = _stem(parse(re.sub(r"\{(index|id)[^}]*\}", "", uri)).name) if uri else ""
        if name and not name.startswith("."):
            return re.sub(r"[^\w .:/=+@-]", "_", name)[:256]
    return "scatter"


def image_definition_name(image: str) -> str:
    """``genostage-scatter-<repository>`` for an image URI (``.../genostage/bwa:0.7.17`` -> ``bwa``)."""
    repository = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    return "genostage-scatter-" + (re.sub(r"[^A-Za-z0-9_-]", "-", repository)[:100] or "image")


def _rules(strategy: Any) -> Any:
    """A retry strategy as compared: Batch answers its actions in lower case (``retry``)."""
    if not isinstance(strategy, dict):
        return strategy
    rules = [{k: (v.upper() if k == "action" and isinstance(v, str) else v) for k, v in r.items()}
             for r in strategy.get("evaluateOnExit") or []]
    return {"attempts": strategy.get("attempts"), "evaluateOnExit": rules}


def _same_definition(wanted: Mapping[str, Any], found: Mapping[str, Any]) -> bool:
    mine, theirs = wanted["containerProperties"], found.get("containerProperties") or {}
    keys = ("image", "command", "resourceRequirements", "jobRoleArn", "environment", "volumes", "mountPoints")
    return all(mine.get(k) == theirs.get(k) for k in keys) and \
        _rules(wanted.get("retryStrategy")) == _rules(found.get("retryStrategy")) and \
        wanted.get("timeout") == found.get("timeout")


# ---------------------------------------------------------------- the executor

@dataclass
class Followed:
    """How waiting ended: ``state`` is ``succeeded``, ``failed`` or ``stopped`` (we stopped
    waiting; the jobs go on). ``exit_status`` is the gather's container exit code (0 when it
    succeeded; 5 when it failed without one), 128+N when waiting was stopped by signal N."""

    state: str
    exit_status: int
    message: str
    counts: Dict[str, int]
    manifest: Optional[Dict[str, Any]] = None


def child_counts(submission: Submission, jobs: Mapping[str, Mapping[str, Any]]) -> Dict[str, int]:
    """Children succeeded, failed, running and waiting, from the jobs as Batch describes them
    (an array's ``statusSummary``; a plain job's status)."""
    counts = {"succeeded": 0, "failed": 0, "running": 0, "waiting": 0}
    for array in submission.arrays:
        job = jobs.get(array.job_id) or {}
        if array.size == 1:
            summary = {str(job.get("status", "SUBMITTED")): 1}
        else:
            summary = {k: int(v) for k, v in ((job.get("arrayProperties") or {}).get("statusSummary") or {}).items()}
        seen = 0
        for status, n in summary.items():
            key = {"SUCCEEDED": "succeeded", "FAILED": "failed", "RUNNING": "running", "STARTING": "running"}.get(
                status, "waiting")
            counts[key] += n
            seen += n
        counts["waiting"] += max(0, array.size - seen)  # children Batch has not made yet
    return counts


def counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{counts[k]:,} {k}" for k in ("succeeded", "failed", "running", "waiting") if counts.get(k))


def exit_code_of(job: Mapping[str, Any]) -> Optional[int]:
    """A job's container exit code (its last attempt's when the job's own is missing)."""
    code = (job.get("container") or {}).get("exitCode")
    if code is None:
        attempts = job.get("attempts") or []
        code = (attempts[-1].get("container") or {}).get("exitCode") if attempts else None
    return int(code) if code is not None else None


class BatchScatter:
    """Submits a scatter's children and gather to AWS Batch and follows them (module docstring).

    ``client``: a boto3 Batch client; ``backoff``: how throttled calls are retried."""

    def __init__(self, options: BatchOptions, client: Any, stores: Stores,
                 backoff: Optional[B.Backoff] = None) -> None:
        options.check()
        self.options = options
        self.client = client
        self.stores = stores
        self.backoff = backoff or B.Backoff()
        self._definition: Optional[str] = None

    # -- before planning -----------------------------------------------------------
    def check(self) -> None:
        """The queue exists and takes jobs; the job definition exists (when one is named).
        Checked before planning, so a typo costs one line, not a plan."""
        what = f"looking up job queue {self.options.queue}"
        queues = B.call(self.client, "describe_job_queues", what, self.backoff, jobQueues=[self.options.queue])
        found = queues.get("jobQueues") or []
        if not found:
            raise NotFound(f"{what}: no such job queue")
        state = found[0].get("state")
        if state and state != "ENABLED":
            raise UsageError(f"job queue {self.options.queue} is {state}: it takes no jobs until it is ENABLED")
        if self.options.definition:
            self._definition = self._find_definition(self.options.definition)

    def _definitions(self, what: str, **query: Any) -> List[Dict[str, Any]]:
        """Every ACTIVE job definition ``describe_job_definitions(**query)`` lists (all pages)."""
        found: List[Dict[str, Any]] = []
        token = None
        while True:
            reply = B.call(self.client, "describe_job_definitions", what, self.backoff,
                           **query, **({"nextToken": token} if token else {}))
            found += [d for d in reply.get("jobDefinitions") or [] if d.get("status", "ACTIVE") == "ACTIVE"]
            token = reply.get("nextToken")
            if not token:
                return found

    def _find_definition(self, name: str) -> str:
        """``name`` (NAME, NAME:REV or an ARN) when it is an ACTIVE job definition."""
        what = f"looking up job definition {name}"
        if name.startswith("arn:"):
            found = self._definitions(what, jobDefinitions=[name])
        else:
            base, _, revision = name.partition(":")
            found = [d for d in self._definitions(what, jobDefinitionName=base, status="ACTIVE")
                     if not revision or str(d.get("revision")) == revision]
        if not found:
            raise NotFound(f"{what}: no such job definition, or not ACTIVE")
        return name

    def definition(self) -> str:
        """The job definition the jobs use: the one named, or one registered from the image
        (an ACTIVE revision with the same content is reused)."""
        if self._definition is not None:
            return self._definition
        if self.options.definition:
            self._definition = self._find_definition(self.options.definition)
            return self._definition
        assert self.options.image is not None
        name = image_definition_name(self.options.image)
        wanted = B.job_definition(name.replace("genostage-scatter-", "", 1), self.options.image,
                                  vcpus=self.options.child_vcpus or 1, memory=self.options.child_memory or 2048,
                                  attempts=self.options.attempts or 3, name=name,
                                  job_role_arn=self.options.job_role_arn, command=["--spec", "Ref::spec"])
        B.validate(wanted)
        same = [d for d in self._definitions(f"looking up job definition {name}", jobDefinitionName=name,
                                             status="ACTIVE") if _same_definition(wanted, d)]
        if same:
            best = max(same, key=lambda d: int(d.get("revision", 0)))
            self._definition = f"{name}:{best['revision']}"
            log.info("job definition %s: the same as the image's, reused", self._definition)
        else:
            registered = B.register(wanted, client=self.client)
            self._definition = f"{name}:{registered['revision']}"
        return self._definition

    # -- submitting ----------------------------------------------------------------
    def _tags(self, spec: ScatterSpec, role: str, number: int) -> Dict[str, str]:
        return {"genostage:scatter": spec.id, "genostage:sample": sample_of(spec), "genostage:role": role,
                "genostage:submission": str(number), **self.options.tags}

    def _retry(self, request: Dict[str, Any]) -> Dict[str, Any]:
        if self.options.attempts is not None:
            request["retryStrategy"] = B.retry_strategy(self.options.attempts)
        return request

    def child_requests(self, spec: ScatterSpec, submission: Submission) -> Iterator[Tuple[ArrayJob, Dict[str, Any]]]:
        """The SubmitJob request of each job of children (its job id still to come)."""
        several = len(slices(submission.count)) > 1
        for n, (offset, size) in enumerate(slices(submission.count), 1):
            array = ArrayJob("", job_name(spec, f"children-{n}" if several else "children"), offset, size)
            request = B.submit_request(array.name, submission.queue, submission.definition,
                                       array_size=size if size > 1 else None,
                                       vcpus=self.options.child_vcpus, memory=self.options.child_memory,
                                       command=child_command(spec.uri, array, submission.first, submission.indices),
                                       tags=self._tags(spec, "children", submission.number))
            yield array, self._retry(request)

    def gather_request(self, spec: ScatterSpec, submission: Submission, depends: Sequence[str]) -> Dict[str, Any]:
        request = B.submit_request(job_name(spec, "gather"), submission.queue, submission.definition,
                                   depends_on=list(depends), vcpus=self.options.gather_vcpus,
                                   memory=self.options.gather_memory, command=gather_command(spec.uri),
                                   tags=self._tags(spec, "gather", submission.number))
        return self._retry(request)

    def _refuse_if_active(self, spec: ScatterSpec) -> None:
        before = latest(spec)
        if before is None:
            return
        ids = before.job_ids()
        jobs = B.describe_jobs(self.client, ids, self.backoff) if ids else []
        active = [j for j in jobs if j.get("status") in ACTIVE]
        if active:
            j = active[0]
            raise UsageError(f"scatter {spec.id}: its last submission's jobs are still going ({j.get('jobName')} "
                             f"{j.get('jobId')}: {j.get('status')}; {len(active)} active): follow them with "
                             f"genostage scatter status {spec.uri} --wait, or end them with aws batch terminate-job "
                             f"before submitting again")

    def submit(self, spec: ScatterSpec, children: Optional[List[int]] = None,
               cancel: Optional[Cancel] = None) -> Submission:
        """Submit the children not yet done (or ``children``) and a gather depending on them;
        the submission is recorded in the spec, which is saved again."""
        self._refuse_if_active(spec)
        todo = unfinished(spec, self.stores) if children is None else sorted(children)
        if len(todo) > MAX_CHILDREN:
            raise UsageError(f"{len(todo):,} children: AWS Batch takes at most {MAX_CHILDREN:,} in one scatter "
                             f"({B.MAX_DEPENDS_ON} arrays of {B.MAX_ARRAY_SIZE:,}: the gather may depend on "
                             f"{B.MAX_DEPENDS_ON} jobs); cut the input into fewer parts")
        if len(todo) < spec.children:
            log.info("scatter %s: %d of %d children already done, with their outputs; submitting the other %d",
                     spec.id, spec.children - len(todo), spec.children, len(todo))
        number = len(submissions(spec)) + 1
        contiguous = not todo or todo == list(range(todo[0], todo[0] + len(todo)))
        submission = Submission(number, self.options.queue, self.definition(), len(todo),
                                first=todo[0] if todo and contiguous else (0 if not todo else None), children=todo,
                                options=self.options.record())
        if not contiguous:
            submission.indices = f"{spec.work}batch/{spec.id}/submission-{number:03d}.indices.json"
            body = json.dumps({"format": INDICES_FORMAT, "spec": spec.uri, "indices": todo}, separators=(",", ":"))
            put_verified(self.stores, parse(submission.indices), body.encode() + b"\n")
        try:
            for array, request in self.child_requests(spec, submission):
                if cancel is not None:
                    cancel.check()
                array.job_id = B.submit_job(self.client, request, self.backoff)["jobId"]
                submission.arrays.append(array)
            if cancel is not None:
                cancel.check()
            gather = B.submit_job(self.client, self.gather_request(spec, submission,
                                                                   [a.job_id for a in submission.arrays]), self.backoff)
            submission.gathers.append({"jobId": gather["jobId"], "jobName": gather.get("jobName", "")})
        except BaseException:
            self._terminate(submission, "genostage scatter: the rest of the submission failed")
            raise
        _record(spec, submission)
        save(spec, self.stores)
        log.info("scatter %s: %d children submitted to AWS Batch queue %s (%s) in %d job(s), gather %s",
                 spec.id, len(todo), submission.queue, submission.definition, len(submission.arrays),
                 submission.gather["jobId"] if submission.gather else "-")
        return submission

    def _terminate(self, submission: Submission, reason: str) -> None:
        for job_id in submission.job_ids():
            try:
                B.call(self.client, "terminate_job", f"terminating job {job_id}", self.backoff, jobId=job_id,
                       reason=reason)
                log.warning("terminated job %s (%s)", job_id, reason)
            except GenostageError as exc:
                log.error("could not terminate job %s: %s", job_id, exc)

    def submit_gather(self, spec: ScatterSpec, submission: Submission) -> Dict[str, str]:
        """A gather again, with no dependencies (its children have all ended); recorded in the spec."""
        gather = B.submit_job(self.client, self.gather_request(spec, submission, []), self.backoff)
        submission.gathers.append({"jobId": gather["jobId"], "jobName": gather.get("jobName", "")})
        _record(spec, submission)
        save(spec, self.stores)
        return submission.gathers[-1]

    # -- following -----------------------------------------------------------------
    def follow(self, spec: ScatterSpec, submission: Submission, cancel: Optional[Cancel] = None,
               show_progress: bool = True, poll: float = POLL) -> Followed:
        """Wait for the gather to end, showing the children's progress; see :class:`Followed`."""
        cancel = cancel or Cancel()
        progress = Progress(submission.count or None, f"scatter {spec.id} on AWS Batch", unit="children",
                            enabled=show_progress)
        phase = progress.phase("submitted")  # its text says what the children and the gather are doing
        ended = -1
        errors = 0
        try:
            while True:
                try:
                    jobs = {j["jobId"]: j for j in B.describe_jobs(self.client, submission.job_ids(), self.backoff)}
                    errors = 0
                except (AccessDenied, NotFound, UsageError):
                    raise
                except GenostageError as exc:  # a network fault, throttling beyond the budget: look again later
                    errors += 1
                    if errors >= MAX_LOOK_ERRORS:
                        raise
                    log.warning("looking at the jobs failed (%d in a row, %d allowed): %s; trying again in %.0f s",
                                errors, MAX_LOOK_ERRORS, exc, poll)
                    if cancel.wait(poll):
                        return Followed("stopped", 128 + cancel.signum, self._stopped(spec), {})
                    continue
                counts = child_counts(submission, jobs)
                gather = jobs.get(submission.gather["jobId"]) if submission.gather else None
                if submission.gather and gather is None:
                    raise NotFound(f"gather job {submission.gather['jobId']} is not known to AWS Batch (another "
                                   "region? Batch forgets jobs some days after they end)")
                status = str((gather or {}).get("status", ""))
                phase.text = counts_text(counts) + (f"; gather {status}" if status else "")
                # the children ended (succeeded or failed); a line at most every log interval
                first = ended < 0
                progress.update(counts["succeeded"] + counts["failed"] - max(0, ended))
                ended = counts["succeeded"] + counts["failed"]
                if first:
                    progress.refresh()  # the first look at once
                if status in ENDED:
                    outcome = self._ended(spec, submission, gather or {}, jobs, counts)
                    if outcome is not None:
                        return outcome
                    continue  # a gather submitted again: follow it
                if cancel.wait(poll):
                    return Followed("stopped", 128 + cancel.signum, self._stopped(spec), counts)
        finally:
            phase.end()
            progress.close()

    @staticmethod
    def _stopped(spec: ScatterSpec) -> str:
        return f"stopped waiting; the jobs go on: follow them with genostage scatter status {spec.uri} --wait"

    def _ended(self, spec: ScatterSpec, submission: Submission, gather: Mapping[str, Any],
               jobs: Mapping[str, Mapping[str, Any]], counts: Dict[str, int]) -> Optional[Followed]:
        name = f"gather job {gather.get('jobName', '')} ({gather.get('jobId')})"
        reason = gather.get("statusReason") or ""
        code = exit_code_of(gather)
        if gather.get("status") == "SUCCEEDED":
            manifest = read_manifest(self.stores, spec.manifest) if spec.manifest else None
            return Followed("succeeded", code or 0, f"{name} succeeded; children {counts_text(counts)}", counts, manifest)
        failed_arrays = [a for a in submission.arrays if (jobs.get(a.job_id) or {}).get("status") == "FAILED"]
        if code is None and failed_arrays:  # Batch failed the gather without running it: a child failed
            if counts["failed"] <= spec.allow_failed and len(submission.gathers) == 1:
                log.warning("scatter %s: %d child(ren) failed, at most %d may: submitting the gather again without "
                            "its dependencies", spec.id, counts["failed"], spec.allow_failed)
                self.submit_gather(spec, submission)
                return None
            raise self._children_failed(spec, submission, failed_arrays[0], counts)
        if code is None:
            return Followed("failed", TRANSFER, f"{name} failed without an exit code ({reason or 'no reason given'}): "
                            f"its instance may have been lost; genostage scatter status {spec.uri}", counts)
        return Followed("failed", code, f"{name} failed with exit status {code} ({reason}); its manifest: "
                        f"{spec.manifest}", counts)

    def _children_failed(self, spec: ScatterSpec, submission: Submission, array: ArrayJob,
                         counts: Mapping[str, int]) -> ChildrenFailed:
        """One line about the first failed child Batch lists: its index, exit code and reason."""
        job: Mapping[str, Any] = {}
        index: Optional[int] = None
        if array.size == 1:
            job = next(iter(B.describe_jobs(self.client, [array.job_id], self.backoff)), {})
            index = submission.child_index(array, 0, self.stores)
        else:
            listed = B.call(self.client, "list_jobs", f"listing the failed children of {array.job_id}", self.backoff,
                            arrayJobId=array.job_id, jobStatus="FAILED")
            first = sorted(listed.get("jobSummaryList") or [],
                           key=lambda j: int((j.get("arrayProperties") or {}).get("index", 0)))
            if first:
                job = next(iter(B.describe_jobs(self.client, [first[0]["jobId"]], self.backoff)), {}) or first[0]
                at = (job.get("arrayProperties") or {}).get("index")
                if at is None:
                    at = str(job.get("jobId", "")).rpartition(":")[2]
                index = submission.child_index(array, int(at), self.stores) if str(at).isdigit() else None
        code = exit_code_of(job) if job else None
        where = f"child {index}" if index is not None else "a child"
        detail = f"exit status {code}" if code is not None else "no exit code"
        reason = job.get("statusReason") if job else None
        manifest = f"; its manifest: {spec.child_manifest(index)}" if index is not None else ""
        return ChildrenFailed(f"{counts['failed']:,} of {submission.count:,} children failed on AWS Batch (at most "
                              f"{spec.allow_failed} may), so the gather did not run; {where}: {detail}"
                              f"{' (' + str(reason) + ')' if reason else ''}{manifest}; genostage scatter status "
                              f"{spec.uri}; the same scatter again resubmits the children not done",
                              code if code else TRANSFER)


def describe(client: Any, submission: Submission, backoff: Optional[B.Backoff] = None) -> List[str]:
    """Lines for ``genostage scatter status``: each job of the submission, as Batch has it now."""
    jobs = {j["jobId"]: j for j in B.describe_jobs(client, submission.job_ids(), backoff)}
    lines = [f"AWS Batch: submission {submission.number} ({iso(submission.submitted)}, queue {submission.queue}, "
             f"definition {submission.definition}): {submission.count:,} children in {len(submission.arrays)} job(s)"]
    for array in submission.arrays:
        job = jobs.get(array.job_id) or {}
        line = f"  children {array.name} {array.job_id}: {job.get('status', 'not known to Batch')}"
        if array.size > 1:
            summary = (job.get("arrayProperties") or {}).get("statusSummary") or {}
            parts = ", ".join(f"{n:,} {s}" for s, n in summary.items() if n)
            line += f"; array of {array.size:,}" + (f": {parts}" if parts else "")
        lines.append(line)
    if submission.gather:
        job = jobs.get(submission.gather["jobId"]) or {}
        code = exit_code_of(job)
        reason = job.get("statusReason")
        lines.append(f"  gather {submission.gather['jobName']} {submission.gather['jobId']}: "
                     f"{job.get('status', 'not known to Batch')}" + (f", exit status {code}" if code is not None else "")
                     + (f" ({reason})" if reason and job.get("status") == "FAILED" else ""))
    return lines


__all__ = ["BatchOptions", "BatchScatter", "Submission", "ArrayJob", "Followed", "MAX_CHILDREN", "child_command",
           "gather_command", "child_counts", "child_index", "describe", "latest", "read_indices", "slices",
           "submissions", "unfinished", "job_name", "check_tags"]
