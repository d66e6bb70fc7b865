"""Splitting a coordinate-sorted BAM with its .bai/.csi: by reference, by regions, by equal genomic spans."""
from __future__ import annotations

import os
import time
from typing import Any, List

import pytest

pysam = pytest.importorskip("pysam")

from .test_bam import check_parts, make_reads, quickcheck, write_bam  # noqa: E402

from genostage.errors import FormatError, UsageError  # noqa: E402
from genostage.split.bam import make_plan, split_bam  # noqa: E402
from genostage.split.bam_index import index_runs  # noqa: E402
from genostage.split.plan import fetch_chunk  # noqa: E402
from genostage.store import Stores  # noqa: E402

REFS = [("chr1", 300_000), ("chr2", 120_000), ("chr3", 50_000), ("chrEmpty", 10_000), ("chr5", 90_000)]


@pytest.fixture(scope="module", params=["bai", "csi", "bai-htslib-blocks"])
def indexed(request, tmp_path_factory: pytest.TempPathFactory) -> str:  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("idx")
    reads = [r for r in make_reads("coordinate", 6000, REFS, seed=21) if r["ref"] != 3]
    reads += make_reads("unmapped", 40, [], seed=22)
    path = write_bam(str(d / "sorted.bam"), REFS, reads, "coordinate",
                     reblock_seed=None if "htslib" in request.param else 9)
    time.sleep(0.01)
    pysam.index(path, "-c") if request.param == "csi" else pysam.index(path)
    return path


def _parsed(path: str) -> List[Any]:
    with pysam.AlignmentFile(path, "rb", check_sq=False) as fh:
        return list(fh.fetch(until_eof=True))


def test_by_reference(indexed: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    report = split_bam(indexed, str(tmp_path / "o"), Stores(), runs=index_runs(indexed, Stores(), by_reference=True))
    paths = [p["path"] for p in report["parts"]]
    check_parts(indexed, paths)
    refs = [{r.reference_id for r in _parsed(p)} for p in paths]
    assert refs == [{0}, {1}, {2}, {4}, {-1}]  # chrEmpty has no reads: no part; unplaced reads last


def test_regions(indexed: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bed = tmp_path / "r.bed"
    bed.write_text("# comment\nchr1\t0\t100000\nchr1\t100000\t250000\nchr2:50,001-60,000\nchr3\nchrEmpty\t0\t5000\n")
    runs = index_runs(indexed, Stores(), regions=str(bed))
    report = split_bam(indexed, str(tmp_path / "o"), Stores(), runs=runs)
    paths = [p["path"] for p in report["parts"]]
    quickcheck(paths)
    src = _parsed(indexed)
    want = [
        [r for r in src if r.reference_id == 0 and r.reference_start < 100_000],
        [r for r in src if r.reference_id == 0 and 100_000 <= r.reference_start < 250_000],
        [r for r in src if r.reference_id == 1 and 50_000 <= r.reference_start < 60_000],
        [r for r in src if r.reference_id == 2],
        [],
        [r for r in src if r.reference_id == -1],
    ]
    got = [[r.to_string() for r in _parsed(p)] for p in paths]
    assert got == [[r.to_string() for r in w] for w in want]


@pytest.mark.parametrize("n", [1, 3, 10])
def test_equal_bases(indexed: str, tmp_path, n: int) -> None:  # type: ignore[no-untyped-def]
    runs = index_runs(indexed, Stores(), equal_bases=n)
    report = split_bam(indexed, str(tmp_path / "o"), Stores(), runs=runs)
    paths = [p["path"] for p in report["parts"]]
    assert len(paths) == n + 1
    check_parts(indexed, paths)
    assert {r.reference_id for r in _parsed(paths[-1])} == {-1}


def test_index_plan(indexed: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    stores = Stores()
    plan = make_plan(indexed, stores, runs=index_runs(indexed, stores, equal_bases=4))
    paths = [fetch_chunk(plan, i, str(tmp_path / f"c{i}.bam"), stores)["path"] for i in range(len(plan.chunks))]
    check_parts(indexed, paths)


def test_stale_or_missing_index(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write_bam(str(tmp_path / "s.bam"), REFS, make_reads("coordinate", 200, REFS, seed=3), "coordinate")
    with pytest.raises(UsageError, match="no index"):
        index_runs(path, Stores(), by_reference=True)
    pysam.index(path)
    past = time.time() - 100
    os.utime(path + ".bai", (past, past))
    with pytest.raises(FormatError, match="older") as info:
        index_runs(path, Stores(), by_reference=True)
    assert path + ".bai" in str(info.value)
    bad = tmp_path / "bad.bed"
    os.utime(path + ".bai", None)
    bad.write_text("chr1\t0\t10\nchrX\t5\t10\n")
    with pytest.raises(FormatError, match="line 2.*chrX"):
        index_runs(path, Stores(), regions=str(bad))
