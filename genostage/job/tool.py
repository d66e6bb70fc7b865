"""Running the tool: argv or a ``bash`` script, placeholders, logs, signals, resource usage.

**Placeholders.** ``{NAME}`` in the command stands for the local path of input or output
``NAME`` (``{NAME.1}``, ``{NAME.2}`` for the files of a paired chunk; ``{{`` and ``}}`` are
literal braces). In argv form each argument gets the path itself. In ``--shell`` form no
path is ever pasted into the script: each placeholder becomes a reference to an environment
variable holding the path (``{in}`` -> ``"${GS_in}"``), quoted for where it stands (inside
double quotes, inside single quotes, or bare), so a key holding ``$(...)``, backticks,
quotes or spaces is only ever a file name. ``${NAME}`` (with its ``$``) is left to bash.
The script runs with ``bash -o pipefail -c``: ``false | cat > {out}`` fails, as it should.

**Processes.** The tool runs in its own process group, so a SIGTERM reaches everything it
started. When the tool's main process exits, whatever it left running in its group (a
``sleep 3000 &``) gets SIGTERM after 2 s, and SIGKILL 5 s later if it is still there: the
job never waits on a leftover holding the tool's stderr.

**Output.** stdout and stderr are streamed, line by line with a prefix, to the
``genostage.tool`` log (or straight to this process's stderr and stdout when nothing
configured logging, so a Python caller sees them), saved to a file when asked, and the
last lines of stderr are kept for :class:`~genostage.errors.ToolFailed`. Wall time, CPU time
and peak RSS come from ``wait4``.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ..errors import UsageError

log = logging.getLogger("genostage.tool")

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[0-9]+)?)\}")
LEFTOVER_GRACE = 2.0  # seconds a process the tool left behind may keep running
KILL_AFTER = 5.0  # seconds between its SIGTERM and its SIGKILL
TAIL_LINES = 20  # lines of stderr kept for ToolFailed


def env_name(name: str) -> str:
    """The environment variable holding placeholder ``name``'s path in a ``--shell`` script."""
    return "GS_" + name.replace(".", "__")


def _lookup(name: str, values: Mapping[str, str]) -> str:
    if name not in values:
        known = ", ".join(sorted(values)) or "none"
        raise UsageError(f"unknown placeholder {{{name}}} in the command (known: {known})")
    return values[name]


def expand(args: Sequence[str], values: Mapping[str, str]) -> List[str]:
    """Argv form: each ``{NAME}`` replaced by its path (``{{``/``}}`` literal braces)."""
    def one(arg: str) -> str:
        text = arg.replace("{{", "\x00").replace("}}", "\x01")
        return _PLACEHOLDER.sub(lambda m: _lookup(m.group(1), values), text).replace("\x00", "{").replace("\x01", "}")
    return [one(a) for a in args]


def shell_script(text: str, values: Mapping[str, str]) -> Tuple[str, Dict[str, str]]:
    """``--shell`` form: the script with every placeholder turned into a quoted reference to
    an environment variable, and those variables (see the module docstring).

    A small scanner follows bash's quoting: single quotes, double quotes, backslash escapes,
    and ``$(...)`` (which starts afresh inside double quotes)."""
    out: List[str] = []
    env: Dict[str, str] = {}
    stack = ["bare"]  # bare, dq (double quotes), sq (single quotes), sub ($(...)), paren
    i, n = 0, len(text)
    while i < n:
        ctx, ch = stack[-1], text[i]
        if text.startswith("{{", i) or text.startswith("}}", i):
            out.append(ch)
            i += 2
            continue
        m = _PLACEHOLDER.match(text, i) if ch == "{" and not (i and text[i - 1] == "$") else None
        if m:
            name = m.group(1)
            var = env_name(name)
            env[var] = _lookup(name, values)
            out.append({"dq": f"${{{var}}}", "sq": f"'\"${{{var}}}\"'"}.get(ctx, f"\"${{{var}}}\""))
            i = m.end()
            continue
        if ctx == "sq":
            if ch == "'":
                stack.pop()
        elif ch == "\\" and i + 1 < n:
            out.append(text[i:i + 2])
            i += 2
            continue
        elif ch == "'" and ctx != "dq":
            stack.append("sq")
        elif ch == '"':
            if ctx == "dq":
                stack.pop()
            else:
                stack.append("dq")
        elif text.startswith("$(", i):
            stack.append("sub")
            out.append("$(")
            i += 2
            continue
        elif ch == "(" and ctx in ("sub", "paren"):
            stack.append("paren")
        elif ch == ")" and ctx in ("sub", "paren"):
            stack.pop()
        out.append(ch)
        i += 1
    return "".join(out), env


def display(command: Sequence[str], values: Mapping[str, str], shell: bool) -> str:
    """The command as a person would type it, paths filled in (for logs and the manifest)."""
    if shell:
        text = " ".join(command).replace("{{", "\x00").replace("}}", "\x01")
        return _PLACEHOLDER.sub(lambda m: shlex.quote(values.get(m.group(1), m.group(0))), text) \
            .replace("\x00", "{").replace("\x01", "}")
    return " ".join(shlex.quote(a) for a in expand(command, values))


@dataclass
class ToolResult:
    command: List[str]
    returncode: int
    wall_seconds: float
    user_seconds: float
    system_seconds: float
    max_rss_kib: int
    leftovers_ended: int = 0
    stderr_tail: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "stderr_tail"}
        if not self.leftovers_ended:
            out.pop("leftovers_ended")
        return out


def _logging_configured() -> bool:
    return logging.getLogger("genostage").hasHandlers()


class _LogPump(threading.Thread):
    """Copies a stream to the log (line by line, prefixed) or, when nothing configured
    logging, to ``echo``; optionally to a file; keeps the last lines in ``tail``."""

    def __init__(self, stream: IO[bytes], prefix: str, sink: Optional[IO[bytes]], to_log: bool,
                 echo: Optional[IO[str]]) -> None:
        super().__init__(daemon=True, name=f"genostage-{prefix}")
        self.stream, self.prefix, self.sink, self.to_log = stream, prefix, sink, to_log
        self.echo = None if _logging_configured() else echo
        self.tail: Deque[str] = collections.deque(maxlen=TAIL_LINES)

    def run(self) -> None:
        try:
            for line in iter(self.stream.readline, b""):
                if self.sink is not None:
                    self.sink.write(line)
                text = line.rstrip(b"\r\n").decode("utf-8", "replace")
                self.tail.append(text)
                if not self.to_log:
                    continue
                if self.echo is not None:
                    self.echo.write(text + "\n")
                    self.echo.flush()
                else:
                    log.info("[%s] %s", self.prefix, text)
        except (OSError, ValueError):  # the stream or the sink went away: the tool's result still counts
            pass
        finally:
            self.stream.close()


class Tool:
    """One tool process; ``terminate(grace)`` sends SIGTERM to its group, SIGKILL after ``grace``."""

    def __init__(self, command: Sequence[str], shell: bool = False, cwd: Optional[str] = None,
                 env: Optional[Mapping[str, str]] = None, stdout_path: Optional[str] = None,
                 stderr_path: Optional[str] = None, stdin_devnull: bool = True,
                 values: Optional[Mapping[str, str]] = None) -> None:
        if not command:
            raise UsageError("no command given to run (expected: genostage run [OPTIONS] -- COMMAND [ARG]...)")
        values = dict(values or {})
        self.command = display(command, values, shell)
        self.env = dict(os.environ if env is None else env)
        if shell:
            script, refs = shell_script(" ".join(command), values)
            self.argv = ["bash", "-o", "pipefail", "-c", script]
            self.env.update(refs)
        else:
            self.argv = expand(command, values)
        self.cwd = cwd
        self.stdout_path, self.stderr_path = stdout_path, stderr_path
        self.stdin_devnull = stdin_devnull
        self.proc: Optional[subprocess.Popen] = None
        self._killers: List[threading.Timer] = []
        self._lock = threading.Lock()
        self._terminate: Optional[float] = None  # a terminate() that came before the process started

    def run(self) -> ToolResult:
        out_file = open(self.stdout_path, "wb") if self.stdout_path else None
        err_file = open(self.stderr_path, "wb") if self.stderr_path else None
        start = time.monotonic()
        try:
            try:
                self.proc = subprocess.Popen(
                    self.argv, cwd=self.cwd, env=self.env,
                    stdin=subprocess.DEVNULL if self.stdin_devnull else None,
                    stdout=out_file if out_file else subprocess.PIPE, stderr=subprocess.PIPE,
                    start_new_session=True)
            except FileNotFoundError:
                raise UsageError(f"command not found: {self.argv[0]}") from None
            except PermissionError:
                raise UsageError(f"command not executable: {self.argv[0]}") from None
            with self._lock:
                pending = self._terminate
            if pending is not None:
                self.terminate(pending)
            pumps = [_LogPump(self.proc.stderr, "stderr", err_file, True, sys.stderr)]  # type: ignore[arg-type]
            if out_file is None:
                pumps.append(_LogPump(self.proc.stdout, "stdout", None, True, sys.stdout))  # type: ignore[arg-type]
            for p in pumps:
                p.start()
            status, usage = self._wait()
            ended = self._end_leftovers(pumps)
        finally:
            for f in (out_file, err_file):
                if f is not None:
                    f.close()
            for killer in self._killers:
                killer.cancel()
        return ToolResult([self.command], os.waitstatus_to_exitcode(status), round(time.monotonic() - start, 3),
                          round(usage.ru_utime, 3), round(usage.ru_stime, 3), int(usage.ru_maxrss), ended,
                          list(pumps[0].tail))

    def _wait(self):  # type: ignore[no-untyped-def]
        """Reap the tool, waking every WAKE seconds: a signal the kernel hands to another
        thread interrupts no system call of the main thread, and Python runs its handler only
        when the main thread runs again (a plain ``wait4`` then waited for the tool forever,
        the SIGTERM unseen: 1 run in ~10 of a chaos case)."""
        assert self.proc is not None
        pid = self.proc.pid
        with _exit_watch(pid) as ended:
            while True:
                got, status, usage = os.wait4(pid, os.WNOHANG)
                if got == pid:
                    break
                ended(WAKE)
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
        return status, usage

    def _end_leftovers(self, pumps: List[_LogPump]) -> int:
        """The main process is gone: end what it left running in its group (see the module
        docstring); returns how many processes were still there."""
        assert self.proc is not None
        pgid = self.proc.pid
        deadline = time.monotonic() + LEFTOVER_GRACE
        while _group_size(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = _group_size(pgid)
        if left:
            log.warning("the tool left %d process(es) running in its group; ending them (SIGTERM, then SIGKILL)", left)
            _killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + KILL_AFTER
            while _group_size(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _group_size(pgid):
                _killpg(pgid, signal.SIGKILL)
        for p in pumps:
            p.join(KILL_AFTER)
        return left

    def terminate(self, grace: float) -> None:
        """SIGTERM the tool's process group now, SIGKILL it after ``grace`` seconds (the group
        too, when the main process has exited and left others behind)."""
        proc = self.proc
        if proc is None:
            with self._lock:
                self._terminate = grace  # run() ends the process as soon as it has started
            return
        _killpg(proc.pid, signal.SIGTERM)
        killer = threading.Timer(grace, _killpg, (proc.pid, signal.SIGKILL))
        killer.daemon = True
        killer.start()
        with self._lock:
            self._killers.append(killer)


WAKE = 0.2  # seconds: how soon a signal's handler runs while the main thread waits for the tool


@contextlib.contextmanager
def _exit_watch(pid: int) -> "Iterator[Callable[[float], None]]":
    """A wait of at most N seconds for ``pid`` to exit: on its pidfd (woken at the exit), or
    a sleep where there is none."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # an old kernel, or not Linux
        yield time.sleep
        return

    def ended(timeout: float) -> None:
        select.select([fd], [], [], timeout)

    try:
        yield ended
    finally:
        os.close(fd)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_size(pgid: int) -> int:
    """Live (not zombie) processes of group ``pgid``, from /proc (without /proc: 1 while the
    group exists)."""
    if not _group_alive(pgid):
        return 0
    count = 0
    try:
        names = os.listdir("/proc")
    except OSError:
        return 1
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and int(fields[2]) == pgid and fields[0] != b"Z":
            count += 1
    return count
