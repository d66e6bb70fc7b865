"""Progress lines: a bar on a terminal, periodic log lines in batch, and a total still being listed."""
from __future__ import annotations

import io
import logging
import time

from genostage.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_bar_with_percentage_and_eta():
    out = Terminal()
    p = Progress(1000, "cp x", unit="records", stream=out)
    p.update(250)
    p.close()
    last = out.getvalue().split("\r")[-1]
    assert last.startswith("[######------------------] cp x: 250 records / 1,000 records (25%)")
    assert "ETA" in last and last.endswith("\n")


def test_growing_total_has_no_percentage_until_settled():
    out = Terminal()
    p = Progress(None, "cp prefix", unit="records", stream=out)
    p.grow(1000)
    p.update(1000)  # the whole first page is done before the second is listed
    p._show(p._last, final=False)
    assert "1,000 records of 1,000 records listed so far" in out.getvalue().split("\r")[-1]
    assert "100%" not in out.getvalue() and "ETA" not in out.getvalue()
    p.grow(1000)
    p.settle()
    p.close()
    last = out.getvalue().split("\r")[-1]
    assert "1,000 records / 2,000 records (50%)" in last and "ETA" in last


def test_batch_logs_lines_not_bars(monkeypatch):
    monkeypatch.setenv("GENOSTAGE_PROGRESS_INTERVAL", "0.1")  # the shortest interval
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("genostage.progress")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        out = io.StringIO()  # not a terminal
        p = Progress(4 << 20, "cp big", stream=out)
        p.update(1 << 20)  # within the interval: no line yet
        time.sleep(0.15)
        p.update(1 << 20)
        p.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert out.getvalue() == ""
    assert lines[0].startswith("cp big: 2.0 MiB / 4.0 MiB (50%)") and "ETA" in lines[0]
    assert len(lines) == 2  # and the closing line
