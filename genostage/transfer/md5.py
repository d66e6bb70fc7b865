"""MD5 where that is all a store keeps: a whole-object MD5 hashed in order, and the MD5s of an
upload's parts (for a multipart ETag) hashed several at once.

An MD5 cannot be combined from pieces hashed apart: a whole-object MD5 is one stream, fed
part after part in order, from memory or read back from the file the parts were written to
(through a read-only map of the page cache: no copy, no fresh buffer per piece).
"""
from __future__ import annotations

import collections
import hashlib
import mmap
import os
import threading
from typing import Any, Dict, List, Optional, Tuple, Union

from ..codec import checksum as ck
from ..errors import TransferFailed

# what the next part to hash is: its bytes, or (file, start, length) where it was written
Source = Union[bytes, Tuple[str, int, int]]


def _mapped(path: str, start: int, length: int) -> Tuple[mmap.mmap, int]:
    """A read-only map covering ``[start, start+length)`` of ``path`` and the offset of ``start`` in it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size < start + length:
            raise TransferFailed(f"{path}: ends before byte {start + length}")
        base = start - start % mmap.ALLOCATIONGRANULARITY
        return mmap.mmap(fd, start + length - base, offset=base, prot=mmap.PROT_READ), start - base
    finally:
        os.close(fd)


def hash_file_range(h: Any, path: str, start: int, length: int, piece: int = 8 << 20) -> None:
    """Feed ``length`` bytes of ``path`` from ``start`` to the hash ``h``."""
    if length == 0:
        return
    m, off = _mapped(path, start, length)
    view = memoryview(m)
    try:
        for at in range(off, off + length, piece):
            h.update(view[at:min(at + piece, off + length)])
    finally:
        view.release()
        m.close()


def file_part_md5s(path: str, start: int, length: int, part_size: int) -> List[bytes]:
    """MD5s of the consecutive ``part_size`` spans of ``path``'s bytes [start, start+length),
    hashed together (:func:`genostage.codec.checksum.md5_many`)."""
    if length == 0:
        return []
    m, off = _mapped(path, start, length)
    view = memoryview(m)
    spans = [view[off + at:off + min(at + part_size, length)] for at in range(0, length, part_size)]
    try:
        return ck.md5_many(spans)
    finally:
        for span in spans:
            span.release()
        view.release()
        m.close()


class PartMD5s:
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


class OrderedMD5:
    """One object's MD5, fed its parts in order as they become available.

    ``offer(index, data)`` hands over a part held in memory; ``written(path)`` says parts
    marked done may be read back from ``path``. One thread at a time hashes (outside the
    lock), the others go on; :meth:`finish` hashes what is left and waits for the hasher."""

    def __init__(self, parts: List[Tuple[int, int]]) -> None:
        self._parts = parts  # (start, length) in order
        self._h = hashlib.md5()
        self._next = 0
        self._pending: Dict[int, bytes] = {}
        self._on_disk: Dict[int, str] = {}
        self._busy = False
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._digest: Optional[str] = None

    def set_digest(self, hexdigest: str) -> None:
        """The whole object's MD5, computed elsewhere (a small object hashed with others)."""
        self._digest = hexdigest
        self._next = len(self._parts)

    def offer(self, index: int, data: bytes) -> None:
        with self._lock:
            self._pending[index] = data
        self.drain()

    def on_disk(self, index: int, path: str) -> None:
        """Part ``index`` is written to ``path``; it is hashed at the next :meth:`drain`."""
        with self._lock:
            self._on_disk[index] = path

    def _take(self) -> Optional[Source]:
        if self._next >= len(self._parts):
            return None
        source: Source
        if self._next in self._pending:
            source = self._pending.pop(self._next)
        elif self._next in self._on_disk:
            start, length = self._parts[self._next]
            source = (self._on_disk.pop(self._next), start, length)
        else:
            return None
        self._next += 1
        return source

    def drain(self) -> None:
        """Hash the parts that are next in order, unless another thread is at it."""
        with self._lock:
            if self._busy:
                return
            self._busy = True
        try:
            while True:
                with self._lock:
                    source = self._take()
                    if source is None:
                        return
                if isinstance(source, bytes):
                    self._h.update(source)
                else:
                    hash_file_range(self._h, *source)
        finally:
            with self._lock:
                self._busy = False
                self._idle.notify_all()

    def finish(self) -> str:
        """The hex digest, once every part has been offered (waits for a hashing thread)."""
        with self._lock:
            while self._busy:
                self._idle.wait()
        self.drain()
        if self._digest is not None:
            return self._digest
        if self._next < len(self._parts):
            raise AssertionError(f"MD5 of part {self._next + 1} of {len(self._parts)} is missing")
        return self._h.hexdigest()

    def reset(self) -> None:
        """Start over (the parts are fetched again)."""
        with self._lock:
            self._h, self._next = hashlib.md5(), 0
            self._pending.clear()
            self._on_disk.clear()
            self._digest = None


class SmallMD5s:
    """Whole-object MD5s of small objects queued for the writer, hashed up to eight at once
    (:func:`genostage.codec.checksum.md5_many`) by whichever object's turn comes first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: "collections.deque[Tuple[int, bytes]]" = collections.deque()
        self._ready: Dict[int, bytes] = {}

    def queue(self, key: int, data: bytes) -> None:
        with self._lock:
            self._queue.append((key, data))

    def digest(self, key: int, data: bytes) -> bytes:
        with self._lock:
            ready = self._ready.pop(key, None)
            others: List[Tuple[int, bytes]] = []
            if ready is None:
                while self._queue and len(others) < 7:
                    k, d = self._queue.popleft()
                    if k != key:
                        others.append((k, d))
        if ready is not None:
            return ready
        digests = ck.md5_many([data] + [d for _, d in others])
        with self._lock:
            for (k, _), digest in zip(others, digests[1:]):
                self._ready[k] = digest
        return digests[0]
