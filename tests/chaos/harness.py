"""The chaos suite's harness: the CLI as a child process, the outcome checks, a small file system.

Every case ends with exactly one acceptable outcome, checked here:

* :func:`same_bytes` / :meth:`Lab.assert_object`: the right bytes at the destination;
* :func:`one_line_error`: the documented exit code, one line on stderr (``genostage -q``), no
  traceback;
* :func:`leftovers`, :meth:`Lab.uploads`, :meth:`Lab.keys`: nothing half-written (no temporary
  files, no partial objects, no open multipart uploads), nothing orphaned (no scratch directory).
"""
from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from genostage.fsutil import is_temp_name

from .proxy import FaultProxy

MiB = 1 << 20
SINGLE = 3 * MiB  # one PUT, one GET (below --part-size 5MiB)
MULTI = 12 * MiB + 12345  # three parts of 5 MiB, the last one short
PART = ["--part-size", "5MiB"]
TRACEBACK = "Traceback (most recent call last)"


def seeded_bytes(n: int, seed: int) -> bytes:
    """``n`` reproducible bytes (incompressible)."""
    import random

    return random.Random(seed).randbytes(n)


# -- the CLI in a child process ------------------------------------------------------
def child_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ, GENOSTAGE_PROGRESS_INTERVAL="0.2", PYTHONUNBUFFERED="1")
    env.pop("AWS_BATCH_JOB_ID", None)
    env.update(extra or {})
    return env


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> List[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def cli(args: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 90.0,
        stdin: Optional[bytes] = None, cwd: Optional[str] = None) -> Result:
    """Run ``genostage ARGS`` to its end; a child still running after ``timeout`` is killed
    and reported with code -9 (a hang)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "genostage", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(env), cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        _killpg(proc.pid)
        out, err = proc.communicate()
        code = -9
    return Result(code, out.decode(errors="replace"), err.decode(errors="replace"), time.monotonic() - t0)


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class Child:
    """``genostage ARGS`` running in its own session; its stderr is read line by line as it comes."""

    def __init__(self, args: Sequence[str], env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None) -> None:
        self.args = list(args)
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "genostage", *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(env), cwd=cwd,
                                     start_new_session=True)
        self.lines: List[str] = []
        self._new: "queue.Queue[Optional[str]]" = queue.Queue()
        self._out: List[bytes] = []
        self._readers = [threading.Thread(target=self._read_err, daemon=True),
                         threading.Thread(target=self._read_out, daemon=True)]
        for t in self._readers:
            t.start()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            self._new.put(line)
        self._new.put(None)

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._out.append(raw)

    def wait_line(self, pattern: str, timeout: float = 30.0) -> str:
        """The first stderr line (from now on, or already read) matching ``pattern``."""
        rx = re.compile(pattern)
        for line in list(self.lines):
            if rx.search(line):
                return line
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no stderr line matching {pattern!r} within {timeout} s:\n{self.stderr}")
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the child ended (status {self.proc.wait()}) before a line matching "
                                     f"{pattern!r}:\n{self.stderr}")
            if rx.search(line):
                return line

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None and not predicate():
                raise AssertionError(f"the child ended (status {self.proc.returncode}) before {what}:\n{self.stderr}")
            time.sleep(0.02)
        raise AssertionError(f"not within {timeout} s: {what}\n{self.stderr}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the whole session (the CLI and its tool), as AWS Batch does after the grace time."""
        _killpg(self.proc.pid)
        self.proc.wait()

    def finish(self, timeout: float = 30.0) -> Result:
        """Wait for the end; a child still running after ``timeout`` is killed (code -9: a hang)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = -9
        self._close_pipes()
        return Result(code, b"".join(self._out).decode(errors="replace"), self.stderr, time.monotonic() - self.t0)

    def _close_pipes(self) -> None:
        for t in self._readers:
            t.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._close_pipes()


# -- outcomes ------------------------------------------------------------------------
def no_traceback(r: Result) -> None:
    assert TRACEBACK not in r.stderr, f"traceback on stderr:\n{r.stderr}"
    assert r.code != -9, f"hung (killed after its time limit):\n{r.stderr}"


def one_line_error(r: Result, code: int, match: Optional[str] = None) -> str:
    """Exit ``code`` and one line on stderr (the command ran with ``-q``), no traceback."""
    no_traceback(r)
    assert r.code == code, f"exit {r.code}, expected {code}:\n{r.stderr}"
    lines = r.lines
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{r.stderr}"
    assert lines[0].startswith("genostage: "), r.stderr
    if match is not None:
        assert re.search(match, lines[0]), f"{lines[0]!r} does not match {match!r}"
    return lines[0]


def last_line_error(r: Result, code: int, match: Optional[str] = None) -> str:
    """Exit ``code``; no traceback; the last line is genostage's error (log lines may come before)."""
    no_traceback(r)
    assert r.code == code, f"exit {r.code}, expected {code}:\n{r.stderr}"
    last = r.lines[-1] if r.lines else ""
    assert last.startswith("genostage: "), r.stderr
    if match is not None:
        assert re.search(match, last), f"{last!r} does not match {match!r}"
    return last


def ok(r: Result) -> None:
    no_traceback(r)
    assert r.code == 0, f"exit {r.code}:\n{r.stderr}"


def same_bytes(path: "str | os.PathLike[str]", data: bytes) -> None:
    got = Path(path).read_bytes()
    assert len(got) == len(data) and got == data, f"{path}: {len(got)} bytes, not the {len(data)} expected"


def leftovers(*roots: "str | os.PathLike[str]") -> List[str]:
    """Temporary files, partial downloads and scratch directories under ``roots``."""
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                if is_temp_name(name) or name.startswith("genostage-") or name in (".partial",) \
                        or name.endswith((".tmp", ".journal", ".part")):
                    found.append(os.path.join(dirpath, name))
    return sorted(found)


def files(root: "str | os.PathLike[str]") -> List[str]:
    """Every file under ``root`` (relative names), hidden ones included."""
    out = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


# -- S3 behind the proxy -------------------------------------------------------------
@dataclass
class Lab:
    """One S3 server (``kind``) behind a fresh :class:`FaultProxy`, and a fresh bucket.

    ``client`` talks to the server directly (to set up and to check); children get ``env``,
    which points them at the proxy."""

    kind: str
    server: Any
    client: Any
    proxy: FaultProxy
    bucket: str
    tmp: Path
    extra_env: Dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> Dict[str, str]:
        env = dict(self.server.env())
        env["AWS_ENDPOINT_URL"] = self.proxy.url
        env["S3_ENDPOINT_URL"] = self.proxy.url
        env.update(self.extra_env)
        return env

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def put(self, key: str, data: bytes, multipart: bool = False) -> None:
        if not multipart:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
            return
        up = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        parts = []
        for i, off in enumerate(range(0, len(data), 5 * MiB)):
            r = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=up["UploadId"], PartNumber=i + 1,
                                        Body=data[off:off + 5 * MiB])
            parts.append({"PartNumber": i + 1, "ETag": r["ETag"]})
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=up["UploadId"],
                                              MultipartUpload={"Parts": parts})

    def upload(self, key: str, data: bytes) -> None:
        """Put ``data`` at ``key`` with genostage itself, straight to the server (so the object
        carries genostage's checksums: a full-object CRC64NVME where the server keeps one)."""
        src = self.tmp / f"seed-{uuid.uuid4().hex[:8]}"
        src.write_bytes(data)
        env = dict(self.env, AWS_ENDPOINT_URL=self.server.endpoint_url)
        r = cli(["-q", "cp", *PART, str(src), self.uri(key)], env)
        assert r.code == 0, r.stderr
        src.unlink()

    def get(self, key: str) -> Optional[bytes]:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self.client.exceptions.NoSuchKey:
            return None

    def keys(self, prefix: str = "") -> List[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))

    def uploads(self) -> List[str]:
        """Keys with an open multipart upload (rclone answers NoSuchUpload when there never was one)."""
        try:
            found = self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads") or []
        except self.client.exceptions.NoSuchUpload:
            return []
        return sorted(u["Key"] for u in found)

    def assert_object(self, key: str, data: bytes) -> None:
        got = self.get(key)
        assert got is not None, f"{key}: not in the bucket"
        assert got == data, f"{key}: {len(got)} bytes in the bucket, not the {len(data)} uploaded"

    def assert_clean(self) -> None:
        """No open multipart upload in the bucket."""
        assert self.uploads() == [], f"open multipart uploads: {self.uploads()}"


def new_bucket(client: Any) -> str:
    name = f"chaos-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


# -- a small file system ---------------------------------------------------------------
@contextlib.contextmanager
def small_fs(where: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``where`` (tests run as root); raises ``PermissionError``
    when mounting is not permitted here."""
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise PermissionError(f"cannot mount a tmpfs on {where}: {r.stderr.strip() or r.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(path: Path, leave: int = 0) -> None:
    """Fill the file system of ``path`` (a directory) until at most ``leave`` bytes are free."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with open(path / "filler", "wb") as fh:
        chunk = b"\0" * MiB
        left = free - leave
        while left > 0:
            try:
                left -= fh.write(chunk[:min(len(chunk), left)])
            except OSError:
                break


__all__ = ["Child", "Lab", "MULTI", "MiB", "PART", "Result", "SINGLE", "cli", "files", "fill", "last_line_error",
           "leftovers", "new_bucket", "no_traceback", "ok", "one_line_error", "same_bytes", "seeded_bytes",
           "small_fs"]
