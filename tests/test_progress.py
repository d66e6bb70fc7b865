"""Progress lines: a bar that fits the terminal (never wraps), periodic log lines in batch, a total
still being listed, files done of total, phases instead of a 0 s ETA, and an ETA from the recent rate."""
from __future__ import annotations

import fcntl
import io
import logging
import os
import select
import signal
import struct
import termios
import time
from typing import Iterator, List

import pytest

from genostage.progress import Progress, cells, clip, duration, log_interval, terminal_width


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def redraws(out: Terminal) -> List[str]:
    """What each redraw left on the screen's line (the text between carriage returns)."""
    return [r.replace("\x1b[K", "").rstrip("\n") for r in out.getvalue().split("\r") if r]


@pytest.fixture
def columns(monkeypatch):  # type: ignore[no-untyped-def]
    def set_to(n: int) -> None:
        monkeypatch.setenv("COLUMNS", str(n))
    monkeypatch.delenv("TERM", raising=False)
    return set_to


@pytest.fixture
def log_lines() -> Iterator[List[str]]:
    lines: List[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("genostage.progress")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def test_terminal_bar_with_percentage_and_eta(columns):
    columns(200)
    out = Terminal()
    p = Progress(1000, "cp x", unit="records", stream=out)
    p.update(250)
    p.close()
    last = out.getvalue().split("\r")[-1]
    assert last.startswith("[######------------------] cp x: 250 records / 1,000 records (25%)")
    assert "ETA" in last and last.endswith("\n")


def test_growing_total_has_no_percentage_until_settled(columns):
    columns(200)
    out = Terminal()
    p = Progress(None, "cp prefix", unit="records", stream=out)
    p.grow(1000)
    p.update(1000)  # the whole first page is done before the second is listed
    p.refresh()
    assert "1,000 records of 1,000 records listed so far" in out.getvalue().split("\r")[-1]
    assert "100%" not in out.getvalue() and "ETA" not in out.getvalue()
    p.grow(1000)
    p.settle()
    p.close()
    last = out.getvalue().split("\r")[-1]
    assert "1,000 records / 2,000 records (50%)" in last and "ETA" in last


def test_batch_logs_lines_not_bars(monkeypatch, log_lines):
    monkeypatch.setenv("GENOSTAGE_PROGRESS_INTERVAL", "0.1")  # the shortest interval
    out = io.StringIO()  # not a terminal
    p = Progress(4 << 20, "cp big", stream=out)
    p.update(1 << 20)  # within the interval: no line yet
    time.sleep(0.15)
    p.update(1 << 20)
    p.close()
    assert out.getvalue() == ""
    assert log_lines[0].startswith("cp big: 2.0 MiB / 4.0 MiB (50%)") and "ETA" in log_lines[0]
    assert len(log_lines) == 2  # and the closing line


def _a_long_split(p: Progress, clock: Clock) -> None:
    """A 17 s split of 4 GiB in 2,000 files, redrawn every 0.1 s, then its last upload completing."""
    for i in range(170):
        clock.now += 0.1
        p.update((4 << 30) // 170)
        if i % 17 == 0:
            p.file_done(200)
    with p.phase("completing upload"):
        clock.now += 4
        p.refresh()
    p.close()


@pytest.mark.parametrize("width", [200, 120, 80, 60, 40, 24, 10])
def test_no_redraw_is_wider_than_the_terminal(columns, width):
    """Before: a bar of 24 plus the whole text, whatever the width: at 80 columns each redraw
    wrapped onto a new line (101 stacked lines for one 17 s split)."""
    columns(width)
    out = Terminal()
    clock = Clock()
    p = Progress(4 << 30, "split fastq S1_L001_R1_001.fastq.gz", stream=out, files=2000, clock=clock)
    _a_long_split(p, clock)
    shown = redraws(out)
    assert len(shown) > 100
    assert max(cells(r) for r in shown) <= width - 1  # the last column stays free: no terminal wraps
    assert out.getvalue().count("\n") == 1 and out.getvalue().endswith("\n")  # one line, ended once
    if width >= 80:
        assert all(r.startswith("[") for r in shown)  # the bar stays
        assert "completing upload" in " ".join(shown) and "files" in shown[0]


def test_width_is_read_again_at_each_redraw(columns):
    columns(120)
    out = Terminal()
    clock = Clock()
    p = Progress(1 << 30, "cp sample.bam", stream=out, clock=clock)
    clock.now += 1
    p.update(1 << 28)
    columns(50)  # the window was made narrower
    clock.now += 1
    p.update(1 << 28)
    wide, narrow = redraws(out)
    assert 60 < cells(wide) <= 119 and cells(narrow) <= 49


def _pty_of(columns_: int):  # type: ignore[no-untyped-def]
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns_, 0, 0))
    return master, slave


def _read_all(fd: int) -> str:
    data = b""
    while select.select([fd], [], [], 0.2)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.decode()


def test_a_real_terminal_resized_between_redraws(monkeypatch):
    """A pty whose window shrinks from 100 to 40 columns: each redraw fits the size it has then,
    and no SIGWINCH handler is installed (nothing for a signal to interrupt)."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    before = signal.getsignal(signal.SIGWINCH)
    master, slave = _pty_of(100)
    stream = open(slave, "w", closefd=True)
    try:
        assert terminal_width(stream) == 100
        clock = Clock()
        p = Progress(1 << 30, "cp a_rather_long_object_name_from_the_sequencer.bam", stream=stream,
                     files=40, clock=clock)
        clock.now += 1
        p.update(1 << 28)
        wide = _read_all(master)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 40, 0, 0))
        clock.now += 1
        p.update(1 << 28)
        p.file_done(3)
        p.close()
        narrow = _read_all(master)
    finally:
        stream.close()
        os.close(master)
    strip = lambda s: [r.replace("\x1b[K", "").rstrip("\r\n") for r in s.split("\r") if r.strip("\r\n")]  # noqa: E731
    assert [cells(r) for r in strip(wide)] and max(cells(r) for r in strip(wide)) <= 99
    assert cells(strip(wide)[-1]) > 40
    assert strip(narrow) and max(cells(r) for r in strip(narrow)) <= 39
    assert signal.getsignal(signal.SIGWINCH) == before


def test_files_done_of_total_in_the_bar_and_the_log(columns, monkeypatch, log_lines):
    columns(120)
    out = Terminal()
    clock = Clock()
    p = Progress(2000 * 65536, "cp run1", stream=out, files=2000, clock=clock)
    for _ in range(12):
        clock.now += 0.2
        p.update(65536)
        p.file_done()
    p.refresh()
    assert "12/2000 files" in redraws(out)[-1]
    monkeypatch.setenv("GENOSTAGE_PROGRESS_INTERVAL", "0.1")
    clock = Clock()
    q = Progress(2000 * 65536, "cp run1", stream=io.StringIO(), files=2000, clock=clock)
    q.file_done(12)  # within the interval: no line yet
    clock.now += 1
    q.update(65536 * 12)
    assert log_lines == ["cp run1: 768.0 KiB / 125.0 MiB (1%), 12/2000 files, 768.0 KiB/s, ETA 2 min 46 s"]


def test_files_found_while_listing_and_a_single_file_shows_no_count(columns):
    columns(120)
    out = Terminal()
    p = Progress(None, "cp prefix", stream=out)
    for _ in range(5):
        p.grow(100, files=1)
    p.update(300)
    p.file_done(3)
    p.refresh()
    assert "3/5+ files" in redraws(out)[-1]
    p.settle()
    p.refresh()
    assert "3/5 files" in redraws(out)[-1]
    one = Progress(100, "cp x", stream=Terminal(), files=1)
    assert "files" not in one.render(120)


def test_a_phase_is_shown_instead_of_an_eta_and_the_eta_comes_back(columns):
    """Before: an upload whose bytes were all sent sat at 'ETA 0 s' while it completed."""
    columns(120)
    out = Terminal()
    clock = Clock()
    p = Progress(100 << 20, "cp big.bin", stream=out, clock=clock)
    clock.now += 1
    p.update(50 << 20)
    assert "ETA 1 s" in redraws(out)[-1]
    with p.phase("completing upload"):  # drawn at once, whatever the interval
        assert redraws(out)[-1].endswith("completing upload") and "ETA" not in redraws(out)[-1]
    clock.now += 1
    p.update(50 << 20)
    p.refresh()
    assert redraws(out)[-1].endswith("finishing")  # every byte done, no phase: never 'ETA 0 s'
    first = p.phase("completing upload")
    second = p.phase("verifying")
    p.refresh()
    assert redraws(out)[-1].endswith("verifying")  # phases overlap: the latest still active
    second.end()
    p.refresh()
    assert redraws(out)[-1].endswith("completing upload")
    first.end()
    first.end()  # idempotent
    p.close()
    assert redraws(out)[-1].endswith("in 2 s") and "100.0 MiB / 100.0 MiB (100%)" in redraws(out)[-1]


def test_eta_follows_the_recent_rate_not_the_mean_since_the_start(columns):
    """100 MiB/s for 10 s, then 10 MiB/s for 10 s: 900 MiB left. The mean since the start
    (55 MiB/s) says 16 s; the last 10 s say 90 s, which is what it will take."""
    columns(200)
    out = Terminal()
    clock = Clock()
    p = Progress(2000 << 20, "cp big", stream=out, clock=clock)
    for rate in [100] * 10 + [10] * 10:
        for _ in range(10):
            clock.now += 0.1
            p.update((rate << 20) // 10)
    line = redraws(out)[-1]
    assert "1.1 GiB / 2.0 GiB (55%)" in line
    assert "ETA 1 min " in line and duration(90) == "1 min 30 s"  # 80-90 s; the mean would say 16 s
    assert "10.9 MiB/s" in line  # the rate shown is the recent one too


def test_a_stall_shows_at_once():
    clock = Clock()
    p = Progress(1 << 30, "cp big", stream=Terminal(), clock=clock)
    for _ in range(50):
        clock.now += 0.1
        p.update(1 << 20)
    fast = p.rate()
    clock.now += 20  # nothing for 20 s (a retry's backoff, a slow server)
    assert fast > 5 << 20 and p.rate() < fast / 2
    assert "ETA" in p.render(200) and "ETA unknown" not in p.render(200)


def test_control_characters_in_a_label_cannot_move_the_cursor(columns):
    columns(80)
    out = Terminal()
    p = Progress(10, "cp evil\rkey\n.bam", stream=out)
    p.close()
    assert out.getvalue().count("\r") == 1 and out.getvalue().count("\n") == 1
    assert "cp evil?key?.bam" in out.getvalue()


def test_wide_characters_count_twice():
    assert cells("abc") == 3 and cells("試料") == 4 and cells("e\u0301") == 1
    assert clip("試料試料試料", 7) == "試料..." and cells(clip("abcdefgh", 5)) == 5


def test_log_interval_is_public_and_bounded(monkeypatch):
    monkeypatch.setenv("GENOSTAGE_PROGRESS_INTERVAL", "2.5")
    assert log_interval() == 2.5
    monkeypatch.setenv("GENOSTAGE_PROGRESS_INTERVAL", "0")
    assert log_interval() == 0.1
    monkeypatch.setenv("GENOSTAGE_PROGRESS_INTERVAL", "often")
    assert log_interval() == 10.0


def test_dumb_terminal_and_disabled_progress_draw_nothing(monkeypatch, log_lines):
    monkeypatch.setenv("TERM", "dumb")
    out = Terminal()
    p = Progress(10, "cp x", stream=out)
    p.update(5)
    p.close()
    assert out.getvalue() == "" and log_lines == []  # a dumb terminal: batch lines, none this short
    q = Progress(10, "cp x", stream=Terminal(), enabled=False)
    q.update(10)
    q.phase("completing upload").end()
    q.close()
    assert log_lines == []
