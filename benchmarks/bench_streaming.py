"""Streaming: a tool reading its input while it downloads (and writing its output while it
uploads) against staging first, on a capped link, side by side in one run.

The S3 server is ``rclone serve s3`` (genostage.testing.s3server.rclone_server) over a
directory under the data dir; every client reaches it through a TCP proxy on loopback capped
at ``--rate`` bytes per second each way, shared by every connection (``common.capped_link``),
so that transfer time matters as it does on a node's network link rather than at loopback's
memory speed. The inputs are placed in the server's directory as hard links of the local
files (rclone keeps only a whole-object MD5 for each: streamed inputs are verified by that MD5,
hashed in order as the parts reach the pipe).

Cases (``--cases``, default all three), each measured five ways or fewer:

- ``bam``: ``samtools view -c`` of a coordinate-sorted BAM (default >= 1 GiB, made by
  make_bam_data.py; the count is the output);
- ``bwa``: ``bwa mem`` of a FASTQ pair (simulated reads, benchmarks/fastq_gen.py, and its
  reference, indexed once; the reference is staged in every run, the SAM is the output), with one
  thread (``--bwa-threads``): the S3 server and the link run on the same cores as the job here,
  and a ``bwa`` using every core would be measured against them, not against the transfer;
- ``reheader``: a streamed output: ``samtools reheader`` of the same BAM (its sample renamed), a
  1 GiB output uploaded as it is written (``samtools cat`` cannot be streamed: it opens its
  input twice, once for the header and once for the blocks).

and for each:

- ``transfer alone``: ``genostage cp SRC - > /dev/null`` of the input(s), same link (the two
  files of a pair at once); for ``reheader`` also ``upload alone``: ``genostage cp FILE s3://...``;
- ``tool alone``: the tool on the local file(s), output to a local file;
- ``staged``: ``genostage run -i NAME=s3://... -o OUT=s3://... -- TOOL`` (download, run, upload);
- ``streamed``: the same with ``--stream`` on the input(s) (and on the output for ``bwa`` and ``reheader``).

Printed per case: median wall seconds (and the spread over ``--repeat`` runs), the job's CPU
seconds (the command and everything it ran), the server's and the link's CPU seconds, the
genostage process's peak RSS, the peak disk use of the job's scratch root (allocated blocks,
sampled every 0.1 s while the job runs) and that as a share of the input, and the output (the
same in every run, or an ERROR). Then the ratios: streamed / max(transfer alone, tool alone)
(target <= 1.1x), staged / the same, and the streamed peak scratch (target < 5% of the input).

    .venv/bin/python benchmarks/bench_streaming.py [--quick] [--rate 100MB] [--repeat 1]
        [--cases bam,bwa,reheader] [--bam-reads 18000000] [--fastq-size 128MiB] [--concurrency 10] [--part-size 16MiB]
        [--data-dir /work/bench-data/streaming] [--keep-data]

``--quick``: a 40 MB BAM, 4 MiB FASTQ files and a 25 MB/s link: under a minute. Data lives under
``--data-dir`` and is deleted at the end unless ``--keep-data`` (the 1 GiB BAM takes about ten
minutes to make on 2 cores; with ``--keep-data`` the next run reuses it).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

from common import (Repeated, exit_on_sigterm, stamped_log, DiskSampler, capped_link, clean_env, cpu_seconds, format_table, load_average,  # noqa: E402
                    median, ratio, run_timed)

from genostage.testing import s3server  # noqa: E402
from genostage.units import format_size, parse_size  # noqa: E402

BUCKET = "bench"
CASES = ("bam", "bwa", "reheader")
TARGET_RATIO = 1.1
TARGET_SCRATCH = 0.05
HASH_CHUNK = 8 << 20
VENV_BIN = Path(sys.executable).parent
TIMEOUT = 1800.0


# -- data ---------------------------------------------------------------------
def make_bam(path: Path, reads: int, genome: int, log: Callable[[str], None]) -> None:
    """A sorted BAM of ``reads`` simulated reads (make_bam_data.py), kept for the next run."""
    if path.exists():
        return
    log(f"making {path.name}: {reads} reads (make_bam_data.py)")
    tmp = path.with_name("tmp-" + path.name)
    subprocess.run([sys.executable, os.path.join(HERE, "make_bam_data.py"), str(tmp), "--reads", str(reads),
                    "--genome", str(genome), "--level", "3"], check=True, stderr=subprocess.DEVNULL)
    os.replace(tmp, path)
    os.replace(str(tmp) + ".bai", str(path) + ".bai")


def make_fastq(root: Path, size: int, genome_size: int, log: Callable[[str], None]) -> Tuple[Path, Path, Path]:
    """R1, R2 (fastq_gen.py, about ``size`` bytes each) and the reference they come from,
    indexed for bwa; kept for the next run."""
    import fastq_gen

    root.mkdir(parents=True, exist_ok=True)
    r1, r2, ref = root / "reads_R1.fq", root / "reads_R2.fq", root / "ref" / "ref.fa"
    done = root / "done"
    if done.exists():
        return r1, r2, ref
    log(f"making a FASTQ pair of {format_size(size)} each and its {genome_size // 1000} kb reference")
    seed = 7
    # the genome fastq_gen.generate draws first from the same seed: the reads' reference
    rng = np.random.default_rng(seed)
    genome = rng.choice(np.frombuffer(b"ACGT", dtype=np.uint8), size=genome_size, p=[0.295, 0.205, 0.205, 0.295])
    ref.parent.mkdir(parents=True, exist_ok=True)
    with open(ref, "wb") as fh:
        fh.write(b">chr1\n")
        text = genome.tobytes()
        fh.write(b"".join(text[i:i + 60] + b"\n" for i in range(0, len(text), 60)))
    fastq_gen.generate(str(r1), str(r2), size, seed=seed, genome_size=genome_size)
    subprocess.run(["bwa", "index", str(ref)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done.write_text("")
    return r1, r2, ref


def make_header(bam: Path, path: Path) -> Path:
    """The BAM's header with its sample renamed (what ``samtools reheader`` puts in)."""
    text = subprocess.run(["samtools", "view", "-H", "--no-PG", str(bam)], check=True, capture_output=True,
                          text=True).stdout
    path.write_text(text.replace("SM:sample1", "SM:renamed"))
    return path


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(HASH_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sam_digest(path: Path) -> str:
    """The SAM's records and header, without its @PG lines (they hold the command line and its
    paths): the MD5 and the number of records."""
    h = hashlib.md5()
    records = 0
    with open(path, "rb") as fh:
        for line in fh:
            if line.startswith(b"@PG"):
                continue
            if not line.startswith(b"@"):
                records += 1
            h.update(line)
    return f"{records} records, md5 {h.hexdigest()[:12]}"


def place(src: Path, dest: Path) -> None:
    """``src`` as an object: a hard link in the server's directory (a copy across file systems)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def child_pid(name: str) -> Optional[int]:
    """The pid of this process's child whose command is ``name`` (rclone)."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                text = fh.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        if ppid == me and comm == name:
            return int(entry)
    return None


# -- measuring ------------------------------------------------------------------
@dataclass
class Row(Repeated):
    case: str
    mode: str
    input_bytes: int
    seconds: List[float] = field(default_factory=list)
    cpu: List[float] = field(default_factory=list)
    server_cpu: List[float] = field(default_factory=list)
    link_cpu: List[float] = field(default_factory=list)
    rss: List[float] = field(default_factory=list)
    scratch: List[int] = field(default_factory=list)
    outputs: List[str] = field(default_factory=list)
    verified: str = ""
    errors: List[str] = field(default_factory=list)


@dataclass
class Run:
    """How to run one mode of one case once: the command, where its scratch root is (sampled),
    and how to read its output afterwards."""

    argv: List[str]
    output: Callable[[], str]
    scratch: Optional[Path] = None
    manifest: Optional[Path] = None
    cleanup: Callable[[], None] = lambda: None


class Bench:
    def __init__(self, args: argparse.Namespace, data: Path, log: Callable[[str], None]) -> None:
        self.args = args
        self.data = data
        self.log = log
        self.genostage = str(VENV_BIN / "genostage")
        self.work = data / "work"
        self.root = data / "rclone-root"
        self.rows: Dict[Tuple[str, str], Row] = {}
        self.server_pid: Optional[int] = None
        self.link_pid: Optional[int] = None
        self.env: Dict[str, str] = {}
        self.endpoint = ""
        self.client: Any = None  # boto3, straight to the server (not through the link)

    # -- commands ---------------------------------------------------------------
    def gs(self, *words: str) -> List[str]:
        return [self.genostage, *words]

    def transfer_options(self) -> List[str]:
        part = ["--part-size", self.args.part_size] if self.args.part_size else []
        return ["--endpoint-url", self.endpoint, "--concurrency", str(self.args.concurrency), *part, "--no-progress"]

    def job(self, scratch: Path, manifest: str, words: Sequence[str]) -> List[str]:
        return self.gs("run", *self.transfer_options(), "--scratch", str(scratch), "--manifest", manifest, *words)

    def cp_to_null(self, uris: Sequence[str]) -> List[str]:
        """``genostage cp URI - > /dev/null`` for each URI, all at once; fails if any fails."""
        opts = " ".join(self.transfer_options())
        lines = [f'"$0" cp {opts} {u} - > /dev/null & p{i}=$!' for i, u in enumerate(uris)]
        waits = " && ".join(f"wait $p{i}" for i in range(len(uris)))
        return ["bash", "-c", "; ".join(lines) + f"; {waits}", self.genostage]

    # -- one measurement ----------------------------------------------------------
    def measure(self, case: str, mode: str, input_bytes: int, run: Run, rep: int) -> None:
        row = self.rows.setdefault((case, mode), Row(case, mode, input_bytes))
        if run.scratch is not None:
            shutil.rmtree(run.scratch, ignore_errors=True)
            run.scratch.mkdir(parents=True)
        for key in self.inputs_of(case):  # rclone hashes an object for its first HEAD: not in the timing
            self.client.head_object(Bucket=BUCKET, Key=key)
        os.sync()  # earlier runs' dirty pages must not be written back during this one
        server0 = cpu_seconds(self.server_pid) if self.server_pid else 0.0
        link0 = cpu_seconds(self.link_pid) if self.link_pid else 0.0
        children0 = os.times()
        sampler = DiskSampler(str(run.scratch)) if run.scratch is not None else contextlib.nullcontext()
        with sampler:
            r = run_timed(run.argv, env=self.env, timeout=TIMEOUT)
        children1 = os.times()
        cpu = (children1.children_user - children0.children_user) + (children1.children_system -
                                                                      children0.children_system)
        server = (cpu_seconds(self.server_pid) - server0) if self.server_pid else float("nan")
        link = (cpu_seconds(self.link_pid) - link0) if self.link_pid else float("nan")
        try:
            r.check(f"{case} {mode}")
            out = run.output()
            phases = ""
            if run.manifest is not None:
                row.verified = self.how_verified(run.manifest)
                phases = self.phases(run.manifest)
        except (RuntimeError, AssertionError, OSError, ValueError) as exc:
            lines = [ln for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("---")]
            row.errors.append(" | ".join(lines[:1] + lines[-3:])[:800])
            self.log(f"rep {rep}: {case:4s} {mode:15s} FAILED: {row.errors[-1]}")
            run.cleanup()
            return
        finally:
            if run.scratch is not None:
                shutil.rmtree(run.scratch, ignore_errors=True)
        run.cleanup()
        row.seconds.append(r.seconds)
        row.cpu.append(cpu)
        row.server_cpu.append(server)
        row.link_cpu.append(link)
        row.rss.append(r.peak_rss_mib)
        row.outputs.append(out)
        if isinstance(sampler, DiskSampler):
            row.scratch.append(sampler.peak)
        peak = f" scratch peak {format_size(sampler.peak)}" if isinstance(sampler, DiskSampler) else ""
        self.log(f"rep {rep}: {case:4s} {mode:15s} {r.seconds:7.2f} s  cpu {cpu:6.2f} s  server {server:5.2f} s  "
                 f"link {link:5.2f} s  rss {r.peak_rss_mib:5.0f} MiB{peak}{phases}  -> {out}  ({load_average()})")
        if self.args.verbose:
            self.log("  $ " + " ".join(run.argv))

    @staticmethod
    def phases(manifest: Path) -> str:
        """The job's own account of its time (the manifest's timings): before the tool, the
        tool, after it (streamed transfers overlap the tool and count in its phase)."""
        t = json.loads(manifest.read_text()).get("timings", {})
        return f"  phases in {t.get('stage_in', 0):.2f} / tool {t.get('run', 0):.2f} / out {t.get('stage_out', 0):.2f} " \
               f"of {t.get('total', 0):.2f} s"

    def how_verified(self, manifest: Path) -> str:
        m = json.loads(manifest.read_text())
        parts = []
        for kind in ("inputs", "outputs"):
            for e in m.get(kind, []):
                if e.get("streamed"):
                    parts.append(f"{e['name']} streamed, verified by {e.get('verified')}")
        return "; ".join(parts)

    def inputs_of(self, case: str) -> List[str]:
        return {"bam": ["in/big.bam"], "reheader": ["in/big.bam", "in/header.sam"],
                "bwa": ["in/reads_R1.fq", "in/reads_R2.fq"]}[case]

    def object_path(self, key: str) -> Path:
        return self.root / BUCKET / key

    def remove_object(self, key: str) -> Callable[[], None]:
        def remove() -> None:
            with contextlib.suppress(Exception):
                self.client.delete_object(Bucket=BUCKET, Key=key)
            with contextlib.suppress(FileNotFoundError):
                self.object_path(key).unlink()
        return remove

    # -- the cases ------------------------------------------------------------------
    def runs(self, case: str, rep: int, files: Dict[str, Path]) -> Dict[str, Run]:
        scratch = self.data / "scratch"
        out = self.work / "out"
        out.mkdir(parents=True, exist_ok=True)
        runs: Dict[str, Run] = {}
        if case == "bam":
            bam = f"s3://{BUCKET}/in/big.bam"
            for mode in ("staged", "streamed"):
                key = f"out/{case}-{mode}-{rep}/count.txt"
                words = ["-i", f"bam={bam}", "-o", f"count=s3://{BUCKET}/{key}", "--stdout", "count"]
                if mode == "streamed":
                    words += ["--stream", "bam"]
                words += ["--", "samtools", "view", "-c", "{bam}"]
                runs[mode] = self.job_run(scratch / f"{case}-{mode}", key, words, self.count_of(key))
            local = out / "count.txt"
            runs["tool alone"] = Run(["bash", "-c", f'samtools view -c "$0" > {local}', str(files["bam"])],
                                     lambda: f"{int(local.read_text())} records")
            runs["transfer alone"] = Run(self.cp_to_null([bam]), lambda: "-")
        elif case == "bwa":
            r1, r2 = (f"s3://{BUCKET}/in/reads_R{i}.fq" for i in (1, 2))
            bwa = f"bwa mem -t {self.args.bwa_threads} -K 10000000"
            for mode in ("staged", "streamed"):
                key = f"out/{case}-{mode}-{rep}/reads.sam"
                words = ["-i", f"ref=s3://{BUCKET}/ref/", "-i", f"r1={r1}", "-i", f"r2={r2}",
                         "-o", f"sam=s3://{BUCKET}/{key}"]
                if mode == "streamed":
                    words += ["--stream", "r1", "--stream", "r2", "--stream", "sam"]
                words += ["--shell", "--", f"{bwa} {{ref}}/ref.fa {{r1}} {{r2}} > {{sam}}"]
                runs[mode] = self.job_run(scratch / f"{case}-{mode}", key, words, self.sam_of(key))
            local = out / "reads.sam"
            runs["tool alone"] = Run(["bash", "-c", f'{bwa} "$0" "$1" "$2" > {local}',
                                      str(files["ref"]), str(files["r1"]), str(files["r2"])],
                                     lambda: sam_digest(local), cleanup=lambda: local.unlink())
            runs["transfer alone"] = Run(self.cp_to_null([r1, r2]), lambda: "-")
        elif case == "reheader":
            bam, hdr = f"s3://{BUCKET}/in/big.bam", f"s3://{BUCKET}/in/header.sam"
            tool = "samtools reheader --no-PG"
            for mode in ("staged", "streamed"):
                key = f"out/{case}-{mode}-{rep}/renamed.bam"
                words = ["-i", f"bam={bam}", "-i", f"hdr={hdr}", "-o", f"out=s3://{BUCKET}/{key}"]
                if mode == "streamed":
                    words += ["--stream", "bam", "--stream", "out"]
                words += ["--shell", "--", f"{tool} {{hdr}} {{bam}} > {{out}}"]
                runs[mode] = self.job_run(scratch / f"{case}-{mode}", key, words, self.md5_of(key))
            local = out / "renamed.bam"
            runs["tool alone"] = Run(["bash", "-c", f'{tool} "$0" "$1" > {local}', str(files["header"]),
                                      str(files["bam"])],
                                     lambda: f"md5 {md5_file(local)[:12]}", cleanup=lambda: local.unlink())
            runs["transfer alone"] = Run(self.cp_to_null([bam]), lambda: "-")
            key = f"up/{rep}/big.bam"
            runs["upload alone"] = Run(self.gs("cp", *self.transfer_options(), str(files["bam"]),
                                               f"s3://{BUCKET}/{key}"),
                                       lambda: "-", cleanup=self.remove_object(key))
        return runs

    def job_run(self, scratch: Path, key: str, words: List[str], output: Callable[[], str]) -> Run:
        manifest_key = key.rsplit("/", 1)[0] + "/manifest.json"
        remove_out, remove_manifest = self.remove_object(key), self.remove_object(manifest_key)

        def cleanup() -> None:
            remove_out()
            remove_manifest()
        return Run(self.job(scratch, f"s3://{BUCKET}/{manifest_key}", words), output, scratch,
                   self.object_path(manifest_key), cleanup)

    def count_of(self, key: str) -> Callable[[], str]:
        return lambda: f"{int(self.object_path(key).read_text())} records"

    def sam_of(self, key: str) -> Callable[[], str]:
        return lambda: sam_digest(self.object_path(key))

    def md5_of(self, key: str) -> Callable[[], str]:
        return lambda: f"md5 {md5_file(self.object_path(key))[:12]}"

    # -- the whole run ----------------------------------------------------------------
    def run(self, files: Dict[str, Path]) -> None:
        for name, key in (("bam", "in/big.bam"), ("header", "in/header.sam"), ("r1", "in/reads_R1.fq"),
                          ("r2", "in/reads_R2.fq")):
            if name in files:
                place(files[name], self.object_path(key))
        if "ref" in files:
            for f in files["ref"].parent.iterdir():
                place(f, self.object_path(f"ref/{f.name}"))
        with s3server.rclone_server(str(self.root)) as s3:
            self.server_pid = child_pid("rclone")
            self.client = s3.client()
            with capped_link(s3.endpoint_url, self.args.rate_bytes) as (url, pid):
                self.endpoint, self.link_pid = url, pid
                self.env = clean_env({**s3.env(), "AWS_ENDPOINT_URL": url, "S3_ENDPOINT_URL": url})
                for rep in range(1, self.args.repeat + 1):
                    for case in self.args.cases:
                        runs = self.runs(case, rep, files)
                        order = list(runs)
                        shift = (rep - 1) % len(order)
                        for mode in order[shift:] + order[:shift]:
                            self.measure(case, mode, self.input_bytes(case, files), runs[mode], rep)

    def input_bytes(self, case: str, files: Dict[str, Path]) -> int:
        if case == "bwa":
            ref = sum(f.stat().st_size for f in files["ref"].parent.iterdir())
            return files["r1"].stat().st_size + files["r2"].stat().st_size + ref
        extra = files["header"].stat().st_size if case == "reheader" else 0
        return files["bam"].stat().st_size + extra


# -- the report -----------------------------------------------------------------------
MODES = ("transfer alone", "upload alone", "tool alone", "staged", "streamed")
DESCRIPTION = {
    "bam": "samtools view -c",
    "bwa": "bwa mem (FASTQ pair)",
    "reheader": "samtools reheader (streamed output)",
}


def _spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else ""


def _med(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    good = [v for v in values if v == v]
    return fmt.format(median(good)) if good else "-"


def report(bench: Bench, cases: Sequence[str], files: Dict[str, Path]) -> Tuple[str, List[str], bool]:
    rows = []
    verdicts: List[str] = []
    passed = True
    for case in cases:
        size = bench.input_bytes(case, files)
        by_mode = {m: bench.rows[(case, m)] for m in MODES if (case, m) in bench.rows}
        for mode, row in by_mode.items():
            outputs = sorted(set(row.outputs))
            scratch = max(row.scratch) if row.scratch else None
            rows.append([case if mode == next(iter(by_mode)) else "", mode,
                         f"{row.median_seconds:.2f}" if row.seconds else "-", _spread(row.seconds),
                         _med(row.cpu), _med(row.server_cpu), _med(row.link_cpu), _med(row.rss, "{:.0f}"),
                         format_size(scratch) if scratch is not None else "",
                         f"{100.0 * scratch / size:.1f}%" if scratch is not None else "",
                         ("ERROR " + row.errors[0][:60]) if row.errors else " / ".join(outputs)])
        parts = [by_mode[m] for m in ("transfer alone", "upload alone", "tool alone") if m in by_mode]
        streamed, staged = by_mode.get("streamed"), by_mode.get("staged")
        if not (streamed and staged and all(p.ok for p in parts) and streamed.ok and staged.ok):
            verdicts.append(f"{case}: FAIL (a run failed)")
            passed = False
            continue
        bound = max(p.median_seconds for p in parts)
        bound_by = max(parts, key=lambda p: p.median_seconds).mode
        r = ratio(streamed.median_seconds, bound)
        peak = max(streamed.scratch) / size
        outs = {o for row in by_mode.values() for o in row.outputs if o != "-"}
        same = len(outs) == 1
        ok = r <= TARGET_RATIO and peak < TARGET_SCRATCH and same
        passed = passed and ok
        ingredients = ", ".join(p.mode for p in parts)
        verdicts.append(
            f"{case} ({DESCRIPTION[case]}, {format_size(size)} in): streamed {streamed.median_seconds:.2f} s = "
            f"{r:.2f}x max({ingredients}) = {bound:.2f} s ({bound_by}) "
            f"[target <= {TARGET_RATIO}x: {'PASS' if r <= TARGET_RATIO else 'FAIL'}]; "
            f"staged {ratio(staged.median_seconds, bound):.2f}x; streamed/staged "
            f"{ratio(streamed.median_seconds, staged.median_seconds):.2f}x; "
            f"peak scratch streamed {format_size(max(streamed.scratch))} = {100 * peak:.2f}% of the input "
            f"[target < {100 * TARGET_SCRATCH:.0f}%: {'PASS' if peak < TARGET_SCRATCH else 'FAIL'}], "
            f"staged {format_size(max(staged.scratch))}; outputs {'the same' if same else 'DIFFER: ' + str(sorted(outs))}"
            f" [{'PASS' if same else 'FAIL'}]; {streamed.verified}")
    headers = ["case", "mode", "seconds", "min-max", "cpu s", "server cpu s", "link cpu s", "peak RSS MiB",
               "peak scratch", "of input", "output"]
    table = format_table(headers, rows, right=(2, 3, 4, 5, 6, 7, 8, 9))
    return table, verdicts, passed


# -- main -------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small data and a 25 MB/s link (under a minute): --bam-reads 600000 --fastq-size 4MiB")
    p.add_argument("--rate", help="the link's cap, each way (default 100MB; --quick: 25MB)")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of bam,bwa,reheader")
    p.add_argument("--repeat", type=int, default=1, help="runs of each mode; the median is reported")
    p.add_argument("--bam-reads", type=int, help="reads in the BAM (default 18000000: >= 1 GiB)")
    p.add_argument("--fastq-size", help="bytes of each FASTQ file (default 128MiB)")
    p.add_argument("--bwa-threads", type=int, default=1, help="bwa mem -t (default 1; see the module docstring)")
    p.add_argument("--concurrency", type=int, default=10, help="genostage's requests in flight (default 10)")
    p.add_argument("--part-size", help="genostage's --part-size (default: genostage's, 16MiB)")
    p.add_argument("--data-dir", default="/work/bench-data/streaming")
    p.add_argument("--keep-data", action="store_true", help="keep the generated files for the next run")
    p.add_argument("--json", help="also write the measurements to this file")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("-v", "--verbose", action="store_true", help="print each command")
    args = p.parse_args(argv)
    args.cases = [c for c in args.cases.split(",") if c]
    if not args.cases or any(c not in CASES for c in args.cases):
        p.error("--cases: expected a comma-separated subset of " + ",".join(CASES))
    args.rate_bytes = float(parse_size(args.rate or ("25MB" if args.quick else "100MB")))
    args.bam_reads = args.bam_reads or (600_000 if args.quick else 18_000_000)
    args.fastq_bytes = parse_size(args.fastq_size or ("4MiB" if args.quick else "128MiB"))
    args.genome = 20_000_000 if args.bam_reads < 5_000_000 else 200_000_000
    args.ref_bases = 100_000 if args.quick else 1_000_000
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    log = stamped_log()
    for tool in ("samtools", "bwa"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (make build installs it)")
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    exit_on_sigterm()
    log(f"start: {load_average()}")
    bench = Bench(args, data, log)
    files: Dict[str, Path] = {}
    try:
        if "bam" in args.cases or "reheader" in args.cases:
            files["bam"] = data / f"big-{args.bam_reads}.bam"
            make_bam(files["bam"], args.bam_reads, args.genome, log)
            files["header"] = make_header(files["bam"], data / "header.sam")
        if "bwa" in args.cases:
            files["r1"], files["r2"], files["ref"] = make_fastq(data / f"fastq-{args.fastq_bytes}-{args.ref_bases}",
                                                                args.fastq_bytes, args.ref_bases, log)
        for name, path in files.items():
            log(f"{name}: {path} ({format_size(path.stat().st_size)})")
        shutil.rmtree(bench.root, ignore_errors=True)
        shutil.rmtree(bench.work, ignore_errors=True)
        bench.run(files)
        table, verdicts, passed = report(bench, args.cases, files)
    finally:
        shutil.rmtree(bench.root, ignore_errors=True)
        shutil.rmtree(bench.work, ignore_errors=True)
        shutil.rmtree(data / "scratch", ignore_errors=True)
        if not args.keep_data:
            shutil.rmtree(data, ignore_errors=True)
    print(f"bench_streaming: {' '.join(sys.argv[1:]) or '(defaults)'}")
    print(f"rclone serve s3 behind a link capped at {format_size(args.rate_bytes)}/s each way; "
          f"genostage --concurrency {args.concurrency} --part-size {args.part_size or '16MiB'}; repeat {args.repeat}")
    print(f"{load_average()} at the end; {time.monotonic() - started:.0f} s in all")
    print()
    print(table)
    print()
    for line in verdicts:
        print(line)
    print(f"targets (streamed <= {TARGET_RATIO}x max(transfer alone, tool alone), peak scratch < "
          f"{100 * TARGET_SCRATCH:.0f}% of the input, the same outputs): {'PASS' if passed else 'FAIL'}")
    for row in bench.rows.values():
        for err in row.errors:
            print(f"ERROR {row.case} {row.mode}: {err}")
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in bench.rows.values()], indent=1))
    return 1 if (args.strict and not passed) else 0


if __name__ == "__main__":
    sys.exit(main())
