"""Progress for long transfers and splits.

On a terminal: one line on stderr, redrawn in place at most ten times a second and fitted to
the terminal's width as it is at that redraw (a resized window is followed without a SIGWINCH
handler: the width is read again each time), so it never wraps. Without a terminal (AWS Batch,
CloudWatch): one log line every :func:`log_interval` seconds (default 10,
``GENOSTAGE_PROGRESS_INTERVAL``) with bytes, files, rate and ETA, so the log shows the job is
alive. Thread-safe; :meth:`Progress.update` is cheap enough for every 1 MiB piece.

What the line says::

    [#########---------------] cp run1: 1.2 GiB / 4.0 GiB (30%), 12/2000 files, 85.3 MiB/s, ETA 34 s

- the rate and the ETA come from the last :data:`WINDOW` seconds, not the mean since the start,
  so a stall shows at once and a speed-up is believed;
- ``12/2000 files`` when the progress counts files (``files=`` or ``grow(..., files=1)``, and
  :meth:`Progress.file_done`); ``12/2000+ files`` while the total is still being listed;
- where the work goes on with no bytes left to move (completing a multipart upload, a last
  verification), the engine says so with :meth:`Progress.phase` and the line shows that text
  instead of an ETA; with every byte done and no phase, it says ``finishing``.

Narrower terminals drop the rate, then the byte amounts, then shorten the label, then the bar.
"""
from __future__ import annotations

import collections
import logging
import os
import shutil
import sys
import threading
import time
import unicodedata
from typing import Callable, Deque, Dict, List, Optional, TextIO, Tuple

from .units import format_size

log = logging.getLogger("genostage.progress")

WINDOW = 10.0  # seconds of history behind the rate and the ETA
_SAMPLE = 0.25  # seconds between two rate samples
_BAR_MAX, _BAR_MIN = 24, 8


def log_interval() -> float:
    """Seconds between two progress log lines without a terminal (``GENOSTAGE_PROGRESS_INTERVAL``,
    default 10, at least 0.1); also how often waiting loops should say they are still waiting."""
    try:
        return max(0.1, float(os.environ.get("GENOSTAGE_PROGRESS_INTERVAL", "10")))
    except ValueError:
        return 10.0


def terminal_width(stream: Optional[TextIO] = None) -> int:
    """Columns available to ``stream`` now: ``$COLUMNS`` when set (as :func:`shutil.get_terminal_size`
    does), else the size of the terminal ``stream`` writes to, else :func:`shutil.get_terminal_size`
    (which asks stdout's terminal, 80 when there is none)."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
        if columns > 0:
            return columns
    except ValueError:
        pass
    try:
        columns = os.get_terminal_size((stream or sys.stderr).fileno()).columns
        if columns > 0:
            return columns
    except (AttributeError, OSError, ValueError):  # no fd (a StringIO), or not a terminal
        pass
    return shutil.get_terminal_size().columns


def cells(text: str) -> int:
    """Terminal columns ``text`` takes: wide (East Asian) characters two, combining ones none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def clip(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns, ending in ``...`` when it was cut."""
    if cells(text) <= width:
        return text
    if width <= 3:
        return "." * max(0, width)
    out: List[str] = []
    used = 0
    for c in text:
        w = cells(c)
        if used + w > width - 3:
            break
        out.append(c)
        used += w
    return "".join(out) + "..."


def duration(seconds: float) -> str:
    """``7 s``, ``3 min 05 s``, ``2 h 10 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _printable(text: str) -> str:
    """A label as it may be drawn: control characters (a key holding ``\\r``) become ``?``."""
    return "".join("?" if unicodedata.category(c) == "Cc" else c for c in text)


class Phase:
    """What the work is doing while no bytes move; from :meth:`Progress.phase` until :meth:`end`
    (or the end of a ``with`` block)."""

    def __init__(self, progress: "Progress", text: str) -> None:
        self._progress = progress
        self.text = text
        self._ended = False

    def end(self) -> None:
        """The phase is over (idempotent)."""
        if not self._ended:
            self._ended = True
            self._progress._end_phase(self)

    def __enter__(self) -> "Phase":
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()


class Progress:
    """Counts bytes (or records) done out of ``total``; ``unit`` is ``"B"`` or a noun.

    ``files``: how many files (objects) the work holds, when it is several; with
    :meth:`file_done` the line shows ``done/total files``. ``clock`` (default
    ``time.monotonic``) is for tests.
    """

    def __init__(self, total: Optional[int], label: str, unit: str = "B",
                 stream: Optional[TextIO] = None, enabled: bool = True, files: Optional[int] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.done = 0
        self.files_total = files
        self.files_done = 0
        self._stream = stream or sys.stderr
        self._tty = enabled and hasattr(self._stream, "isatty") and self._stream.isatty() \
            and os.environ.get("TERM") != "dumb"
        self._enabled = enabled
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._last = self._start
        self._every = 0.1 if self._tty else log_interval()
        self._closed = False
        self._growing = False  # the total is still being found (a listing read page by page)
        self._samples: Deque[Tuple[float, int]] = collections.deque([(self._start, 0)])
        self._phases: List[Phase] = []  # active, oldest first

    # -- what the work tells -------------------------------------------------------
    def grow(self, n: int, files: int = 0) -> None:
        """Add ``n`` (and ``files`` files) to the total: work found while work is done (a listing
        read page by page); until :meth:`settle`, lines say the total is so far, with no
        percentage or ETA."""
        with self._lock:
            self.total = (self.total or 0) + n
            if files:
                self.files_total = (self.files_total or 0) + files
            self._growing = True

    def settle(self) -> None:
        """The total is final."""
        with self._lock:
            self._growing = False

    def update(self, n: int) -> None:
        """``n`` more bytes (or records) done; negative to take back bytes a failed attempt counted."""
        with self._lock:
            self.done += n
            now = self._clock()
            self._sample(now)
            if self._enabled and now - self._last >= self._every:
                self._show(now, final=False)

    def file_done(self, n: int = 1) -> None:
        """``n`` more files complete (copied, verified and in place)."""
        with self._lock:
            self.files_done += n
            now = self._clock()
            if self._enabled and now - self._last >= self._every:
                self._show(now, final=False)

    def phase(self, text: str) -> Phase:
        """Say what the work is doing while no bytes move (``"completing upload"``): shown instead
        of the ETA until the returned :class:`Phase` ends (``.end()``, or use it in ``with``).
        Phases may overlap (several uploads completing); the latest one still active is shown.
        On a terminal the line is redrawn at once."""
        handle = Phase(self, text)
        with self._lock:
            self._phases.append(handle)
            now = self._clock()
            if self._enabled and (self._tty or now - self._last >= self._every):
                self._show(now, final=False)
        return handle

    def _end_phase(self, handle: Phase) -> None:
        with self._lock:
            if handle in self._phases:
                self._phases.remove(handle)

    def refresh(self) -> None:
        """Draw the line (or log it) now, whatever the interval."""
        with self._lock:
            if self._enabled and not self._closed:
                self._show(self._clock(), final=False)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            now = self._clock()
            if self._enabled and (self._tty or now - self._start >= self._every):
                self._show(now, final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rate --------------------------------------------------------------------
    def _sample(self, now: float) -> None:
        if now - self._samples[-1][0] >= _SAMPLE:
            self._samples.append((now, self.done))
        while len(self._samples) > 2 and self._samples[1][0] <= now - WINDOW:
            self._samples.popleft()

    def rate(self, now: Optional[float] = None) -> float:
        """Units a second over the last :data:`WINDOW` seconds (since the start when shorter)."""
        now = self._clock() if now is None else now
        t0, d0 = self._samples[0]
        if now - t0 <= 1e-6:
            return 0.0
        return max(0.0, (self.done - d0) / (now - t0))

    # -- the line ----------------------------------------------------------------
    def _amount(self, n: float) -> str:
        return format_size(n) if self.unit == "B" else f"{int(n):,} {self.unit}"

    def _rate_text(self, rate: float) -> str:
        return f"{format_size(rate)}/s" if self.unit == "B" else f"{rate:,.0f} {self.unit}/s"

    def _fields(self, now: float, final: bool) -> Dict[str, str]:
        """The pieces of the line: amounts, pct, files, rate, tail (ETA, phase or time taken)."""
        out: Dict[str, str] = {}
        elapsed = max(now - self._start, 1e-9)
        finished = bool(self.total) and self.done >= (self.total or 0) and not self._growing
        if final and (finished or not self.total):
            out["rate"] = self._rate_text(self.done / elapsed)
        else:
            out["rate"] = self._rate_text(self.rate(now))
        if self.total and self._growing:
            out["amounts"] = f"{self._amount(self.done)} of {self._amount(self.total)} listed so far"
        elif self.total:
            out["amounts"] = f"{self._amount(self.done)} / {self._amount(self.total)}"
            out["done"] = self._amount(self.done)
            out["pct"] = f"{min(100.0, 100.0 * self.done / self.total):.0f}%"
        else:
            out["amounts"] = self._amount(self.done)
        if self.files_total is not None and (self.files_total > 1 or self._growing):
            out["files"] = f"{self.files_done}/{self.files_total}{'+' if self._growing else ''} files"
        if self._phases and not final:
            out["tail"] = self._phases[-1].text
        elif final and (finished or not self.total):
            out["tail"] = f"in {duration(elapsed)}"
        elif self.total and not self._growing:
            if finished:
                out["tail"] = "finishing"
            else:
                rate = self.rate(now)
                out["tail"] = f"ETA {duration((self.total - self.done) / rate)}" if rate > 0 else "ETA unknown"
        return out

    @staticmethod
    def _join(label: str, f: Dict[str, str], keep: Tuple[str, ...]) -> str:
        """``label: amounts (pct), files, rate, tail`` with only the pieces in ``keep``
        (``done`` alone stands for the amount done without the total)."""
        pct = f" ({f['pct']})" if "pct" in f else ""
        if "amounts" in keep:
            head = f["amounts"] + pct
        elif "done" in keep and "done" in f:
            head = f["done"] + pct
        else:
            head = f.get("pct", "")
        body = ", ".join([p for p in [head] if p] + [f[k] for k in ("files", "rate", "tail") if k in keep and k in f])
        return f"{label}: {body}" if body else label

    # what a narrower terminal gives up first: the bar's length, the label's, the rate, the
    # total, the amount done, the file count, ...; the bar itself goes only when nothing fits
    _NARROWING: Tuple[Tuple[int, Tuple[str, ...]], ...] = (
        (0, ("amounts", "files", "rate", "tail")),
        (20, ("amounts", "files", "rate", "tail")),
        (20, ("amounts", "files", "tail")),
        (16, ("done", "files", "tail")),
        (16, ("files", "tail")),
        (12, ("tail",)),
        (12, ()),
    )

    def render(self, width: Optional[int] = None, now: Optional[float] = None, final: bool = False) -> str:
        """The line as shown now: without ``width``, whole (the log line); with it, fitted in
        ``width - 1`` columns (the last column is left free so no terminal wraps), bar included."""
        now = self._clock() if now is None else now
        f = self._fields(now, final)
        label = _printable(self.label)
        if width is None:
            return self._join(label, f, ("amounts", "files", "rate", "tail"))
        room = max(1, width - 1)
        texts = [self._join(clip(label, cap or max(12, room // 3)), f, keep) for cap, keep in self._NARROWING]
        frac = min(1.0, max(0.0, self.done / self.total)) if self.total and not self._growing else 0.0
        for text in texts:
            bar = min(_BAR_MAX, room - cells(text) - 3)
            if bar >= _BAR_MIN:
                filled = int(frac * bar)
                return f"[{'#' * filled}{'-' * (bar - filled)}] {text}"
        for text in texts:
            if cells(text) <= room:
                return text
        return clip(texts[-1], room)

    def _show(self, now: float, final: bool) -> None:
        self._last = now
        if self._tty:
            line = self.render(terminal_width(self._stream), now, final)
            self._stream.write(f"\r{line}\x1b[K" + ("\n" if final else ""))
            self._stream.flush()
        else:
            log.info(self.render(None, now, final))


__all__ = ["Phase", "Progress", "WINDOW", "cells", "clip", "duration", "log_interval", "terminal_width"]
