"""Cut points every N records: one pass that inflates every block (on threads) and walks record lengths."""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Deque, Iterator, List, Optional, Tuple

from ..codec import blocks as K
from . import _bam as R
from ..codec.bgzf import make_virtual, split_virtual
from ..errors import UsageError
from .bam_io import BamHeader, Source, check_eof, inflate_at, record_name

Cut = Tuple[int, int]


def iter_raw_blocks(src: Source, start: int, end: int) -> Iterator[Tuple[int, bytes]]:
    """``(offset, block)`` for every block in ``[start, end)``, read with one ranged read."""
    carry = b""
    base = start  # global offset of carry[0] (or of the next piece when carry is empty)
    for piece in src.iter(start, end - start):
        buf = carry + piece if carry else piece
        nxt, _n, status, offsets = K.walk_blocks(buf, 0, True)
        if status < 0:
            raise src.error("not a BGZF block (expected gzip magic 1f 8b 08 04 with a BC field)", offset=base + nxt)
        mv = memoryview(buf)
        prev = offsets or []
        for i, off in enumerate(prev):
            stop = prev[i + 1] if i + 1 < len(prev) else nxt
            yield base + off, bytes(mv[off:stop])
        carry = bytes(mv[nxt:])
        base += nxt
    if carry or base != end:
        raise src.error("truncated BGZF block", offset=base)


def iter_inflated(src: Source, start: int, end: int, threads: int) -> Iterator[Tuple[int, bytes]]:
    """``(offset, data)`` for every block in ``[start, end)``, inflating ``threads`` blocks at a time."""
    if threads <= 1:
        for off, block in iter_raw_blocks(src, start, end):
            yield off, inflate_at(block, 0, src, off)
        return
    pending: Deque[Tuple[int, "Future[bytes]"]] = deque()
    with ThreadPoolExecutor(threads) as pool:
        for off, block in iter_raw_blocks(src, start, end):
            pending.append((off, pool.submit(inflate_at, block, 0, src, off)))
            while len(pending) > 4 * threads:
                o, fut = pending.popleft()
                yield o, fut.result()
        while pending:
            o, fut = pending.popleft()
            yield o, fut.result()


def record_cuts(src: Source, header: BamHeader, every: int, by_name: bool = False, threads: int = 1) -> List[Cut]:
    """Cuts so that each run holds ``every`` records (more with ``by_name``, to keep a QNAME whole)."""
    if every < 1:
        raise UsageError(f"--records must be at least 1 (got {every})")
    eof = check_eof(src)
    fc, fu = split_virtual(header.first_record)
    cuts: List[Cut] = [(header.first_record, 0)]
    carry = b""  # the start of a record not yet complete
    carry_v = 0
    count = 0  # records in the current run
    pending = False  # by_name: the run is full, waiting for a new QNAME
    last_name: Optional[bytes] = None
    skip = fu
    for off, data in iter_inflated(src, fc, eof, threads):
        if skip:
            data = data[skip:]
        buf = carry + data if carry else data
        base = len(carry)  # buf[base:] is this block's data, from uoffset ``skip``
        nxt, n, starts = R.walk_records(buf, 0, True)
        starts = starts or []
        complete = starts if nxt <= len(buf) else starts[:-1]
        i = 0
        while i < len(complete):
            if count + (len(complete) - i) < every and not pending:
                count += len(complete) - i
                break
            if not pending:
                i += every - count
                count = every
                if i >= len(complete):
                    break
                pending = True
            s = complete[i]
            if by_name:
                name = record_name(buf, s)
                prev = last_name if i == 0 else record_name(buf, complete[i - 1])
                if name == prev:
                    i += 1
                    count += 1
                    continue
            v = carry_v if s < base else make_virtual(off, s - base + skip)
            cuts.append((v, 0))
            pending = False
            count = 0
        if by_name and complete:
            last_name = record_name(buf, complete[-1])
        inc = nxt if nxt <= len(buf) else starts[-1]
        if inc < len(buf):
            carry_v = carry_v if inc < base else make_virtual(off, inc - base + skip)
            carry = bytes(buf[inc:])
        else:
            carry = b""
        skip = 0
    if carry:
        raise src.error("truncated BAM record before the EOF block", offset=make_virtual(eof, 0))
    if pending:
        pass  # the last run simply holds the rest
    cuts.append((make_virtual(eof, 0), 0))
    return _with_block_sizes(src, cuts)


def _with_block_sizes(src: Source, cuts: List[Cut]) -> List[Cut]:
    """Fill in the size of the block each cut points into (needed for the chunk's byte range)."""
    out = []
    for v, _ in cuts:
        c, u = split_virtual(v)
        size = K.block_size(src.read(c, 18), 0) if u else 0
        out.append((v, size))
    return out
