"""Streaming FASTQ splitting: round trips, balance, bad input, paired and interleaved input."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genostage.codec import bgzf
from genostage.codec import compress as C
from genostage.cli import main
from genostage.errors import FormatError, UsageError
from genostage.split import fastq as F

from .fastq_util import fastq, pair, records


def write(path: Path, data: bytes, fmt: str = "plain") -> str:
    if fmt == "gzip":
        data = gzip.compress(data, 6)
    elif fmt == "bgzf":
        out = bytearray()
        for i in range(0, len(data), 1000):  # small blocks: chunk cuts inside blocks
            out += bgzf.compress_block(data[i:i + 1000])
        data = bytes(out + bgzf.EOF_BLOCK)
    path.write_bytes(data)
    return str(path)


def read_any(path: str) -> bytes:
    with open(path, "rb") as fh:
        raw = fh.read()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def chunks_of(out: Path) -> List[str]:
    return sorted(str(p) for p in out.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("fmt", ["plain", "gzip", "bgzf"])
@pytest.mark.parametrize("compress", ["none", "gzip", "bgzf"])
def test_round_trip_formats(tmp_path: Path, fmt: str, compress: str) -> None:
    data = fastq(300, seed=3)
    src = write(tmp_path / "in.fq", data, fmt)
    summary = F.split_fastq([src], str(tmp_path / "out"), parts=7, compress=compress, threads=2)
    files = chunks_of(tmp_path / "out")
    assert len(files) == 7 and [c.records for c in summary.chunks] == [43] * 6 + [42]
    assert b"".join(read_any(f) for f in files) == data
    if compress == "bgzf":
        for f in files:
            with open(f, "rb") as fh:
                blocks = list(bgzf.iter_blocks(fh, f))
            assert blocks[-1][1] == bgzf.EOF_BLOCK


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 120), parts=st.integers(1, 9), max_len=st.integers(1, 300),
       fmt=st.sampled_from(["plain", "gzip", "bgzf"]), seed=st.integers(0, 1000))
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, n: int, parts: int, max_len: int,
                             fmt: str, seed: int) -> None:
    tmp = tmp_path_factory.mktemp("rt")
    data = fastq(n, seed=seed, max_len=max_len)
    src = write(tmp / "in.fq", data, fmt)
    summary = F.split_fastq([src], str(tmp / "out"), parts=parts, compress="none")
    files = chunks_of(tmp / "out")
    assert b"".join(read_any(f) for f in files) == data
    counts = [c.records for c in summary.chunks]
    assert len(counts) == parts and sum(counts) == n
    assert max(counts) - min(counts) <= 1  # small inputs are counted: exact balance
    if n >= parts:
        assert min(counts) >= 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 80), per=st.integers(1, 30), rule=st.sampled_from(["records", "bases", "nbytes"]),
       seed=st.integers(0, 1000))
def test_size_rules(tmp_path_factory: pytest.TempPathFactory, n: int, per: int, rule: str, seed: int) -> None:
    tmp = tmp_path_factory.mktemp("rule")
    recs = records(n, seed=seed)
    src = write(tmp / "in.fq", b"".join(recs))
    limit = {"records": per, "bases": per * 20, "nbytes": per * 50}[rule]
    chunks = list(F.iter_chunks([src], **{rule: limit}))
    assert b"".join(c.data[0] for c in chunks) == b"".join(recs)
    for c in chunks[:-1]:  # every chunk but the last reached the limit with its last record, not before
        value = {"records": c.records, "bases": c.bases, "nbytes": len(c.data[0])}[rule]
        assert value >= limit
    assert all(c.records >= 1 for c in chunks)


@pytest.mark.parametrize("size", list(range(1, 21)) + [64, 1000])
def test_any_read_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    monkeypatch.setattr(C, "READ_SIZE", size)
    data = fastq(25, seed=size, crlf=size % 2 == 0)
    src = write(tmp_path / "in.fq", data)
    chunks = list(F.iter_chunks([src], records=4))
    assert b"".join(c.data[0] for c in chunks) == data
    assert [c.records for c in chunks] == [4] * 6 + [1]


SMALL = fastq(4, seed=7, min_len=3, max_len=6)


def expected_line(prefix: bytes) -> "int | None":
    """The 0-based line a truncated prefix must be reported at (None: valid)."""
    ends = {i + 1 for i, c in enumerate(SMALL) if c == 10}
    record_ends = sorted(ends)[3::4]
    if len(prefix) in record_ends:
        return None
    n_lines = prefix.count(b"\n") + (0 if prefix.endswith(b"\n") else 1)
    if n_lines % 4 == 0 and not prefix.endswith(b"\n"):
        if len(prefix) + 1 in record_ends:  # the quality line only lacks its newline: valid
            return None
        return n_lines - 1  # quality shorter than the sequence
    return n_lines


@pytest.mark.parametrize("cut", range(len(SMALL)))
def test_every_truncated_prefix(tmp_path: Path, cut: int) -> None:
    prefix = SMALL[:cut]
    src = write(tmp_path / "trunc.fq", prefix)
    want = expected_line(prefix)
    if cut == 0:
        want = 0
    if want is None:
        chunks = list(F.iter_chunks([src], parts=2))
        assert b"".join(c.data[0] for c in chunks).rstrip(b"\n") == prefix.rstrip(b"\n")
        return
    with pytest.raises(FormatError) as info:
        F.split_fastq([src], str(tmp_path / "out"), parts=2)
    assert info.value.line == want, (prefix, str(info.value))
    assert f"trunc.fq at line {want + 1}:" in str(info.value)
    assert chunks_of(tmp_path / "out") == []


@pytest.mark.parametrize("cut", [10, 100, 1000, 3000])
def test_truncated_gzip_names_a_line(tmp_path: Path, cut: int) -> None:
    data = fastq(200, seed=1)
    raw = gzip.compress(data)
    src = tmp_path / "reads.fq.gz"
    src.write_bytes(raw[:cut])
    with pytest.raises(FormatError) as info:
        F.split_fastq([str(src)], str(tmp_path / "out"), records=10)
    assert "reads.fq.gz at line" in str(info.value)
    assert "truncated gzip" in str(info.value) or "ends inside" in str(info.value)
    assert chunks_of(tmp_path / "out") == []


@pytest.mark.parametrize("data, message, line", [
    (b"", "empty", 1),
    (b"\x00\x01\x02garbage\xff" * 100, "expected '@'", 1),
    (b"@a\nACGT\n-\nIIII\n", "expected '+'", 3),
    (b"@a\nACGT\n+\nIIII\n@b\nACGT\n+\nIII\n", "lengths differ", 8),
])
def test_bad_input(tmp_path: Path, data: bytes, message: str, line: int) -> None:
    src = write(tmp_path / "bad.fq", data)
    with pytest.raises(FormatError) as info:
        F.split_fastq([src], str(tmp_path / "out"), records=1)
    assert message in str(info.value) and f"bad.fq at line {line}:" in str(info.value)
    assert chunks_of(tmp_path / "out") == []


def test_garbage_without_newlines_is_refused_with_bounded_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(F, "MAX_RECORD", 1 << 16)
    src = write(tmp_path / "bin.fq", b"@" + os.urandom(1 << 18).replace(b"\n", b"x"))
    with pytest.raises(FormatError, match="no complete FASTQ record"):
        F.split_fastq([src], str(tmp_path / "out"), records=1)


def test_failure_removes_completed_chunks(tmp_path: Path) -> None:
    data = fastq(50, seed=2) + b"@bad\nAC\n+\nI\n"
    src = write(tmp_path / "late.fq", data)
    with pytest.raises(FormatError, match="line 204"):
        F.split_fastq([src], str(tmp_path / "out"), records=5)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("fmt", ["plain", "gzip", "bgzf"])
def test_paired(tmp_path: Path, fmt: str) -> None:
    r1, r2 = pair(101, seed=4)
    a = write(tmp_path / "s_R1.fq", r1, fmt)
    b = write(tmp_path / "s_R2.fq", r2, fmt)
    summary = F.split_fastq([a, b], str(tmp_path / "out"), parts=4, compress="gzip")
    files = chunks_of(tmp_path / "out")
    assert [os.path.basename(f) for f in files[:2]] == ["s.part-0000.R1.fastq.gz", "s.part-0000.R2.fastq.gz"]
    assert b"".join(read_any(f) for f in files if ".R1." in f) == r1
    assert b"".join(read_any(f) for f in files if ".R2." in f) == r2
    assert [c.records for c in summary.chunks] == [26, 25, 25, 25]


def test_paired_mismatch_names_both_files_and_record(tmp_path: Path) -> None:
    r1 = fastq(30, seed=5, mate=1)
    r2 = fastq(30, seed=6, mate=2).replace(b"@read17/2", b"@read99/2")
    a = write(tmp_path / "x_1.fq", r1)
    b = write(tmp_path / "x_2.fq", r2)
    with pytest.raises(FormatError) as info:
        F.split_fastq([a, b], str(tmp_path / "out"), records=7)
    msg = str(info.value)
    assert "x_1.fq" in msg and "x_2.fq" in msg and "record 18" in msg and "line 69" in msg
    assert chunks_of(tmp_path / "out") == []


@pytest.mark.parametrize("extra", ["r1", "r2"])
def test_paired_different_counts(tmp_path: Path, extra: str) -> None:
    r1, r2 = pair(20, seed=8)
    more = fastq(21, seed=8, mate=1 if extra == "r1" else 2)
    a = write(tmp_path / "a.fq", more if extra == "r1" else r1)
    b = write(tmp_path / "b.fq", more if extra == "r2" else r2)
    with pytest.raises(FormatError, match="fewer records than R1" if extra == "r1" else "more records than R1"):
        F.split_fastq([a, b], str(tmp_path / "out"), records=6)


def test_interleaved_keeps_pairs(tmp_path: Path) -> None:
    r1, r2 = pair(31, seed=9)
    recs1 = records(31, seed=9, mate=1)
    recs2 = records(31, seed=1009, mate=2)
    data = b"".join(x + y for x, y in zip(recs1, recs2))
    src = write(tmp_path / "il.fq", data)
    chunks = list(F.iter_chunks([src], parts=4, interleaved=True))
    assert [c.records for c in chunks] == [8, 8, 8, 7]
    assert b"".join(c.data[0] for c in chunks) == data
    chunks = list(F.iter_chunks([src], bases=1, interleaved=True))
    assert all(c.records == 1 for c in chunks)
    bad = write(tmp_path / "odd.fq", data + recs1[0])
    with pytest.raises(FormatError, match="odd number"):
        list(F.iter_chunks([bad], records=5, interleaved=True))
    swapped = write(tmp_path / "sw.fq", recs1[0] + recs2[1] + data)
    with pytest.raises(FormatError, match="not a pair"):
        list(F.iter_chunks([swapped], records=5, interleaved=True))


def test_usage_errors(tmp_path: Path) -> None:
    src = write(tmp_path / "a.fq", fastq(3))
    with pytest.raises(UsageError):
        F.split_fastq([src], str(tmp_path / "o"), parts=2, records=3)
    with pytest.raises(UsageError):
        F.split_fastq([src], str(tmp_path / "o"))
    with pytest.raises(UsageError):
        F.split_fastq([src, src], str(tmp_path / "o"), parts=2, interleaved=True)


def test_fewer_records_than_parts(tmp_path: Path) -> None:
    src = write(tmp_path / "few.fq", fastq(3))
    summary = F.split_fastq([src], str(tmp_path / "out"), parts=5)
    assert [c.records for c in summary.chunks] == [1, 1, 1, 0, 0]
    assert len(chunks_of(tmp_path / "out")) == 5


def test_large_parts_are_balanced_by_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(F, "PLAN_READ", 1 << 10)  # force the byte-target path on a small file
    data = fastq(4000, seed=11, min_len=100, max_len=100)
    src = write(tmp_path / "big.fq", data)
    summary = F.split_fastq([src], str(tmp_path / "out"), parts=8, compress="none")
    counts = [c.records for c in summary.chunks]
    assert sum(counts) == 4000 and max(counts) <= 505 and min(counts) >= 495
    assert b"".join(read_any(f) for f in chunks_of(tmp_path / "out")) == data


def test_gzip_parts_estimated_from_compressed_offsets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(F, "EXACT_LIMIT", 0)
    monkeypatch.setattr(C, "GZIP_READ", 1 << 12)
    data = fastq(6000, seed=12, min_len=100, max_len=100)
    src = write(tmp_path / "big.fq.gz", data, "gzip")
    monkeypatch.setattr(F, "_cutter_min_part", 0, raising=False)
    summary = F.Splitter([src], parts=4).run(F._MemorySink(1))
    counts = [c.records for c in summary.chunks]
    assert sum(counts) == 6000 and max(counts) <= 1650 and min(counts) >= 1350


def test_cli_split_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    r1, r2 = pair(40, seed=13)
    a = write(tmp_path / "S_R1_001.fastq.gz", r1, "gzip")
    b = write(tmp_path / "S_R2_001.fastq.gz", r2, "gzip")
    code = main(["split", "fastq", a, b, "--out-dir", str(tmp_path / "out"), "--records", "15",
                 "--summary", str(tmp_path / "s.json"), "--no-progress"])
    assert code == 0
    doc = json.loads((tmp_path / "s.json").read_text())
    assert [c["records"] for c in doc["chunks"]] == [15, 15, 10] and doc["paired"]
    assert os.path.basename(doc["chunks"][0]["files"][0]) == "S_001.part-0000.R1.fastq.gz"
    assert "3 chunks" in capsys.readouterr().err
    bad = write(tmp_path / "bad.fq", b"@a\nAC\n+\nI\n")
    assert main(["split", "fastq", bad, "--out-dir", str(tmp_path / "o2"), "--parts", "2"]) == 1
    assert "bad.fq at line 4" in capsys.readouterr().err


def test_blank_lines_only_at_the_end(tmp_path: Path) -> None:
    data = fastq(10, seed=3)
    src = write(tmp_path / "tail.fq", data + b"\n\n  \n")
    chunks = list(F.iter_chunks([src], records=5))
    assert [c.records for c in chunks] == [5, 5] and b"".join(c.data[0] for c in chunks) == data
    summary = F.split_fastq([src], str(tmp_path / "out"), records=5)
    assert len(summary.chunks) == 2 and len(chunks_of(tmp_path / "out")) == 2
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []
    mid = write(tmp_path / "mid.fq", data[:data.index(b"@read5")] + b"\n" + data[data.index(b"@read5"):])
    with pytest.raises(FormatError, match="mid.fq at line 21: expected '@'"):
        F.split_fastq([mid], str(tmp_path / "out2"), records=5)


@pytest.mark.parametrize("batch", [1, 100, 1 << 26])
@pytest.mark.parametrize("kernel_copy", [True, False])
def test_plain_to_plain_copies_by_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int,
                                        kernel_copy: bool) -> None:
    monkeypatch.setattr(F, "COPY_BATCH", batch)
    monkeypatch.setattr(F, "_COPY_FILE_RANGE", kernel_copy and F._COPY_FILE_RANGE)
    monkeypatch.setattr(C, "READ_SIZE", 333)
    r1, r2 = pair(60, seed=41)
    a = write(tmp_path / "p_1.fq", r1 + b"@x/1\nA\n+\nI")  # no final newline
    b = write(tmp_path / "p_2.fq", r2 + b"@x/2\nC\n+\nI\n")
    summary = F.split_fastq([a, b], str(tmp_path / "out"), records=7, compress="none")
    assert summary.records == 61
    files = chunks_of(tmp_path / "out")
    assert b"".join(read_any(f) for f in files if ".R1." in f) == r1 + b"@x/1\nA\n+\nI\n"
    assert b"".join(read_any(f) for f in files if ".R2." in f) == r2 + b"@x/2\nC\n+\nI\n"
    bad = write(tmp_path / "q_2.fq", r2.replace(b"@read30/2", b"@read31/2"))
    with pytest.raises(FormatError, match="record 31"):
        F.split_fastq([write(tmp_path / "q_1.fq", r1), bad], str(tmp_path / "out2"), records=7, compress="none")
