"""Benchmark: a whole ``genostage scatter`` on loopback S3, measured and checked.

    .venv/bin/python benchmarks/bench_scatter.py [--quick] [--pairs 1000000] [--parts 8] [--jobs 2]
        [--server moto|rclone|both] [--repeat 1] [--dir /work/bench-data/scatter] [--no-proxy]
        [--part-size SIZE]

A simulated BGZF FASTQ pair (a random 3-contig reference, 100 bp pairs from 300 bp fragments,
1% substitutions) is uploaded with the reference's bwa index, then scattered as the README's
example does::

    genostage scatter -i reads=s3://b/reads/S1_R1.fq.gz,s3://b/reads/S1_R2.fq.gz --parts N \\
        -r ref=s3://b/refs/bwa/ -o bam=s3://b/aln/S1.bam --gather bam=merge \\
        --shell -- 'bwa mem -t 1 -I 300,10 -R ... {ref}/ref.fa {reads.1} {reads.2} | samtools sort -o {bam} -'

The scatter talks to the S3 server (moto, or ``rclone serve s3``) through a counting proxy
(``genostage.testing.counting.CountingProxy``), which counts every byte the planning, the
children and the gather fetch, per object. Each run is checked: the scatter exits 0, the final
manifest says every child succeeded and the conservation proof was checked (reads in = 2 x
pairs = primary alignments gathered), and the gathered BAM's records (sorted ``samtools view``
lines) equal those of the unchunked alignment of the same reads with the same command. Printed:

- **bytes fetched**: the inputs, the reference, the scatter's own objects (spec, plan, children's
  manifests) and listings, against the bound "the inputs once + the reference once per child"
  (target: at most 1.02x); the parts the gather fetched, against the parts' size (1.00x: once);
- **planning**: the bytes the FASTQ pair's plan read (the spec's ``planning_bytes_read``, and the
  proxy's count for ``genostage plan fastq`` alone) and a BAM plan's (``genostage plan bam`` of
  the gathered BAM), each against "header + N x 1 MiB";
- **genostage's own time per child** (start, stage, publish, count; not the tool), from the
  children's manifests (``timings``: total minus run, and its parts) and from the process's wall
  time (the scatter's log) minus run, which adds the interpreter's start: min / median / max,
  target under 0.5 s;
- **the gather**: the scatter's gather job (its manifest: total, of which staging the parts), and
  ``genostage gather bam --merge --threads 2`` beside ``samtools merge -@2`` and ``samtools cat``
  on the same parts (downloaded once), median of ``--repeat`` rounds, with ratios.

``--quick`` (40,000 pairs, 4 parts; moto and one round unless given) runs in under a minute.
The data (reads, index, the unchunked alignment) are made once under ``--dir`` and kept: 2-3 min
for the default 1,000,000 pairs. ``--part-size`` is passed to the scatter; ``--no-proxy`` (moto)
lets moto count instead, to see what the proxy costs.
"""
from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from common import clean_env, format_table, invocation, load_average, median, ratio, run_timed, spread  # noqa: E402

from genostage.testing.counting import CountingProxy, counting_moto_server  # noqa: E402
from genostage.testing.demo import make_reference  # noqa: E402
from genostage.testing.s3server import LocalS3, rclone_server  # noqa: E402

BUCKET = "bench-scatter"
GENOSTAGE = [sys.executable, "-m", "genostage"]
RG = r"-R '@RG\tID:S1\tSM:S1'"
BWA = ("bwa mem -t 1 -I 300,10 " + RG + " {ref}/ref.fa {reads.1} {reads.2} 2>/dev/null "
       "| samtools sort -o {bam} - 2>/dev/null")
MiB = 1 << 20
SNIFF = 64  # what the scatter and the plan read of each source's head to know its format
READ_BUDGET = MiB  # the plans' promise: at most N x 1 MiB
TARGET_BYTES = 1.02
TARGET_OWN = 0.5
COMPLEMENT = str.maketrans("ACGT", "TGCA")
CHILD_LINE = re.compile(r"child (\d+) succeeded in ([\d.]+) s")


# -- data ------------------------------------------------------------------------------
def _quality(n: int, rng: random.Random) -> str:
    # falls off towards the 3' end, as Illumina qualities do
    return "".join(chr(33 + max(2, min(41, int(38 - 10 * i / n + rng.gauss(0, 3))))) for i in range(n))


def make_pairs(r1: Path, r2: Path, seqs: Dict[str, str], rng: random.Random, pairs: int, read_len: int = 100,
               insert: int = 300, rate: float = 0.01) -> None:
    """Simulated pairs, as ``genostage.testing.demo.make_reads`` makes them but ~10x faster:
    qualities drawn from a pool of 512, the number of substitutions per read from its binomial."""
    names = list(seqs)
    quals = [_quality(read_len, rng) for _ in range(512)]
    cdf, acc = [], 0.0
    for k in range(16):
        acc += math.comb(read_len, k) * rate ** k * (1 - rate) ** (read_len - k)
        cdf.append(acc)

    def mutate(s: str) -> str:
        k = min(bisect.bisect_left(cdf, rng.random()), 15)
        if not k:
            return s
        b = bytearray(s.encode())
        for p in rng.sample(range(read_len), k):
            b[p] = ord(rng.choice("ACGT"))
        return b.decode()

    with open(r1, "w") as f1, open(r2, "w") as f2:
        for i in range(pairs):
            seq = seqs[rng.choice(names)]
            start = rng.randrange(0, len(seq) - insert)
            frag = seq[start:start + insert]
            a = mutate(frag[:read_len])
            b = mutate(frag[-read_len:].translate(COMPLEMENT)[::-1])
            f1.write(f"@pair{i}/1\n{a}\n+\n{quals[rng.randrange(512)]}\n")
            f2.write(f"@pair{i}/2\n{b}\n+\n{quals[rng.randrange(512)]}\n")


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True, executable="/bin/bash")


def records(bam: Path) -> List[str]:
    """A BAM's records as sorted SAM lines (no header, so no @PG)."""
    out = subprocess.run(["samtools", "view", str(bam)], check=True, capture_output=True, text=True).stdout
    return sorted(out.splitlines())


def count_records(bam: Path) -> int:
    return int(subprocess.run(["samtools", "view", "-c", str(bam)], check=True, capture_output=True,
                              text=True).stdout)


def make_data(root: Path, pairs: int, seed: int) -> Path:
    """Reference + bwa index, the BGZF pair, and the unchunked alignment (made once, kept)."""
    d = root / f"pairs-{pairs}-seed-{seed}"
    if (d / "whole.bam").exists():
        return d
    tmp = Path(tempfile.mkdtemp(prefix=".making-", dir=root))
    started = time.monotonic()
    rng = random.Random(seed)
    (tmp / "ref").mkdir()
    seqs = make_reference(tmp / "ref" / "ref.fa", rng)
    make_pairs(tmp / "r1.fq", tmp / "r2.fq", seqs, rng, pairs)
    sh(f"cd {tmp}/ref && bwa index ref.fa 2>/dev/null && samtools faidx ref.fa")
    for n in ("r1", "r2"):
        sh(f"bgzip -@2 -c {tmp}/{n}.fq > {tmp}/{n}.fq.gz")
    whole = BWA.replace("-t 1", "-t 2")
    for name, path in (("{ref}", "ref"), ("{reads.1}", "r1.fq"), ("{reads.2}", "r2.fq"), ("{bam}", "whole.bam")):
        whole = whole.replace(name, str(tmp / path))
    sh(whole)
    for n in ("r1", "r2"):
        (tmp / f"{n}.fq").unlink()
    tmp.rename(d)
    print(f"made {d}: {pairs:,} pairs, the reference's bwa index, the unchunked alignment "
          f"({time.monotonic() - started:.1f} s)", flush=True)
    return d


# -- servers ---------------------------------------------------------------------------
class Server:
    """An S3 server with a counting proxy in front: the scatter talks to the proxy. moto
    counts what it serves itself too (``counting_moto_server``); with ``proxy=False`` the
    scatter talks to moto directly and moto's count is the one (listings then go uncounted)."""

    def __init__(self, kind: str, proxy: bool = True) -> None:
        self.kind = kind
        self.moto_app: Any = None
        self.use_proxy = proxy
        self.proxy: Optional[CountingProxy] = None

    def __enter__(self) -> "Server":
        import contextlib

        self.stack = contextlib.ExitStack()
        if self.kind == "moto":
            self.s3, self.moto_app = self.stack.enter_context(counting_moto_server())
        else:
            self.s3 = self.stack.enter_context(rclone_server())
        if self.use_proxy:
            self.proxy = self.stack.enter_context(CountingProxy(self.s3.endpoint_url))
        self.client = self.s3.client()
        self.client.create_bucket(Bucket=BUCKET)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def env(self) -> Dict[str, str]:
        via = LocalS3(self.proxy.url, self.kind) if self.proxy is not None else self.s3
        return clean_env({**via.env(), "GENOSTAGE_PROGRESS_INTERVAL": "60"})

    @property
    def counter(self) -> str:
        return "the counting proxy" if self.proxy is not None else "moto's own count"

    def reset(self) -> None:
        if self.proxy is not None:
            self.proxy.reset()
        if self.moto_app is not None:
            self.moto_app.reset()

    def served(self) -> Dict[str, int]:
        """Object GET bytes per path (``/bucket/key``) since the last reset."""
        counts = self.proxy.served if self.proxy is not None else self.moto_app.served
        return dict(counts)

    def listed(self) -> int:
        return self.proxy.listed if self.proxy is not None else 0

    def get_json(self, key: str) -> Dict[str, Any]:
        return json.loads(self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def keys(self, prefix: str) -> Iterator[Tuple[str, int]]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"], obj["Size"]


def upload(server: Server, d: Path) -> Tuple[int, int]:
    """The reads and the reference (straight to the server, not counted); their sizes."""
    ref = 0
    for f in sorted((d / "ref").iterdir()):
        server.client.upload_file(str(f), BUCKET, f"refs/bwa/{f.name}")
        ref += f.stat().st_size
    for n, key in (("r1", "S1_R1.fq.gz"), ("r2", "S1_R2.fq.gz")):
        server.client.upload_file(str(d / f"{n}.fq.gz"), BUCKET, f"reads/{key}")
    return (d / "r1.fq.gz").stat().st_size + (d / "r2.fq.gz").stat().st_size, ref


# -- one scatter -----------------------------------------------------------------------
def part_size(kind: str, opts: argparse.Namespace) -> Optional[str]:
    """``--part-size`` for the scatter: as asked, else genostage's default."""
    return opts.part_size


def scatter_argv(tag: str, parts: int, jobs: int, scratch: str, size: Optional[str] = None) -> List[str]:
    return [*GENOSTAGE, "scatter", "--scratch", scratch, "--no-progress", "--jobs", str(jobs),
            *(["--part-size", size] if size else []),
            "-i", f"reads=s3://{BUCKET}/reads/S1_R1.fq.gz,s3://{BUCKET}/reads/S1_R2.fq.gz", "--parts", str(parts),
            "-r", f"ref=s3://{BUCKET}/refs/bwa/", "-o", f"bam=s3://{BUCKET}/aln/{tag}/S1.bam", "--gather", "bam=merge",
            "--shell", "--", BWA]


def run_scatter(server: Server, whole: List[str], tag: str, opts: argparse.Namespace,
                sizes: Tuple[int, int], work: Path) -> Dict[str, Any]:
    """One scatter through the proxy: checked, its bytes and times returned."""
    inputs, ref = sizes
    server.reset()
    argv = scatter_argv(tag, opts.parts, opts.jobs, str(work / "scratch"), part_size(server.kind, opts))
    logs = work / "tmp"  # the children's logs ($TMPDIR/genostage-scatter-ID/), removed with the rest
    logs.mkdir(exist_ok=True)
    res = run_timed(argv, env={**server.env(), "TMPDIR": str(logs)}, timeout=1800).check("genostage scatter")
    served = server.served()
    listed = server.listed()
    moto_count = sum(server.moto_app.served.values()) if server.moto_app is not None else None
    prefix = f"aln/{tag}/S1.bam"
    manifest = server.get_json(prefix + ".manifest.json")
    info = manifest["scatter"]
    spec = server.get_json(prefix + ".scatter/spec.json")
    proof = info["conservation"]
    n = spec["children"]
    assert manifest["status"] == "succeeded", manifest.get("error")
    assert info["summary"] == {"succeeded": n}, info["summary"]
    assert proof["checked"] and proof["reads_in"] == 2 * opts.pairs, proof
    assert proof["gathered"]["bam"]["primary"] == 2 * opts.pairs, proof
    out = work / f"{tag}.bam"
    server.client.download_file(BUCKET, prefix, str(out))
    got = records(out)
    assert got == whole, (f"the gathered BAM's records differ from the unchunked alignment's: {len(got):,} "
                          f"records against {len(whole):,}")
    out.unlink()

    def under(p: str) -> int:
        return sum(v for k, v in served.items() if k.startswith(f"/{BUCKET}/{p}"))

    parts_size = sum(size for _k, size in server.keys(prefix + ".scatter/parts/"))
    fetched = {"inputs": under("reads/"), "reference": under("refs/"), "parts": under(prefix + ".scatter/parts/"),
               "total": sum(served.values())}
    fetched["scatter objects"] = under(prefix + ".scatter/") - fetched["parts"]
    fetched["other"] = fetched["total"] - fetched["inputs"] - fetched["reference"] - fetched["parts"] - \
        fetched["scatter objects"]
    children = []
    walls = {int(m.group(1)): float(m.group(2)) for m in CHILD_LINE.finditer(res.stderr)}
    for child in info["children"]:
        key = child["manifest"].split(f"s3://{BUCKET}/", 1)[1]
        m = server.get_json(key)
        t = m["timings"]
        moved = sum(int(e.get("size") or 0) for e in m["inputs"] + m["outputs"]) / 1e6
        children.append({"index": child["index"], **t, "own": t["total"] - t["run"], "moved": moved,
                         "rest": t["total"] - t["run"] - t["stage_in"] - t["stage_out"],
                         "process": walls.get(child["index"], float("nan")) - t["run"]})
    return {"wall": res.seconds, "rss": res.peak_rss_mib, "children": children, "n": n, "fetched": fetched,
            "listed": listed, "moto_count": moto_count, "bound": inputs + n * ref, "parts_size": parts_size,
            "planning": int(spec.get("planning_bytes_read") or 0), "gather": manifest["timings"], "argv": argv}


# -- planning alone --------------------------------------------------------------------
def plan_alone(server: Server, what: str, uris: List[str], parts: int, out: Path) -> Tuple[int, int, float]:
    """``genostage plan KIND`` through the proxy: (bytes counted by the proxy, the plan's
    ``bytes_read``, seconds)."""
    server.reset()
    res = run_timed([*GENOSTAGE, "-q", "plan", what, *uris, "--parts", str(parts), "-o", str(out)],
                    env=server.env()).check(f"genostage plan {what}")
    plan = json.loads(out.read_text())
    assert len(plan["chunks"]) == parts, f"plan {what}: {len(plan['chunks'])} chunks, {parts} asked"
    return sum(server.served().values()), int(plan.get("bytes_read") or 0), res.seconds


def bam_header_end(bam: Path) -> int:
    """Where the BAM's header ends in the compressed file (the end of its last block)."""
    from genostage.split.bam_io import Source, read_header
    from genostage.store import Stores

    return int(read_header(Source(str(bam), Stores())).byte_end)


# -- the gather beside samtools --------------------------------------------------------
def gather_cases(parts: List[str], out: str) -> Dict[str, List[str]]:
    return {
        "genostage gather bam --merge --threads 2": [*GENOSTAGE, "-q", "gather", "bam", "--merge", *parts, "-o", out,
                                                     "--threads", "2"],
        "samtools merge -@2": ["samtools", "merge", "-f", "-@2", "-o", out, *parts],
        "samtools cat": ["samtools", "cat", "-o", out, *parts],
        "(start-up alone: genostage --version)": [*GENOSTAGE, "--version"],
    }


def compare_gathers(parts: List[str], work: Path, whole: List[str], rounds: int) -> Dict[str, List[float]]:
    out = work / "gathered.bam"
    cases = gather_cases(parts, str(out))
    walls: Dict[str, List[float]] = {k: [] for k in cases}
    for r in range(rounds):
        for name, argv in cases.items():
            if out.exists():
                out.unlink()
            walls[name].append(run_timed(argv).check(name).seconds)
            if r == 0 and not name.startswith("("):  # every output checked once
                if name.startswith("genostage"):
                    assert records(out) == whole, f"{name}: records differ from the unchunked alignment's"
                else:
                    assert count_records(out) == len(whole), f"{name}: not {len(whole):,} records"
    if out.exists():
        out.unlink()
    return walls


# -- report ----------------------------------------------------------------------------
def fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def shown(argv: List[str]) -> str:
    """A genostage command as one would type it (no interpreter, no scratch directory)."""
    args = argv[3:]
    if "--scratch" in args:
        i = args.index("--scratch")
        del args[i:i + 2]
    return shlex.join(["genostage", *args])


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def report_server(kind: str, counter: str, runs: List[Dict[str, Any]], sizes: Tuple[int, int],
                  plans: Dict[str, Any], gathers: Dict[str, List[float]], opts: argparse.Namespace) -> List[str]:
    inputs, ref = sizes
    first = runs[0]
    n = first["n"]
    lines = [f"\n== {kind}: {opts.pairs:,} pairs ({fmt_bytes(inputs)} BGZF), {n} children, --jobs {opts.jobs}, "
             f"{len(runs)} run(s) ==",
             f"scatter (AWS_ENDPOINT_URL: {counter}): $ " + shown(first["argv"]),
             "wall time: " + spread([r["wall"] for r in runs]) + " s (min / median / max); peak RSS of the "
             f"scatter process {max(r['rss'] for r in runs):.0f} MiB"]
    # bytes
    f = first["fetched"]
    not_parts = f["total"] - f["parts"] + first["listed"]
    rows = [["inputs (R1, R2: planning + chunks)", fmt_bytes(f["inputs"]), f"{f['inputs'] / inputs:.3f}x the inputs"],
            ["reference (each child)", fmt_bytes(f["reference"]), f"{f['reference'] / ref:.2f}x the reference"],
            ["scatter's objects (spec, plan, manifests)", fmt_bytes(f["scatter objects"]), ""],
            ["listings", fmt_bytes(first["listed"]) if counter == "the counting proxy" else "not counted", ""],
            ["other", fmt_bytes(f["other"]), ""],
            ["all but the parts", fmt_bytes(not_parts),
             f"{not_parts / first['bound']:.3f}x the bound ({fmt_bytes(first['bound'])} = inputs + {n} x reference)"],
            ["parts (the gather)", fmt_bytes(f["parts"]), f"{ratio(f['parts'], first['parts_size']):.3f}x the parts"]]
    lines += ["", f"bytes fetched from S3 by the whole scatter ({counter}):",
              format_table(["what", "bytes", "against"], rows, right=(1,))]
    if first["moto_count"] is not None and counter != "moto's own count":
        lines.append(f"(moto's own count of object bytes served: {fmt_bytes(first['moto_count'])}; the proxy's "
                     f"{fmt_bytes(f['total'])})")
    excess = not_parts - first["bound"]
    overlap = f["inputs"] - inputs - first["planning"] - SNIFF  # the scatter sniffs R1's head once more
    cuts = max(1, n - 1)
    meta = f["scatter objects"] + first["listed"] + f["other"]
    lines.append(f"over the bound: {fmt_bytes(excess)} = planning {fmt_bytes(first['planning'])} + chunk ends read "
                 f"by both neighbours {fmt_bytes(overlap)} + the scatter's objects and listings {fmt_bytes(meta)}: "
                 f"{fmt_bytes(excess / cuts)} per cut point, fixed whatever the input's size, so {n} parts keep "
                 f"within {TARGET_BYTES}x from about {fmt_bytes(max(0, excess / (TARGET_BYTES - 1) - n * ref))} "
                 f"of input")
    # the parts' sizes vary by a few bytes between runs (their @PG lines name each child's scratch)
    same = all(r["fetched"]["inputs"] == f["inputs"] and r["fetched"]["reference"] == f["reference"] and
               r["fetched"]["parts"] == r["parts_size"] for r in runs)
    lines.append(f"target: all but the parts <= {TARGET_BYTES}x the bound: {not_parts / first['bound']:.3f}x "
                 f"{verdict(not_parts <= TARGET_BYTES * first['bound'])}; parts fetched once: "
                 f"{verdict(f['parts'] == first['parts_size'])}" + ("" if len(runs) == 1 else
                                                                   " (the same in every run)" if same else
                                                                   " (not the same in every run)"))
    # planning
    rows = []
    for name, (counted, recorded, bound, seconds) in plans.items():
        rows.append([name, f"{recorded:,}", f"{counted:,}" if counted is not None else "-", f"{bound:,}",
                     f"{max(recorded, counted or 0) / bound:.3f}x", f"{seconds:.2f}" if seconds else "-",
                     verdict(max(recorded, counted or 0) <= bound)])
    lines += ["", "planning reads (bound: header + N x 1 MiB):",
              format_table(["plan", "bytes_read (recorded)", "bytes (counted)", "bound", "of bound", "s", "target"],
                           rows, right=(1, 2, 3, 4, 5))]
    # children
    ch = [c for r in runs for c in r["children"]]
    rows = [[k, spread([c[k] for c in ch])] for k in ("own", "stage_in", "stage_out", "rest", "process", "run",
                                                        "total", "moved")]
    labels = {"own": "own: total - run (manifest)", "stage_in": "  of which stage_in",
              "stage_out": "  of which stage_out",
              "rest": "  of which the rest (scratch, counting, manifest)",
              "process": "process wall - run (with the interpreter's start)", "run": "run (the tool)",
              "total": "total (manifest)", "moved": "MB moved (staged in + published), MB"}
    rows = [[labels[k], v] for k, v in rows]
    own_median = median([c["own"] for c in ch])
    lines += ["", f"genostage's own time per child ({len(ch)} children):",
              format_table(["s", "min / median / max"], rows, right=(1,)),
              f"target: own time under {TARGET_OWN} s: median {own_median:.2f} s {verdict(own_median < TARGET_OWN)}, "
              f"max {max(c['own'] for c in ch):.2f} s {verdict(max(c['own'] for c in ch) < TARGET_OWN)}; with the "
              f"interpreter's start (process wall - run): median {median([c['process'] for c in ch]):.2f} s "
              f"{verdict(median([c['process'] for c in ch]) < TARGET_OWN)}"]
    # gather
    g = [r["gather"] for r in runs]
    lines += ["", f"the scatter's gather job (final manifest): total {spread([t['total'] for t in g])} s, staging the "
              f"parts {spread([t['stage_in'] for t in g])} s, publishing {spread([t['stage_out'] for t in g])} s"]
    med = {k: median(v) for k, v in gathers.items()}
    base = med["samtools merge -@2"]
    rows = [[k, f"{med[k]:.2f}", " / ".join(f"{w:.2f}" for w in v), f"{ratio(base, med[k]):.2f}x",
             f"{ratio(med['samtools cat'], med[k]):.2f}x"] for k, v in gathers.items()]
    lines += [f"gathering the {n} parts the scatter wrote ({fmt_bytes(first['parts_size'])}, downloaded once), "
              f"wall s, median of {len(next(iter(gathers.values())))}:",
              format_table(["", "median s", "runs", "vs samtools merge -@2", "vs samtools cat"], rows,
                           right=(1, 3, 4)),
              "(ratios: the other's time / this one's; above 1 = faster; samtools cat concatenates, it does not sort)"]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1_000_000, help="read pairs of the sample (default 1,000,000: "
                    "172 MB of BGZF; made once, 2-3 min)")
    ap.add_argument("--parts", type=int, default=8, help="chunks (children) of the scatter (default 8)")
    ap.add_argument("--jobs", type=int, default=2, help="children at once (default 2)")
    ap.add_argument("--server", choices=("moto", "rclone", "both"), default="both")
    ap.add_argument("--repeat", type=int, default=1, help="scatters per server, and rounds of the gather comparison")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-proxy", action="store_true",
                    help="moto: the scatter talks to moto directly, moto counts (listings uncounted)")
    ap.add_argument("--part-size", metavar="SIZE", help="the scatter's --part-size (default: genostage's)")
    ap.add_argument("--dir", default="/work/bench-data/scatter", help="data, made once and kept")
    ap.add_argument("--quick", action="store_true",
                    help="40,000 pairs, 4 parts (and moto, one run, unless given): under a minute")
    opts = ap.parse_args()
    if opts.quick:  # the size; the server and the rounds unless given
        opts.pairs, opts.parts = 40_000, 4
        if not any(a.startswith("--server") for a in sys.argv):
            opts.server = "moto"
        if not any(a.startswith("--repeat") for a in sys.argv):
            opts.repeat = 1
    for tool in ("bwa", "samtools", "bgzip"):
        if shutil.which(tool) is None:
            print(f"bench_scatter: {tool} is not installed (make build installs it)", file=sys.stderr)
            return 2
    started = time.monotonic()
    print(invocation(__file__, sys.argv[1:]))
    print(load_average(), flush=True)
    root = Path(opts.dir)
    root.mkdir(parents=True, exist_ok=True)
    data = make_data(root, opts.pairs, opts.seed)
    whole = records(data / "whole.bam")
    assert len(whole) >= 2 * opts.pairs
    for kind in (("moto", "rclone") if opts.server == "both" else (opts.server,)):
        work = Path(tempfile.mkdtemp(prefix=f"bench-scatter-{kind}-", dir=root))
        try:
            with Server(kind, proxy=kind != "moto" or not opts.no_proxy) as server:
                counter = server.counter
                sizes = upload(server, data)
                runs = []
                for r in range(opts.repeat):
                    runs.append(run_scatter(server, whole, f"r{r}", opts, sizes, work))
                    print(f"  {kind}: scatter {r + 1} of {opts.repeat}: {runs[-1]['wall']:.1f} s, checked", flush=True)
                plans: Dict[str, Any] = {}
                reads = [f"s3://{BUCKET}/reads/S1_R1.fq.gz", f"s3://{BUCKET}/reads/S1_R2.fq.gz"]
                fastq_bound = 2 * SNIFF + opts.parts * READ_BUDGET
                plans["FASTQ pair (the scatter's, from its spec)"] = (None, runs[0]["planning"], fastq_bound, None)
                counted, recorded, seconds = plan_alone(server, "fastq", reads, opts.parts, work / "fastq.plan.json")
                plans[f"genostage plan fastq R1 R2 --parts {opts.parts}"] = (counted, recorded, fastq_bound, seconds)
                gathered = work / "S1.bam"
                server.client.download_file(BUCKET, "aln/r0/S1.bam", str(gathered))
                counted, recorded, seconds = plan_alone(server, "bam", [f"s3://{BUCKET}/aln/r0/S1.bam"], opts.parts,
                                                        work / "bam.plan.json")
                bound = bam_header_end(gathered) + opts.parts * READ_BUDGET
                plans[f"genostage plan bam S1.bam --parts {opts.parts}"] = (counted, recorded, bound, seconds)
                parts_dir = work / "parts"
                parts_dir.mkdir()
                parts = []
                for key, _size in server.keys("aln/r0/S1.bam.scatter/parts/bam/"):
                    parts.append(str(parts_dir / os.path.basename(key)))
                    server.client.download_file(BUCKET, key, parts[-1])
            gathers = compare_gathers(sorted(parts), work, whole, opts.repeat)
            lines = report_server(kind, counter, runs, sizes, plans, gathers, opts)
            print("\n".join(lines), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{load_average()}; the benchmark took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
