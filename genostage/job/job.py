"""``Job``: scratch, staging and the tool tied together, with a provenance manifest.

    with genostage.Job() as job:
        stats = job.output("s3://bucket/results/sample.stats.txt")   # declare outputs first
        bam = job.input("s3://bucket/sample.bam")        # staged now, verified
        ref = job.input("s3://bucket/refs/hg38/")        # a prefix: a directory
        job.run(["samtools", "stats", "--reference", ref / "hg38.fa", bam], stdout=stats)
    # clean exit: outputs published and verified, manifest written; scratch removed in every case

**Publishing** is all or nothing: every output is uploaded, multipart uploads are completed
only once every output's bytes are in, and if anything fails (or a stop comes) before the
last is published, the objects this attempt published are removed again; the manifest
records exactly what is published (``"published": true`` on each output that is).

**Signals.** SIGTERM or SIGINT: the tool's process group gets SIGTERM (SIGKILL after
``grace`` seconds), transfers in flight stop and uploads are aborted, the manifest is
written, scratch is removed, and :class:`~genostage.errors.Interrupted` propagates (the CLI
exits 128+N). A signal that arrives once every output is published changes nothing: the
job has succeeded.

**Spot instances.** In an AWS Batch job (``AWS_BATCH_JOB_ID`` set), or wherever
``GENOSTAGE_IMDS_ENDPOINT`` points, a watcher polls the instance metadata service every 2 s
(``GENOSTAGE_SPOT_INTERVAL``) for the spot interruption notice EC2 gives two minutes ahead;
on a notice the job stops as on SIGTERM and ends with
:class:`~genostage.errors.Preempted` (exit 10, which the job definitions retry).

**Retries.** An attempt killed outright (SIGKILL, a lost instance) leaves its scratch
directory behind; the next job on the same root sweeps it, and when it is the same AWS Batch
job (same ``AWS_BATCH_JOB_ID``) it resumes the downloads that attempt had started (each part
read back and verified) and aborts the multipart uploads it had left open.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Set, Union

from ..cancel import Cancel
from ..config import TransferConfig
from ..errors import Preempted, ToolFailed, UsageError
from ..fsutil import check_space, write_atomic
from ..location import Location, parse
from ..store import Stores
from ..transfer import Transfer, put_verified
from ..transfer.journal import clear_upload_journals, leftover_uploads
from . import manifest as M
from .scratch import Keep, Scratch
from .spot import ENV_ENDPOINT, SpotWatcher
from .streams import StreamedInput, StreamedOutput, make_fifo, stream_chunk, stream_object
from .staging import Staged, collect_output, fetch_chunks, plan_input, plan_output, transfer_staged
from .tool import Tool, ToolResult

if TYPE_CHECKING:
    from .cache import Cache, Lease

log = logging.getLogger("genostage.job")

PathLike = Union[str, "os.PathLike[str]"]


class Job:
    """One batch job: a private scratch directory, staged inputs, one or more tool runs,
    published outputs, and a manifest. Use it as a context manager.

    Parameters:

    - ``scratch_root``: where the job's private directory is made (default
      ``$GENOSTAGE_SCRATCH``, else ``/scratch`` if writable, else the system temp directory).
    - ``keep``: when to keep the scratch directory: ``"never"`` (default), ``"on-failure"``,
      ``"always"``.
    - ``config``: a :class:`~genostage.TransferConfig` (concurrency, part size, endpoint, SSE...).
    - ``stores`` / ``s3_client``: the stores to use, or a boto3 client to lend its credentials
      and region (both optional).
    - ``manifest``: where the manifest goes (default: named after the first output; see
      :mod:`genostage.job.manifest`).
    - ``grace``: seconds between the SIGTERM forwarded to the tool and its SIGKILL.
    - ``handle_signals``: install SIGTERM/SIGINT handlers (main thread only).
    - ``show_progress``: progress bar on a terminal, log lines otherwise.
    - ``cache``: a node-level :class:`~genostage.Cache` for reference data (:meth:`ref`).
    - ``index``: the job's index in an array (default ``AWS_BATCH_JOB_ARRAY_INDEX``): the chunk
      a ``plan.json#`` input stages, and ``{index}`` in output URIs.
    """

    def __init__(self, scratch_root: Optional[str] = None, keep: Keep = "never",
                 config: Optional[TransferConfig] = None, stores: Optional[Stores] = None,
                 s3_client: Any = None, manifest: Optional[str] = None, grace: float = 10.0,
                 handle_signals: bool = True, show_progress: bool = True, cache: "Optional[Cache]" = None,
                 index: Optional[int] = None) -> None:
        self.config = config or (stores.config if stores else TransferConfig())
        self.stores = stores or Stores(self.config, s3_client)
        self.scratch = Scratch(scratch_root, keep)
        self.index = M.array_index() if index is None else index
        self.manifest_uri = manifest
        self.grace = grace
        self.handle_signals = handle_signals
        self.show_progress = show_progress
        self.inputs_staged: List[Staged] = []
        self.outputs: List[Staged] = []
        self.runs: List[ToolResult] = []
        self.timings: Dict[str, float] = {"stage_in": 0.0, "run": 0.0, "stage_out": 0.0}
        self.cancel = Cancel()
        self.manifest: Dict[str, Any] = {}
        self.published = False  # every output is published: nothing can undo the job now
        self._preempted: Optional[Preempted] = None
        self.streamed_inputs: List[StreamedInput] = []
        self.streamed_outputs: List[StreamedOutput] = []
        self._spot: Optional[SpotWatcher] = None
        self.extra: Dict[str, Any] = {}  # more for the manifest (a scatter child's record counts)
        self._taken: Set[str] = set()
        self._tool: Optional[Tool] = None
        self._busy = False
        self._old_handlers: Dict[int, Any] = {}
        self._started = 0.0
        self.path: Optional[Path] = None
        self.cache = cache  # reference data (job.ref) comes through this node-level cache
        self.references: List[str] = []
        self.leases: "List[Lease]" = []

    # -- context -------------------------------------------------------------
    def __enter__(self) -> "Job":
        self._started = time.time()
        self.path = self.scratch.create()
        (self.path / "work").mkdir()
        self.transfer = Transfer(self.stores, self.config, cancel=self.cancel,
                                 partial_dir=self.scratch.partial_dir, show_progress=self.show_progress)
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        self._abort_leftover_uploads()
        self._watch_spot()
        return self

    def _watch_spot(self) -> None:
        if not (os.environ.get("AWS_BATCH_JOB_ID") or os.environ.get(ENV_ENDPOINT)):
            return
        text = os.environ.get("GENOSTAGE_SPOT_INTERVAL") or "2"
        try:
            interval = float(text)
        except ValueError:
            raise UsageError(f"GENOSTAGE_SPOT_INTERVAL={text!r}: expected seconds, e.g. 2") from None
        self._spot = SpotWatcher(self._on_spot_notice, interval=interval).start()

    def _on_spot_notice(self, notice: str) -> None:
        """On the watcher's thread: stop as a SIGTERM would, from the main thread (where the
        signal handler runs), so whatever the job is doing is interrupted there."""
        self._preempted = Preempted(f"spot interruption notice ({notice}): stopped so that a retry runs elsewhere")
        log.warning("%s", self._preempted)
        if self._old_handlers:
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            self.stop(15, self._preempted)

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        error: Optional[BaseException] = exc
        if error is None:
            try:
                self.publish()
            except BaseException as publish_error:  # recorded in the manifest, then raised
                error = publish_error
        if error is not None:
            for out in self.streamed_outputs:
                if not out.published:
                    out.abort()
        self._release_references()
        if error is None and self.cancel.is_set() and not self.published:
            error = self.cancel.error()
        try:
            self._write_manifest(error)
        except Exception as manifest_error:  # never mask the job's own error
            log.error("could not write the manifest: %s", manifest_error)
            if error is None:
                error = manifest_error
        finally:
            if self._spot is not None:
                self._spot.stop()
            self.scratch.close(failed=error is not None)
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)
            self._old_handlers.clear()
        if error is not None and error is not exc:
            raise error

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.published:
            log.warning("received signal %d after every output was published: finishing", signum)
            return
        self.stop(signum, self._preempted)

    def stop(self, signum: int = 15, reason: Optional[BaseException] = None) -> None:
        """Stop the job as a signal would: the tool gets SIGTERM, transfers stop, uploads are
        aborted; the job then ends with ``reason`` (default :class:`Interrupted`)."""
        if not self.cancel.stop(signum, reason):
            return
        log.warning("%s: stopping the tool and transfers, cleaning up", reason or f"received signal {signum}")
        if self._tool is not None:
            self._tool.terminate(self.grace)
        elif not self._busy and threading.current_thread() is threading.main_thread():
            raise self.cancel.error()

    def _check_cancel(self) -> None:
        self.cancel.check()

    def _abort_leftover_uploads(self) -> None:
        """Abort the multipart uploads an earlier, killed attempt of this job (or a dead job
        whose directory was swept) left open."""
        entries = leftover_uploads(self.scratch.partial_dir) + self.scratch.swept_uploads
        for entry in entries:
            loc = Location("s3", entry["bucket"], entry["key"])
            log.info("aborting the upload of %s that an earlier attempt left open", loc)
            self.stores.for_location(loc).abort_upload(entry)
        clear_upload_journals(self.scratch.partial_dir)

    # -- inputs and outputs --------------------------------------------------
    @property
    def in_dir(self) -> Path:
        assert self.path is not None, "use Job as a context manager"
        return self.path / "in"

    @property
    def out_dir(self) -> Path:
        assert self.path is not None, "use Job as a context manager"
        return self.path / "out"

    def input(self, uri: str, name: Optional[str] = None) -> Path:
        """Stage one input now (verified) and return its local path."""
        name = name or f"input{len(self.inputs_staged) + 1}"
        return self.stage_inputs({name: uri})[name]

    def stage_inputs(self, named: "Mapping[str, str | Sequence[str]]") -> Dict[str, Path]:
        """Stage several inputs in one parallel batch, after one free-space check for all of them.
        An input may be a list of objects (a read pair): a directory with ``NAME.1``, ``NAME.2``...
        in the returned mapping for each file."""
        self._check_cancel()
        start = time.monotonic()
        staged = [self._plan_input(name, uri) for name, uri in named.items()]
        needed = sum(s.size for s in staged)
        if self.cache is not None and os.path.isdir(self.cache.root):
            self.cache.reclaim_for(self.scratch.root, needed)  # unused cached references may make room
        check_space(self.scratch.root, needed)
        try:
            self._busy = True
            transfer_staged(self.transfer, [s for s in staged if s.items], "stage in")
            self._busy = False  # a signal while chunks are fetched interrupts them where they stand
            fetch_chunks(self.stores, staged)
        finally:
            self._busy = False
            self.timings["stage_in"] += time.monotonic() - start
        self.inputs_staged.extend(staged)
        return {k: v for s in staged for k, v in s.placeholders().items()}

    def _plan_input(self, name: str, uri: "str | Sequence[str]") -> Staged:
        if any(s.name == name for s in self.inputs_staged):
            raise UsageError(f"input {name!r} given twice")
        return plan_input(self.stores, name, uri, self.in_dir, self._taken, index=self.index)

    # -- reference data (read-only, through the node cache) -------------------
    def ref(self, uri: str, name: Optional[str] = None) -> Path:
        """Stage reference data (read-only): from the node cache when the job has one."""
        name = name or f"ref{len(self.references) + 1}"
        return self.stage_refs({name: uri})[name]

    def stage_refs(self, named: Mapping[str, str]) -> Dict[str, Path]:
        """Stage several references in one batch; with a cache, each object is downloaded once per node."""
        self._check_cancel()
        start = time.monotonic()
        staged = [self._plan_input(name, uri) for name, uri in named.items()]
        self._busy = True
        try:
            if self.cache is not None:
                from .cache import stage_cached

                self.leases.append(stage_cached(self.cache, self.stores, staged, self.config, self.cancel,
                                                self.show_progress))
            else:
                check_space(self.scratch.root, sum(s.size for s in staged))
                transfer_staged(self.transfer, [s for s in staged if s.items], "stage in references")
                for s in staged:
                    for _, dest in s.items:
                        os.chmod(dest.path, 0o444)
        finally:
            self._busy = False
            self.timings["stage_in"] += time.monotonic() - start
        self.inputs_staged.extend(staged)
        self.references.extend(s.name for s in staged)
        return {s.name: s.path for s in staged}

    def _release_references(self) -> None:
        for lease in self.leases:
            try:
                lease.release()
            except Exception as release_error:  # never mask the job's own outcome
                log.error("could not release cache entries: %s", release_error)

    # -- streamed inputs and outputs (see genostage.job.streams) --------------------
    def stream_input(self, uri: str, name: Optional[str] = None) -> Dict[str, Path]:
        """Declare input ``uri`` streamed: its placeholders (``NAME``, and ``NAME.1``/``NAME.2``
        for a paired chunk) name FIFOs the tool reads while the bytes arrive, in order,
        verified. The transfer starts with :meth:`run`."""
        self._check_cancel()
        name = name or f"input{len(self.inputs_staged) + len(self.streamed_inputs) + 1}"
        staged = self._plan_input(name, uri)
        if staged.chunk is not None:
            plan, index = staged.chunk
            paths = [Path(f) for f in staged.chunk_files] or [staged.path]
            s = StreamedInput(name, staged.uri, paths, stream_chunk(self.stores, plan, index), self._stream_failed,
                              self.stores.pipe)
        elif not staged.is_dir and len(staged.items) == 1:
            s = StreamedInput(name, uri, [staged.path], stream_object(self.stores, self.transfer, staged.items[0][0]),
                              self._stream_failed, self.stores.pipe)
        else:
            raise UsageError(f"input {name!r}: only an object or a chunk plan can be streamed, not a prefix or a list")
        for path in s.paths:
            make_fifo(path)
        self.streamed_inputs.append(s)
        return {name: staged.path if len(s.paths) > 1 else s.paths[0],
                **{f"{name}.{i}": p for i, p in enumerate(s.paths, 1) if len(s.paths) > 1}}

    def stream_output(self, uri: str, name: Optional[str] = None) -> Path:
        """Declare output ``uri`` streamed: the FIFO the tool writes; uploaded as it comes,
        published only when the job ends cleanly."""
        from ..transfer.stream import StreamUpload

        name = name or f"output{len(self.outputs) + len(self.streamed_outputs) + 1}"
        if any(o.name == name for o in self.outputs) or any(o.name == name for o in self.streamed_outputs):
            raise UsageError(f"output {name!r} given twice")
        if uri.endswith("/"):
            raise UsageError(f"output {name!r}: a streamed output is one object, not a prefix ({uri})")
        staged = plan_output(name, uri, self.out_dir, self._taken)
        make_fifo(staged.path)
        upload = StreamUpload(self.stores, parse(uri), self.config, cancel=self.cancel,
                              show_progress=self.show_progress, label=f"stream {name}")
        self.streamed_outputs.append(StreamedOutput(name, uri, staged.path, upload, self._stream_failed))
        return staged.path

    def _stream_failed(self, error: BaseException) -> None:
        """A stream failed while the tool ran (on the stream's thread): stop the tool."""
        log.warning("stopping the tool: %s", error)
        self.stop(15, error)

    def output(self, uri: str, name: Optional[str] = None) -> Path:
        """The local path the tool must write (a directory for a URI ending in ``/``);
        published when the job ends cleanly. Declare outputs before staging inputs, so that
        the manifest's place is known even if staging fails."""
        name = name or f"output{len(self.outputs) + 1}"
        if any(o.name == name for o in self.outputs):
            raise UsageError(f"output {name!r} given twice")
        staged = plan_output(name, uri, self.out_dir, self._taken)
        self.outputs.append(staged)
        return staged.path

    # -- running -------------------------------------------------------------
    def run(self, command: Sequence[PathLike], stdout: Optional[PathLike] = None,
            stderr: Optional[PathLike] = None, shell: bool = False, check: bool = True,
            env: Optional[Mapping[str, str]] = None, values: Optional[Mapping[str, str]] = None) -> ToolResult:
        """Run the tool in the job's work directory (TMPDIR inside scratch); raise
        :class:`ToolFailed` (with the last lines of its stderr) when it fails.

        ``values`` fills ``{NAME}`` placeholders (see :mod:`genostage.job.tool`: with
        ``shell`` the paths reach the script as environment variables, never as text)."""
        self._check_cancel()
        assert self.path is not None, "use Job as a context manager"
        argv = [os.fspath(a) for a in command]
        child_env = dict(os.environ if env is None else env)
        child_env["TMPDIR"] = str(self.path / "tmp")
        child_env["GENOSTAGE_SCRATCH_DIR"] = str(self.path)
        tool = Tool(argv, shell=shell, cwd=str(self.path / "work"), env=child_env, values=values,
                    stdout_path=os.fspath(stdout) if stdout is not None else None,
                    stderr_path=os.fspath(stderr) if stderr is not None else None)
        self._tool = tool  # from here a signal stops the tool (even before it starts) rather than raise
        try:
            self._check_cancel()
        except BaseException:
            self._tool = None
            raise
        log.info("running: %s", tool.command)
        start = time.monotonic()
        for s in self.streamed_inputs:
            s.start()
        for o in self.streamed_outputs:
            o.start()
        try:
            result = tool.run()
        finally:
            self._tool = None
            for s in self.streamed_inputs:
                s.finish()
            self.timings["run"] += time.monotonic() - start
        for o in self.streamed_outputs:
            o.finish(result.returncode == 0 and not self.cancel.is_set())
        self.runs.append(result)
        log.info("tool finished with status %d in %.1f s (cpu %.1f s, peak RSS %d MiB)", result.returncode,
                 result.wall_seconds, result.user_seconds + result.system_seconds, result.max_rss_kib // 1024)
        self._check_cancel()
        if check and result.returncode != 0:
            raise ToolFailed(tool.command, result.returncode, result.stderr_tail)
        failed = [s.error for s in self.streamed_inputs if s.error] + [o.error for o in self.streamed_outputs if o.error]
        if failed:
            raise failed[0]
        return result

    def publish(self) -> None:
        """Upload every output (one parallel batch, all or nothing), verified; called on a clean exit."""
        self._check_cancel()
        if not self.outputs and not self.streamed_outputs:
            self.published = True
            return
        assert self.path is not None
        start = time.monotonic()
        for out in self.outputs:
            collect_output(self.stores, out, str(self.path))
        self._busy = True
        try:
            # the staged outputs first (all or none); the streamed ones, uploaded already, are
            # completed only then, so that a staged output that fails leaves what was at their
            # keys untouched; if one of them fails, everything published is taken back
            transfer_staged(self.transfer, [o for o in self.outputs if o.items], "stage out", together=True)
            for out in self.outputs:
                out.published = True
            for stream in self.streamed_outputs:
                stream.commit()
            self.published = True
        except BaseException:
            self._take_back()
            raise
        finally:
            self._busy = False
            self.timings["stage_out"] += time.monotonic() - start

    def _take_back(self) -> None:
        """Remove what publishing put in place before it failed."""
        published = [parse(s.uri) for s in self.streamed_outputs if s.published]
        published += [dest for o in self.outputs if o.published for _, dest in o.items]
        for dest in published:
            try:
                self.stores.for_location(dest).delete(dest)
            except Exception as exc:  # never mask the error that made us take it back
                log.error("could not remove %s, published before the job failed: %s", dest, exc)
        for stream in self.streamed_outputs:
            stream.published = False
        for out in self.outputs:
            out.published = False

    # -- manifest ------------------------------------------------------------
    def default_manifest_uri(self) -> Optional[str]:
        if self.manifest_uri:
            return self.manifest_uri
        first = self.outputs[0].uri if self.outputs else (self.streamed_outputs[0].uri if self.streamed_outputs else None)
        return M.default_location(first, self.index)

    def build_manifest(self, error: Optional[BaseException] = None) -> Dict[str, Any]:
        end = time.time()
        return {
            **M.identity(),
            "scratch": str(self.path) if self.path else None,
            "started": M.iso(self._started),
            "finished": M.iso(end),
            **M.status(error),
            "commands": [r.to_json() for r in self.runs],
            "inputs": [s.to_json() for s in self.inputs_staged] + [s.to_json() for s in self.streamed_inputs],
            "outputs": [o.to_json() for o in self.outputs] + [o.to_json() for o in self.streamed_outputs],
            **({"references": list(self.references)} if self.references else {}),
            **({"cache": [lease.summary() for lease in self.leases]} if self.leases else {}),
            **self.extra,
            "timings": {**{k: round(v, 3) for k, v in self.timings.items()}, "total": round(end - self._started, 3)},
        }

    def _write_manifest(self, error: Optional[BaseException]) -> None:
        """To its place first (verified), then a copy in scratch if there is room for it."""
        self.manifest = self.build_manifest(error)
        body = M.encode(self.manifest)
        uri = self.default_manifest_uri()
        if uri:
            put_verified(self.stores, parse(uri), body, self.config)
            log.info("manifest written to %s", uri)
        if self.path is not None:
            try:
                write_atomic(self.path / "manifest.json", body)
            except Exception as exc:  # the scratch copy is a convenience; the published one counts
                log.warning("no copy of the manifest in scratch: %s", exc)
