"""Scatter/gather: one sample fanned out over chunks, each chunk a full genostage job, the
outputs gathered and proven complete.

- :mod:`.cut`: how the input is cut (FASTQ plans, plain gzip split once, BAM plans, sample sheets);
- :mod:`.spec`: the scatter spec on S3, all a child or the gather needs;
- :mod:`.local`: the local executor (children as processes here, the embedded default);
- :mod:`.gatherjob` and :mod:`.proof`: the gather and its conservation proof;
- :mod:`.status`: where a scatter stands, from its children's manifests.

In Python, in one call (``genostage.scatter`` is also callable as a function)::

    import genostage

    manifest = genostage.scatter("bwa mem -t 2 {ref}/ref.fa {reads.1} {reads.2} | samtools sort -o {bam} -",
                                 inputs={"reads": ["s3://b/S1_R1.fq.gz", "s3://b/S1_R2.fq.gz"]},
                                 refs={"ref": "s3://b/refs/bwa/"}, outputs={"bam": "s3://b/aln/S1.bam"},
                                 parts=8, gather={"bam": "merge"})

or with the job spelled out (``from genostage.scatter import scatter`` for type checkers)::

    from genostage.job.spec import JobSpec
    from genostage.scatter import Scatter

    job = JobSpec(command=["bwa mem -t 2 {ref}/ref.fa {reads.1} {reads.2} | samtools sort -o {bam} -"],
                  shell=True, inputs={"reads": ["s3://b/S1_R1.fq.gz", "s3://b/S1_R2.fq.gz"]},
                  refs={"ref": "s3://b/refs/bwa/"}, outputs={"bam": "s3://b/aln/S1.bam"})
    manifest = Scatter(job, split="reads", parts=8, gather={"bam": "merge"}).run()
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import types
from typing import Any, Dict, Mapping, Optional, Sequence

from ..cancel import Cancel
from ..config import TransferConfig
from ..errors import FormatError, NotFound, UsageError
from ..job.manifest import default_location
from ..job.spec import JobSpec, has_index, replace_index
from ..location import parse
from ..store import Stores
from .cut import Cut, CutOptions, cut_input, read_sheet
from .gatherjob import run_gather
from .local import LocalExecutor
from .spec import TRANSFER_SETTINGS, Gather, ScatterSpec, kind_of, load, save
from .status import scatter_state

log = logging.getLogger("genostage.scatter")

HOWS = {"bam": ("merge", "cat"), "vcf": ("concat",), "fastq": ("cat",), "text": ("cat",)}


def gather_rule(name: str, text: str, uri: str) -> str:
    """``merge`` or ``bam=merge`` for output ``name`` at ``uri``: the rule as KIND=HOW."""
    kind, sep, how = text.partition("=")
    if not sep:
        kind, how = kind_of(uri), text
    if kind not in HOWS:
        raise UsageError(f"--gather {name}={text}: unknown kind {kind!r} (expected {', '.join(HOWS)})")
    if how not in HOWS[kind]:
        raise UsageError(f"--gather {name}={text}: a {kind} output is gathered by "
                         f"{' or '.join(HOWS[kind])}, not {how!r}")
    return f"{kind}={how}"


def _suffix(uri: str) -> str:
    name = parse(uri).name
    for suffix in (".fastq.gz", ".fq.gz", ".vcf.gz", ".vcf.bgz", ".bam", ".bcf", ".fastq", ".fq", ".vcf", ".txt"):
        if name.endswith(suffix):
            return suffix
    return os.path.splitext(name)[1]



def _fill_placeholders(uri: str, text: str) -> str:
    """``uri`` with its per-child placeholders (``{index}`` in any format, ``{id}``) as ``text``."""
    return replace_index(uri, text).replace("{id}", text)

class Scatter:
    """A scatter to plan and run (see the module docstring).

    ``split``: the input to cut (default: the only input); ``sheet``: a TSV sample sheet
    instead (one child per row); ``parts``/``records``/``nbytes``/``by_name``/``by_reference``/
    ``regions``: how to cut; ``gather``: output NAME -> rule (``merge``, ``cat``, ``concat``, or
    ``KIND=HOW``); outputs without a rule keep one object per child, so their URI must hold
    ``{index}`` (or ``{id}``). ``jobs``: children at once (local executor); ``attempts``:
    tries per child; ``allow_failed``: children that may fail, the rest gathered;
    ``drops_reads``: the tool drops reads on purpose (no per-child read conservation);
    ``work``: where the spec, plan, parts and children's manifests go (default
    ``<first gathered output>.scatter/``); ``manifest``: the final manifest's place."""

    def __init__(self, job: JobSpec, *, split: Optional[str] = None, sheet: Optional[str] = None,
                 parts: Optional[int] = None, records: Optional[int] = None, nbytes: Optional[int] = None,
                 by_name: bool = False, by_reference: bool = False, regions: Optional[str] = None,
                 bam_index: Optional[str] = None, gather: Optional[Mapping[str, str]] = None, jobs: Optional[int] = None,
                 attempts: int = 2, allow_failed: int = 0, drops_reads: bool = False, work: Optional[str] = None,
                 manifest: Optional[str] = None, config: Optional[TransferConfig] = None,
                 stores: Optional[Stores] = None, show_progress: bool = True) -> None:
        self.job = job
        self.split, self.sheet = split, sheet
        self.options = CutOptions(parts, records, nbytes, by_name, by_reference, regions, bam_index)
        self.gather = dict(gather or {})
        self.jobs = jobs
        self.attempts, self.allow_failed, self.drops_reads = attempts, allow_failed, drops_reads
        self.work, self.manifest = work, manifest
        self.config = config or (stores.config if stores else TransferConfig())
        self.stores = stores or Stores(self.config)
        self.show_progress = show_progress
        self.cancel = Cancel()

    # -- planning ------------------------------------------------------------------
    def _check(self) -> str:
        self.job.check()
        if self.sheet and self.split:
            raise UsageError("give --split or --sheet, not both")
        for name in self.gather:
            if name not in self.job.outputs:
                raise UsageError(f"--gather {name}: no output named {name!r} (declare it with -o {name}=URI)")
        for name, uri in self.job.outputs.items():
            if name not in self.gather and not has_index(uri) and "{id}" not in uri:
                raise UsageError(f"output {name!r} is written by every child: give --gather {name}=RULE, or put "
                                 f"{{index}} (or {{id}} with --sheet) in its URI to keep one object per child")
        if self.sheet:
            return ""
        split = self.split
        if split is None:
            if len(self.job.inputs) != 1:
                raise UsageError("several inputs: say which one to cut with --split NAME (or give --sheet)")
            split = next(iter(self.job.inputs))
        if split not in self.job.inputs:
            raise UsageError(f"--split {split}: no input named {split!r}")
        return split

    def _work(self) -> str:
        if self.work:
            return self.work if self.work.endswith("/") else self.work + "/"
        first = next((self.job.outputs[n] for n in self.gather), None) or next(iter(self.job.outputs.values()), None)
        if first is None:
            raise UsageError("a scatter needs an output (-o NAME=URI), or --work URI for its spec and parts")
        return _fill_placeholders(first.rstrip("/"), "all") + ".scatter/"

    def _request(self, split: str) -> str:
        """What the children do: the same request finds the same spec (a rerun resumes)."""
        text = json.dumps({"job": self.job.to_json(), "split": split, "sheet": self.sheet,
                           "cut": self.options.__dict__, "gather": self.gather}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def _existing(self, work: str, request: str) -> Optional[ScatterSpec]:
        try:
            spec = load(work + "spec.json", self.stores)
        except (NotFound, FormatError):
            return None
        if spec.extra.get("request") != request:
            log.info("%sspec.json is another scatter's: planning this one anew", work)
            return None
        spec.conserve, spec.allow_failed, spec.attempts = not self.drops_reads, self.allow_failed, self.attempts
        spec.reads = {**spec.reads, "dropped": True} if self.drops_reads else \
            {k: v for k, v in spec.reads.items() if k != "dropped"}
        if self.manifest:
            spec.manifest = self.manifest
        save(spec, self.stores)
        log.info("scatter %s: the same scatter was planned before (%s): resuming it", spec.id, spec.uri)
        return spec

    def plan(self) -> ScatterSpec:
        """Cut the input, write the plan and the spec; the spec (on S3 or local) is returned.
        The same request again (same job, cut and rules) reuses the spec it wrote, so a rerun
        runs only the children that have not succeeded."""
        split = self._check()
        work = self._work()
        request = self._request(split)
        existing = self._existing(work, request)
        if existing is not None:
            return existing
        started = time.time()
        if self.sheet:
            cut = read_sheet(self.stores, self.sheet)
        else:
            uris = self.job.inputs[split]
            uris = list(uris) if isinstance(uris, list) else [uris]
            if len(uris) > 2:
                raise UsageError(f"input {split!r}: cut one FASTQ or BAM, or a FASTQ pair, not {len(uris)} files")
            cut = cut_input(self.stores, self.config, split, uris, self.options, work, self.job.scratch)
        spec = self._spec(work, cut, split)
        spec.extra["request"] = request
        save(spec, self.stores)
        log.info("scatter %s: %d children (%s), spec %s, planned in %.1f s", spec.id, spec.children,
                 cut.kind, spec.uri, time.time() - started)
        return spec

    def _spec(self, work: str, cut: Cut, split: str) -> ScatterSpec:
        job = copy.deepcopy(self.job)
        job.inputs.update(cut.template)
        for name in cut.rows[0] if cut.rows else ():
            job.inputs.pop(name, None)  # each row gives its own
        gathers = []
        for name, text in self.gather.items():
            uri = job.outputs[name]
            rule = gather_rule(name, text, uri)
            part = f"{work}parts/{name}/part-{{index:05}}{_suffix(uri)}"
            gathers.append(Gather(name, rule, part, uri))
            job.outputs[name] = part
            job.count[name] = rule.split("=", 1)[0]
        if cut.reads:
            job.reads = cut.reads["input"]
        job.manifest = None
        ident = hashlib.sha1(f"{work}|{time.time()}".encode()).hexdigest()[:8]
        first = gathers[0].output if gathers else next(iter(self.job.outputs.values()))
        stem = parse(_fill_placeholders(first, "all")).name or "scatter"
        return ScatterSpec(id=f"{stem}-{ident}", children=cut.children, job=job, work=work, gather=gathers,
                           rows=cut.rows, ids=cut.ids, reads=cut.reads if not self.drops_reads else
                           {**cut.reads, "dropped": True}, conserve=not self.drops_reads, attempts=self.attempts,
                           allow_failed=self.allow_failed,
                           manifest=self.manifest or default_location(_fill_placeholders(first, "all")),
                           extra={"plan": cut.plan, "cut": cut.kind, "planning_bytes_read": cut.bytes_read,
                                  "transfer": {k: getattr(self.config, k) for k in TRANSFER_SETTINGS}})

    # -- running -------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        """Plan, run the children here (:mod:`.local`), gather; returns the final manifest."""
        spec = self.plan()
        return run_local(spec, self.stores, self.config, jobs=self.jobs, cancel=self.cancel,
                         show_progress=self.show_progress)


def default_jobs(threads: int = 1) -> int:
    from ..cpu import available

    return max(1, available() // max(1, threads))


def run_local(spec: ScatterSpec, stores: Stores, config: TransferConfig, jobs: Optional[int] = None,
              cancel: Optional[Cancel] = None, show_progress: bool = True, log_dir: Optional[str] = None,
              env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Run the children that have not succeeded yet (a rerun resumes), then gather."""
    cancel = cancel or Cancel()
    states = scatter_state(spec, stores)
    todo = [s.index for s in states if not s.done]
    if len(todo) < spec.children:
        log.info("scatter %s: %d of %d children already done, with their outputs; running the other %d",
                 spec.id, spec.children - len(todo), spec.children, len(todo))
    if todo:
        logs = log_dir or os.path.join(tempfile.gettempdir(), f"genostage-scatter-{spec.id}")
        child_env = dict(os.environ if env is None else env)
        if config.endpoint_url:  # children here talk to the same store as the scatter
            child_env["AWS_ENDPOINT_URL"] = config.endpoint_url
        executor = LocalExecutor(spec, jobs or default_jobs(), logs, cancel, env=child_env,
                                 show_progress=show_progress)
        outcomes = executor.run(todo)
        if log_dir is None and not cancel.is_set() and all(o.status == "succeeded" for o in outcomes.values()):
            shutil.rmtree(logs, ignore_errors=True)  # what each child did is in its manifest
        else:
            log.info("children's logs: %s", logs)
        cancel.check()
    return run_gather(spec, stores, config, show_progress=show_progress)


def scatter(command: "str | Sequence[str]", *, inputs: Optional[Mapping[str, Any]] = None,
            refs: Optional[Mapping[str, str]] = None, outputs: Optional[Mapping[str, str]] = None,
            shell: Optional[bool] = None, scratch: Optional[str] = None, **options: Any) -> Dict[str, Any]:
    """Scatter ``command`` over the chunks of one input, run the children here, gather; returns
    the final manifest. ``command``: a string runs with bash (``shell``), a list as argv; the
    placeholders are ``genostage run``'s (``{NAME}``, ``{NAME.1}``/``{NAME.2}`` for a pair).
    ``options`` are :class:`Scatter`'s (``parts``, ``gather``, ``jobs``, ``config``, ...)."""
    argv = [command] if isinstance(command, str) else [str(a) for a in command]
    job = JobSpec(command=argv, inputs=dict(inputs or {}), refs=dict(refs or {}), outputs=dict(outputs or {}),
                  shell=isinstance(command, str) if shell is None else shell, scratch=scratch)
    return Scatter(job, **options).run()


class _CallableModule(types.ModuleType):
    """``genostage.scatter(...)``: the package, callable as :func:`scatter`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        return scatter(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["Scatter", "ScatterSpec", "load", "run_gather", "run_local", "scatter", "scatter_state"]
