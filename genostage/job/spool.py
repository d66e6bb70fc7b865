"""Writing the two FIFOs of a streamed FASTQ pair from one thread without a deadlock.

A paired chunk is cut by one thread that writes R1 and R2 in step. A tool that reads the mates
in step too (``bwa mem``, ``fastp``) keeps both pipes moving; a tool that reads one mate to its
end before it opens the other (``cat {reads.1} {reads.2}``, or a script with two passes) would
leave that thread waiting on the full pipe of the mate nobody reads, while the tool waits for
more of the other: both wait for ever.

:class:`PipeWriter` puts a bounded queue (``memory`` bytes) and a thread of its own between the
producer and each FIFO. While the tool reads, the producer waits for room as it would on the
pipe, so memory stays bounded and nothing touches the disk. Only when the queue is full, it has
not moved for ``STALL`` seconds, and the sibling mate's queue is empty (the tool is waiting for
the sibling, not for us) does the producer spill to a spool file beside the FIFO in scratch; the
spool is drained, in order, when the tool comes to read that mate, and its space checked as any
write to scratch (a full disk ends the job with exit 7). Disk is thus used only by a tool that
needs it, and at most one mate's chunk.
"""
from __future__ import annotations

import collections
import errno
import os
import threading
from typing import Callable, Deque, Optional, Tuple

from ..fsutil import os_error

MEMORY = 4 << 20  # bytes queued per FIFO before the producer waits
STALL = 0.5  # seconds a full queue may stand still, its sibling starved, before it spills
PIECE = 1 << 20  # bytes read back from the spool per write into the FIFO


class PipeWriter:
    """A file-like writer into the FIFO at ``path``, which ``open_fifo`` opens for writing (on
    this writer's thread, so that a tool that opens the mates one after the other is waited for
    without holding the producer); the descriptor is this writer's to close.

    ``write`` queues; a thread writes the queue into the FIFO. ``close`` waits until the tool
    has read everything (or gone); ``abort`` stops without waiting. A reader that closes the
    FIFO early turns the next ``write`` or the ``close`` into ``BrokenPipeError``."""

    def __init__(self, path: str, open_fifo: Callable[[threading.Event], int], spool_path: str,
                 memory: int = MEMORY, stall: float = STALL) -> None:
        self.path = path
        self.fd: Optional[int] = None
        self._open_fifo = open_fifo  # blocks until the tool opens its end, or the event is set
        self._stop = threading.Event()
        self.spool_path = spool_path
        self.memory = memory
        self.stall = stall
        self.sibling: Optional["PipeWriter"] = None
        self._cv = threading.Condition()
        self._queue: Deque[bytes] = collections.deque()
        self._queued = 0
        self._drained = 0  # bytes written into the FIFO so far
        self._idle = False  # the thread waits for bytes (the FIFO has room for more)
        self._spool_fd: Optional[int] = None
        self._spool_end = 0
        self._spool_pos = 0
        self.spooled = 0  # bytes that went through the spool, in all
        self._closing = False
        self._aborted = False
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._drain, name="genostage-pipe-writer", daemon=True)
        self._thread.start()

    # -- the producer's side ----------------------------------------------------------
    def write(self, data: bytes) -> int:
        n = len(data)
        if not n:
            return 0
        with self._cv:
            while True:
                self._raise_if_failed()
                if self._spooling():
                    self._spool(data)
                    break
                if self._queued + n <= self.memory or not self._queued:
                    self._queue.append(bytes(data))
                    self._queued += n
                    break
                before = self._drained
                self._cv.wait(self.stall)
                if self._drained == before and self._queued + n > self.memory and self._sibling_starved():
                    self._spool(data)
                    break
            self._cv.notify_all()
        return n

    def flush(self) -> None:
        """Nothing to do: bytes reach the FIFO as the tool reads them."""

    def close(self) -> None:
        """Wait until the tool has read every byte written (or closed its end)."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join()
        with self._cv:
            self._raise_if_failed()

    def abort(self) -> None:
        """Stop at once: what is queued is dropped (the thread ends once the FIFO lets it)."""
        self._stop.set()
        with self._cv:
            self._aborted = True
            self._cv.notify_all()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _spooling(self) -> bool:
        return self._spool_end > self._spool_pos

    def _sibling_starved(self) -> bool:
        """The sibling's thread has written all it has and waits for more: the tool waits for
        the sibling's bytes (its FIFO is not full) while we wait for the tool."""
        s = self.sibling
        return s is not None and s._idle and not s._closing

    def _spool(self, data: bytes) -> None:
        """Append to the spool file (opened on first use, private to the job)."""
        try:
            if self._spool_fd is None:
                self._spool_fd = os.open(self.spool_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            view = memoryview(data)
            while view:
                done = os.pwrite(self._spool_fd, view, self._spool_end)
                self._spool_end += done
                view = view[done:]
        except OSError as exc:
            raise os_error(exc, self.spool_path) from None
        self.spooled += len(data)

    # -- the FIFO's side ---------------------------------------------------------------
    def _next_piece(self) -> Tuple[Optional[bytes], bool]:
        """The next bytes for the FIFO, oldest first (queue, then spool), and whether they
        come from the spool; None at the end."""
        with self._cv:
            self._idle = True
            self._cv.notify_all()
            while not self._aborted and not self._queue and not self._spooling() and not self._closing:
                self._cv.wait()
            self._idle = False
            if self._aborted:
                return None, False
            if self._queue:
                piece = self._queue.popleft()
                self._queued -= len(piece)
                self._cv.notify_all()
                return piece, False
            if not self._spooling():
                return None, False  # closing and everything written
            assert self._spool_fd is not None
            start, size = self._spool_pos, min(PIECE, self._spool_end - self._spool_pos)
        try:
            return os.pread(self._spool_fd, size, start), True  # bytes below _spool_end are never rewritten
        except OSError as exc:
            raise os_error(exc, self.spool_path) from None

    def _spool_read(self, n: int) -> None:
        with self._cv:
            self._spool_pos += n
            if self._spool_pos == self._spool_end and self._spool_fd is not None:
                os.ftruncate(self._spool_fd, 0)
                self._spool_pos = self._spool_end = 0
            self._cv.notify_all()

    def _drain(self) -> None:
        try:
            self.fd = self._open_fifo(self._stop)
            while True:
                piece, from_spool = self._next_piece()
                if piece is None:
                    break
                self._write_all(piece)
                with self._cv:
                    self._drained += len(piece)
                if from_spool:
                    self._spool_read(len(piece))
        except BaseException as exc:
            with self._cv:
                self._error = exc
                self._cv.notify_all()
        finally:
            self._release()

    def _write_all(self, piece: bytes) -> None:
        view = memoryview(piece)
        assert self.fd is not None
        while view:
            try:
                done = os.write(self.fd, view)
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    raise BrokenPipeError(errno.EPIPE, "the tool closed its end of the pipe") from None
                raise os_error(exc, self.path) from None
            view = view[done:]

    def _release(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
        if self._spool_fd is not None:
            try:
                os.close(self._spool_fd)
                os.unlink(self.spool_path)
            except OSError:
                pass


def pair(first: PipeWriter, second: PipeWriter) -> None:
    """Make the two writers of a FASTQ pair aware of each other (see the module docstring)."""
    first.sibling, second.sibling = second, first
