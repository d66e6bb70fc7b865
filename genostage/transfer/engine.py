"""Parallel, multipart, verified, atomic copies between stores.

Every part of every object of a batch moves with ``concurrency`` requests in
flight (no thread or process per file): a batch of 2,000 small objects and one
2 GiB object in 16 MiB parts look alike to the scheduler. S3 requests are
asynchronous (:mod:`genostage.store.wire`): the calling thread starts parts in
order as slots free up, each part's bytes are checksummed and written as they
arrive on the wire thread, and only work that blocks or takes long (reading a
local part, hashing an MD5, completing a multipart upload) goes to a small
thread pool. Local-to-local copies, and S3 through botocore, run each part on
that pool instead.

Each part is checksummed as it arrives (CRC64NVME always, plus what the
source's stored checksum needs); the part values are combined in order into the
whole-object value and compared with what the source store reports, without a
second read pass (an object whose only checksum is a whole-object MD5 is hashed
in order, reading finished parts back from the page cache). Destinations are
written under a temporary name (local) or as a multipart upload (S3) and appear
only when complete and verified; a failure aborts the upload and removes the
temporary file. A part whose bytes turn out corrupted is fetched again.

Downloads into a ``partial_dir`` keep a journal of finished parts, so a job that
was killed and retried on the same scratch root resumes from the parts on disk.
"""
from __future__ import annotations

import collections
import collections.abc
import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..codec import checksum as ck
from ..config import TransferConfig
from ..errors import ChecksumMismatch, Interrupted, TransferFailed
from ..location import Location
from ..progress import Progress
from ..store import ObjectInfo, Stores, Upload

log = logging.getLogger("genostage.transfer")

ALWAYS = "crc64nvme"  # computed for every transfer: the manifest's value and the upload's full-object checksum


@dataclass
class TransferResult:
    """What one verified copy did (goes into the manifest)."""

    source: str
    destination: str
    size: int
    etag: Optional[str]
    version_id: Optional[str]
    checksums: Dict[str, str]
    verified: Optional[str]  # e.g. "crc64nvme", "etag", "size"
    seconds: float
    parts: int
    resumed_parts: int = 0
    repaired_parts: int = 0

    def to_json(self) -> Dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Part:
    index: int
    start: int
    length: int
    values: Dict[str, Any] = field(default_factory=dict)  # algorithm -> int CRC / bytes md5
    done: bool = False
    resumed: bool = False


class _Copy:
    """The state of one object's copy while its parts move."""

    def __init__(self, src: ObjectInfo, dest: Location, part_size: int, expected: Optional[Tuple[str, str]]) -> None:
        self.src = src
        self.dest = dest
        self.expected = expected
        self.algorithms = [ALWAYS]
        if expected and expected[0] in ("crc32c", "crc32") and expected[0] not in self.algorithms:
            self.algorithms.append(expected[0])
        self.part_size = part_size
        n = max(1, -(-src.size // part_size))
        self.parts = [_Part(i, i * part_size, min(part_size, src.size - i * part_size)) for i in range(n)]
        if src.size == 0:
            self.parts = [_Part(0, 0, 0)]
        self.remaining = len(self.parts)
        self.lock = threading.Lock()
        self.upload: Optional[Upload] = None
        self.started = time.monotonic()
        self.md5: Any = hashlib.md5() if expected and expected[0] == "md5" else None  # or a _Digest
        self.md5_next = 0
        self.md5_pending: Dict[int, bytes] = {}
        self.md5_busy = False
        self.md5_cond = threading.Condition(self.lock)
        self.journal: Optional[str] = None
        self.resumed = 0
        self.repaired = 0
        self.put_info: Optional[ObjectInfo] = None
        self.etag_part_size = 0  # the upload's part size, for a multipart-ETag check
        self.dest_verified: Optional[str] = None
        self.n = 0  # index in the batch

    @property
    def single(self) -> bool:
        return len(self.parts) == 1


class _PartMD5s:
    """MD5s of consecutive ``size``-byte spans of a stream: the upload's parts, for a
    multipart ETag, when one request fetches several of them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.done: List[bytes] = []
        self.cur = hashlib.md5()
        self.filled = 0

    def update(self, piece: "bytes | memoryview") -> None:
        view = memoryview(piece)
        while view:
            take = min(len(view), self.size - self.filled)
            self.cur.update(view[:take])
            self.filled += take
            view = view[take:]
            if self.filled == self.size:
                self.done.append(self.cur.digest())
                self.cur, self.filled = hashlib.md5(), 0

    def digests(self) -> List[bytes]:
        return self.done + ([self.cur.digest()] if self.filled else [])


def _hash_file_range(h: Any, path: str, start: int, length: int, piece: int = 8 << 20) -> None:
    """Feed ``length`` bytes of ``path`` from ``start`` to the hash ``h``, through a read-only
    map of the page cache: no copy and no fresh buffer per piece (a new 8 MiB ``pread`` buffer
    costs the kernel a zeroed allocation as well as the copy)."""
    import mmap

    if length == 0:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size < start + length:
            raise TransferFailed(f"{path}: ends before byte {start + length}")
        base = start - start % mmap.ALLOCATIONGRANULARITY
        m = mmap.mmap(fd, start + length - base, offset=base, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    view = memoryview(m)
    try:
        for off in range(start - base, start - base + length, piece):
            h.update(view[off:min(off + piece, start - base + length)])
    finally:
        view.release()
        m.close()


class _Digest:
    """A finished MD5, standing where a running ``hashlib.md5`` would."""

    def __init__(self, digest: bytes) -> None:
        self._digest = digest

    def hexdigest(self) -> str:
        return self._digest.hex()

    def update(self, data: Any) -> None:
        raise AssertionError("the MD5 is already finished")


def _file_part_md5s(path: str, start: int, length: int, part_size: int) -> List[bytes]:
    """MD5s of the consecutive ``part_size`` spans of ``path``'s bytes [start, start+length),
    hashed together through a read-only map of the page cache (no copies)."""
    import mmap

    if length == 0:
        return []
    fd = os.open(path, os.O_RDONLY)
    try:
        base = start - start % mmap.ALLOCATIONGRANULARITY
        m = mmap.mmap(fd, length + start - base, offset=base, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    view = memoryview(m)
    spans = [view[start - base + off:start - base + min(off + part_size, length)] for off in range(0, length, part_size)]
    try:
        return ck.md5_many(spans)
    finally:
        for span in spans:
            span.release()
        view.release()
        m.close()


def download_part_size(size: int, config: TransferConfig) -> int:
    """Ranged-GET size for a download streamed to disk: at least ``config.part_size`` and
    ``config.download_part_size``, and large enough that an object takes one round of
    ``concurrency`` requests (at most 256 MiB).

    Streaming to disk keeps memory at one socket buffer per request whatever the part
    size, and fewer, larger requests cost less per byte on every server (some
    S3-compatible servers, moto among them, read the whole object for every ranged GET)."""
    mib = 1 << 20
    share = -(-size // config.concurrency)
    return max(config.part_size, config.download_part_size, min(256 * mib, -(-share // mib) * mib))


SMALL = 1 << 20  # parts up to this size are read and written where they are (no hand-off)
WRITE_AHEAD = 4  # x concurrency: small objects fetched ahead of the writer


def _retry_delay(attempt: int) -> float:
    """Seconds before fetching a part again after its ``attempt``-th try failed."""
    return min(0.2 * 2 ** (attempt - 1), 10.0)


def _on_wire_thread() -> bool:
    return threading.current_thread().name.startswith("genostage-wire")


class _Deferred(Exception):
    """A step that may block was reached on the wire thread: run it on the pool instead."""


class _Batch:
    """The moving state of one :meth:`Transfer.copy_all`."""

    def __init__(self, progress: Progress, pool: ThreadPoolExecutor, slots: int) -> None:
        self.copies: List["_Copy"] = []  # prepared so far
        self.results: List[Optional[TransferResult]] = []  # one per copy prepared, in order
        self.errors: List[BaseException] = []
        self.progress = progress
        self.pool = pool
        # one thread writes the small objects the wire thread hands over (more would fight
        # over the GIL; one already overlaps file creation and MD5 with the network)
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="genostage-write")
        self.writing = 0  # fetched small objects waiting for the writer
        # (copy, bytes) of small objects waiting for the writer whose MD5 is wanted, and MD5s
        # already computed for them: the writer hashes up to eight at once (checksum.md5_many)
        self.md5_queue: Deque[Tuple["_Copy", bytes]] = collections.deque()
        self.md5_ready: Dict[int, bytes] = {}
        self.cond = threading.Condition()
        self.free = slots  # parts that may start now
        self.todo: Deque[Tuple["_Copy", _Part]] = collections.deque()  # prepared parts waiting for a slot
        self.fed = False  # every copy prepared
        self.exhausted = False
        self.outstanding = 0  # parts and completions started and not yet ended
        self.calls: Dict[int, Tuple[Any, Any]] = {}  # id -> (wire, call) in flight, cancelled on a stop
        self.stopped = False
        self.local = threading.local()

    def begin(self) -> None:
        with self.cond:
            self.outstanding += 1

    def end(self) -> None:
        with self.cond:
            self.outstanding -= 1
            if self.outstanding == 0:
                self.cond.notify_all()

    def fail(self, exc: BaseException, cancel: threading.Event) -> None:
        with self.cond:
            if not self.errors:
                self.errors.append(exc)
            self.cond.notify_all()
        cancel.set()


class _Attempt:
    """One try at fetching a part: checksums (and the destination write, when streaming)
    piece by piece as the bytes arrive."""

    def __init__(self, c: "_Copy", part: _Part, sink: Optional[Upload], progress: Progress,
                 cancel: threading.Event, defer_md5: bool = False) -> None:
        self.c, self.part, self.sink, self.progress, self.cancel = c, part, sink, progress, cancel
        self.values: Dict[str, Any] = {name: 0 for name in c.algorithms}
        want_etag = c.expected is not None and c.expected[0] == "etag"
        # MD5s for a multipart ETag: as the bytes arrive, or (defer_md5, streamed parts) read
        # back from the file on the pool, so the wire thread does not hash
        self.hash_later = want_etag and defer_md5 and sink is not None
        self.part_md5s = _PartMD5s(c.etag_part_size) if want_etag and not self.hash_later else None
        # a streamed single part is hashed as it arrives (in order by construction)
        self.whole_md5 = hashlib.md5() if c.md5 is not None and c.single and sink is not None else None
        self.pieces: List[bytes] = []
        self.got = 0

    def consume(self, piece: "memoryview | bytes") -> None:
        if self.cancel.is_set():
            raise Interrupted(getattr(self.cancel, "signum", 15))
        for name in self.c.algorithms:
            self.values[name] = ck.crc(name, piece, self.values[name])
        if self.part_md5s is not None:
            self.part_md5s.update(piece)
        if self.whole_md5 is not None:
            self.whole_md5.update(piece)
        if self.sink is not None:
            self.sink.write_part(self.part.index + 1, self.part.start + self.got, piece)
        else:  # a view is only valid during the call; bytes may be kept as they are
            self.pieces.append(piece if isinstance(piece, bytes) else bytes(piece))
        self.got += len(piece)
        self.progress.update(len(piece))

    def check(self) -> Optional[TransferFailed]:
        if self.got != self.part.length:
            loc, start = self.c.src.location, self.part.start
            return TransferFailed(f"{loc}: short read at byte {start + self.got} "
                                  f"(expected {self.part.length} bytes from {start})")
        return None

    def outcome(self) -> Tuple[Dict[str, Any], Optional[bytes]]:
        """The part's checksum values and, when not streamed, its bytes."""
        if self.part_md5s is not None:
            self.values["md5"] = self.part_md5s.digests()
        if self.whole_md5 is not None:
            self.c.md5 = self.whole_md5
            self.c.md5_next = 1
        if self.sink is not None:
            return self.values, None
        return self.values, (b"".join(self.pieces) if len(self.pieces) != 1 else self.pieces[0])


class Transfer:
    """Copies batches of objects between stores, verified and atomic.

    ``cancel`` (a threading.Event) stops every part between pieces and cancels the
    requests in flight; uploads are aborted and temporary files removed before
    ``copy_all`` raises :class:`Interrupted`.
    """

    def __init__(self, stores: Stores, config: Optional[TransferConfig] = None,
                 cancel: Optional[threading.Event] = None, partial_dir: Optional[str] = None,
                 show_progress: bool = True) -> None:
        self.stores = stores
        self.config = config or stores.config
        self.cancel = cancel or threading.Event()
        self.partial_dir = partial_dir
        self.show_progress = show_progress
        self._active: List[_Copy] = []
        self._active_lock = threading.Lock()

    # -- public --------------------------------------------------------------
    def copy_all(self, items: Iterable[Tuple[ObjectInfo, Location]], label: str = "transfer") -> List[TransferResult]:
        """Copy every ``(source info, destination)`` pair; all succeed or the first error is raised.

        ``items`` may be lazy (:func:`expand_lazily`: a listing read page by page): the first
        copies start while later pairs are still coming, and the progress total grows with them."""
        known = isinstance(items, collections.abc.Sized)
        if known and not items:  # type: ignore[arg-type]
            return []
        total = sum(src.size for src, _ in items) if known else None
        progress = Progress(total, label, enabled=self.show_progress)
        pool = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="genostage-xfer")
        b = _Batch(progress, pool, self.config.concurrency)
        try:
            self._schedule(b, items, grow=not known)
            self._drain(b)
        except BaseException:  # an interrupt while waiting: stop every part, then leave nothing half-done
            self.cancel.set()
            self._drain(b)
            self._cleanup(b.copies)
            raise
        finally:
            pool.shutdown(wait=True)
            b.writer.shutdown(wait=True)
            progress.close()
        if b.errors:
            self._cleanup(b.copies)
            raise b.errors[0]
        if self.cancel.is_set():
            self._cleanup(b.copies)
            raise Interrupted(getattr(self.cancel, "signum", 15))
        return [r for r in b.results if r is not None]

    def copy(self, src: ObjectInfo, dest: Location, label: str = "transfer") -> TransferResult:
        return self.copy_all([(src, dest)], label)[0]

    # -- scheduling ------------------------------------------------------------
    def _schedule(self, b: _Batch, items: Iterable[Tuple[ObjectInfo, Location]], grow: bool = False) -> None:
        """Prepare the copies in order, starting parts as soon as they are ready; each part that
        ends starts the next one (on whatever thread it ended: for small objects that is the
        wire thread, with no hand-off at all). Preparing may ask the store (a HEAD for a large
        object's checksum), so it stays on this thread, overlapped with the transfers."""
        try:
            for n, (src, dest) in enumerate(items):
                if self._stopping(b):
                    break
                if grow:
                    b.progress.grow(src.size)
                c = self._prepare(src, dest)
                c.n = n
                with b.cond:
                    b.copies.append(c)
                    b.results.append(None)
                if c.remaining == 0:  # fully resumed from a journal
                    b.begin()
                    b.pool.submit(self._finish_task, b, c)
                    continue
                with b.cond:
                    b.todo.extend((c, part) for part in c.parts if not part.done)
                self._pump(b)
        except BaseException as exc:
            b.fail(exc, self.cancel)
        b.progress.settle()
        with b.cond:
            b.fed = True
        self._pump(b)

    def _stopping(self, b: _Batch) -> bool:
        return bool(b.errors) or self.cancel.is_set()

    def _pump(self, b: _Batch) -> None:
        """Start parts, in order, while slots are free. Re-entered on the same thread (a part
        that ends at once), it only asks the outer call to go round again: no deep recursion."""
        if getattr(b.local, "pumping", False):
            b.local.again = True
            return
        b.local.pumping = True
        try:
            again = True
            while again:
                b.local.again = False
                while True:
                    with b.cond:
                        if self._stopping(b) or b.free == 0 or b.exhausted:
                            break
                        if not b.todo:
                            if b.fed:
                                b.exhausted = True
                                b.cond.notify_all()
                            break
                        item = b.todo.popleft()
                        b.free -= 1
                        b.outstanding += 1
                    self._start(b, *item)
                again = b.local.again
        finally:
            b.local.pumping = False

    def _release(self, b: _Batch) -> None:
        """A part's requests are over: its slot goes to the next part."""
        with b.cond:
            b.free += 1
        self._pump(b)

    def _drain(self, b: _Batch) -> None:
        """Wait for every part and completion; on a stop, cancel the requests in flight."""
        with b.cond:
            while b.outstanding or not (b.exhausted or self._stopping(b)):
                b.cond.wait(0.2)
                if self._stopping(b) and not b.stopped:
                    b.stopped = True
                    reason = b.errors[0] if b.errors else Interrupted(getattr(self.cancel, "signum", 15))
                    for wire, call in list(b.calls.values()):
                        wire.cancel(call, reason)

    def _start(self, b: _Batch, c: _Copy, part: _Part) -> None:
        """Begin moving one part; every path ends in :meth:`_part_done` or :meth:`_part_failed`."""
        try:
            sink = self._ensure_upload(c) if self._streams(c) else None
        except BaseException as exc:
            self._part_failed(b, part, exc)
            return
        self._fetch_async(b, c, part, sink, 1)

    def _fetch_async(self, b: _Batch, c: _Copy, part: _Part, sink: Optional[Upload], attempt: int) -> None:
        """Fetch a part (asynchronously from S3, on the pool otherwise), retrying transient failures."""
        att = _Attempt(c, part, sink, b.progress, self.cancel, defer_md5=True)
        store = self.stores.for_location(c.src.location)
        wire = getattr(store, "wire", None)
        key = id(att)

        def finished(err: Optional[BaseException]) -> None:
            b.calls.pop(key, None)
            if err is None:
                err = att.check()
            if err is None:
                try:
                    values, data = att.outcome()
                except BaseException as exc:
                    self._part_failed(b, part, exc)
                    return
                self._fetched(b, c, part, values, data, att.hash_later)
                return
            b.progress.update(-att.got)
            if isinstance(err, TransferFailed) and attempt < self.config.max_attempts and not self._stopping(b):
                delay = _retry_delay(attempt)
                log.warning("%s: part %d: %s; retrying in %.1f s", c.src.location, part.index + 1, err, delay)
                timer = threading.Timer(delay, self._fetch_async, (b, c, part, sink, attempt + 1))
                timer.daemon = True
                timer.start()
                return
            self._part_failed(b, part, err)

        if part.length == 0:
            finished(None)
        elif wire is not None:
            b.calls[key] = (wire, None)
            call = store.get_async(c.src.location, part.start, part.length, att.consume,  # type: ignore[attr-defined]
                                   finished, etag=c.src.etag)
            if key in b.calls:
                b.calls[key] = (wire, call)
        elif part.length <= SMALL and self._async_dest(c):
            self._read_blocking(store, c, part, att, finished)  # a small local read: no hand-off
        else:
            b.pool.submit(self._read_blocking, store, c, part, att, finished)

    def _read_blocking(self, store: Any, c: _Copy, part: _Part, att: _Attempt,
                       finished: Any) -> None:
        try:
            store.read_into(c.src.location, part.start, part.length, att.consume, etag=c.src.etag,
                            chunk=self.config.io_chunk, cancel=self.cancel)
        except BaseException as exc:
            finished(exc)
            return
        finished(None)

    def _async_dest(self, c: _Copy) -> bool:
        return getattr(self.stores.for_location(c.dest), "wire", None) is not None

    def _fetched(self, b: _Batch, c: _Copy, part: _Part, values: Dict[str, Any], data: Optional[bytes],
                 hash_later: bool = False) -> None:
        """A part's bytes are in: streamed ones are already written; others go to the destination."""
        part.values = values
        if data is None and hash_later:  # the network is done with it: the slot goes on
            self._release(b)
            b.pool.submit(self._hash_task, b, c, part)
            return
        if data is None:
            self._part_done(b, c, part)
            return
        if c.dest.scheme == "file":
            if _on_wire_thread():  # hashing and file creation beside the wire thread: 2 cores busy
                with b.cond:
                    # the request is over: its slot goes to the next one now, unless too much
                    # fetched data already waits for the writer (memory stays bounded)
                    early = b.writing < WRITE_AHEAD * self.config.concurrency
                    b.writing += 1
                    if c.md5 is not None and c.single:
                        b.md5_queue.append((c, data))
                if early:
                    self._release(b)
                b.writer.submit(self._write, b, c, part, data, early, True)
                return
            blocking = False
        else:
            blocking = (c.md5 is not None and not c.single) or not self._async_dest(c) or \
                (c.upload is None and not c.single)
        if blocking and _on_wire_thread():
            b.pool.submit(self._write, b, c, part, data)
        else:
            self._write(b, c, part, data)

    def _write(self, b: _Batch, c: _Copy, part: _Part, data: bytes, released: bool = False,
               queued: bool = False) -> None:
        if queued:
            with b.cond:
                b.writing -= 1
        try:
            if c.md5 is not None and c.single:
                c.md5 = _Digest(self._whole_md5(b, c, data))
                c.md5_next = 1
            elif c.md5 is not None:
                self._feed_md5(c, part.index, data)
            if c.single and c.dest.is_s3:
                self._put(b, c, part, data)
                return
            upload = self._ensure_upload(c)
        except BaseException as exc:
            self._part_failed(b, part, exc, released)
            return

        def written(err: Optional[BaseException]) -> None:
            if err is None:
                self._part_done(b, c, part, released)
            else:
                self._part_failed(b, part, err, released)

        upload.write_part_async(part.index + 1, part.start, data, {ALWAYS: ck.to_wire(ALWAYS, part.values[ALWAYS])},
                                written)

    def _whole_md5(self, b: _Batch, c: _Copy, data: bytes) -> bytes:
        """The MD5 of a small object, computed with those queued behind it (eight at a time)."""
        with b.cond:
            ready = b.md5_ready.pop(id(c), None)
            others: List[Tuple[_Copy, bytes]] = []
            if ready is None:
                while b.md5_queue and len(others) < 7:
                    oc, od = b.md5_queue.popleft()
                    if oc is not c:
                        others.append((oc, od))
        if ready is not None:
            return ready
        digests = ck.md5_many([data] + [od for _, od in others])
        with b.cond:
            for (oc, _), digest in zip(others, digests[1:]):
                b.md5_ready[id(oc)] = digest
        return digests[0]

    def _put(self, b: _Batch, c: _Copy, part: _Part, data: bytes) -> None:
        """One PutObject with its MD5 (``Content-MD5``) and CRC64NVME for the server to check;
        the returned ETag (an MD5 unless SSE-KMS) is compared too."""
        store = self.stores.for_location(c.dest)
        sums = {ALWAYS: ck.to_wire(ALWAYS, part.values[ALWAYS])}
        md5 = hashlib.md5(data).hexdigest() if self.config.verify else None
        if md5:
            sums["md5"] = md5

        def done(info: Optional[ObjectInfo], err: Optional[BaseException]) -> None:
            try:
                if err is not None:
                    raise err
                assert info is not None
                c.put_info = info
                if md5 and self.config.sse != "aws:kms" and ck.is_md5_etag(info.etag):
                    if info.etag != md5:
                        store.delete(c.dest)
                        raise ChecksumMismatch(str(c.dest), "md5 (ETag)", md5, str(info.etag))
                    c.dest_verified = "md5"
            except BaseException as exc:
                self._part_failed(b, part, exc)
                return
            self._part_done(b, c, part)

        store.put_async(c.dest, data, sums, done)

    def _hash_task(self, b: _Batch, c: _Copy, part: _Part) -> None:
        """The upload-part MD5s of a streamed part, read back from the file (for a multipart ETag)."""
        try:
            assert c.upload is not None
            part.values["md5"] = _file_part_md5s(c.upload.temp_path, part.start, part.length,  # type: ignore[attr-defined]
                                                 c.etag_part_size)
        except BaseException as exc:
            self._part_failed(b, part, exc, released=True)
            return
        self._part_done(b, c, part, released=True)

    def _part_done(self, b: _Batch, c: _Copy, part: _Part, released: bool = False) -> None:
        try:
            part.done = True
            self._journal(c, part)
        except BaseException as exc:
            self._part_failed(b, part, exc, released)
            return
        with c.lock:
            c.remaining -= 1
            last = c.remaining == 0
        if c.md5 is not None and not c.single and self._streams(c):
            b.begin()
            b.pool.submit(self._md5_task, b, c)
        if last:
            b.begin()
            if _on_wire_thread() and not self._light_finish(c):
                b.pool.submit(self._finish_task, b, c)
            else:
                self._finish_task(b, c)
        b.end()
        if not released:
            self._release(b)

    def _part_failed(self, b: _Batch, part: _Part, exc: BaseException, released: bool = False) -> None:
        b.fail(exc, self.cancel)
        b.end()
        if not released:
            self._release(b)

    def _light_finish(self, c: _Copy) -> bool:
        """Completing ``c`` needs no request and no long hashing (so the wire thread may do it)."""
        return c.dest.scheme == "file" and (c.md5 is None or c.single)

    def _finish_task(self, b: _Batch, c: _Copy) -> None:
        try:
            b.results[c.n] = self._finish(c, may_block=not _on_wire_thread())
        except _Deferred:
            b.pool.submit(self._finish_task, b, c)
            return
        except BaseException as exc:
            b.fail(exc, self.cancel)
        b.end()

    def _md5_task(self, b: _Batch, c: _Copy) -> None:
        try:
            self._feed_md5(c)
        except BaseException as exc:
            b.fail(exc, self.cancel)
        b.end()

    # -- preparation ---------------------------------------------------------
    def _prepare(self, src: ObjectInfo, dest: Location) -> _Copy:
        if self.config.verify and src.location.is_s3 and not src.checksums and src.size >= self.config.multipart_threshold:
            # a listing carries no checksum values: ask for the full-object one (one HEAD per large object)
            src = self.stores.for_location(src.location).stat(src.location)
        expected = ck.expected_for(src) if self.config.verify else None
        if expected and expected[0] == "md5" and src.sse == "aws:kms":
            expected = None  # an SSE-KMS ETag is not an MD5 of the bytes
        part_size = self.config.part_size
        etag_part_size = 0
        if expected and expected[0] == "etag":
            n = int(expected[1].rsplit("-", 1)[1])
            store = self.stores.for_location(src.location)
            first = store.first_part_size(src.location) if hasattr(store, "first_part_size") else None
            guessed = first if first and -(-src.size // first) == n else ck.guess_etag_part_size(src.size, n)
            if guessed is None:
                expected = None
            else:
                etag_part_size = part_size = guessed
                if dest.scheme == "file":  # fetch several of the upload's parts per request, not so many
                    # that their MD5s (hashed as each request ends) cannot keep pace with the download
                    part_size = max(guessed, max(self.config.part_size, self.config.download_part_size)
                                    // guessed * guessed)
        elif dest.scheme == "file" and not (expected and expected[0] == "md5"):
            part_size = download_part_size(src.size, self.config)
        if src.size < self.config.multipart_threshold and not (expected and expected[0] == "etag"):
            part_size = max(src.size, 1)
        c = _Copy(src, dest, part_size, expected)
        c.etag_part_size = etag_part_size
        if dest.scheme == "file" and self.partial_dir and not c.single:
            self._load_journal(c)
        return c

    def _partial_paths(self, c: _Copy) -> Tuple[str, str]:
        ident = f"{c.src.location}|{c.src.etag}|{c.src.version_id}|{c.src.size}|{c.part_size}"
        name = hashlib.sha1(ident.encode()).hexdigest()[:24]
        assert self.partial_dir is not None
        return os.path.join(self.partial_dir, name + ".data"), os.path.join(self.partial_dir, name + ".journal")

    def _load_journal(self, c: _Copy) -> None:
        data_path, journal = self._partial_paths(c)
        c.journal = journal
        if not (os.path.exists(journal) and os.path.exists(data_path)):
            return
        with open(journal) as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    break  # a torn last line: ignore it and what follows
                part = c.parts[entry["index"]]
                part.values = {k: ([bytes.fromhex(d) for d in v] if k == "md5" else v) for k, v in entry["values"].items()}
                if not part.done:
                    part.done = part.resumed = True
                    c.remaining -= 1
                    c.resumed += 1
        if c.resumed:
            log.info("%s: resuming, %d of %d parts already on disk", c.src.location, c.resumed, len(c.parts))

    # -- parts ---------------------------------------------------------------
    def _ensure_upload(self, c: _Copy) -> Upload:
        with c.lock:
            if c.upload is None:
                store = self.stores.for_location(c.dest)
                if c.dest.scheme == "file" and c.journal is not None:
                    data_path, _ = self._partial_paths(c)
                    os.makedirs(os.path.dirname(data_path), exist_ok=True)
                    c.upload = store.begin_upload(c.dest, c.src.size, temp_path=data_path)  # type: ignore[call-arg]
                else:
                    c.upload = store.begin_upload(c.dest, c.src.size)
                with self._active_lock:
                    self._active.append(c)
            return c.upload

    def _streams(self, c: _Copy) -> bool:
        """Downloads to a local file write each piece to disk as it arrives; others hold the part.
        A small object is held too, and written (temp file, rename) in one go once it is in."""
        return c.dest.scheme == "file" and not (c.single and c.src.size <= SMALL)

    def _fetch(self, c: _Copy, part: _Part, progress: Progress,
               sink: Optional[Upload] = None) -> Tuple[Dict[str, Any], Optional[bytes]]:
        """Read one part and wait (the repair path), retrying transient failures.

        With a ``sink`` every piece is written at its offset as it arrives and no
        data is returned; without one the part's bytes are returned.
        """
        store = self.stores.for_location(c.src.location)
        for attempt in range(1, self.config.max_attempts + 1):
            att = _Attempt(c, part, sink, progress, self.cancel)
            try:
                store.read_into(c.src.location, part.start, part.length, att.consume, etag=c.src.etag,
                                chunk=self.config.io_chunk, cancel=self.cancel)
                err = att.check()
                if err is not None:
                    raise err
                return att.outcome()
            except TransferFailed as exc:
                progress.update(-att.got)
                if attempt == self.config.max_attempts:
                    raise
                delay = _retry_delay(attempt)
                log.warning("%s: part %d: %s; retrying in %.1f s", c.src.location, part.index + 1, exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _feed_md5(self, c: _Copy, index: Optional[int] = None, data: bytes = b"") -> None:
        """MD5 is not combinable: parts are hashed in order. Parts written to a local file
        (streamed, or resumed from an earlier attempt) are read back from it (the page
        cache); parts held in memory wait in ``md5_pending`` (bounded by the slots). One
        thread at a time hashes, outside the lock, so the others go on."""
        with c.lock:
            if index is not None:
                c.md5_pending[index] = data
            if c.md5_busy:
                return
            c.md5_busy = True
        try:
            while True:
                with c.lock:
                    source = self._next_md5_piece(c)
                    if source is None:
                        c.md5_busy = False
                        c.md5_cond.notify_all()
                        return
                assert c.md5 is not None
                if isinstance(source, bytes):
                    c.md5.update(source)
                else:
                    _hash_file_range(c.md5, *source)
        except BaseException:
            with c.lock:
                c.md5_busy = False
                c.md5_cond.notify_all()
            raise

    def _next_md5_piece(self, c: _Copy) -> "Optional[bytes | Tuple[str, int, int]]":
        """The next part to hash, in order, if it is here (called with ``c.lock`` held):
        its bytes, or (file, start, length) where it was written."""
        if c.md5_next >= len(c.parts):
            return None
        part = c.parts[c.md5_next]
        source: "bytes | Tuple[str, int, int]"
        if c.md5_next in c.md5_pending:
            source = c.md5_pending.pop(c.md5_next)
        elif part.done and self._streams(c):
            path = c.upload.temp_path if c.upload is not None else self._partial_paths(c)[0]  # type: ignore[attr-defined]
            source = (path, part.start, part.length)
        else:
            return None
        c.md5_next += 1
        return source

    def _wait_md5(self, c: _Copy) -> None:
        """Hash whatever is left once every part is in."""
        with c.lock:
            while c.md5_busy:
                c.md5_cond.wait()
        self._feed_md5(c)

    def _journal(self, c: _Copy, part: _Part) -> None:
        if c.journal is None:
            return
        entry = {"index": part.index, "values": {k: ([d.hex() for d in v] if k == "md5" else v) for k, v in part.values.items()}}
        with c.lock:
            with open(c.journal, "a") as fh:
                fh.write(json.dumps(entry) + "\n")

    # -- completion ----------------------------------------------------------
    def _combined(self, c: _Copy, name: str) -> int:
        value = c.parts[0].values[name]
        for part in c.parts[1:]:
            value = ck.combine(name, value, part.values[name], part.length)
        return int(value)

    def _actual(self, c: _Copy) -> Dict[str, str]:
        out = {name: ck.to_wire(name, self._combined(c, name)) for name in c.algorithms}
        if c.expected and c.expected[0] == "etag":
            out["etag"] = ck.etag_of_parts([d for p in c.parts for d in p.values["md5"]])
        if c.md5 is not None:
            out["md5"] = c.md5.hexdigest()
        return out

    def _verify(self, c: _Copy, actual: Dict[str, str]) -> Optional[str]:
        if c.expected is None:
            return None
        name, want = c.expected
        got = actual.get(name)
        if name in ("etag", "md5"):
            want, got = want.strip('"'), (got or "").strip('"')
        if got != want:
            raise ChecksumMismatch(str(c.src.location), name, want, str(got))
        return name

    def _finish(self, c: _Copy, may_block: bool = True) -> TransferResult:
        if c.md5 is not None:
            self._wait_md5(c)
        actual = self._actual(c)
        try:
            verified = self._verify(c, actual)
        except ChecksumMismatch:
            if not may_block and self._repairable(c):
                raise _Deferred() from None
            if not self._repair(c):
                raise
            actual = self._actual(c)
            verified = self._verify(c, actual)
        if c.upload is not None:
            info = c.upload.complete({ALWAYS: actual[ALWAYS]})
            c.dest_verified = c.upload.proof or c.dest_verified
            with self._active_lock:
                if c in self._active:
                    self._active.remove(c)
            c.upload = None
        else:
            info = c.put_info or self.stores.for_location(c.dest).stat(c.dest)
        self._check_destination(c, info, actual)
        if c.journal is not None and os.path.exists(c.journal):
            os.unlink(c.journal)
        return TransferResult(
            source=str(c.src.location), destination=str(c.dest), size=c.src.size, etag=c.src.etag,
            version_id=c.src.version_id, checksums=actual, verified=verified or c.dest_verified or "size",
            seconds=round(time.monotonic() - c.started, 3), parts=len(c.parts),
            resumed_parts=c.resumed, repaired_parts=c.repaired)

    def _repairable(self, c: _Copy) -> bool:
        return c.md5 is None and c.upload is not None

    def _repair(self, c: _Copy) -> bool:
        """Fetch every part again; rewrite those whose bytes differ; True once the whole value matches."""
        if not self._repairable(c):
            return False  # single-stream checks: the batch-level retry handles them
        upload = c.upload
        assert upload is not None
        quiet = Progress(None, "", enabled=False)
        for _ in range(self.config.max_attempts - 1):
            changed = 0
            for part in c.parts:
                if self._streams(c):
                    values, _ = self._fetch(c, part, quiet, sink=upload)
                else:
                    values, data = self._fetch(c, part, quiet)
                    if values != part.values:
                        assert data is not None
                        upload.write_part(part.index + 1, part.start, data,
                                          {ALWAYS: ck.to_wire(ALWAYS, values[ALWAYS])})
                if values != part.values:
                    part.values = values
                    changed += 1
            c.repaired += changed
            log.warning("%s: checksum mismatch; fetched again, %d part(s) differed", c.src.location, changed)
            if not changed:
                return False  # the same bytes twice: the source itself does not match its checksum
            try:
                self._verify(c, self._actual(c))
                return True
            except ChecksumMismatch:
                continue
        return False

    def _check_destination(self, c: _Copy, info: ObjectInfo, actual: Dict[str, str]) -> None:
        """After publishing: the destination must report our size and, where it keeps one, our CRC64NVME."""
        reported = info.checksums.get(ALWAYS)
        problem = None
        if info.size != c.src.size:
            problem = ("size", str(c.src.size), str(info.size))
        elif reported and "-" not in reported and info.checksum_type != "COMPOSITE":
            if reported != actual[ALWAYS]:
                problem = (ALWAYS, actual[ALWAYS], reported)
            elif c.dest.is_s3:
                c.dest_verified = ALWAYS
        if problem:
            self.stores.for_location(c.dest).delete(c.dest)
            raise ChecksumMismatch(str(c.dest), *problem)

    def _cleanup(self, copies: Sequence[_Copy]) -> None:
        """Abort what did not complete: multipart uploads, temporary files (journals stay for a resume)."""
        for c in copies:
            if c.upload is None:
                continue
            try:
                if c.journal is not None:
                    c.upload.close_keep()  # type: ignore[attr-defined]  # partial data + journal: a retry resumes
                else:
                    c.upload.abort()
            except Exception:  # best effort
                pass
            c.upload = None


def expand(stores: Stores, src: Location, dest: Location, what: str = "") -> List[Tuple[ObjectInfo, Location]]:
    """Pairs of (source object, destination) for one object or a whole prefix, all listed
    before the first is returned (for a free-space check before any byte moves)."""
    return list(expand_lazily(stores, src, dest, what))


def expand_lazily(stores: Stores, src: Location, dest: Location, what: str = "") -> Iterator[Tuple[ObjectInfo, Location]]:
    """:func:`expand` as the listing comes, page by page, so copies start with the first page.
    A key that would land outside the destination stops it there (pairs already given stay given)."""
    from ..errors import NotFound
    from ..location import safe_relative

    store = stores.for_location(src)
    if not src.is_prefix:
        info = store.stat(src)
        yield info, (dest.as_prefix().child(src.name) if dest.is_prefix else dest)
        return
    base = dest.as_prefix()
    empty = True
    for info in store.list(src):
        empty = False
        yield info, base.child(safe_relative(info.relative, what or str(src)))
    if empty:
        raise NotFound(f"{src}: no objects under this prefix")


def copy(src: "str | Location", dest: "str | Location", stores: Optional[Stores] = None,
         config: Optional[TransferConfig] = None) -> List[TransferResult]:
    """Copy one object or a whole prefix, in either direction or S3 to S3, verified."""
    from ..location import parse

    stores = stores or Stores(config)
    s, d = parse(src), parse(dest)
    return Transfer(stores, config or stores.config).copy_all(expand_lazily(stores, s, d), label=f"copy {s.name}")
