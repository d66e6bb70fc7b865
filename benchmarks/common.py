"""Generic helpers shared by the benchmarks: timing a child process, throughput, tables.

Nothing here knows about genostage: ``run_timed`` runs any command and reports its
wall time and peak resident memory (``/usr/bin/time``'s %M: the command's own
process, not its children), ``mb_per_s`` and ``ratio`` do the arithmetic, and
``format_table`` lines up a list of rows for a terminal or a report. ``capped_link`` puts a
TCP proxy capped at a rate (each way, shared by every connection: a node's network link) in
front of a server on loopback; ``DiskSampler`` samples the peak disk use under a directory;
``cpu_seconds`` reads a process's CPU time.
"""
from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

MB = 1_000_000  # throughput is reported in decimal megabytes per second
TIME = "/usr/bin/time"


@dataclass
class RunResult:
    """What one run of a command did."""

    argv: List[str]
    seconds: float
    peak_rss_mib: float
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    def check(self, what: str = "") -> "RunResult":
        """Raise with the command's output when it failed or timed out."""
        if self.returncode != 0 or self.timed_out:
            why = "timed out" if self.timed_out else f"exited with status {self.returncode}"
            raise RuntimeError(f"{what or self.argv[0]} {why}: {' '.join(self.argv)}\n"
                               f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}")
        return self


def run_timed(argv: Sequence[str], env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
              timeout: Optional[float] = None) -> RunResult:
    """Run ``argv`` to completion; wall time from just before the fork to the reap.

    Output goes to temporary files (not pipes) so that a chatty command cannot
    block on a full pipe and the benchmark process does no work while it runs.
    The peak RSS is the command's ``ru_maxrss`` as GNU ``/usr/bin/time`` reports it:
    ``wait4`` on a child forked from this (large) Python process would count the
    pages the child shared with it before ``exec``, so the command is started by
    ``time``, a small process; without ``/usr/bin/time`` the RSS is ``wait4``'s.
    """
    argv = [str(a) for a in argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(prefix="bench-rss-") as rss:
        launch = argv
        if os.access(TIME, os.X_OK):
            launch = [TIME, "-q", "-f", "%M", "-o", rss.name, *argv]
        start = time.perf_counter()
        proc = subprocess.Popen(launch, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)
        timed_out = threading.Event()

        def _kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, _kill) if timeout else None
        if timer:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: take the command (its whole process group) down too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            if timer:
                timer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        peak_kib = float(usage.ru_maxrss)
        if launch is not argv:
            text = open(rss.name).read().split()
            peak_kib = float(text[-1]) if text and text[-1].isdigit() else float("nan")
        return RunResult(argv, seconds, peak_kib / 1024.0, proc.returncode,
                         out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                         timed_out.is_set())


def mb_per_s(nbytes: int, seconds: float) -> float:
    return nbytes / MB / max(seconds, 1e-9)


def ratio(value: float, reference: float) -> float:
    return value / reference if reference > 0 else float("inf")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


class Repeated:
    """A measurement repeated ``--repeat`` times (a dataclass with ``seconds`` and ``errors``
    lists mixes this in): whether it ran cleanly, and its median."""

    seconds: List[float]
    errors: List[str]

    @property
    def ok(self) -> bool:
        return bool(self.seconds) and not self.errors

    @property
    def median_seconds(self) -> float:
        return median(self.seconds) if self.seconds else float("nan")


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit(143), so that a benchmark's ``finally`` blocks clean up
    (children, servers, data) when it is stopped."""
    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, terminated)


def stamped_log() -> "Callable[[str], None]":
    """A log to stderr whose lines start with the seconds since it was made."""
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"{time.monotonic() - started:7.1f}s {msg}", file=sys.stderr, flush=True)
    return log


def load_average() -> str:
    """The 1, 5 and 15 minute load averages and the CPU count, for the report."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> str:
    """Rows lined up under ``headers``; columns whose index is in ``right`` are right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: List[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def clean_env(extra: Mapping[str, str], drop_prefixes: Sequence[str] = ("AWS_",)) -> Dict[str, str]:
    """This process's environment without variables starting with ``drop_prefixes``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not any(k.startswith(p) for p in drop_prefixes)}
    env.update(extra)
    return env


def invocation(script: str, argv: Sequence[str]) -> str:
    """The command line that ran this benchmark, as one would type it again."""
    import shlex
    import sys

    rel = os.path.relpath(script) if not os.path.relpath(script).startswith("..") else script
    python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") else sys.executable
    return "$ " + shlex.join([python, rel, *argv])


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """``min / median / max`` of ``values``."""
    if not values:
        return "-"
    return " / ".join(fmt.format(v) for v in (min(values), median(values), max(values)))


# -- a capped link ------------------------------------------------------------------
# A TCP proxy on loopback in front of a server that caps the bytes per second in each
# direction (shared by every connection, like a node's network link), so that on loopback,
# where bytes move at memory speed, transfer time matters as it does on a real network.
# It runs in a child process of its own (asyncio, one thread), so it never shares a GIL with
# the benchmark, and its CPU time can be read from /proc.

CAPPED_LINK_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from common import serve_capped_link
serve_capped_link(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
"""

LINK_PIECE = 256 * 1024  # bytes read per call; each piece waits for its slot on the link
LINK_BURST = 0.02  # seconds of the rate a direction may spend at once after being idle


class _Pacer:
    """One direction of the link: ``take(n)`` returns once the link has room for n bytes."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.next = 0.0
        self.bytes = 0

    async def take(self, n: int) -> None:
        import asyncio

        now = asyncio.get_running_loop().time()
        start = max(self.next, now - LINK_BURST)
        self.next = start + n / self.rate
        self.bytes += n
        if self.next > now:
            await asyncio.sleep(self.next - now)


def serve_capped_link(upstream_host: str, upstream_port: int, rate: float) -> None:
    """Serve the proxy on a free loopback port (printed on stdout) until stdin closes."""
    import asyncio
    import sys as _sys

    down, up = _Pacer(rate), _Pacer(rate)  # server -> client, client -> server

    async def pump(reader: "asyncio.StreamReader", writer: "asyncio.StreamWriter", pacer: _Pacer) -> None:
        try:
            while True:
                piece = await reader.read(LINK_PIECE)
                if not piece:
                    break
                await pacer.take(len(piece))
                writer.write(piece)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def handle(client_r: "asyncio.StreamReader", client_w: "asyncio.StreamWriter") -> None:
        try:
            server_r, server_w = await asyncio.open_connection(upstream_host, upstream_port, limit=LINK_PIECE)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(pump(client_r, server_w, up), pump(server_r, client_w, down))
        except asyncio.CancelledError:  # the proxy stops with connections open
            pass

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=LINK_PIECE)
        print(server.sockets[0].getsockname()[1], flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _sys.stdin.read)  # the parent closes stdin: stop
        server.close()

    asyncio.run(main())


@contextlib.contextmanager
def capped_link(upstream_url: str, rate: float) -> "Iterator[Tuple[str, int]]":
    """A proxy in front of ``upstream_url`` (``http://127.0.0.1:PORT``) capped at ``rate``
    bytes per second each way; yields (its URL, its process id)."""
    from urllib.parse import urlsplit

    u = urlsplit(upstream_url)
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen([sys.executable, "-c", CAPPED_LINK_CHILD, here, u.hostname or "127.0.0.1",
                             str(u.port), str(rate)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError(f"the capped link did not start (status {proc.poll()})")
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        stop_by_stdin(proc, 10)


def stop_by_stdin(proc: "subprocess.Popen[str]", timeout: float) -> None:
    """End a helper child that serves until its stdin closes (killed after ``timeout`` s)."""
    if proc.stdin:
        proc.stdin.close()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (its own threads, not its children)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class DiskSampler:
    """The peak disk use (allocated blocks, as ``du`` counts them) under a directory, sampled
    every ``interval`` seconds on a thread while the ``with`` block runs."""

    def __init__(self, root: str, interval: float = 0.1) -> None:
        self.root = root
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def usage(self) -> int:
        total = 0
        stack = [self.root]
        while stack:
            top = stack.pop()
            try:
                with os.scandir(top) as it:
                    for entry in it:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        total += st.st_blocks * 512
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
            except OSError:
                continue  # removed meanwhile
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.usage())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> "DiskSampler":
        self._thread = threading.Thread(target=self._run, name="disk-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
