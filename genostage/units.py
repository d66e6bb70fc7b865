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


def parse_size(text: "str | int") -> int:
    """Parse a size; bare K/M/G/T are binary (1024-based), KB/MB/GB decimal."""
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"size must not be negative: {text}")
        return text
    m = _SIZE.match(text)
    if not m or m.group(2).upper() not in _UNITS:
        raise UsageError(f"not a size: {text!r} (expected e.g. 8MiB, 64M, 1G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def format_size(n: float) -> str:
    """1536 -> '1.5 KiB'; always one decimal above bytes."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024.0
        if n < 1024 or unit == "TiB":
            break
    return f"{n:.1f} {unit}"
