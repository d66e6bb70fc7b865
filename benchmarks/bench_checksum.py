"""Checksum throughput: genostage's kernels beside awscrt, google-crc32c, crc32c, zlib, isal.

Prints GB/s per algorithm at 4 KiB, 1 MiB (in cache) and 1 GiB (from memory), hashlib
md5/sha256 for reference, the memory read bandwidth measured in the same run (numpy sum
over 1 GiB), a 4 GiB page-cached file with 1 vs 2 threads and ``genostage checksum`` vs
``cat FILE > /dev/null``, then the ratio table with the targets of issue 3.

    .venv/bin/python benchmarks/bench_checksum.py [--quick] [--keep] [--data-dir DIR]

Every peer's result is compared with genostage's value (the script fails on a
difference); the 4 GiB file lives under /work/bench-data/checksum/ and is deleted at the end.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from genostage import _checksum as K
from genostage import checksum as C

KiB, MiB, GiB = 1024, 1024**2, 1024**3
GB = 1e9


def _optional(module: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        return None


awscrt_checksums = _optional("awscrt.checksums")
google_crc32c = _optional("google_crc32c")
crc32c_pkg = _optional("crc32c")
isal_zlib = _optional("isal.isal_zlib")


def peers() -> Dict[str, List[Tuple[str, Callable[[Any], int]]]]:
    """Per algorithm: (implementation name, one-shot function) pairs; genostage first."""
    table: Dict[str, List[Tuple[str, Callable[[Any], int]]]] = {
        "crc32c": [("genostage", K.crc32c)],
        "crc64nvme": [("genostage", K.crc64nvme)],
        "crc32": [("genostage", K.crc32), ("zlib", zlib.crc32)],
    }
    if awscrt_checksums:
        table["crc32c"].append(("awscrt", awscrt_checksums.crc32c))
        table["crc64nvme"].append(("awscrt", awscrt_checksums.crc64nvme))
        table["crc32"].append(("awscrt", awscrt_checksums.crc32))
    if google_crc32c:
        table["crc32c"].append(("google-crc32c", google_crc32c.value))
    if crc32c_pkg:
        table["crc32c"].append(("crc32c", crc32c_pkg.crc32c))
    if isal_zlib:
        table["crc32"].append(("isal", isal_zlib.crc32))
    return table


def rate(func: Callable[[], Any], nbytes: int, min_time: float, repeats: int) -> float:
    """Best GB/s over ``repeats`` rounds of at least ``min_time`` seconds each."""
    func()
    best = float("inf")
    for _ in range(repeats):
        calls = 0
        start = time.perf_counter()
        while True:
            func()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        best = min(best, elapsed / calls)
    return nbytes / best / GB


def memory_bandwidth(big: np.ndarray, repeats: int) -> float:
    words = big.view(np.int64)
    return rate(lambda: words.sum(), big.nbytes, 0.0, repeats)


def bench_buffers(quick: bool) -> Tuple[Dict[Tuple[str, str, str], float], float, Dict[str, Dict[str, float]]]:
    results: Dict[Tuple[str, str, str], float] = {}
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, 4 * KiB, dtype=np.uint8).tobytes()
    mid = rng.integers(0, 256, MiB, dtype=np.uint8).tobytes()
    big = rng.integers(0, 2**63, GiB // 8, dtype=np.uint64).tobytes()  # bytes: google-crc32c takes no other buffer
    big_arr = np.frombuffer(big, dtype=np.uint8)
    reps = 3 if quick else 5
    membw = memory_bandwidth(big_arr, reps)
    for algo, impls in peers().items():
        for label, buf, min_time in (("4KiB", small, 0.1), ("1MiB", mid, 0.2), ("1GiB", big, 0.0)):
            ref = impls[0][1](buf)
            for name, func in impls:
                if name == "zlib" and label == "1GiB" and quick:
                    continue
                value = func(buf)
                assert value == ref, f"{name} {algo} {label}: {value:#x} != genostage {ref:#x}"
                results[(algo, name, label)] = rate(lambda: func(buf), len(buf) if label != "1GiB" else GiB,
                                                    min_time, reps if label != "1GiB" else max(2, reps - 2))
    paths: Dict[str, Dict[str, float]] = {}
    for p in K.supported_paths():
        previous = K.set_path(p)
        try:
            paths[p] = {a: rate(lambda: K.crc(a, mid), MiB, 0.1, 2) for a in ("crc32", "crc32c", "crc64nvme")}
        finally:
            K.set_path(previous)
    for h in ("md5", "sha256"):
        for label, buf in (("1MiB", mid), ("1GiB", big)):
            n = MiB if label == "1MiB" else GiB
            results[(h, "hashlib", label)] = rate(lambda: hashlib.new(h, buf).digest(), n, 0.2 if n == MiB else 0.0,
                                                  3 if n == MiB else 1)
    del big, big_arr
    return results, membw, paths


def make_file(path: str, size: int) -> None:
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    block = np.random.default_rng(2).integers(0, 256, 64 * MiB, dtype=np.uint8).tobytes()
    with open(path + ".tmp", "wb") as f:
        written = 0
        while written < size:
            n = min(len(block), size - written)
            f.write(block[:n])
            written += n
    os.replace(path + ".tmp", path)


def timed(cmd: str) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_file(path: str, size: int, repeats: int) -> Dict[str, float]:
    out: Dict[str, float] = {}
    subprocess.run(f"cat '{path}' > /dev/null", shell=True, check=True)  # into the page cache
    values = {}
    for threads in (1, 2):
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            values[threads] = C.file_checksums(path, ["crc64nvme"], threads=threads)
            best = min(best, time.perf_counter() - start)
        out[f"file 1 thread" if threads == 1 else "file 2 threads"] = size / best / GB
    assert values[1] == values[2], values
    exe = os.path.join(os.path.dirname(sys.executable), "genostage")
    cli = f"'{exe}' checksum '{path}'"
    printed = subprocess.run(cli, shell=True, check=True, capture_output=True, text=True).stdout.split()[0]
    assert printed == values[1]["crc64nvme"], (printed, values[1])
    cat_t = min(timed(f"cat '{path}' > /dev/null") for _ in range(repeats))
    cli_t = min(timed(cli) for _ in range(repeats))
    out["cat > /dev/null"] = size / cat_t / GB
    out["genostage checksum"] = size / cli_t / GB
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    ap.add_argument("--keep", action="store_true", help="keep the 4 GiB file")
    ap.add_argument("--data-dir", default="/work/bench-data/checksum")
    ap.add_argument("--file-size", default="4GiB")
    args = ap.parse_args()
    from genostage.units import parse_size

    file_size = parse_size(args.file_size)
    print(f"genostage CRC path: {K.get_path()} (supported: {', '.join(K.supported_paths())}); "
          f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}")
    results, membw, paths = bench_buffers(args.quick)

    print("\n## Throughput, GB/s (best of several runs)\n")
    print(f"| algorithm | implementation | 4 KiB | 1 MiB | 1 GiB |")
    print("| --- | --- | ---: | ---: | ---: |")
    for algo, impls in list(peers().items()) + [("md5", [("hashlib", None)]), ("sha256", [("hashlib", None)])]:
        for name, _ in impls:
            cells = [results.get((algo, name, s)) for s in ("4KiB", "1MiB", "1GiB")]
            print(f"| {algo} | {name} | " + " | ".join("-" if c is None else f"{c:.1f}" for c in cells) + " |")
    print(f"\nmemory read bandwidth (numpy int64 sum over 1 GiB): {membw:.1f} GB/s")
    print("\n## genostage code paths at 1 MiB, GB/s\n")
    print("| path | crc32 | crc32c | crc64nvme |\n| --- | ---: | ---: | ---: |")
    for p, r in paths.items():
        print(f"| {p} | {r['crc32']:.1f} | {r['crc32c']:.1f} | {r['crc64nvme']:.1f} |")

    data_file = os.path.join(args.data_dir, "bench-4g.bin")
    make_file(data_file, file_size)
    try:
        files = bench_file(data_file, file_size, 2 if args.quick else 3)
    finally:
        if not args.keep:
            os.remove(data_file)
            shutil.rmtree(args.data_dir, ignore_errors=True)
    print(f"\n## {args.file_size} file in page cache, crc64nvme, GB/s\n")
    print("| what | GB/s |\n| --- | ---: |")
    for k, v in files.items():
        print(f"| {k} | {v:.1f} |")

    g = lambda a, s: results[(a, "genostage", s)]  # noqa: E731
    rows: List[Tuple[str, float, float]] = []
    for a in ("crc32c", "crc64nvme"):
        for s in ("1MiB", "1GiB"):
            if (a, "awscrt", s) in results:
                rows.append((f"{a} {s} vs awscrt", g(a, s) / results[(a, "awscrt", s)], 1.0))
    rows.append(("crc32 1MiB vs zlib.crc32", g("crc32", "1MiB") / results[("crc32", "zlib", "1MiB")], 4.0))
    for a in ("crc32c", "crc64nvme", "crc32"):
        rows.append((f"{a} 1GiB vs memory bandwidth", g(a, "1GiB") / membw, 0.9))
    rows.append(("file: 2 threads vs 1 thread", files["file 2 threads"] / files["file 1 thread"], 1.7))
    rows.append(("genostage checksum vs cat > /dev/null", files["genostage checksum"] / files["cat > /dev/null"], 0.8))
    print("\n## Ratios vs targets (issue 3)\n")
    print("| comparison | ratio | target | |\n| --- | ---: | ---: | --- |")
    for what, ratio, target in rows:
        print(f"| {what} | {ratio:.2f}x | >= {target:.1f}x | {'PASS' if ratio >= target else 'FAIL'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
