"""The ``genostage`` command: the only place (with the manifest) that turns exceptions into
exit codes, through :func:`genostage.exitcodes.exit_code`; the table is in that module and in
the README.
"""
from __future__ import annotations

import argparse
import atexit
import ctypes
import importlib
import logging
import os
import signal
import sys
import threading
from typing import List, Optional, Sequence

from .. import __version__
from .. import errors as E
from ..exitcodes import DATA, exit_code
from ..fsutil import os_error

# Subcommand modules, each with ``register(subparsers)``; a parser sets ``func``.
COMMANDS: List[str] = [
    "run",
    "scatter",
    "cp",
    "checksum",
    "plan",
    "gather",
    "image",
    "batch",
    "split",
    "cache",
]

# commands registered by another command's module
_HOSTS = {"chunk": "plan"}


def _modules_for(argv: Sequence[str]) -> List[str]:
    """Only the chosen command's module (fast start); every module for help or a bad command."""
    for arg in argv:
        if not arg.startswith("-"):
            module = _HOSTS.get(arg, arg)
            return [module] if module in COMMANDS else COMMANDS
    return COMMANDS


def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genostage",
        description="The job layer of batch genomics pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"genostage {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeat for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _modules_for(argv) if argv is not None else COMMANDS:
        importlib.import_module(f".{name}", __name__).register(sub)
    return parser


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("genostage: %(message)s"))
    root = logging.getLogger("genostage")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if verbose > 2:
        logging.getLogger("botocore").setLevel(logging.DEBUG)


def map_large_buffers() -> None:
    """Have glibc map every allocation of 1 MiB or more on its own and unmap it when freed.
    By default glibc raises that threshold after the first large free (up to 32 MiB) and then
    serves 16 MiB parts from per-thread heaps it keeps: a 2 GiB upload peaked at 400 MB of
    RSS where its 10 x 16 MiB parts in flight need 160 MiB (265-270 MB with this)."""
    try:
        ctypes.CDLL(None).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: its allocator decides
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    map_large_buffers()
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    previous = interrupt_on_sigterm()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("genostage: interrupted", file=sys.stderr)
        return 130
    except E.GenostageError as exc:
        print(f"genostage: {exc}", file=sys.stderr)
        return exit_code(exc)
    except BrokenPipeError:
        return DATA
    except OSError as exc:  # the library wraps what it meets; a backstop for what it missed
        err = os_error(exc, str(exc.filename) if exc.filename else "a file or socket")
        print(f"genostage: {err}", file=sys.stderr)
        return exit_code(err)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupted(signum: int, frame: object) -> None:
    raise E.Interrupted(signum)


def interrupt_on_sigterm() -> "Optional[signal._HANDLER]":
    """SIGTERM raises :class:`~genostage.errors.Interrupted` in the main thread, as SIGINT raises
    KeyboardInterrupt, so a command's cleanup runs (temporary files removed, uploads aborted)
    and it exits 143 instead of dying where it stands. ``run`` and ``cp`` stop more gently with
    handlers of their own. Returns the handler it replaced (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupted)


def run_main() -> None:  # pragma: no cover - console entry wrapper
    exit_now(main())


def exit_now(code: int) -> None:
    """End the process with ``code`` once the command is done, without tearing the interpreter
    down object by object (40-70 ms after a transfer of thousands of objects): exit handlers
    run and the standard streams are flushed first. While a non-daemon thread still runs,
    the usual exit waits for it."""
    main_thread = threading.main_thread()
    if any(t is not main_thread and t.is_alive() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()  # logging's flush among them
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it anyway
            pass
    os._exit(code)


__all__: List[str] = ["main", "exit_code", "exit_now", "build_parser", "COMMANDS"]
