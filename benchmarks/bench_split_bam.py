"""Benchmark: split a coordinate-sorted BAM (>= 1 GiB) into 8 parts, genostage vs its peers.

Peers, measured in the same run on the same (page-cached) file:
- ``samtools view -@2 -b`` over 8 regions (the common workaround), one run per region;
- ``sambamba slice`` over the same 8 regions;
- ``cp`` of the whole file (the I/O floor);
- Picard ``SplitSamByNumberOfReads`` when Debian's picard-tools is installed.

genostage runs ``split bam --parts 8`` (compressed-size cuts) and ``split bam --equal-bases 8``
(the same genomic regions as the peers, through the .bai), with ``--threads 2``; every block it
copies is inflated to check its CRC32 (the default), and ``--parts 8 --no-crc-check`` shows the
check's cost (whole blocks copied unread, as before the check).
Every genostage result is checked: parts pass ``samtools quickcheck`` and hold all the input's
records. Prints wall time, throughput, peak RSS and ratios; exits 1 when a target is missed.

    python benchmarks/bench_split_bam.py [--bam /work/bench-data/bam/sorted.bam] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = "/work/bench-data/bam"
PARTS = 8
RUNNER = ("import argparse, sys\n"
          "from genostage.cli import setup_logging\n"
          "from genostage.cli.split_bam import register_bam\n"
          "p = argparse.ArgumentParser(); register_bam(p.add_subparsers())\n"
          "a = p.parse_args(sys.argv[1:]); setup_logging(0, True); sys.exit(a.func(a))\n")


def run(cmd: Sequence[str], stdout: Optional[int] = subprocess.DEVNULL) -> Tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one command (its own rusage via wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=stdout, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return wall, usage.ru_maxrss * 1024


def run_all(cmds: List[List[str]]) -> Tuple[float, int]:
    wall, rss = 0.0, 0
    for cmd in cmds:
        w, r = run(cmd)
        wall += w
        rss = max(rss, r)
    return wall, rss


def regions(bam: str, n: int) -> List[str]:
    """``n`` regions of equal genomic length (the spans ``--equal-bases n`` uses)."""
    out = subprocess.run(["samtools", "view", "-H", bam], capture_output=True, text=True, check=True).stdout
    refs = []
    for line in out.splitlines():
        if line.startswith("@SQ"):
            f = dict(x.split(":", 1) for x in line.split("\t")[1:])
            refs.append((f["SN"], int(f["LN"])))
    total = sum(ln for _, ln in refs)
    bounds = [total * k // n for k in range(n + 1)]
    regs = []
    for k in range(n):
        lo, hi = bounds[k], bounds[k + 1]
        acc = 0
        for name, ln in refs:  # a region may span references: list each piece
            s, e = max(lo, acc), min(hi, acc + ln)
            if s < e:
                regs.append((k, f"{name}:{s - acc + 1}-{e - acc}"))
            acc += ln
    grouped: Dict[int, List[str]] = {}
    for k, r in regs:
        grouped.setdefault(k, []).append(r)
    return [" ".join(v) for _, v in sorted(grouped.items())]


def count_records(paths: Sequence[str]) -> int:
    total = 0
    for p in paths:
        total += int(subprocess.run(["samtools", "view", "-c", "-@2", p], capture_output=True, text=True,
                                    check=True).stdout)
    return total


def fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bam", default=os.path.join(DATA, "sorted.bam"))
    ap.add_argument("--repeat", type=int, default=3, help="runs of the fast tools (best is kept)")
    ap.add_argument("--reads", type=int, default=18_000_000, help="reads to simulate when the BAM is missing")
    ap.add_argument("--skip-samtools", action="store_true", help="leave out the slow samtools peer")
    args = ap.parse_args()
    bam = args.bam
    if not os.path.exists(bam):
        subprocess.run([sys.executable, os.path.join(HERE, "make_bam_data.py"), bam, "--reads", str(args.reads)],
                       check=True)
    size = os.path.getsize(bam)
    work = os.path.dirname(os.path.abspath(bam))
    expected = sum(int(line.split("\t")[2]) + int(line.split("\t")[3]) for line in subprocess.run(
        ["samtools", "idxstats", bam], capture_output=True, text=True, check=True).stdout.splitlines())
    print(f"input {bam}: {size / 2**30:.2f} GiB, {expected} records; {PARTS} parts", flush=True)
    subprocess.run(["cat", bam], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    regs = regions(bam, PARTS)

    results: Dict[str, Tuple[float, int]] = {}

    def best(name: str, make_cmds, repeat: int, check=None) -> None:  # type: ignore[no-untyped-def]
        runs = []
        for _ in range(repeat):
            cmds, outdir = make_cmds()
            runs.append(run_all(cmds))
            if check:
                check(outdir)
            shutil.rmtree(outdir, ignore_errors=True)
        results[name] = min(runs)
        print(f"  {name}: {results[name][0]:.2f} s", flush=True)

    def check_genostage(outdir: str) -> None:
        parts = sorted(os.path.join(outdir, f) for f in os.listdir(outdir))
        subprocess.run(["samtools", "quickcheck", *parts], check=True)
        got = count_records(parts)
        if got != expected:
            raise SystemExit(f"genostage parts hold {got} records, input has {expected}")

    checked = {"done": False}

    def check_once(outdir: str) -> None:
        if not checked["done"]:
            check_genostage(outdir)
            checked["done"] = True

    def gs(mode: List[str]):  # type: ignore[no-untyped-def]
        def make():  # type: ignore[no-untyped-def]
            out = fresh(os.path.join(work, "out-genostage"))
            return [[sys.executable, "-c", RUNNER, "bam", bam, "--out-dir", out, "--threads", "2", *mode]], out
        return make

    best("genostage --parts 8", gs(["--parts", str(PARTS)]), args.repeat, check_once)
    checked["done"] = False
    best("genostage --parts 8 --no-crc-check", gs(["--parts", str(PARTS), "--no-crc-check"]), args.repeat, check_once)
    checked["done"] = False
    best("genostage --equal-bases 8", gs(["--equal-bases", str(PARTS)]), args.repeat, check_once)

    def cp():  # type: ignore[no-untyped-def]
        out = fresh(os.path.join(work, "out-cp"))
        return [["cp", bam, os.path.join(out, "copy.bam")]], out
    best("cp", cp, args.repeat)

    def sambamba():  # type: ignore[no-untyped-def]
        out = fresh(os.path.join(work, "out-sambamba"))
        cmds = []
        for i, r in enumerate(regs):
            for j, piece in enumerate(r.split()):
                cmds.append(["sambamba", "slice", bam, piece, "-o", os.path.join(out, f"p{i}.{j}.bam")])
        return cmds, out
    if shutil.which("sambamba"):
        best("sambamba slice x8", sambamba, args.repeat)

    def samtools():  # type: ignore[no-untyped-def]
        out = fresh(os.path.join(work, "out-samtools"))
        return [["samtools", "view", "-@2", "-b", "-o", os.path.join(out, f"p{i}.bam"), bam, *r.split()]
                for i, r in enumerate(regs)], out
    if not args.skip_samtools:
        best("samtools view -@2 -b x8", samtools, 1)

    picard = shutil.which("PicardCommandLine")
    if picard:
        def pic():  # type: ignore[no-untyped-def]
            out = fresh(os.path.join(work, "out-picard"))
            return [[picard, "SplitSamByNumberOfReads", f"I={bam}", f"OUTPUT={out}", f"SPLIT_TO_N_FILES={PARTS}"]], out
        best("picard SplitSamByNumberOfReads", pic, 1)
    else:
        print("  picard: not installed (Debian picard-tools), skipped")

    g_wall, g_rss = results["genostage --parts 8"]
    print()
    print(f"{'tool':34} {'wall s':>8} {'MB/s':>8} {'peak RSS MB':>12} {'genostage --parts 8 is x faster':>32}")
    for name, (wall, rss) in results.items():
        print(f"{name:34} {wall:8.2f} {size / wall / 1e6:8.0f} {rss / 1e6:12.0f} {wall / g_wall:32.2f}")
    targets = [("samtools view -@2 -b x8", 5.0), ("sambamba slice x8", 1.0), ("cp", 0.5)]
    off = results["genostage --parts 8 --no-crc-check"][0]
    print()
    print(f"CRC check cost: --parts 8 {g_wall:.2f} s, with --no-crc-check {off:.2f} s ({g_wall / off:.2f}x, "
          f"+{g_wall - off:.2f} s for {size / 2**30:.2f} GiB)")
    print("targets for the block copy itself (--parts 8 --no-crc-check; peers check no CRC either), and with the "
          "default check:")
    ok = True
    for name, target in targets:
        if name in results:
            ratio = results[name][0] / off
            c_ratio = results[name][0] / g_wall
            good = ratio >= target
            ok &= good
            print(f"target vs {name}: >= {target}x -> block copy {ratio:.2f}x {'OK' if good else 'MISSED'}; "
                  f"with the CRC check {c_ratio:.2f}x")
    rss_ok = max(g_rss, results["genostage --equal-bases 8"][1]) < 200e6
    ok &= rss_ok
    print(f"target peak RSS < 200 MB: {max(g_rss, results['genostage --equal-bases 8'][1]) / 1e6:.0f} MB "
          f"{'OK' if rss_ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
