"""Checking the BGZF blocks a block copy moves, and counting the BAM records in them.

Splitting, chunking and gathering copy whole compressed blocks byte for byte, checking only their
framing: a bit flipped inside a block's deflate stream, its CRC32 or its ISIZE would reach the
output unnoticed. :class:`BlockCheck` inflates every block it is given (ISA-L's inflate when
python-isal is installed, zlib otherwise; both release the GIL, so a thread pool runs blocks in
parallel) and compares the data with the block's CRC32 and ISIZE. A mismatch is a
:class:`~genostage.errors.FormatError` naming the file and the block's compressed offset::

    Error in BAM file parts/x.part-0003.bam at offset 5242880: corrupt BGZF block (CRC32 mismatch: ...)

The inflated data can go on, in stream order, to a consumer such as :class:`RecordCounter`, which
counts BAM records (all, and primary: neither secondary 0x100 nor supplementary 0x800, as
``samtools view -c -F 0x900``) without a second pass over the file. :func:`count_bam` counts a
whole BAM that way.

Python API::

    check = BlockCheck("in.bam", consumer=RecordCounter("in.bam"), pool=executor)
    check.blocks(raw_whole_blocks, offset)   # compressed bytes that start and end at block edges
    check.stream(raw_piece, offset)          # compressed bytes cut anywhere (consecutive pieces)
    check.data(inflated)                     # data inflated (and checked) elsewhere, in order
    check.finish()                           # waits; raises the first error in file order
    counts = check.consumer.counts()         # Counts(records=..., primary=...)
"""
from __future__ import annotations

import struct
import zlib
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional, Tuple, Union

from ..codec import blocks as K
from . import _bam as R
from ..errors import FormatError
from ..store import Stores

try:  # ISA-L's inflate is 2.5x zlib's here; zlib is the fallback
    from isal import isal_zlib as _inflater  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - exercised where python-isal is not installed
    _inflater = None  # type: ignore[assignment]

# compressed bytes handed to one check task: under the 1 MiB above which the genostage command has
# glibc map (and unmap) every allocation on its own, so the buffers come from the heap, reused
CHUNK = 512 << 10
_FOOTER = struct.Struct("<II")
# the high byte of FLAG: 0x01 is 0x100 (secondary), 0x08 is 0x800 (supplementary)
_NOT_PRIMARY = bytes(1 if b & 0x09 else 0 for b in range(256))
UNPLACED = 1 << 31  # sort key of refID -1: unplaced reads sort last
Key = Tuple[int, int]
Buffer = Union[bytes, memoryview]


def backend() -> str:
    """The inflate library the check uses: ``isal`` or ``zlib``."""
    return "isal" if _inflater is not None else "zlib"


def inflate_checked(buf: Buffer, off: int, size: int) -> bytes:
    """The data of the block of ``size`` bytes at ``off`` of ``buf``; ValueError says what is wrong."""
    xlen = buf[off + 10] | (buf[off + 11] << 8)
    crc, isize = _FOOTER.unpack_from(buf, off + size - 8)
    if isize > 65536:
        raise ValueError(f"corrupt BGZF block (ISIZE {isize} is above 64 KiB)")
    payload = buf[off + 12 + xlen:off + size - 8]
    try:
        data = (_inflater or zlib).decompress(payload, -15, max(1, isize))
    except Exception as exc:  # zlib.error / isal_zlib.error
        raise ValueError(f"corrupt BGZF block (it does not inflate: {exc})") from None
    if len(data) != isize:
        raise ValueError(f"corrupt BGZF block (ISIZE mismatch: the block says {isize} bytes, "
                         f"it inflates to {len(data)})")
    actual = (_inflater or zlib).crc32(data) & 0xFFFFFFFF
    if actual != crc:
        raise ValueError(f"corrupt BGZF block (CRC32 mismatch: the block says {crc:08x}, its data has {actual:08x})")
    return data


def inflate_blocks(buf: Buffer, base: int, path: str, fmt: str = "BAM", keep: bool = True) -> Optional[List[bytes]]:
    """Inflate and check every block of ``buf`` (whole blocks, first at compressed offset ``base``);
    the blocks' data when ``keep`` (a list: no large joined buffer)."""
    nxt, _count, status, offsets = K.walk_blocks(buf, 0, True)
    if status < 0:
        raise FormatError("not a BGZF block (expected gzip magic 1f 8b 08 04 with a BC field)", path=path,
                          fmt=fmt, offset=base + nxt)
    if nxt != len(buf):
        raise FormatError("truncated BGZF block", path=path, fmt=fmt, offset=base + nxt)
    out = []
    for off in offsets or ():
        try:
            data = inflate_checked(buf, off, K.block_size(buf, off))
        except ValueError as exc:
            raise FormatError(str(exc), path=path, fmt=fmt, offset=base + off) from None
        if keep and data:
            out.append(data)
    return out if keep else None


@dataclass
class Counts:
    """Records counted in a file or a stream. ``primary``: BAM records that are neither secondary
    (0x100) nor supplementary (0x800), unmapped reads included (``samtools view -c -F 0x900``);
    for the other formats it equals ``records``."""

    records: int = 0
    primary: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.records + other.records, self.primary + other.primary)

    def to_json(self) -> dict:
        return {"records": self.records, "primary": self.primary}


class RecordCounter:
    """Counts the BAM records in inflated data fed in order (a record cut between feeds is carried).

    With ``header`` the data starts with the BAM header (magic, text, references), which is skipped;
    otherwise it starts at a record. ``first`` and ``last`` are the (refID, pos) sort keys of the
    first and last record seen (refID -1 as :data:`UNPLACED`).
    """

    def __init__(self, path: str, header: bool = False) -> None:
        self.path = path
        self.records = 0
        self.primary = 0
        self.first: Optional[Key] = None
        self.last: Optional[Key] = None
        self._carry = b""
        self._header = header

    def __call__(self, data: bytes) -> None:
        if self._header:
            data = self._carry + data if self._carry else data
            self._carry = b""
            end = header_end(data, self.path)
            if end is None:
                self._carry = bytes(data)
                return
            self._header = False
            data = data[end:]
        pos = 0
        if self._carry:  # finish the record cut at the end of the last feed, joining only it
            pos = self._finish_carry(data)
            if pos < 0:
                return
        nxt, n, starts = R.walk_records(data, pos, True)
        if not n:
            self._carry = bytes(data[pos:])
            return
        assert starts is not None
        if nxt > len(data):  # the last record is not all here
            cut = starts.pop()
            n -= 1
        else:
            cut = nxt
        self._carry = bytes(data[cut:])
        if n:
            self._add(data, starts)

    def _finish_carry(self, data: bytes) -> int:
        """Count the record begun in the carry; where the rest of ``data`` starts, or -1 when
        ``data`` ends inside that record too."""
        head = self._carry
        if len(head) < 4:
            head += bytes(data[:4 - len(head)])
            if len(head) < 4:
                self._carry = head
                return -1
        need = 4 + int.from_bytes(head[:4], "little") - len(self._carry)
        if need > len(data):
            self._carry += bytes(data)
            return -1
        record = self._carry + bytes(data[:need])
        self._carry = b""
        self._add(record, [0])
        return need

    def _add(self, buf: bytes, starts: List[int]) -> None:
        if starts[-1] + 20 > len(buf):
            raise FormatError("corrupt BAM record (shorter than its fixed fields)", path=self.path, fmt="BAM")
        high = bytes(map(memoryview(buf)[19:].__getitem__, starts))  # FLAG's high byte of every record
        self.records += len(starts)
        self.primary += high.translate(_NOT_PRIMARY).count(0)
        if self.first is None:
            self.first = _key(buf, starts[0])
        self.last = _key(buf, starts[-1])

    def counts(self) -> Counts:
        return Counts(self.records, self.primary)

    def close(self) -> Counts:
        """The counts; FormatError when the data ended inside a record (or inside the header)."""
        if self._header:
            raise FormatError("truncated BAM header", path=self.path, fmt="BAM", offset=0)
        if self._carry:
            raise FormatError(f"the data ends inside a BAM record ({len(self._carry)} bytes of it)",
                              path=self.path, fmt="BAM")
        return self.counts()


def _key(buf: Buffer, start: int) -> Key:
    ref, pos = struct.unpack_from("<ii", buf, start + 4)
    return (ref if ref >= 0 else UNPLACED, pos)


def header_end(data: Buffer, path: str) -> Optional[int]:
    """Where the records start in inflated BAM data that begins with the header; None if the
    header is not all in ``data``."""
    if len(data) >= 4 and bytes(data[:4]) != b"BAM\x01":
        raise FormatError("not a BAM file (expected magic BAM\\1 after decompression)", path=path, fmt="BAM",
                          offset=0)
    if len(data) < 12:
        return None
    (l_text,) = struct.unpack_from("<i", data, 4)
    p = 8 + l_text
    if l_text < 0 or len(data) < p + 4:
        if l_text < 0:
            raise FormatError(f"corrupt BAM header (l_text {l_text})", path=path, fmt="BAM", offset=0)
        return None
    (n_ref,) = struct.unpack_from("<i", data, p)
    p += 4
    for _ in range(max(0, n_ref)):
        if len(data) < p + 4:
            return None
        (l_name,) = struct.unpack_from("<i", data, p)
        p += 8 + max(0, l_name)
        if len(data) < p:
            return None
    return p


class BlockCheck:
    """Checks blocks in stream order, inline or on ``pool``, and hands their data to ``consumer``.

    At most ``depth`` tasks are pending (memory: ``depth`` x (CHUNK + its inflated data)); the
    consumer gets the data block by block, in order; an
    error surfaces at the next call or at :meth:`finish`, the first in file order.
    """

    def __init__(self, path: str, consumer: Optional[Callable[[bytes], None]] = None,
                 pool: Optional[Executor] = None, fmt: str = "BAM", depth: int = 8) -> None:
        self.path = path
        self.consumer = consumer
        self.fmt = fmt
        self._pool = pool
        self._depth = max(1, depth)
        self._pending: Deque[Any] = deque()
        self._carry: bytes = b""
        self._carry_at = 0
        self.checked = 0  # compressed bytes checked

    def blocks(self, buf: Buffer, base: int) -> None:
        """Check the whole blocks of ``buf``, the first at compressed offset ``base``."""
        if not len(buf):
            return
        keep = self.consumer is not None
        self.checked += len(buf)
        if self._pool is None:
            self._pending.append(inflate_blocks(buf, base, self.path, self.fmt, keep))
        else:
            self._pending.append(self._pool.submit(inflate_blocks, buf, base, self.path, self.fmt, keep))
        self._drain(self._depth)

    def stream(self, piece: Buffer, offset: int) -> None:
        """Consecutive compressed bytes cut anywhere; ``offset`` is where ``piece`` starts."""
        if self._carry:
            buf: Buffer = self._carry + bytes(piece)
            base = self._carry_at
        else:
            buf, base = piece, offset
        nxt, _count, status, _ = K.walk_blocks(buf, 0, False)
        if status < 0:
            raise FormatError("not a BGZF block (expected gzip magic 1f 8b 08 04 with a BC field)", path=self.path,
                              fmt=self.fmt, offset=base + nxt)
        self._carry = bytes(buf[nxt:])
        self._carry_at = base + nxt
        if nxt:
            self.blocks(memoryview(buf)[:nxt] if isinstance(buf, bytes) else buf[:nxt], base)

    def data(self, data: Buffer) -> None:
        """Data inflated and checked elsewhere (an edge block), in stream order."""
        if self.consumer is not None and len(data):
            self._pending.append(bytes(data))
            self._drain(self._depth)

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            item = self._pending.popleft()
            data = item.result() if isinstance(item, Future) else item
            if data is None or self.consumer is None:
                continue
            if isinstance(data, list):
                for block in data:
                    self.consumer(block)
            else:
                self.consumer(data)

    def finish(self) -> None:
        """Wait for every check; raise the first error (in file order)."""
        if self._carry:
            raise FormatError("truncated BGZF block", path=self.path, fmt=self.fmt, offset=self._carry_at)
        self._drain(0)

    def abort(self) -> None:
        for item in self._pending:
            if isinstance(item, Future):
                item.cancel()
        self._pending.clear()


def copy_checked(fd: int, start: int, end: int, write: Optional[Callable[[Any], Any]], check: BlockCheck) -> int:
    """Read the whole blocks of a local file between byte offsets ``start`` and ``end`` in pieces of
    whole blocks, hand each piece to ``check`` and to ``write`` (None: check only); returns the
    number of blocks. Framing errors are raised at once, CRC errors by ``check``."""
    import os

    pos = start
    count = 0
    while pos < end:
        buf = os.pread(fd, min(CHUNK, end - pos), pos)
        if not buf:
            raise FormatError("truncated file: it ended early", path=check.path, fmt=check.fmt, offset=pos)
        nxt, n, status, _ = K.walk_blocks(buf, 0, False)
        if status < 0:
            raise FormatError("not a BGZF block (expected gzip magic 1f 8b 08 04 with a BC field)", path=check.path,
                              fmt=check.fmt, offset=pos + nxt)
        if nxt == 0 or (nxt < len(buf) and pos + len(buf) == end):
            raise FormatError("BGZF blocks do not end where expected (file changed?)", path=check.path,
                              fmt=check.fmt, offset=pos + nxt)
        whole = memoryview(buf)[:nxt]
        check.blocks(whole, pos)
        if write is not None:
            write(whole)
        count += n
        pos += nxt
    return count


@dataclass
class Check:
    """How a block copy checks what it copies: ``crc`` inflates every block and compares its CRC32
    and ISIZE; ``count`` also counts the BAM records (implies inflating); ``pool`` runs the checks
    (None: inline, in the copying thread)."""

    crc: bool = True
    count: bool = False
    pool: Optional[Executor] = None

    @property
    def active(self) -> bool:
        return self.crc or self.count


def count_bam(uri: str, stores: Optional[Stores] = None, threads: int = 2) -> Counts:
    """Records and primary records of a whole BAM (local or ``s3://``), every block checked.

    One pass: the compressed bytes are read in order and inflated on ``threads`` threads.
    """
    from .bam_io import Source, check_eof

    src = Source(uri, stores or Stores())
    check_eof(src)
    counter = RecordCounter(src.path, header=True)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    check = BlockCheck(src.path, counter, pool, depth=4 * max(1, threads))
    try:
        offset = 0
        for piece in src.iter(0, src.size, chunk=CHUNK):
            check.stream(piece, offset)
            offset += len(piece)
        check.finish()
    except BaseException:
        check.abort()
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return counter.close()


__all__ = ["BlockCheck", "Check", "Counts", "RecordCounter", "backend", "copy_checked", "count_bam", "header_end",
           "inflate_blocks", "inflate_checked"]
