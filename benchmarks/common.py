"""Generic helpers shared by the benchmarks: timing a child process, throughput, tables.

Nothing here knows about genostage: ``run_timed`` runs any command and reports its
wall time and peak resident memory (``/usr/bin/time``'s %M: the command's own
process, not its children), ``mb_per_s`` and ``ratio`` do the arithmetic, and
``format_table`` lines up a list of rows for a terminal or a report.
"""
from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

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
