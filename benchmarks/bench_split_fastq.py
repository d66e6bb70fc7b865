"""Benchmark: `genostage split fastq` vs `seqkit split2` (and fastqsplitter, and `cp`).

Makes a realistic Illumina-like paired FASTQ (>= 1 GiB per mate; see
benchmarks/fastq_gen.py) under /work/bench-data/fastq/ once, then splits it
into 8 parts with 2 threads, side by side, in four cases:

  plain->plain, gzip->gzip, BGZF->BGZF (seqkit writes gzip), paired gzip->gzip

and prints wall time, throughput (uncompressed input MB/s), peak RSS of the
process (GNU time's %M), output size and the ratios against the peers
measured in the same run. Each command runs ``--repeat`` times (best wall is
kept); the input is read once first so every tool starts from a warm cache.

    .venv/bin/python benchmarks/bench_split_fastq.py [--size-gib 1.0] [--repeat 2]

Correctness is asserted: genostage's chunk record counts add up to the input's
record count, and paired chunks hold equal counts.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

DATA = os.environ.get("GENOSTAGE_BENCH_DATA", "/work/bench-data/fastq")
PY = sys.executable
GENOSTAGE = [PY, "-m", "genostage"]


def run(cmd: List[str]) -> Tuple[float, int, float]:
    """Wall seconds and peak RSS (KiB) of one command, measured by GNU time (``/usr/bin/time -v``
    style ``%M``: the exec'd program's own maximum resident set size)."""
    tfile = os.path.join(DATA, ".time")
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", tfile, *cmd], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
    with open(tfile) as fh:
        rss, user, system = fh.read().split()[-3:]
    return wall, int(rss), float(user) + float(system)


def dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def ensure_data(size_gib: float, cases: List[str]) -> Dict[str, str]:
    from fastq_gen import generate

    os.makedirs(DATA, exist_ok=True)
    f = {k: os.path.join(DATA, v) for k, v in {
        "r1": "R1.fastq", "r2": "R2.fastq", "r1gz": "R1.fastq.gz", "r2gz": "R2.fastq.gz", "r1bgz": "R1.bgzf.fastq.gz"}.items()}
    want = int(size_gib * (1 << 30))
    if not (os.path.exists(f["r1"]) and os.path.getsize(f["r1"]) >= want and os.path.exists(f["r2"])):
        print(f"generating {size_gib} GiB x 2 of FASTQ in {DATA} ...", file=sys.stderr)
        generate(f["r1"], f["r2"], want)
    old_bgz = os.path.join(DATA, "R1.fastq.bgz")  # earlier name: seqkit only compresses output named .gz
    if os.path.exists(old_bgz) and not os.path.exists(f["r1bgz"]):
        os.replace(old_bgz, f["r1bgz"])
    needs = {"r1gz": "gzip" in cases or "paired" in cases, "r2gz": "paired" in cases, "r1bgz": "bgzf" in cases}
    for src, dst, cmd in ((f["r1"], "r1gz", ["gzip", "-6", "-c"]), (f["r2"], "r2gz", ["gzip", "-6", "-c"]),
                          (f["r1"], "r1bgz", ["bgzip", "-@", "2", "-c"])):
        if not needs[dst]:
            continue
        dst = f[dst]
        if not os.path.exists(dst) or os.path.getmtime(dst) < os.path.getmtime(src):
            print(f"compressing {dst} ...", file=sys.stderr)
            with open(dst + ".tmp", "wb") as out:
                subprocess.run(cmd + [src], stdout=out, check=True)
            os.replace(dst + ".tmp", dst)
    return f


def warm(paths: List[str]) -> None:
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(8 << 20):
                pass


def count_records(path: str) -> int:
    n = 0
    with open(path, "rb") as fh:
        while True:
            b = fh.read(16 << 20)
            if not b:
                break
            n += b.count(b"\n")
    return n // 4


def bench(label: str, cmd_for, outdir: str, repeat: int) -> Dict[str, float]:  # type: ignore[no-untyped-def]
    best: Optional[Tuple[float, int, float]] = None
    size = 0
    for _ in range(repeat):
        shutil.rmtree(outdir, ignore_errors=True)
        os.makedirs(outdir)
        wall, rss, cpu = run(cmd_for(outdir))
        size = dir_size(outdir)
        if best is None or wall < best[0]:
            best = (wall, rss, cpu)
    assert best is not None
    return {"wall": best[0], "rss_mb": best[1] / 1024, "size": size, "cpu": best[2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--cases", default="plain,gzip,bgzf,paired")
    args = ap.parse_args()
    f = ensure_data(args.size_gib, args.cases.split(","))
    total = count_records(f["r1"])
    usize = os.path.getsize(f["r1"])
    out = os.path.join(DATA, "out")
    T, N = str(args.threads), str(args.parts)
    fqs = shutil.which("fastqsplitter") or (os.path.join(os.path.dirname(PY), "fastqsplitter")
                                            if os.path.exists(os.path.join(os.path.dirname(PY), "fastqsplitter")) else None)
    cases = {
        "plain->plain": ([f["r1"]], "fq"),
        "gzip->gzip": ([f["r1gz"]], "fq.gz"),
        "BGZF->BGZF": ([f["r1bgz"]], "fq.gz"),
        "paired gzip->gzip": ([f["r1gz"], f["r2gz"]], "fq.gz"),
    }
    wanted = {"plain": "plain->plain", "gzip": "gzip->gzip", "bgzf": "BGZF->BGZF", "paired": "paired gzip->gzip"}
    rows = []
    for key in args.cases.split(","):
        name = wanted[key]
        inputs, ext = cases[name]
        warm(inputs)
        paired = len(inputs) == 2
        insize = usize * len(inputs)
        res: Dict[str, Dict[str, float]] = {}
        summary = os.path.join(DATA, "summary.json")

        def gs(d: str) -> List[str]:
            return GENOSTAGE + ["-q", "split", "fastq", *inputs, "--out-dir", d, "--parts", N, "--threads", T,
                                "--no-progress", "--summary", summary]
        res["genostage"] = bench("genostage", gs, out, args.repeat)
        doc = json.load(open(summary))
        assert doc["records"] == total, (doc["records"], total)
        assert len(doc["chunks"]) == args.parts and all(c["records"] > 0 for c in doc["chunks"])
        counts = [c["records"] for c in doc["chunks"]]
        res["genostage"]["balance"] = (max(counts) - min(counts)) / (total / args.parts)

        def sk(d: str) -> List[str]:
            if paired:
                return ["seqkit", "split2", "-p", N, "-j", T, "-O", d, "-1", inputs[0], "-2", inputs[1]]
            return ["seqkit", "split2", "-p", N, "-j", T, "-O", d, inputs[0]]
        res["seqkit split2"] = bench("seqkit", sk, out, args.repeat)
        if fqs and not paired:
            def fq(d: str) -> List[str]:
                outs = []
                for i in range(args.parts):
                    outs += ["-o", os.path.join(d, f"part{i}.{ext}")]
                return [fqs, "-i", inputs[0], *outs, "-t", "1"]
            res["fastqsplitter"] = bench("fastqsplitter", fq, out, args.repeat)
        if name == "plain->plain":
            res["cp"] = bench("cp", lambda d: ["cp", inputs[0], d], out, args.repeat)
        shutil.rmtree(out, ignore_errors=True)
        rows.append((name, insize, res))
        print_rows([rows[-1]])
    print()
    print(f"## genostage split fastq: {args.size_gib} GiB per mate, {args.parts} parts, {args.threads} threads, "
          f"{total} records per mate")
    print_rows(rows, markdown=True)
    print_targets(rows)


def print_rows(rows, markdown: bool = False) -> None:  # type: ignore[no-untyped-def]
    if markdown:
        print("| case | tool | wall s | CPU s | MB/s (uncompr.) | peak RSS MB | output MB | genostage speedup | size vs genostage |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, insize, res in rows:
        g = res["genostage"]
        for tool, r in res.items():
            speed = r["wall"] / g["wall"]
            line = (name, tool, f"{r['wall']:.2f}", f"{r['cpu']:.2f}", f"{insize / r['wall'] / 1e6:.0f}",
                    f"{r['rss_mb']:.0f}", f"{r['size'] / 1e6:.1f}", f"{speed:.2f}x", f"{r['size'] / g['size']:.2f}x")
            print(("| " + " | ".join(line) + " |") if markdown else "  ".join(f"{x:>14}" for x in line))


def print_targets(rows) -> None:  # type: ignore[no-untyped-def]
    print("\n## targets")
    for name, _, res in rows:
        g = res["genostage"]
        sk = res.get("seqkit split2")
        if name in ("gzip->gzip", "paired gzip->gzip") and sk:
            sp = sk["wall"] / g["wall"]
            sz = g["size"] / sk["size"]
            cpu = sk["cpu"] / g["cpu"]
            print(f"- {name}: {sp:.2f}x seqkit's speed (target >= 2x: {'PASS' if sp >= 2 else 'FAIL'}; "
                  f"{cpu:.2f}x less CPU time), "
                  f"output {sz:.2f}x seqkit's size (target <= 1.1x: {'PASS' if sz <= 1.1 else 'FAIL'})")
        if name == "plain->plain" and "cp" in res:
            sp = res["cp"]["wall"] / g["wall"]
            print(f"- plain->plain: {sp:.2f}x the speed of cp (target >= 0.5x: {'PASS' if sp >= 0.5 else 'FAIL'})")
        print(f"- {name}: genostage peak RSS {g['rss_mb']:.0f} MB (target < 100 MB: "
              f"{'PASS' if g['rss_mb'] < 100 else 'FAIL'}); chunk balance (max-min)/mean = {100 * g['balance']:.2f}%")


if __name__ == "__main__":
    main()
