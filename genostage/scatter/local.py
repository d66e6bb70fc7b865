"""The local executor, the embedded default: a scatter's children as processes on this machine.

Each child is a full ``genostage run --spec SPEC`` (its own scratch, verified staging, its own
manifest) with its index in ``AWS_BATCH_JOB_ARRAY_INDEX``, as AWS Batch would start it;
``AWS_BATCH_JOB_ID`` is ``<scatter id>:<index>`` so that a retried child resumes what it had
downloaded. At most ``jobs`` run at once. A child that fails in a way a retry may cure (exit
5, 6 or 10, or killed by a signal it did not get from us) is started again, up to
``attempts`` tries. When more children fail for good than ``allow_failed`` permits, the rest
are stopped (SIGTERM) and not started. SIGTERM or SIGINT to the scatter reaches every
running child as SIGTERM; each cleans up as a job does, and the scatter exits 128+N.
Children's logs go to files (``<log dir>/child-NNNNN.log``); a line per finished child,
and a failed child's last lines, go to the scatter's own log.
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional, Tuple

from ..cancel import Cancel
from ..exitcodes import RETRYABLE
from ..progress import Progress
from .spec import ScatterSpec

log = logging.getLogger("genostage.scatter")

STOP_WAIT = 60.0  # seconds children get to clean up after SIGTERM before SIGKILL


@dataclass
class Outcome:
    """How one child ended in this run."""

    index: int
    status: str  # succeeded, failed, stopped
    exit_status: int
    attempts: int
    seconds: float
    log: str

    def tail(self, n: int = 5) -> List[str]:
        try:
            with open(self.log, errors="replace") as fh:
                return [line.rstrip("\n") for line in collections.deque(fh, maxlen=n)]
        except OSError:
            return []


class _Running:
    def __init__(self, index: int, attempt: int, proc: "subprocess.Popen[bytes]", log_path: str) -> None:
        self.index, self.attempt, self.proc, self.log = index, attempt, proc, log_path
        self.started = time.monotonic()
        self.stopped = False  # we sent it SIGTERM


def _exit_status(code: int) -> int:
    return 128 - code if code < 0 else code


class LocalExecutor:
    """Runs the children of ``spec`` (see the module docstring)."""

    def __init__(self, spec: ScatterSpec, jobs: int, log_dir: str, cancel: Cancel,
                 env: Optional[Dict[str, str]] = None, show_progress: bool = True) -> None:
        self.spec = spec
        self.jobs = max(1, jobs)
        self.log_dir = log_dir
        self.cancel = cancel
        self.env = dict(os.environ if env is None else env)
        self.show_progress = show_progress
        os.makedirs(log_dir, exist_ok=True)

    def _start(self, index: int, attempt: int) -> _Running:
        env = dict(self.env)
        env.update(AWS_BATCH_JOB_ARRAY_INDEX=str(index), AWS_BATCH_JOB_ATTEMPT=str(attempt),
                   AWS_BATCH_JOB_ID=f"{self.spec.id}:{index}")
        path = os.path.join(self.log_dir, f"child-{index:05d}.log")
        with open(path, "ab") as fh:
            fh.write(f"--- attempt {attempt}\n".encode())
            proc = subprocess.Popen([sys.executable, "-m", "genostage", "run", "--spec", self.spec.uri, "--no-progress"],
                                    stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, env=env, start_new_session=True)
        return _Running(index, attempt, proc, path)

    def run(self, indices: List[int]) -> Dict[int, Outcome]:
        """Run these children to their end (or until too many fail, or a stop)."""
        todo: Deque[Tuple[int, int]] = collections.deque((i, 1) for i in indices)
        running: List[_Running] = []
        outcomes: Dict[int, Outcome] = {}
        failed = 0
        progress = Progress(len(indices), f"scatter {self.spec.id}", unit="children", enabled=self.show_progress)
        try:
            while todo or running:
                if self.cancel.is_set():
                    self._stop(running, "the scatter was stopped")
                while todo and len(running) < self.jobs and not self.cancel.is_set():
                    index, attempt = todo.popleft()
                    running.append(self._start(index, attempt))
                time.sleep(0.05)
                for child in [c for c in running if c.proc.poll() is not None]:
                    running.remove(child)
                    outcome = self._ended(child, todo)
                    if outcome is None:
                        continue
                    outcomes[child.index] = outcome
                    progress.update(1)
                    if outcome.status == "failed":
                        failed += 1
                        if failed > self.spec.allow_failed and not self.cancel.is_set():
                            log.error("%d child(ren) failed (at most %d may): stopping the others", failed,
                                      self.spec.allow_failed)
                            todo.clear()
                            self._stop(running, "too many children failed")
                if self.cancel.is_set():
                    todo.clear()
        finally:
            if running:  # an error of our own: leave no child behind
                self._stop(running, "the scatter ended")
                for child in running:
                    child.proc.wait()
            progress.close()
        return outcomes

    def _ended(self, child: _Running, todo: Deque[Tuple[int, int]]) -> Optional[Outcome]:
        code = child.proc.returncode
        status = _exit_status(code)
        seconds = round(time.monotonic() - child.started, 3)
        if code == 0:
            log.info("child %d succeeded in %.1f s (attempt %d)", child.index, seconds, child.attempt)
            return Outcome(child.index, "succeeded", 0, child.attempt, seconds, child.log)
        outcome = Outcome(child.index, "stopped" if child.stopped else "failed", status, child.attempt, seconds,
                          child.log)
        if child.stopped:
            return outcome
        retry = (status in RETRYABLE or code < 0) and child.attempt < self.spec.attempts and not self.cancel.is_set()
        last = next((line for line in reversed(outcome.tail()) if line.strip()), "")
        log.warning("child %d failed with exit status %d after %.1f s (attempt %d of %d)%s: %s", child.index, status,
                    seconds, child.attempt, self.spec.attempts, "; trying again" if retry else "", last)
        if retry:
            todo.append((child.index, child.attempt + 1))
            return None
        return outcome

    def _stop(self, running: List[_Running], why: str) -> None:
        """SIGTERM every running child (each cleans up as a job does); SIGKILL what is left later."""
        for child in running:
            if not child.stopped:
                child.stopped = True
                try:
                    os.killpg(child.proc.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.monotonic() + STOP_WAIT
        for child in running:
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("child %d did not stop in %.0f s (%s): killing it", child.index, STOP_WAIT, why)
                try:
                    os.killpg(child.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
