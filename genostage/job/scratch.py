"""The per-job scratch directory: private, checked for space, always cleaned up.

``<root>/genostage-<AWS_BATCH_JOB_ID or host-pid>-<uuid>`` is created with
mode 0700 and never shared (a failed mkdir is an error, not a fallback). While
the job lives it holds an exclusive ``flock`` on ``<dir>/.lock``; the next job on
the same root sweeps directories whose lock nobody holds (jobs that were
SIGKILLed), so a live job's directory is never touched. A swept directory of
the *same* AWS Batch job (a retry) hands its partial downloads over first.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List, Literal, Optional

from ..errors import ScratchUnusable, UsageError
from ..transfer.journal import leftover_uploads

log = logging.getLogger("genostage.scratch")

PREFIX = "genostage-"
KEEP_POLICIES = ("never", "on-failure", "always")
Keep = Literal["never", "on-failure", "always"]
PARTIAL = ".partial"
_YOUNG = 120.0  # seconds: a directory without a lock file this young may be a job starting up
_SCRATCH_NAME = re.compile(r"^genostage-.+-[0-9a-f]{12}$")  # what Scratch.create names a job's directory


def default_root() -> str:
    """``$GENOSTAGE_SCRATCH``, else ``/scratch`` if writable, else the system temp directory."""
    env = os.environ.get("GENOSTAGE_SCRATCH")
    if env:
        return env
    if os.path.isdir("/scratch") and os.access("/scratch", os.W_OK | os.X_OK):
        return "/scratch"
    return tempfile.gettempdir()


def job_token() -> str:
    """``AWS_BATCH_JOB_ID`` (array children keep their ``:N`` suffix) or ``host-pid``."""
    job = os.environ.get("AWS_BATCH_JOB_ID")
    if job:
        return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in job)
    host = socket.gethostname().split(".")[0] or "host"
    return f"{host}-{os.getpid()}"


def _remove_tree(path: str) -> None:
    """rmtree that also removes read-only files and directories a tool left behind."""
    def onerror(func, p, _exc):  # type: ignore[no-untyped-def]
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
            func(p)
        except FileNotFoundError:
            pass
        except OSError:
            pass
    shutil.rmtree(path, onerror=onerror)


class Scratch:
    """One job's directory. Use as a context manager or call ``create``/``close``."""

    def __init__(self, root: Optional[str] = None, keep: str = "never") -> None:
        if keep not in KEEP_POLICIES:
            raise UsageError(f"--keep-scratch must be one of {', '.join(KEEP_POLICIES)}, got {keep!r}")
        self.root = os.path.abspath(root or default_root())
        self.keep = keep
        self.token = job_token()
        self.path: Optional[Path] = None
        self._lock_fd = -1
        self.swept_uploads: List[Dict[str, str]] = []  # open uploads of the dead jobs swept here

    # -- lifecycle -----------------------------------------------------------
    def create(self) -> Path:
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise ScratchUnusable(f"cannot create scratch root {self.root}: {exc.strerror}") from None
        unique = uuid.uuid4().hex[:12]
        path = os.path.join(self.root, f"{PREFIX}{self.token}-{unique}")
        # Made under a name sweepers ignore, locked, then renamed: no other job can ever see
        # the directory without its lock held.
        making = os.path.join(self.root, f".making-{PREFIX}{unique}")
        try:
            os.mkdir(making, 0o700)  # exclusive: fails if it exists; never falls back to a shared dir
            self._lock_fd = os.open(os.path.join(making, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            os.write(self._lock_fd, f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n".encode())
            os.rename(making, path)
        except OSError as exc:
            raise ScratchUnusable(f"cannot create the job's scratch directory {path}: {exc.strerror}") from None
        self.path = Path(path)
        try:
            for sub in ("in", "out", "tmp", PARTIAL):
                os.mkdir(os.path.join(path, sub), 0o700)
        except OSError as exc:
            raise ScratchUnusable(f"cannot write in the job's scratch directory {path}: {exc.strerror}") from None
        self.sweep()
        log.debug("scratch directory %s", path)
        return self.path

    def close(self, failed: bool) -> bool:
        """Remove the directory unless the keep policy says otherwise; True when removed."""
        if self.path is None:
            return False
        keep = self.keep == "always" or (self.keep == "on-failure" and failed)
        path = str(self.path)
        if keep:
            log.info("keeping scratch directory %s", path)
        else:
            _remove_tree(path)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock: a kept directory may be swept later
            self._lock_fd = -1
        self.path = None
        return not keep

    # -- sweeping ------------------------------------------------------------
    def sweep(self) -> List[str]:
        """Remove directories of dead jobs on this root; adopt a dead retry's partial downloads."""
        removed: List[str] = []
        try:
            names = os.listdir(self.root)
        except OSError:
            return removed
        for name in names:
            full = os.path.join(self.root, name)
            if name.startswith(f".making-{PREFIX}") and self._is_dead(full) and self._old(full):
                _remove_tree(full)  # a job killed between mkdir and rename
                continue
            if not _SCRATCH_NAME.match(name) or (self.path and full == str(self.path)) or not os.path.isdir(full):
                continue  # only what a job made: a cache or a user's folder named genostage-... is left alone
            if not os.path.exists(os.path.join(full, ".lock")):
                continue
            if os.path.islink(full) or not self._is_dead(full):
                continue
            if self.path is not None and name.startswith(f"{PREFIX}{self.token}-") and "AWS_BATCH_JOB_ID" in os.environ:
                self._adopt_partials(full)
            self.swept_uploads.extend(leftover_uploads(os.path.join(full, PARTIAL)))
            log.info("sweeping scratch directory of a dead job: %s", full)
            _remove_tree(full)
            removed.append(full)
        return removed

    @staticmethod
    def _old(path: str) -> bool:
        try:
            return time.time() - os.stat(path).st_mtime > _YOUNG
        except OSError:
            return False

    def _is_dead(self, path: str) -> bool:
        lock = os.path.join(path, ".lock")
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            try:
                return time.time() - os.stat(path).st_mtime > _YOUNG
            except OSError:
                return False
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        finally:
            os.close(fd)  # closing drops the lock we may have taken
        return True

    def _adopt_partials(self, dead: str) -> None:
        assert self.path is not None
        src = os.path.join(dead, PARTIAL)
        if not os.path.isdir(src):
            return
        for name in os.listdir(src):
            try:
                os.replace(os.path.join(src, name), os.path.join(self.path, PARTIAL, name))
            except OSError:
                continue
        log.info("adopted partial downloads of an earlier attempt of this job from %s", dead)

    # -- convenience ---------------------------------------------------------
    @property
    def partial_dir(self) -> str:
        assert self.path is not None
        return str(self.path / PARTIAL)

    def __enter__(self) -> "Scratch":
        self.create()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        self.close(failed=exc_type is not None)
