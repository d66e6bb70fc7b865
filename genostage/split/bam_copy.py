"""Writing a run of BAM records by block copy: only the edge blocks are inflated and re-encoded.

A run goes from a start to an end virtual offset. The bytes from the start
block to the end block arrive as pieces of one ranged read; whole blocks in
between pass through unchanged (their framing is checked on the way).
"""
from __future__ import annotations

import errno
import io
import os
from typing import BinaryIO, Dict, Iterator, Optional

from ..codec import _bgzf as K
from ..codec.bgzf import BgzfWriter, split_virtual
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


def _copy_raw(pieces: _Pieces, until: int, writer: BgzfWriter, src: Source) -> int:
    """Copy whole blocks unchanged up to compressed offset ``until``; returns the number of blocks."""
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


def _copy_records_local(writer: BgzfWriter, out: BinaryIO, out_fd: int, start_v: int, end_v: int,
                        src: Source) -> Dict[str, int]:
    """The local-file path: edge blocks read and inflated, whole blocks' headers checked with small
    preads and the blocks copied in the kernel (``copy_file_range``, as ``cp`` does)."""
    sc, su = split_virtual(start_v)
    ec, eu = split_virtual(end_v)
    stats = {"blocks_copied": 0, "blocks_reencoded": 0}

    def edge(offset: int) -> bytes:
        block = src.read(offset, 65536)
        size = K.block_size(block, 0) if block else 0
        if size <= 0:
            raise src.error("not a BGZF block where a virtual offset points", offset=offset)
        return inflate_at(block, 0, src, offset)

    raw_start = sc
    if su or sc == ec:
        data = edge(sc)
        writer.write(data[su:eu] if sc == ec else data[su:])
        writer.flush()
        stats["blocks_reencoded"] += 1
        raw_start = sc + K.block_size(src.read(sc, 18), 0)
    if sc != ec and raw_start < ec:
        with open(src.loc.path, "rb") as fh:
            stop, count, status = K.walk_blocks_fd(fh.fileno(), raw_start, ec)
            if status == -2:
                raise src.error("read error", offset=stop)
            if status < 0:
                raise src.error("not a BGZF block (expected gzip magic 1f 8b 08 04 with a BC field)", offset=stop)
            if stop != ec:
                raise src.error("BGZF blocks do not end where expected (file changed?)", offset=stop)
            writer.write_raw_block(b"")  # flush and write out what is pending
            out.flush()
            _kernel_copy(fh.fileno(), out_fd, raw_start, ec - raw_start)
        if out.seekable():
            out.seek(0, os.SEEK_END)
        writer.compressed_bytes += ec - raw_start
        src.store.counters.add(requests=1, read=ec - raw_start)
        stats["blocks_copied"] = count
    if sc != ec and eu:
        data = edge(ec)
        if eu > len(data):
            raise src.error("virtual offset beyond its block's data", offset=end_v)
        writer.write(data[:eu])
        writer.flush()
        stats["blocks_reencoded"] += 1
    return stats


def copy_records(writer: BgzfWriter, pieces_iter: Iterator[bytes], start_v: int, end_v: int,
                 src: Source, out: Optional[BinaryIO] = None) -> Dict[str, int]:
    """Write the records between two virtual offsets; ``pieces_iter`` yields the bytes from the start block
    through the end block (the end block only when the end offset is inside it).

    When the source is a local file and ``out`` (the file ``writer`` writes to) has a
    file descriptor, whole blocks are copied in the kernel and ``pieces_iter`` is not used.
    """
    sc, su = split_virtual(start_v)
    ec, eu = split_virtual(end_v)
    stats = {"blocks_copied": 0, "blocks_reencoded": 0}
    if start_v >= end_v:
        return stats
    out_fd = _fileno(out)
    if out_fd >= 0 and out is not None and not src.loc.is_s3:
        return _copy_records_local(writer, out, out_fd, start_v, end_v, src)
    pieces = _Pieces(pieces_iter, sc)
    if sc == ec:
        data = inflate_at(_take_block(pieces, src), 0, src, sc)
        writer.write(data[su:eu])
        writer.flush()
        stats["blocks_reencoded"] = 1
        return stats
    if su:
        data = inflate_at(_take_block(pieces, src), 0, src, sc)
        writer.write(data[su:])
        writer.flush()
        stats["blocks_reencoded"] += 1
    stats["blocks_copied"] = _copy_raw(pieces, ec, writer, src)
    if eu:
        data = inflate_at(_take_block(pieces, src), 0, src, ec)
        if eu > len(data):
            raise src.error("virtual offset beyond its block's data", offset=end_v)
        writer.write(data[:eu])
        writer.flush()
        stats["blocks_reencoded"] += 1
    return stats


def run_bytes(start_v: int, end_v: int, end_block_size: int) -> "tuple[int, int]":
    """Compressed byte range ``[start, end)`` a run needs."""
    sc = start_v >> 16
    ec, eu = end_v >> 16, end_v & 0xFFFF
    return sc, (ec + end_block_size if eu else ec)
