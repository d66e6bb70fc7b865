"""The genostage._fastq kernel: record scanning, validation, names."""
from __future__ import annotations

import pytest

from genostage import _fastq

from .fastq_util import fastq

HUGE = 1 << 62


def scan(data: bytes, final: bool = True, **kw: int):  # type: ignore[no-untyped-def]
    return _fastq.scan(data, 0, len(data), kw.get("records", HUGE), kw.get("bases", HUGE), kw.get("nbytes", HUGE),
                       kw.get("step", 1), final)


def test_counts_records_and_bases() -> None:
    data = b"@a\nACGT\n+\nIIII\n@b comment\nAC\n+b\nII\n"
    assert scan(data) == (len(data), 2, 6, 0, 0, False)


def test_crlf_accepted_and_not_counted_as_base() -> None:
    data = b"@a\r\nACGT\r\n+\r\nIIII\r\n"
    assert scan(data)[:4] == (len(data), 1, 4, 0)


@pytest.mark.parametrize("data, code, line", [
    (b"Xa\nAC\n+\nII\n", _fastq.E_HEADER, 0),
    (b"@a\nAC\n+\nII\nXb\nAC\n+\nII\n", _fastq.E_HEADER, 4),
    (b"@a\nAC\n-\nII\n", _fastq.E_PLUS, 2),
    (b"@a\nAC\n+\nIII\n", _fastq.E_LENGTH, 3),
    (b"@a\nACG\r\n+\r\nII\r\n", _fastq.E_LENGTH, 3),
    (b"@a\nAC\n+\n", _fastq.E_TRUNCATED, 3),
    (b"@a\nAC\n+\nII\n@b\n", _fastq.E_TRUNCATED, 5),
])
def test_errors(data: bytes, code: int, line: int) -> None:
    pos, n, _, err, eline, _ = scan(data)
    assert (err, eline) == (code, line)


def test_partial_record_not_an_error_unless_final() -> None:
    data = b"@a\nAC\n+\nII\n@b\nAC\n+"
    assert scan(data, final=False)[:4] == (11, 1, 2, 0)


@pytest.mark.parametrize("limit, expect", [({"records": 2}, 2), ({"bases": 5}, 3), ({"nbytes": 1}, 1)])
def test_limits_stop_after_the_record_reaching_them(limit: dict, expect: int) -> None:
    data = b"@a\nAC\n+\nII\n" * 5
    pos, n, _, err, _, stopped = scan(data, **limit)
    assert (n, pos, stopped, err) == (expect, 11 * expect, True, 0)


def test_step_two_keeps_pairs() -> None:
    data = b"@a\nAC\n+\nII\n" * 5
    pos, n, _, err, _, stopped = scan(data, records=1, step=2)
    assert (n, stopped) == (2, True)
    pos, n, _, err, eline, _ = scan(data, step=2)
    assert err == _fastq.E_TRUNCATED and n == 4


def test_names_compare_without_mate_suffix_and_comment() -> None:
    a = b"@r1/1 x\nA\n+\nI\n@r2/1\nA\n+\nI\n@r3\nA\n+\nI\n"
    b = b"@r1/2 y\nA\n+\nI\n@r2/2\nA\n+\nI\n@r4\nA\n+\nI\n"
    mm, p1, p2 = _fastq.compare_names(a, 0, b, 0, 3)
    assert mm == 2
    assert _fastq.record_name(a, p1) == b"r3" and _fastq.record_name(b, p2) == b"r4"
    assert _fastq.compare_names(a, 0, b, 0, 2)[0] == -1


def test_compare_pairs_interleaved() -> None:
    data = b"@p1/1\nA\n+\nI\n@p1/2\nC\n+\nI\n@p2/1\nA\n+\nI\n@p3/2\nA\n+\nI\n"
    assert _fastq.compare_pairs(data, 0, 1)[0] == -1
    assert _fastq.compare_pairs(data, 0, 2)[0] == 1


@pytest.mark.parametrize("seed", range(5))
def test_find_record_start_from_any_offset(seed: int) -> None:
    data = fastq(30, seed=seed)
    starts = []
    pos = 0
    while pos < len(data):
        starts.append(pos)
        pos = scan(data[pos:], records=1)[0] + pos
    for off in range(1, len(data) - 1):
        got = _fastq.find_record_start(data, off, len(data))
        nxt = [s for s in starts if s >= off]
        # needs a whole record after it to prove the start
        want = nxt[0] if nxt and nxt[0] != starts[-1] else -1
        if want == -1 and nxt:
            want = nxt[0] if data.endswith(b"\n") else -1
        assert got == want, off


def test_count_lines() -> None:
    assert _fastq.count_lines(b"a\nb\nc", 0, 5) == 2
    assert _fastq.count_lines(b"a\nb\nc", 2, 5) == 1
