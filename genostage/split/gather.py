"""Gather rules: the parts a scatter's children wrote, made into one verified output.

Rules (``KIND=HOW``, as ``genostage scatter --gather`` and ``genostage gather KIND`` name them):

``bam=merge``
    Per-part sorted BAMs merged by ``samtools merge`` (pysam's copy when pysam is importable,
    the ``samtools`` binary otherwise): coordinate or name order from the parts' ``@HD SO``,
    ``threads`` threads. The header is reconciled (below); the merged stream is checked block by
    block and counted as it is written, and must hold as many records as the parts.
    ``recompress``: samtools writes uncompressed blocks and genostage compresses them (ISA-L on
    ``threads`` threads): faster, larger output.
``bam=cat``
    Parts that are in order (a split's parts, chunk outputs of a plan) concatenated by block
    copy, as ``samtools cat``; parts sorted by coordinate must follow each other.
``vcf=concat``
    BGZF-compressed VCF (or BCF) parts of one call scattered by reference or region, as
    ``bcftools concat`` (no ``-a``): parts are put in order of their first record (by the
    header's ``##contig`` order) and must not overlap; the headers' contigs and samples must
    agree. The output header is the first part's, plus the ``##INFO``/``##FORMAT``/``##FILTER``
    (any ``##KEY=<ID=...>``) lines of later parts whose ID the first lacks, plus
    ``##genostage_gatherCommand``. Whole blocks are copied (CRC-checked), records counted. An
    index (``tbi`` or ``csi``) is made by ``bcftools index`` (pysam's or the binary) when asked.
    BCF parts must have identical header dictionaries (their records point into them).
``fastq=cat``
    FASTQ parts (plain, gzip or BGZF, all alike: concatenated members are valid) copied byte for
    byte, each validated record by record and counted (``genostage.split.fastq.count_records``).
``text=cat``
    Text parts concatenated; ``header`` says what a header is: ``auto`` (the default): the
    leading lines starting with ``#`` when the first part has them, else the first line when
    every part has the same one, else none; ``first``: as ``auto`` but later parts' headers may
    differ (they are dropped); ``none``; or a number N: the first N lines. A header is written
    once, from the first part; in ``auto`` and N modes every part's header must be the same as
    the first's (a difference is refused, naming the line). A part that does not end with a
    newline gets one; empty parts are skipped. Records are the lines after the header.

BAM header rule (both BAM rules): the first part's header, plus later parts' ``@RG`` lines
with new IDs, plus the gather's own ``@PG`` (``ID:genostage-gather``, with its command line);
later parts' ``@PG``/``@CO`` lines are dropped; a different reference dictionary or ``@HD SO``
is refused (``genostage.split.bam_gather``).

Every output is written under a temporary name and renamed when complete and verified
(:class:`~genostage.fsutil.AtomicFile`); a full disk is :class:`~genostage.errors.InsufficientSpace`.

Python API (the scatter calls these on local part files)::

    from genostage.split import gather
    res = gather.gather("bam=merge", ["p0.bam", "p1.bam"], "out.bam", threads=2)
    res.counts.primary, res.counts.records        # what was written
    res.part_counts                               # each part's counts, in the order given
    gather.gather("vcf=concat", parts, "calls.vcf.gz", index="tbi")
    gather.gather("bam=cat", parts, "all.bam", expect=1_000_000)  # RecordsNotConserved unless
                                                                   # 1,000,000 primary records
    gather.count("bam", "x.bam")      # Counts(records, primary); also "vcf", "fastq", "text"

``gather(rule, parts, dest, *, stores=None, threads=2, crc=True, command_line=None, index=None,
header="auto", engine="auto", level=6, part_counts=None, expect=None, recompress=False) -> GatherResult``;
:func:`gather_stream` writes to a binary file object instead (no index). ``expect`` is the
number of primary records (records for the other kinds) the output must hold, else
:class:`~genostage.errors.RecordsNotConserved` (exit 11) and nothing is written;
``part_counts`` (BAM merge) gives the parts' counts when the caller has them already.

Around the rules, for the command line and the scatter: :func:`expand_parts` (local and
``s3://`` globs, natural order), :func:`fetch_parts` (S3 parts downloaded, verified, into a
directory) and :func:`publish` (a local file uploaded, verified).
"""
from __future__ import annotations

import fnmatch
import glob
import gzip
import logging
import os
import re
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Sequence, Tuple, cast

from .. import __version__
from ..codec import blocks as K
from ..codec.bgzf import EOF_BLOCK, BgzfWriter
from ..errors import FormatError, NotFound, RecordsNotConserved, UsageError
from ..fsutil import AtomicFile, os_error, temp_name
from ..location import Location, parse
from ..store import Stores
from .bam_check import BlockCheck, Check, Counts, copy_checked, count_bam, inflate_checked
from .bam_gather import cat_bam, merge_bam, run_tool, tool_command

log = logging.getLogger("genostage.split.gather")

RULES: Dict[str, Tuple[str, ...]] = {"bam": ("merge", "cat"), "vcf": ("concat",), "fastq": ("cat",), "text": ("cat",)}
DEFAULT_HOW = {"bam": "cat", "vcf": "concat", "fastq": "cat", "text": "cat"}
INDEXES = ("tbi", "csi")
READ = 4 << 20
WILDCARDS = re.compile(r"[*?\[]")


@dataclass
class GatherResult:
    """What one gather wrote: ``counts`` of the output, ``part_counts`` of each part (in the order
    given), the bytes written and, for ``vcf=concat`` with an index, the index's path. ``bam=cat``
    with ``crc=False`` reads no block, so it counts nothing (``counts`` None, ``part_counts`` empty)."""

    rule: str
    path: str
    parts: List[str]
    counts: Optional[Counts]
    part_counts: List[Counts]
    bytes_written: int
    seconds: float = 0.0
    index: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return {"rule": self.rule, "path": self.path, "parts": self.parts,
                "counts": self.counts.to_json() if self.counts else None,
                "part_counts": [c.to_json() for c in self.part_counts], "bytes_written": self.bytes_written,
                "seconds": round(self.seconds, 3), "index": self.index, **self.extra}


def parse_rule(rule: str) -> Tuple[str, str]:
    """``"bam=merge"`` -> ``("bam", "merge")``; a kind alone takes its default (``bam`` is ``cat``)."""
    kind, _, how = rule.partition("=")
    kind, how = kind.strip().lower(), how.strip().lower()
    if kind not in RULES:
        raise UsageError(f"unknown gather rule {rule!r} (expected one of "
                         f"{', '.join(f'{k}={h}' for k, hs in RULES.items() for h in hs)})")
    how = how or DEFAULT_HOW[kind]
    if how not in RULES[kind]:
        raise UsageError(f"unknown gather rule {rule!r} ({kind} gathers by {' or '.join(RULES[kind])})")
    return kind, how


# -- the entry points ------------------------------------------------------------------
def gather(rule: str, parts: Sequence[str], dest: str, *, stores: Optional[Stores] = None, threads: int = 2,
           crc: bool = True, command_line: Optional[str] = None, index: Optional[str] = None, header: str = "auto",
           engine: str = "auto", level: int = 6, part_counts: Optional[Sequence[Counts]] = None,
           expect: Optional[int] = None, recompress: bool = False) -> GatherResult:
    """Gather ``parts`` by ``rule`` into the local file ``dest`` (complete and verified, or absent).

    ``parts`` are local paths (``bam=cat`` also reads ``s3://`` parts by ranged reads). See the
    module's docstring for the rules and the options."""
    kind, how = parse_rule(rule)
    if index is not None:
        if kind != "vcf":
            raise UsageError(f"an index is made for vcf=concat only, not {kind}={how}")
        if index not in INDEXES:
            raise UsageError(f"unknown index {index!r} (expected tbi or csi)")
    dest = os.path.abspath(dest)
    parent = os.path.dirname(dest)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, parent) from None
    started = time.monotonic()
    idx_path = None
    af = AtomicFile(dest)
    with af as fh:
        res = _run(kind, how, parts, cast(BinaryIO, fh), dest, stores, threads, crc, command_line, header, engine, level,
                   part_counts, expect, recompress)
        if index is not None:
            fh.flush()
            idx_path = f"{dest}.{index}"
            idx_tmp = temp_name(idx_path)
            try:
                run_tool(tool_command("bcftools", engine) + ["index", "-t" if index == "tbi" else "-c", "-o", idx_tmp,
                                                             af.tmp], f"bcftools index -{index[0]}")
            except BaseException:
                _unlink(idx_tmp)
                raise
    if idx_path is not None:
        try:
            os.replace(idx_tmp, idx_path)
        except OSError as exc:
            _unlink(idx_tmp)
            raise os_error(exc, idx_path) from None
    res.path, res.index, res.seconds = dest, idx_path, time.monotonic() - started
    return res


def gather_stream(rule: str, parts: Sequence[str], out: BinaryIO, *, stores: Optional[Stores] = None,
                  threads: int = 2, crc: bool = True, command_line: Optional[str] = None, header: str = "auto",
                  engine: str = "auto", level: int = 6, part_counts: Optional[Sequence[Counts]] = None,
                  expect: Optional[int] = None, recompress: bool = False) -> GatherResult:
    """:func:`gather` to a binary file object (stdout): not atomic, no index."""
    kind, how = parse_rule(rule)
    started = time.monotonic()
    res = _run(kind, how, parts, out, "-", stores, threads, crc, command_line, header, engine, level, part_counts,
               expect, recompress)
    res.path, res.seconds = "-", time.monotonic() - started
    return res


def _run(kind: str, how: str, parts: Sequence[str], out: BinaryIO, dest: str, stores: Optional[Stores], threads: int,
         crc: bool, command_line: Optional[str], header: str, engine: str, level: int,
         part_counts: Optional[Sequence[Counts]], expect: Optional[int], recompress: bool = False) -> GatherResult:
    if not parts:
        raise UsageError("gather needs at least one part")
    parts = [str(p) for p in parts]
    stores = stores or Stores()
    cl = command_line or default_command(kind, how, parts, dest)
    threads = max(1, threads)
    with ThreadPoolExecutor(threads) as pool:
        if kind == "bam" and how == "cat":
            if not crc and expect is not None:
                raise UsageError("counting the records inflates every block: an expected count needs the CRC check")
            stats = cat_bam(parts, out, stores, cl, Check(crc=crc, count=crc, pool=pool), level)
        elif kind == "bam":
            _local_only(parts, "bam=merge")
            stats = merge_bam(parts, out, cl, threads, level, engine, part_counts, pool, recompress)
        elif kind == "vcf":
            _local_only(parts, "vcf=concat")
            stats = concat_vcf(parts, out, cl, level, pool)
        elif kind == "fastq":
            _local_only(parts, "fastq=cat")
            stats = cat_fastq(parts, out, stores, dest)
        else:
            _local_only(parts, "text=cat")
            stats = cat_text(parts, out, header)
    counts: Optional[Counts] = stats.get("counts")
    if expect is not None and counts is not None and counts.primary != expect:
        what = "primary records" if kind == "bam" else "records"
        raise RecordsNotConserved(f"{kind}={how} wrote {counts.primary} {what}, {expect} expected "
                                  f"({'lost' if counts.primary < expect else 'doubled'}: "
                                  f"{abs(counts.primary - expect)})")
    extra = {k: v for k, v in stats.items() if k not in ("counts", "part_counts", "bytes_written", "parts")}
    return GatherResult(f"{kind}={how}", dest, parts, counts, list(stats.get("part_counts", [])), int(stats["bytes_written"]),
                        extra=extra)


def default_command(kind: str, how: str, parts: Sequence[str], dest: str) -> str:
    """The ``genostage gather`` command line that does what a library call does (for @PG/CL)."""
    flag = {("bam", "merge"): " --merge"}.get((kind, how), "")
    return f"genostage gather {kind}{flag} {' '.join(parts)} -o {dest}"


def _local_only(parts: Sequence[str], rule: str) -> None:
    for p in parts:
        if p.startswith("s3://"):
            raise UsageError(f"{rule} reads local parts: download {p} first (genostage gather does it)")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- counting --------------------------------------------------------------------------
def count(kind: str, path: str, stores: Optional[Stores] = None, threads: int = 2) -> Counts:
    """The records of one file: ``bam`` (records and primary), ``vcf`` (VCF/BCF records),
    ``fastq`` (records, validated) or ``text`` (lines)."""
    kind = kind.lower()
    if kind == "bam":
        return count_bam(path, stores, threads)
    if kind == "vcf":
        n = count_vcf(path)
    elif kind == "fastq":
        n = count_fastq(path, stores)
    elif kind == "text":
        n = count_lines(path)
    else:
        raise UsageError(f"unknown kind {kind!r} to count (expected bam, vcf, fastq or text)")
    return Counts(n, n)


def count_fastq(path: str, stores: Optional[Stores] = None) -> int:
    """FASTQ records of a file (plain, gzip or BGZF), every record validated; 0 for an empty file."""
    from .fastq import count_records

    if _empty_data(path):
        return 0
    return count_records(path, stores)


def count_vcf(path: str) -> int:
    """Records of a BGZF-compressed VCF or BCF (every block checked)."""
    part = read_vcf_part(path)
    counter = part.counter()
    counter(part.body_data[part.body_skip:])
    check = BlockCheck(path, counter, None, fmt=part.fmt)
    with open(path, "rb") as fh:
        copy_checked(fh.fileno(), part.raw_start, part.eof, lambda _b: None, check)
    check.finish()
    return counter.close()


def count_lines(path: str) -> int:
    n = 0
    last = b"\n"
    with open(path, "rb") as fh:
        while True:
            buf = fh.read(READ)
            if not buf:
                break
            n += buf.count(b"\n")
            last = buf[-1:]
    return n + (last != b"\n")


def _empty_data(path: str) -> bool:
    """True for a file holding nothing (0 bytes, or compressed members holding 0 bytes)."""
    size = os.path.getsize(path)
    if size == 0:
        return True
    if size > 4096:
        return False
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] != b"\x1f\x8b":
        return False
    try:
        return gzip.decompress(raw) == b""
    except (OSError, EOFError):
        return False


# -- vcf=concat ------------------------------------------------------------------------
@dataclass
class VcfPart:
    """Where a BGZF VCF/BCF part's header ends and its records start."""

    path: str
    fmt: str  # "VCF" or "BCF"
    lines: List[str]  # the "##" lines
    chrom_line: str  # the "#CHROM..." line
    body_block: int  # compressed offset of the block holding the first record byte
    body_block_size: int  # its size (0 when the records start at a block edge)
    body_data: bytes  # that block's data ("" when they start at a block edge)
    body_skip: int  # bytes of ``body_data`` that belong to the header
    eof: int  # compressed offset of the EOF block
    first: Optional[bytes] = None  # the start of the first record (at least its CHROM and POS)

    @property
    def raw_start(self) -> int:
        """Where the blocks to copy whole start."""
        return self.body_block + self.body_block_size

    @property
    def contigs(self) -> List[Tuple[str, Optional[str]]]:
        return [c for c in (_contig(line) for line in self.lines) if c is not None]

    def counter(self) -> "VcfCounter | BcfCounter":
        return BcfCounter(self.path) if self.fmt == "BCF" else VcfCounter(self.path)


def _contig(line: str) -> Optional[Tuple[str, Optional[str]]]:
    if not line.startswith("##contig=<"):
        return None
    fields = _structured(line)
    return (fields.get("ID", ""), fields.get("length"))


def _structured(line: str) -> Dict[str, str]:
    """``KEY=VALUE`` pairs of a ``##X=<...>`` line (quoted values kept whole)."""
    body = line[line.index("<") + 1:line.rindex(">")] if "<" in line and line.rstrip().endswith(">") else ""
    out: Dict[str, str] = {}
    for m in re.finditer(r'([A-Za-z_][A-Za-z0-9_.]*)=("(?:[^"\\]|\\.)*"|[^,]*)', body):
        out.setdefault(m.group(1), m.group(2))
    return out


def _id_key(line: str) -> Optional[Tuple[str, str]]:
    """``("INFO", "DP")`` for ``##INFO=<ID=DP,...>``; None for a line that is not ``##KEY=<ID=..>``."""
    m = re.match(r"##([A-Za-z_][A-Za-z0-9_]*)=<", line)
    if not m:
        return None
    ident = _structured(line).get("ID")
    return (m.group(1), ident) if ident else None


def read_vcf_part(path: str) -> VcfPart:
    """Read the header of a BGZF VCF/BCF (inflating, and checking, the blocks that hold it)."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        fd = fh.fileno()
        if size < len(EOF_BLOCK) or os.pread(fd, len(EOF_BLOCK), size - len(EOF_BLOCK)) != EOF_BLOCK:
            head = os.pread(fd, 18, 0)
            if len(head) < 18 or K.block_size(head, 0) <= 0:
                raise FormatError("not BGZF-compressed (compress it with bgzip)", path=path, fmt="VCF", offset=0)
            raise FormatError("no BGZF EOF block at the end (truncated file?)", path=path, fmt="VCF",
                              offset=max(0, size - len(EOF_BLOCK)))
        eof = size - len(EOF_BLOCK)
        data = b""
        pos = 0
        blocks: List[Tuple[int, int, int]] = []  # (offset, size, data start)
        fmt = ""
        end: Optional[int] = None
        while end is None:
            if pos >= eof:
                raise FormatError("the file ends inside the VCF header", path=path, fmt="VCF")
            block = os.pread(fd, 65536, pos)
            bsize = K.block_size(block, 0) if len(block) >= 18 else 0
            if bsize <= 0 or bsize > len(block):
                raise FormatError("not a BGZF block", path=path, fmt="VCF", offset=pos)
            try:
                chunk = inflate_checked(block, 0, bsize)
            except ValueError as exc:
                raise FormatError(str(exc), path=path, fmt="VCF", offset=pos) from None
            blocks.append((pos, bsize, len(data)))
            data += chunk
            pos += bsize
            if not fmt and len(data) >= 5:
                fmt = "BCF" if data[:3] == b"BCF" else "VCF"
                if fmt == "VCF" and not data.startswith(b"##fileformat=VCF"):
                    raise FormatError("not a VCF file (expected ##fileformat=VCF on its first line)", path=path,
                                      fmt="VCF", offset=0)
            if fmt:
                end = _header_end(data, fmt)
        text = data[9:end].split(b"\0", 1)[0] if fmt == "BCF" else data[:end]
        lines = text.decode("utf-8", "replace").splitlines()
        if not lines or not lines[-1].startswith("#CHROM"):
            raise FormatError("the header does not end with a #CHROM line", path=path, fmt=fmt)
        part = VcfPart(path, fmt, [ln for ln in lines[:-1] if ln.strip()], lines[-1], pos, 0, b"", 0, eof)
        ends = [d for _o, _s, d in blocks[1:]] + [len(data)]
        for (boff, bsize, dstart), dend in zip(blocks, ends):
            if dstart <= end < dend:  # the records start inside this block
                part.body_block, part.body_block_size = boff, bsize
                part.body_data, part.body_skip = data[dstart:dend], end - dstart
                break
        part.first = _first_record(fd, part, data[end:])
    return part


def _header_end(data: bytes, fmt: str) -> Optional[int]:
    if fmt == "BCF":
        if len(data) < 9:
            return None
        if data[:5] not in (b"BCF\x02\x01", b"BCF\x02\x02"):
            raise FormatError("not a BCF 2 file", fmt="BCF")
        (l_text,) = struct.unpack_from("<I", data, 5)
        return 9 + l_text if len(data) >= 9 + l_text else None
    at = data.find(b"\n#CHROM")
    if at < 0:
        return None
    nl = data.find(b"\n", at + 1)
    return nl + 1 if nl >= 0 else None


def _first_record(fd: int, part: VcfPart, after: bytes) -> Optional[bytes]:
    """The first bytes of the first record (enough for its CHROM and POS), or None without records."""
    want = 16 if part.fmt == "BCF" else 0
    data = after
    pos = part.raw_start
    while pos < part.eof and (len(data) < want if want else b"\n" not in data) and len(data) < (4 << 20):
        block = os.pread(fd, 65536, pos)
        bsize = K.block_size(block, 0) if len(block) >= 18 else 0
        if bsize <= 0 or bsize > len(block):
            raise FormatError("not a BGZF block", path=part.path, fmt=part.fmt, offset=pos)
        try:
            data += inflate_checked(block, 0, bsize)
        except ValueError as exc:
            raise FormatError(str(exc), path=part.path, fmt=part.fmt, offset=pos) from None
        pos += bsize
    if not data:
        return None
    return data[:4096]


class VcfCounter:
    """Counts VCF records (lines) in data fed in order; keeps the start of the last line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.records = 0
        self.tail = b""  # holds the start of the last complete line

    def __call__(self, data: bytes) -> None:
        if not data:
            return
        self.records += data.count(b"\n")
        cut = data.rfind(b"\n", 0, len(data) - 1)
        if cut >= 0:
            self.tail = data[cut + 1:]
        elif not self.tail or self.tail.endswith(b"\n"):
            self.tail = data
        else:  # a line longer than what came so far
            self.tail += data

    def last(self) -> Optional[bytes]:
        """The last line (its start when it is not complete yet)."""
        return self.tail or None

    def close(self) -> int:
        if self.tail and not self.tail.endswith(b"\n"):
            raise FormatError("the last record has no newline at its end", path=self.path, fmt="VCF")
        return self.records


class BcfCounter:
    """Counts BCF records (``l_shared``, ``l_indiv`` and their bytes) in data fed in order."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.records = 0
        self._carry = b""
        self._last: Optional[bytes] = None

    def __call__(self, data: bytes) -> None:
        buf = self._carry + data if self._carry else data
        pos = 0
        n = len(buf)
        unpack = struct.unpack_from
        last = -1
        while pos + 8 <= n:
            l_shared, l_indiv = unpack("<II", buf, pos)
            nxt = pos + 8 + l_shared + l_indiv
            if nxt > n:
                break
            last = pos
            pos = nxt
            self.records += 1
        if last >= 0:
            self._last = bytes(buf[last:last + 16])
        self._carry = bytes(buf[pos:])

    def last(self) -> Optional[bytes]:
        return self._last

    def close(self) -> int:
        if self._carry:
            raise FormatError(f"the data ends inside a BCF record ({len(self._carry)} bytes of it)", path=self.path,
                              fmt="BCF")
        return self.records


def _record_key(part: VcfPart, record: Optional[bytes], contigs: Dict[str, int]) -> Optional[Tuple[int, int]]:
    """(contig index, POS) of a record's start."""
    if record is None:
        return None
    if part.fmt == "BCF":
        chrom, pos = struct.unpack_from("<ii", record, 8)
        return chrom, pos + 1
    fields = record.split(b"\t", 2)
    if len(fields) < 3:
        raise FormatError("a record with fewer than 3 columns", path=part.path, fmt="VCF")
    name = fields[0].decode("utf-8", "replace")
    if name not in contigs:
        raise FormatError(f"record on contig {name!r}, which the header's ##contig lines do not list", path=part.path,
                          fmt="VCF")
    try:
        return contigs[name], int(fields[1])
    except ValueError:
        raise FormatError(f"POS {fields[1]!r} is not a number", path=part.path, fmt="VCF") from None


def _key_text(key: Optional[Tuple[int, int]], names: List[str]) -> str:
    if key is None:
        return "nothing"
    return f"{names[key[0]] if 0 <= key[0] < len(names) else key[0]}:{key[1]}"


def _check_vcf_headers(parts: List[VcfPart]) -> None:
    first = parts[0]
    for p in parts[1:]:
        if p.fmt != first.fmt:
            raise FormatError(f"a {p.fmt} part among {first.fmt} parts ({first.path})", path=p.path, fmt=p.fmt)
        a, b = first.contigs, p.contigs
        if a != b:
            for i, (x, y) in enumerate(zip(a, b)):
                if x != y:
                    raise FormatError(f"##contig lines differ from {first.path}'s: contig {i + 1} is {y[0]} "
                                      f"(length {y[1]}) here, {x[0]} (length {x[1]}) there", path=p.path, fmt=p.fmt)
            raise FormatError(f"##contig lines differ from {first.path}'s: {len(b)} contigs here, {len(a)} there",
                              path=p.path, fmt=p.fmt)
        if p.chrom_line != first.chrom_line:
            raise FormatError(f"the #CHROM line (samples) differs from {first.path}'s", path=p.path, fmt=p.fmt)
        if p.fmt == "BCF" and _dictionary(p) != _dictionary(first):
            raise FormatError(f"BCF header dictionary (FILTER/INFO/FORMAT IDs in order) differs from {first.path}'s; "
                              f"records of such parts cannot be copied as they are (bcftools concat re-encodes them)",
                              path=p.path, fmt="BCF")


def _dictionary(part: VcfPart) -> List[Tuple[str, str]]:
    keys = [_id_key(line) for line in part.lines]
    return [(k, i) for k, i in (x for x in keys if x) if k in ("FILTER", "INFO", "FORMAT", "contig")] + \
        [("IDX", _structured(line).get("IDX", "")) for line in part.lines if "IDX=" in line]


def vcf_header(parts: List[VcfPart], command_line: str) -> bytes:
    """The output header (see the module's rule), encoded as the parts are (VCF text or BCF)."""
    first = parts[0]
    lines = list(first.lines)
    seen = {k for k in (_id_key(line) for line in lines) if k}
    for p in parts[1:]:
        for line in p.lines:
            k = _id_key(line)
            if k and k not in seen:
                seen.add(k)
                lines.append(line)
    lines.append(f"##genostage_gatherVersion={__version__}")
    lines.append(f"##genostage_gatherCommand={' '.join(command_line.split())}; Date={time.strftime('%c')}")
    text = ("\n".join(lines + [first.chrom_line]) + "\n").encode()
    if first.fmt == "BCF":
        return b"BCF\x02\x02" + struct.pack("<I", len(text) + 1) + text + b"\0"
    return text


def concat_vcf(paths: Sequence[str], out: BinaryIO, command_line: str, level: int = 6,
               pool: Optional[Any] = None) -> Dict[str, Any]:
    """Concatenate BGZF VCF/BCF parts in region order (see the module's rule)."""
    parts = [read_vcf_part(p) for p in paths]
    _check_vcf_headers(parts)
    names = [c[0] for c in parts[0].contigs]
    contigs = {n: i for i, n in enumerate(names)}
    keys = [_record_key(p, p.first, contigs) for p in parts]
    if parts[0].fmt == "VCF" and not contigs:
        order = list(range(len(parts)))  # no ##contig lines: the order given
    else:
        order = sorted(range(len(parts)), key=lambda i: (keys[i] is None, keys[i] or (0, 0)))
    if order != sorted(order):
        log.info("vcf=concat: parts put in order of their first record")
    writer = BgzfWriter(out, level)
    writer.write(vcf_header(parts, command_line))
    writer.flush()
    counts: Dict[int, Counts] = {}
    last: Optional[Tuple[int, int]] = None
    last_path = ""
    for i in order:
        part = parts[i]
        counter = part.counter()
        check = BlockCheck(part.path, counter, pool, fmt=part.fmt)
        body = part.body_data[part.body_skip:]
        if body:
            writer.write(body)
            writer.flush()
            check.data(body)
        with open(part.path, "rb") as fh:
            copy_checked(fh.fileno(), part.raw_start, part.eof, writer.write_raw_block, check)  # type: ignore[arg-type]
        check.finish()
        n = counter.close()
        counts[i] = Counts(n, n)
        if n and contigs:
            first_key = keys[i]
            if last is not None and first_key is not None and first_key < last:
                raise FormatError(f"parts overlap or are out of order: this part starts at "
                                  f"{_key_text(first_key, names)}, {last_path} ends at {_key_text(last, names)} "
                                  f"(bcftools concat -a merges overlapping parts)", path=part.path, fmt=part.fmt)
            last, last_path = _record_key(part, counter.last(), contigs), part.path
    writer.close()
    part_counts = [counts[i] for i in range(len(parts))]
    return {"counts": sum(part_counts, Counts()), "part_counts": part_counts, "bytes_written": writer.compressed_bytes,
            "order": [paths[i] for i in order]}


# -- fastq=cat -------------------------------------------------------------------------
def _compression(path: str) -> str:
    from ..codec.compress import detect

    with open(path, "rb") as fh:
        head = fh.read(64)
    return detect(head)


def cat_fastq(paths: Sequence[str], out: BinaryIO, stores: Stores, dest: str = "-") -> Dict[str, Any]:
    """Concatenate FASTQ parts byte for byte after validating and counting each."""
    kinds = {p: _compression(p) for p in paths if not _empty_data(p)}
    formats = set(kinds.values())
    if len(formats) > 1:
        first = next(iter(kinds))
        other = next(p for p, k in kinds.items() if k != kinds[first])
        raise FormatError(f"{kinds[other]} among {kinds[first]} parts ({first}): parts must be compressed alike",
                          path=other, fmt="FASTQ")
    fmt = formats.pop() if formats else "plain"
    if dest != "-" and kinds:
        gz = dest.endswith((".gz", ".bgz", ".bgzf"))
        if gz != (fmt != "plain"):
            what = "plain (not compressed)" if fmt == "plain" else ("BGZF" if fmt == "bgzf" else "gzip") + "-compressed"
            raise UsageError(f"{dest}: the parts are {what}; name the output {'without' if fmt == 'plain' else 'with'} "
                             f"a .gz suffix")
    part_counts = []
    written = 0
    for p in paths:
        n = count_fastq(p, stores)
        part_counts.append(Counts(n, n))
        if p in kinds:
            written += _copy_file(p, out)
    return {"counts": sum(part_counts, Counts()), "part_counts": part_counts, "bytes_written": written,
            "compression": fmt}


def _copy_file(path: str, out: BinaryIO) -> int:
    n = 0
    with open(path, "rb") as fh:
        while True:
            buf = fh.read(READ)
            if not buf:
                return n
            out.write(buf)
            n += len(buf)


# -- text=cat --------------------------------------------------------------------------
def _header_lines(fh: BinaryIO, mode: str) -> List[bytes]:
    """The header lines at the start of ``fh`` (left positioned after them)."""
    lines: List[bytes] = []
    if mode == "none":
        return lines
    if mode.isdigit():
        for _ in range(int(mode)):
            line = fh.readline()
            if not line:
                break
            lines.append(line)
        return lines
    if mode == "first-line":
        line = fh.readline()
        return [line] if line else []
    while True:  # "#"
        at = fh.tell()
        line = fh.readline()
        if not line or not line.startswith(b"#"):
            fh.seek(at)
            return lines
        lines.append(line)


def _norm(line: bytes) -> bytes:
    return line if line.endswith(b"\n") else line + b"\n"


def cat_text(paths: Sequence[str], out: BinaryIO, header: str = "auto") -> Dict[str, Any]:
    """Concatenate text parts, a header shared by all parts written once (see the module's rule)."""
    if header not in ("auto", "first", "none") and not header.isdigit():
        raise UsageError(f"--header: expected auto, first, none or a number of lines (got {header!r})")
    live = [p for p in paths if os.path.getsize(p) > 0]
    for p in live:
        with open(p, "rb") as fh:
            if fh.read(2) == b"\x1f\x8b":
                raise FormatError("gzip-compressed, not text (gather compressed FASTQ with fastq=cat)", path=p)
    mode = header
    if header in ("auto", "first"):
        mode = "hash" if live and _first_line(live[0]).startswith(b"#") else "first-line"
        if mode == "first-line" and (len(live) < 2 or len({_first_line(p) for p in live}) > 1):
            mode = "none"
    strict = header != "first"
    head: Optional[List[bytes]] = None
    head_path = ""
    part_counts: List[Counts] = []
    written = 0
    for p in paths:
        if p not in live:
            part_counts.append(Counts())
            continue
        with open(p, "rb") as fh:
            lines = _header_lines(fh, "#" if mode == "hash" else mode)
            if head is None:
                head, head_path = lines, p
                for line in head:
                    out.write(_norm(line))
                    written += len(_norm(line))
            elif strict and [_norm(x) for x in lines] != [_norm(x) for x in head]:
                diff = next((j for j, (x, y) in enumerate(zip(lines, head)) if _norm(x) != _norm(y)),
                            min(len(lines), len(head)))
                got = lines[diff].rstrip(b"\n").decode("utf-8", "replace") if diff < len(lines) else "(no line)"
                raise FormatError(f"header differs from {head_path}'s at its line {diff + 1}: {got!r}; "
                                  f"--header first keeps the first part's header, --header none keeps every line",
                                  path=p, fmt="text", line=diff)
            n, size = _copy_lines(fh, out)
        part_counts.append(Counts(n, n))
        written += size
    return {"counts": sum(part_counts, Counts()), "part_counts": part_counts, "bytes_written": written,
            "header_lines": len(head or [])}


def _first_line(path: str) -> bytes:
    with open(path, "rb") as fh:
        return _norm(fh.readline())


def _copy_lines(fh: BinaryIO, out: BinaryIO) -> Tuple[int, int]:
    """Copy the rest of ``fh`` to ``out``, ending it with a newline; (lines, bytes written)."""
    n = size = 0
    last = b"\n"
    while True:
        buf = fh.read(READ)
        if not buf:
            break
        out.write(buf)
        n += buf.count(b"\n")
        size += len(buf)
        last = buf[-1:]
    if last != b"\n":
        out.write(b"\n")
        n += 1
        size += 1
    return n, size


# -- parts on S3: globs, downloads, uploads -------------------------------------------
def natural_key(text: str) -> List[Any]:
    """Sort key putting ``part-9`` before ``part-10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def expand_parts(patterns: Sequence[str], stores: Stores) -> List[str]:
    """Parts named by ``patterns``: local paths or ``s3://`` URIs, each maybe a glob (``*``, ``?``,
    ``[...]``, matched segment by segment, like a shell); a glob's matches in natural order.
    NotFound (exit 3) for a glob that matches nothing."""
    out: List[str] = []
    for pattern in patterns:
        if pattern.startswith("s3://"):
            out.extend(_s3_glob(pattern, stores) if WILDCARDS.search(parse(pattern).key) else [pattern])
        elif WILDCARDS.search(pattern) and not os.path.exists(pattern):
            found = sorted((p for p in glob.glob(pattern) if os.path.isfile(p)), key=natural_key)
            if not found:
                raise NotFound(f"{pattern}: no file matches")
            out.extend(found)
        else:
            out.append(pattern)
    return out


def _s3_glob(pattern: str, stores: Stores) -> List[str]:
    loc = parse(pattern)
    m = WILDCARDS.search(loc.key)
    assert m is not None
    prefix = loc.key[:loc.key.rfind("/", 0, m.start()) + 1]
    want = loc.key.split("/")
    found = []
    for info in stores.for_location(loc).list(Location("s3", loc.bucket, prefix)):
        key = info.location.key
        got = key.split("/")
        if len(got) == len(want) and all(fnmatch.fnmatchcase(g, w) for g, w in zip(got, want)):
            found.append(f"s3://{loc.bucket}/{key}")
    if not found:
        raise NotFound(f"{pattern}: no object matches")
    return sorted(found, key=natural_key)


def fetch_parts(parts: Sequence[str], directory: str, stores: Stores, progress: bool = False,
                cancel: Optional[threading.Event] = None) -> List[str]:
    """Local paths for ``parts``: ``s3://`` parts downloaded (verified, in parallel) into
    ``directory``, local parts as they are. ``cancel`` stops the downloads (their files removed)."""
    from ..transfer import Transfer

    items = []
    local: List[str] = []
    for i, p in enumerate(parts):
        loc = parse(p)
        if loc.is_s3:
            path = os.path.join(directory, f"{i:05d}-{loc.name}")
            items.append((stores.for_location(loc).stat(loc), parse(path)))
            local.append(path)
        else:
            if not os.path.isfile(loc.path):
                raise NotFound(f"{p} does not exist" if not os.path.exists(loc.path) else f"{p} is not a file")
            local.append(loc.path)
    if items:
        Transfer(stores, stores.config, cancel=cancel, show_progress=progress).copy_all(items, label="gather: fetch parts")
    return local


def publish(paths: Sequence[str], dests: Sequence[str], stores: Stores, progress: bool = False,
            cancel: Optional[threading.Event] = None) -> None:
    """Upload local files to ``s3://`` destinations, verified; when any fails (or ``cancel`` stops
    it), every destination of the call is removed (none is left half-published), then the error
    is raised."""
    from ..transfer import Transfer

    items = [(stores.local.stat(parse(p)), parse(d)) for p, d in zip(paths, dests)]
    try:
        Transfer(stores, stores.config, cancel=cancel, show_progress=progress).copy_all(items, label="publish")
    except BaseException:
        for _info, loc in items:
            try:
                stores.for_location(loc).delete(loc)
            except Exception as exc:  # the upload error matters more
                log.warning("could not remove %s after the failed upload: %s", loc, exc)
        raise


def iter_rules() -> Iterator[str]:
    for kind, hows in RULES.items():
        for how in hows:
            yield f"{kind}={how}"


__all__ = ["Counts", "GatherResult", "RULES", "VcfPart", "cat_fastq", "cat_text", "concat_vcf", "count", "count_fastq",
           "count_lines", "count_vcf", "default_command", "expand_parts", "fetch_parts", "gather", "gather_stream",
           "iter_rules", "natural_key", "parse_rule", "publish", "read_vcf_part"]
