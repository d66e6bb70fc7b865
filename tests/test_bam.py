"""BAM splitting by block copy: every chunk is a valid BAM and the chunks hold the input's records in order."""
from __future__ import annotations

import argparse
import gzip
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

pysam = pytest.importorskip("pysam")

from genostage.codec.bgzf import EOF_BLOCK, compress_block  # noqa: E402
from genostage.cli import main  # noqa: E402
from genostage.cli.split_bam import register_bam  # noqa: E402
from genostage.errors import FormatError, ObjectChanged  # noqa: E402
from genostage.split.bam import make_plan, split_bam  # noqa: E402
from genostage.split.bam_gather import gather_to_file  # noqa: E402
from genostage.split.plan import fetch_chunk, save  # noqa: E402
from genostage.store import Stores  # noqa: E402

BASES = "ACGT"


# -- making test BAMs ---------------------------------------------------------
def _read(rng: random.Random, name: str, ref: int, pos: int, length: int, flag: int,
          mate_ref: int = -1, mate_pos: int = -1) -> Dict:
    return {"name": name, "ref": ref, "pos": pos, "flag": flag, "seq": "".join(rng.choice(BASES) for _ in range(length)),
            "qual": [rng.randint(2, 40) for _ in range(length)], "mate_ref": mate_ref, "mate_pos": mate_pos}


def make_reads(kind: str, n: int, refs: Sequence[Tuple[str, int]], seed: int = 1) -> List[Dict]:
    rng = random.Random(seed)
    reads: List[Dict] = []
    if kind == "unmapped":
        return [_read(rng, f"u{i:06d}", -1, -1, rng.randint(20, 120), 4) for i in range(n)]
    for i in range(n // 2):
        ref = rng.randrange(len(refs))
        length = rng.randint(30, 150)
        p1 = rng.randrange(0, refs[ref][1] - 600)
        p2 = p1 + rng.randint(0, 400)
        reads.append(_read(rng, f"q{i:06d}", ref, p1, length, 99, ref, p2))
        reads.append(_read(rng, f"q{i:06d}", ref, p2, length, 147, ref, p1))
    for i in range(n - len(reads)):
        reads.append(_read(rng, f"z{i:06d}", -1, -1, 50, 4))
    if kind == "coordinate":
        reads.sort(key=lambda r: ((r["ref"] if r["ref"] >= 0 else 1 << 30), r["pos"]))
    elif kind == "name":
        reads.sort(key=lambda r: (r["name"], r["flag"]))
    return reads


def write_bam(path: str, refs: Sequence[Tuple[str, int]], reads: Sequence[Dict], sort: str = "unknown",
              reblock_seed: Optional[int] = 7) -> str:
    """Write ``reads`` with pysam; then, unless ``reblock_seed`` is None, re-cut the BGZF blocks at random
    sizes so that records straddle block edges (htslib starts each record in a new block when it can)."""
    header = {"HD": {"VN": "1.6", "SO": sort}, "SQ": [{"SN": n, "LN": ln} for n, ln in refs],
              "RG": [{"ID": "g1", "SM": "sample1"}], "PG": [{"ID": "test", "PN": "pytest"}]}
    with pysam.AlignmentFile(path, "wb", header=header) as out:
        for r in reads:
            a = pysam.AlignedSegment(out.header)
            a.query_name = r["name"]
            a.flag = r["flag"]
            a.reference_id = r["ref"]
            a.reference_start = r["pos"]
            a.mapping_quality = 60 if r["ref"] >= 0 else 0
            a.cigartuples = [(0, len(r["seq"]))] if r["ref"] >= 0 else None
            a.next_reference_id = r["mate_ref"]
            a.next_reference_start = r["mate_pos"]
            a.query_sequence = r["seq"]
            a.query_qualities = pysam.qualitystring_to_array("".join(chr(q + 33) for q in r["qual"]))
            a.set_tag("RG", "g1")
            out.write(a)
    if reblock_seed is not None:
        reblock(path, random.Random(reblock_seed))
    return path


def reblock(path: str, rng: random.Random) -> None:
    with open(path, "rb") as fh:
        data = gzip.decompress(fh.read())
    with open(path, "wb") as fh:
        pos = 0
        while pos < len(data):
            n = rng.choice([rng.randint(1, 300), rng.randint(300, 0xFF00), 0xFF00])
            fh.write(compress_block(data[pos:pos + n]))
            pos += n
        fh.write(EOF_BLOCK)


def records(path: str) -> List[str]:
    with pysam.AlignmentFile(path, "rb", check_sq=False) as fh:
        return [r.to_string() for r in fh.fetch(until_eof=True)]


def header_text(path: str) -> str:
    with pysam.AlignmentFile(path, "rb", check_sq=False) as fh:
        return str(fh.header)


def quickcheck(paths: Sequence[str]) -> None:
    if shutil.which("samtools"):
        subprocess.run(["samtools", "quickcheck", "-u", "-v", *paths], check=True)


REFS3 = [("chr1", 200_000), ("chr2", 150_000), ("chrM", 16_569)]


@pytest.fixture(scope="module")
def bams(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    d = tmp_path_factory.mktemp("bams")
    out: Dict[str, str] = {}
    out["coordinate"] = write_bam(str(d / "coord.bam"), REFS3, make_reads("coordinate", 3000, REFS3), "coordinate")
    out["name"] = write_bam(str(d / "name.bam"), REFS3, make_reads("name", 3000, REFS3, seed=2), "queryname")
    out["htslib_blocks"] = write_bam(str(d / "aligned.bam"), REFS3, make_reads("coordinate", 2000, REFS3, seed=3),
                                     "coordinate", reblock_seed=None)
    out["unmapped"] = write_bam(str(d / "unmapped.bam"), [], make_reads("unmapped", 1500, []))
    rng = random.Random(4)
    big = [_read(rng, f"long{i:03d}", 0, 1000 * i, rng.randint(70_000, 140_000), 0) for i in range(12)]
    small = make_reads("coordinate", 200, [("chr1", 200_000)], seed=5)
    mixed = sorted(big + [r for r in small if r["ref"] == 0], key=lambda r: r["pos"])
    out["long"] = write_bam(str(d / "long.bam"), [("chr1", 200_000)], mixed, "coordinate")
    out["one"] = write_bam(str(d / "one.bam"), REFS3, make_reads("coordinate", 2, REFS3)[:1], "coordinate")
    out["empty"] = write_bam(str(d / "empty.bam"), REFS3, [], "coordinate")
    many = [(f"contig_{i:05d}_with_a_long_name", 5000 + i) for i in range(3000)]
    out["many_refs"] = write_bam(str(d / "many.bam"), many, make_reads("coordinate", 800, many, seed=6), "coordinate")
    return out


def check_parts(src: str, parts: Sequence[str]) -> None:
    quickcheck(parts)
    got: List[str] = []
    for p in parts:
        assert header_text(p) == header_text(src)
        got.extend(records(p))
    assert got == records(src)


# -- split to files -----------------------------------------------------------
@pytest.mark.parametrize("name", ["coordinate", "name", "htslib_blocks", "unmapped", "long", "one", "empty", "many_refs"])
@pytest.mark.parametrize("parts", [1, 2, 3, 7, 16])
def test_split_parts_keeps_every_record(bams: Dict[str, str], tmp_path, name: str, parts: int) -> None:
    report = split_bam(bams[name], str(tmp_path / "out"), Stores(), parts=parts)
    paths = [p["path"] for p in report["parts"]]
    assert len(paths) == parts
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.path.basename(p) for p in paths)
    check_parts(bams[name], paths)


def test_split_copies_inner_blocks_byte_for_byte(bams: Dict[str, str], tmp_path) -> None:
    from genostage.codec import _bgzf as K

    report = split_bam(bams["coordinate"], str(tmp_path / "o"), Stores(), parts=3)
    src = Path(bams["coordinate"]).read_bytes()
    for part in report["parts"]:
        body = Path(part["path"]).read_bytes()
        offsets = K.walk_blocks(body, 0, True)[3] or []
        blocks = [body[a:b] for a, b in zip(offsets, offsets[1:] + [len(body)])]
        foreign = [b for b in blocks if src.find(b) < 0]
        # only the header block and the two edge blocks are new; all others are the source's own
        assert len(foreign) <= 3 and part["blocks_reencoded"] <= 2
        assert part["blocks_copied"] == len(blocks) - len(foreign) - 1  # minus the EOF block
        assert part["blocks_copied"] >= 2


@pytest.mark.parametrize("name,every", [(n, e) for n in ("coordinate", "name", "empty") for e in (7, 500, 10_000)]
                         + [("long", 1), ("long", 7), ("long", 500)])
def test_split_records(bams: Dict[str, str], tmp_path, name: str, every: int) -> None:
    report = split_bam(bams[name], str(tmp_path / "o"), Stores(), records=every, threads=2)
    paths = [p["path"] for p in report["parts"]]
    check_parts(bams[name], paths)
    counts = [len(records(p)) for p in paths]
    assert all(c == every for c in counts[:-1])
    assert 0 < counts[-1] <= every or (counts == [0] and name == "empty")


@pytest.mark.parametrize("how", [{"records": 3}, {"records": 100}, {"parts": 5}, {"parts": 40}])
def test_split_by_name_keeps_pairs_together(bams: Dict[str, str], tmp_path, how: Dict[str, Any]) -> None:
    report = split_bam(bams["name"], str(tmp_path / "o"), Stores(), by_name=True, **how)
    paths = [p["path"] for p in report["parts"]]
    check_parts(bams["name"], paths)
    seen: Dict[str, int] = {}
    for i, p in enumerate(paths):
        with pysam.AlignmentFile(p, "rb", check_sq=False) as fh:
            for r in fh.fetch(until_eof=True):
                assert seen.setdefault(r.query_name, i) == i, f"{r.query_name} in parts {seen[r.query_name]} and {i}"


def test_split_bytes(bams: Dict[str, str], tmp_path) -> None:
    size = os.path.getsize(bams["coordinate"])
    report = split_bam(bams["coordinate"], str(tmp_path / "o"), Stores(), size=size // 4)
    assert 4 <= len(report["parts"]) <= 5
    check_parts(bams["coordinate"], [p["path"] for p in report["parts"]])


# -- plans, chunks and gather (local) ------------------------------------------
@pytest.mark.parametrize("name", ["coordinate", "long", "many_refs", "empty"])
def test_plan_chunks_local(bams: Dict[str, str], tmp_path, name: str) -> None:
    stores = Stores()
    plan = make_plan(bams[name], stores, parts=4)
    assert len(plan.chunks) == 4
    save(plan, str(tmp_path / "plan.json"), stores)
    paths = []
    for i in range(4):
        stats = fetch_chunk(str(tmp_path / "plan.json"), i, str(tmp_path / f"c{i}.bam"), stores)
        paths.append(stats["path"])
    check_parts(bams[name], paths)
    out = gather_to_file(paths, str(tmp_path / "all.bam"), stores)
    assert records(out["path"]) == records(bams[name])
    quickcheck([out["path"]])


def test_plan_refused_when_file_changed(bams: Dict[str, str], tmp_path) -> None:
    path = str(tmp_path / "x.bam")
    shutil.copy(bams["coordinate"], path)
    plan = make_plan(path, Stores(), parts=2)
    with open(path, "ab") as fh:
        fh.write(EOF_BLOCK)
    with pytest.raises(ObjectChanged):
        fetch_chunk(plan, 0, str(tmp_path / "c.bam"), Stores())
    assert not os.path.exists(tmp_path / "c.bam")


def test_gather_refuses_different_headers(bams: Dict[str, str], tmp_path) -> None:
    with pytest.raises(FormatError, match=r"reference dictionary \(@SQ\) differs from .*coord.bam.s: 0 references here, 3"):
        gather_to_file([bams["coordinate"], bams["unmapped"]], str(tmp_path / "g.bam"), Stores())
    assert os.listdir(tmp_path) == []


# -- bad input -----------------------------------------------------------------
def _split_error(path: str, tmp_path, **kw) -> FormatError:
    with pytest.raises(FormatError) as info:
        split_bam(path, str(tmp_path / "o"), Stores(), **kw)
    assert not os.path.exists(tmp_path / "o") or os.listdir(tmp_path / "o") == []
    assert path in str(info.value) and "\n" not in str(info.value)
    return info.value


def test_truncated_bam(bams: Dict[str, str], tmp_path) -> None:
    path = str(tmp_path / "t.bam")
    data = Path(bams["coordinate"]).read_bytes()
    Path(path).write_bytes(data[:-28])
    err = _split_error(path, tmp_path, parts=3)
    assert "EOF" in str(err) and err.offset == len(data) - 56
    Path(path).write_bytes(data[:len(data) // 2])
    _split_error(path, tmp_path, records=100)


def test_crc_mismatch(bams: Dict[str, str], tmp_path) -> None:
    data = bytearray(Path(bams["coordinate"]).read_bytes())
    size = int.from_bytes(data[16:18], "little") + 1
    data[size - 8] ^= 0xFF  # the first block's CRC32
    path = str(tmp_path / "crc.bam")
    Path(path).write_bytes(data)
    err = _split_error(path, tmp_path, parts=2)
    assert "CRC32" in str(err) and err.offset == 0


def test_not_bam(tmp_path) -> None:
    path = str(tmp_path / "text.bam")
    with open(path, "wb") as fh:
        fh.write(compress_block(b"@r1\nACGT\n+\nIIII\n") + EOF_BLOCK)
    assert "not a BAM" in str(_split_error(path, tmp_path, parts=2))
    Path(path).write_bytes(b"plain text, not BGZF at all\n" * 10)
    assert "BGZF" in str(_split_error(path, tmp_path, parts=2))


# -- command line --------------------------------------------------------------
def test_cli_plan_chunk_gather(bams: Dict[str, str], tmp_path, monkeypatch, capsysbinary) -> None:
    plan = str(tmp_path / "plan.json")
    assert main(["plan", "bam", bams["coordinate"], "--parts", "3", "-o", plan]) == 0
    monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "2")
    assert main(["chunk", plan, "-o", str(tmp_path / "c2.bam")]) == 0
    assert main(["chunk", plan, "--index", "0", "-o", str(tmp_path / "c0.bam")]) == 0
    capsysbinary.readouterr()
    assert main(["chunk", plan, "--index", "1"]) == 0
    Path(tmp_path / "c1.bam").write_bytes(capsysbinary.readouterr().out)
    parts = [str(tmp_path / f"c{i}.bam") for i in range(3)]
    check_parts(bams["coordinate"], parts)
    assert main(["gather", "bam", *parts, "-o", str(tmp_path / "g.bam")]) == 0
    assert records(str(tmp_path / "g.bam")) == records(bams["coordinate"])
    assert main(["chunk", plan, "--index", "3", "-o", str(tmp_path / "bad.bam")]) == 2
    assert main(["plan", "bam", str(tmp_path / "missing.bam"), "--parts", "2", "-o", plan]) == 3


def test_cli_split_bam(bams: Dict[str, str], tmp_path) -> None:
    parser = argparse.ArgumentParser()
    register_bam(parser.add_subparsers())
    args = parser.parse_args(["bam", bams["name"], "--out-dir", str(tmp_path / "o"), "--records", "100",
                              "--by-name", "--threads", "2"])
    assert args.func(args) == 0
    check_parts(bams["name"], sorted(str(p) for p in (tmp_path / "o").iterdir()))


def test_chunk_to_a_pipe(bams: Dict[str, str], tmp_path) -> None:
    """``genostage chunk -o -`` into a pipe (the kernel copy falls back to sendfile)."""
    import sys

    plan = str(tmp_path / "plan.json")
    assert main(["plan", "bam", bams["coordinate"], "--parts", "2", "-o", plan]) == 0
    parts = []
    for i in range(2):
        proc = subprocess.run([sys.executable, "-m", "genostage", "chunk", plan, "--index", str(i)],
                              stdout=subprocess.PIPE, check=True)
        Path(tmp_path / f"p{i}.bam").write_bytes(proc.stdout)
        parts.append(str(tmp_path / f"p{i}.bam"))
    check_parts(bams["coordinate"], parts)


# -- corrupt blocks (issue 12): a copied block is inflated and its CRC32/ISIZE checked ------------
def corrupt_copy(src: str, dest: str, where: str, at: float = 0.25) -> int:
    """Copy ``src`` with one bit flipped in the block at about ``at`` of the file (a block that is
    copied whole, not re-encoded); returns that block's offset."""
    from genostage.codec import _bgzf as K

    data = bytearray(Path(src).read_bytes())
    offsets = K.walk_blocks(bytes(data), 0, True)[3] or []
    off = next(o for o in offsets if o >= len(data) * at)
    size = K.block_size(bytes(data), off)
    pos = {"payload": off + 18 + (size - 26) // 2, "crc": off + size - 8, "isize": off + size - 4}[where]
    data[pos] ^= 0x01
    Path(dest).write_bytes(data)
    return off


CORRUPT_MESSAGES = {"payload": r"corrupt BGZF block \((it does not inflate|CRC32 mismatch)",
                    "crc": r"corrupt BGZF block \(CRC32 mismatch: the block says [0-9a-f]{8}, its data has [0-9a-f]{8}\)",
                    "isize": r"corrupt BGZF block \(ISIZE mismatch: the block says \d+ bytes, it inflates to \d+\)"}


def _one_line(err: str, path: str, offset: int, where: str) -> None:
    import re

    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"genostage: Error in BAM file {path} at offset {offset}: "), lines[0]
    assert re.search(CORRUPT_MESSAGES[where], lines[0]), lines[0]


@pytest.mark.parametrize("where", ["payload", "crc", "isize"])
def test_split_refuses_a_corrupt_block(bams: Dict[str, str], tmp_path, capsys, where: str) -> None:
    bad = str(tmp_path / "bad.bam")
    off = corrupt_copy(bams["coordinate"], bad, where)
    capsys.readouterr()
    for threads in ("1", "2"):
        assert main(["split", "bam", bad, "--out-dir", str(tmp_path / "o"), "--parts", "2", "--threads", threads]) == 1
        _one_line(capsys.readouterr().err, bad, off, where)
        assert os.listdir(tmp_path / "o") == []
    # the opt-out copies the block unread (what every split did before the check)
    assert main(["split", "bam", bad, "--out-dir", str(tmp_path / "o"), "--parts", "2", "--no-crc-check"]) == 0


@pytest.mark.parametrize("where", ["payload", "crc", "isize"])
def test_plan_chunk_refuses_a_corrupt_block(bams: Dict[str, str], tmp_path, capsys, where: str) -> None:
    bad = str(tmp_path / "bad.bam")
    plan = str(tmp_path / "plan.json")
    Path(bad).write_bytes(Path(bams["coordinate"]).read_bytes())
    assert main(["plan", "bam", bad, "--parts", "2", "-o", plan]) == 0
    off = corrupt_copy(bams["coordinate"], bad, where)  # same size: the plan still matches
    os.utime(bad, (os.stat(plan).st_mtime, json_mtime(plan)))
    capsys.readouterr()
    assert main(["chunk", plan, "--index", "0", "-o", str(tmp_path / "c0.bam")]) == 1
    _one_line(capsys.readouterr().err, bad, off, where)
    assert sorted(os.listdir(tmp_path)) == ["bad.bam", "plan.json"]
    assert main(["chunk", plan, "--index", "1", "-o", str(tmp_path / "c1.bam")]) == 0  # the other half is sound


def json_mtime(plan: str) -> float:
    import json

    return float(json.loads(Path(plan).read_text())["sources"][0]["mtime"])


@pytest.mark.parametrize("where", ["payload", "crc", "isize"])
def test_gather_refuses_a_corrupt_block(bams: Dict[str, str], tmp_path, capsys, where: str) -> None:
    report = split_bam(bams["coordinate"], str(tmp_path / "p"), Stores(), parts=2)
    parts = [p["path"] for p in report["parts"]]
    bad = str(tmp_path / "bad.bam")
    off = corrupt_copy(parts[1], bad, where, at=0.5)
    capsys.readouterr()
    for how in ([], ["--merge"]):
        assert main(["gather", "bam", *how, parts[0], bad, "-o", str(tmp_path / "g.bam")]) == 1
        _one_line(capsys.readouterr().err, bad, off, where)
        assert not (tmp_path / "g.bam").exists()
    assert sorted(os.listdir(tmp_path)) == ["bad.bam", "p"]
