"""Progress for long transfers and splits.

On a terminal: a bar on stderr, redrawn at most ten times a second. Without one
(AWS Batch, CloudWatch): one log line every ``interval`` seconds (default 10,
``GENOSTAGE_PROGRESS_INTERVAL``) with bytes, rate and ETA, so the log shows
the job is alive. Thread-safe; ``update`` is cheap enough for every 1 MiB piece.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Optional, TextIO

from .units import format_size

log = logging.getLogger("genostage.progress")


def _interval() -> float:
    try:
        return max(0.1, float(os.environ.get("GENOSTAGE_PROGRESS_INTERVAL", "10")))
    except ValueError:
        return 10.0


class Progress:
    """Counts bytes (or records) done out of ``total``; ``unit`` is ``"B"`` or a noun."""

    def __init__(self, total: Optional[int], label: str, unit: str = "B",
                 stream: Optional[TextIO] = None, enabled: bool = True) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.done = 0
        self._stream = stream or sys.stderr
        self._tty = enabled and hasattr(self._stream, "isatty") and self._stream.isatty() \
            and os.environ.get("TERM") != "dumb"
        self._enabled = enabled
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last = self._start
        self._every = 0.1 if self._tty else _interval()
        self._closed = False
        self._growing = False  # the total is still being found (a listing read page by page)

    def grow(self, n: int) -> None:
        """Add ``n`` to the total: work found while work is done (a listing read page by page);
        until :meth:`settle`, lines say the total is so far, with no percentage or ETA."""
        with self._lock:
            self.total = (self.total or 0) + n
            self._growing = True

    def settle(self) -> None:
        """The total is final."""
        with self._lock:
            self._growing = False

    def update(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if not self._enabled or now - self._last < self._every:
                return
            self._last = now
            self._show(now, final=False)

    def _amount(self, n: float) -> str:
        return format_size(n) if self.unit == "B" else f"{int(n):,} {self.unit}"

    def _line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        rate_text = f"{format_size(rate)}/s" if self.unit == "B" else f"{rate:,.0f} {self.unit}/s"
        if self.total and self._growing:
            return f"{self.label}: {self._amount(self.done)} of {self._amount(self.total)} listed so far, {rate_text}"
        if self.total:
            pct = min(100.0, 100.0 * self.done / self.total)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            return (f"{self.label}: {self._amount(self.done)} / {self._amount(self.total)} "
                    f"({pct:.0f}%), {rate_text}, ETA {eta:.0f} s")
        return f"{self.label}: {self._amount(self.done)}, {rate_text}"

    def _show(self, now: float, final: bool) -> None:
        if self._tty:
            width = 24
            frac = min(1.0, self.done / self.total) if self.total else 0.0
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            self._stream.write(f"\r[{bar}] {self._line(now)}\x1b[K" + ("\n" if final else ""))
            self._stream.flush()
        else:
            log.info(self._line(now))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._enabled and (self._tty or time.monotonic() - self._start >= self._every):
                self._show(time.monotonic(), final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
