"""Genomic cut points from a .bai or .csi index: by reference, by regions, or N equal genomic spans.

A cut at (ref, pos) is the first record whose (refID, pos) is at or after it
(unplaced reads, refID -1, sort last). The index gives a virtual offset at or
before that record (reference start, linear index or leaf-bin offsets); a short
scan of the records from there finds it exactly. Records are assigned to the
region holding their start position; unplaced reads get their own chunk.
"""
from __future__ import annotations

import gzip
import re
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from . import _bam as R
from ..codec.bgzf import make_virtual, split_virtual
from ..errors import FormatError, NotFound, UsageError
from ..location import parse
from ..store import Stores
from .bam_io import BamHeader, Source, check_eof, read_header, read_window

Cut = Tuple[int, int]
Run = Tuple[Cut, Cut]
SCAN_WINDOW = 96 << 10
MAX_SCAN = 256 << 20


@dataclass
class RefIndex:
    beg: Optional[int] = None  # virtual offset of the reference's first record (from the pseudo-bin)
    end: Optional[int] = None  # virtual offset just after its last record
    windows: Dict[int, int] = field(default_factory=dict)  # window -> smallest voffset of records overlapping it


@dataclass
class BamIndex:
    path: str
    shift: int
    refs: List[RefIndex]
    n_no_coor: Optional[int] = None

    def lower_bound(self, ref: int, pos: int, first_record: int) -> int:
        """A virtual offset at or before the first record at or after (ref, pos); ref -1 means unplaced."""
        best = first_record
        last = len(self.refs) if ref < 0 else ref
        for r in self.refs[:last]:
            if r.end is not None:
                best = max(best, r.end)
        if 0 <= ref < len(self.refs):
            r = self.refs[ref]
            if r.beg is not None:
                best = max(best, r.beg)
            w = max(0, pos) >> self.shift
            for win, off in r.windows.items():
                if win <= w and off:
                    best = max(best, off)
        return best


def _u64(data: bytes, p: int) -> int:
    return struct.unpack_from("<Q", data, p)[0]


def parse_bai(data: bytes, path: str) -> BamIndex:
    try:
        if data[:4] != b"BAI\x01":
            raise FormatError("not a BAI index (expected magic BAI\\1)", path=path, fmt="BAI", offset=0)
        (n_ref,) = struct.unpack_from("<i", data, 4)
        p = 8
        refs = []
        for _ in range(n_ref):
            ri = RefIndex()
            (n_bin,) = struct.unpack_from("<i", data, p)
            p += 4
            for _ in range(n_bin):
                bin_, n_chunk = struct.unpack_from("<Ii", data, p)
                p += 8
                if bin_ == 37450 and n_chunk == 2:
                    ri.beg, ri.end = _u64(data, p), _u64(data, p + 8)
                p += 16 * n_chunk
            (n_intv,) = struct.unpack_from("<i", data, p)
            p += 4
            offs = struct.unpack_from(f"<{n_intv}Q", data, p)
            p += 8 * n_intv
            ri.windows = {i: o for i, o in enumerate(offs) if o}
            refs.append(ri)
        n_no_coor = _u64(data, p) if len(data) >= p + 8 else None
    except struct.error:
        raise FormatError("truncated BAI index", path=path, fmt="BAI", offset=len(data)) from None
    return BamIndex(path, 14, refs, n_no_coor)


def parse_csi(data: bytes, path: str) -> BamIndex:
    try:
        data = gzip.decompress(data)
    except (OSError, EOFError):
        raise FormatError("not a BGZF-compressed CSI index", path=path, fmt="CSI", offset=0) from None
    try:
        if data[:4] != b"CSI\x01":
            raise FormatError("not a CSI index (expected magic CSI\\1)", path=path, fmt="CSI", offset=0)
        min_shift, depth, l_aux = struct.unpack_from("<iii", data, 4)
        p = 16 + l_aux
        (n_ref,) = struct.unpack_from("<i", data, p)
        p += 4
        pseudo = ((1 << 3 * (depth + 1)) - 1) // 7 + 1
        first_leaf = ((1 << 3 * depth) - 1) // 7
        refs = []
        for _ in range(n_ref):
            ri = RefIndex()
            (n_bin,) = struct.unpack_from("<i", data, p)
            p += 4
            for _ in range(n_bin):
                bin_, loffset, n_chunk = struct.unpack_from("<IQi", data, p)
                p += 16
                if bin_ == pseudo and n_chunk == 2:
                    ri.beg, ri.end = _u64(data, p), _u64(data, p + 8)
                elif bin_ >= first_leaf and loffset:
                    ri.windows[bin_ - first_leaf] = loffset
                p += 16 * n_chunk
            refs.append(ri)
        n_no_coor = _u64(data, p) if len(data) >= p + 8 else None
    except struct.error:
        raise FormatError("truncated CSI index", path=path, fmt="CSI", offset=len(data)) from None
    return BamIndex(path, min_shift, refs, n_no_coor)


def load_index(src: Source, header: BamHeader, stores: Stores, index_uri: Optional[str] = None) -> BamIndex:
    """Find, read and check the index of ``src`` (refused when older than the BAM or not matching it)."""
    if index_uri:
        candidates = [index_uri]
    else:
        base = src.path
        candidates = [base + ".bai", base + ".csi"]
        if base.endswith(".bam"):
            candidates.append(base[:-4] + ".bai")
    for uri in candidates:
        loc = parse(uri)
        store = stores.for_location(loc)
        try:
            info = store.stat(loc, checksums=False)
        except NotFound:
            continue
        raw = store.read_range(loc, 0, info.size)
        index = parse_csi(raw, uri) if raw[:2] == b"\x1f\x8b" else parse_bai(raw, uri)
        if info.mtime is not None and src.info.mtime is not None and info.mtime < src.info.mtime:
            raise FormatError(f"index is older than {src.path}; re-index it (samtools index)", path=uri,
                              fmt="BAM index", offset=0)
        if len(index.refs) != header.n_ref:
            raise FormatError(f"index has {len(index.refs)} references, {src.path} has {header.n_ref}",
                              path=uri, fmt="BAM index", offset=0)
        for ri in index.refs:
            for v in (ri.beg, ri.end):
                if v is not None and split_virtual(v)[0] > src.size:
                    raise FormatError(f"virtual offset {v} beyond the end of {src.path} (stale index?)",
                                      path=uri, fmt="BAM index", offset=v)
        return index
    raise UsageError(f"no index for {src.path} (tried {', '.join(candidates)}); make one with samtools index")


def find_position(src: Source, header: BamHeader, start: int, ref: int, pos: int) -> Cut:
    """Scan the records from virtual offset ``start`` for the first at or after (ref, pos)."""
    c, u = split_virtual(start)
    length = SCAN_WINDOW
    while True:
        win = read_window(src, c, length)
        if not win.blocks:
            raise src.error("no BGZF block at this index offset (stale index?)", offset=start)
        off, status = R.first_at_or_after(win.data, u, ref, pos)
        if status == 1 or (win.at_eof and off >= len(win.data)):
            return win.voffset(off)
        if length >= MAX_SCAN:
            raise src.error(f"no record found within {MAX_SCAN >> 20} MiB of the index offset", offset=start)
        length *= 4


def parse_regions(path: str, header: BamHeader, stores: Stores) -> List[Tuple[int, int, int]]:
    """``(ref, beg, end)`` 0-based half-open from a BED file or ``chr``, ``chr:beg-end`` (1-based) lines."""
    text = stores.read_whole(path, "regions file").decode("utf-8", "replace")
    ids = {n: i for i, n in enumerate(header.names)}
    out = []
    for lineno, line in enumerate(text.splitlines()):
        line = line.strip()
        if not line or line.startswith(("#", "track", "browser")):
            continue
        fields = line.split("\t")
        m = re.fullmatch(r"(.+?)(?::([\d,]+)-([\d,]+))?", fields[0]) if len(fields) < 3 else None
        try:
            if m:
                name = m.group(1)
                if name not in ids:
                    raise KeyError(name)
                beg = int(m.group(2).replace(",", "")) - 1 if m.group(2) else 0
                end = int(m.group(3).replace(",", "")) if m.group(3) else header.lengths[ids[name]]
            else:
                name, beg, end = fields[0], int(fields[1]), int(fields[2])
            if name not in ids:
                raise KeyError(name)
        except KeyError as exc:
            raise FormatError(f"unknown reference {exc.args[0]!r}", path=path, fmt="regions", line=lineno) from None
        except ValueError:
            raise FormatError("expected CHROM START END (BED) or CHROM[:BEG-END]", path=path, fmt="regions",
                              line=lineno) from None
        if not 0 <= beg < end:
            raise FormatError(f"empty or negative interval {beg}-{end}", path=path, fmt="regions", line=lineno)
        out.append((ids[name], beg, end))
    if not out:
        raise FormatError("no regions", path=path, fmt="regions")
    return out


def equal_spans(header: BamHeader, n: int) -> List[Tuple[int, int]]:
    """``n + 1`` boundaries (ref, pos) cutting the genome into ``n`` spans of equal length."""
    if n < 1:
        raise UsageError(f"--equal-bases must be at least 1 (got {n})")
    total = sum(header.lengths)
    bounds = []
    for k in range(n):
        at = total * k // n
        for r, ln in enumerate(header.lengths):
            if at < ln:
                bounds.append((r, at))
                break
            at -= ln
    return bounds


def index_runs(uri: str, stores: Stores, index_uri: Optional[str] = None, by_reference: bool = False,
               regions: Optional[str] = None, equal_bases: Optional[int] = None) -> List[Run]:
    """Runs (start cut, end cut) for ``split bam --by-reference | --regions | --equal-bases``."""
    src = Source(uri, stores)
    header = read_header(src)
    eof = check_eof(src)
    index = load_index(src, header, stores, index_uri)
    cache: Dict[Tuple[int, int], Cut] = {}

    def cut(ref: int, pos: int) -> Cut:
        if (ref, pos) not in cache:
            lb = index.lower_bound(ref, pos, header.first_record)
            cache[(ref, pos)] = find_position(src, header, lb, ref, pos)
        return cache[(ref, pos)]

    end_cut: Cut = (make_virtual(eof, 0), 0)
    unplaced = cut(-1, -1)
    runs: List[Run] = []
    if by_reference:
        starts = [cut(r, 0) for r, ri in enumerate(index.refs) if ri.beg is not None]
        if starts:
            starts[0] = (header.first_record, 0)
        runs = list(zip(starts, starts[1:] + [unplaced]))
    elif regions is not None:
        for ref, beg, end in parse_regions(regions, header, stores):
            runs.append((cut(ref, beg), cut(ref, end)))
    elif equal_bases is not None:
        bounds = [cut(r, p) for r, p in equal_spans(header, equal_bases)]
        if bounds:
            bounds[0] = (header.first_record, 0)
        runs = list(zip(bounds, bounds[1:] + [unplaced]))
    else:
        raise UsageError("index_runs needs by_reference, regions or equal_bases")
    if unplaced[0] < end_cut[0]:
        runs.append((unplaced, end_cut))
    return runs
