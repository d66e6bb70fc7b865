"""Benchmark: N concurrent jobs on one node needing the same reference, with and without the node cache.

    .venv/bin/python benchmarks/bench_cache.py [--jobs 8] [--size 1GiB] [--data /work/bench-data/cache]
        [--link-rate 30MB] [--links auto,hardlink]

Starts moto's S3 server on loopback behind a byte counter, uploads one random
reference (verified, CRC64NVME), then runs waves of N concurrent
``genostage run`` processes that each stage the reference and check its size:

* ``no cache``: ``-i ref=URI``: every job downloads its own copy (what Toil-style
  per-job staging does, and what genostage did before the cache);
* ``cache (cold, LINK)``: ``-r ref=URI --cache DIR --cache-link LINK`` with an
  empty cache: one job downloads, the others wait for it and then link or copy;
* ``cache (warm, LINK)``: the same again: every job is served from the cache.

For each wave it prints the bytes the server sent (and that as a multiple of
the reference size) and the wall time from starting the N processes until the
last one exits, with the ratio against the no-cache wave measured in the same
run. It asserts that every job succeeded and that a cold cache wave fetched the
reference exactly once.

``--link-rate`` caps the server's total bandwidth, shared by all connections,
like a node's network link. Without it, on a small shared machine, the wall
times measure CPU scheduling more than bytes: eight downloading processes get
eight times the CPU share of the one process that fills the cache. The cache
and scratch directories live under ``--data``: put it on XFS (reflink=1) or
btrfs to measure ``auto`` = reflink.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import genostage  # noqa: E402
from genostage import cpu  # noqa: E402
from genostage.job.cache import resolve_link  # noqa: E402
from genostage.testing.counting import counting_moto_server  # noqa: E402
from genostage.config import TransferConfig  # noqa: E402
from genostage.store import Stores  # noqa: E402
from genostage.units import format_size, parse_size  # noqa: E402

CHUNK = 64 << 20


def make_reference(path: str, size: int) -> None:
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        left = size
        while left:
            n = min(CHUNK, left)
            fh.write(os.urandom(n))
            left -= n
    os.replace(tmp, path)


def wave(jobs: int, args: List[str], env: Dict[str, str], ref_size: int) -> float:
    start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "genostage", "run", "--no-progress", *args, "--shell", "--",
                               f"test $(stat -c %s {{ref}}) = {ref_size}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(jobs)]
    errs = [p.communicate()[1] for p in procs]
    elapsed = time.monotonic() - start
    bad = [e for p, e in zip(procs, errs) if p.returncode != 0]
    assert not bad, "a job failed:\n" + bad[0]
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--data", default="/work/bench-data/cache")
    ap.add_argument("--links", default="auto,hardlink", help="cache link modes to measure (comma-separated)")
    ap.add_argument("--link-rate", default="0",
                    help="cap the server's total bandwidth (e.g. 40MB: a node's network link, shared by every "
                         "connection); 0: no cap (then this machine's CPU is the bottleneck)")
    ap.add_argument("--keep-data", action="store_true", help="keep the reference file for the next run")
    opts = ap.parse_args()
    size = parse_size(opts.size)
    ref_file = os.path.join(opts.data, f"reference-{size}.bin")
    make_reference(ref_file, size)
    work = tempfile.mkdtemp(prefix="run-", dir=opts.data)
    rows = []
    try:
        with counting_moto_server() as (s3, app):
            os.environ.update(s3.env())
            rate = parse_size(opts.link_rate)
            client = s3.client()
            client.create_bucket(Bucket="bench-cache")
            stores = Stores(TransferConfig(endpoint_url=s3.endpoint_url), client)
            app.rate = 0.0
            genostage.copy(ref_file, "s3://bench-cache/refs/reference.bin", stores=stores)
            uri = "s3://bench-cache/refs/reference.bin"
            env = dict(os.environ)
            scratch = os.path.join(work, "scratch")

            def measure(name: str, args: List[str]) -> None:
                app.reset()
                app.rate = float(rate)
                seconds = wave(opts.jobs, ["--scratch", scratch, *args], env, size)
                fetched = app.bytes_under("/bench-cache/refs/")
                rows.append((name, fetched, seconds))
                print(f"  {name}: {format_size(fetched)} fetched, {seconds:.1f} s", flush=True)

            cap = f"link capped at {format_size(rate)}/s" if rate else "no bandwidth cap"
            print(f"{opts.jobs} concurrent jobs, one {format_size(size)} reference, moto S3 on loopback ({cap}), "
                  f"{cpu.available()} of {os.cpu_count()} cores usable, load average {os.getloadavg()[0]:.1f}", flush=True)
            measure("no cache (per-job downloads)", ["-i", f"ref={uri}"])
            for link in [x for x in opts.links.split(",") if x]:
                cache_dir = os.path.join(work, f"cache-{link}")
                os.makedirs(scratch, exist_ok=True)
                effective = resolve_link(link, os.path.join(work), scratch)
                label = link if link == effective else f"{link}={effective}"
                measure(f"cache cold ({label})", ["-r", f"ref={uri}", "--cache", cache_dir, "--cache-link", link])
                assert rows[-1][1] == size, f"the cold cache wave fetched {rows[-1][1]} bytes, not {size}"
                measure(f"cache warm ({label})", ["-r", f"ref={uri}", "--cache", cache_dir, "--cache-link", link])
                assert rows[-1][1] == 0
                shutil.rmtree(cache_dir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not opts.keep_data:
            os.unlink(ref_file)
    base_bytes, base_time = rows[0][1], rows[0][2]
    print()
    print(f"| {'wave':<34} | {'bytes fetched':>13} | {'x reference':>11} | {'wall s':>7} | {'speed-up vs no cache':>20} |")
    print(f"|{'-' * 36}|{'-' * 15}|{'-' * 13}|{'-' * 9}|{'-' * 22}|")
    for name, fetched, seconds in rows:
        print(f"| {name:<34} | {format_size(fetched):>13} | {fetched / size:>10.2f}x | {seconds:>7.1f} | "
              f"{base_time / seconds:>19.2f}x |")
    cold = [r for r in rows if r[0].startswith("cache cold")]
    print()
    for name, fetched, seconds in cold:
        print(f"target {name}: bytes {fetched / size:.2f}x reference (target 1.0x, no cache {base_bytes / size:.2f}x) "
              f"{'MET' if fetched == size else 'MISSED'}; wall time {base_time / seconds:.2f}x better "
              f"(target >= 4x) {'MET' if base_time / seconds >= 4 else 'MISSED'}")


if __name__ == "__main__":
    main()
