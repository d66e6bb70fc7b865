"""BGZF framing (SAMv1 section 4.1): blocks of at most 64 KiB, each a gzip member
carrying its own size in a ``BC`` extra field, and a 28-byte empty EOF block.

Pure-Python framing around the fastest deflate installed (:mod:`genostage.codec.accel`:
ISA-L, zlib-ng or zlib); compression of independent blocks runs on a thread pool (the
deflate libraries release the GIL). :func:`inflate_block` is the one BGZF block inflate of
genostage's codecs. The block-walking and record-finding hot loops of the BAM splitter live
in the ``genostage.codec._bgzf`` kernel.
"""
from __future__ import annotations

import struct
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import BinaryIO, Deque, Iterator, Optional, Tuple

from . import accel
from ..errors import FormatError

MAGIC = b"\x1f\x8b\x08\x04"
EOF_BLOCK = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
HEADER_SIZE = 18  # fixed gzip header + XLEN + the 6-byte BC subfield
FOOTER_SIZE = 8  # CRC32 + ISIZE
MAX_BLOCK_SIZE = 65536
BLOCK_DATA_MAX = 0xFF00  # as htslib: leaves room so the compressed block always fits
_HEADER = struct.Struct("<4sIBBHBBHH")  # magic, mtime, xfl, os, xlen, si1, si2, slen, bsize
_FOOTER = struct.Struct("<II")  # crc32, isize


def deflate_raw(data: "bytes | memoryview", level: int = 6) -> bytes:
    """Raw deflate of ``data`` (``level`` on zlib's scale; see :mod:`genostage.codec.accel`)."""
    return accel.deflate_raw(data, level)


def compress_block(data: "bytes | memoryview", level: int = 6) -> bytes:
    """One complete BGZF block holding ``data`` (at most BLOCK_DATA_MAX bytes)."""
    if len(data) > MAX_BLOCK_SIZE:
        raise ValueError(f"BGZF block data too large: {len(data)} bytes")
    payload = deflate_raw(data, level)
    if len(payload) + HEADER_SIZE + FOOTER_SIZE > MAX_BLOCK_SIZE:
        payload = accel.stored_raw(data)
    bsize = len(payload) + HEADER_SIZE + FOOTER_SIZE - 1
    header = _HEADER.pack(MAGIC, 0, 0, 0xFF, 6, 66, 67, 2, bsize)
    return header + payload + _FOOTER.pack(accel.crc32(data), len(data))


def block_size(buf: "bytes | memoryview", offset: int = 0, path: Optional[str] = None, fmt: str = "BGZF") -> int:
    """Total size of the BGZF block starting at ``offset`` of ``buf`` (header must be complete)."""
    if len(buf) - offset < HEADER_SIZE:
        raise FormatError("truncated BGZF block header", path=path, fmt=fmt, offset=offset)
    magic, _mtime, _xfl, _os, xlen, si1, si2, slen, bsize = _HEADER.unpack_from(buf, offset)
    if magic != MAGIC:
        raise FormatError("not a BGZF block (expected gzip magic 1f 8b 08 04)", path=path, fmt=fmt, offset=offset)
    if (si1, si2, slen) != (66, 67, 2) or xlen < 6:
        raise FormatError("gzip block without the BGZF 'BC' extra field", path=path, fmt=fmt, offset=offset)
    return bsize + 1


def _corrupt(why: str, path: Optional[str], offset: int, fmt: str) -> FormatError:
    if fmt == "BGZF":
        return FormatError(f"corrupt BGZF block ({why})", path=path, fmt=fmt, offset=offset)
    return FormatError(f"corrupt BGZF block at offset {offset} ({why})", path=path, fmt=fmt)


def inflate_block(block: "bytes | memoryview", path: Optional[str] = None, offset: int = 0,
                  fmt: str = "BGZF") -> bytes:
    """Decompress one whole BGZF block (``block`` starts with it), checking its CRC32 and length.

    Errors name ``path`` and the block's ``offset`` in the file; ``fmt`` is the format the
    error reports (``BGZF``, or ``FASTQ`` for a BGZF FASTQ)."""
    size = block_size(block, 0, path, fmt)
    if len(block) < size:
        raise FormatError("truncated BGZF block", path=path, fmt=fmt, offset=offset)
    xlen = struct.unpack_from("<H", block, 10)[0]
    crc, isize = _FOOTER.unpack_from(block, size - FOOTER_SIZE)
    if isize > MAX_BLOCK_SIZE:
        raise _corrupt("ISIZE above 64 KiB", path, offset, fmt)
    try:
        data = accel.inflate_raw(memoryview(block)[12 + xlen:size - FOOTER_SIZE], isize)
    except ValueError as exc:
        raise _corrupt(str(exc), path, offset, fmt) from None
    if len(data) != isize or accel.crc32(data) != crc:
        raise _corrupt("CRC32 or length mismatch", path, offset, fmt)
    return data


def is_eof_block(block: "bytes | memoryview") -> bool:
    """True for an empty block (ISIZE 0): the end-of-file marker of a complete BGZF file."""
    return len(block) >= HEADER_SIZE + FOOTER_SIZE and _FOOTER.unpack_from(block, len(block) - FOOTER_SIZE)[1] == 0


def iter_blocks(fh: BinaryIO, path: Optional[str] = None, start: int = 0) -> Iterator[Tuple[int, bytes]]:
    """Yield ``(offset, block_bytes)`` for every block of a BGZF stream read from ``fh``."""
    offset = start
    while True:
        head = fh.read(HEADER_SIZE)
        if not head:
            return
        size = block_size(head, 0, path)
        rest = fh.read(size - HEADER_SIZE)
        if len(rest) != size - HEADER_SIZE:
            raise FormatError("truncated BGZF block", path=path, fmt="BGZF", offset=offset)
        yield offset, head + rest
        offset += size


def make_virtual(coffset: int, uoffset: int) -> int:
    return (coffset << 16) | uoffset


def split_virtual(voffset: int) -> Tuple[int, int]:
    return voffset >> 16, voffset & 0xFFFF


class BgzfWriter:
    """Writes BGZF to a binary file object, compressing blocks on ``threads`` threads.

    Blocks are written in order; at most ``2 x threads`` blocks are pending, so
    memory stays bounded. ``close()`` appends the EOF block unless told not to.
    """

    def __init__(self, fh: BinaryIO, level: int = 6, threads: int = 1,
                 executor: Optional[Executor] = None) -> None:
        self._fh = fh
        self._level = level
        self._buf = bytearray()
        self._threads = max(1, threads)
        self._own_pool = executor is None and self._threads > 1
        self._pool = executor or (ThreadPoolExecutor(self._threads) if self._threads > 1 else None)
        self._pending: Deque = deque()
        self.compressed_bytes = 0

    def write(self, data: "bytes | memoryview") -> int:
        self._buf += data
        while len(self._buf) >= BLOCK_DATA_MAX:
            self._emit(bytes(self._buf[:BLOCK_DATA_MAX]))
            del self._buf[:BLOCK_DATA_MAX]
        return len(data)

    def write_raw_block(self, block: bytes) -> None:
        """Copy an already compressed block (after flushing what is buffered)."""
        self.flush()
        self._drain(0)
        self._fh.write(block)
        self.compressed_bytes += len(block)

    def flush(self) -> None:
        if self._buf:
            self._emit(bytes(self._buf))
            self._buf.clear()

    def _emit(self, data: bytes) -> None:
        if self._pool is None:
            block = compress_block(data, self._level)
            self._fh.write(block)
            self.compressed_bytes += len(block)
            return
        self._pending.append(self._pool.submit(compress_block, data, self._level))
        self._drain(2 * self._threads)

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            block = self._pending.popleft().result()
            self._fh.write(block)
            self.compressed_bytes += len(block)

    def close(self, write_eof: bool = True) -> None:
        self.flush()
        self._drain(0)
        if write_eof:
            self._fh.write(EOF_BLOCK)
            self.compressed_bytes += len(EOF_BLOCK)
        if self._own_pool and self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> "BgzfWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        elif self._own_pool and self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
