"""The store interface: where bytes live (S3, local disk).

A store knows nothing about jobs or checksums of whole transfers; it offers
stat, list, ranged reads, multipart writes and delete, and counts what it does
(``Store.counters``) so tests and commands can report bytes read.
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Dict, Iterator, List, Optional

from ..location import Location


@dataclass
class ObjectInfo:
    """What a store reports about one object or file.

    ``relative`` is the key relative to the listed prefix (``""`` for stat).
    ``checksums`` maps algorithm names (``crc64nvme``, ``crc32c``, ``crc32``,
    ``sha256``, ``sha1``) to the store's wire form (base64, maybe ``-N``);
    ``checksum_type`` is ``FULL_OBJECT`` or ``COMPOSITE`` when the store says.
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


class Upload(ABC):
    """A multipart write in progress; ``complete`` publishes it, ``abort`` leaves nothing.

    ``proof`` names how :meth:`complete` knew the published object is the bytes written,
    when it did (e.g. ``md5 (multipart ETag)``); None leaves the check to the caller."""

    proof: Optional[str] = None

    @abstractmethod
    def write_part(self, number: int, offset: int, data: "bytes | memoryview",
                   checksums: Optional[Dict[str, str]] = None) -> None:
        """Write part ``number`` (1-based), which starts at byte ``offset`` of the object."""

    @abstractmethod
    def complete(self, checksums: Optional[Dict[str, str]] = None) -> ObjectInfo:
        """Publish the object; ``checksums`` are full-object wire values for the store to check."""

    @abstractmethod
    def abort(self) -> None:
        """Discard every part; the destination is left as it was."""

    def write_part_async(self, number: int, offset: int, data: "bytes | memoryview",
                         checksums: Optional[Dict[str, str]], done: Callable[[Optional[BaseException]], None]) -> None:
        """:meth:`write_part`, then ``done(error or None)``; uploads that can send without
        waiting return at once and call ``done`` later, on another thread."""
        try:
            self.write_part(number, offset, data, checksums)
        except BaseException as exc:  # handed to the caller's continuation
            done(exc)
            return
        done(None)


class Store(ABC):
    """One place bytes live; thread-safe."""

    def __init__(self) -> None:
        self.counters = Counters()

    @abstractmethod
    def stat(self, loc: Location, checksums: bool = True) -> ObjectInfo:
        """Describe one object; raises ``NotFound``."""

    @abstractmethod
    def list(self, prefix: Location) -> Iterator[ObjectInfo]:
        """Every object under a prefix, with ``relative`` set; raises ``NotFound`` for a missing bucket/dir."""

    @abstractmethod
    def read_range(self, loc: Location, start: int, length: int, etag: Optional[str] = None) -> bytes:
        """``length`` bytes from ``start`` (fewer only at the end of the object)."""

    @abstractmethod
    def iter_range(self, loc: Location, start: int, length: int, etag: Optional[str] = None,
                   chunk: int = 1 << 20) -> Iterator[bytes]:
        """Stream ``length`` bytes from ``start`` in pieces of at most ``chunk``."""

    def read_into(self, loc: Location, start: int, length: int, consume: Callable[[memoryview], None],
                  etag: Optional[str] = None, chunk: int = 1 << 20,
                  cancel: Optional[threading.Event] = None) -> None:
        """Read ``length`` bytes from ``start``, handing each piece to ``consume`` (which may run on
        another thread, and must not keep the view). ``cancel`` stops between pieces."""
        for piece in self.iter_range(loc, start, length, etag=etag, chunk=chunk):
            if cancel is not None and cancel.is_set():
                from ..errors import Interrupted

                raise Interrupted(getattr(cancel, "signum", 15))
            consume(memoryview(piece))

    @abstractmethod
    def put_bytes(self, loc: Location, data: bytes, checksums: Optional[Dict[str, str]] = None) -> ObjectInfo:
        """Write a whole (small) object in one request."""

    @abstractmethod
    def begin_upload(self, loc: Location, size: int) -> Upload:
        """Start a multipart write of ``size`` bytes."""

    @abstractmethod
    def delete(self, loc: Location) -> None:
        """Remove an object (no error if it is already gone)."""

    def put_async(self, loc: Location, data: bytes, checksums: Optional[Dict[str, str]],
                  done: Callable[[Optional[ObjectInfo], Optional[BaseException]], None]) -> None:
        """:meth:`put_bytes`, then ``done(info, error)``; stores that can send without waiting
        return at once and call ``done`` later, on another thread."""
        try:
            info = self.put_bytes(loc, data, checksums)
        except BaseException as exc:  # handed to the caller's continuation
            done(None, exc)
            return
        done(info, None)

    def open_read(self, loc: Location, etag: Optional[str] = None) -> BinaryIO:
        """A forward-only file-like reader over the whole object (for streaming parsers)."""
        from .stream import RangeReader

        return RangeReader(self, loc, etag=etag)  # type: ignore[return-value]

    def supported_checksums(self) -> List[str]:
        """Full-object checksum algorithms this store can check on upload."""
        return []
