"""Benchmark: gathering 8 parts of a ~1 GiB BAM, genostage beside samtools, and the CRC check's cost.

Cases, all in the same run on the same (page-cached) files, rounds interleaved so that the load of
this shared machine falls on every tool alike:

- **cat** (8 in-order parts, ``split bam --parts 8`` of the 1 GiB BAM): ``genostage gather bam``
  (every block inflated: CRC32 checked, records counted), ``genostage gather bam --no-crc-check``
  (blocks copied unread, as before the check) and ``samtools cat``;
- **merge** (8 per-chunk sorted BAMs of one sample, ``make_bam_data.py --seed i``, 1/8 of the
  reads each, coordinates interleaved): ``genostage gather bam --merge --threads 2`` (samtools
  merge through pysam, the default engine when pysam is importable; the stream checked and
  counted, the parts counted first), the same with ``--engine binary`` (the samtools on PATH,
  the peer's) and with ``--recompress`` (samtools writes uncompressed blocks, genostage
  compresses them with ISA-L), and ``samtools merge -@2``;
- **split** (the CRC check's cost where it matters most): ``genostage split bam --parts 8
  --threads 2`` with and without ``--no-crc-check``.

Every output is checked (``samtools quickcheck``, record count). Prints the median wall time of
``--repeat`` rounds, peak RSS and the ratios.

    .venv/bin/python benchmarks/bench_gather.py [--dir /work/bench-data/bam] [--repeat 3] [--merge-repeat 1]
        [--skip-merge]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from typing import Callable, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import format_table, load_average, median, run_timed  # noqa: E402

PARTS = 8
GENOSTAGE = [sys.executable, "-m", "genostage", "-q"]


def sh(*cmd: str) -> str:
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True).stdout


def idx_records(bam: str) -> int:
    return sum(int(f[2]) + int(f[3]) for f in (line.split("\t") for line in sh("samtools", "idxstats", bam).splitlines()))


def count(bam: str) -> int:
    return int(sh("samtools", "view", "-c", "-@2", bam))


def make_data(d: str, reads: int) -> Tuple[str, List[str], List[str]]:
    os.makedirs(d, exist_ok=True)
    bam = os.path.join(d, "sorted.bam")
    maker = os.path.join(HERE, "make_bam_data.py")
    if not os.path.exists(bam):
        subprocess.run([sys.executable, maker, bam, "--reads", str(reads)], check=True)
    split = os.path.join(d, "gather-cat-parts")
    if not os.path.isdir(split) or len(os.listdir(split)) != PARTS:
        shutil.rmtree(split, ignore_errors=True)
        subprocess.run(GENOSTAGE + ["split", "bam", bam, "--out-dir", split, "--parts", str(PARTS), "--threads", "2"],
                       check=True)
    cat_parts = sorted(os.path.join(split, f) for f in os.listdir(split))
    merge_dir = os.path.join(d, "gather-merge-parts")
    os.makedirs(merge_dir, exist_ok=True)
    merge_parts = []
    for i in range(PARTS):
        p = os.path.join(merge_dir, f"part-{i}.bam")
        if not os.path.exists(p + ".bai"):
            subprocess.run([sys.executable, maker, p, "--reads", str(reads // PARTS), "--seed", str(i + 1)], check=True,
                           stderr=subprocess.DEVNULL)
        merge_parts.append(p)
    return bam, cat_parts, merge_parts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/work/bench-data/bam", help="benchmark data (made once when missing)")
    ap.add_argument("--reads", type=int, default=18_000_000, help="reads of the 1 GiB BAM (and of the 8 merge parts)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the cat and split cases (median kept)")
    ap.add_argument("--merge-repeat", type=int, default=1, help="rounds of the merge case")
    ap.add_argument("--skip-merge", action="store_true")
    args = ap.parse_args()
    bam, cat_parts, merge_parts = make_data(args.dir, args.reads)
    out_dir = os.path.join(args.dir, "gather-out")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    size = os.path.getsize(bam)
    msize = sum(os.path.getsize(p) for p in merge_parts)
    expected = idx_records(bam)
    m_expected = sum(idx_records(p) for p in merge_parts)
    for f in [bam, *cat_parts, *merge_parts]:
        subprocess.run(["cat", f], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    print(f"{bam}: {size / 2**30:.2f} GiB, {expected} records; merge parts {msize / 2**30:.2f} GiB, {m_expected} "
          f"records; {load_average()}", flush=True)

    out = os.path.join(out_dir, "out.bam")
    split_out = os.path.join(out_dir, "split")

    def check_out(n: int) -> Callable[[], None]:
        def check() -> None:
            sh("samtools", "quickcheck", out)
            got = count(out)
            if got != n:
                raise SystemExit(f"{out} holds {got} records, {n} expected")
        return check

    def check_split() -> None:
        parts = sorted(os.path.join(split_out, f) for f in os.listdir(split_out))
        if sum(count(p) for p in parts) != expected:
            raise SystemExit("split parts lost records")

    cases: Dict[str, Tuple[List[str], Callable[[], None], int]] = {
        "gather bam (CRC check, counts)": (GENOSTAGE + ["gather", "bam", *cat_parts, "-o", out, "--threads", "2"],
                                          check_out(expected), args.repeat),
        "gather bam --no-crc-check": (GENOSTAGE + ["gather", "bam", "--no-crc-check", *cat_parts, "-o", out],
                                      check_out(expected), args.repeat),
        "samtools cat": (["samtools", "cat", "-o", out, *cat_parts], check_out(expected), args.repeat),
        "split bam --parts 8 --threads 2 (CRC check)": (GENOSTAGE + ["split", "bam", bam, "--out-dir", split_out,
                                                                     "--parts", "8", "--threads", "2"], check_split,
                                                        args.repeat),
        "split bam ... --no-crc-check": (GENOSTAGE + ["split", "bam", bam, "--out-dir", split_out, "--parts", "8",
                                                      "--threads", "2", "--no-crc-check"], check_split, args.repeat),
    }
    if not args.skip_merge:
        cases["gather bam --merge --threads 2"] = (GENOSTAGE + ["gather", "bam", "--merge", *merge_parts, "-o", out,
                                                                "--threads", "2"],
                                                   check_out(m_expected), args.merge_repeat)
        cases["gather bam --merge --engine binary"] = (GENOSTAGE + ["gather", "bam", "--merge", *merge_parts, "-o", out,
                                                                    "--threads", "2", "--engine", "binary"],
                                                       check_out(m_expected), args.merge_repeat)
        cases["gather bam --merge --recompress"] = (GENOSTAGE + ["gather", "bam", "--merge", "--recompress", *merge_parts,
                                                                 "-o", out, "--threads", "2"],
                                                    check_out(m_expected), args.merge_repeat)
        cases["samtools merge -@2"] = (["samtools", "merge", "-f", "-@2", "-o", out, *merge_parts],
                                       check_out(m_expected), args.merge_repeat)
    walls: Dict[str, List[float]] = {k: [] for k in cases}
    rss: Dict[str, float] = {k: 0.0 for k in cases}
    sizes: Dict[str, int] = {}
    checked = set()
    for r in range(max(args.repeat, args.merge_repeat)):
        for name, (cmd, check, repeat) in cases.items():
            if r >= repeat:
                continue
            shutil.rmtree(split_out, ignore_errors=True)
            if os.path.exists(out):
                os.unlink(out)
            res = run_timed(cmd).check(name)
            walls[name].append(res.seconds)
            rss[name] = max(rss[name], res.peak_rss_mib)
            if name not in checked:
                check()
                checked.add(name)
                sizes[name] = os.path.getsize(out) if os.path.exists(out) else sum(
                    os.path.getsize(os.path.join(split_out, f)) for f in os.listdir(split_out))
            print(f"  round {r + 1}: {name}: {res.seconds:.2f} s", flush=True)
    med = {k: median(v) for k, v in walls.items()}
    rows = []
    for name in cases:
        data = msize if "merge" in name else size
        rows.append([name, f"{med[name]:.2f}", f"{data / med[name] / 1e6:.0f}", f"{rss[name]:.0f}",
                     f"{sizes[name] / 2**20:.0f}", " / ".join(f"{w:.2f}" for w in walls[name])])
    print()
    print(format_table(["case", "median s", "MB/s", "peak RSS MiB", "output MiB", "runs"], rows, right=(1, 2, 3, 4)))
    print()
    cat = med["gather bam (CRC check, counts)"]
    print(f"gather bam (checked) vs samtools cat: {med['samtools cat'] / cat:.2f}x "
          f"({cat:.2f} s vs {med['samtools cat']:.2f} s)")
    print(f"gather bam --no-crc-check vs samtools cat: {med['samtools cat'] / med['gather bam --no-crc-check']:.2f}x")
    print(f"CRC check + counting cost in gather: {cat / med['gather bam --no-crc-check']:.2f}x "
          f"(+{cat - med['gather bam --no-crc-check']:.2f} s for {size / 2**30:.2f} GiB)")
    s_on, s_off = med["split bam --parts 8 --threads 2 (CRC check)"], med["split bam ... --no-crc-check"]
    print(f"CRC check cost in split: {s_on / s_off:.2f}x (+{s_on - s_off:.2f} s for {size / 2**30:.2f} GiB)")
    if not args.skip_merge:
        g, s = med["gather bam --merge --threads 2"], med["samtools merge -@2"]
        r = med["gather bam --merge --recompress"]
        b = med["gather bam --merge --engine binary"]
        print(f"gather bam --merge --engine binary vs samtools merge -@2: {s / b:.2f}x ({b:.2f} s)")
        print(f"gather bam --merge vs samtools merge -@2: {s / g:.2f}x ({g:.2f} s vs {s:.2f} s), output "
              f"{sizes['gather bam --merge --threads 2'] / sizes['samtools merge -@2']:.2f}x samtools'")
        print(f"gather bam --merge --recompress vs samtools merge -@2: {s / r:.2f}x ({r:.2f} s), output "
              f"{sizes['gather bam --merge --recompress'] / sizes['samtools merge -@2']:.2f}x samtools'")
    print(load_average())
    shutil.rmtree(out_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
