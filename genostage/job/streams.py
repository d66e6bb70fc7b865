"""Streamed inputs and outputs: the tool reads its input while it downloads and writes its
output while it uploads, through named pipes in scratch, every byte still verified.

**Inputs** (``--stream NAME`` on an input): ``{NAME}`` is a FIFO. The object's parts are
fetched in parallel and written into the pipe in order (:mod:`genostage.store.pipe`), at most
``concurrency x part_size`` bytes held, checksummed on the way; the whole-object value is
compared with the store's at the end. A chunk plan input (``plan.json#I``) streams its chunk
as it is cut (records validated, BGZF blocks checked). A mismatch, or a fetch that fails past
its retries, stops the tool and fails the job with that error (exit 6, or 5): nothing is
published. A tool that stops reading early (``head -c 100 {in}``) ends the download without
an error; the manifest says how much it read and that the object was not verified whole.

**Outputs** (``--stream NAME`` on an output): ``{NAME}`` is a FIFO; what the tool writes is
uploaded as a multipart upload as it comes (:mod:`genostage.transfer.stream`), and completed
only once the tool has exited 0 and the other outputs are in: a failing tool, a signal or a
failed part aborts it, and nothing is published.

Tools that seek (an indexed BAM read by region, ``samtools view x.bam chr1:1-1000``) need a
real file: stage those inputs, do not stream them.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Optional, cast

from ..errors import GenostageError, NotFound
from ..fsutil import os_error
from ..location import Location
from ..store import ObjectInfo, Stores
from ..store.pipe import PipeStore, ReaderGone
from ..transfer import Transfer, TransferResult
from ..transfer.stream import StreamUpload
from .spool import PipeWriter, pair

log = logging.getLogger("genostage.job")

PIPE_SIZE = 1 << 20  # bytes a FIFO buffers (F_SETPIPE_SZ), so a pair's two pipes rarely stall each other


def make_fifo(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path, 0o600)
    except OSError as exc:
        raise os_error(exc, str(path)) from None


def _widen(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, 1031, PIPE_SIZE)  # F_SETPIPE_SZ (Linux)
    except (OSError, AttributeError):
        pass


class StreamedInput:
    """One streamed input; :meth:`start` before the tool, :meth:`finish` after it."""

    def __init__(self, name: str, uri: str, paths: List[Path], work: "Callable[[StreamedInput], None]",
                 on_failure: Callable[[BaseException], None], pipes: PipeStore) -> None:
        self.name, self.uri, self.paths, self.work = name, uri, paths, work
        self.pipes = pipes
        self.on_failure = on_failure
        self.error: Optional[BaseException] = None
        self.gone: Optional[ReaderGone] = None
        self.result: Optional[TransferResult] = None
        self.stats: Dict[str, Any] = {}
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()

    def start(self) -> None:
        def run() -> None:
            try:
                self.work(self)
            except ReaderGone as exc:
                self.gone = exc
            except BaseException as exc:  # the job hears of it: the tool is stopped
                # recorded even when the tool has exited meanwhile: a failed copy closes the pipe,
                # the tool may read that as the end and exit 0 before we get here, and the job must
                # still fail (it used to succeed, with the bad bytes the tool read)
                self.error = exc
                if not self._stop.is_set():
                    self.on_failure(exc)
        self._thread = threading.Thread(target=run, name=f"genostage-stream-{self.name}", daemon=True)
        self._thread.start()

    def finish(self) -> None:
        """The tool has exited: a writer still waiting for it to open the pipe gives up."""
        self._stop.set()
        for path in self.paths:
            self.pipes.stop(str(path))
            _release_writer(path)
        if self._thread is not None:
            self._thread.join()

    def to_json(self) -> Dict[str, Any]:
        entry: Dict[str, Any] = {"name": self.name, "uri": self.uri, "path": str(self.paths[0]), "kind": "stream",
                                 "streamed": True}
        if self.result is not None:
            entry.update(size=self.result.size, etag=self.result.etag, version_id=self.result.version_id,
                         checksums=self.result.checksums, verified=self.result.verified, parts=self.result.parts,
                         repaired_parts=self.result.repaired_parts)
        if self.stats:
            entry["chunk"] = self.stats
        if self.gone is not None:
            entry.update(verified=None, read=self.gone.written,
                         note="the tool stopped reading before the end: not verified whole")
        if self.error is not None:
            entry["error"] = str(self.error)
        return entry


def _release_writer(path: Path) -> None:
    """Open the FIFO for reading and close it at once: a writer blocked in open() (the tool
    exited without opening it) gets its pipe and then EPIPE, and stops."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


def stream_object(stores: Stores, transfer: Transfer, info: ObjectInfo) -> Callable[[StreamedInput], None]:
    """The work of streaming one object into its FIFO (the engine, a pipe as destination)."""
    def work(s: StreamedInput) -> None:
        s.result = transfer.copy(info, Location("pipe", path=str(s.paths[0])), label=f"stream {s.name}")
    return work


def stream_chunk(stores: Stores, plan: Any, index: int) -> Callable[[StreamedInput], None]:
    """The work of streaming chunk ``index`` of a plan into its FIFO(s) as it is cut."""
    from ..split.plan import write_chunk

    def work(s: StreamedInput) -> None:
        writers: List[PipeWriter] = []
        try:
            for path in s.paths:
                writers.append(PipeWriter(str(path), _fifo_opener(path, s._stop), str(path.parent / f".{path.name}.spool")))
            if len(writers) == 2:
                pair(*writers)
            try:
                outs = [cast(BinaryIO, w) for w in writers]  # write() is all a chunk writer uses
                s.stats = dict(write_chunk(plan, index, outs[0], stores, outs[1] if len(outs) > 1 else None))
                for w in writers:
                    w.close()
            except (BrokenPipeError, ReaderGone):
                raise ReaderGone(str(s.paths[0]), 0) from None
            s.stats["spooled"] = sum(w.spooled for w in writers)
        finally:
            for w in writers:
                w.abort()
    return work


def _fifo_opener(path: Path, stop: threading.Event) -> Callable[[threading.Event], int]:
    def open_fifo(abort: threading.Event) -> int:
        fd = _open_writer(path, stop, abort)
        _widen(fd)
        return fd
    return open_fifo


def _open_writer(path: Path, *stops: threading.Event) -> int:
    """The FIFO's write end, once the tool has opened its read end (polling, so that a tool
    that exits without opening it does not leave us waiting)."""
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise os_error(exc, str(path)) from None
            if any(stop.is_set() for stop in stops):
                raise ReaderGone(str(path), 0)
            time.sleep(0.01)
            continue
        os.set_blocking(fd, True)
        return fd


class StreamedOutput:
    """One streamed output; :meth:`start` before the tool; :meth:`finish` after it; then
    :meth:`commit` (publish) or :meth:`abort`."""

    def __init__(self, name: str, uri: str, path: Path, upload: StreamUpload,
                 on_failure: Callable[[BaseException], None]) -> None:
        self.name, self.uri, self.path, self.upload = name, uri, path, upload
        self.on_failure = on_failure
        self.error: Optional[BaseException] = None
        self.opened = threading.Event()
        self.result: Optional[TransferResult] = None
        self.published = False
        self._thread: Optional[threading.Thread] = None
        self._abandoned = threading.Event()  # the tool failed or the job stops: the upload ends unfinished

    def start(self) -> None:
        def run() -> None:
            try:
                fd = os.open(self.path, os.O_RDONLY)  # returns once the tool opens its end
                self.opened.set()
                _widen(fd)
                try:
                    self.upload.send(fd)
                finally:
                    os.close(fd)
            except BaseException as exc:  # the job hears of it: the tool is stopped
                if self._abandoned.is_set():
                    return  # the job fails already, for its own reason: this one is only its echo
                self.error = exc
                self.on_failure(exc)
        self._thread = threading.Thread(target=run, name=f"genostage-stream-{self.name}", daemon=True)
        self._thread.start()

    def finish(self, tool_ok: bool) -> None:
        """The tool has exited (its end of the pipe is closed): read what is left, then stop."""
        written = self.opened.is_set()
        if not tool_ok:  # nothing will be published: parts still in flight are not waited for
            self._abandoned.set()
            self.upload.stop(GenostageError(f"output {self.name!r}: abandoned (the tool failed or the job stops)"))
        if not written:
            try:  # unblock the reader's open(): it then reads the end at once
                os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join()
        if tool_ok and self.error is None and not written:
            self.error = NotFound(f"output {self.name!r}: the tool did not write {self.path}")

    def commit(self) -> None:
        if self.error is not None:
            raise self.error
        self.result = self.upload.commit()
        self.published = True

    def abort(self) -> None:
        self.upload.abort()

    def to_json(self) -> Dict[str, Any]:
        entry: Dict[str, Any] = {"name": self.name, "uri": self.uri, "path": str(self.path), "kind": "stream",
                                 "streamed": True, "size": self.upload.size}
        if self.result is not None:
            entry.update(checksums=self.result.checksums, verified=self.result.verified, parts=self.result.parts,
                         destination_etag=self.result.destination_etag)
        if self.published:
            entry["published"] = True
        if self.error is not None:
            entry["error"] = str(self.error)
        return entry


__all__ = ["StreamedInput", "StreamedOutput", "make_fifo", "stream_chunk", "stream_object"]
