"""The BGZF/BAM kernel: block walking, single-block inflate, record boundaries and validity checks."""
from __future__ import annotations

import gzip
import struct
from array import array
from pathlib import Path
from typing import List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genostage.codec import _bgzf as K
from genostage.split import _bam as R
from genostage.codec import bgzf
from genostage.errors import FormatError


def _record(name: bytes, ref: int, pos: int, seq_len: int, cigar: List[Tuple[int, int]], next_ref: int = -1,
            next_pos: int = -1, aux: bytes = b"") -> bytes:
    l_name = len(name) + 1
    body = struct.pack("<iiBBHHHiiii", ref, pos, l_name, 60, 4680, len(cigar), 0, seq_len, next_ref, next_pos, 0)
    body += name + b"\0" + b"".join(struct.pack("<I", n << 4 | op) for op, n in cigar)
    body += b"\x11" * ((seq_len + 1) // 2) + b"\x1e" * seq_len + aux
    return struct.pack("<i", len(body)) + body


LENS = array("q", [10_000, 5_000])


def _records(n: int) -> Tuple[bytes, List[int]]:
    out, starts, pos = [], [], 0
    for i in range(n):
        rec = _record(b"read%d" % i, i % 2, 10 * i, 20 + i % 7, [(0, 20 + i % 7)], aux=b"NMi\x01" * (i % 3))
        starts.append(pos)
        out.append(rec)
        pos += len(rec)
    return b"".join(out), starts


def _bgzf(data: bytes, step: int) -> bytes:
    return b"".join(bgzf.compress_block(data[i:i + step]) for i in range(0, len(data), step)) + bgzf.EOF_BLOCK


def test_walk_blocks_and_find_block() -> None:
    data = bytes(range(256)) * 700
    raw = _bgzf(data, 10_000)
    nxt, count, status, offsets = K.walk_blocks(raw, 0, True)
    assert (nxt, status, count) == (len(raw), 0, 19)
    assert offsets is not None and offsets[0] == 0
    assert b"".join(K.inflate(raw, o) for o in offsets) == data
    for start in range(0, offsets[3] + 1):  # every start offset finds the next block
        want = min(o for o in offsets if o >= start)
        assert K.find_block(raw, start) == want
    assert K.walk_blocks(raw[:-5])[0] == offsets[-1]  # stops before the incomplete EOF block
    assert K.walk_blocks(raw[:offsets[2]] + b"garbage" * 10)[2] == -1
    assert K.find_block(raw[-28:], 0, True) == 0 and K.find_block(raw[-28:], 0, False) == -1
    assert K.block_size(raw, 0) == offsets[1] and K.block_size(b"\x1f\x8b", 0) == 0 and K.block_size(b"PK\x03\x04", 0) == -1


def test_inflate_checks_crc_and_length() -> None:
    block = bytearray(bgzf.compress_block(b"hello world" * 100))
    assert K.inflate(bytes(block)) == b"hello world" * 100
    bad = bytearray(block)
    bad[-8] ^= 1
    with pytest.raises(ValueError, match="CRC32"):
        K.inflate(bytes(bad))
    bad = bytearray(block)
    bad[-4] ^= 1
    with pytest.raises(ValueError, match="length|ISIZE"):
        K.inflate(bytes(bad))
    with pytest.raises(ValueError, match="truncated"):
        K.inflate(bytes(block[:-1]))
    with pytest.raises(FormatError, match="CRC32"):
        bad = bytearray(block)
        bad[-8] ^= 1
        bgzf.inflate_block(bytes(bad), path="x.bam")


def test_find_record_from_every_offset() -> None:
    data, starts = _records(200)
    for u in range(0, starts[60]):
        want = min(s for s in starts if s >= u)
        assert R.find_record(data, u, LENS, True) == (want, 1), u
    # at the end of the file: the last records chain to the end exactly
    assert R.find_record(data, starts[-1], LENS, True) == (starts[-1], 1)
    # not at the end of the file: the last record alone cannot be decided
    assert R.find_record(data, starts[-1], LENS, False)[1] == -1
    assert R.find_record(data, len(data), LENS, True) == (len(data), 0)


@pytest.mark.parametrize("field,value", [
    ("ref", 2), ("ref", -2), ("pos", 10_001), ("next_ref", 5), ("name", b"bad name"), ("name", b"@x"),
    ("cigar_op", 9), ("cigar_len", 19), ("block_size", 10),
])
def test_check_record_rejects(field: str, value) -> None:  # type: ignore[no-untyped-def]
    good = _record(b"r1", 0, 100, 20, [(0, 20)])
    assert R.check_record(good, 0, LENS) == len(good)
    kw = dict(name=b"r1", ref=0, pos=100, seq_len=20, cigar=[(0, 20)])
    if field in ("ref", "pos", "name"):
        kw[field] = value
    elif field == "next_ref":
        kw["next_ref"] = value
    elif field == "cigar_op":
        kw["cigar"] = [(value, 20)]
    elif field == "cigar_len":
        kw["cigar"] = [(0, value)]
    rec = _record(**kw)  # type: ignore[arg-type]
    if field == "block_size":
        rec = struct.pack("<i", value) + rec[4:]
    assert R.check_record(rec, 0, LENS) == 0
    assert R.check_record(good[:30], 0, LENS) == -1


def test_unmapped_records_need_minus_one() -> None:
    assert R.check_record(_record(b"u", -1, -1, 5, []), 0, LENS) > 0
    assert R.check_record(_record(b"u", -1, 7, 5, []), 0, LENS) == 0


def test_walk_records_and_first_at_or_after() -> None:
    data, starts = _records(50)
    nxt, count, got = R.walk_records(data, 0, True)
    assert (nxt, count, got) == (len(data), 50, starts)
    assert R.walk_records(data[:-3], 0)[1] == 50  # the last record's length field is still whole
    assert R.walk_records(data[:starts[-1] + 2], 0)[1] == 49
    # records alternate refs 0/1 (not sorted); the first with (ref, pos) >= (1, 0) is the second
    assert R.first_at_or_after(data, 0, 1, 0) == (starts[1], 1)
    assert R.first_at_or_after(data, 0, 0, 0) == (0, 1)
    assert R.first_at_or_after(data[:starts[3]], starts[2], 5, 0) == (starts[3], -1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(0, 2000))
def test_kernel_never_reads_out_of_bounds(buf: bytes, start: int) -> None:
    u, status = R.find_record(buf, start, LENS, False)
    assert status in (-1, 0, 1) and (u >= min(start, len(buf)))
    nxt, _count, st_, _ = K.walk_blocks(buf, min(start, len(buf)))
    assert st_ in (0, -1) and nxt <= len(buf)
    assert -1 <= K.find_block(buf, start) < max(1, len(buf))


def test_bgzf_inflate_block_uses_kernel_errors(tmp_path: Path) -> None:
    raw = _bgzf(b"x" * 100_000, 40_000)
    assert gzip.decompress(raw) == b"x" * 100_000
    with pytest.raises(FormatError, match="truncated"):
        bgzf.inflate_block(raw[:30], path="f.bam", offset=5)


def test_walk_blocks_fd(tmp_path: Path) -> None:
    raw = _bgzf(bytes(range(256)) * 500, 7_000)
    path = tmp_path / "x.bgzf"
    path.write_bytes(raw)
    offsets = K.walk_blocks(raw, 0, True)[3]
    assert offsets is not None
    with open(path, "rb") as fh:
        assert K.walk_blocks_fd(fh.fileno(), 0, len(raw)) == (len(raw), len(offsets), 0)
        assert K.walk_blocks_fd(fh.fileno(), offsets[2], offsets[5]) == (offsets[5], 3, 0)
        assert K.walk_blocks_fd(fh.fileno(), offsets[2], offsets[5] - 1) == (offsets[4], 2, 0)
        assert K.walk_blocks_fd(fh.fileno(), offsets[2] + 1, offsets[5])[2] == -1
