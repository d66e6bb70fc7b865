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
