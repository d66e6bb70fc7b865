"""Corrupt and hostile inputs: truncated and corrupt FASTQ, bad plans, bad sizes, corrupt BAM blocks,
and `split fastq` aimed at S3. The one acceptable outcome: one line with the documented exit code
(1 bad data, 2 usage), nothing half-written; or, for a valid request, the right bytes."""
from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from genostage.codec import bgzf
from tests.fastq_util import fastq

from .harness import Lab, cli, files, leftovers, ok, one_line_error

MOTO = pytest.mark.parametrize("lab", ["moto"], indirect=True)


def finding(text: str) -> Any:
    """An issue 12 finding this case reproduced before it was fixed."""
    return pytest.mark.finding(f"issue 12: {text}")


def bgzf_by_records(data: bytes, per_block: int = 400) -> bytes:
    """BGZF whose blocks end at record boundaries (as writers that flush per record batch do)."""
    lines = data.split(b"\n")
    blocks = []
    for i in range(0, len(lines) - 1, 4 * per_block):
        chunk = b"\n".join(lines[i:i + 4 * per_block]) + b"\n"
        blocks.append(bgzf.compress_block(chunk, 1))
    return b"".join(blocks) + bgzf.EOF_BLOCK


# -- FASTQ ---------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["split", "plan", "count"])
def test_bgzf_fastq_cut_at_a_block_boundary(tmp_path, command, chaos):
    """No EOF marker: the file was cut short, even though every block is whole."""
    chaos.tried("hostile-input", f"{command}: BGZF FASTQ cut at a block boundary (no EOF block)")
    whole = bgzf_by_records(fastq(4000, seed=3))
    cut = whole[:[off for off, _ in bgzf.iter_blocks(__import__("io").BytesIO(whole))][5]]
    src = tmp_path / "cut.fq.gz"
    src.write_bytes(cut)
    out = tmp_path / "chunks"
    if command == "split":
        r = cli(["-q", "split", "fastq", str(src), "-O", str(out), "--parts", "2"])
    elif command == "plan":
        r = cli(["-q", "plan", "fastq", str(src), "--parts", "2", "-o", str(tmp_path / "plan.json")])
    else:
        r = cli(["-q", "split", "fastq", str(src), "-O", str(out), "--records", "100", "--compress", "none"])
    one_line_error(r, 1, "truncated.*EOF")
    assert not out.exists() or files(out) == []
    assert not (tmp_path / "plan.json").exists()


@pytest.mark.parametrize("case", ["binary", "empty", "mid-record", "crlf-mix", "gzip-garbage", "no-plus"])
def test_bad_fastq(tmp_path, case, chaos):
    chaos.tried("hostile-input", f"split fastq of a bad FASTQ: {case}")
    good = fastq(500, seed=4)
    data = {
        "binary": bytes(range(256)) * 400,
        "empty": b"",
        "mid-record": good[:len(good) // 2 + 7],
        "crlf-mix": good.replace(b"\n", b"\r\n", 3)[:-3] + b"@x\nAC\n+\nI\n",
        "gzip-garbage": gzip.compress(good)[:-20] + b"\x00" * 20,
        "no-plus": good.replace(b"\n+", b"\n-", 1),
    }[case]
    src = tmp_path / "bad.fq"
    src.write_bytes(data)
    out = tmp_path / "chunks"
    r = cli(["-q", "split", "fastq", str(src), "-O", str(out), "--parts", "3"])
    one_line_error(r, 1, "bad.fq")
    assert not out.exists() or files(out) == []


def test_plain_gzip_cannot_be_planned_and_says_what_to_do(tmp_path, chaos):
    chaos.tried("hostile-input", "plan fastq of a plain-gzip FASTQ")
    src = tmp_path / "r.fq.gz"
    src.write_bytes(gzip.compress(fastq(2000, seed=6)))
    r = cli(["-q", "plan", "fastq", str(src), "--parts", "4", "-o", str(tmp_path / "plan.json")])
    one_line_error(r, 2, r"split fastq.*|bgzip")
    line = r.lines[0]
    assert "genostage split fastq" in line and "bgzip" in line
    assert not (tmp_path / "plan.json").exists()


@pytest.mark.parametrize("args", [
    ["--parts", "-3"], ["--parts", "0"], ["--records", "1X"], ["--bytes", "-1G"], ["--bases", "12.5"],
    ["--parts", "2", "--threads", "0"], ["--parts", "2", "--threads", "-1"], ["--parts", "2", "--level", "12"],
    ["--parts", "99999999999999999999"],
], ids=lambda a: " ".join(a))
def test_bad_sizes_for_split(tmp_path, args, chaos):
    chaos.tried("hostile-input", f"split fastq {' '.join(args)}")
    src = tmp_path / "r.fq"
    src.write_bytes(fastq(50, seed=7))
    r = cli(["-q", "split", "fastq", str(src), "-O", str(tmp_path / "o"), *args])
    one_line_error(r, 2)
    assert not (tmp_path / "o").exists() or files(tmp_path / "o") == []


@pytest.mark.parametrize("args", [
    ["plan", "fastq", "R", "--parts", "-1", "-o", "P"], ["plan", "fastq", "R", "--parts", "x", "-o", "P"],
    ["checksum", "-a", "etag", "--part-size", "-5MiB", "R"], ["checksum", "-a", "etag", "--part-size", "0", "R"],
    ["checksum", "--threads", "-2", "R"], ["chunk", "P", "--index", "-1", "-o", "C"],
], ids=lambda a: " ".join(a[:2] + a[3:5]))
def test_bad_sizes_elsewhere(tmp_path, args, chaos):
    chaos.tried("hostile-input", " ".join(args))
    src = tmp_path / "r.fq"
    src.write_bytes(fastq(50, seed=7))
    ok(cli(["-q", "plan", "fastq", str(src), "--parts", "2", "-o", str(tmp_path / "p.json")]))
    real = [{"R": str(src), "P": str(tmp_path / "p.json"), "C": str(tmp_path / "c.fq")}.get(a, a) for a in args]
    r = cli(["-q", *real])
    one_line_error(r, 2)
    assert not (tmp_path / "c.fq").exists()


# -- plans -----------------------------------------------------------------------------------
def _plan(tmp_path: Path) -> dict:
    src = tmp_path / "r.fq"
    src.write_bytes(fastq(3000, seed=8))
    ok(cli(["-q", "plan", "fastq", str(src), "--parts", "3", "-o", str(tmp_path / "good.json")]))
    return dict(json.loads((tmp_path / "good.json").read_text()))


def _break(plan: dict, how: str) -> Any:
    if how == "deep nesting":
        return "[" * 100000 + "]" * 100000
    if how == "not an object":
        return [1, 2, 3]
    p = json.loads(json.dumps(plan))
    if how == "chunks not a list":
        p["chunks"] = {"0": 1}
    elif how == "chunk not an object":
        p["chunks"][0] = 7
    elif how == "ranges missing":
        del p["chunks"][0]["ranges"]
    elif how == "range start > end":
        r = p["chunks"][1]["ranges"][0]
        r["start"], r["end"] = r["end"], r["start"]
    elif how == "range past the end":
        p["chunks"][2]["ranges"][0]["end"] = [p["sources"][0]["size"] + 100, 0]
    elif how == "start a string":
        p["chunks"][0]["ranges"][0]["start"] = "zero"
    elif how == "start a float":
        p["chunks"][0]["ranges"][0]["start"] = [0.5, 0]
    elif how == "negative offset":
        p["chunks"][0]["ranges"][0]["start"] = [-10, 0]
    elif how == "size a string":
        p["sources"][0]["size"] = "big"
    elif how == "uri missing":
        del p["sources"][0]["uri"]
    elif how == "source not an object":
        p["sources"][0] = "r.fq"
    elif how == "records a string":
        p["chunks"][0]["records"] = "many"
    elif how == "unknown format":
        p["sources"][0]["format"] = "cram"
    elif how == "two sources, one range":
        p["sources"].append(dict(p["sources"][0]))
    elif how == "index out of order":
        p["chunks"][0]["index"] = 2
    return p


BAD_PLANS = ["deep nesting", "not an object", "chunks not a list", "chunk not an object", "ranges missing",
             "range start > end", "range past the end", "start a string", "start a float", "negative offset",
             "size a string", "uri missing", "source not an object", "records a string", "unknown format",
             "two sources, one range", "index out of order"]


@pytest.mark.parametrize("how", BAD_PLANS)
def test_hostile_plans(tmp_path, how, chaos):
    chaos.tried("hostile-input", f"chunk of a plan with {how}")
    bad = _break(_plan(tmp_path), how)
    plan = tmp_path / "bad.json"
    plan.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    out = tmp_path / "c.fq"
    r = cli(["-q", "chunk", str(plan), "--index", "1", "-o", str(out)])
    one_line_error(r, 1, "bad.json")
    assert not out.exists() and leftovers(tmp_path) == []


# -- split fastq to S3 -------------------------------------------------------------------------
@MOTO
def test_split_fastq_out_dir_on_s3(lab: Lab, chaos):
    """Never a local directory named `s3:`; the chunks land in the bucket, verified."""
    chaos.tried("hostile-input", "split fastq -O s3://bucket/prefix/")
    src = lab.tmp / "r.fq"
    data = fastq(4000, seed=9)
    src.write_bytes(data)
    r = cli(["-q", "split", "fastq", str(src), "-O", lab.uri("chunks/"), "--parts", "3"], lab.env, cwd=str(lab.tmp))
    ok(r)
    assert not (lab.tmp / "s3:").exists()
    keys = lab.keys("chunks/")
    assert keys == [f"chunks/r.part-000{i}.fastq" for i in range(3)]
    assert b"".join(lab.get(k) or b"" for k in keys) == data


# -- BAM ----------------------------------------------------------------------------------------
def _bam_with_a_flipped_block(tmp_path: Path) -> Path:
    import random

    rng = random.Random(2)
    sam = ["@HD\tVN:1.6\tSO:coordinate", "@SQ\tSN:chr1\tLN:10000000"]
    for i in range(20000):
        sam.append(f"r{i}\t0\tchr1\t{1 + i * 10}\t60\t100M\t*\t0\t0\t{''.join(rng.choices('ACGT', k=100))}\t{'I' * 100}")
    (tmp_path / "in.sam").write_text("\n".join(sam) + "\n")
    bam = tmp_path / "in.bam"
    subprocess.run(["samtools", "view", "-b", "-o", str(bam), str(tmp_path / "in.sam")], check=True)
    raw = bytearray(bam.read_bytes())
    offsets = [off for off, _ in bgzf.iter_blocks(__import__("io").BytesIO(bytes(raw)))]
    victim = offsets[len(offsets) // 2]
    raw[victim + 200] ^= 0x04  # inside the deflate data of a block in the middle
    bam.write_bytes(bytes(raw))
    return bam


@pytest.mark.parametrize("command", ["split bam", "plan+chunk", "gather bam"])
@finding("a BAM with a bit-flipped data block is copied into the parts by `split bam`, `plan`+`chunk` and "
       "`gather bam`, all exit 0")
def test_bam_with_a_flipped_data_block(tmp_path, command, chaos):
    chaos.tried("hostile-input", f"{command} of a BAM with one bit flipped in a data block")
    bam = _bam_with_a_flipped_block(tmp_path)
    out = tmp_path / "out"
    if command == "split bam":
        r = cli(["-q", "split", "bam", str(bam), "--out-dir", str(out), "--parts", "4"])
    elif command == "plan+chunk":
        ok(cli(["-q", "plan", "bam", str(bam), "--parts", "4", "-o", str(tmp_path / "p.json")]))
        results = [cli(["-q", "chunk", str(tmp_path / "p.json"), "--index", str(i), "-o", str(out / f"c{i}.bam")])
                   for i in range(4)]
        r = next((x for x in results if x.code != 0), results[0])
    else:
        r = cli(["-q", "gather", "bam", str(bam), "-o", str(out / "all.bam")])
    one_line_error(r, 1, "CRC|corrupt")
