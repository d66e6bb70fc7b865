"""A full disk: an 8 MiB tmpfs under every command that writes locally.

The one acceptable outcome: one line on stderr, exit 7 (insufficient space, which AWS Batch job
definitions do not retry), and nothing half-written on the small file system.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fastq_util import fastq

from .harness import MULTI, PART, Result, cli, files, fill, ok, one_line_error, seeded_bytes

MOTO = pytest.mark.parametrize("lab", ["moto"], indirect=True)
FULL = 7


def finding(text: str) -> Any:
    """An issue 12 finding this case reproduced before it was fixed."""
    return pytest.mark.finding(f"issue 12: {text}")


def only_filler(where: Path) -> None:
    """Nothing but the test's own filler file is left on the small file system."""
    assert [f for f in files(where) if f != "filler"] == [], files(where)


@MOTO
@finding("ENOSPC exits 5 (transfer failed, which AWS Batch job definitions retry) instead of 7; cp checks no "
       "free space")
def test_cp_download_onto_a_full_disk(lab, tmpfs, chaos):
    chaos.tried("full-disk", "cp download of 12 MiB onto an 8 MiB file system")
    lab.put("big.bin", seeded_bytes(MULTI, 81))
    r = cli(["-q", "cp", *PART, lab.uri("big.bin"), str(tmpfs / "big.bin")], lab.env)
    one_line_error(r, FULL)
    only_filler(tmpfs)


@MOTO
def test_run_whose_inputs_do_not_fit(lab, tmpfs, chaos):
    chaos.tried("full-disk", "run: inputs of 12 MiB, scratch on an 8 MiB file system")
    lab.put("in.bin", seeded_bytes(MULTI, 82))
    r = cli(["-q", "run", "--scratch", str(tmpfs), *PART, "-i", f"x={lab.uri('in.bin')}", "--", "true"], lab.env)
    one_line_error(r, FULL, "free")
    only_filler(tmpfs)


@MOTO
@finding("no manifest after a full local disk although the output was published")
def test_run_whose_scratch_fills_up_after_the_tool(lab, tmpfs, chaos):
    chaos.tried("full-disk", "run: the tool fills scratch after writing its output; the manifest still lands")
    r = cli(["-q", "run", "--scratch", str(tmpfs), "-o", f"y={lab.uri('fd/out/y.txt')}", "--shell", "--",
             "echo result > {y}; cat /dev/zero > $TMPDIR/junk 2>/dev/null; rm -f $TMPDIR/junk.none; true"],
            lab.env)
    ok(r)
    assert lab.get("fd/out/y.txt") == b"result\n"
    assert json.loads(lab.get("fd/out/y.txt.manifest.json") or b"{}").get("status") == "succeeded"
    only_filler(tmpfs)


@pytest.mark.parametrize("compress", ["none", "gzip", "bgzf"])
def test_split_fastq_onto_a_full_disk(tmp_path, tmpfs, compress, chaos):
    chaos.tried("full-disk", f"split fastq --compress {compress}, 20 MB of FASTQ onto an 8 MiB file system")
    src = tmp_path / "r.fq"
    src.write_bytes(fastq(110000, seed=8, max_len=150))
    r = cli(["-q", "split", "fastq", str(src), "-O", str(tmpfs / "chunks"), "--parts", "4", "--compress", compress,
             "--level", "1", "--summary", str(tmpfs / "summary.json")])
    one_line_error(r, FULL, "space")
    only_filler(tmpfs)


def test_checksum_output_onto_a_full_disk(tmp_path, tmpfs, chaos):
    chaos.tried("full-disk", "checksum with its output redirected to a full file system")
    names = []
    for i in range(20):
        (tmp_path / f"f{i}").write_bytes(b"%d" % i)
        names.append(str(tmp_path / f"f{i}"))
    fill(tmpfs)
    with open(tmpfs / "sums.txt", "w") as out:
        proc = subprocess.run([*_genostage(), "-q", "checksum", "-a", "sha256", *names], stdout=out,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    r = _result(proc)
    one_line_error(r, FULL, "space")


def test_chunk_onto_a_full_disk(tmp_path, tmpfs, chaos):
    chaos.tried("full-disk", "chunk of a FASTQ plan onto a full file system")
    src = tmp_path / "r.fq"
    src.write_bytes(fastq(30000, seed=9, max_len=150))
    ok(cli(["-q", "plan", "fastq", str(src), "--parts", "2", "-o", str(tmp_path / "plan.json")]))
    fill(tmpfs, leave=100 << 10)
    r = cli(["-q", "chunk", str(tmp_path / "plan.json"), "--index", "0", "-o", str(tmpfs / "c0.fq")])
    one_line_error(r, FULL, "space")
    only_filler(tmpfs)


def test_plan_onto_a_full_disk(tmp_path, tmpfs, chaos):
    chaos.tried("full-disk", "plan fastq -o onto a full file system")
    src = tmp_path / "r.fq"
    src.write_bytes(fastq(3000, seed=10))
    fill(tmpfs)
    r = cli(["-q", "plan", "fastq", str(src), "--parts", "300", "-o", str(tmpfs / "plan.json")])
    one_line_error(r, FULL, "space")
    only_filler(tmpfs)


def _bam(tmp_path: Path, n: int = 40000) -> Path:
    import random

    rng = random.Random(4)
    sam = ["@HD\tVN:1.6\tSO:unsorted", "@SQ\tSN:chr1\tLN:1000000"]
    for i in range(n):
        seq = "".join(rng.choices("ACGT", k=100))
        sam.append(f"r{i}\t0\tchr1\t{1 + i * 10}\t60\t100M\t*\t0\t0\t{seq}\t{'I' * 100}")
    (tmp_path / "in.sam").write_text("\n".join(sam) + "\n")
    subprocess.run(["samtools", "view", "-b", "-o", str(tmp_path / "in.bam"), str(tmp_path / "in.sam")], check=True)
    return tmp_path / "in.bam"


@finding("`split`, `gather` and `checksum` print tracebacks on ENOSPC (split bam, gather bam)")
@pytest.mark.parametrize("command", ["split bam", "gather bam"])
def test_bam_commands_onto_a_full_disk(tmp_path, tmpfs, command, chaos):
    chaos.tried("full-disk", f"{command} onto an 8 MiB file system")
    bam = _bam(tmp_path)
    fill(tmpfs, leave=1 << 20)
    if command == "split bam":
        r = cli(["-q", "split", "bam", str(bam), "--out-dir", str(tmpfs / "parts"), "--parts", "4"])
    else:
        r = cli(["-q", "gather", "bam", str(bam), str(bam), "-o", str(tmpfs / "all.bam")])
    one_line_error(r, FULL)
    only_filler(tmpfs)


def _genostage() -> list:
    import sys

    return [sys.executable, "-m", "genostage"]


def _result(proc: "subprocess.CompletedProcess[str]") -> Result:
    return Result(proc.returncode, "", proc.stderr, 0.0)

