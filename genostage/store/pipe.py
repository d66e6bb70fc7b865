"""A named pipe (or an open descriptor, such as stdout) as a destination written in order.

A streamed input reaches its tool through a FIFO in scratch: the transfer engine fetches the
parts in parallel as always, and a :class:`PipeUpload` writes them into the pipe in order,
one writer thread, while the tool reads. A part waits in memory until every part before it
is written (the engine keeps its slot until then, so at most ``concurrency`` parts are held:
``concurrency x part_size`` bytes). Parts are checksummed on the way and the whole object
verified at the end, as for any copy; what the caller does when that fails (stop the tool,
fail the job) is its business.

A reader that goes away early (``head -c 100 {in}``) is not an error of the copy: the writer
stops, the parts still to come are dropped, and the copy ends with :class:`ReaderGone`.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
import time
from typing import Dict, Iterator, Optional, Tuple

from ..errors import GenostageError, UsageError
from ..fsutil import os_error
from ..location import Location
from .base import DONE, Consume, Done, ObjectInfo, Pending, Store, Upload

log = logging.getLogger("genostage.pipe")

OPEN_POLL = 0.01  # seconds between tries to open a FIFO that has no reader yet


class ReaderGone(GenostageError):
    """The pipe's reader closed it before the copy ended (``written`` bytes reached it)."""

    def __init__(self, where: str, written: int) -> None:
        self.written = written
        super().__init__(f"{where}: the reader stopped reading after {written} bytes")


class PipeUpload(Upload):
    """Parts written into a pipe in order (see the module docstring). ``stop()`` ends the
    writer wherever it is (the tool exited without opening the pipe, or the job stops)."""

    can_rewrite = False  # the reader has the bytes already: a mismatch can only fail the copy

    def __init__(self, loc: Location, size: int, parts: int) -> None:
        self._loc = loc
        self._parts = parts
        self._pending: Dict[int, Tuple[memoryview, Done]] = {}
        self._next = 1
        self._cond = threading.Condition()
        self._fd = loc.fd
        self._own_fd = loc.fd < 0
        self._stopped: Optional[BaseException] = None
        self.written = 0
        self.gone: Optional[ReaderGone] = None
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="genostage-pipe", daemon=True)
        self._thread.start()

    # -- the engine's side ---------------------------------------------------------
    def write_part_async(self, number: int, offset: int, data: "bytes | memoryview",
                         checksums: Dict[str, str], done: Done) -> Pending:
        with self._cond:
            if self.gone is not None or self._stopped is not None:
                err = self.gone or self._stopped
            else:
                self._pending[number] = (memoryview(data), done)
                self._cond.notify_all()
                return _Waiting(self)
        done(err)
        return DONE

    def complete(self, checksums: Optional[Dict[str, str]] = None) -> ObjectInfo:
        """Every part is written: close the pipe (the reader sees the end)."""
        self._finished.wait()
        self._close()
        if self.gone is not None:
            raise self.gone
        if self._stopped is not None:
            raise self._stopped
        return ObjectInfo(self._loc, self.written)

    def abort(self) -> None:
        self.stop(GenostageError("copy abandoned"))
        self._finished.wait(5)
        self._close()

    def stop(self, reason: BaseException) -> None:
        with self._cond:
            if self._stopped is None:
                self._stopped = reason
            self._cond.notify_all()

    # -- the writer ----------------------------------------------------------------
    def _open(self) -> bool:
        """Open the FIFO for writing once a reader has it open (polling, so a stop ends the wait)."""
        while self._fd < 0:
            with self._cond:
                if self._stopped is not None:
                    return False
            try:
                self._fd = os.open(self._loc.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise os_error(exc, self._loc.path) from None
                time.sleep(OPEN_POLL)
                continue
            os.set_blocking(self._fd, True)
        return True

    def _take(self) -> Optional[Tuple[memoryview, Done]]:
        with self._cond:
            while self._next not in self._pending and self._stopped is None:
                self._cond.wait()
            if self._stopped is not None:
                return None
            item = self._pending.pop(self._next)
            self._next += 1
            return item

    def _run(self) -> None:
        done: Optional[Done] = None
        try:
            if not self._open():
                self._fail_pending(self._stopped or GenostageError("stopped"))
                return
            while self._next <= self._parts:
                item = self._take()
                if item is None:
                    self._fail_pending(self._stopped or GenostageError("stopped"))
                    return
                view, done = item
                self._write(view)
                done(None)
                done = None
        except BrokenPipeError:
            self.gone = ReaderGone(self._loc.path, self.written)
            log.info("%s", self.gone)
            if done is not None:
                done(self.gone)
            self._fail_pending(self.gone)
        except BaseException as exc:  # the engine hears of it through the part's done
            if done is not None:
                done(exc)
            self._fail_pending(exc)
        finally:
            self._finished.set()

    def _write(self, view: memoryview) -> None:
        while view:
            try:
                n = os.write(self._fd, view[:1 << 20])
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    raise BrokenPipeError() from None
                raise os_error(exc, self._loc.path) from None
            view = view[n:]
            self.written += n

    def _fail_pending(self, err: BaseException) -> None:
        with self._cond:
            if self.gone is None and self._stopped is None:
                self._stopped = err
            pending, self._pending = self._pending, {}
        for _, done in pending.values():
            done(err)

    def _close(self) -> None:
        if self._own_fd and self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1


class _Waiting(Pending):
    """A part held until the parts before it are written. Cancelling it (the copy failed: an
    earlier part will never come) stops the whole pipe: the parts held get the reason in their
    ``done``, so the engine's batch can end (it waited for them for ever)."""

    def __init__(self, upload: PipeUpload) -> None:
        self._upload = upload

    def cancel(self, reason: BaseException) -> None:
        self._upload.stop(reason)


class PipeStore(Store):
    """Named pipes and descriptors as destinations (they are never read from, listed or deleted)."""

    writes_are_local = True
    callbacks_must_not_block = True  # they run on the pipe's writer thread, which must go on writing

    def __init__(self) -> None:
        super().__init__()
        self.open: Dict[str, PipeUpload] = {}

    def begin_upload(self, loc: Location, size: int, parts: int = 1,
                     resume_path: Optional[str] = None) -> Upload:
        up = PipeUpload(loc, size, parts)
        self.open[loc.path or str(loc.fd)] = up
        return up

    def stop(self, path: str) -> None:
        """The pipe's reader is gone for good (the tool exited): its writer stops, even while
        it waits for the reader to open the pipe."""
        up = self.open.pop(path, None)
        if up is not None:
            up.stop(ReaderGone(path, up.written))

    def _refuse(self, loc: Location) -> GenostageError:
        return UsageError(f"{loc}: a pipe is only written to")

    def stat(self, loc: Location, checksums: bool = True) -> ObjectInfo:
        raise self._refuse(loc)

    def list(self, prefix: Location) -> Iterator[ObjectInfo]:
        raise self._refuse(prefix)

    def read_async(self, loc: Location, start: int, length: int, consume: Consume, done: Done,
                   etag: Optional[str] = None) -> Pending:
        raise self._refuse(loc)

    def delete(self, loc: Location) -> None:
        pass  # nothing to take back: the reader has what it read


