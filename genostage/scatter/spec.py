"""The scatter spec: everything a child or the gather needs, in one JSON object on S3.

Written once by ``genostage scatter`` to ``<work>/spec.json`` (the work prefix defaults to the
first gathered output's URI plus ``.scatter/``), it holds the job template every child runs,
the number of children, how each output is gathered and proven, and the scatter's policies.
A child is started with the spec's URI and its index only (``genostage run --spec URI``,
index from ``AWS_BATCH_JOB_ARRAY_INDEX``), so an AWS Batch array job needs no long command
line; the gather job reads the same spec.

::

    {"format": "genostage-scatter/1", "id": "S1.bam-3f9c0a1b", "children": 8,
     "work": "s3://b/aln/S1.bam.scatter/",
     "job": {JobSpec, with {index} in its chunk input, part outputs and manifest},
     "rows": [{...per-child inputs...}, ...],        # a sample sheet, or chunks split beforehand
     "gather": [{"name": "bam", "rule": "bam=merge", "parts": ".../parts/bam/part-{index:05}.bam",
                 "output": "s3://b/aln/S1.bam"}],
     "reads": {"input": "reads", "paired": true},     # what each child counts as its reads in
     "conserve": true, "attempts": 2, "allow_failed": 0,
     "manifest": "s3://b/aln/S1.bam.manifest.json", "created": ..., "created_by": "genostage 0.1.0"}
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .. import __version__
from ..config import TransferConfig
from ..errors import FormatError, UsageError
from ..job.spec import JobSpec, with_index
from ..location import parse
from ..store import Stores
from ..transfer import put_verified

FORMAT = "genostage-scatter/1"
# the transfer settings a scatter hands its children
TRANSFER_SETTINGS = ("concurrency", "part_size", "multipart_threshold", "download_part_size", "sse",
                     "sse_kms_key_id", "requester_pays", "verify", "sign")
KINDS = ("bam", "vcf", "fastq", "text")
EXTRA = ("plan", "cut", "planning_bytes_read", "transfer", "request", "batch")  # kept as they are


def kind_of(uri: str) -> str:
    """The record kind of an output, from its name: bam, vcf (VCF/BCF), fastq, or text."""
    name = parse(uri).name.lower() if uri else ""
    for suffix in (".gz", ".bgz"):
        if name.endswith(suffix):
            name = name[:-len(suffix)]
    if name.endswith((".bam", ".cram", ".sam")):
        return "bam"
    if name.endswith((".vcf", ".bcf")):
        return "vcf"
    if name.endswith((".fastq", ".fq")):
        return "fastq"
    return "text"


@dataclass
class Gather:
    """One output gathered from the children's parts."""

    name: str
    rule: str  # KIND=HOW, as genostage.split.gather names it
    parts: str  # each child's part, with {index}
    output: str  # the gathered object

    @property
    def kind(self) -> str:
        return self.rule.split("=", 1)[0]


@dataclass
class ScatterSpec:
    """See the module docstring."""

    id: str
    children: int
    job: JobSpec
    work: str
    gather: List[Gather] = field(default_factory=list)
    rows: List[Dict[str, Any]] = field(default_factory=list)
    ids: List[str] = field(default_factory=list)
    reads: Dict[str, Any] = field(default_factory=dict)
    conserve: bool = True
    attempts: int = 2
    allow_failed: int = 0
    manifest: Optional[str] = None
    created: float = field(default_factory=time.time)
    created_by: str = f"genostage {__version__}"
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return self.work + "spec.json"

    def child_manifest(self, index: int) -> str:
        return f"{self.work}children/{self.id}/{index:05d}.manifest.json"

    def child(self, index: int) -> JobSpec:
        """The job child ``index`` runs: the template with its index (and row) filled in."""
        if not 0 <= index < self.children:
            raise UsageError(f"child index {index} out of range: the scatter has {self.children} children "
                             f"(0..{self.children - 1})")
        job = copy.deepcopy(self.job)
        if self.rows:
            job.inputs.update(self.rows[index])
        job.inputs = {k: _fill(v, index, f"input {k!r}") for k, v in job.inputs.items()}
        job.outputs = {k: self._name(with_index(v, index, f"output {k!r}"), index) for k, v in job.outputs.items()}
        job.manifest = self.child_manifest(index)
        return job

    def _name(self, uri: str, index: int) -> str:
        """``{id}``: the child's id from a sample sheet (else its index)."""
        return uri.replace("{id}", self.ids[index] if self.ids else str(index))

    def transfer_config(self, base: TransferConfig) -> TransferConfig:
        """``base`` with the transfer settings the scatter was started with (endpoints stay
        the child's own: a Batch child talks to AWS, not to the submitter's endpoint)."""
        settings = {k: v for k, v in (self.extra.get("transfer") or {}).items() if k in TRANSFER_SETTINGS}
        return dataclasses.replace(base, **settings) if settings else base

    def part(self, g: Gather, index: int) -> str:
        return with_index(g.parts, index, f"part of {g.name!r}")

    def to_json(self) -> Dict[str, Any]:
        return {"format": FORMAT, "id": self.id, "children": self.children, "work": self.work,
                "job": self.job.to_json(), "rows": self.rows, "ids": self.ids,
                "gather": [g.__dict__ for g in self.gather], "reads": self.reads, "conserve": self.conserve,
                "attempts": self.attempts, "allow_failed": self.allow_failed, "manifest": self.manifest,
                "created": self.created, "created_by": self.created_by, **self.extra}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "ScatterSpec":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise FormatError(f"not a genostage scatter spec (expected \"format\": \"{FORMAT}\")", path=where)
        try:
            children = int(data["children"])
            job = JobSpec.from_json(data["job"], where)
            gather = [Gather(str(g["name"]), str(g["rule"]), str(g["parts"]), str(g["output"]))
                      for g in data.get("gather", [])]
            spec = cls(id=str(data["id"]), children=children, job=job, work=str(data["work"]), gather=gather,
                       rows=list(data.get("rows") or []), ids=[str(i) for i in data.get("ids") or []],
                       reads=dict(data.get("reads") or {}),
                       conserve=bool(data.get("conserve", True)), attempts=int(data.get("attempts", 2)),
                       allow_failed=int(data.get("allow_failed", 0)), manifest=data.get("manifest"),
                       created=float(data.get("created", 0)), created_by=str(data.get("created_by", "")),
                       extra={k: v for k, v in data.items() if k in EXTRA})
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"scatter spec field missing or of the wrong type: {exc}", path=where) from None
        if children < 1 or (spec.rows and len(spec.rows) != children):
            raise FormatError(f"scatter spec: {children} children but {len(spec.rows)} rows", path=where)
        return spec


def _fill(value: Any, index: int, what: str) -> Any:
    if isinstance(value, list):
        return [with_index(v, index, what) for v in value]
    return with_index(value, index, what)


def save(spec: ScatterSpec, stores: Stores) -> None:
    put_verified(stores, parse(spec.uri), (json.dumps(spec.to_json(), indent=1) + "\n").encode())


def load(uri: str, stores: Stores) -> ScatterSpec:
    """Read a spec (local or ``s3://``); a missing or malformed one is one clear error."""
    raw = stores.read_whole(uri, "scatter spec")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise FormatError(f"not JSON: {exc}", path=uri) from None
    return ScatterSpec.from_json(data, uri)
