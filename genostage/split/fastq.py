"""Streaming FASTQ splitting: one or two (paired) inputs into contiguous chunks.

Inputs are local paths or ``s3://`` URIs, plain, gzip (multi-member too) or
BGZF, detected from the bytes and read front to back (S3 through large
ranged GETs); nothing is held whole in memory. The ``genostage.split._fastq``
kernel finds and validates record boundaries in the decompressed buffers.

Chunks are runs of records in input order, cut by one rule:

* ``records=N`` / ``bases=N`` / ``bytes=N`` - a chunk closes at the first
  record (pair) at which it holds at least N records, bases or uncompressed
  bytes (for paired input, bases and bytes are counted on R1; R2 follows R1
  record for record);
* ``parts=N`` - N balanced chunks: exact record counts (to one record) for
  small inputs, counted first (plain/BGZF: all inputs together at most N MiB;
  gzip: at most 16 MiB or under 1 MiB per part); else cut at the first record
  start after ``i/N`` of the file (plain: byte offsets; BGZF: the start of the
  first block at or after ``i/N`` of the compressed size - the boundaries
  ``genostage.split.fastq_plan.make_plan`` finds with ranged reads), or for
  gzip input at ``i/N`` of the compressed offsets (an estimate; 1-2% on
  Illumina data). Fewer records than parts give empty trailing chunks.

Interleaved input (``interleaved=True``) is cut between pairs only, and each
pair's names are checked. Output: BGZF input to BGZF output copies whole blocks
(only boundary blocks are recompressed); a local plain file to plain output is
scanned through a memory map and copied by the kernel (``copy_file_range``).
Chunk files are written under temporary names and renamed when complete; on
an error every chunk of the run is removed.

Python API::

    from genostage.split import fastq
    summary = fastq.split_fastq(["r1.fq.gz", "r2.fq.gz"], "out/", parts=8)
    for chunk in fastq.iter_chunks(["reads.fq"], records=100_000):
        chunk.index, chunk.records, chunk.data[0]   # uncompressed bytes of the chunk
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Tuple

from . import _fastq
from ..codec import compress as C
from ..errors import FormatError, Interrupted, UsageError
from ..location import Location, parse
from ..progress import Progress
from ..store import Stores
from ..fsutil import AtomicFile, os_error, temp_name, write_atomic
from ..units import format_size
from ..background import background

log = logging.getLogger("genostage.split.fastq")

HUGE = 1 << 62
MAX_RECORD = 32 << 20  # a "record" longer than this is garbage (or an absurd read)
EXACT_LIMIT = 16 << 20  # gzip inputs up to this size are counted first for --parts
COPY_BATCH = 64 << 20  # local plain -> plain: bytes per copy_file_range batch
PLAN_READ = 1 << 20  # per part: plain/BGZF inputs up to parts x this are counted exactly  # compressed inputs up to this size are counted first for --parts
MESSAGES = {
    _fastq.E_HEADER: "expected '@' at the start of a record header",
    _fastq.E_PLUS: "expected '+' line after the sequence",
    _fastq.E_LENGTH: "quality and sequence lengths differ",
    _fastq.E_TRUNCATED: "the file ends inside a record",
}


@dataclass
class ChunkStats:
    """What one chunk holds (``bytes``: uncompressed FASTQ bytes of R1, the first input)."""

    index: int
    records: int = 0
    bases: int = 0
    bytes: int = 0
    files: List[str] = field(default_factory=list)
    sizes: List[int] = field(default_factory=list)


@dataclass
class Summary:
    inputs: List[str]
    formats: List[str]
    compress: str
    records: int = 0
    bases: int = 0
    chunks: List[ChunkStats] = field(default_factory=list)
    seconds: float = 0.0
    paired: bool = False
    interleaved: bool = False

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [f"{len(self.chunks)} chunks, {self.records} {'pairs' if self.paired or self.interleaved else 'records'}, "
                 f"{self.bases} bases in {self.seconds:.1f} s"]
        for c in self.chunks:
            lines.append(f"  part {c.index:4d}: {c.records:12d} records {c.bases:15d} bases  {' '.join(os.path.basename(f) for f in c.files)}")
        return "\n".join(lines)


@dataclass
class Chunk:
    """A chunk held in memory (from :func:`iter_chunks`): ``data[m]`` is mate m's FASTQ bytes."""

    index: int
    records: int
    bases: int
    data: List[bytes]


# -- one input stream ------------------------------------------------------
class Input:
    """Scanning state of one input: the buffer of not-yet-assigned bytes and
    the pieces still to be emitted (kept for BGZF raw block copies)."""

    def __init__(self, uri: str, fmt: str, pieces: Iterator[C.Piece], size: int) -> None:
        self.uri = uri
        self.fmt = fmt
        self.size = size
        self._pieces = pieces
        self.buf = b""
        self.buf_start = 0  # global uncompressed offset of buf[0]
        self.pos = 0  # scan position in buf
        self.records = 0  # records scanned (global)
        self.bases = 0
        self.eof = False
        self.cpos = 0  # compressed bytes consumed
        self.ulen = 0  # uncompressed bytes received
        # pieces not yet fully emitted: [ustart, data, blocks(list of (raw, ulen)) or None, cstart]
        self.queue: List[Tuple[int, bytes, Optional[List[Tuple[bytes, int]]], int]] = []
        self.emitted = 0
        self.on_piece: Optional[Callable[["Input", C.Piece, int], None]] = None
        self.allow_empty = False  # a plan chunk may be empty
        self.fh: Optional[BinaryIO] = None
        self._rest: Optional[Tuple[bytes, int, int]] = None
        self.copy_fd: Optional[int] = None  # a local plain file: chunk bytes copied by offset
        self.mapped = False  # pieces are views of a memory map (scan-only input)

    def close(self) -> None:
        self.buf = b""
        self.queue.clear()
        self._rest = None
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()
        if self.fh is not None:
            self.fh.close()
        if self.copy_fd is not None:
            os.close(self.copy_fd)
            self.copy_fd = None

    @property
    def gpos(self) -> int:
        return self.buf_start + self.pos

    def line(self) -> int:
        return self.records * 4

    def fill(self) -> bool:
        """Make more bytes scannable; False (and ``eof``) when there are none.

        A piece is scanned in place; only the record cut across the previous
        piece's end is joined with the start of the new piece (``_rest``
        then holds the rest of the piece, switched to on the next call)."""
        if self._rest is not None:
            self._switch()
            return True
        if self.eof:
            return False
        try:
            piece = next(self._pieces, None)
        except FormatError as exc:
            if exc.line is None:
                lines = self.records * 4 + _fastq.count_lines(self.buf, self.pos, len(self.buf))
                raise FormatError(exc.message, path=self.uri, fmt="FASTQ", line=lines) from None
            raise
        if piece is None:
            self.eof = True
            if self.ulen == 0 and not self.allow_empty:
                raise FormatError("the file is empty (no FASTQ records)", path=self.uri, fmt="FASTQ", line=0)
            if len(self.buf) and bytes(self.buf[-1:]) != b"\n":
                piece = C.Piece(b"\n", self.cpos, self.cpos)  # a last line without its newline
            else:
                return False
        if not piece.data:
            return True
        rest = len(self.buf) - self.pos
        if rest > MAX_RECORD:
            raise FormatError(f"no complete FASTQ record in {format_size(MAX_RECORD)} (binary data, or not FASTQ)",
                              path=self.uri, fmt="FASTQ", line=self.records * 4)
        ustart = self.ulen
        if self.on_piece is not None:
            self.on_piece(self, piece, ustart)
        self.queue.append((ustart, piece.data, piece.blocks, piece.cstart))
        self.ulen += len(piece.data)
        self.cpos = max(self.cpos, piece.cend)
        data = piece.data
        self.buf_start += self.pos
        if not rest:
            self.buf = data
        else:
            cut = _after_lines(data, 4)
            carry = bytes(self.buf[self.pos:])
            if cut < 0 or cut == len(data):
                self.buf = carry + bytes(data)
            else:
                self.buf = carry + bytes(data[:cut])
                self._rest = (data, cut, len(carry))
        self.pos = 0
        return True

    def _switch(self) -> None:
        assert self._rest is not None
        data, cut, carry_len = self._rest
        self._rest = None
        if self.pos >= carry_len:  # the joined record is done: scan the piece in place
            self.buf_start += carry_len
            self.pos -= carry_len
            self.buf = data
        else:
            self.buf = bytes(self.buf[self.pos:]) + bytes(data[cut:])
            self.buf_start += self.pos
            self.pos = 0

    def error(self, code: int, line: int, extra: str = "") -> FormatError:
        return FormatError(MESSAGES.get(code, "malformed record") + extra, path=self.uri, fmt="FASTQ",
                           line=self.records * 4 + line)

    def emit(self, upto: int, sink: "Sink", mate: int, close: bool) -> None:
        """Hand bytes [emitted, upto) to the sink; whole BGZF blocks go as raw blocks.

        Unless ``close``, stops at the last block boundary so blocks are not cut.
        A local plain file going to plain output is copied by byte range in
        batches (``COPY_BATCH``) by the kernel; its pieces are only scanned."""
        if self.copy_fd is not None and sink.can_copy:
            limit = min(upto, self.size)
            if limit > self.emitted and (close or limit - self.emitted >= COPY_BATCH):
                sink.copy(mate, self.copy_fd, self.emitted, limit - self.emitted)
                self.emitted = limit
            while self.queue and self.queue[0][0] + len(self.queue[0][1]) <= limit:
                self.queue.pop(0)
            if self.emitted < self.size or upto <= self.size:
                return
            # what is left is the newline added after a last line without one
        while self.queue and self.emitted < upto:
            ustart, data, blocks, _ = self.queue[0]
            uend = ustart + len(data)
            if blocks is not None and sink.raw_blocks:
                b0 = ustart
                for raw, ulen in blocks:
                    b1 = b0 + ulen
                    if b1 <= self.emitted:
                        b0 = b1
                        continue
                    if b0 >= upto:
                        break
                    if self.emitted == b0 and b1 <= upto:
                        sink.raw(mate, raw, ulen)
                        self.emitted = b1
                    elif b1 <= upto or close:
                        end = min(b1, upto)
                        sink.write(mate, memoryview(data)[self.emitted - ustart:end - ustart])
                        self.emitted = end
                    else:
                        break
                    b0 = b1
                if self.emitted < upto and not close and self.emitted < uend:
                    return
            else:
                end = min(uend, upto)
                sink.write(mate, memoryview(data)[self.emitted - ustart:end - ustart])
                self.emitted = end
            if self.emitted >= uend:
                self.queue.pop(0)
            else:
                return


# -- sinks: where chunk bytes go -------------------------------------------
class Sink:
    raw_blocks = False
    can_copy = False  # takes byte ranges of a local file (copy_file_range)

    def copy(self, mate: int, fd: int, offset: int, length: int) -> None: ...

    def begin(self, index: int) -> None: ...
    def write(self, mate: int, data: memoryview) -> None: ...
    def raw(self, mate: int, raw: bytes, ulen: int) -> None: ...
    def end(self, stats: ChunkStats) -> None: ...
    def discard(self) -> None: ...
    def abort(self) -> None: ...
    def finish(self) -> None:
        """Everything ended is complete (chunks may complete after ``end``)."""


class _OpenChunk:
    """One chunk's files while they are written: (final name, temp name, file, writer) per mate,
    the next byte offset of each, and the kernel copies still running into them."""

    def __init__(self, files: List[Tuple[str, str, BinaryIO, C.Writer]]) -> None:
        self.files = files
        self.pos = [0] * len(files)
        self.copies: List[Any] = []
        self.stats: Optional[ChunkStats] = None

    def wait(self, check: bool = True) -> None:
        copies, self.copies = self.copies, []
        for fut in copies:
            if check:
                fut.result()
            else:
                fut.exception()


def _output_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """OSErrors of writing chunks as genostage errors (ENOSPC: InsufficientSpace, exit 7)."""
    def wrapped(self: "FileSink", *args: Any) -> Any:
        if self.checkpoint is not None:
            self.checkpoint()
        try:
            return method(self, *args)
        except OSError as exc:
            raise os_error(exc, self.out_dir) from None
    wrapped.__name__ = method.__name__
    wrapped.__doc__ = method.__doc__
    return wrapped


class FileSink(Sink):
    """Writes chunk files under temporary names, renamed when the chunk is complete.

    Uncompressed output from a local plain file is copied by the kernel on ``threads``
    background threads, each copy at its own offset, so the copies of several chunks
    run at once and the scan goes on: a chunk is renamed into place once its copies
    are done (at the latest by :meth:`finish`)."""

    def __init__(self, out_dir: str, prefix: str, mates: int, compress: str, level: int, threads: int,
                 width: int = 4) -> None:
        self.out_dir = out_dir
        self.prefix = prefix
        self.mates = mates
        self.compress = compress
        self.level = level
        self.threads = max(1, threads)
        self.width = width
        self.raw_blocks = compress == "bgzf"
        self.can_copy = compress == "none"
        self.copier: Optional[ThreadPoolExecutor] = None
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="genostage-deflate") if compress != "none" else None
        self._open: Optional[_OpenChunk] = None
        self._ended: List[_OpenChunk] = []  # ended, waiting for their copies
        self.done: List[str] = []
        # every path this run may have created, registered *before* it is created: whatever
        # stops the run (an error, or a signal between any two steps) removes exactly these
        self.paths: List[str] = []
        self.checkpoint: Optional[Callable[[], None]] = None  # called before each step (Stop.check)

    def name(self, index: int, mate: int) -> str:
        tag = f".R{mate + 1}" if self.mates == 2 else ""
        return os.path.join(self.out_dir, f"{self.prefix}.part-{index:0{self.width}d}{tag}.fastq{C.suffix(self.compress)}")

    def track(self, path: str) -> str:
        """Register the temporary ``path`` before it is created (removed by :meth:`abort` and
        :meth:`remove_files`); final names go to ``done`` just before their rename."""
        self.paths.append(path)
        return path

    @_output_errors
    def begin(self, index: int) -> None:
        files: List[Tuple[str, str, BinaryIO, C.Writer]] = []
        chunk = _OpenChunk(files)
        self._open = chunk
        for mate in range(self.mates):
            final = self.name(index, mate)  # registered in `done` just before the rename
            tmp = self.track(temp_name(final))
            fh: BinaryIO = self._create(tmp)
            files.append((final, tmp, fh, C.make_writer(fh, self.compress, self.level, self.pool, self.threads)))
        chunk.pos = [0] * len(files)

    def _create(self, tmp: str) -> BinaryIO:
        try:
            return open(tmp, "xb")
        except OSError as exc:
            raise os_error(exc, tmp) from None

    @_output_errors
    def write(self, mate: int, data: memoryview) -> None:
        chunk = self._open
        assert chunk is not None
        if self.can_copy:  # uncompressed: at its offset, beside the copies
            fd = chunk.files[mate][2].fileno()
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, chunk.pos[mate])
                chunk.pos[mate] += n
                view = view[n:]
            chunk.files[mate][3].uncompressed += len(data)
            return
        chunk.files[mate][3].write(data)

    @_output_errors
    def raw(self, mate: int, raw: bytes, ulen: int) -> None:
        assert self._open is not None
        self._open.files[mate][3].write_raw_block(raw, ulen)

    @_output_errors
    def copy(self, mate: int, fd: int, offset: int, length: int) -> None:
        """Copy on a background thread, overlapping the scan of what follows."""
        chunk = self._open
        assert chunk is not None
        out = chunk.files[mate][2]
        chunk.files[mate][3].uncompressed += length
        if self.copier is None:
            self.copier = ThreadPoolExecutor(self.threads, thread_name_prefix="genostage-copy")
        chunk.copies.append(self.copier.submit(_copy_range, fd, out.fileno(), offset, length, chunk.pos[mate]))
        chunk.pos[mate] += length

    @_output_errors
    def end(self, stats: ChunkStats) -> None:
        chunk = self._open
        assert chunk is not None
        chunk.stats = stats
        self._ended.append(chunk)
        self._open = None
        while self._ended and all(f.done() for f in self._ended[0].copies):
            self._complete(self._ended[0])

    def _complete(self, chunk: _OpenChunk) -> None:
        """Close the first ended chunk's files and rename them into place (it stays in ``_ended``,
        for :meth:`abort` to close, until its files are closed)."""
        chunk.wait()
        for final, tmp, fh, writer in chunk.files:
            writer.close()
            fh.close()
        self._ended.remove(chunk)
        assert chunk.stats is not None
        for final, tmp, fh, writer in chunk.files:
            self.done.append(final)
            os.replace(tmp, final)
            chunk.stats.files.append(final)
            chunk.stats.sizes.append(os.path.getsize(final))

    @_output_errors
    def finish(self) -> None:
        while self._ended:
            self._complete(self._ended[0])

    def discard(self) -> None:
        """Drop the chunk being written (nothing was written to it)."""
        if self._open is not None:
            self._drop(self._open)
            self._open = None

    def _drop(self, chunk: _OpenChunk) -> None:
        chunk.wait(check=False)
        for final, tmp, fh, writer in chunk.files:
            if isinstance(writer, C.GzipWriter):
                writer.abort()
            try:
                fh.close()  # may flush into a full disk: the file goes anyway
            except OSError:
                pass
            _unlink(tmp)

    def abort(self) -> None:
        """Remove the chunk being written and every file this run created."""
        try:
            for chunk in self._ended + ([self._open] if self._open is not None else []):
                self._drop(chunk)
        finally:
            self._ended, self._open = [], None
            self.remove_files()
            self.shutdown()

    def remove_files(self) -> None:
        """Remove every file this run created (temporary or complete); safe at any moment, from a
        signal handler too: what is written afterwards goes to unlinked files."""
        for path in self.paths + self.done:
            _unlink(path)
        self.paths, self.done = [], []

    def shutdown(self) -> None:
        if self.copier is not None:
            self.copier.shutdown()
            self.copier = None
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


class _MemorySink(Sink):
    def __init__(self, mates: int, deliver: Optional[Callable[[Chunk], None]] = None) -> None:
        self.mates = mates
        if deliver is not None:
            self.deliver = deliver  # type: ignore[method-assign,assignment]
        self.parts: List[List[bytes]] = []
        self.chunks: List[Chunk] = []

    def begin(self, index: int) -> None:
        self.parts = [[] for _ in range(self.mates)]

    def write(self, mate: int, data: memoryview) -> None:
        self.parts[mate].append(bytes(data))

    def end(self, stats: ChunkStats) -> None:
        stats.files = []
        self.deliver(Chunk(stats.index, stats.records, stats.bases, [b"".join(p) for p in self.parts]))
        self.parts = []

    def deliver(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)


_COPY_FILE_RANGE = hasattr(os, "copy_file_range")
# errors that say copy_file_range cannot do this copy (pread/pwrite can)
_NO_COPY_FILE_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM}


def _copy_range(src: int, dst: int, offset: int, length: int, dst_offset: int) -> None:
    """Copy ``length`` bytes of ``src`` from ``offset`` to ``dst`` at ``dst_offset`` (in the kernel
    when it can); offsets are explicit, so copies into one file may run in any order."""
    global _COPY_FILE_RANGE
    while length > 0 and _COPY_FILE_RANGE:
        try:
            n = os.copy_file_range(src, dst, min(length, 1 << 30), offset, dst_offset)
        except OSError as exc:
            if exc.errno not in _NO_COPY_FILE_RANGE:
                raise  # ENOSPC, EIO: the copy failed, not the system call
            _COPY_FILE_RANGE = False  # e.g. EXDEV on old kernels: fall back to pread/pwrite
            break
        if n == 0:
            raise OSError(f"short copy at offset {offset}")
        offset += n
        dst_offset += n
        length -= n
    while length > 0:
        data = os.pread(src, min(length, 4 << 20), offset)
        if not data:
            raise OSError(f"short read at offset {offset}")
        view = memoryview(data)
        while view:
            k = os.pwrite(dst, view, dst_offset)
            view = view[k:]
            dst_offset += k
        offset += len(data)
        length -= len(data)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# -- opening inputs ----------------------------------------------------------
def _open_input(uri: str, stores: Stores, background: bool = True, scan_only: bool = False) -> Input:
    """Open one input; with ``scan_only`` (its bytes are copied, never written from memory)
    a local plain file is memory-mapped and scanned in place."""
    loc = parse(uri)
    if loc.is_prefix and loc.is_s3:
        raise UsageError(f"{uri} is a prefix, not a FASTQ object")
    store = stores.for_location(loc)
    info = store.stat(loc, checksums=False)
    fh: BinaryIO
    if loc.is_s3:
        fh = store.open_read(loc, etag=info.etag)  # type: ignore[assignment]
    else:
        try:
            fh = open(loc.path, "rb", buffering=0)
        except OSError as exc:
            raise os_error(exc, str(loc)) from None
    try:
        fmt, pieces = C.open_stream(fh, uri, background=background and not scan_only)
    except BaseException:
        fh.close()
        raise
    inp = Input(uri, fmt, pieces, info.size)
    inp.fh = fh
    if fmt == "plain" and not loc.is_s3:
        inp.copy_fd = os.open(loc.path, os.O_RDONLY)
        if scan_only and info.size:
            inp._pieces = _mmap_pieces(inp.copy_fd, info.size)
            inp.mapped = True
    return inp


def _mmap_pieces(fd: int, size: int) -> Iterator[C.Piece]:
    """Pieces of a local plain file as views of a read-only memory map (no copies)."""
    import mmap

    m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    if hasattr(m, "madvise"):
        m.madvise(mmap.MADV_SEQUENTIAL)
    view = memoryview(m)
    try:
        step = max(mmap.PAGESIZE, C.READ_SIZE // mmap.PAGESIZE * mmap.PAGESIZE)
        for off in range(0, size, step):
            end = min(size, off + step)
            yield C.Piece(view[off:end], off, end)  # type: ignore[arg-type]
            if off >= 2 * step and hasattr(m, "madvise"):
                # two pieces back is scanned: drop it from this process's RSS (not from the page cache)
                m.madvise(mmap.MADV_DONTNEED, off - 2 * step, step)
    finally:
        try:
            view.release()
            m.close()
        except BufferError:  # a view is still referenced: the map goes with it
            pass


def count_records(uri: str, stores: Optional[Stores] = None, interleaved: bool = False) -> int:
    """Validate and count the records (pairs with ``interleaved``) of one input."""
    stores = stores or Stores()
    inp = _open_input(uri, stores)
    step = 2 if interleaved else 1
    try:
        while True:
            pos, n, bases, err, eline, _ = _fastq.scan(inp.buf, inp.pos, len(inp.buf), HUGE, HUGE, HUGE, step, inp.eof)
            if err:
                raise _scan_error(inp, err, eline, step)
            inp.records += n
            inp.pos = pos
            inp.queue.clear()
            if inp.eof:
                return inp.records // step
            inp.fill()
    finally:
        inp.close()


def _scan_error(inp: Input, err: int, eline: int, step: int) -> FormatError:
    if err == _fastq.E_TRUNCATED and step == 2 and eline % 4 == 0 and _fastq.count_lines(inp.buf, inp.pos, len(inp.buf)) == 4:
        return FormatError("interleaved input has an odd number of records (the last one has no mate)",
                           path=inp.uri, fmt="FASTQ", line=inp.records * 4 + eline - 4)
    return inp.error(err, eline)


# -- the engine ------------------------------------------------------------------
class _Cutter:
    """Decides where chunks end: limits for the scan of the current chunk."""

    def __init__(self, records: Optional[int], bases: Optional[int], nbytes: Optional[int],
                 per_chunk: Optional[List[int]] = None) -> None:
        self.records = records
        self.bases = bases
        self.nbytes = nbytes
        self.per_chunk = per_chunk  # exact records per chunk (parts mode, counted)
        self.targets: Dict[int, int] = {}  # chunk index -> global uncompressed offset where it may end
        self.last_index: Optional[int] = None  # the chunk that takes everything left

    def limits(self, index: int, chunk: ChunkStats, inp: Input) -> Tuple[int, int, int]:
        if self.last_index is not None and index >= self.last_index:
            return HUGE, HUGE, HUGE
        if self.per_chunk is not None:
            if index >= len(self.per_chunk) - 1:
                return HUGE, HUGE, HUGE
            return self.per_chunk[index] - chunk.records, HUGE, HUGE
        if self.records is not None:
            return self.records - chunk.records, HUGE, HUGE
        if self.bases is not None:
            return HUGE, self.bases - chunk.bases, HUGE
        if self.nbytes is not None:
            return HUGE, HUGE, self.nbytes - chunk.bytes
        target = self.targets.get(index)
        if target is None:
            return HUGE, HUGE, HUGE  # its data is not in the buffer yet
        return HUGE, HUGE, max(1, target - inp.gpos)


def balanced(total: int, parts: int) -> List[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _plan_targets(cutter: _Cutter, inp: Input, parts: int) -> None:
    """Byte targets for --parts on large inputs, resolved as pieces arrive."""
    size = inp.size
    cuts = [(i, i * size // parts) for i in range(1, parts)]  # chunk i-1 ends after cut i
    cutter.last_index = parts - 1
    pending = list(cuts)

    def on_piece(src: Input, piece: C.Piece, ustart: int) -> None:
        while pending:
            i, c = pending[0]
            if src.fmt == "plain":
                if c >= piece.cend:
                    return
                cutter.targets[i - 1] = c + 1
            elif src.fmt == "bgzf":
                if piece.blocks is None:
                    return
                b_c, b_u, found = piece.cstart, ustart, False
                for raw, ulen in piece.blocks:
                    if b_c >= c:
                        found = True
                        break
                    b_c += len(raw)
                    b_u += ulen
                if not found:
                    return
                cutter.targets[i - 1] = b_u + 1
            else:  # gzip: interpolate the compressed offset within the piece
                if c >= piece.cend:
                    return
                span = max(1, piece.cend - piece.cstart)
                cutter.targets[i - 1] = ustart + max(0, (c - piece.cstart)) * len(piece.data) // span
            pending.pop(0)

    inp.on_piece = on_piece


class Splitter:
    """The streaming splitter (see the module docstring); ``run(sink)`` returns the summary."""

    def __init__(self, inputs: List[str], *, parts: Optional[int] = None, records: Optional[int] = None,
                 bases: Optional[int] = None, nbytes: Optional[int] = None, interleaved: bool = False,
                 stores: Optional[Stores] = None, progress: bool = False) -> None:
        if not 1 <= len(inputs) <= 2:
            raise UsageError("give one FASTQ file, or two (R1 and R2) for paired-end reads")
        rules = [x for x in (parts, records, bases, nbytes) if x is not None]
        if len(rules) != 1:
            raise UsageError("give exactly one of --parts, --records, --bases, --bytes")
        if rules[0] < 1:
            raise UsageError("--parts/--records/--bases/--bytes must be at least 1")
        if interleaved and len(inputs) == 2:
            raise UsageError("--interleaved takes one interleaved file (R1 and R2 records alternating)")
        self.inputs = list(inputs)
        self.parts = parts
        self.records = records
        self.bases = bases
        self.nbytes = nbytes
        self.interleaved = interleaved
        self.stores = stores or Stores()
        self.progress = progress
        self.step = 2 if interleaved else 1
        self.formats: List[str] = []

    def _cutter(self, first: Input, total_size: int) -> _Cutter:
        if self.parts is None:
            return _Cutter(self.records * self.step if self.records else None, self.bases, self.nbytes)
        if first.fmt == "gzip":  # offsets are estimates: count small inputs exactly
            small = first.size <= EXACT_LIMIT or first.size // self.parts < (1 << 20)
        else:  # the rule genostage.split.fastq_plan follows, so plans and splits agree
            small = total_size <= self.parts * PLAN_READ
        if small:
            total = count_records(self.inputs[0], self.stores, self.interleaved)
            return _Cutter(None, None, None, per_chunk=[n * self.step for n in balanced(total, self.parts)])
        cutter = _Cutter(None, None, None)
        _plan_targets(cutter, first, self.parts)
        return cutter

    def run(self, sink: Sink) -> Summary:
        """Open the inputs and split them into ``sink``."""
        ins = []
        try:
            for u in self.inputs:
                ins.append(_open_input(u, self.stores, scan_only=sink.can_copy))
        except BaseException:
            for inp in ins:
                inp.close()
            raise
        return self.run_inputs(ins, sink)

    def run_inputs(self, ins: List["Input"], sink: Sink) -> Summary:
        """Split already opened inputs into ``sink`` (removing its output on failure)."""
        t0 = time.monotonic()
        try:
            return self._run(ins, sink, t0)
        except BaseException:
            sink.abort()
            raise
        finally:
            for inp in ins:
                inp.close()

    def _run(self, ins: List[Input], sink: Sink, t0: float) -> Summary:
        self.formats = [i.fmt for i in ins]
        r1 = ins[0]
        r2 = ins[1] if len(ins) == 2 else None
        cutter = self._cutter(r1, sum(i.size for i in ins))
        summary = Summary(self.inputs, self.formats, "", paired=r2 is not None, interleaved=self.interleaved)
        progress = Progress(sum(i.size for i in ins), "split fastq", enabled=self.progress)
        done = 0
        step = self.step
        index = 0
        chunk = ChunkStats(0)
        sink.begin(0)
        r1.fill()
        while True:
            max_r, max_b, max_n = cutter.limits(index, chunk, r1)
            pos0 = r1.pos
            pos, n, nb, err, eline, stopped = _fastq.scan(r1.buf, pos0, len(r1.buf), max_r, max_b, max_n, step, r1.eof)
            if err:
                raise _scan_error(r1, err, eline, step)
            if n:
                if step == 2:
                    mm, _, _ = _fastq.compare_pairs(r1.buf, pos0, n // 2)
                    if mm >= 0:
                        raise _pair_error(r1.uri, r1.uri, r1.buf, pos0, mm, r1.records // 2, interleaved=True)
                if r2 is not None:
                    self._follow(r2, r1, pos0, n)
                r1.records += n
                r1.bases += nb
                r1.pos = pos
                chunk.records += n
                chunk.bases += nb
                chunk.bytes += pos - pos0
                r1.emit(r1.gpos, sink, 0, False)
                if r2 is not None:
                    r2.emit(r2.gpos, sink, 1, False)
                now = sum(i.cpos for i in ins)
                progress.update(now - done)
                done = now
            if stopped:
                self._close(sink, chunk, ins, summary, step)
                index += 1
                chunk = ChunkStats(index)
                if self._at_end(r1):
                    if r2 is not None:
                        self._check_r2_done(r2, r1)
                    break
                sink.begin(index)
                continue
            if r1.eof:
                if r2 is not None:
                    self._check_r2_done(r2, r1)
                if chunk.records or index == 0:
                    self._close(sink, chunk, ins, summary, step)
                else:
                    sink.discard()  # begun after the last record (only blank lines followed)
                break
            r1.fill()
        progress.close()
        if self.parts is not None and len(summary.chunks) < self.parts:
            # fewer records than parts: the remaining chunks are empty, but exist
            for index in range(len(summary.chunks), self.parts):
                sink.begin(index)
                chunk = ChunkStats(index)
                self._close(sink, chunk, ins, summary, step)
        sink.finish()
        summary.records = sum(c.records for c in summary.chunks)
        summary.bases = sum(c.bases for c in summary.chunks)
        summary.seconds = time.monotonic() - t0
        return summary

    def _at_end(self, r1: Input) -> bool:
        """True when no record is left (reading more if the buffer is empty)."""
        while r1.pos >= len(r1.buf):
            if not r1.fill():
                return True
        return False

    def _close(self, sink: Sink, chunk: ChunkStats, ins: List[Input], summary: Summary, step: int) -> None:
        for mate, inp in enumerate(ins):
            inp.emit(inp.gpos, sink, mate, True)
        chunk.records //= step
        sink.end(chunk)
        summary.chunks.append(chunk)

    def _follow(self, r2: Input, r1: Input, p1: int, n: int) -> None:
        """Scan exactly ``n`` records of R2, comparing their names with R1's from ``p1``."""
        need = n
        while need:
            pos0 = r2.pos
            pos, k, kb, err, eline, _ = _fastq.scan(r2.buf, pos0, len(r2.buf), need, HUGE, HUGE, 1, r2.eof)
            if err:
                raise r2.error(err, eline)
            if k:
                mm, p1, _ = _fastq.compare_names(r1.buf, p1, r2.buf, pos0, k)
                if mm >= 0:
                    rec = r1.records + (n - need) + mm
                    raise FormatError(
                        f"R1 and R2 are out of sync at record {rec + 1}: R1 {r1.uri} has "
                        f"'{_fastq.record_name(r1.buf, p1).decode(errors='replace')}', R2 {r2.uri} has "
                        f"'{_fastq.record_name(r2.buf, _nth_record(r2.buf, pos0, mm)).decode(errors='replace')}'",
                        path=r2.uri, fmt="FASTQ", line=(r2.records + mm) * 4)
                r2.records += k
                r2.bases += kb
                r2.pos = pos
                need -= k
            if need:
                if r2.eof:
                    raise FormatError(f"R2 {r2.uri} has fewer records than R1 {r1.uri}: it ends at record "
                                      f"{r2.records} while R1 goes on", path=r2.uri, fmt="FASTQ", line=r2.records * 4)
                r2.fill()

    def _check_r2_done(self, r2: Input, r1: Input) -> None:
        while True:
            if bytes(r2.buf[r2.pos:]).strip():
                raise FormatError(f"R2 {r2.uri} has more records than R1 {r1.uri} ({r1.records} records)",
                                  path=r2.uri, fmt="FASTQ", line=r2.records * 4)
            if not r2.fill():
                return


def _after_lines(data: "bytes | memoryview", n: int) -> int:
    """The offset just after the ``n``-th newline of ``data`` (-1 if it has fewer)."""
    head = data if isinstance(data, bytes) else bytes(data[:1 << 16])
    pos = -1
    for _ in range(n):
        pos = head.find(b"\n", pos + 1)
        if pos < 0:
            return -1 if len(head) == len(data) else _after_lines(bytes(data), n)
    return pos + 1


def _nth_record(buf: "bytes | memoryview", pos: int, n: int) -> int:
    """The start of the record ``n`` records after ``pos`` (records already validated)."""
    return _fastq.scan(buf, pos, len(buf), n, HUGE, HUGE, 1, False)[0] if n else pos


def _pair_error(uri1: str, uri2: str, buf: bytes, pos0: int, mm: int, pairs_before: int, interleaved: bool) -> FormatError:
    p = _nth_record(buf, pos0, 2 * mm)
    q = _nth_record(buf, p, 1)
    return FormatError(f"records {2 * (pairs_before + mm) + 1} and {2 * (pairs_before + mm) + 2} are not a pair: "
                       f"'{_fastq.record_name(buf, p).decode(errors='replace')}' and "
                       f"'{_fastq.record_name(buf, q).decode(errors='replace')}'",
                       path=uri1, fmt="FASTQ", line=(2 * (pairs_before + mm) + 1) * 4)


# -- public API ------------------------------------------------------------
_EXT = re.compile(r"(\.(fastq|fq|txt))?(\.(gz|bgz|bgzf|gzip))?$", re.IGNORECASE)
_MATE = re.compile(r"([._-]R?1)(_\d+)?$")


def default_prefix(uri: str, paired: bool) -> str:
    name = Location("s3", "b", parse(uri).key).name if parse(uri).is_s3 else os.path.basename(parse(uri).path)
    stem = _EXT.sub("", name) or "reads"
    if paired:
        stem = _MATE.sub(lambda m: m.group(2) or "", stem) or stem
    return stem


MAX_PARTS = 100_000  # chunk files one split may make


class Stop:
    """What SIGTERM and SIGINT do to a split in progress (``genostage split fastq`` installs
    :meth:`signal` as the handler of both).

    The first signal removes every file the split created so far, at once, from the handler,
    then raises :class:`Interrupted` in the main thread, so the command unwinds and exits 128+N.
    Should the unwinding wait longer than ``grace`` seconds (a read stalled on a silent server:
    AWS Batch sends SIGKILL 30 s after SIGTERM), the process ends then, with the files gone all
    the same. A signal that comes once the split is complete (:attr:`done`) changes nothing: the
    command succeeded. Later signals are noted only, so the clean-up runs to its end."""

    def __init__(self, grace: float = 10.0) -> None:
        self.sink: Optional[FileSink] = None
        self.done = False
        self.signum: Optional[int] = None
        self.grace = grace
        self.watchdog: Optional[threading.Timer] = None
        self.pending = False

    def signal(self, signum: int, frame: Any = None) -> None:
        if self.signum is not None or self.done:
            self.signum = self.signum or signum
            return
        self.signum = signum
        sink = self.sink
        if sink is not None:
            sink.remove_files()
        self.watchdog = threading.Timer(self.grace, self._give_up, (signum, sink))
        self.watchdog.daemon = True
        self.watchdog.start()
        if _fragile(frame):
            self.pending = True  # raised at the sink's next step (check), not inside threading
            return
        raise Interrupted(signum)

    def check(self) -> None:
        """Raise the Interrupted a signal left pending (see :func:`_fragile`)."""
        if self.pending and self.signum is not None:
            self.pending = False
            raise Interrupted(self.signum)

    def settled(self) -> None:
        """The split has unwound (its clean-up is done): the watchdog is not needed any more."""
        if self.watchdog is not None:
            self.watchdog.cancel()

    def _give_up(self, signum: int, sink: "Optional[FileSink]") -> None:
        if sink is not None:
            sink.remove_files()
        sys.stderr.write(f"genostage: interrupted by signal {signum} (stopped waiting after {self.grace:.0f} s)\n")
        sys.stderr.flush()
        os._exit(128 + signum)


_FRAGILE_MODULES = ("threading.py", "queue.py")  # and the package concurrent/ (thread pools)


def _fragile(frame: Any, depth: int = 8) -> bool:
    """The signal came while the main thread ran the standard library's thread bookkeeping
    (starting a pool's thread, a queue's locks): an exception raised there leaves it broken
    (``KeyError`` in ``threading._limbo``, a traceback instead of exit 143)."""
    while frame is not None and depth > 0:
        folder, name = os.path.split(frame.f_code.co_filename)
        if name in _FRAGILE_MODULES or "concurrent" in folder.split(os.sep):
            return True
        frame, depth = frame.f_back, depth - 1
    return False


def check_rule(parts: Optional[int], records: Optional[int], bases: Optional[int], nbytes: Optional[int]) -> None:
    """One rule, its count a whole number of at least 1 (and at most MAX_PARTS parts)."""
    given = [(k, v) for k, v in (("--parts", parts), ("--records", records), ("--bases", bases),
                                 ("--bytes", nbytes)) if v is not None]
    if len(given) != 1:
        raise UsageError("give exactly one of --parts, --records, --bases, --bytes")
    option, value = given[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{option} must be a whole number of at least 1, got {value!r}")
    if parts is not None and parts > MAX_PARTS:
        raise UsageError(f"--parts {parts}: at most {MAX_PARTS} chunks")


def split_fastq(inputs: List[str], out_dir: str, *, parts: Optional[int] = None, records: Optional[int] = None,
                bases: Optional[int] = None, nbytes: Optional[int] = None, interleaved: bool = False,
                compress: str = "auto", level: int = C.DEFAULT_LEVEL, threads: int = 2,
                prefix: Optional[str] = None, stores: Optional[Stores] = None, progress: bool = False,
                summary_path: Optional[str] = None, stop: Optional[Stop] = None) -> Summary:
    """Split one or two FASTQ files into chunk files under ``out_dir``; see the module docstring.

    ``compress="auto"`` writes what the (first) input is: none, gzip or BGZF. An ``s3://``
    ``out_dir`` gets the chunks uploaded (verified) from a local temporary directory. The chunks
    appear all together or not at all: on any error, and on a signal (``stop``), every file of
    the run is removed (objects too).
    """
    if compress not in C.OUTPUTS + ("auto",):
        raise UsageError(f"unknown --compress {compress!r} (expected one of none, gzip, bgzf)")
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
        raise UsageError(f"--level must be a whole number between 0 and 9, got {level!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
        raise UsageError(f"--threads must be a whole number between 1 and 256, got {threads!r}")
    check_rule(parts, records, bases, nbytes)
    splitter = Splitter(inputs, parts=parts, records=records, bases=bases, nbytes=nbytes,
                        interleaved=interleaved, stores=stores, progress=progress)
    stop = stop or Stop()
    try:
        if parse(out_dir).is_s3:
            return _split_to_store(splitter, out_dir, compress, level, threads, prefix, summary_path, stop)
        summary = _split_to_dir(splitter, out_dir, compress, level, threads, prefix, summary_path, stop)
    except BaseException as exc:
        stop.settled()
        if stop.signum is not None and not isinstance(exc, Interrupted):
            # the signal came first (its handler removed the files under the split's feet,
            # or it was left pending): that is how the split ended
            raise Interrupted(stop.signum) from None
        raise
    stop.done = True
    return summary


def _split_to_dir(splitter: "Splitter", out_dir: str, compress: str, level: int, threads: int,
                  prefix: Optional[str], summary_path: Optional[str], stop: Stop) -> Summary:
    inputs = splitter.inputs
    _make_dir(out_dir)
    if compress == "auto":
        compress = _auto_compress(inputs[0], splitter.stores)
    width = max(4, len(str(splitter.parts - 1))) if splitter.parts else 4
    sink = FileSink(out_dir, prefix or default_prefix(inputs[0], len(inputs) == 2), len(inputs), compress,
                    level, threads, width)
    stop.sink = sink
    sink.checkpoint = stop.check
    try:
        summary = splitter.run(sink)
        summary.compress = compress
        if summary_path:
            _write_summary(sink, summary, summary_path)
        sink.shutdown()
        stop.check()  # a signal left pending during the last steps: the files are gone already
    except BaseException:
        sink.abort()  # shuts the pools down too
        raise
    return summary


def _write_summary(sink: FileSink, summary: Summary, path: str) -> None:
    out = AtomicFile(path)
    sink.track(out.tmp)
    with out as fh:
        fh.write((json.dumps(summary.to_json(), indent=1) + "\n").encode())
        sink.done.append(path)


def _make_dir(path: str) -> None:
    """Create the output directory if needed (it stays, empty, when the split fails)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, path) from None


def _split_to_store(splitter: "Splitter", out_uri: str, compress: str, level: int, threads: int,
                    prefix: Optional[str], summary_path: Optional[str], stop: Stop) -> Summary:
    """Split into a local temporary directory, then upload it whole (verified) under ``out_uri``;
    on any failure the objects of this run are deleted again."""
    import shutil
    import tempfile

    from ..cancel import stop_on_signals
    from ..transfer import Transfer, expand_lazily

    dest = parse(out_uri).as_prefix()
    stores = splitter.stores
    local = tempfile.mkdtemp(prefix="genostage-split-")
    try:
        summary = _split_to_dir(splitter, local, compress, level, threads, prefix, None, stop)
        stop.sink = None
        names = [os.path.basename(f) for c in summary.chunks for f in c.files]
        try:
            # from now on a signal stops the upload (parts cancelled, uploads aborted; all or none)
            with stop_on_signals() as cancel:
                items = expand_lazily(stores, parse(local + "/"), dest)
                Transfer(stores, stores.config, cancel=cancel).copy_all(items, f"upload {dest}", together=True)
            for c in summary.chunks:
                c.files = [str(dest.child(os.path.basename(f))) for f in c.files]
            if summary_path:
                write_atomic(summary_path, (json.dumps(summary.to_json(), indent=1) + "\n").encode())
        except BaseException:
            _delete_objects(stores, dest, names)
            raise
        stop.done = True
        return summary
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _delete_objects(stores: Stores, prefix: Location, names: List[str]) -> None:
    store = stores.for_location(prefix)
    for name in names:
        try:
            store.delete(prefix.child(name))
        except Exception as exc:  # the original error is what the user must see
            log.error("could not delete %s: %s", prefix.child(name), exc)


def _auto_compress(uri: str, stores: Stores) -> str:
    loc = parse(uri)
    head = stores.for_location(loc).read_range(loc, 0, 64)
    return {"plain": "none", "gzip": "gzip", "bgzf": "bgzf"}[C.detect(head)]


def iter_chunks(inputs: List[str], *, parts: Optional[int] = None, records: Optional[int] = None,
                bases: Optional[int] = None, nbytes: Optional[int] = None, interleaved: bool = False,
                stores: Optional[Stores] = None) -> Iterator[Chunk]:
    """Chunks in order, each held in memory (uncompressed) while it is yielded.

    The split runs on a background thread, at most one chunk ahead; meant for
    modest chunk sizes (``records=`` of a few hundred thousand).
    """
    def produce(emit: Callable[[Chunk], None]) -> None:
        splitter = Splitter(inputs, parts=parts, records=records, bases=bases, nbytes=nbytes,
                            interleaved=interleaved, stores=stores)
        splitter.run(_MemorySink(len(inputs), emit))

    yield from background(produce, depth=1, name="genostage-split")
