"""FASTQ chunk plans from ranged reads (local and the moto S3 server) agree with the split."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import List, Tuple

import pytest

from genostage.codec import bgzf
from genostage.errors import FormatError, ObjectChanged, UsageError
from genostage.split import fastq as F
from genostage.split import fastq_plan as P
from genostage.split.plan import from_json, load, save
from genostage.store import Stores

from .fastq_util import fastq, pair

MiB = 1 << 20


def to_bgzf(data: bytes, level: int = 1) -> bytes:
    return b"".join(bgzf.compress_block(data[i:i + 60000], level) for i in range(0, len(data), 60000)) + bgzf.EOF_BLOCK


def un(raw: bytes) -> bytes:
    import gzip
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def fetch_all(plan, stores: Stores, paired: bool) -> List[Tuple[bytes, bytes, int]]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(len(plan.chunks)):
        a, b = io.BytesIO(), io.BytesIO()
        stats = P.write_chunk(plan, i, a, stores, out2=b if paired else None)
        out.append((un(a.getvalue()), un(b.getvalue()), stats["records"]))
    return out


def upload(s3_client, bucket: str, key: str, data: bytes) -> str:  # type: ignore[no-untyped-def]
    s3_client.put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}/{key}"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["plain", "bgzf"])
@pytest.mark.parametrize("paired", [False, True])
def test_s3_plan_matches_local_split(tmp_path: Path, s3_client, bucket: str, stores: Stores,  # type: ignore[no-untyped-def]
                                     fmt: str, paired: bool) -> None:
    parts = 2
    r1, r2 = pair(9000, seed=21, min_len=80, max_len=100) if paired else (fastq(15000, seed=21, min_len=80, max_len=100), b"")
    datas = [r1, r2] if paired else [r1]
    blobs = [to_bgzf(d, 0) if fmt == "bgzf" else d for d in datas]
    assert sum(map(len, blobs)) > parts * MiB  # the sampled path, not a whole read
    uris = [upload(s3_client, bucket, f"reads_{k}.fq", b) for k, b in enumerate(blobs)]
    locals_ = []
    for k, b in enumerate(blobs):
        p = tmp_path / f"reads_{k}.fq"
        p.write_bytes(b)
        locals_.append(str(p))
    before = stores.s3.counters.snapshot()["bytes_read"]
    plan = P.make_plan(uris, parts, stores)
    used = stores.s3.counters.snapshot()["bytes_read"] - before
    assert used <= parts * MiB and plan.bytes_read <= parts * MiB
    save(plan, f"s3://{bucket}/plan.json", stores)
    plan = load(f"s3://{bucket}/plan.json", stores)
    got = fetch_all(plan, stores, paired)
    split = list(F.iter_chunks(locals_, parts=parts))
    assert [c.records for c in split] == [g[2] for g in got]
    for c, g in zip(split, got):
        assert c.data[0] == g[0]
        if paired:
            assert c.data[1] == g[1]
    assert b"".join(g[0] for g in got) == r1
    counts = [g[2] for g in got]
    assert min(counts) >= 1 and not plan.header["exact"]


@pytest.mark.parametrize("fmt", ["plain", "bgzf"])
@pytest.mark.parametrize("parts", [1, 2, 5, 40])
def test_small_plans_are_exact(tmp_path: Path, fmt: str, parts: int) -> None:
    data = fastq(37, seed=parts)
    path = tmp_path / "small.fq"
    path.write_bytes(to_bgzf(data) if fmt == "bgzf" else data)
    plan = P.make_plan([str(path)], parts, Stores())
    assert plan.header["exact"] and plan.kind == "fastq"
    got = fetch_all(from_json(plan.to_json(), "x"), Stores(), False)
    assert b"".join(g[0] for g in got) == data
    assert [g[2] for g in got] == [c["records"] for c in plan.chunks]
    assert [c.records for c in F.iter_chunks([str(path)], parts=parts)] == [g[2] for g in got]


def test_sampled_local_plan_balanced(tmp_path: Path) -> None:
    data = fastq(30000, seed=3, min_len=100, max_len=100)
    path = tmp_path / "big.fq"
    path.write_bytes(data)
    plan = P.make_plan([str(path)], 2, Stores())
    assert not plan.header["exact"] and plan.bytes_read <= 2 * MiB
    got = fetch_all(plan, Stores(), False)
    counts = [g[2] for g in got]
    assert abs(counts[0] - counts[1]) <= 0.02 * 15000
    assert b"".join(g[0] for g in got) == data


def test_plan_refused_when_source_changed(tmp_path: Path) -> None:
    path = tmp_path / "c.fq"
    path.write_bytes(fastq(20))
    plan = P.make_plan([str(path)], 2, Stores())
    path.write_bytes(fastq(21))
    with pytest.raises(ObjectChanged):
        P.write_chunk(plan, 0, io.BytesIO(), Stores())


def test_plan_refuses_plain_gzip_and_bad_index(tmp_path: Path) -> None:
    import gzip
    path = tmp_path / "g.fq.gz"
    path.write_bytes(gzip.compress(fastq(20)))
    with pytest.raises(UsageError, match="not BGZF"):
        P.make_plan([str(path)], 2, Stores())
    plain = tmp_path / "p.fq"
    plain.write_bytes(fastq(20))
    plan = P.make_plan([str(plain)], 2, Stores())
    with pytest.raises(UsageError, match="out of range"):
        P.write_chunk(plan, 2, io.BytesIO(), Stores())


def test_paired_plan_needs_second_output_and_checks_sync(tmp_path: Path) -> None:
    r1, r2 = pair(50, seed=5)
    a, b = tmp_path / "a.fq", tmp_path / "b.fq"
    a.write_bytes(r1)
    b.write_bytes(r2)
    plan = P.make_plan([str(a), str(b)], 2, Stores())
    with pytest.raises(UsageError):
        P.write_chunk(plan, 0, io.BytesIO(), Stores())
    b.write_bytes(r2.replace(b"@read3/2", b"@reaX3/2"))  # same size: ETag-less local stat still matches
    os.utime(b)
    with pytest.raises(FormatError, match="out of sync"):
        P.write_chunk(plan, 0, io.BytesIO(), Stores(), out2=io.BytesIO())


def test_bad_chunk_data_is_an_error(tmp_path: Path) -> None:
    data = bytearray(fastq(40, seed=2))
    path = tmp_path / "bad.fq"
    path.write_bytes(bytes(data))
    plan = P.make_plan([str(path)], 2, Stores())
    idx = data.index(b"\n+", len(data) // 2 + 100)
    data[idx + 1:idx + 2] = b"-"
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="expected '\\+'"):
        P.write_chunk(plan, 1, io.BytesIO(), Stores())


@pytest.mark.parametrize("fmt", ["gzip", "bgzf"])
def test_split_streams_from_s3(tmp_path: Path, s3_client, bucket: str, stores: Stores, fmt: str) -> None:  # type: ignore[no-untyped-def]
    import gzip
    r1, r2 = pair(300, seed=31)
    blobs = [gzip.compress(d) if fmt == "gzip" else to_bgzf(d) for d in (r1, r2)]
    uris = [upload(s3_client, bucket, f"in/s_R{k + 1}.fq.gz", b) for k, b in enumerate(blobs)]
    summary = F.split_fastq(uris, str(tmp_path / "out"), records=100, stores=stores)
    assert [c.records for c in summary.chunks] == [100, 100, 100]
    files = sorted(os.listdir(tmp_path / "out"))
    assert files[0] == "s.part-0000.R1.fastq.gz"
    assert b"".join(un((tmp_path / "out" / f).read_bytes()) for f in files if ".R2." in f) == r2


# -- issue 12: truncated BGZF, hostile plans, full disks; issue 17: no import cycle ------------
def test_a_bgzf_source_without_its_eof_block_is_refused(tmp_path: Path) -> None:
    """Cut at a block boundary: every block whole, but records lost (was: a plan, exit 0)."""
    data = fastq(3000, seed=51)
    whole = to_bgzf(data)
    path = tmp_path / "cut.fq.gz"
    path.write_bytes(whole[:-len(bgzf.EOF_BLOCK)])
    with pytest.raises(FormatError, match="cut.fq.gz: truncated BGZF stream: no EOF marker"):
        P.make_plan([str(path)], 2, Stores())
    path.write_bytes(whole)
    assert P.make_plan([str(path)], 2, Stores()).chunks[1]["records"] == 1500


def _good_plan(tmp_path: Path, paired: bool = False) -> dict:
    import json

    if paired:
        r1, r2 = pair(400, seed=52)
        paths = [tmp_path / "a_1.fq", tmp_path / "a_2.fq"]
        paths[0].write_bytes(r1)
        paths[1].write_bytes(r2)
    else:
        paths = [tmp_path / "a.fq"]
        paths[0].write_bytes(fastq(400, seed=52))
    save(P.make_plan([str(p) for p in paths], 3, Stores()), str(tmp_path / "good.json"))
    return json.loads((tmp_path / "good.json").read_text())


@pytest.mark.parametrize("field, change, message", [
    ("chunks[1].ranges[0]", lambda p: p["chunks"][1]["ranges"][0].update(
        start=p["chunks"][1]["ranges"][0]["end"], end=p["chunks"][1]["ranges"][0]["start"]), "start .* is after end"),
    ("chunks[0]", lambda p: p["chunks"][0].pop("ranges"), "missing 'ranges'"),
    ("chunks[0].ranges[0].start[0]", lambda p: p["chunks"][0]["ranges"][0].update(start=["0", 0]), "expected int"),
    ("chunks[2].ranges[0].end", lambda p: p["chunks"][2]["ranges"][0].update(end=[10 ** 9, 0]), "past the end"),
    ("chunks[1].ranges[0].start", lambda p: p["chunks"][1]["ranges"][0].update(start=[5, 0]), "gap or an overlap"),
    ("sources[0].size", lambda p: p["sources"][0].update(size=True), "expected int, got true/false"),
    ("sources[0]", lambda p: p["sources"][0].pop("uri"), "missing 'uri'"),
    ("sources[0].format", lambda p: p["sources"][0].update(format="cram"), "plain"),
    ("chunks[0].records", lambda p: p["chunks"][0].update(records=-2), "negative"),
    ("chunks[0].index", lambda p: p["chunks"][0].update(index=2), "in order"),
    ("chunks[1]", lambda p: p["chunks"].__setitem__(1, [1, 2]), "expected dict, got a list"),
    ("header", lambda p: p.update(header=[1]), "expected dict"),
])
def test_hostile_plans_name_the_field(tmp_path: Path, field: str, change, message: str) -> None:  # type: ignore[no-untyped-def]
    """Wrong types, missing keys, ranges backwards or out of the source: one FormatError naming the
    plan and the field (was: tracebacks, or an empty chunk for start > end)."""
    plan = _good_plan(tmp_path)
    change(plan)
    with pytest.raises(FormatError) as info:
        from_json(plan, "bad.json")
    assert str(info.value).startswith(f"Error in bad.json: {field}: "), str(info.value)
    import re

    assert re.search(message, str(info.value)), str(info.value)


def test_deeply_nested_plans_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(FormatError, match="deep.json: plan is nested too deeply"):
        load(str(path))
    path.write_text('{"format": "genostage-plan/1", "kind": "fastq", "sources": 3, "chunks": [1]}')
    with pytest.raises(FormatError, match="plan has no sources"):
        load(str(path))


def test_paired_plans_check_both_sources(tmp_path: Path) -> None:
    plan = _good_plan(tmp_path, paired=True)
    assert from_json(plan, "p.json").kind == "fastq"
    plan["chunks"][0]["ranges"].pop()
    with pytest.raises(FormatError, match=r"p.json: chunks\[0\].ranges: 1 ranges for 2 sources"):
        from_json(plan, "p.json")


def test_fetch_chunk_on_a_full_disk_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from genostage.errors import InsufficientSpace
    from genostage.split.plan import fetch_chunk

    plan = from_json(_good_plan(tmp_path), "good.json")
    real = P.write_chunk

    def full(*args, **kw):  # type: ignore[no-untyped-def]
        args[2].write(b"@partial\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(P, "write_chunk", full)
    with pytest.raises(InsufficientSpace, match="no space left"):
        fetch_chunk(plan, 1, str(tmp_path / "out" / "c1.fq"), Stores())
    assert os.listdir(tmp_path / "out") == []
    monkeypatch.setattr(P, "write_chunk", real)
    stats = fetch_chunk(plan, 1, str(tmp_path / "out" / "c1.fq"), Stores())
    assert stats["records"] == plan.chunks[1]["records"] and os.listdir(tmp_path / "out") == ["c1.fq"]


def test_save_on_a_full_disk_is_insufficient_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from genostage.errors import InsufficientSpace
    from genostage.store.local import LocalStore

    plan = from_json(_good_plan(tmp_path), "good.json")

    def full(self, loc, data, checksums=None):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalStore, "put_bytes", full)
    with pytest.raises(InsufficientSpace):
        save(plan, str(tmp_path / "p.json"))


def test_the_plan_format_imports_no_kind_module() -> None:
    """split/plan.py and split/bam.py imported each other (issue 17): the format module now
    names the kinds' modules only, and imports them when a chunk is written."""
    import subprocess
    import sys

    code = ("import sys, genostage.split.plan as p; "
            "print(sorted(m for m in sys.modules if m.startswith('genostage.split.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "genostage.split.bam" not in out and "genostage.split.fastq_plan" not in out
    import ast

    tree = ast.parse(Path(__import__("genostage.split.plan", fromlist=["x"]).__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m and ("bam" in m or "fastq" in m) for m in imported)


def test_a_block_corrupt_in_the_stored_file_fails_after_one_more_read(s3_client, bucket: str, stores: Stores,
                                                                     caplog) -> None:  # type: ignore[no-untyped-def]
    """A block that fails its CRC32 is read again once (bytes flipped in flight are cured so,
    see tests/chaos/test_streaming.py); one bad in the object itself fails the same way twice."""
    data = fastq(20000, seed=61)
    blocks = [bgzf.compress_block(data[i:i + 60000], 1) for i in range(0, len(data), 60000)]
    raw = bytearray(b"".join(blocks) + bgzf.EOF_BLOCK)
    victim = sum(len(b) for b in blocks[:len(blocks) // 2]) + 100  # inside a middle block's deflate data
    raw[victim] ^= 0x10
    uri = upload(s3_client, bucket, "bad.fq.gz", bytes(raw))
    plan = P.make_plan([uri], 1, stores)
    with pytest.raises(FormatError, match="bad.fq.gz.*corrupt BGZF block"):
        P.write_chunk(plan, 0, io.BytesIO(), stores)
    assert "reading it again from offset" in caplog.text
