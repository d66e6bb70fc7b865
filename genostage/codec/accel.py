"""Deflate accelerators in one place: which library compresses and inflates, at which level.

Order (the first one importable is used):

1. **ISA-L** (``isal.isal_zlib``, from python-isal): about 400 MB/s deflate and twice zlib's inflate
   on FASTQ. Its levels are 0-3; a zlib level L maps to ``min(3, L // 3)`` (1-2 -> 0, 3-5 -> 1,
   6-8 -> 2, 9 -> 3), measured at level 2 ~1.10x zlib-6's size.
2. **zlib-ng** (``zlib_ng.zlib_ng``): ~130 MB/s at level 3, ~1.05x zlib-6's size; zlib's levels as is.
3. **zlib**: 10-30 MB/s at level 6; levels as is.

Every compressor and decompressor of genostage.codec goes through this module (gzip members,
raw deflate of BGZF blocks, inflate, CRC32, ISA-L's multi-member gzip reader), and all of them
release the GIL, so blocks compress in parallel on a thread pool. :func:`use` selects a backend
for a block of code (tests, benchmarks).
"""
from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional

try:  # optional accelerators: degrade gracefully
    from isal import isal_zlib as _isal_zlib  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - exercised by a run without python-isal
    _isal_zlib = None  # type: ignore[assignment]
try:
    from zlib_ng import zlib_ng as _zlib_ng  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    _zlib_ng = None  # type: ignore[assignment]

ORDER = ("isal", "zlib-ng", "zlib")
GZIP_WBITS = 31  # a gzip member (header and trailer)
RAW_WBITS = -15  # raw deflate (inside a BGZF block)


@dataclass(frozen=True)
class Backend:
    """One deflate library and its level rule."""

    name: str
    module: Any
    max_level: int  # its own top level (ISA-L: 3)

    def level(self, zlib_level: int) -> int:
        """The library's level for a level on zlib's 0-9 scale."""
        if self.max_level == 3:
            return min(3, max(0, zlib_level // 3))
        return max(0, min(9, zlib_level))

    def compressobj(self, zlib_level: int, wbits: int) -> Any:
        return self.module.compressobj(self.level(zlib_level), self.module.DEFLATED, wbits)

    def gzip_reader(self) -> Optional[Callable[..., Any]]:
        """ISA-L's C reader of multi-member gzip streams (None for the others)."""
        return getattr(self.module, "_GzipReader", None) if self.name == "isal" else None


def available() -> List[Backend]:
    """The backends importable here, in :data:`ORDER`."""
    found = []
    if _isal_zlib is not None:
        found.append(Backend("isal", _isal_zlib, 3))
    if _zlib_ng is not None:
        found.append(Backend("zlib-ng", _zlib_ng, 9))
    found.append(Backend("zlib", zlib, 9))
    return found


_current: Backend = available()[0]


def current() -> Backend:
    return _current


def backend() -> str:
    """The deflate library in use: ``isal``, ``zlib-ng`` or ``zlib``."""
    return _current.name


@contextlib.contextmanager
def use(name: str) -> Iterator[Backend]:
    """Use the backend ``name`` (one of :func:`available`) inside the block."""
    global _current
    chosen = next((b for b in available() if b.name == name), None)
    if chosen is None:
        raise ValueError(f"deflate backend {name!r} is not installed (have: {', '.join(b.name for b in available())})")
    previous, _current = _current, chosen
    try:
        yield chosen
    finally:
        _current = previous


# -- the operations --------------------------------------------------------------------------
def gzip_member(data: "bytes | memoryview", level: int) -> bytes:
    """``data`` as one complete gzip member (``level`` on zlib's 0-9 scale)."""
    b = _current
    if b.name in ("isal", "zlib-ng"):
        return bytes(b.module.compress(data, b.level(level), GZIP_WBITS))
    obj = b.compressobj(level, GZIP_WBITS)
    return obj.compress(data) + obj.flush()


def deflate_raw(data: "bytes | memoryview", level: int) -> bytes:
    """Raw deflate of ``data`` (``level`` on zlib's 0-9 scale)."""
    obj = _current.compressobj(level, RAW_WBITS)
    return bytes(obj.compress(data) + obj.flush())


def stored_raw(data: "bytes | memoryview") -> bytes:
    """Raw deflate in stored (uncompressed) blocks: the largest ``data`` can become."""
    obj = zlib.compressobj(0, zlib.DEFLATED, RAW_WBITS)
    return obj.compress(data) + obj.flush()


def inflate_raw(data: "bytes | memoryview", size_hint: int = 0) -> bytes:
    """Inflate raw deflate data; raises ``ValueError`` (the libraries' errors) when it is corrupt."""
    mod = _current.module
    try:
        return bytes(mod.decompress(data, RAW_WBITS, max(size_hint, 1)))
    except Exception as exc:  # isal_zlib.error, zlib.error: all say the data is corrupt
        raise ValueError(str(exc)) from None


def decompressobj(wbits: int = GZIP_WBITS) -> Any:
    return _current.module.decompressobj(wbits)


def crc32(data: "bytes | memoryview", value: int = 0) -> int:
    mod = _current.module if _current.name == "isal" else zlib  # zlib-ng's crc32 is zlib's
    return int(mod.crc32(data, value)) & 0xFFFFFFFF


def gzip_reader() -> Optional[Callable[..., Any]]:
    return _current.gzip_reader()


__all__ = ["Backend", "ORDER", "available", "backend", "crc32", "current", "decompressobj", "deflate_raw",
           "gzip_member", "gzip_reader", "inflate_raw", "stored_raw", "use"]
