"""Streaming FASTQ splitting: round trips, balance, bad input, paired and interleaved input."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Callable, List

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
    """The chunk files in ``out`` (none when a failed split removed the directory it created)."""
    if not out.exists():
        return []
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


# -- issue 12: truncated BGZF, interrupts at any step, a full disk, bad counts, S3 output ------
def _bgzf_by_records(data: bytes, per_block: int = 50) -> bytes:
    """BGZF whose blocks end at record boundaries, so a cut between blocks leaves whole records."""
    recs = [r + b"\n" for r in data.split(b"\n@")]
    recs = [recs[0]] + [b"@" + r for r in recs[1:]]
    recs[-1] = recs[-1][:-1]
    return b"".join(bgzf.compress_block(b"".join(recs[i:i + per_block]), 1)
                    for i in range(0, len(recs), per_block)) + bgzf.EOF_BLOCK


@pytest.mark.parametrize("where", ["split", "count", "chunks"])
def test_bgzf_cut_at_a_block_boundary_is_truncated(tmp_path: Path, where: str) -> None:
    """Every block whole but the EOF marker missing: the file was cut short (was: half the records, exit 0)."""
    whole = _bgzf_by_records(fastq(1000, seed=61))
    offsets = [off for off, _ in bgzf.iter_blocks(__import__("io").BytesIO(whole))]
    src = tmp_path / "cut.fq.gz"
    src.write_bytes(whole[:offsets[len(offsets) // 2]])
    with pytest.raises(FormatError, match=r"cut\.fq\.gz at line \d+: truncated BGZF stream: no EOF marker") as info:
        if where == "split":
            F.split_fastq([str(src)], str(tmp_path / "out"), parts=2)
        elif where == "count":
            F.count_records(str(src))
        else:
            list(F.iter_chunks([str(src)], records=100))
    assert info.value.line is not None and info.value.line % 4 == 0
    assert chunks_of(tmp_path / "out") == []
    full = tmp_path / "whole.fq.gz"
    full.write_bytes(whole)
    assert F.count_records(str(full)) == 1000


def _line_events(run: "Callable[[], object]", stop_at: int) -> int:
    """Run ``run`` with a trace that raises Interrupted at the ``stop_at``-th line executed in the
    splitter's modules (as a signal handler raises between two steps); the lines counted."""
    import sys

    from genostage.errors import Interrupted

    watched = {F.__file__, C.__file__, bgzf.__file__}
    seen = [0]

    def local(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "line":
            seen[0] += 1
            if seen[0] == stop_at:
                raise Interrupted(15)
        return local

    def tracer(frame, event, arg):  # type: ignore[no-untyped-def]
        return local if frame.f_code.co_filename in watched else None

    sys.settrace(tracer)
    try:
        run()
    except Interrupted:
        pass
    finally:
        sys.settrace(None)
    return seen[0]


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("compress", ["none", "gzip", "bgzf"])
def test_an_interrupt_at_any_step_leaves_nothing(tmp_path: Path, compress: str) -> None:
    """SIGTERM raises Interrupted wherever the main thread is: whatever step of the split it
    lands on, the run leaves nothing, or (the exception came after the split was done) all of
    its chunks; never a temporary or a part of the set (was: either, sometimes)."""
    import random

    src = write(tmp_path / "r.fq", fastq(600, seed=62))

    def split(out: Path) -> "Callable[[], object]":
        return lambda: F.split_fastq([src], str(out), records=150, compress=compress, threads=2,
                                     summary_path=str(out / "summary.json"))

    total = _line_events(split(tmp_path / "clean"), 0)
    complete = sorted(p.name for p in (tmp_path / "clean").iterdir())
    assert len(complete) == 5  # 4 chunks and the summary
    rng = random.Random(63)
    stops = sorted(set(range(1, total, max(1, total // 60))) | {rng.randrange(1, total) for _ in range(40)})
    for n in stops:
        out = tmp_path / f"o{n}"
        _line_events(split(out), n)
        left = sorted(p.name for p in out.iterdir()) if out.exists() else []
        assert left in ([], complete), f"an interrupt at line event {n} of {total} left {left}"
        if left:
            for name in complete:
                assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes() or name == "summary.json"


def test_the_stop_handler_removes_files_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler `split fastq` installs removes what the run wrote before raising, so a wait
    during the unwinding cannot leave files behind for AWS Batch's SIGKILL."""
    from genostage.errors import Interrupted

    src = write(tmp_path / "r.fq", fastq(400, seed=64))
    stop = F.Stop()
    seen: List[List[str]] = []
    real_end = F.FileSink.end

    def end_then_signal(self, stats):  # type: ignore[no-untyped-def]
        real_end(self, stats)
        if stats.index == 1:
            seen.append(sorted(os.listdir(self.out_dir)))
            stop.signal(15)

    monkeypatch.setattr(F.FileSink, "end", end_then_signal)
    with pytest.raises(Interrupted):
        F.split_fastq([src], str(tmp_path / "out"), records=100, compress="gzip", stop=stop)
    assert len(seen[0]) >= 2 and stop.signum == 15
    assert list((tmp_path / "out").iterdir()) == []
    assert stop.watchdog is not None and stop.watchdog.finished.is_set()  # unwound: no forced exit later
    done = F.Stop()
    F.split_fastq([src], str(tmp_path / "out2"), records=100, stop=done)
    done.signal(15)  # after the split completed: nothing happens, nothing is removed
    assert len(chunks_of(tmp_path / "out2")) == 4


@pytest.mark.parametrize("compress", ["none", "gzip", "bgzf"])
def test_a_full_disk_is_insufficient_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compress: str) -> None:
    """ENOSPC while writing chunks: InsufficientSpace (exit 7), nothing left (was: a traceback)."""
    import errno

    from genostage.errors import InsufficientSpace

    src = write(tmp_path / "r.fq", fastq(3000, seed=65))
    real_open = open
    budget = [20000]

    class Full:
        def __init__(self, fh):  # type: ignore[no-untyped-def]
            self.fh = fh

        def write(self, data):  # type: ignore[no-untyped-def]
            budget[0] -= len(data)
            if budget[0] < 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(self.fh, name)

    def small_disk_open(path, mode="r", *args, **kw):  # type: ignore[no-untyped-def]
        fh = real_open(path, mode, *args, **kw)
        return Full(fh) if "x" in mode else fh

    def full_pwrite(fd, data, offset):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(F, "open", small_disk_open, raising=False)
    monkeypatch.setattr(F.os, "pwrite", full_pwrite)
    monkeypatch.setattr(F, "_COPY_FILE_RANGE", False)
    with pytest.raises(InsufficientSpace, match="no space left"):
        F.split_fastq([src], str(tmp_path / "out"), parts=3, compress=compress, level=1)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--parts", "-3"], "--parts: expected a whole number"), (["--parts", "0"], "at least 1"),
    (["--records", "1X"], "--records"), (["--bases", "12.5"], "--bases"), (["--bytes", "abc"], "--bytes"),
    (["--parts", "2", "--threads", "0"], "--threads"), (["--parts", "2", "--level", "12"], "--level"),
    (["--parts", "1000000"], "at most 100000"), (["--parts", "2", "--compress", "zip"], "invalid choice"),
])
def test_bad_counts_are_one_usage_line(tmp_path: Path, capsys: pytest.CaptureFixture, args: List[str],
                                       message: str) -> None:
    src = write(tmp_path / "r.fq", fastq(5, seed=66))
    try:
        code = main(["split", "fastq", src, "-O", str(tmp_path / "o"), *args])
    except SystemExit as exc:  # argparse's own errors (one line too)
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_library_checks_counts(tmp_path: Path) -> None:
    src = write(tmp_path / "r.fq", fastq(5, seed=66))
    for kw in ({"parts": -1}, {"records": 0}, {"parts": 2, "records": 2}, {"parts": 2, "threads": 0},
               {"bases": 1.5}, {"parts": F.MAX_PARTS + 1}):
        with pytest.raises(UsageError):
            F.split_fastq([src], str(tmp_path / "o"), **kw)  # type: ignore[arg-type]
    assert not (tmp_path / "o").exists()


def test_split_to_s3_uploads_the_chunks(s3, s3_client, bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`-O s3://...` uploads the chunks, verified; never a local directory named `s3:` (was: one)."""
    monkeypatch.chdir(tmp_path)
    data = fastq(900, seed=67)
    src = write(tmp_path / "r.fq", data)
    summary = F.split_fastq([src], f"s3://{bucket}/chunks/", parts=3, summary_path=str(tmp_path / "s.json"))
    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="chunks/")["Contents"])
    assert keys == [f"chunks/r.part-000{i}.fastq" for i in range(3)]
    assert b"".join(s3_client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys) == data
    assert summary.chunks[0].files == [f"s3://{bucket}/chunks/r.part-0000.fastq"]
    assert json.loads((tmp_path / "s.json").read_text())["chunks"][2]["files"][0].startswith("s3://")
    assert not (tmp_path / "s3:").exists()
    with pytest.raises(Exception):
        F.split_fastq([src], "s3://no-such-bucket-genostage/chunks/", parts=3)
    assert not (tmp_path / "s3:").exists()


def test_a_failed_upload_leaves_no_chunk_objects(s3, s3_client, bucket, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """One chunk's upload fails for good after others were put: no chunk object stays."""
    from genostage.errors import TransferFailed
    from genostage.store.s3 import S3Store

    src = write(tmp_path / "r.fq", fastq(900, seed=68))
    real = S3Store.begin_upload
    begun: List[str] = []

    def fail_the_third(self, loc, *args, **kwargs):  # type: ignore[no-untyped-def]
        begun.append(str(loc))
        if len(begun) == 3:
            raise TransferFailed("the network went away")
        return real(self, loc, *args, **kwargs)

    monkeypatch.setattr(S3Store, "begin_upload", fail_the_third)
    with pytest.raises(TransferFailed):
        F.split_fastq([src], f"s3://{bucket}/chunks/", parts=4, summary_path=str(tmp_path / "summary.json"))
    assert len(begun) == 3
    assert s3_client.list_objects_v2(Bucket=bucket, Prefix="chunks/").get("Contents", []) == []
    assert not (tmp_path / "summary.json").exists()


def test_a_signal_inside_threading_is_raised_at_the_next_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal that comes while the main thread is inside the standard library's thread
    bookkeeping (a pool starting its thread) is not raised there, which broke ``threading``
    (KeyError in ``_limbo``: a traceback and exit 1 instead of 143, seen in CI); it is raised
    at the sink's next step, and the files are removed at once all the same."""
    import sys
    import threading

    from genostage.errors import Interrupted

    ready, release = threading.Event(), threading.Event()
    waiter = threading.Thread(target=lambda: (ready.set(), release.wait()))
    waiter.start()
    ready.wait()
    inside_threading = sys._current_frames()[waiter.ident]  # Event.wait, in threading.py
    try:
        src = write(tmp_path / "r.fq", fastq(400, seed=64))
        stop = F.Stop()
        real_end = F.FileSink.end
        steps: List[int] = []

        def end_then_signal(self, stats):  # type: ignore[no-untyped-def]
            real_end(self, stats)
            steps.append(stats.index)
            if stats.index == 1:
                stop.signal(15, inside_threading)  # returns: the raise waits for the next step
                assert stop.pending and list((tmp_path / "out").iterdir()) == []

        monkeypatch.setattr(F.FileSink, "end", end_then_signal)
        with pytest.raises(Interrupted):
            F.split_fastq([src], str(tmp_path / "out"), records=100, compress="gzip", stop=stop)
        assert steps == [0, 1] and list((tmp_path / "out").iterdir()) == []
        elsewhere = F.Stop()
        with pytest.raises(Interrupted):
            elsewhere.signal(15, sys._getframe())  # anywhere else: raised at once
        assert elsewhere.watchdog is not None
        elsewhere.settled()  # as split_fastq does when it unwinds; else the watchdog ends pytest in 10 s
        assert elsewhere.watchdog.finished.is_set()
    finally:
        release.set()
        waiter.join()
