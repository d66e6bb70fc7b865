"""One job, declared: what ``genostage run`` is told on its command line, as data.

A :class:`JobSpec` names the inputs, references and outputs (``NAME=URI``), the command and
how it runs, and where scratch and the manifest go; :func:`run_job` runs it. ``genostage run``
builds one from its options; a scatter (:mod:`genostage.scatter`) writes one per child into its
spec, so a child started with the spec's URI and its index needs no long command line.

``{index}`` in an output URI (or ``{index:04}`` for the zero-padded form) is the job's array
index (``AWS_BATCH_JOB_ARRAY_INDEX``, or ``index``); an input ``plan.json#`` takes that index's
chunk.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..config import TransferConfig
from ..errors import FormatError, UsageError
from .job import Job
from .scratch import KEEP_POLICIES, Keep
from .staging import split_list

_INDEX = re.compile(r"\{index(?::(0?)([0-9]*)d?)?\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_assignment(text: str, option: str) -> "tuple[str, str]":
    """``NAME=URI`` as given to ``-i``/``-o``/``-r``."""
    name, sep, uri = text.partition("=")
    if not sep or not name or not uri:
        raise UsageError(f"{option} expects NAME=URI, got {text!r}")
    if not _NAME.match(name):
        raise UsageError(f"{option}: name {name!r} must be letters, digits and _ (not starting with a digit)")
    return name, uri


def named(values: List[str], option: str, lists: bool = False) -> Dict[str, Any]:
    """Several ``NAME=URI`` options as a mapping; a name given twice is refused. ``lists``:
    ``NAME=URI1,URI2`` is a list of URIs (a read pair)."""
    out: Dict[str, Any] = {}
    for text in values:
        name, uri = parse_assignment(text, option)
        if name in out:
            raise UsageError(f"{option} {name} given twice")
        out[name] = split_list(uri) if lists else uri
    return out


def has_index(uri: str) -> bool:
    """Whether ``uri`` holds an ``{index}`` placeholder (``{index}``, ``{index:04}``, ``{index:04d}``)."""
    return bool(_INDEX.search(uri))


def replace_index(uri: str, text: str) -> str:
    """``uri`` with every ``{index}`` placeholder, whatever its format, replaced by ``text``."""
    return _INDEX.sub(lambda m: text, uri)


def with_index(uri: str, index: Optional[int], what: str) -> str:
    """``uri`` with ``{index}`` / ``{index:04}`` filled in (an error when there is no index)."""
    if not _INDEX.search(uri):
        return uri
    if index is None:
        raise UsageError(f"{what}: {uri} uses {{index}}, but this job has no array index "
                         f"(AWS_BATCH_JOB_ARRAY_INDEX is not set; genostage run --index N sets one)")

    def fill(m: "re.Match[str]") -> str:
        width = int(m.group(2) or 0)
        return f"{index:0{width}d}" if m.group(1) or width else str(index)

    return _INDEX.sub(fill, uri)


@dataclass
class JobSpec:
    """One job (see the module docstring); every field but ``command`` is optional."""

    command: List[str]
    inputs: Dict[str, Any] = field(default_factory=dict)  # NAME -> URI, or a list of URIs
    refs: Dict[str, str] = field(default_factory=dict)
    outputs: Dict[str, str] = field(default_factory=dict)
    shell: bool = False
    stdout: Optional[str] = None
    stderr: Optional[str] = None
    manifest: Optional[str] = None
    scratch: Optional[str] = None
    keep: Keep = "never"
    grace: float = 10.0
    cache: Optional[str] = None
    cache_max_size: Optional[str] = None
    cache_link: str = "auto"
    count: Dict[str, str] = field(default_factory=dict)  # output NAME -> record kind, counted after the tool
    reads: Optional[str] = None  # the input whose reads are counted (a scatter's chunk)
    stream: List[str] = field(default_factory=list)  # inputs and outputs streamed through FIFOs

    def check(self) -> None:
        """Refuse what cannot run, in one line each."""
        if not self.command:
            raise UsageError("no command given (expected: genostage run [OPTIONS] -- COMMAND [ARG]...)")
        both = (set(self.inputs) & set(self.outputs)) | (set(self.refs) & (set(self.inputs) | set(self.outputs)))
        if both:
            raise UsageError(f"name used twice (inputs, references, outputs): {', '.join(sorted(both))}")
        for option, name in (("--stdout", self.stdout), ("--stderr", self.stderr)):
            if name is not None and name not in self.outputs:
                raise UsageError(f"{option} {name}: no output named {name!r} (declare it with -o {name}=URI)")
        if self.keep not in KEEP_POLICIES:
            raise UsageError(f"keep must be one of {', '.join(KEEP_POLICIES)}, got {self.keep!r}")
        for name in self.count:
            if name not in self.outputs:
                raise UsageError(f"records of {name!r} are to be counted, but there is no output {name!r}")
        if self.reads is not None and self.reads not in self.inputs:
            raise UsageError(f"reads of {self.reads!r} are to be counted, but there is no input {self.reads!r}")
        for name in self.stream:
            if name not in self.inputs and name not in self.outputs:
                raise UsageError(f"--stream {name}: no input or output named {name!r}")
            if name in self.count:
                raise UsageError(f"--stream {name}: a streamed output cannot be counted (its bytes are gone); "
                                 f"stage it instead")
            if name in (self.stdout, self.stderr):
                raise UsageError(f"--stream {name}: --stdout/--stderr outputs are files; do not stream them")

    def to_json(self) -> Dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, {}, False) or k == "command"}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "JobSpec":
        if not isinstance(data, dict) or not isinstance(data.get("command"), list):
            raise FormatError("a job needs a \"command\" list", path=where)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise FormatError(f"unknown job field(s): {', '.join(unknown)}", path=where)
        for key in ("inputs", "refs", "outputs"):
            value = data.get(key, {})
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and (isinstance(v, str) or key == "inputs" and isinstance(v, list)
                                            and all(isinstance(u, str) for u in v))
                    for k, v in value.items()):
                raise FormatError(f"job field {key!r} must map names to URIs", path=where)
        if not all(isinstance(a, str) for a in data["command"]):
            raise FormatError("job field 'command' must be a list of strings", path=where)
        return cls(**data)


def run_job(spec: JobSpec, config: TransferConfig, index: Optional[int] = None,
            show_progress: bool = True, env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Run ``spec`` as one job and return its manifest (raises what ended it)."""
    spec.check()
    cache = None
    if spec.cache:
        from .cache import Cache

        cache = Cache(spec.cache, spec.cache_max_size, link=spec.cache_link)
    job = Job(scratch_root=spec.scratch, keep=spec.keep, config=config, manifest=spec.manifest,
              grace=spec.grace, show_progress=show_progress, cache=cache, index=index)
    outputs = {name: with_index(uri, job.index, f"output {name!r}") for name, uri in spec.outputs.items()}
    with job:
        paths: Dict[str, str] = {}
        for name, uri in outputs.items():  # first: the manifest's place is known before any byte moves
            paths[name] = str(job.stream_output(uri, name) if name in spec.stream else job.output(uri, name))
        if spec.refs:
            paths.update({name: str(p) for name, p in job.stage_refs(spec.refs).items()})
        for name in (n for n in spec.inputs if n in spec.stream):
            paths.update({k: str(p) for k, p in job.stream_input(spec.inputs[name], name).items()})
        staged = {n: u for n, u in spec.inputs.items() if n not in spec.stream}
        if staged:
            paths.update({name: str(p) for name, p in job.stage_inputs(staged).items()})
        job.run(spec.command, shell=spec.shell, values=paths, env=env,
                stdout=paths[spec.stdout] if spec.stdout else None,
                stderr=paths[spec.stderr] if spec.stderr else None)
        if spec.count or spec.reads:
            job.extra["records"] = _records(job, spec, paths)
    return job.manifest


def _records(job: Job, spec: JobSpec, paths: Mapping[str, str]) -> Dict[str, Any]:
    """What a scatter's proof needs of one child: the reads of its chunk, the records of its outputs."""
    from ..split.gather import count

    out: Dict[str, Any] = {"out": {name: count(kind, paths[name]).to_json() for name, kind in spec.count.items()}}
    if spec.reads is not None:
        streamed = next((s for s in job.streamed_inputs if s.name == spec.reads), None)
        if streamed is not None:
            records = streamed.stats.get("records")
            out["in"] = {"input": spec.reads, "reads": records * len(streamed.paths) if isinstance(records, int)
                         else None}
        else:
            staged = next(s for s in job.inputs_staged if s.name == spec.reads)
            out["in"] = {"input": spec.reads, "reads": count_reads(staged)}
    return out


def count_reads(staged: Any) -> int:
    """Reads in a staged input: a chunk's own count when its plan gave one (FASTQ: records, or
    pairs times two), else counted in its files (BAM: primary records)."""
    from ..split.gather import count

    files = list(staged.chunk_files or staged.members or [str(staged.path)])
    records = staged.chunk_stats.get("records") if staged.chunk_stats else None
    if isinstance(records, int) and not str(files[0]).endswith(".bam"):
        return records * len(files)
    total = 0
    for f in files:
        c = count("bam" if str(f).endswith(".bam") else "fastq", str(f))
        total += c.primary
    return total
