"""A forward-only, buffered reader over a store object built on ranged reads."""
from __future__ import annotations

import io
from typing import TYPE_CHECKING, Iterator, Optional

from ..location import Location

if TYPE_CHECKING:  # pragma: no cover
    from .base import Store


class RangeReader(io.RawIOBase):
    """Reads an object front to back with large ranged GETs (``window`` bytes each)."""

    def __init__(self, store: "Store", loc: Location, etag: Optional[str] = None,
                 start: int = 0, length: Optional[int] = None, window: int = 8 << 20) -> None:
        super().__init__()
        self._store = store
        self._loc = loc
        if length is None:
            length = store.stat(loc, checksums=False).size - start
        self._end = start + length
        self._pos = start
        self._etag = etag
        self._window = window
        self._pieces: Optional[Iterator[bytes]] = None
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: "bytearray | memoryview") -> int:  # type: ignore[override]
        while not self._buf:
            if self._pieces is None:
                if self._pos >= self._end:
                    return 0
                n = min(self._window, self._end - self._pos)
                self._pieces = self._store.iter_range(self._loc, self._pos, n, etag=self._etag)
                self._pos += n
            piece = next(self._pieces, None)
            if piece is None:
                self._pieces = None
                continue
            self._buf = memoryview(piece)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n
