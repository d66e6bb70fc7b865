"""Compressed streams for the splitters: read plain, gzip (multi-member too) and
BGZF detected from the bytes; write none, gzip or BGZF with threaded deflate.

Reading yields :class:`Piece` objects: a run of decompressed bytes, the
compressed offset where it ends (what progress and ``--parts`` on gzip input
estimate from), and for BGZF the raw blocks it came from, so that a splitter
writing BGZF can copy whole blocks without recompressing them. A BGZF stream
must end with its EOF marker block: one that stops at a block boundary without
it was cut short, and is refused.

Deflate and inflate go through :mod:`genostage.codec.accel` (ISA-L, else zlib-ng,
else zlib, with their level rule); the compressors release the GIL, so blocks
compress in parallel on a thread pool.
"""
from __future__ import annotations

import io
from collections import deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Deque, Iterator, List, Optional, Tuple

from . import accel, bgzf
from .. import background
from ..errors import FormatError, UsageError

OUTPUTS = ("none", "gzip", "bgzf")
DEFAULT_LEVEL = 6
GZIP_MEMBER = 2 << 20  # uncompressed bytes per gzip member written (compressed in parallel)
READ_SIZE = 4 << 20  # plain input read size
GZIP_READ = 256 << 10  # compressed bytes fed to inflate at a time (granularity of offsets)
BGZF_GROUP = 64  # BGZF blocks inflated per piece


def backend() -> str:
    """The deflate library in use: ``isal``, ``zlib-ng`` or ``zlib`` (:mod:`genostage.codec.accel`)."""
    return accel.backend()


def gzip_member(data: "bytes | memoryview", level: int = DEFAULT_LEVEL) -> bytes:
    """``data`` as one complete gzip member (``level`` on zlib's 1-9 scale)."""
    return accel.gzip_member(data, level)


def crc32(data: "bytes | memoryview", value: int = 0) -> int:
    return accel.crc32(data, value)


def detect(head: bytes) -> str:
    """``plain``, ``gzip`` or ``bgzf`` from the first bytes of a file (at least 18 if compressed)."""
    if head[:3] == b"\x1f\x8b\x08":
        if len(head) >= 16 and head[3] & 4 and head[12:14] == b"BC" and head[14:16] == b"\x02\x00":
            return "bgzf"
        return "gzip"
    return "plain"


@dataclass
class Piece:
    """Decompressed bytes with where they end in the compressed file.

    ``blocks`` (BGZF only) lists ``(raw_block, uncompressed_length)`` in
    order, covering ``data`` exactly; ``cstart`` is the compressed offset of
    the first block (or of the piece for other formats).
    """

    data: bytes
    cstart: int
    cend: int
    blocks: Optional[List[Tuple[bytes, int]]] = None


def read_full(fh: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at end of file (handles short raw reads)."""
    data = fh.read(n)
    if data is None:
        data = b""
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = fh.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def iter_pieces(fh: BinaryIO, fmt: str, path: str, head: bytes = b"") -> Iterator[Piece]:
    """Decompressed pieces of ``fh`` (of format ``fmt``); ``head`` holds bytes already read.

    Raises ``FormatError(line=None)`` for a truncated or corrupt stream; the
    splitter adds the line it had reached.
    """
    if fmt == "plain":
        return _plain_pieces(fh, head)
    if fmt == "gzip":
        return _gzip_pieces(fh, path, head)
    if fmt == "bgzf":
        return _bgzf_pieces(fh, path, head)
    raise ValueError(f"unknown format {fmt!r}")


def _plain_pieces(fh: BinaryIO, head: bytes) -> Iterator[Piece]:
    offset = 0
    if head:
        yield Piece(head, 0, len(head))
        offset = len(head)
    while True:
        data = read_full(fh, READ_SIZE)
        if not data:
            return
        yield Piece(data, offset, offset + len(data))
        offset += len(data)


class _Chain(io.RawIOBase):
    """``head`` then the rest of ``fh``, counting the bytes handed out."""

    def __init__(self, head: bytes, fh: BinaryIO) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._fh = fh
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
        else:
            data = self._fh.read(len(b))
            n = len(data) if data else 0
            if n:
                b[:n] = data
        self.consumed += n
        return n


def _gzip_pieces(fh: BinaryIO, path: str, head: bytes) -> Iterator[Piece]:
    reader = accel.gzip_reader()
    if reader is not None:
        return _isal_gzip_pieces(fh, path, head, reader)
    return _zlib_gzip_pieces(fh, path, head)


def _isal_gzip_pieces(fh: BinaryIO, path: str, head: bytes, make_reader: Callable[..., Any]) -> Iterator[Piece]:
    """ISA-L's own gzip reader (multi-member, C): fastest, no reallocations."""
    chain = _Chain(head, fh)
    reader = make_reader(chain, GZIP_READ)
    start = 0
    while True:
        try:
            data = reader.read(1 << 20)
        except EOFError:
            raise FormatError("truncated gzip stream (the file ends inside a compressed member)",
                              path=path, fmt="FASTQ") from None
        except Exception as exc:
            raise FormatError(f"corrupt gzip data ({exc})", path=path, fmt="FASTQ") from None
        if not data:
            return
        end = chain.consumed
        yield Piece(data, start, end)
        start = end


def _zlib_gzip_pieces(fh: BinaryIO, path: str, head: bytes) -> Iterator[Piece]:
    dec = accel.decompressobj(accel.GZIP_WBITS)
    offset = 0
    pending = head
    member_has_data = False
    while True:
        comp = pending if pending else read_full(fh, GZIP_READ)
        pending = b""
        if not comp:
            if member_has_data and not dec.eof:
                raise FormatError("truncated gzip stream (the file ends inside a compressed member)",
                                  path=path, fmt="FASTQ")
            return
        start = offset
        offset += len(comp)
        out = []
        while comp:
            try:
                out.append(dec.decompress(comp))
            except Exception as exc:  # the libraries' errors (zlib.error, isal_zlib.error)
                if isinstance(exc, FormatError):
                    raise
                raise FormatError(f"corrupt gzip data ({exc})", path=path, fmt="FASTQ") from None
            member_has_data = True
            if dec.eof:
                comp = dec.unused_data
                member_has_data = False
                dec = accel.decompressobj(accel.GZIP_WBITS)
                if comp and comp[:1] != b"\x1f":
                    if not comp.strip(b"\x00"):
                        comp = b""
                        break
                    raise FormatError("unexpected data after the end of a gzip member", path=path, fmt="FASTQ")
            else:
                comp = b""
        data = b"".join(out)
        if data:
            yield Piece(data, start, offset)


def _bgzf_pieces(fh: BinaryIO, path: str, head: bytes) -> Iterator[Piece]:
    buf = head
    pos = 0  # next block in buf
    offset = 0  # compressed offset of buf[pos]
    eof = False
    last_ulen = -1  # uncompressed length of the last block seen (0: the EOF marker)
    while True:
        blocks: List[Tuple[bytes, int]] = []
        datas: List[bytes] = []
        start = offset
        while len(blocks) < BGZF_GROUP:
            if len(buf) - pos < bgzf.HEADER_SIZE and not eof:
                more = read_full(fh, 1 << 20)
                eof = not more
                buf = buf[pos:] + more
                pos = 0
            avail = len(buf) - pos
            if not avail:
                break
            if avail < bgzf.HEADER_SIZE or buf[pos:pos + 4] != bgzf.MAGIC:
                if buf[pos:pos + 3] == b"\x1f\x8b\x08":  # a plain gzip member after BGZF blocks
                    raise FormatError(f"gzip member without BGZF framing at offset {offset}", path=path, fmt="FASTQ")
                raise FormatError("truncated BGZF stream (the file ends inside a block)" if avail < bgzf.HEADER_SIZE
                                  else f"unexpected data at offset {offset} (expected a BGZF block)", path=path, fmt="FASTQ")
            size = bgzf.block_size(buf, pos, path, "FASTQ")
            if avail < size and not eof:
                more = read_full(fh, max(1 << 20, size - avail))
                eof = not more
                buf = buf[pos:] + more
                pos = 0
                avail = len(buf)
            if avail < size:
                raise FormatError("truncated BGZF stream (the file ends inside a block)", path=path, fmt="FASTQ")
            raw = buf[pos:pos + size]
            pos += size
            data = bgzf.inflate_block(raw, path, offset, "FASTQ")
            offset += size
            last_ulen = len(data)
            blocks.append((raw, len(data)))
            datas.append(data)
        if not blocks:
            if last_ulen != 0:
                raise FormatError(f"truncated BGZF stream: no EOF marker block at the end (offset {offset}); "
                                  "the file was cut short", path=path, fmt="FASTQ")
            return
        yield Piece(b"".join(datas), start, offset, blocks)


def prefetch(it: Iterator[Piece], depth: int = 3) -> Iterator[Piece]:
    """Run ``it`` on a background thread (decompression overlaps the rest); bounded queue."""
    return background.prefetch(it, depth, "genostage-read")


class Writer:
    """Uncompressed output; the base for compressed writers."""

    raw_blocks = False  # can copy BGZF blocks as they are

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.uncompressed = 0

    def write(self, data: "bytes | memoryview") -> None:
        self.fh.write(data)
        self.uncompressed += len(data)

    def write_raw_block(self, raw: bytes, ulen: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.fh.flush()


class GzipWriter(Writer):
    """Multi-member gzip: members of ``GZIP_MEMBER`` bytes compressed on a pool, written in order."""

    def __init__(self, fh: BinaryIO, level: int, pool: Optional[Executor], threads: int) -> None:
        super().__init__(fh)
        self._level = level
        self._pool = pool
        self._keep = 2 * max(1, threads)
        self._buf: List["bytes | memoryview"] = []
        self._buffered = 0
        self._pending: Deque["Future[bytes]"] = deque()

    def write(self, data: "bytes | memoryview") -> None:
        self.uncompressed += len(data)
        self._buf.append(data)  # views of immutable input pieces: joined (copied) once
        self._buffered += len(data)
        if self._buffered >= GZIP_MEMBER:
            self._emit()

    def _emit(self) -> None:
        if not self._buf:
            return
        block = self._buf[0] if len(self._buf) == 1 else b"".join(self._buf)
        self._buf = []
        self._buffered = 0
        if self._pool is None:
            self.fh.write(gzip_member(block, self._level))
            return
        self._pending.append(self._pool.submit(gzip_member, block, self._level))
        self._drain(self._keep)

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            self.fh.write(self._pending.popleft().result())

    def close(self) -> None:
        self._emit()
        self._drain(0)
        if self.uncompressed == 0:
            self.fh.write(gzip_member(b"", self._level))
        self.fh.flush()

    def abort(self) -> None:
        for fut in self._pending:
            fut.cancel()
        self._pending.clear()


class BgzfOut(Writer):
    """BGZF through :class:`genostage.codec.bgzf.BgzfWriter`; whole input blocks can be copied raw."""

    raw_blocks = True

    def __init__(self, fh: BinaryIO, level: int, pool: Optional[Executor], threads: int) -> None:
        super().__init__(fh)
        self._w = bgzf.BgzfWriter(fh, level=level, threads=max(1, threads), executor=pool)

    def write(self, data: "bytes | memoryview") -> None:
        self.uncompressed += len(data)
        self._w.write(data)

    def write_raw_block(self, raw: bytes, ulen: int) -> None:
        self.uncompressed += ulen
        self._w.write_raw_block(raw)

    def close(self) -> None:
        self._w.close()
        self.fh.flush()


def make_writer(fh: BinaryIO, compress: str, level: int = DEFAULT_LEVEL,
                pool: Optional[Executor] = None, threads: int = 1) -> Writer:
    """A writer for ``compress`` (``none``, ``gzip`` or ``bgzf``) sharing ``pool``."""
    if compress == "none":
        return Writer(fh)
    if compress == "gzip":
        return GzipWriter(fh, level, pool, threads)
    if compress == "bgzf":
        return BgzfOut(fh, level, pool, threads)
    raise UsageError(f"unknown compression {compress!r} (expected one of {', '.join(OUTPUTS)})")


def suffix(compress: str) -> str:
    return {"none": "", "gzip": ".gz", "bgzf": ".gz"}[compress]


def open_stream(fh: BinaryIO, path: str, background: bool = True) -> Tuple[str, Iterator[Piece]]:
    """Detect the format of ``fh`` from its first bytes; return it and the pieces."""
    head = read_full(fh, 64 << 10)
    fmt = detect(head)
    pieces = iter_pieces(fh, fmt, path, head)
    return fmt, (prefetch(pieces) if background else pieces)


