"""One cancellation token, carrying why it was set (the signal's number).

Everything that can be stopped part way (a transfer, a split, a tool run, a wait on a lock)
takes a :class:`Cancel`: a ``threading.Event`` that also knows the signal that set it, so
whoever notices it raises :class:`~genostage.errors.Interrupted` with the right number and
the command exits 128+N.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Callable, Iterator, Optional

from .errors import Interrupted

SIGTERM = int(signal.SIGTERM)


class Cancel(threading.Event):
    """Set by :meth:`stop`; :meth:`check` raises :class:`Interrupted` once it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.signum = SIGTERM
        self.reason: Optional[BaseException] = None

    def stop(self, signum: int = SIGTERM, reason: Optional[BaseException] = None) -> bool:
        """Ask everything watching this token to stop; False when it was already stopped."""
        if self.is_set():
            return False
        self.signum = signum
        self.reason = reason
        self.set()
        return True

    def error(self) -> BaseException:
        """What a stopped operation raises: the reason given to :meth:`stop`, else Interrupted."""
        return self.reason if self.reason is not None else Interrupted(self.signum)

    def check(self) -> None:
        if self.is_set():
            raise self.error()


class Linked(Cancel):
    """A token of its own that is also set when ``parent`` is: one batch of work stops on its
    own first error without stopping the caller's other work, and stops when the caller does."""

    def __init__(self, parent: Optional[threading.Event]) -> None:
        super().__init__()
        self.parent = parent

    def is_set(self) -> bool:
        return super().is_set() or (self.parent is not None and self.parent.is_set())

    def error(self) -> BaseException:
        if self.parent is not None and self.parent.is_set():
            return error_of(self.parent)
        return super().error()


def error_of(cancel: Optional[threading.Event]) -> BaseException:
    """The error a stop of ``cancel`` stands for (any Event: one without a ``signum`` counts
    as SIGTERM)."""
    if isinstance(cancel, Cancel):
        return cancel.error()
    return Interrupted(int(getattr(cancel, "signum", SIGTERM)))


def check(cancel: Optional[threading.Event]) -> None:
    """Raise what ``cancel`` stands for when it is set (None never stops)."""
    if cancel is not None and cancel.is_set():
        raise error_of(cancel)


@contextlib.contextmanager
def stop_on_signals(cancel: Optional[Cancel] = None,
                    also: Optional[Callable[[int], None]] = None) -> Iterator[Cancel]:
    """A token that SIGTERM and SIGINT stop (with the signal's number), for work that checks
    it: parts in flight are cancelled, uploads aborted, temporary files removed, and the
    command exits 128+N. ``also(signum)`` runs on the first signal too (e.g. to stop a tool).
    Outside the main thread no handler can be set; the token then only stops when told."""
    token = cancel or Cancel()
    if threading.current_thread() is not threading.main_thread():
        yield token
        return

    def on_signal(signum: int, frame: Any) -> None:
        if token.stop(signum) and also is not None:
            also(signum)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield token
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


__all__ = ["Cancel", "Linked", "check", "error_of", "stop_on_signals"]
