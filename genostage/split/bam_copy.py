"""Writing a run of BAM records by block copy: only the edge blocks are inflated and re-encoded.

A run goes from a start to an end virtual offset. The bytes from the start
block to the end block arrive as pieces of one ranged read; whole blocks in
between pass through unchanged (their framing is checked on the way). With a
:class:`~genostage.split.bam_check.Check` (the default of every caller) each
whole block is also inflated and its CRC32 and ISIZE compared, and the records
can be counted on the way (``genostage.split.bam_check``).
"""
from __future__ import annotations

import errno
import io
import os
from typing import Any, BinaryIO, Dict, Iterator, Optional

from ..codec import blocks as K
from ..codec.bgzf import BgzfWriter, split_virtual
from .bam_check import BlockCheck, Check, RecordCounter, copy_checked
from .bam_io import Source, inflate_at


class _Pieces:
    """Pulls bytes from an iterator of pieces, tracking the global offset of the next byte."""

    def __init__(self, pieces: Iterator[bytes], offset: int) -> None:
        self._it = pieces
        self._buf = memoryview(b"")
        self.offset = offset

    def take(self, n: int) -> bytes:
        """Exactly ``n`` bytes (fewer only when the pieces run out)."""
        out = []
        while n > 0:
            if not self._buf:
                nxt = next(self._it, None)
                if nxt is None:
                    break
                self._buf = memoryview(nxt)
            part = self._buf[:n]
            self._buf = self._buf[len(part):]
            out.append(bytes(part))
            n -= len(part)
            self.offset += len(part)
        return b"".join(out)

    def take_upto(self, n: int) -> Optional[memoryview]:
        """Up to ``n`` bytes as they come (one piece at most); None when the pieces run out."""
        if not self._buf:
            nxt = next(self._it, None)
            if nxt is None:
                return None
            self._buf = memoryview(nxt)
        part = self._buf[:n]
        self._buf = self._buf[len(part):]
        self.offset += len(part)
        return part


def _take_block(pieces: _Pieces, src: Source) -> bytes:
    at = pieces.offset
    head = pieces.take(18)
    size = K.block_size(head, 0) if len(head) == 18 else 0
    if size <= 0:
        raise src.error("not a BGZF block where the plan expects one" if size < 0 else "truncated BGZF block", offset=at)
    block = head + pieces.take(size - 18)
    if len(block) != size:
        raise src.error("truncated BGZF block", offset=at)
    return block


def _copy_raw(pieces: _Pieces, until: int, writer: BgzfWriter, src: Source, check: Optional[BlockCheck] = None) -> int:
    """Copy whole blocks unchanged up to compressed offset ``until``; returns the number of blocks.
    ``check`` sees every byte copied."""
    nxt_block = pieces.offset  # where the next block header starts
    tail = b""  # a block header split across two pieces
    blocks = 0
    writer.flush()
    while pieces.offset < until:
        base = pieces.offset
        part = pieces.take_upto(until - base)
        if part is None:
            raise src.error("truncated BAM: the byte range ended early", offset=base)
        writer.write_raw_block(part)  # type: ignore[arg-type]
        if check is not None:
            check.stream(part, base)
        end = base + len(part)
        if tail:
            head = tail + bytes(part[:18 - len(tail)])
            if len(head) < 18 and end < until:
                tail = head
                continue
            size = K.block_size(head, 0)
            if size <= 0:
                raise src.error("not a BGZF block", offset=nxt_block)
            nxt_block += size
            blocks += 1
            tail = b""
        if nxt_block < end:
            stop, count, status, _ = K.walk_blocks(part, nxt_block - base)
            blocks += count
            if status < 0:
                raise src.error("not a BGZF block (expected gzip magic 1f 8b 08 04 with a BC field)", offset=base + stop)
            nxt_block = base + stop
            if stop < len(part):
                size = K.block_size(part, stop)
                if size > 0:
                    nxt_block += size
                    blocks += 1
                else:
                    tail = bytes(part[stop:])
    if tail or nxt_block != until:
        raise src.error("BGZF blocks do not end where the plan says (object changed?)", offset=until)
    return blocks


def _fileno(out: Optional[BinaryIO]) -> int:
    if out is None:
        return -1
    try:
        return out.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return -1


def _kernel_copy(in_fd: int, out_fd: int, offset: int, count: int) -> None:
    """Copy ``count`` bytes from ``offset`` of ``in_fd`` to ``out_fd`` in the kernel (as cp does)."""
    use_cfr = hasattr(os, "copy_file_range")
    while count > 0:
        n = 0
        if use_cfr:
            try:
                n = os.copy_file_range(in_fd, out_fd, min(count, 1 << 30), offset)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF):
                    raise
                use_cfr = False
                continue
        else:
            n = os.sendfile(out_fd, in_fd, offset, min(count, 1 << 30))
        if n <= 0:
            raise OSError(errno.EIO, "short copy")
        offset += n
        count -= n


def _edge(src: Source, offset: int) -> bytes:
    """The data of the block at ``offset`` (a virtual offset's block), CRC-checked."""
    block = src.read(offset, 65536)
    size = K.block_size(block, 0) if block else 0
    if size <= 0:
        raise src.error("not a BGZF block where a virtual offset points", offset=offset)
    return inflate_at(block, 0, src, offset)


def _copy_local(writer: BgzfWriter, out: BinaryIO, out_fd: int, fd: int, start: int, end: int, src: Source,
                check: Optional[BlockCheck]) -> int:
    """Whole blocks copied in the kernel (as ``cp``), after their framing is checked: with small
    preads of the block headers, or by ``check``, which reads every block and inflates it."""
    if check is None:
        stop, count, status = K.walk_blocks_fd(fd, start, end)
        if status == -2:
            raise src.error("read error", offset=stop)
        if status < 0:
            raise src.error("not a BGZF block (expected gzip magic 1f 8b 08 04 with a BC field)", offset=stop)
        if stop != end:
            raise src.error("BGZF blocks do not end where expected (file changed?)", offset=stop)
    else:
        count = copy_checked(fd, start, end, None, check)
    writer.write_raw_block(b"")  # flush and write out what is pending
    out.flush()
    _kernel_copy(fd, out_fd, start, end - start)
    if out.seekable():
        out.seek(0, os.SEEK_END)
    writer.compressed_bytes += end - start
    return count


def _copy_records_local(writer: BgzfWriter, out: BinaryIO, out_fd: int, start_v: int, end_v: int,
                        src: Source, check: Optional[BlockCheck]) -> Dict[str, int]:
    """The local-file path: edge blocks read and inflated; whole blocks checked (``check``: every
    block inflated) and copied in the kernel (``copy_file_range``)."""
    sc, su = split_virtual(start_v)
    ec, eu = split_virtual(end_v)
    stats = {"blocks_copied": 0, "blocks_reencoded": 0}

    def edge_data(data: bytes) -> None:
        _write_edge(writer, data, stats, check)

    raw_start = sc
    if su or sc == ec:
        data = _edge(src, sc)
        edge_data(data[su:eu] if sc == ec else data[su:])
        raw_start = sc + K.block_size(src.read(sc, 18), 0)
    if sc != ec and raw_start < ec:
        with open(src.loc.path, "rb") as fh:
            stats["blocks_copied"] = _copy_local(writer, out, out_fd, fh.fileno(), raw_start, ec, src, check)
        src.store.counters.add(requests=1, read=ec - raw_start)
    if sc != ec and eu:
        data = _edge(src, ec)
        if eu > len(data):
            raise src.error("virtual offset beyond its block's data", offset=end_v)
        edge_data(data[:eu])
    return stats


def _write_edge(writer: BgzfWriter, data: bytes, stats: Dict[str, int], check: Optional[BlockCheck]) -> None:
    """Records of an edge block (inflated, cut at a record boundary) written as a block of their own."""
    writer.write(data)
    writer.flush()
    stats["blocks_reencoded"] += 1
    if check is not None:
        check.data(data)


def copy_records(writer: BgzfWriter, pieces_iter: Iterator[bytes], start_v: int, end_v: int,
                 src: Source, out: Optional[BinaryIO] = None, check: Optional[Check] = None) -> Dict[str, Any]:
    """Write the records between two virtual offsets; ``pieces_iter`` yields the bytes from the start block
    through the end block (the end block only when the end offset is inside it).

    When the source is a local file and ``out`` (the file ``writer`` writes to) has a
    file descriptor, whole blocks are copied from the file and ``pieces_iter`` is not used
    (in the kernel when nothing is checked). ``check`` (see :class:`~genostage.split.bam_check.Check`)
    inflates every whole block copied and compares its CRC32 and ISIZE (the edge blocks are
    inflated anyway); with ``check.count`` the stats also hold ``records``, ``primary`` and the
    sort keys ``first``/``last`` of the first and last record (None when there are none).
    """
    counter = RecordCounter(src.path) if check is not None and check.count else None
    blocks = BlockCheck(src.path, counter, check.pool) if check is not None and check.active else None
    try:
        stats: Dict[str, Any] = dict(_copy_records(writer, pieces_iter, start_v, end_v, src, out, blocks))
        if blocks is not None:
            blocks.finish()
    except BaseException:
        if blocks is not None:
            blocks.abort()
        raise
    if counter is not None:
        counts = counter.close()
        stats.update(records=counts.records, primary=counts.primary)
        stats["first"], stats["last"] = counter.first, counter.last
    return stats


def _copy_records(writer: BgzfWriter, pieces_iter: Iterator[bytes], start_v: int, end_v: int,
                  src: Source, out: Optional[BinaryIO], check: Optional[BlockCheck]) -> Dict[str, int]:
    sc, su = split_virtual(start_v)
    ec, eu = split_virtual(end_v)
    stats = {"blocks_copied": 0, "blocks_reencoded": 0}
    if start_v >= end_v:
        return stats
    out_fd = _fileno(out)
    if out_fd >= 0 and out is not None and not src.loc.is_s3:
        return _copy_records_local(writer, out, out_fd, start_v, end_v, src, check)
    pieces = _Pieces(pieces_iter, sc)

    def edge_data(data: bytes) -> None:
        _write_edge(writer, data, stats, check)

    if sc == ec:
        data = inflate_at(_take_block(pieces, src), 0, src, sc)
        edge_data(data[su:eu])
        return stats
    if su:
        data = inflate_at(_take_block(pieces, src), 0, src, sc)
        edge_data(data[su:])
    stats["blocks_copied"] = _copy_raw(pieces, ec, writer, src, check)
    if eu:
        data = inflate_at(_take_block(pieces, src), 0, src, ec)
        if eu > len(data):
            raise src.error("virtual offset beyond its block's data", offset=end_v)
        edge_data(data[:eu])
    return stats


def run_bytes(start_v: int, end_v: int, end_block_size: int) -> "tuple[int, int]":
    """Compressed byte range ``[start, end)`` a run needs."""
    sc = start_v >> 16
    ec, eu = end_v >> 16, end_v & 0xFFFF
    return sc, (ec + end_block_size if eu else ec)
