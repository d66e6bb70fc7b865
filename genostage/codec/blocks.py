"""BGZF blocks on buffers: the public face of the compiled ``_bgzf`` kernel, for the BAM and
FASTQ code that walks blocks itself (:mod:`genostage.codec.bgzf` has the checked, one-block
forms: ``block_size`` raising ``FormatError``, ``inflate_block``).

- ``block_size(buf, offset=0)``: the size of the block at ``offset``; 0 when its header is not
  all there yet, -1 when it is not a BGZF header;
- ``walk_blocks(buf, start=0, offsets=False)``: ``(end, blocks, usize, starts)``: whole blocks
  from ``start``, their uncompressed size, and their offsets when asked;
- ``find_block(buf, start=0, at_end=False)``: the first offset at or after ``start`` where a
  block header that the next one confirms begins (-1: none);
- ``inflate(buf, offset=0)``: one block's data, its CRC32 and length checked (``ValueError``);
- ``walk_blocks_fd(fd, start, end)``: ``walk_blocks`` over a file range, read with ``pread``.
"""
from __future__ import annotations

from ._bgzf import block_size, find_block, inflate, walk_blocks, walk_blocks_fd

__all__ = ["block_size", "find_block", "inflate", "walk_blocks", "walk_blocks_fd"]
