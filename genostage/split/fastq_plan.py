"""FASTQ chunk plans made with a few ranged reads, and chunks fetched by byte range.

``make_plan(uris, parts, stores)`` plans ``parts`` chunks of one FASTQ file or
of a pair (R1, R2), plain or BGZF, local or on S3, without downloading it:

* small inputs (all sources together at most ``parts`` x 1 MiB) are read
  whole and cut at exact record counts (balanced to one record);
* otherwise boundary i is the first record start after byte ``i/N`` of the
  file (plain) or after the start of the first BGZF block at or after
  ``i/N`` of the compressed size (BGZF): a 64 KiB ranged read (more for very
  long records) is enough to skip to a line start and prove a record start
  (a line starting with '@', a '+' line two lines later, a quality line of
  the sequence's length). These are the boundaries ``genostage split fastq
  --parts N`` uses on the same input, so plans and splits agree.
* paired plans cut R2 at the same record as R1: the R1 boundary read's name
  is looked up in R2 around the same relative position (expanding windows);
  each chunk job then checks that R1 and R2 names agree record by record and
  that both sides hold the same number of records.

The bytes read to make a plan are at most ``parts`` x 1 MiB.

Chunk entries (``plan.chunks[i]``, kind ``"fastq"``)::

    {"index": i,
     "records": n or null,   # records (pairs) in the chunk, when the plan counted them
     "ranges": [{"start": [c, u], "end": [c, u]}, ...]}   # one per source, R1 then R2

``[c, u]`` is a position in a source: for plain FASTQ ``c`` is the byte
offset and ``u`` is 0; for BGZF ``c`` is the offset of a block in the
compressed file and ``u`` the offset inside that block's uncompressed data
(the BGZF virtual offset ``c << 16 | u``, spelt out). A chunk covers
``[start, end)``; the last chunk ends at ``[size, 0]``. ``plan.header`` is
``{"formats": ["plain"|"bgzf", ...], "paired": bool, "exact": bool}``;
``plan.sources[k]`` also records each source's ``format``.

``write_chunk(plan, index, out, stores, out2=None)`` refuses a plan whose
sources changed (size/ETag/version), reads only the chunk's byte range (for
BGZF, whole blocks; interior blocks are copied as they are and only the two
boundary blocks are recompressed), validates every record, writes R1's chunk
to ``out`` and R2's to ``out2`` (required for paired plans), and returns
``{"records", "bases", "bytes", "sources"}``. Plain sources give plain FASTQ,
BGZF sources give BGZF.
"""
from __future__ import annotations

import logging
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Tuple

from . import _fastq
from ..codec import bgzf
from ..codec import compress as C
from ..errors import FormatError, UsageError
from ..location import Location, parse
from ..store import ObjectInfo, Store, Stores
from .fastq import Input, MESSAGES, Sink, Splitter, balanced
from .plan import Plan, check_unchanged, source_entry

log = logging.getLogger("genostage.split")

READ_BUDGET = 1 << 20  # per part
WINDOW = 64 << 10
HUGE = 1 << 62


class _Source:
    """Ranged access to one plain or BGZF source; counts what it reads."""

    def __init__(self, info: ObjectInfo, store: Store, fmt: str) -> None:
        self.info = info
        self.loc: Location = info.location
        self.store = store
        self.fmt = fmt
        self.size = info.size
        self.bytes_read = 0

    def read(self, start: int, length: int) -> bytes:
        length = max(0, min(length, self.size - start))
        if length == 0:
            return b""
        data = self.store.read_range(self.loc, start, length, etag=self.info.etag)
        self.bytes_read += len(data)
        return data

    def window(self, start: int, length: int) -> Tuple[bytes, List[Tuple[int, int, int]], bool]:
        """Uncompressed data from the first record-able position at/after ``start``.

        Returns ``(data, blocks, at_eof)``; ``blocks`` maps data offsets to
        positions: ``(data_offset, c, ulen)`` per BGZF block (one entry
        ``(0, start, len)`` for plain). ``at_eof`` when the data reaches the end.
        """
        start = max(0, min(start, self.size))
        raw = self.read(start, length)
        at_eof = start + len(raw) >= self.size
        if self.fmt == "plain":
            return raw, [(0, start, len(raw))], at_eof
        off = _first_block(raw, self.size - start, str(self.loc))
        if off < 0:
            return b"", [], at_eof
        datas, blocks, pos = [], [], off
        total = 0
        while pos + bgzf.HEADER_SIZE <= len(raw):
            size = bgzf.block_size(raw, pos, str(self.loc))
            if pos + size > len(raw):
                at_eof = False
                break
            data = bgzf.inflate_block(raw[pos:pos + size], str(self.loc), start + pos, "FASTQ")
            blocks.append((total, start + pos, len(data)))
            datas.append(data)
            total += len(data)
            pos += size
        else:
            at_eof = at_eof and pos >= len(raw)
        return b"".join(datas), blocks, at_eof

    def to_virtual(self, blocks: List[Tuple[int, int, int]], offset: int, at_eof: bool) -> List[int]:
        """The ``[c, u]`` position of data offset ``offset`` of a window."""
        if self.fmt == "plain":
            return [blocks[0][1] + offset, 0]
        for doff, c, ulen in blocks:
            if doff <= offset < doff + ulen:
                return [c, offset - doff]
        if blocks and offset == blocks[-1][0] + blocks[-1][2]:
            doff, c, ulen = blocks[-1]
            nxt = c + bgzf.block_size(self.read_header(c), 0, str(self.loc))
            return [nxt, 0] if nxt < self.size else [self.size, 0]
        raise ValueError("offset outside the window")

    def read_header(self, c: int) -> bytes:
        return self.read(c, bgzf.HEADER_SIZE)


def _first_block(raw: bytes, remaining: int, path: str) -> int:
    """Offset of the first real BGZF block header in ``raw`` (-1 if none)."""
    pos = 0
    while True:
        pos = raw.find(bgzf.MAGIC, pos)
        if pos < 0 or pos + bgzf.HEADER_SIZE > len(raw):
            return -1
        try:
            size = bgzf.block_size(raw, pos, path)
        except FormatError:
            pos += 1
            continue
        nxt = pos + size
        if nxt == remaining:
            return pos
        if nxt + 4 <= len(raw):
            if raw[nxt:nxt + 4] == bgzf.MAGIC:
                return pos
            pos += 1
            continue
        return pos  # cannot check the next header inside the window; trust the BC field


def _source(uri: str, stores: Stores) -> _Source:
    loc = parse(uri)
    store = stores.for_location(loc)
    info = store.stat(loc, checksums=False)
    head = store.read_range(loc, 0, 64, etag=info.etag) if info.size else b""
    fmt = C.detect(head)
    src = _Source(info, store, fmt)
    src.bytes_read = len(head)
    if info.size == 0:
        raise FormatError("the file is empty (no FASTQ records)", path=uri, fmt="FASTQ", line=0)
    if fmt == "gzip":
        raise UsageError(f"{uri} is gzip but not BGZF: it cannot be cut without reading it whole; "
                         "recompress it with `bgzip` or use `genostage split fastq`")
    if fmt == "bgzf":
        _check_eof(src, uri)
    return src


def _check_eof(src: _Source, uri: str) -> None:
    """A BGZF file ends with its empty EOF block; without it the file was cut short (at a block
    boundary, every block whole: the chunks would be valid FASTQ, and records would be lost)."""
    n = len(bgzf.EOF_BLOCK)
    tail = src.read(max(0, src.size - n), n)
    try:
        whole = len(tail) == n and bgzf.block_size(tail, 0, uri, "FASTQ") == n and bgzf.is_eof_block(tail)
    except FormatError:
        whole = False
    if not whole:
        raise FormatError("truncated BGZF stream: no EOF marker block at the end; the file was cut short",
                          path=uri, fmt="FASTQ")


def make_plan(uris: List[str], parts: int, stores: Optional[Stores] = None) -> Plan:
    """A kind ``"fastq"`` plan of ``parts`` chunks for R1 [and R2] (see the module docstring)."""
    stores = stores or Stores()
    if not 1 <= len(uris) <= 2:
        raise UsageError("plan one FASTQ file, or two (R1 and R2)")
    if parts < 1:
        raise UsageError("--parts must be at least 1")
    srcs = [_source(u, stores) for u in uris]
    exact = sum(s.size for s in srcs) <= parts * READ_BUDGET
    if exact:
        ranges, counts = _exact_ranges(srcs, parts)
    else:
        ranges = _sampled_ranges(srcs, parts)
        counts = [None] * parts
    chunks = [{"index": i, "records": counts[i], "ranges": [r[i] for r in ranges]} for i in range(parts)]
    sources = []
    for s in srcs:
        entry = source_entry(s.info)
        entry["format"] = s.fmt
        sources.append(entry)
    return Plan("fastq", sources, chunks,
                header={"formats": [s.fmt for s in srcs], "paired": len(srcs) == 2, "exact": exact},
                bytes_read=sum(s.bytes_read for s in srcs))


def _exact_ranges(srcs: List[_Source], parts: int) -> Tuple[List[List[Dict[str, Any]]], List[Optional[int]]]:
    """Read small sources whole; cut at exact record counts."""
    all_starts = []
    totals = []
    for s in srcs:
        data, blocks, _ = s.window(0, s.size)
        if s.fmt == "plain" and data and not data.endswith(b"\n"):
            data += b"\n"
        starts = _record_starts(data, str(s.loc))
        totals.append(len(starts) - 1)
        all_starts.append((starts, blocks, data))
    if len(srcs) == 2 and totals[0] != totals[1]:
        raise FormatError(f"R1 {srcs[0].loc} has {totals[0]} records but R2 {srcs[1].loc} has {totals[1]}",
                          path=str(srcs[1].loc), fmt="FASTQ", record=min(totals))
    if len(srcs) == 2:
        _check_names(all_starts[0][2], all_starts[1][2], totals[0], srcs)
    counts = balanced(totals[0], parts)
    ranges = []
    for s, (starts, blocks, data) in zip(srcs, all_starts):
        cuts, k = [], 0
        for n in counts:
            cuts.append(k)
            k += n
        cuts.append(k)
        positions = []
        for rec in cuts:
            off = starts[rec]
            positions.append([s.size, 0] if off >= len(data) or rec == totals[0] else _virtual_exact(s, blocks, off))
        ranges.append([{"start": positions[i], "end": positions[i + 1]} for i in range(parts)])
    return ranges, list(counts)


def _virtual_exact(s: _Source, blocks: List[Tuple[int, int, int]], off: int) -> List[int]:
    if s.fmt == "plain":
        return [off, 0]
    for doff, c, ulen in blocks:
        if doff <= off < doff + ulen:
            return [c, off - doff]
    return [s.size, 0]


def _record_starts(data: bytes, path: str) -> List[int]:
    """Offsets of every record start plus the end, validating as the splitter does."""
    starts = [0]
    pos = 0
    lines = 0
    while pos < len(data):
        new, n, _, err, eline, _ = _fastq.scan(data, pos, len(data), 1, HUGE, HUGE, 1, True)
        if err:
            raise FormatError(MESSAGES.get(err, "malformed record"), path=path, fmt="FASTQ", line=lines + eline)
        if n == 0:
            break
        pos = new
        lines += 4
        starts.append(pos)
    if len(starts) == 1:
        raise FormatError("the file is empty (no FASTQ records)", path=path, fmt="FASTQ", line=0)
    return starts


def _check_names(d1: bytes, d2: bytes, n: int, srcs: List[_Source]) -> None:
    mm, _, _ = _fastq.compare_names(d1, 0, d2, 0, n)
    if mm >= 0:
        raise FormatError(f"R1 and R2 are out of sync at record {mm + 1} ({srcs[0].loc} and {srcs[1].loc})",
                          path=str(srcs[1].loc), fmt="FASTQ", line=mm * 4)


def _sampled_ranges(srcs: List[_Source], parts: int) -> List[List[Dict[str, Any]]]:
    r1 = srcs[0]
    bounds1: List[List[int]] = [[0, 0]]
    bounds2: List[List[int]] = [[0, 0]]
    for i in range(1, parts):
        c = i * r1.size // parts
        pos, name = _boundary(r1, c)
        bounds1.append(pos)
        if len(srcs) == 2:
            if name is None:
                bounds2.append([srcs[1].size, 0])
            else:
                bounds2.append(_find_name(srcs[1], name, c * srcs[1].size // max(1, r1.size), str(r1.loc)))
    bounds1.append([r1.size, 0])
    out = [[{"start": bounds1[i], "end": bounds1[i + 1]} for i in range(parts)]]
    if len(srcs) == 2:
        bounds2.append([srcs[1].size, 0])
        out.append([{"start": bounds2[i], "end": bounds2[i + 1]} for i in range(parts)])
    return out


def _boundary(s: _Source, c: int) -> Tuple[List[int], Optional[bytes]]:
    """The first record start after ``c`` (plain) or after the start of the first block at/after ``c``."""
    length = WINDOW
    while True:
        data, blocks, at_eof = s.window(c, length)
        if s.fmt == "bgzf" and not blocks and at_eof:
            return [s.size, 0], None
        if at_eof and data and not data.endswith(b"\n"):
            data += b"\n"
        r = _fastq.find_record_start(data, 1, len(data)) if data else -1
        if r >= 0 and not (at_eof and r >= len(data)):
            return s.to_virtual(blocks, r, at_eof), _fastq.record_name(data, r)
        if at_eof:
            return [s.size, 0], None
        if length >= READ_BUDGET // 2:
            raise FormatError(f"no FASTQ record start found in {length} bytes after offset {c}",
                              path=str(s.loc), fmt="FASTQ", offset=c)
        length *= 2


def _find_name(s: _Source, name: bytes, guess: int, r1_uri: str) -> List[int]:
    """The position of the record named ``name`` in R2, searched around ``guess``."""
    length = WINDOW
    spent = 0
    while spent + length <= READ_BUDGET - 2 * WINDOW:
        start = max(0, guess - length // 2)
        data, blocks, at_eof = s.window(start, length)
        spent += length
        if at_eof and data and not data.endswith(b"\n"):
            data += b"\n"
        pos = 0 if start == 0 and (s.fmt == "plain" or (blocks and blocks[0][1] == 0)) else \
            _fastq.find_record_start(data, 1, len(data))
        while 0 <= pos < len(data):
            if _fastq.record_name(data, pos) == name:
                return s.to_virtual(blocks, pos, at_eof)
            new, n, _, err, _, _ = _fastq.scan(data, pos, len(data), 1, HUGE, HUGE, 1, False)
            if err or n == 0:
                break
            pos = new
        length *= 2
    raise FormatError(f"R2 is out of sync with R1 {r1_uri}: read '{name.decode(errors='replace')}' "
                      f"(an R1 chunk boundary) is not near the same place in R2; are the files a pair? "
                      f"(`genostage split fastq` checks every record)", path=str(s.loc), fmt="FASTQ", offset=guess)


# -- fetching one chunk ------------------------------------------------------
def _chunk_pieces(s: _Source, start: List[int], end: List[int]) -> Iterator[C.Piece]:
    """Uncompressed pieces of ``[start, end)`` read with one ranged GET per source."""
    c0, u0 = start
    c1, u1 = end
    if s.fmt == "plain":
        pos = c0
        for data in s.store.iter_range(s.loc, c0, c1 - c0, etag=s.info.etag, chunk=C.READ_SIZE):
            s.bytes_read += len(data)
            yield C.Piece(data, pos, pos + len(data))
            pos += len(data)
        return
    stop = min(s.size, c1 + (bgzf.MAX_BLOCK_SIZE if u1 else 0))
    if stop <= c0:
        return
    cpos = c0
    group: List[Tuple[bytes, int]] = []
    datas: List[bytes] = []
    gstart = c0

    def flush() -> Iterator[C.Piece]:
        nonlocal group, datas, gstart
        if group:
            yield C.Piece(b"".join(datas), gstart, cpos, group)
        group, datas = [], []
        gstart = cpos

    for at, raw, block in _checked_blocks(s, c0, stop):
        size = len(raw)
        first, last = at == c0, at == c1
        if at > c1 or (last and u1 == 0):
            return
        if first or last:
            yield from flush()
            lo = u0 if first else 0
            hi = u1 if last else len(block)
            cpos = at + size
            if hi > lo:
                yield C.Piece(block[lo:hi], at, cpos)
            gstart = cpos
            if last:
                return
            continue
        group.append((raw, len(block)))
        datas.append(block)
        cpos = at + size
        if len(group) >= C.BGZF_GROUP:
            yield from flush()
    yield from flush()
    if cpos < c1 or (u1 and cpos <= c1):
        raise FormatError("truncated BGZF stream inside the chunk", path=str(s.loc), fmt="FASTQ", offset=cpos)


def _checked_blocks(s: _Source, start: int, stop: int) -> Iterator[Tuple[int, bytes, bytes]]:
    """(offset, raw block, its data) of each whole BGZF block in ``[start, stop)``, checked.

    A block that fails its check (CRC32, size, header) is read again once, with a fresh ranged
    GET from that block on: bytes corrupted in flight are cured so, and only a block that is
    bad in the file itself (the same error twice in a row) raises its FormatError."""
    at, again_at = start, -1
    while True:
        try:
            for at, raw, block in _read_blocks(s, at, stop):
                yield at, raw, block
                at += len(raw)
            return
        except FormatError as exc:
            if at == again_at:
                raise
            again_at = at
            log.warning("%s: %s; reading it again from offset %d", s.loc, exc, at)


def _read_blocks(s: _Source, start: int, stop: int) -> Iterator[Tuple[int, bytes, bytes]]:
    """The whole BGZF blocks of one ranged GET of ``[start, stop)``, inflated (CRC32 checked)."""
    buf = b""
    at = start
    for data in s.store.iter_range(s.loc, start, stop - start, etag=s.info.etag, chunk=1 << 20):
        s.bytes_read += len(data)
        buf += data
        while len(buf) >= bgzf.HEADER_SIZE:
            size = bgzf.block_size(buf, 0, str(s.loc))
            if len(buf) < size:
                break
            raw, buf = buf[:size], buf[size:]
            yield at, raw, bgzf.inflate_block(raw, str(s.loc), at, "FASTQ")
            at += size


class _StreamSink(Sink):
    """Writes one chunk to given file objects (plain or BGZF)."""

    def __init__(self, outs: List[BinaryIO], formats: List[str]) -> None:
        self.writers = [C.make_writer(o, "bgzf" if f == "bgzf" else "none") for o, f in zip(outs, formats)]
        self.raw_blocks = all(f == "bgzf" for f in formats)

    def begin(self, index: int) -> None:
        pass

    def write(self, mate: int, data: memoryview) -> None:
        self.writers[mate].write(data)

    def raw(self, mate: int, raw: bytes, ulen: int) -> None:
        self.writers[mate].write_raw_block(raw, ulen)

    def end(self, stats: Any) -> None:
        for w in self.writers:
            w.close()

    def abort(self) -> None:
        pass


def write_chunk(plan: Plan, index: int, out: BinaryIO, stores: Optional[Stores] = None,
                out2: Optional[BinaryIO] = None) -> Dict[str, Any]:
    """Fetch chunk ``index`` of a FASTQ plan and write it (see the module docstring)."""
    stores = stores or Stores()
    if plan.kind != "fastq":
        raise UsageError(f"not a FASTQ plan (kind {plan.kind!r})")
    chunk = plan.chunk(index)
    paired = len(plan.sources) == 2
    if paired and out2 is None:
        raise UsageError("a paired plan writes two files: give an output for R2 too")
    infos = check_unchanged(plan, stores)
    outs = [out] + ([out2] if paired and out2 is not None else [])
    srcs, inputs = [], []
    for info, src, rng in zip(infos, plan.sources, chunk["ranges"]):
        s = _Source(info, stores.for_location(info.location), src.get("format", "plain"))
        srcs.append(s)
        label = f"{src['uri']} (chunk {index}; lines counted from the chunk start)"
        inp = Input(label, s.fmt, _chunk_pieces(s, rng["start"], rng["end"]), max(1, rng["end"][0] - rng["start"][0]))
        inp.allow_empty = True
        inputs.append(inp)
    splitter = Splitter([i.uri for i in inputs], records=HUGE, stores=stores)
    sink = _StreamSink(outs, [s.fmt for s in srcs])
    summary = splitter.run_inputs(inputs, sink)
    stats = summary.chunks[0] if summary.chunks else None
    records = stats.records if stats else 0
    if chunk.get("records") is not None and records != chunk["records"]:
        raise FormatError(f"chunk {index} holds {records} records but the plan counted {chunk['records']}",
                          path=plan.sources[0]["uri"], fmt="FASTQ")
    return {"index": index, "records": records, "bases": stats.bases if stats else 0,
            "bytes": stats.bytes if stats else 0, "bytes_read": sum(s.bytes_read for s in srcs),
            "sources": [s["uri"] for s in plan.sources]}


__all__ = ["make_plan", "write_chunk"]
