"""Gathering BAM parts into one BAM: ``cat`` (block copy, as ``samtools cat``) or ``merge``
(``samtools merge``, through pysam or the samtools binary), under one reconciled header.

The header rule (both ways): the output's header is the first part's, plus

- the ``@RG`` lines of later parts whose ID the first part lacks (after its last ``@RG``), so
  every record's ``RG`` tag stays defined; the same ID with a different line is refused;
- one ``@PG`` line of the gather itself (``ID:genostage-gather``, ``PN:genostage``, ``VN``,
  ``PP`` the first part's last ``@PG``, ``CL`` its command line), after the last ``@PG``.

The later parts' ``@PG`` and ``@CO`` lines (each job's command line holds its own scratch path)
and any other line are left out. Refused: a different reference dictionary (names, lengths,
order, as the binary header holds them: the records point into it), or a different ``@HD SO``.

``cat`` copies every part's records after the header by block copy, inflating each block to
check its CRC32 (unless told not to) and counting the records on the way; parts sorted by
coordinate must follow each other (the first record of a part not before the last of the
part before it). ``merge`` needs parts sorted by coordinate or by name (``SO:coordinate`` or
``SO:queryname``): it counts each part, runs ``samtools merge`` writing to a pipe, replaces the
header in the stream and checks and counts the blocks as they pass (or, with ``recompress``,
has samtools write uncompressed blocks and compresses them itself with ISA-L); the output must
hold as many records (and primary records) as the parts.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from concurrent.futures import Executor
from typing import Any, BinaryIO, Dict, List, Optional, Sequence, Tuple, cast

from .. import __version__
from ..codec import blocks as K
from ..codec.bgzf import EOF_BLOCK, BgzfWriter, make_virtual
from ..errors import FormatError, GenostageError, RecordsNotConserved, UsageError
from ..fsutil import AtomicFile
from ..store import Stores
from .bam_check import UNPLACED, BlockCheck, Check, Counts, RecordCounter, count_bam, header_end, inflate_checked
from .bam_copy import copy_records
from .bam_io import BamHeader, Source, check_eof, read_header

PG_ID = "genostage-gather"
MERGE_OUT = "samtools merge output"
SORT_ORDERS = ("coordinate", "queryname")
READ = 512 << 10  # bytes read from the merge's pipe at a time
PIPE_SIZE = 1 << 20  # the merge's pipe buffer (Linux's default 64 KiB stalls samtools while we check)
# Runs ``pysam.<command>`` (or ``pysam.bcftools.<command>``) as a program: argv is MODULE COMMAND ARG...
PYSAM_RUNNER = ("import importlib, sys\n"
                "mod = importlib.import_module(sys.argv[1])\n"
                "try:\n"
                "    getattr(mod, sys.argv[2])(*sys.argv[3:], catch_stdout=False)\n"
                "except Exception as exc:\n"
                "    sys.stderr.write(str(getattr(exc, 'value', exc)).strip() + '\\n')\n"
                "    sys.exit(1)\n")


# -- the header ------------------------------------------------------------------
def header_lines(header: BamHeader) -> List[str]:
    return [line for line in header.text.decode("utf-8", "replace").split("\n") if line.strip()]


def tag(line: str, name: str) -> Optional[str]:
    """The value of tag ``name`` on a SAM header line (``ID`` of ``@RG\\tID:x``), or None."""
    for field in line.split("\t")[1:]:
        if field.startswith(name + ":"):
            return field[len(name) + 1:]
    return None


def sort_order(header: BamHeader) -> str:
    for line in header_lines(header):
        if line.startswith("@HD"):
            return tag(line, "SO") or "unknown"
    return "unknown"


def check_dictionary(first: BamHeader, first_path: str, other: BamHeader, other_path: str) -> None:
    """Refuse ``other`` when its references (names, lengths, order) differ from ``first``'s."""
    a = list(zip(first.names, first.lengths))
    b = list(zip(other.names, other.lengths))
    if a == b:
        return
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            raise FormatError(f"reference dictionary (@SQ) differs from {first_path}'s: reference {i + 1} is "
                              f"{y[0]} (length {y[1]}) here, {x[0]} (length {x[1]}) there", path=other_path, fmt="BAM")
    longer, n = (a, len(b)) if len(a) > len(b) else (b, len(a))
    extra = longer[n]
    raise FormatError(f"reference dictionary (@SQ) differs from {first_path}'s: {len(b)} references here, "
                      f"{len(a)} there (the first extra one: {extra[0]}, length {extra[1]})", path=other_path, fmt="BAM")


def _clean(text: str) -> str:
    return " ".join(text.replace("\t", " ").replace("\r", " ").replace("\n", " ").split())


def reconcile(headers: Sequence[BamHeader], paths: Sequence[str], command_line: str) -> str:
    """The output header text for parts with ``headers`` (see the module's rule)."""
    first = headers[0]
    order = sort_order(first)
    for h, p in zip(headers[1:], paths[1:]):
        check_dictionary(first, paths[0], h, p)
        if sort_order(h) != order:
            raise FormatError(f"@HD SO:{sort_order(h)} differs from {paths[0]}'s SO:{order}", path=p, fmt="BAM")
    lines = header_lines(first)
    groups = {tag(line, "ID"): (line, paths[0]) for line in lines if line.startswith("@RG")}
    added: List[str] = []
    for h, p in zip(headers[1:], paths[1:]):
        for line in header_lines(h):
            if not line.startswith("@RG"):
                continue
            rid = tag(line, "ID")
            if rid not in groups:
                groups[rid] = (line, p)
                added.append(line)
            elif groups[rid][0] != line:
                raise FormatError(f"read group {rid} differs from the one in {groups[rid][1]}: {line!r} here, "
                                  f"{groups[rid][0]!r} there", path=p, fmt="BAM")
    if added:
        at = max((i for i, line in enumerate(lines) if line.startswith(("@RG", "@SQ", "@HD"))), default=-1) + 1
        lines[at:at] = added
    pgs = [i for i, line in enumerate(lines) if line.startswith("@PG")]
    ids = {tag(lines[i], "ID") for i in pgs}
    pid, n = PG_ID, 0
    while pid in ids:
        n += 1
        pid = f"{PG_ID}.{n}"
    own = f"@PG\tID:{pid}\tPN:genostage\tVN:{__version__}"
    if pgs and tag(lines[pgs[-1]], "ID"):
        own += f"\tPP:{tag(lines[pgs[-1]], 'ID')}"
    own += f"\tCL:{_clean(command_line)}"
    if pgs:
        at = pgs[-1] + 1
    else:
        at = next((i for i, line in enumerate(lines) if line.startswith("@CO")), len(lines))
    lines.insert(at, own)
    return "\n".join(lines) + "\n"


def header_bytes(text: str, header: BamHeader) -> bytes:
    """A binary BAM header holding ``text`` and ``header``'s references."""
    raw = text.encode()
    out = [b"BAM\x01", struct.pack("<i", len(raw)), raw, struct.pack("<i", header.n_ref)]
    for name, length in zip(header.names, header.lengths):
        b = name.encode() + b"\0"
        out += [struct.pack("<i", len(b)), b, struct.pack("<i", length)]
    return b"".join(out)


def key_text(key: Optional[Tuple[int, int]], header: BamHeader) -> str:
    if key is None:
        return "nothing"
    ref, pos = key
    if ref == UNPLACED:
        return "the unplaced reads"
    name = header.names[ref] if 0 <= ref < header.n_ref else f"reference #{ref}"
    return f"{name}:{pos + 1}"


# -- cat -------------------------------------------------------------------------
def cat_bam(parts: Sequence[str], out: BinaryIO, stores: Stores, command_line: str, check: Optional[Check] = None,
            level: int = 6) -> Dict[str, Any]:
    """Write the parts' records, in order, after the reconciled header (block copy).

    Returns ``parts``, ``bytes_written``, ``blocks_copied``, ``blocks_reencoded``, and with
    ``check.count`` (the default here) ``counts`` (a :class:`Counts`) and ``part_counts``.
    """
    if not parts:
        raise UsageError("gather needs at least one part")
    check = Check(count=True) if check is None else check
    sources = [Source(p, stores) for p in parts]
    headers = [read_header(s) for s in sources]
    eofs = [check_eof(s) for s in sources]
    text = reconcile(headers, [s.path for s in sources], command_line)
    coordinate = sort_order(headers[0]) == "coordinate"
    writer = BgzfWriter(out, level)
    writer.write(header_bytes(text, headers[0]))
    writer.flush()
    copied = reencoded = 0
    part_counts: List[Counts] = []
    last: Optional[Tuple[int, int]] = None
    last_path = ""
    for src, h, eof in zip(sources, headers, eofs):
        first = h.first_record >> 16
        stats = copy_records(writer, src.iter(first, eof - first), h.first_record, make_virtual(eof, 0), src, out,
                             check if check.active else None)
        copied += stats["blocks_copied"]
        reencoded += stats["blocks_reencoded"]
        if check.count:
            part_counts.append(Counts(stats["records"], stats["primary"]))
            if coordinate and stats["first"] is not None:
                if last is not None and stats["first"] < last:
                    raise FormatError(f"parts out of coordinate order: this part starts at "
                                      f"{key_text(stats['first'], h)}, {last_path} before it ends at "
                                      f"{key_text(last, h)}; gather per-part sorted BAMs with bam=merge", path=src.path,
                                      fmt="BAM")
                last, last_path = stats["last"], src.path
    writer.close()
    result: Dict[str, Any] = {"parts": len(parts), "bytes_written": writer.compressed_bytes, "blocks_copied": copied,
                              "blocks_reencoded": reencoded}
    if check.count:
        result["part_counts"] = part_counts
        result["counts"] = sum(part_counts, Counts())
    return result


def gather_bam(parts: List[str], out: BinaryIO, stores: Stores, level: int = 6,
               command_line: Optional[str] = None, check: Optional[Check] = None) -> Dict[str, Any]:
    """:func:`cat_bam` (kept for callers of the first gather)."""
    return cat_bam(parts, out, stores, command_line or default_command("cat", parts, "-"), check, level)


def gather_to_file(parts: List[str], dest: str, stores: Stores, check: Optional[Check] = None) -> Dict[str, Any]:
    """:func:`cat_bam` into ``dest``, which appears complete or not at all."""
    dest = os.path.abspath(dest)
    with AtomicFile(dest) as fh:
        stats = cat_bam(parts, cast(BinaryIO, fh), stores, default_command("cat", parts, dest), check)
    stats["path"] = dest
    return stats


def default_command(how: str, parts: Sequence[str], dest: str) -> str:
    flag = " --merge" if how == "merge" else ""
    return f"genostage gather bam{flag} {' '.join(parts)} -o {dest}"


# -- merge -----------------------------------------------------------------------
def tool_command(suite: str, engine: str = "auto") -> List[str]:
    """How to run ``samtools`` or ``bcftools`` subcommands: the binary on PATH when there is one
    (measured faster than pysam's copy: 85 s against 98 s for an 8-part 1.45 GiB merge), else
    pysam's copy (in a child Python). ``engine``: ``auto``, ``pysam`` or ``binary``."""
    if engine not in ("auto", "pysam", "binary"):
        raise UsageError(f"unknown engine {engine!r} (expected auto, pysam or binary)")
    module = "pysam" if suite == "samtools" else "pysam.bcftools"
    exe = shutil.which(suite) if engine in ("auto", "binary") else None
    if exe:
        return [exe]
    if engine in ("auto", "pysam") and importlib.util.find_spec("pysam") is not None:
        return [sys.executable, "-c", PYSAM_RUNNER, module]
    if engine not in ("auto", "pysam", "binary"):
        raise UsageError(f"unknown engine {engine!r} (expected auto, pysam or binary)")
    raise UsageError(f"this gather needs {suite}: install pysam (pip install 'genostage[scatter]') or put {suite} "
                     f"on PATH (e.g. apt-get install {suite})")


def run_tool(argv: Sequence[str], what: str) -> None:
    """Run a tool to completion; GenostageError with its last stderr line when it fails."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            rc = proc.wait()
        finally:
            _stop(proc)
        if rc:
            raise GenostageError(f"{what} failed (exit status {rc}): {_last_line(err)}")


def _last_line(err: Any) -> str:
    err.seek(0)
    lines = [line.strip() for line in err.read().decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _stop(proc: "subprocess.Popen[bytes]") -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def merge_bam(parts: Sequence[str], out: BinaryIO, command_line: str, threads: int = 2, level: int = 6,
              engine: str = "auto", part_counts: Optional[Sequence[Counts]] = None,
              pool: Optional[Executor] = None, recompress: bool = False) -> Dict[str, Any]:
    """Merge sorted local BAM parts into ``out``: ``samtools merge -@ threads -l level`` writes the
    merged BAM to a pipe; genostage swaps its header for the reconciled one, checks every block
    (CRC32) and counts the records as they pass. With ``recompress`` samtools writes uncompressed
    blocks (``-u``) and genostage compresses them on ``pool`` (ISA-L when installed: faster than
    samtools' deflate, but the output is larger).

    ``part_counts`` (the parts' counts when the caller has them) saves counting the parts
    first. Returns ``parts``, ``bytes_written``, ``counts``, ``part_counts`` and ``engine``;
    RecordsNotConserved when the output's counts differ from the parts' sum.
    """
    if not parts:
        raise UsageError("gather needs at least one part")
    stores = Stores()
    sources = [Source(p, stores) for p in parts]
    headers = [read_header(s) for s in sources]
    for s in sources:
        check_eof(s)
    text = reconcile(headers, [s.path for s in sources], command_line)
    order = sort_order(headers[0])
    if order not in SORT_ORDERS:
        raise FormatError(f"bam=merge needs parts sorted by coordinate or by name (@HD SO:coordinate or "
                          f"SO:queryname), this one has SO:{order}; sort the parts, or gather parts that are in "
                          f"order with bam=cat", path=sources[0].path, fmt="BAM")
    if part_counts is None:
        part_counts = [count_bam(s.path, stores, threads) for s in sources]
    elif len(part_counts) != len(parts):
        raise UsageError(f"{len(part_counts)} part counts for {len(parts)} parts")
    argv = tool_command("samtools", engine) + ["merge", "--no-PG", "-c", "-p", "-@", str(max(1, threads))]
    argv += (["-u"] if recompress else ["-l", str(level)]) + (["-n"] if order == "queryname" else [])
    argv += ["-", *[s.path for s in sources]]
    new_header = header_bytes(text, headers[0])
    if recompress:
        writer = BgzfWriter(out, level, threads=max(1, threads), executor=pool)
        swap = _Restream(writer, new_header)
        restream: Optional[_Restream] = swap
        counter = swap.counter
        check = BlockCheck(MERGE_OUT, swap, pool)
    else:
        restream = None
        counter = RecordCounter(MERGE_OUT)
        check = BlockCheck(MERGE_OUT, counter, pool)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        try:
            assert proc.stdout is not None
            _grow_pipe(proc.stdout.fileno())
            pipe = cast(BinaryIO, proc.stdout)
            if recompress:
                _pump(pipe, check)
            else:
                written = _rewrite_stream(pipe, out, new_header, check, level)
            proc.stdout.close()
            rc = proc.wait()
        except BaseException:
            check.abort()
            raise
        finally:
            _stop(proc)
        if rc:
            raise GenostageError(f"samtools merge failed (exit status {rc}): {_last_line(err)}")
    check.finish()
    if restream is not None:
        counts = restream.close()
        writer.close()
        written = writer.compressed_bytes
    else:
        counts = counter.close()
    expected = sum(part_counts, Counts())
    if counts != expected:
        raise RecordsNotConserved(f"samtools merge wrote {counts.records} records ({counts.primary} primary), "
                                  f"the parts hold {expected.records} ({expected.primary} primary)")
    return {"parts": len(parts), "bytes_written": written, "counts": counts,
            "part_counts": list(part_counts), "engine": "pysam" if argv[0] == sys.executable else argv[0]}


def _grow_pipe(fd: int) -> None:
    """Ask for a larger pipe buffer (best effort: the system's limit may be lower)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except (OSError, ImportError):
        pass


def _pump(pipe: BinaryIO, check: BlockCheck) -> None:
    """Every byte of the pipe through ``check``; FormatError unless it ends with the EOF block."""
    offset = 0
    tail = b""
    while True:
        buf = pipe.read(READ)
        if not buf:
            break
        check.stream(buf, offset)
        offset += len(buf)
        tail = buf[-len(EOF_BLOCK):] if len(buf) >= len(EOF_BLOCK) else (tail + buf)[-len(EOF_BLOCK):]
    if tail != EOF_BLOCK:
        raise FormatError("no BGZF EOF block at the end (cut short?)", path=MERGE_OUT, fmt="BAM", offset=offset)


class _Restream:
    """Consumer of the merged stream's data: its header swapped for ours, the records counted and
    written to a :class:`BgzfWriter`."""

    def __init__(self, writer: BgzfWriter, new_header: bytes) -> None:
        self.writer = writer
        self.counter = RecordCounter(MERGE_OUT)
        self._new_header = new_header
        self._head: Optional[bytes] = b""  # None once the header is replaced

    def __call__(self, data: bytes) -> None:
        if self._head is not None:
            buf = self._head + data
            end = header_end(buf, MERGE_OUT)
            if end is None:
                self._head = buf
                return
            self._head = None
            self.writer.write(self._new_header)
            self.writer.flush()
            data = buf[end:]
        if data:
            self.counter(data)
            self.writer.write(data)

    def close(self) -> Counts:
        if self._head is not None:
            raise FormatError("the stream ends inside its header", path=MERGE_OUT, fmt="BAM")
        return self.counter.close()


def _rewrite_stream(pipe: BinaryIO, out: BinaryIO, new_header: bytes, check: BlockCheck, level: int) -> int:
    """Copy a BAM stream from ``pipe`` to ``out`` with its header replaced by ``new_header``; the
    blocks after the header pass through ``check`` and unchanged. Returns the bytes written."""
    buf = b""
    data = b""
    rest_data = b""
    offset = 0  # compressed offset of buf[0] in the stream
    while True:  # inflate blocks from the start until the whole header is in ``data``
        more = pipe.read(READ)
        if not more:
            raise FormatError("the stream ends inside its header", path=MERGE_OUT, fmt="BAM")
        buf += more
        pos = 0
        end = None
        while True:
            size = _block_at(buf, pos)
            if size is None:
                break
            block_data = _inflate(buf, pos, size, offset)
            data += block_data
            pos += size
            end = header_end(data, MERGE_OUT)
            if end is not None:
                break
        if end is not None:
            rest_data = data[end:]
            buf, offset = buf[pos:], offset + pos
            break
        buf, offset = buf[pos:], offset + pos
    writer = BgzfWriter(out, level)
    writer.write(new_header)
    writer.flush()
    if rest_data:
        writer.write(rest_data)
        writer.flush()
        check.data(rest_data)
    tail = b""
    while True:
        if buf:
            check.stream(buf, offset)
            writer.write_raw_block(buf)
            tail = buf[-len(EOF_BLOCK):] if len(buf) >= len(EOF_BLOCK) else (tail + buf)[-len(EOF_BLOCK):]
            offset += len(buf)
        buf = pipe.read(READ)
        if not buf:
            break
    if tail != EOF_BLOCK:
        raise FormatError("no BGZF EOF block at the end (cut short?)", path=MERGE_OUT, fmt="BAM", offset=offset)
    writer.close(write_eof=False)
    return writer.compressed_bytes


def _block_at(buf: bytes, pos: int) -> Optional[int]:
    if len(buf) - pos < 18:
        return None
    size = K.block_size(buf, pos)
    if size < 0:
        raise FormatError("not BGZF", path=MERGE_OUT, fmt="BAM", offset=pos)
    if size == 0 or pos + size > len(buf):
        return None
    return size


def _inflate(buf: bytes, pos: int, size: int, offset: int) -> bytes:
    try:
        return inflate_checked(buf, pos, size)
    except ValueError as exc:
        raise FormatError(str(exc), path=MERGE_OUT, fmt="BAM", offset=offset + pos) from None



__all__ = ["PG_ID", "cat_bam", "check_dictionary", "gather_bam", "gather_to_file", "header_bytes", "merge_bam",
           "reconcile", "run_tool", "sort_order", "tool_command"]
