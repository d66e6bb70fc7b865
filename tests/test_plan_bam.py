"""BAM chunk plans against a local S3 server: chunks are valid, bytes read stay within bounds."""
from __future__ import annotations

import os
from typing import List

import pytest

pysam = pytest.importorskip("pysam")

from .test_bam import REFS3, check_parts, make_reads, records, write_bam  # noqa: E402

from genostage.codec.bgzf import EOF_BLOCK  # noqa: E402
from genostage.cli import main  # noqa: E402
from genostage.errors import ObjectChanged  # noqa: E402
from genostage.split.bam import make_plan  # noqa: E402
from genostage.split.bam_gather import gather_to_file  # noqa: E402
from genostage.split.plan import fetch_chunk, load, parse_plan_ref, save  # noqa: E402

KiB = 1024


@pytest.fixture(scope="module")
def big_bam(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("bigbam")
    return write_bam(str(d / "big.bam"), REFS3, make_reads("coordinate", 24000, REFS3, seed=11), "coordinate")


def _upload(stores, bucket: str, path: str, key: str) -> str:  # type: ignore[no-untyped-def]
    from genostage.location import parse

    uri = f"s3://{bucket}/{key}"
    with open(path, "rb") as fh:
        stores.s3.put_bytes(parse(uri), fh.read())
    return uri


@pytest.mark.parametrize("parts", [1, 4, 16])
def test_plan_and_chunks_on_s3(big_bam: str, stores, bucket: str, tmp_path, parts: int) -> None:  # type: ignore[no-untyped-def]
    uri = _upload(stores, bucket, big_bam, "in/big.bam")
    size = os.path.getsize(big_bam)
    counters = stores.s3.counters
    before = counters.snapshot()["bytes_read"]
    plan = make_plan(uri, stores, parts=parts)
    plan_read = counters.snapshot()["bytes_read"] - before
    header_bytes = plan.header["bytes"][1]
    assert plan.bytes_read == plan_read
    assert plan_read <= header_bytes + parts * 512 * KiB
    assert plan_read < 64 * KiB + parts * 130 * KiB  # the header window and one small window per cut
    assert plan.sources[0]["etag"]
    save(plan, f"s3://{bucket}/plans/p.json", stores)
    plan = load(f"s3://{bucket}/plans/p.json", stores)

    before = counters.snapshot()["bytes_read"]
    paths: List[str] = []
    for i in range(parts):
        stats = fetch_chunk(plan, i, str(tmp_path / f"c{i}.bam"), stores)
        paths.append(stats["path"])
        assert stats["requests"] == 2  # the header range and the chunk range
    fetched = counters.snapshot()["bytes_read"] - before
    assert fetched <= 1.01 * size + parts * (header_bytes + 128 * KiB)
    check_parts(big_bam, paths)


@pytest.mark.parametrize("s3", ["moto", "rclone"], indirect=True)
def test_gather_s3_parts(big_bam: str, stores, bucket: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    uri = _upload(stores, bucket, big_bam, "big.bam")
    plan = make_plan(uri, stores, parts=3)
    for i in range(3):
        fetch_chunk(plan, i, str(tmp_path / f"c{i}.bam"), stores)
        _upload(stores, bucket, str(tmp_path / f"c{i}.bam"), f"out/c{i}.bam")
    out = gather_to_file([f"s3://{bucket}/out/c{i}.bam" for i in range(3)], str(tmp_path / "all.bam"), stores)
    assert records(out["path"]) == records(big_bam)


def test_plan_refused_after_object_changed(big_bam: str, stores, bucket: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    uri = _upload(stores, bucket, big_bam, "x.bam")
    plan = make_plan(uri, stores, parts=2)
    with open(big_bam, "rb") as fh:
        data = fh.read()
    from genostage.location import parse

    stores.s3.put_bytes(parse(uri), data[:-28] + EOF_BLOCK + EOF_BLOCK)
    with pytest.raises(ObjectChanged):
        fetch_chunk(plan, 1, str(tmp_path / "c.bam"), stores)
    assert not (tmp_path / "c.bam").exists()


def test_cli_plan_on_s3(big_bam: str, stores, bucket: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    uri = _upload(stores, bucket, big_bam, "cli.bam")
    plan = str(tmp_path / "plan.json")
    assert main(["plan", "bam", uri, "--parts", "2", "-o", plan]) == 0
    loaded = load(plan)
    assert loaded.kind == "bam" and len(loaded.chunks) == 2
    assert main(["chunk", plan, "--index", "1", "-o", str(tmp_path / "c1.bam")]) == 0
    assert main(["chunk", plan, "--index", "0", "-o", str(tmp_path / "c0.bam")]) == 0
    check_parts(big_bam, [str(tmp_path / "c0.bam"), str(tmp_path / "c1.bam")])


def test_parse_plan_ref() -> None:
    assert parse_plan_ref("s3://b/p.json#3") == ("s3://b/p.json", 3)
    with pytest.raises(Exception):
        parse_plan_ref("plan.json")


def test_fastq_plans_dispatch(tmp_path) -> None:
    fastq_plan = pytest.importorskip("genostage.split.fastq_plan")
    assert hasattr(fastq_plan, "make_plan") and hasattr(fastq_plan, "write_chunk")


def test_split_s3_source(big_bam: str, stores, bucket: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from genostage.split.bam import split_bam

    uri = _upload(stores, bucket, big_bam, "split/big.bam")
    before = stores.s3.counters.snapshot()["bytes_read"]
    report = split_bam(uri, str(tmp_path / "o"), stores, parts=5, threads=2)
    assert report["bytes_read"] == stores.s3.counters.snapshot()["bytes_read"] - before
    assert report["bytes_read"] <= 1.01 * os.path.getsize(big_bam) + 5 * 256 * KiB
    check_parts(big_bam, [p["path"] for p in report["parts"]])


# -- corrupt blocks through ranged reads (the streamed copy path) -----------------------------
def test_corrupt_block_on_s3_is_refused(big_bam: str, stores, bucket: str, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from .test_bam import _one_line, corrupt_copy

    from genostage.split.bam import split_bam

    good = _upload(stores, bucket, big_bam, "good.bam")
    plan = make_plan(good, stores, parts=2)
    bad_local = str(tmp_path / "bad.bam")
    off = corrupt_copy(big_bam, bad_local, "crc")
    bad = _upload(stores, bucket, bad_local, "bad.bam")
    capsys.readouterr()
    assert main(["split", "bam", bad, "--out-dir", str(tmp_path / "o"), "--parts", "2"]) == 1
    _one_line(capsys.readouterr().err, bad, off, "crc")
    assert os.listdir(tmp_path / "o") == []
    # a plan of the bad object: chunk 0 holds the block
    plan = make_plan(bad, stores, parts=2)
    save(plan, str(tmp_path / "plan.json"), stores)
    assert main(["chunk", str(tmp_path / "plan.json"), "--index", "0", "-o", str(tmp_path / "c0.bam")]) == 1
    _one_line(capsys.readouterr().err, bad, off, "crc")
    # gather streams S3 parts by ranged reads
    report = split_bam(good, str(tmp_path / "p"), stores, parts=2)
    part1 = str(tmp_path / "bad-part.bam")
    poff = corrupt_copy(report["parts"][1]["path"], part1, "payload", at=0.5)
    uris = [_upload(stores, bucket, report["parts"][0]["path"], "parts/p0.bam"), _upload(stores, bucket, part1, "parts/p1.bam")]
    assert main(["gather", "bam", *uris, "-o", str(tmp_path / "g.bam")]) == 1
    _one_line(capsys.readouterr().err, uris[1], poff, "payload")
    # --merge downloads the parts first (verified): the error still names the part as given
    assert main(["gather", "bam", "--merge", *uris, "-o", str(tmp_path / "g.bam"), "--tmp-dir", str(tmp_path)]) == 1
    _one_line(capsys.readouterr().err, uris[1], poff, "payload")
    assert not (tmp_path / "g.bam").exists() and not [p for p in os.listdir(tmp_path) if p.startswith("genostage-")]


@pytest.mark.parametrize("s3", ["moto", "rclone"], indirect=True)
def test_split_bam_to_an_s3_prefix(big_bam: str, stores, s3_client, bucket: str, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The parts are uploaded (verified) under the prefix; no local directory named s3: appears."""
    from .helpers import keys

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("GENOSTAGE_SCRATCH", str(tmp_path))  # where the parts are split first
    assert main(["split", "bam", big_bam, "--out-dir", f"s3://{bucket}/chunks/S1", "--parts", "3"]) == 0
    assert os.listdir(work) == [] and not [p for p in os.listdir(tmp_path) if p.startswith("genostage-")]
    names = keys(s3_client, bucket, "chunks/")
    assert names == [f"chunks/S1/big.part-{i:04d}.bam" for i in range(3)]
    got = []
    for i, key in enumerate(names):
        path = tmp_path / f"g{i}.bam"
        path.write_bytes(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
        got.append(str(path))
    check_parts(big_bam, got)
