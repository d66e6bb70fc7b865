"""The genostage._fastq kernel: record scanning, validation, names."""
from __future__ import annotations

import pytest

from genostage.split import _fastq

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
    # a short quality line whose newline-to-be falls on the next header's newline
    (b"@a\nACGTA\n+\nIII\n@\nACGTA\n+\nIIIII\n", _fastq.E_LENGTH, 3),
    (b"@a\nAC\n+\nII\n@b\nACGTA\n+\nIII\n@\nACGTA\n+\nIIIII\n", _fastq.E_LENGTH, 7),
])
def test_errors(data: bytes, code: int, line: int) -> None:
    pos, n, _, err, eline, _ = scan(data)
    assert (err, eline) == (code, line)


def test_mixed_line_ends_and_named_plus_lines() -> None:
    data = b"@a\nAC\r\n+\r\nII\n@b\nACG\n+b name\nIII\r\n@c\r\nA\r\n+c\r\nI\r\n"
    assert scan(data)[:4] == (len(data), 3, 6, 0)


def _reference(data: bytes) -> tuple:
    """(error, line) of a whole FASTQ text ending in a newline, the slow way."""
    lines = data.split(b"\n")[:-1]
    r = 0
    while 4 * r < len(lines):
        rec = lines[4 * r:4 * r + 4]
        base = 4 * r
        if not rec[0].startswith(b"@"):
            return (_fastq.E_HEADER, base)
        if len(rec) >= 3 and not rec[2].startswith(b"+"):
            return (_fastq.E_PLUS, base + 2)
        if len(rec) < 4:
            return (_fastq.E_TRUNCATED, base + len(rec))
        seq, qual = (x[:-1] if x.endswith(b"\r") else x for x in (rec[1], rec[3]))
        if len(seq) != len(qual):
            return (_fastq.E_LENGTH, base + 3)
        r += 1
    return (0, 0)


@pytest.mark.parametrize("seed", range(20))
def test_scan_agrees_with_a_reference_on_damaged_input(seed: int) -> None:
    import random

    rng = random.Random(seed)
    for _ in range(300):
        lines = []
        for i in range(rng.randint(1, 6)):
            n = rng.randint(1, 12)
            eol = [b"\r" if rng.random() < 0.2 else b"" for _ in range(4)]
            lines += [b"@r%d" % i + eol[0], bytes(rng.choice(b"ACGTN") for _ in range(n)) + eol[1],
                      rng.choice([b"+", b"+r%d" % i]) + eol[2], b"I" * n + eol[3]]
        k = rng.randrange(len(lines))
        damage = rng.randrange(5)
        if damage == 0 and k % 4 == 3:  # quality shorter or longer
            lines[k] = lines[k][:max(0, len(lines[k]) - rng.randint(1, 3))] if rng.random() < 0.5 \
                else lines[k] + b"I" * rng.randint(1, 3)
        elif damage == 1 and k % 4 in (0, 2):
            lines[k] = b"x" + lines[k][1:]
        elif damage == 2:
            lines = lines[:k]
        elif damage == 3 and k % 4 == 3:  # the short-quality coincidence: a bare '@' header follows
            lines[k] = lines[k][:1]
            if k + 1 < len(lines):
                lines[k + 1] = b"@"
        data = b"".join(x + b"\n" for x in lines)
        if not data:
            continue
        _, _, _, err, eline, _ = scan(data)
        assert (err, eline) == _reference(data), data


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
