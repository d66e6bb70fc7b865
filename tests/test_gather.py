"""Gather rules against the real tools: samtools merge/view/quickcheck, bcftools concat/view, seqkit."""
from __future__ import annotations

import gzip
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Sequence

import pytest

pysam = pytest.importorskip("pysam")

from .helpers import genostage, keys, put  # noqa: E402
from .test_bam import REFS3, make_reads, write_bam  # noqa: E402

from genostage.cli import main  # noqa: E402
from genostage.errors import FormatError, NotFound, RecordsNotConserved, UsageError  # noqa: E402
from genostage.split.bam_check import Counts, count_bam  # noqa: E402
from genostage.split.gather import (count, count_vcf, expand_parts, gather, natural_key,  # noqa: E402
                                    parse_rule)
from genostage.store import Stores  # noqa: E402

needs_tools = pytest.mark.skipif(not all(shutil.which(t) for t in ("samtools", "bcftools", "bgzip", "seqkit")),
                                 reason="samtools, bcftools, bgzip and seqkit are the oracles")
pytestmark = needs_tools


def sh(*cmd: str) -> str:
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True).stdout


def view(path: str) -> List[str]:
    """The records as ``samtools view`` prints them (no header)."""
    return sh("samtools", "view", path).splitlines()


def header(path: str) -> List[str]:
    return sh("samtools", "view", "-H", "--no-PG", path).splitlines()


def samtools_count(path: str, flags: str = "") -> int:
    return int(sh("samtools", "view", "-c", *(["-F", flags] if flags else []), path))


# -- test data ---------------------------------------------------------------------------
def _reads(n: int, seed: int) -> List[Dict]:
    reads = make_reads("coordinate", n, REFS3, seed=seed)
    rng = random.Random(seed)
    for r in reads:  # some secondary and supplementary alignments, which are not primary
        if r["ref"] >= 0 and rng.random() < 0.08:
            r["flag"] |= rng.choice([0x100, 0x800])
    return reads


def chunk_bams(d: Path, parts: int, order: str = "coordinate", seed: int = 21, n: int = 3000) -> List[str]:
    """Per-chunk sorted BAMs as a scatter's children make them: reads dealt at random to the
    chunks, each chunk sorted by ``samtools sort`` in its own directory (so @PG CL lines differ)."""
    reads = _reads(n, seed)
    random.Random(seed).shuffle(reads)
    out = []
    for i in range(parts):
        job = d / f"scratch-job{i}"
        job.mkdir(parents=True, exist_ok=True)
        raw = write_bam(str(job / "unsorted.bam"), REFS3, reads[i::parts], "unsorted", reblock_seed=None)
        path = str(d / f"part-{i}.bam")
        sh("samtools", "sort", *(["-n"] if order == "queryname" else []), "-o", path, raw)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def sorted_parts(tmp_path_factory: pytest.TempPathFactory) -> List[str]:
    return chunk_bams(tmp_path_factory.mktemp("chunks"), 4)


# -- bam=merge ---------------------------------------------------------------------------
@pytest.mark.parametrize("engine,recompress", [("pysam", False), ("binary", False), ("pysam", True)])
def test_merge_equals_samtools_merge(sorted_parts: List[str], tmp_path: Path, engine: str, recompress: bool) -> None:
    res = gather("bam=merge", sorted_parts, str(tmp_path / "m.bam"), engine=engine, threads=2, recompress=recompress)
    ref = str(tmp_path / "ref.bam")
    sh("samtools", "merge", "-c", "-p", "-o", ref, *sorted_parts)
    assert view(res.path) == view(ref)
    sh("samtools", "quickcheck", "-v", res.path)
    assert res.counts.records == samtools_count(ref) == sum(samtools_count(p) for p in sorted_parts)
    assert res.counts.primary == samtools_count(ref, "0x900") < res.counts.records
    assert [c.primary for c in res.part_counts] == [samtools_count(p, "0x900") for p in sorted_parts]
    assert sorted(os.listdir(tmp_path)) == ["m.bam", "ref.bam"]  # no temporary left


def test_merge_header_is_the_first_parts_plus_own_pg(sorted_parts: List[str], tmp_path: Path) -> None:
    out = str(tmp_path / "m.bam")
    assert main(["gather", "bam", "--merge", *sorted_parts, "-o", out]) == 0
    first = header(sorted_parts[0])
    got = header(out)
    own = [line for line in got if line.startswith("@PG\tID:genostage-gather")]
    assert len(own) == 1 and "\tPN:genostage" in own[0]
    assert f"CL:genostage gather bam --merge {' '.join(sorted_parts)} -o {out}" in own[0]
    last_pg = [line for line in first if line.startswith("@PG")][-1].split("\t")[1][3:]
    assert f"\tPP:{last_pg}\t" in own[0]
    assert [line for line in got if line not in own] == first  # the later parts' @PG (their paths) left out
    assert "scratch-job1" not in "\n".join(got)


def test_merge_by_name(tmp_path: Path) -> None:
    parts = chunk_bams(tmp_path, 3, order="queryname", seed=5)
    res = gather("bam=merge", parts, str(tmp_path / "n.bam"))
    ref = str(tmp_path / "ref.bam")
    sh("samtools", "merge", "-n", "-c", "-p", "-o", ref, *parts)
    assert view(res.path) == view(ref)
    assert "SO:queryname" in header(res.path)[0]


def test_merge_refuses_unsorted_parts(tmp_path: Path) -> None:
    parts = [write_bam(str(tmp_path / f"u{i}.bam"), REFS3, _reads(200, i), "unsorted") for i in range(2)]
    with pytest.raises(FormatError, match="SO:coordinate or SO:queryname.*SO:unsorted"):
        gather("bam=merge", parts, str(tmp_path / "m.bam"))
    assert not (tmp_path / "m.bam").exists() and len(os.listdir(tmp_path)) == 2


def test_merge_without_pysam_or_samtools(sorted_parts: List[str], tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PATH", str(tmp_path))  # no samtools on PATH
    with pytest.raises(UsageError, match=r"install pysam \(pip install 'genostage\[scatter\]'\) or put samtools on PATH"):
        gather("bam=merge", sorted_parts, str(tmp_path / "m.bam"), engine="binary")


def test_merge_refuses_lost_records(sorted_parts: List[str], tmp_path: Path) -> None:
    """The parts' counts the caller gives must match what the merge writes."""
    counts = [count_bam(p) for p in sorted_parts]
    counts[1] = Counts(counts[1].records + 1, counts[1].primary + 1)
    with pytest.raises(RecordsNotConserved, match="the parts hold"):
        gather("bam=merge", sorted_parts, str(tmp_path / "m.bam"), part_counts=counts)
    assert os.listdir(tmp_path) == []


# -- bam=cat and the header rule -----------------------------------------------------------
def split_parts(d: Path, n: int = 4, seed: int = 3) -> List[str]:
    src = write_bam(str(d / "in.bam"), REFS3, _reads(3000, seed), "coordinate")
    assert main(["split", "bam", src, "--out-dir", str(d / "parts"), "--parts", str(n)]) == 0
    return sorted(str(p) for p in (d / "parts").iterdir())


def test_cat_of_split_parts(tmp_path: Path) -> None:
    parts = split_parts(tmp_path)
    res = gather("bam=cat", parts, str(tmp_path / "c.bam"))
    assert view(res.path) == view(str(tmp_path / "in.bam"))
    assert res.counts.records == samtools_count(res.path)
    assert res.counts.primary == samtools_count(res.path, "0x900")
    assert [c.records for c in res.part_counts] == [samtools_count(p) for p in parts]
    sh("samtools", "quickcheck", "-v", res.path)


def test_cat_refuses_parts_out_of_coordinate_order(sorted_parts: List[str], tmp_path: Path) -> None:
    code = main(["gather", "bam", *sorted_parts, "-o", str(tmp_path / "c.bam")])
    assert code == 1 and os.listdir(tmp_path) == []


def _reheader(src: str, dest: str, edit) -> str:  # type: ignore[no-untyped-def]
    lines = [line for line in sh("samtools", "view", "-H", "--no-PG", src).splitlines()]
    text = "\n".join(edit(lines)) + "\n"
    Path(dest + ".sam").write_text(text)
    with open(dest, "wb") as fh:
        subprocess.run(["samtools", "reheader", "--no-PG", dest + ".sam", src], stdout=fh, check=True)
    os.unlink(dest + ".sam")
    return dest


@pytest.mark.parametrize("rule", ["bam=cat", "bam=merge"])
def test_headers_differing_in_pg_and_co_are_reconciled(tmp_path: Path, rule: str) -> None:
    parts = split_parts(tmp_path, 2)
    b = _reheader(parts[1], str(tmp_path / "b.bam"),
                  lambda ls: ls + ["@PG\tID:bwa\tPN:bwa\tCL:bwa mem /scratch/j1/ref.fa", "@CO\tjob 1 of 2"])
    res = gather(rule, [parts[0], b], str(tmp_path / "g.bam"), command_line="gather it")
    got = header(res.path)
    assert got[:len(header(parts[0]))] == header(parts[0])
    assert any(line.startswith("@PG\tID:genostage-gather") and line.endswith("CL:gather it") for line in got)
    assert not any("bwa" in line or "@CO" in line for line in got)
    assert view(res.path) == view(str(tmp_path / "in.bam"))


def test_read_groups_of_later_parts_are_added(tmp_path: Path) -> None:
    parts = split_parts(tmp_path, 2)
    b = _reheader(parts[1], str(tmp_path / "b.bam"), lambda ls: ls + ["@RG\tID:g2\tSM:s2"])
    res = gather("bam=cat", [parts[0], b], str(tmp_path / "g.bam"))
    rgs = [line for line in header(res.path) if line.startswith("@RG")]
    assert rgs == ["@RG\tID:g1\tSM:sample1", "@RG\tID:g2\tSM:s2"]
    c = _reheader(parts[1], str(tmp_path / "c.bam"), lambda ls: ls + ["@RG\tID:g2\tSM:other"])
    with pytest.raises(FormatError, match="read group g2 differs"):
        gather("bam=cat", [b, c], str(tmp_path / "h.bam"))


@pytest.mark.parametrize("how", ["length", "name", "order", "count"])
@pytest.mark.parametrize("rule", ["bam=cat", "bam=merge"])
def test_different_reference_dictionary_is_refused(tmp_path: Path, rule: str, how: str) -> None:
    refs = list(REFS3)
    if how == "length":
        refs[1] = ("chr2", 150_001)
    elif how == "name":
        refs[1] = ("chr2_alt", 150_000)
    elif how == "order":
        refs[0], refs[1] = refs[1], refs[0]
    else:
        refs = refs[:2]
    reads = [r for r in _reads(400, 9) if r["ref"] < 2]
    a = write_bam(str(tmp_path / "a.bam"), REFS3, reads, "coordinate")
    b = write_bam(str(tmp_path / "b.bam"), refs, reads, "coordinate")
    proc = genostage(["gather", "bam", *(["--merge"] if rule == "bam=merge" else []), a, b, "-o",
                      str(tmp_path / "g.bam")])
    assert proc.returncode == 1
    msg = proc.stderr.strip()
    assert "\n" not in msg and "reference dictionary (@SQ) differs" in msg and a in msg and b in msg
    if how in ("length", "name"):
        assert "reference 2 is" in msg and "chr2" in msg
    elif how == "order":
        assert "reference 1 is chr2" in msg
    else:
        assert "2 references here, 3 there" in msg and "chrM" in msg
    assert not (tmp_path / "g.bam").exists() and sorted(os.listdir(tmp_path)) == ["a.bam", "b.bam"]


def test_count_bam_matches_samtools(sorted_parts: List[str]) -> None:
    for p in sorted_parts:
        c = count_bam(p, threads=1)
        assert (c.records, c.primary) == (samtools_count(p), samtools_count(p, "0x900"))
        assert count("bam", p) == c


def test_expect_refuses_and_writes_nothing(tmp_path: Path) -> None:
    parts = split_parts(tmp_path, 2)
    total = samtools_count(str(tmp_path / "in.bam"), "0x900")
    assert main(["gather", "bam", *parts, "-o", str(tmp_path / "ok.bam"), "--expect", str(total)]) == 0
    assert main(["gather", "bam", *parts, "-o", str(tmp_path / "g.bam"), "--expect", str(total + 1)]) == 11
    assert not (tmp_path / "g.bam").exists()
    with pytest.raises(RecordsNotConserved, match="lost: 1"):
        gather("bam=cat", parts, str(tmp_path / "g.bam"), expect=total + 1)


# -- vcf=concat ----------------------------------------------------------------------------
VCF_HEAD = ("##fileformat=VCFv4.2\n##FILTER=<ID=PASS,Description=\"All filters passed\">\n"
            "##contig=<ID=chr1,length=100000>\n##contig=<ID=chr2,length=50000>\n"
            "##INFO=<ID=DP,Number=1,Type=Integer,Description=\"Depth\">\n"
            "##FORMAT=<ID=GT,Number=1,Type=String,Description=\"Genotype\">\n")


def vcf_part(path: Path, chrom: str, lo: int, hi: int, seed: int, extra: str = "", samples: str = "s1\ts2",
             head: str = VCF_HEAD, n: int = 1500) -> str:
    rng = random.Random(seed)
    lines = [head + extra + f"##bcftools_callCommand=call -r {chrom}:{lo}-{hi} /scratch/job{seed}/in.bam\n"
             f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{samples}\n"]
    for pos in sorted(rng.sample(range(lo, hi), n)):
        gts = "\t".join(rng.choice(["0/1", "1/1", "0/0"]) for _ in samples.split("\t"))
        lines.append(f"{chrom}\t{pos}\t.\tA\tG\t{rng.randint(10, 99)}\tPASS\tDP={rng.randint(1, 99)}\tGT\t{gts}\n")
    plain = str(path)[:-3]
    Path(plain).write_text("".join(lines))
    sh("bgzip", "-f", plain)
    return str(path)


@pytest.fixture
def vcf_parts(tmp_path: Path) -> List[str]:
    return [vcf_part(tmp_path / "p0.vcf.gz", "chr1", 1, 50_000, 1),
            vcf_part(tmp_path / "p1.vcf.gz", "chr1", 50_000, 100_000, 2,
                     extra="##INFO=<ID=MQ,Number=1,Type=Integer,Description=\"Mapping quality\">\n"),
            vcf_part(tmp_path / "p2.vcf.gz", "chr2", 1, 50_000, 3, n=10),
            vcf_part(tmp_path / "p3.vcf.gz", "chr2", 30_000, 30_001, 4, n=0)]  # a region without calls


@pytest.mark.parametrize("index", [None, "tbi", "csi"])
def test_vcf_concat_equals_bcftools_concat(vcf_parts: List[str], tmp_path: Path, index: str) -> None:
    out = str(tmp_path / "out" / "all.vcf.gz")
    res = gather("vcf=concat", vcf_parts, out, index=index)
    ref = str(tmp_path / "ref.vcf.gz")
    sh("bcftools", "concat", "-Oz", "-o", ref, *vcf_parts)
    assert sh("bcftools", "view", "-H", out) == sh("bcftools", "view", "-H", ref)
    n = len(sh("bcftools", "view", "-H", ref).splitlines())
    assert res.counts.records == n == 3010 and [c.records for c in res.part_counts] == [1500, 1500, 10, 0]
    head = sh("bcftools", "view", "-h", out)
    assert "##INFO=<ID=MQ" in head and head.count("##bcftools_callCommand") == 1 and "##genostage_gatherCommand" in head
    if index:
        assert res.index == f"{out}.{index}" and os.path.exists(res.index)
        region = sh("bcftools", "view", "-H", out, "chr1:60000-70000").splitlines()  # through the index
        assert region and region == [line for line in sh("bcftools", "view", "-H", ref).splitlines()
                                     if line.split("\t")[0] == "chr1" and 60000 <= int(line.split("\t")[1]) <= 70000]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(["all.vcf.gz"] + ([f"all.vcf.gz.{index}"] if index else []))


def test_vcf_parts_are_put_in_region_order(vcf_parts: List[str], tmp_path: Path) -> None:
    shuffled = [vcf_parts[2], vcf_parts[0], vcf_parts[3], vcf_parts[1]]
    res = gather("vcf=concat", shuffled, str(tmp_path / "all.vcf.gz"))
    ref = str(tmp_path / "ref.vcf.gz")
    sh("bcftools", "concat", "-Oz", "-o", ref, *vcf_parts)
    assert sh("bcftools", "view", "-H", res.path) == sh("bcftools", "view", "-H", ref)
    assert [c.records for c in res.part_counts] == [10, 1500, 0, 1500]  # in the order given


def test_vcf_refusals(vcf_parts: List[str], tmp_path: Path) -> None:
    other = vcf_part(tmp_path / "x.vcf.gz", "chr1", 1, 100, 5, n=3, head=VCF_HEAD.replace("length=50000", "length=5"))
    with pytest.raises(FormatError, match=r"##contig lines differ from .*p0.vcf.gz's: contig 2 is chr2 \(length 5\)"):
        gather("vcf=concat", [vcf_parts[0], other], str(tmp_path / "o.vcf.gz"))
    samples = vcf_part(tmp_path / "s.vcf.gz", "chr2", 1, 100, 6, n=3, samples="s1\ts3")
    with pytest.raises(FormatError, match="#CHROM line .samples. differs"):
        gather("vcf=concat", [vcf_parts[0], samples], str(tmp_path / "o.vcf.gz"))
    overlap = vcf_part(tmp_path / "v.vcf.gz", "chr1", 40_000, 60_000, 7, n=50)
    with pytest.raises(FormatError, match="parts overlap or are out of order"):
        gather("vcf=concat", [vcf_parts[0], overlap], str(tmp_path / "o.vcf.gz"))
    plain = tmp_path / "plain.vcf"
    plain.write_text(gzip.decompress(Path(vcf_parts[2]).read_bytes()).decode())
    with pytest.raises(FormatError, match="not BGZF-compressed"):
        gather("vcf=concat", [vcf_parts[0], str(plain)], str(tmp_path / "o.vcf.gz"))
    assert not (tmp_path / "o.vcf.gz").exists()


def test_bcf_concat(vcf_parts: List[str], tmp_path: Path) -> None:
    bcfs = []
    for i in (0, 2):
        bcfs.append(str(tmp_path / f"p{i}.bcf"))
        sh("bcftools", "view", "-Ob", "-o", bcfs[-1], vcf_parts[i])
    res = gather("vcf=concat", bcfs, str(tmp_path / "all.bcf"), index="csi")
    ref = str(tmp_path / "ref.bcf")
    sh("bcftools", "concat", "-Ob", "-o", ref, *bcfs)
    assert sh("bcftools", "view", "-H", res.path) == sh("bcftools", "view", "-H", ref)
    assert res.counts.records == 1510 == count_vcf(ref)
    assert len(sh("bcftools", "view", "-H", res.path, "chr2").splitlines()) == 10
    mixed = str(tmp_path / "p1.bcf")
    sh("bcftools", "view", "-Ob", "-o", mixed, vcf_parts[1])  # has ##INFO=<ID=MQ>: another dictionary
    with pytest.raises(FormatError, match="BCF header dictionary"):
        gather("vcf=concat", [bcfs[0], mixed], str(tmp_path / "x.bcf"))


def test_count_vcf_matches_bcftools(vcf_parts: List[str]) -> None:
    for p in vcf_parts:
        assert count_vcf(p) == len(sh("bcftools", "view", "-H", p).splitlines())


# -- fastq=cat -------------------------------------------------------------------------------
def fastq_text(n: int, seed: int) -> str:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randint(20, 150)
        out.append(f"@r{seed}_{i} x\n{''.join(rng.choice('ACGTN') for _ in range(k))}\n+\n{'I' * k}\n")
    return "".join(out)


@pytest.mark.parametrize("fmt", ["plain", "gzip", "bgzf"])
def test_fastq_cat(tmp_path: Path, fmt: str) -> None:
    parts = []
    for i, n in enumerate([300, 0, 1200, 7]):
        p = tmp_path / f"c{i}.fq"
        p.write_text(fastq_text(n, i))
        if fmt == "gzip":
            sh("gzip", "-f", str(p))
            p = tmp_path / f"c{i}.fq.gz"
        elif fmt == "bgzf":
            sh("bgzip", "-f", str(p))
            p = tmp_path / f"c{i}.fq.gz"
        parts.append(str(p))
    out = str(tmp_path / ("all.fq" if fmt == "plain" else "all.fq.gz"))
    res = gather("fastq=cat", parts, out)
    stats = sh("seqkit", "stats", "-T", out).splitlines()[1].split("\t")
    assert res.counts.records == int(stats[3]) == 1507
    assert [c.records for c in res.part_counts] == [300, 0, 1200, 7]
    assert sh("seqkit", "seq", "-n", out).splitlines() == [
        line[1:] for i, n in enumerate([300, 0, 1200, 7]) for line in fastq_text(n, i).splitlines()[0::4]]


def test_fastq_cat_refuses_bad_parts(tmp_path: Path) -> None:
    good = tmp_path / "a.fq"
    good.write_text(fastq_text(10, 1))
    bad = tmp_path / "b.fq"
    bad.write_text(fastq_text(3, 2) + "@broken\nACGT\n+\nII\n")
    proc = genostage(["gather", "fastq", str(good), str(bad), "-o", str(tmp_path / "all.fq")])
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"genostage: Error in FASTQ file {bad} at line 16: quality and sequence lengths differ"
    assert not (tmp_path / "all.fq").exists()
    sh("gzip", "-k", str(good))
    with pytest.raises(FormatError, match="parts must be compressed alike"):
        gather("fastq=cat", [str(good), str(good) + ".gz"], str(tmp_path / "all.fq"))


# -- text=cat ---------------------------------------------------------------------------------
def _texts(tmp_path: Path, *bodies: str) -> List[str]:
    out = []
    for i, b in enumerate(bodies):
        p = tmp_path / f"t{i}.txt"
        p.write_text(b)
        out.append(str(p))
    return out


def test_text_cat_header_rules(tmp_path: Path) -> None:
    same_hash = _texts(tmp_path, "#v1\n#a\tb\n1\t2\n", "", "#v1\n#a\tb\n3\t4")
    res = gather("text=cat", same_hash, str(tmp_path / "o1"))
    assert Path(res.path).read_text() == "#v1\n#a\tb\n1\t2\n3\t4\n" and res.counts.records == 2
    first_line = _texts(tmp_path, "a\tb\n1\t2\n", "a\tb\n5\t6\n")
    assert Path(gather("text=cat", first_line, str(tmp_path / "o2")).path).read_text() == "a\tb\n1\t2\n5\t6\n"
    no_header = _texts(tmp_path, "x 1\n", "y 2\n")
    assert Path(gather("text=cat", no_header, str(tmp_path / "o3")).path).read_text() == "x 1\ny 2\n"
    differ = _texts(tmp_path, "#cmd /scratch/a\n1\n", "#cmd /scratch/b\n2\n")
    with pytest.raises(FormatError, match="header differs from .*t0.txt's at its line 1: '#cmd /scratch/b'"):
        gather("text=cat", differ, str(tmp_path / "o4"))
    assert not (tmp_path / "o4").exists()
    assert Path(gather("text=cat", differ, str(tmp_path / "o4"), header="first").path).read_text() == \
        "#cmd /scratch/a\n1\n2\n"
    assert Path(gather("text=cat", differ, str(tmp_path / "o5"), header="none").path).read_text() == \
        "#cmd /scratch/a\n1\n#cmd /scratch/b\n2\n"
    numbered = _texts(tmp_path, "h1\nh2\n1\n", "h1\nh2\n2\n")
    assert Path(gather("text=cat", numbered, str(tmp_path / "o6"), header="2").path).read_text() == "h1\nh2\n1\n2\n"


# -- rules, globs -------------------------------------------------------------------------------
def test_parse_rule_and_natural_order(tmp_path: Path) -> None:
    assert parse_rule("bam=merge") == ("bam", "merge") and parse_rule("bam") == ("bam", "cat")
    with pytest.raises(UsageError, match="unknown gather rule"):
        parse_rule("cram=merge")
    names = [f"part-{i}.bam" for i in (10, 2, 1, 0, 9)]
    assert sorted(names, key=natural_key) == ["part-0.bam", "part-1.bam", "part-2.bam", "part-9.bam", "part-10.bam"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    assert expand_parts([str(tmp_path / "part-*.bam")], Stores()) == [str(tmp_path / n) for n in
                                                                      sorted(names, key=natural_key)]
    with pytest.raises(NotFound, match="no file matches"):
        expand_parts([str(tmp_path / "nope-*.bam")], Stores())


def _upload_parts(client, bucket: str, parts: Sequence[str], prefix: str) -> None:  # type: ignore[no-untyped-def]
    for i, p in enumerate(parts):
        put(client, bucket, f"{prefix}/part-{i}.bam", Path(p).read_bytes())


@pytest.mark.parametrize("s3", ["moto", "rclone"], indirect=True)
def test_gather_s3_glob_to_s3(tmp_path: Path, s3, s3_client, bucket: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """12 parts: the glob's natural order puts part-10 after part-9; the output is uploaded, verified,
    and no local directory named s3: appears."""
    src = write_bam(str(tmp_path / "in.bam"), REFS3, _reads(3000, 8), "coordinate")
    assert main(["split", "bam", src, "--out-dir", str(tmp_path / "parts"), "--parts", "12"]) == 0
    parts = sorted((str(p) for p in (tmp_path / "parts").iterdir()), key=natural_key)
    _upload_parts(s3_client, bucket, parts, "out")
    put(s3_client, bucket, "out/part-1.bam.bai", b"not a part")
    put(s3_client, bucket, "out/sub/part-99.bam", b"not a part either")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["gather", "bam", f"s3://{bucket}/out/part-*.bam", "-o", f"s3://{bucket}/final/all.bam",
                 "--tmp-dir", str(tmp_path)]) == 0
    assert os.listdir(work) == [] and not [p for p in os.listdir(tmp_path) if p.startswith("genostage-")]
    got = tmp_path / "got.bam"
    got.write_bytes(s3_client.get_object(Bucket=bucket, Key="final/all.bam")["Body"].read())
    assert view(str(got)) == view(src)
    assert main(["gather", "bam", "--merge", f"s3://{bucket}/out/part-?.bam", f"s3://{bucket}/out/part-1?.bam",
                 "-o", str(tmp_path / "m.bam"), "--tmp-dir", str(tmp_path)]) == 0
    assert view(str(tmp_path / "m.bam")) == view(src)
    assert main(["gather", "bam", f"s3://{bucket}/out/nothing-*.bam", "-o", str(tmp_path / "x.bam")]) == 3


@pytest.mark.parametrize("s3", ["moto", "rclone"], indirect=True)
def test_gather_vcf_from_and_to_s3(vcf_parts: List[str], tmp_path: Path, s3, s3_client, bucket: str) -> None:  # type: ignore[no-untyped-def]
    for i, p in enumerate(vcf_parts):
        put(s3_client, bucket, f"calls/part-{i}.vcf.gz", Path(p).read_bytes())
    proc = genostage(["gather", "vcf", f"s3://{bucket}/calls/part-*.vcf.gz", "-o", f"s3://{bucket}/all.vcf.gz",
                      "--index", "tbi", "--tmp-dir", str(tmp_path)], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert keys(s3_client, bucket, "all") == ["all.vcf.gz", "all.vcf.gz.tbi"]
    local = tmp_path / "all.vcf.gz"
    local.write_bytes(s3_client.get_object(Bucket=bucket, Key="all.vcf.gz")["Body"].read())
    ref = str(tmp_path / "ref.vcf.gz")
    sh("bcftools", "concat", "-Oz", "-o", ref, *vcf_parts)
    assert sh("bcftools", "view", "-H", str(local)) == sh("bcftools", "view", "-H", ref)
    assert not (tmp_path / "s3:").exists()


# -- full disk ----------------------------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 2 MiB tmpfs (root only)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_is_exit_7_and_one_line(tmp_path: Path, small_fs: Path) -> None:
    src = write_bam(str(tmp_path / "in.bam"), REFS3, _reads(20000, 2), "coordinate")
    assert os.path.getsize(src) > 2 << 20
    assert main(["split", "bam", src, "--out-dir", str(tmp_path / "parts"), "--parts", "3"]) == 0
    parts = sorted(str(p) for p in (tmp_path / "parts").iterdir())
    for args in (["gather", "bam", *parts, "-o", str(small_fs / "all.bam")],
                 ["gather", "bam", "--merge", *parts, "-o", str(small_fs / "all.bam")],
                 ["split", "bam", src, "--out-dir", str(small_fs / "p"), "--parts", "2"]):
        proc = genostage(args)
        assert proc.returncode == 7, proc.stderr
        assert proc.stderr.count("\n") == 1 and "no space left" in proc.stderr and "Traceback" not in proc.stderr
        left = [str(p) for p in small_fs.rglob("*") if p.is_file()]
        assert left == []


def test_record_counter_across_any_feed_sizes(sorted_parts: List[str]) -> None:
    """Records cut anywhere between feeds (in the length field, the fixed fields, the header)."""
    from genostage.codec import _bgzf as K
    from genostage.split.bam_check import RecordCounter

    raw = Path(sorted_parts[0]).read_bytes()
    data = b"".join(K.inflate(raw, o) for o in K.walk_blocks(raw, 0, True)[3] or [])
    want = (samtools_count(sorted_parts[0]), samtools_count(sorted_parts[0], "0x900"))
    rng = random.Random(4)
    for sizes in ([1, 2, 3, 5, 7], [300, 64 << 10], [1 << 20]):
        counter = RecordCounter("x", header=True)
        pos = 0
        while pos < len(data):
            n = rng.choice(sizes)
            counter(data[pos:pos + n])
            pos += n
        c = counter.close()
        assert (c.records, c.primary) == want
    counter = RecordCounter("x", header=True)
    counter(data[:-10])
    with pytest.raises(FormatError, match="ends inside a BAM record"):
        counter.close()


def test_gather_to_stdout_and_without_the_check(tmp_path: Path) -> None:
    parts = split_parts(tmp_path, 3)
    proc = subprocess.run([*genostage_cmd(), "gather", "bam", *parts, "-o", "-"], capture_output=True, check=True)
    (tmp_path / "s.bam").write_bytes(proc.stdout)
    assert view(str(tmp_path / "s.bam")) == view(str(tmp_path / "in.bam"))
    res = gather("bam=cat", parts, str(tmp_path / "n.bam"), crc=False)
    assert res.counts is None and view(res.path) == view(str(tmp_path / "in.bam"))
    with pytest.raises(UsageError, match="needs the CRC check"):
        gather("bam=cat", parts, str(tmp_path / "x.bam"), crc=False, expect=3)


def genostage_cmd() -> List[str]:
    import sys

    return [sys.executable, "-m", "genostage"]


def test_sigterm_stops_a_merge_cleanly(tmp_path: Path) -> None:
    """SIGTERM mid-merge: exit 143, samtools gone, nothing left in the output's directory."""
    import signal
    import sys
    import time

    parts = chunk_bams(tmp_path / "in", 4, n=60000, seed=13)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "genostage", "gather", "bam", "--merge", "--threads", "1", *parts,
                             "-o", str(out_dir / "m.bam")], stderr=subprocess.PIPE, text=True)

    def children() -> List[int]:
        found = []
        for pid in os.listdir("/proc"):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if pid.isdigit() and int(pid) != proc.pid and "merge" in cmd and parts[0] in cmd:
                found.append(int(pid))
        return found

    deadline = time.monotonic() + 60
    while not children() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the merge ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    time.sleep(0.2)
    assert children() == [] and os.listdir(out_dir) == []
