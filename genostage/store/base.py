"""The store protocol: where bytes live (S3, the local disk).

A store knows nothing about jobs, or about checksums of whole transfers. It offers
stat and list, ranged reads (blocking, and asynchronous: pieces handed to a callback as they
arrive), uploads written part by part (asynchronously) and then completed or aborted, and
delete; and it counts what it does (``Store.counters``) so tests and commands can report bytes
read. The transfer engine (:mod:`genostage.transfer`) uses only this protocol: it never asks
which store it holds.

Two properties tell the engine how a store behaves, so it can schedule without asking what
the store is:

- ``callbacks_must_not_block``: the store runs its callbacks (``consume``, ``done``) on a
  thread shared by every request (S3's event loop), so they must be short; blocking steps go
  elsewhere. A local store runs them on the caller's or its own pool's thread.
- ``writes_block``: creating and writing an object blocks the caller (a local file), rather
  than being sent without waiting (an S3 request).
- ``uploads_accept_pieces``: its uploads take bytes at their offset as they arrive (a local
  file), so a download is never held in memory; otherwise each part is sent whole.
- ``writes_are_local``: what is written is what was checksummed, with no network between
  (a local file, a pipe): nothing to prove after publishing.
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Dict, Iterator, List, Optional, Tuple

from ..cancel import error_of
from ..errors import TransferFailed
from ..location import Location

Consume = Callable[[memoryview], None]
Done = Callable[[Optional[BaseException]], None]


@dataclass
class ObjectInfo:
    """What a store reports about one object or file.

    ``relative`` is the key relative to the listed prefix (``""`` for stat).
    ``checksums`` maps algorithm names (``crc64nvme``, ``crc32c``, ``crc32``,
    ``sha256``, ``sha1``) to the store's wire form (base64, maybe ``-N``);
    ``checksum_type`` is ``FULL_OBJECT`` or ``COMPOSITE`` when the store says;
    ``checksums_known`` is True when the store was asked for its checksums (a stat), False
    when ``checksums`` may be incomplete (a listing).
    """

    location: Location
    size: int
    etag: Optional[str] = None
    version_id: Optional[str] = None
    mtime: Optional[float] = None
    relative: str = ""
    checksums: Dict[str, str] = field(default_factory=dict)
    checksum_type: Optional[str] = None
    parts_count: Optional[int] = None
    sse: Optional[str] = None
    checksums_known: bool = False

    def identity(self) -> Dict[str, object]:
        """What identifies this version of the object (for manifests and plans)."""
        return {"uri": str(self.location), "size": self.size, "etag": self.etag,
                "version_id": self.version_id}


class Counters:
    """Thread-safe counts of requests and bytes (for tests and reports)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes_read = 0
        self.bytes_written = 0

    def add(self, requests: int = 0, read: int = 0, written: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes_read += read
            self.bytes_written += written

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return {"requests": self.requests, "bytes_read": self.bytes_read,
                    "bytes_written": self.bytes_written}


class UploadLost(TransferFailed):
    """The destination dropped an upload while its parts were written (some stores do when a
    part arrives corrupted): the object has to be written again from its first byte."""


class Pending:
    """An asynchronous operation in flight; :meth:`cancel` ends it with ``reason``
    (its ``done`` then gets that reason, unless it had already finished)."""

    def cancel(self, reason: BaseException) -> None:  # pragma: no cover - overridden
        pass


DONE = Pending()  # an operation that finished before its call returned


def wait_for(start: Callable[[Done], Pending], cancel: Optional[threading.Event] = None) -> None:
    """Run an asynchronous operation and wait for it: raises its error, or what ``cancel``
    stands for once it is set (the operation is cancelled first)."""
    finished = threading.Event()
    box: List[Optional[BaseException]] = []

    def done(err: Optional[BaseException]) -> None:
        box.append(err)
        finished.set()

    pending = start(done)
    while not finished.wait(0.2):
        if cancel is not None and cancel.is_set():
            pending.cancel(error_of(cancel))
            finished.wait()
    if box[0] is not None:
        raise box[0]


class Upload(ABC):
    """A write in progress: parts go in (any order, any thread), then :meth:`complete`
    publishes the object or :meth:`abort` leaves the destination as it was.

    - ``accepts_pieces``: bytes may be written at their offset as they arrive
      (:meth:`write_piece`, a local file); otherwise each part is sent whole.
    - ``temp_path``: the local file holding the bytes until :meth:`complete` (local uploads).
    - ``publishes_on_write``: the object is visible once its one part is written (a PUT).
    - ``completes_quickly``: :meth:`complete` is a local step (a rename), not a request.
    - ``proof``: after :meth:`complete`, how the store's answer proved the published object
      is the bytes written (e.g. ``md5 (multipart ETag)``); None leaves the check to the caller.
    - ``journal_entry``: what a later attempt needs to abort this upload if this process dies
      before completing it (S3 multipart uploads); None when nothing would be left behind.
    """

    accepts_pieces: bool = False
    publishes_on_write: bool = False  # the object is visible once its one part is written (a PUT)
    completes_quickly: bool = False  # complete() is a local step (a rename), not a request
    can_rewrite: bool = True  # a part may be written again (not a pipe: its reader has it already)
    temp_path: Optional[str] = None
    proof: Optional[str] = None
    journal_entry: Optional[Dict[str, str]] = None

    def write_piece(self, offset: int, piece: "bytes | memoryview") -> None:
        """Write ``piece`` at byte ``offset`` now (only where ``accepts_pieces``)."""
        raise NotImplementedError

    @abstractmethod
    def write_part_async(self, number: int, offset: int, data: "bytes | memoryview",
                         checksums: Dict[str, str], done: Done) -> Pending:
        """Write part ``number`` (1-based, starting at byte ``offset``), then ``done(error or
        None)``, maybe later on another thread. ``checksums`` holds the part's own values:
        wire forms by algorithm name and ``md5`` as hex, for the store to check on receipt."""

    def write_part(self, number: int, offset: int, data: "bytes | memoryview",
                   checksums: Optional[Dict[str, str]] = None) -> None:
        """:meth:`write_part_async` and wait."""
        wait_for(lambda done: self.write_part_async(number, offset, data, checksums or {}, done))

    @abstractmethod
    def complete(self, checksums: Optional[Dict[str, str]] = None) -> ObjectInfo:
        """Publish the object (blocking); ``checksums`` are full-object wire values for the
        store to check. Raises a ``ChecksumMismatch`` when the store proves the object is not
        the bytes written, leaving what was at the destination before."""

    @abstractmethod
    def abort(self) -> None:
        """Discard every part; the destination is left as it was (best effort, never raises)."""

    def keep(self) -> None:
        """Stop writing but keep what was written, for a later attempt to resume (local files);
        elsewhere the same as :meth:`abort`."""
        self.abort()


class Store(ABC):
    """One place bytes live; thread-safe. See the module docstring."""

    callbacks_must_not_block = False
    writes_block = False
    uploads_accept_pieces = False  # its uploads take bytes at their offset as they arrive
    writes_are_local = False  # what is written is what was checksummed (no network between)

    def __init__(self) -> None:
        self.counters = Counters()

    # -- metadata ----------------------------------------------------------------
    @abstractmethod
    def stat(self, loc: Location, checksums: bool = True) -> ObjectInfo:
        """Describe one object; raises ``NotFound``."""

    @abstractmethod
    def list(self, prefix: Location) -> Iterator[ObjectInfo]:
        """Every object under a prefix, with ``relative`` set; raises ``NotFound`` for a missing bucket/dir."""

    def free_space(self, loc: Location) -> "Optional[Tuple[object, int]]":
        """(file system id, bytes free) where ``loc`` would be written; None where space is
        not counted (an object store)."""
        return None

    def part_size(self, loc: Location, etag: Optional[str] = None) -> Optional[int]:
        """The size of part 1 of an object uploaded in parts, where the store can tell (for
        checking a multipart ETag); None otherwise."""
        return None

    # -- reads -------------------------------------------------------------------
    @abstractmethod
    def read_async(self, loc: Location, start: int, length: int, consume: Consume, done: Done,
                   etag: Optional[str] = None) -> Pending:
        """Read ``length`` bytes from ``start``: each piece goes to ``consume`` (which must not
        keep the view), then ``done(error or None)``. A read refused because the object's ETag
        is no longer ``etag`` fails with ``ObjectChanged``."""

    def read_into(self, loc: Location, start: int, length: int, consume: Consume,
                  etag: Optional[str] = None, cancel: Optional[threading.Event] = None) -> None:
        """:meth:`read_async` and wait (``cancel`` stops it)."""
        if length <= 0:
            return
        wait_for(lambda done: self.read_async(loc, start, length, consume, done, etag), cancel)

    def read_range(self, loc: Location, start: int, length: int, etag: Optional[str] = None) -> bytes:
        """``length`` bytes from ``start`` (fewer only at the end of the object)."""
        pieces: List[bytes] = []
        self.read_into(loc, start, length, lambda p: pieces.append(bytes(p)), etag)
        return b"".join(pieces)

    def iter_range(self, loc: Location, start: int, length: int, etag: Optional[str] = None,
                   chunk: int = 1 << 20) -> Iterator[bytes]:
        """Stream ``length`` bytes from ``start`` in pieces of at most ``chunk``."""
        window = max(chunk, 8 << 20)
        for s in range(start, start + max(length, 0), window):
            n = min(window, start + length - s)
            data = self.read_range(loc, s, n, etag)
            for off in range(0, len(data), chunk):
                yield data[off:off + chunk] if len(data) > chunk else data
            if len(data) < n:
                return

    def open_read(self, loc: Location, etag: Optional[str] = None) -> BinaryIO:
        """A forward-only file-like reader over the whole object (for streaming parsers)."""
        from .stream import RangeReader

        return RangeReader(self, loc, etag=etag)  # type: ignore[return-value]

    # -- writes ------------------------------------------------------------------
    @abstractmethod
    def begin_upload(self, loc: Location, size: int, parts: int = 1,
                     resume_path: Optional[str] = None) -> Upload:
        """Start writing ``size`` bytes to ``loc`` in ``parts`` parts. ``resume_path`` (local
        stores) names the temporary file to write, reused when it already has the right size."""

    def put_bytes(self, loc: Location, data: bytes, checksums: Optional[Dict[str, str]] = None) -> ObjectInfo:
        """Write a whole (small) object in one go and publish it."""
        up = self.begin_upload(loc, len(data), 1)
        try:
            up.write_part(1, 0, data, checksums)
            return up.complete({k: v for k, v in (checksums or {}).items() if k != "md5"})
        except BaseException:
            up.abort()
            raise

    @abstractmethod
    def delete(self, loc: Location) -> None:
        """Remove an object (no error if it is already gone)."""

    def abort_upload(self, entry: Dict[str, str]) -> None:
        """Abort an upload a dead attempt left behind (its :attr:`Upload.journal_entry`)."""

    def close(self) -> None:
        """Release connections and threads."""
