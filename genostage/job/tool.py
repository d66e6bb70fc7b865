"""Running the tool: argv or ``bash -c``, placeholders, logs, signals, resource usage.

The tool runs in its own process group so a SIGTERM reaches everything it
started; its output is streamed to the job's log with a prefix (and saved to a
file when asked); wall time, CPU time and peak RSS are measured with ``wait4``.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Dict, List, Mapping, Optional, Sequence

from ..errors import UsageError

log = logging.getLogger("genostage.tool")

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand(args: Sequence[str], values: Mapping[str, str], shell: bool) -> List[str]:
    """Replace ``{NAME}`` in each argument; shell-quote values for ``bash -c``.

    ``{{`` and ``}}`` stand for literal braces; an unknown ``{NAME}`` is an error.
    """
    def one(arg: str) -> str:
        def sub(m: "re.Match[str]") -> str:
            name = m.group(1)
            if name not in values:
                known = ", ".join(sorted(values)) or "none"
                raise UsageError(f"unknown placeholder {{{name}}} in the command (known: {known})")
            return shlex.quote(values[name]) if shell else values[name]
        text = arg.replace("{{", "\x00").replace("}}", "\x01")
        return _PLACEHOLDER.sub(sub, text).replace("\x00", "{").replace("\x01", "}")
    return [one(a) for a in args]


@dataclass
class ToolResult:
    command: List[str]
    returncode: int
    wall_seconds: float
    user_seconds: float
    system_seconds: float
    max_rss_kib: int

    def to_json(self) -> Dict[str, Any]:
        return dict(self.__dict__)


class _LogPump(threading.Thread):
    """Copies a stream to the log (line by line, prefixed) and optionally to a file."""

    def __init__(self, stream: IO[bytes], prefix: str, sink: Optional[IO[bytes]], to_log: bool) -> None:
        super().__init__(daemon=True, name=f"genostage-{prefix}")
        self.stream, self.prefix, self.sink, self.to_log = stream, prefix, sink, to_log

    def run(self) -> None:
        for line in iter(self.stream.readline, b""):
            if self.sink is not None:
                self.sink.write(line)
            if self.to_log:
                log.info("[%s] %s", self.prefix, line.rstrip(b"\r\n").decode("utf-8", "replace"))
        self.stream.close()


class Tool:
    """One tool process; ``terminate(grace)`` sends SIGTERM to its group, SIGKILL after ``grace``."""

    def __init__(self, command: Sequence[str], shell: bool = False, cwd: Optional[str] = None,
                 env: Optional[Mapping[str, str]] = None, stdout_path: Optional[str] = None,
                 stderr_path: Optional[str] = None, stdin_devnull: bool = True) -> None:
        if not command:
            raise UsageError("no command given to run (expected: genostage run [OPTIONS] -- COMMAND [ARG]...)")
        self.command = list(command)
        self.argv = ["bash", "-c", " ".join(self.command)] if shell else self.command
        self.cwd, self.env = cwd, env
        self.stdout_path, self.stderr_path = stdout_path, stderr_path
        self.stdin_devnull = stdin_devnull
        self.proc: Optional[subprocess.Popen] = None
        self._killer: Optional[threading.Timer] = None

    def run(self) -> ToolResult:
        out_file = open(self.stdout_path, "wb") if self.stdout_path else None
        err_file = open(self.stderr_path, "wb") if self.stderr_path else None
        start = time.monotonic()
        try:
            try:
                self.proc = subprocess.Popen(
                    self.argv, cwd=self.cwd, env=dict(self.env) if self.env is not None else None,
                    stdin=subprocess.DEVNULL if self.stdin_devnull else None,
                    stdout=out_file if out_file else subprocess.PIPE, stderr=subprocess.PIPE,
                    start_new_session=True)
            except FileNotFoundError:
                raise UsageError(f"command not found: {self.argv[0]}") from None
            except PermissionError:
                raise UsageError(f"command not executable: {self.argv[0]}") from None
            pumps = [_LogPump(self.proc.stderr, "stderr", err_file, True)]  # type: ignore[arg-type]
            if out_file is None:
                pumps.append(_LogPump(self.proc.stdout, "stdout", None, True))  # type: ignore[arg-type]
            for p in pumps:
                p.start()
            status, usage = self._wait()
            for p in pumps:
                p.join()
        finally:
            for f in (out_file, err_file):
                if f is not None:
                    f.close()
            if self._killer is not None:
                self._killer.cancel()
        return ToolResult(self.command, os.waitstatus_to_exitcode(status), round(time.monotonic() - start, 3),
                          round(usage.ru_utime, 3), round(usage.ru_stime, 3), int(usage.ru_maxrss))

    def _wait(self):  # type: ignore[no-untyped-def]
        assert self.proc is not None
        while True:
            try:
                _pid, status, usage = os.wait4(self.proc.pid, 0)
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
        return status, usage

    def terminate(self, grace: float) -> None:
        """SIGTERM the tool's process group now, SIGKILL it after ``grace`` seconds."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        _killpg(proc.pid, signal.SIGTERM)
        self._killer = threading.Timer(grace, _killpg, (proc.pid, signal.SIGKILL))
        self._killer.daemon = True
        self._killer.start()


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
