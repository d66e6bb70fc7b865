"""Sizes: parse ``64MiB``/``8M``/``1.5G`` and render bytes for humans."""
from __future__ import annotations

import re

from .errors import UsageError

_UNITS = {
    "": 1, "B": 1,
    "K": 1024, "KB": 1000, "KIB": 1024,
    "M": 1024**2, "MB": 1000**2, "MIB": 1024**2,
    "G": 1024**3, "GB": 1000**3, "GIB": 1024**3,
    "T": 1024**4, "TB": 1000**4, "TIB": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
EXPECTED = "a number of bytes with an optional unit, e.g. 8MiB, 64M, 1.5G, 500MB, 4096"


class SizeError(UsageError, ValueError):
    """A size that cannot be parsed. Also a ``ValueError``, so an ``argparse`` option with
    ``type=parse_size`` reports it as a bad value (exit status 2) instead of a traceback."""


def parse_size(text: "str | int") -> int:
    """Parse a size; bare K/M/G/T are binary (1024-based), KB/MB/GB/TB decimal, KiB/MiB/GiB/TiB
    binary, case ignored. Refuses negative sizes, fractions of a byte and anything else
    with one line giving the expected form (:class:`SizeError`)."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise SizeError(f"not a size: {text!r} (expected {EXPECTED})")
    if isinstance(text, int):
        if text < 0:
            raise SizeError(f"a size cannot be negative: {text}")
        return text
    if text.strip().startswith("-"):
        raise SizeError(f"a size cannot be negative: {text!r}")
    m = _SIZE.match(text)
    if not m or m.group(2).upper() not in _UNITS:
        raise SizeError(f"not a size: {text!r} (expected {EXPECTED})")
    number, unit = m.group(1), _UNITS[m.group(2).upper()]
    if unit == 1 and "." in number and float(number) != int(float(number)):
        raise SizeError(f"not a whole number of bytes: {text!r} (expected {EXPECTED})")
    return int(float(number) * unit)


def format_size(n: float) -> str:
    """1536 -> '1.5 KiB'; always one decimal above bytes."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024.0
        if n < 1024 or unit == "TiB":
            break
    return f"{n:.1f} {unit}"
