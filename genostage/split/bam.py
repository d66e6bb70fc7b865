"""Split a BAM into valid BAM chunks by block copy, and make/serve chunk plans.

Cut points are found from a few small ranged reads: from a compressed offset,
the first BGZF block, then the first offset where a chain of valid BAM records
begins (as Disq and spark-bam do). A chunk is the header, the records between
two virtual offsets (whole blocks copied byte for byte, the edge blocks
re-encoded) and the EOF block. The same code serves a local file and an
``s3://`` object. Every block copied is inflated and its CRC32 and ISIZE
checked unless the caller passes ``check=Check(crc=False)``
(``genostage.split.bam_check``; the cost is in the README's BAM section).
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, Dict, List, Optional, Tuple

from ..codec import blocks as K
from . import _bam as R
from ..codec.bgzf import BgzfWriter, make_virtual, split_virtual
from ..errors import FormatError, UsageError
from ..fsutil import os_error, temp_name
from ..store import Stores
from .bam_check import Check
from .bam_copy import copy_records, run_bytes
from .bam_io import BamHeader, Source, Window, check_eof, header_from_bytes, read_header, record_name, window_from
from .naming import part_name
from .plan import Plan, source_entry

log = logging.getLogger("genostage.split.bam")

CUT_WINDOW = 128 << 10
MAX_WINDOW = 64 << 20
# A cut is Cut(voffset, size of the block it points into, 0 when it is a block start)
Cut = Tuple[int, int]


def _name_boundary(win: Window, u: int) -> Optional[int]:
    """First record start after ``u`` whose QNAME differs from the record before it; None if undecided."""
    name = record_name(win.data, u)
    pos = u
    while name is not None:
        nxt = pos + 4 + int.from_bytes(win.data[pos:pos + 4], "little")
        if nxt == len(win.data) and win.at_eof:
            return nxt
        other = record_name(win.data, nxt)
        if other is None:
            return None
        if other != name:
            return nxt
        pos = nxt
    return None


def find_cut(src: Source, header: BamHeader, target: int, by_name: bool = False) -> Cut:
    """The first record start at or after the first block at or after compressed offset ``target``."""
    eof = src.size - 28
    if target <= split_virtual(header.first_record)[0] and not by_name:
        return header.first_record, 0
    target = max(target, split_virtual(header.first_record)[0])
    length = CUT_WINDOW
    while True:
        buf = src.read(target, length)
        b = K.find_block(buf, 0, target + len(buf) >= src.size)
        if b < 0:
            if target + len(buf) >= src.size:
                raise src.error("no BGZF block found after this offset", offset=target)
            length = _grow(src, length, target)
            continue
        win = window_from(src, target + b, memoryview(buf)[b:])
        if not win.blocks:
            length = _grow(src, length, target)
            continue
        skip = split_virtual(header.first_record)[1] if win.blocks[0][0] == split_virtual(header.first_record)[0] else 0
        u, status = R.find_record(win.data, skip, header.lengths, win.at_eof)
        if status == 0 and win.at_eof:
            return make_virtual(eof, 0), 0
        if status == 1 and by_name:
            v = _name_boundary(win, u)
            if v is None:
                status = -1
            else:
                u = v
        if status == 1:
            return win.voffset(u)
        length = _grow(src, length, target)


def _grow(src: Source, length: int, target: int) -> int:
    if length >= MAX_WINDOW or target + length >= src.size:
        if target + length >= src.size:
            raise src.error("no valid BAM record found after this offset", offset=target)
        raise src.error(f"no valid BAM record found within {MAX_WINDOW >> 20} MiB of this offset", offset=target)
    return length * 2


def byte_cuts(src: Source, header: BamHeader, parts: int, by_name: bool = False) -> List[Cut]:
    """``parts + 1`` cuts splitting the records into runs of about equal compressed size."""
    if parts < 1:
        raise UsageError(f"--parts must be at least 1 (got {parts})")
    eof = check_eof(src)
    first = split_virtual(header.first_record)[0]
    cuts: List[Cut] = [(header.first_record, 0)]
    for i in range(1, parts):
        target = first + (eof - first) * i // parts
        cut = find_cut(src, header, target, by_name) if target > split_virtual(cuts[-1][0])[0] else cuts[-1]
        cuts.append(max(cut, cuts[-1]))
    cuts.append((make_virtual(eof, 0), 0))
    return cuts


def parts_for_bytes(src: Source, header: BamHeader, size: int) -> int:
    if size <= 0:
        raise UsageError(f"--bytes must be positive (got {size})")
    data = max(1, src.size - 28 - split_virtual(header.first_record)[0])
    return max(1, -(-data // size))


def chunks_from_runs(runs: List[Tuple[Cut, Cut]]) -> List[Dict[str, Any]]:
    """Plan chunks from runs (start cut, end cut): records from start (inclusive) to end (exclusive)."""
    chunks = []
    for (start, _s), (end, end_size) in runs:
        first, last = run_bytes(start, end, end_size)
        chunks.append({"start": start, "end": end, "bytes": [first, last]})
    return chunks


# -- plans --------------------------------------------------------------------
def cut_runs(src: Source, header: Any, parts: Optional[int], records: Optional[int], size: Optional[int],
             by_name: bool, threads: int) -> List[Tuple[Cut, Cut]]:
    """The (start, end) cut pairs for ``--records N``, ``--bytes SIZE`` or ``--parts N``."""
    if records is not None:
        from .bam_records import record_cuts

        cuts = record_cuts(src, header, records, by_name, threads)
    else:
        n = parts if parts is not None else parts_for_bytes(src, header, size or 0)
        cuts = byte_cuts(src, header, n, by_name)
    return list(zip(cuts, cuts[1:]))


def _open_and_cut(uri: str, stores: Stores, parts: Optional[int], records: Optional[int], size: Optional[int],
                  by_name: bool, threads: int, runs: Optional[List[Tuple[Cut, Cut]]]
                  ) -> Tuple[Source, int, BamHeader, List[Tuple[Cut, Cut]]]:
    """Open ``uri``, read its header and choose the cuts; also the store's bytes-read count before."""
    src = Source(uri, stores)
    before = src.store.counters.snapshot()["bytes_read"]
    header = read_header(src)
    if runs is None:
        runs = cut_runs(src, header, parts, records, size, by_name, threads)
    return src, before, header, runs


def make_plan(uri: str, stores: Stores, parts: Optional[int] = None, records: Optional[int] = None,
              size: Optional[int] = None, by_name: bool = False, threads: int = 1,
              runs: Optional[List[Tuple[Cut, Cut]]] = None) -> Plan:
    """A plan for ``uri`` (local path or ``s3://``) from a few ranged reads.

    ``runs`` (from :func:`genostage.split.bam_index.index_runs`) replaces the
    parts/records/size cuts.
    """
    src, before, header, runs = _open_and_cut(uri, stores, parts, records, size, by_name, threads, runs)
    plan = plan_from_runs(src, header, runs)
    plan.bytes_read = src.store.counters.snapshot()["bytes_read"] - before
    return plan


def plan_from_runs(src: Source, header: BamHeader, runs: List[Tuple[Cut, Cut]]) -> Plan:
    entry = source_entry(src.info)
    entry["mtime"] = src.info.mtime
    return Plan("bam", [entry], chunks_from_runs(runs),
                header={"bytes": [0, header.byte_end], "length": len(header.data),
                        "first_record": header.first_record, "n_ref": header.n_ref})


def _plan_header(plan: Plan, src: Source) -> BamHeader:
    h = plan.header
    try:
        start, end = h["bytes"]
        return header_from_bytes(src.read(start, end - start), int(h["length"]), src, int(h["first_record"]))
    except (KeyError, TypeError, ValueError):
        raise FormatError("BAM plan without a valid header entry", path=src.path) from None


def write_plan_chunk(plan: Plan, index: int, out: BinaryIO, stores: Stores, level: int = 6,
                     check: Optional[Check] = None) -> Dict[str, Any]:
    """Write chunk ``index`` of a BAM plan as a whole BAM file to ``out``; returns what it did.
    ``check`` (default: CRC32 of every block) as for :func:`write_bam`."""
    from .plan import check_unchanged

    chunk = plan.chunk(index)
    info = check_unchanged(plan, stores)[0]
    src = Source(plan.sources[0]["uri"], stores, info)
    before = src.store.counters.snapshot()
    header = _plan_header(plan, src)
    try:
        start, end = int(chunk["start"]), int(chunk["end"])
        first, last = chunk["bytes"]
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"BAM plan chunk {index} lacks start/end/bytes", path=src.path) from None
    stats = write_bam(out, header, src, start, end, src.iter(first, last - first), level, check)
    after = src.store.counters.snapshot()
    stats.update(index=index, bytes_read=after["bytes_read"] - before["bytes_read"],
                 requests=after["requests"] - before["requests"])
    return stats


def write_bam(out: BinaryIO, header: BamHeader, src: Source, start: int, end: int, pieces: Any,
              level: int = 6, check: Optional[Check] = None) -> Dict[str, Any]:
    """The header, the records from virtual offset ``start`` to ``end`` and the EOF block.
    ``check``: what is checked on the way (default ``Check()``: every block's CRC32 and ISIZE;
    ``Check(crc=False)`` copies the inner blocks unread; ``Check(count=True)`` adds the counts)."""
    writer = BgzfWriter(out, level)
    writer.write(header.data)
    writer.flush()
    check = Check() if check is None else check
    stats: Dict[str, Any] = copy_records(writer, pieces, start, end, src, out, check if check.active else None)
    writer.close()
    stats["bytes_written"] = writer.compressed_bytes
    return stats


# -- splitting to files -------------------------------------------------------
def part_names(src: Source, n: int) -> List[str]:
    stem = src.loc.name
    if stem.endswith(".bam"):
        stem = stem[:-4]
    return [part_name(stem, i, n, ".bam") for i in range(n)]


def split_to_dir(src: Source, header: BamHeader, runs: List[Tuple[Cut, Cut]], out_dir: str, threads: int = 1,
                 level: int = 6, check: Optional[Check] = None) -> List[Dict[str, Any]]:
    """Write one BAM per run into ``out_dir``; all appear, or none. Parts are written on ``threads``
    threads, each checking its own blocks (``check``, as for :func:`write_bam`)."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, out_dir) from None
    chunks = chunks_from_runs(runs)
    names = part_names(src, len(chunks))
    paths = [os.path.join(out_dir, name) for name in names]
    temps = [temp_name(path) for path in paths]

    def one(i: int) -> Dict[str, Any]:
        c = chunks[i]
        first, last = c["bytes"]
        try:
            with open(temps[i], "wb") as fh:
                stats = write_bam(fh, header, src, c["start"], c["end"], src.iter(first, last - first), level, check)
        except OSError as exc:
            raise os_error(exc, paths[i]) from None
        stats.update(path=paths[i], start=c["start"], end=c["end"])
        return stats

    try:
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                results = list(pool.map(one, range(len(chunks))))
        else:
            results = [one(i) for i in range(len(chunks))]
        for tmp, res in zip(temps, results):
            os.replace(tmp, res["path"])
    except BaseException as exc:
        for tmp in temps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(exc, OSError):
            raise os_error(exc, out_dir) from None
        raise
    return results


def split_bam(uri: str, out_dir: str, stores: Stores, parts: Optional[int] = None, records: Optional[int] = None,
              size: Optional[int] = None, by_name: bool = False, threads: int = 1, level: int = 6,
              runs: Optional[List[Tuple[Cut, Cut]]] = None, check: Optional[Check] = None) -> Dict[str, Any]:
    """Split ``uri`` into BAM files in ``out_dir``; returns a report (parts, bytes read and written).

    ``runs`` (from :func:`genostage.split.bam_index.index_runs`) replaces the
    parts/records/size cuts. ``check`` (default: every block's CRC32 and ISIZE) as for
    :func:`write_bam`; with ``Check(count=True)`` each part's report holds its ``records`` and
    ``primary`` counts.
    """
    src, before, header, runs = _open_and_cut(uri, stores, parts, records, size, by_name, threads, runs)
    results = split_to_dir(src, header, runs, out_dir, threads, level, check)
    return {"source": src.path, "parts": results,
            "bytes_read": src.store.counters.snapshot()["bytes_read"] - before,
            "bytes_written": sum(r["bytes_written"] for r in results)}

