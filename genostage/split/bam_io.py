"""Reading BAM pieces through a store: the source object, its header, one window of blocks.

The header and the windows around cut points are read with ranged reads, so the
same code serves a local file and an ``s3://`` object. Hot loops are in
``genostage.codec._bgzf``.
"""
from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

from ..codec import blocks as K
from ..codec.bgzf import EOF_BLOCK, make_virtual
from ..errors import FormatError
from ..location import Location, parse
from ..store import ObjectInfo, Store, Stores

HEADER_WINDOW = 64 << 10
BAM_MAGIC = b"BAM\x01"


class Source:
    """One BAM object or file read through its store (stat once, then ranged reads)."""

    def __init__(self, uri: "str | Location", stores: Stores, info: Optional[ObjectInfo] = None) -> None:
        self.loc = parse(uri)
        self.store: Store = stores.for_location(self.loc)
        self.info = info or self.store.stat(self.loc, checksums=False)
        self.size = self.info.size
        self.path = str(self.loc)

    def read(self, start: int, length: int) -> bytes:
        length = max(0, min(length, self.size - start))
        if length == 0:
            return b""
        return self.store.read_range(self.loc, start, length, etag=self.info.etag)

    def iter(self, start: int, length: int, chunk: int = 4 << 20) -> Iterator[bytes]:
        if length <= 0:
            return iter(())
        return self.store.iter_range(self.loc, start, length, etag=self.info.etag, chunk=chunk)

    def error(self, message: str, offset: Optional[int] = None) -> FormatError:
        return FormatError(message, path=self.path, fmt="BAM", offset=offset)


@dataclass
class Window:
    """Whole blocks read from ``start``: their offsets and sizes, and the data inflated."""

    start: int
    blocks: List[Tuple[int, int, int, int]] = field(default_factory=list)  # coffset, size, data start, data len
    data: bytes = b""
    end: int = 0  # compressed offset just after the last whole block
    at_eof: bool = False  # the last block is the file's EOF block

    def voffset(self, u: int) -> Tuple[int, int]:
        """Virtual offset of position ``u`` of ``data`` and the size of its block (0 at the window's end)."""
        after = self.start  # the block after the last one holding data before ``u``
        for coffset, size, dstart, dlen in self.blocks:
            if dstart <= u < dstart + dlen:
                return make_virtual(coffset, u - dstart), size
            if dlen and dstart + dlen <= u:
                after = coffset + size
        return make_virtual(after, 0), 0


def inflate_at(buf: "bytes | memoryview", offset: int, src: Source, where: int) -> bytes:
    try:
        return K.inflate(buf, offset)
    except ValueError as exc:
        raise src.error(str(exc), offset=where) from None


def read_window(src: Source, start: int, length: int) -> Window:
    """Read ``length`` bytes at ``start`` (a block start) and inflate the whole blocks in them."""
    return window_from(src, start, src.read(start, length))


def window_from(src: Source, start: int, buf: "bytes | memoryview") -> Window:
    """Inflate the whole blocks of ``buf``, which holds the source's bytes from ``start`` (a block start)."""
    nxt, _count, status, offsets = K.walk_blocks(buf, 0, True)
    if status < 0:
        raise src.error("not a BGZF block (expected gzip magic 1f 8b 08 04 with a BC field)", offset=start + nxt)
    if start + len(buf) >= src.size and nxt != len(buf):
        raise src.error("truncated BGZF block", offset=start + nxt)
    win = Window(start, end=start + nxt)
    pieces = []
    pos = 0
    for off in offsets or ():
        size = K.block_size(buf, off)
        data = inflate_at(buf, off, src, start + off)
        win.blocks.append((start + off, size, pos, len(data)))
        pieces.append(data)
        pos += len(data)
    win.data = b"".join(pieces)
    win.at_eof = win.end == src.size
    return win


@dataclass
class BamHeader:
    """The BAM header: its bytes (magic to the last reference), references, and where records start."""

    data: bytes
    text: bytes
    names: List[str]
    lengths: "array[int]"
    first_record: int  # virtual offset of the first record
    byte_end: int  # compressed offset just after the last block holding header bytes

    @property
    def n_ref(self) -> int:
        return len(self.names)


def parse_header(data: bytes, src: Source) -> Optional[Tuple[int, bytes, List[str], "array[int]"]]:
    """``(length, text, names, lengths)`` of the header at the start of ``data``; None if ``data`` is too short."""
    if len(data) < 4:
        return None
    if data[:4] != BAM_MAGIC:
        raise src.error("not a BAM file (expected magic BAM\\1 after decompression)", offset=0)
    if len(data) < 12:
        return None
    (l_text,) = struct.unpack_from("<i", data, 4)
    if l_text < 0:
        raise src.error(f"corrupt BAM header (l_text {l_text})", offset=0)
    p = 8 + l_text
    if len(data) < p + 4:
        return None
    text = data[8:p].split(b"\0", 1)[0]
    (n_ref,) = struct.unpack_from("<i", data, p)
    if n_ref < 0:
        raise src.error(f"corrupt BAM header (n_ref {n_ref})", offset=0)
    p += 4
    names: List[str] = []
    lengths = array("q")
    for _ in range(n_ref):
        if len(data) < p + 4:
            return None
        (l_name,) = struct.unpack_from("<i", data, p)
        if l_name < 1:
            raise src.error(f"corrupt BAM header (reference {len(names) + 1} name length {l_name})", offset=0)
        if len(data) < p + 8 + l_name:
            return None
        names.append(data[p + 4:p + 4 + l_name - 1].decode("ascii", "replace"))
        (l_ref,) = struct.unpack_from("<i", data, p + 4 + l_name)
        lengths.append(l_ref)
        p += 8 + l_name
    return p, text, names, lengths


def read_header(src: Source) -> BamHeader:
    """Read and parse the header with one ranged read (more only for very large headers)."""
    length = HEADER_WINDOW
    while True:
        win = read_window(src, 0, length)
        if not win.blocks:
            if src.size == 0:
                raise src.error("empty file, not a BAM file", offset=0)
            if win.end == 0 and src.size <= length:
                raise src.error("truncated BGZF block", offset=0)
        parsed = parse_header(win.data, src) if win.blocks else None
        if parsed is not None:
            break
        if win.at_eof or length >= src.size:
            raise src.error("truncated BAM header", offset=win.end)
        length *= 4
    hlen, text, names, lengths = parsed
    first, _size = win.voffset(hlen)
    byte_end = 0
    for coffset, size, dstart, _dlen in win.blocks:
        if dstart < hlen:
            byte_end = coffset + size
    return BamHeader(win.data[:hlen], text, names, lengths, first, byte_end)


def header_from_bytes(raw: bytes, length: int, src: Source, first_record: int) -> BamHeader:
    """The header from its compressed byte range (as a plan records it)."""
    nxt, _c, status, offsets = K.walk_blocks(raw, 0, True)
    if status < 0 or nxt != len(raw):
        raise src.error("header bytes are not whole BGZF blocks", offset=nxt)
    data = b"".join(inflate_at(raw, off, src, off) for off in offsets or ())
    parsed = parse_header(data, src)
    if parsed is None or parsed[0] != length:
        raise src.error("header differs from the plan", offset=0)
    _hlen, text, names, lengths = parsed
    return BamHeader(data[:length], text, names, lengths, first_record, len(raw))


def check_eof(src: Source) -> int:
    """Compressed offset of the EOF block; FormatError naming the file when it is missing."""
    tail = src.read(src.size - len(EOF_BLOCK), len(EOF_BLOCK)) if src.size >= len(EOF_BLOCK) else b""
    if tail != EOF_BLOCK:
        raise src.error("no BGZF EOF block at the end (truncated file?)", offset=max(0, src.size - len(EOF_BLOCK)))
    return src.size - len(EOF_BLOCK)


def record_name(data: bytes, start: int) -> Optional[bytes]:
    """QNAME of the record at ``start`` of ``data``; None if it is not all in ``data``."""
    if start + 36 > len(data):
        return None
    l_name = data[start + 12]
    if start + 36 + l_name > len(data):
        return None
    return data[start + 36:start + 35 + l_name]
