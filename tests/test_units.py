"""Sizes as users write them: binary and decimal units, and the bad ones refused in one line."""
from __future__ import annotations

import argparse

import pytest

from genostage.errors import UsageError
from genostage.units import SizeError, format_size, parse_size


@pytest.mark.parametrize("text,value", [
    ("0", 0), ("4096", 4096), ("4096B", 4096), ("1.0", 1),
    ("8MiB", 8 << 20), ("8M", 8 << 20), ("8m", 8 << 20), ("8 MiB", 8 << 20), (" 8MiB ", 8 << 20),
    ("1KB", 1000), ("1kb", 1000), ("1K", 1024), ("1KiB", 1024),
    ("1.5G", 3 << 29), ("500MB", 500_000_000), ("2TiB", 2 << 40), ("1T", 1 << 40), ("1TB", 10**12),
    (0, 0), (5 << 20, 5 << 20),
])
def test_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text,reason", [
    ("-1", "cannot be negative"), (" -8MiB", "cannot be negative"), (-1, "cannot be negative"),
    ("", "not a size"), ("   ", "not a size"), ("abc", "not a size"), ("MiB", "not a size"),
    ("8XB", "not a size"), ("8 M B", "not a size"), ("1.5.5G", "not a size"), ("1e6", "not a size"),
    ("0x10", "not a size"), ("inf", "not a size"), ("nan", "not a size"), ("1,000", "not a size"),
    ("1.5", "whole number of bytes"), ("0.5B", "whole number of bytes"),
    (True, "not a size"), (1.5, "not a size"), (None, "not a size"),
])
def test_bad_sizes_are_refused_with_the_expected_form(text, reason):
    with pytest.raises(UsageError, match=reason) as info:
        parse_size(text)
    message = str(info.value)
    assert "\n" not in message
    if reason == "not a size":
        assert "8MiB" in message and "500MB" in message  # says what it expected


def test_a_bad_size_in_an_argparse_option_is_a_usage_error_not_a_traceback(capsys):
    """``type=parse_size`` (as ``split bam --bytes`` uses it): argparse reports it, exit 2."""
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--bytes", type=parse_size)
    assert parser.parse_args(["--bytes", "64M"]).bytes == 64 << 20
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--bytes", "-1"])
    assert info.value.code == 2
    assert "argument --bytes" in capsys.readouterr().err
    assert issubclass(SizeError, UsageError) and issubclass(SizeError, ValueError)


@pytest.mark.parametrize("n,text", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (5 << 20, "5.0 MiB"),
    (3 << 29, "1.5 GiB"), (2 << 40, "2.0 TiB"), (5 << 50, "5120.0 TiB"), (1000.7, "1000 B"),
])
def test_format_size(n, text):
    assert format_size(n) == text


def test_format_and_parse_agree():
    for n in (1 << 10, 3 << 20, 7 << 30, 9 << 40):
        assert parse_size(format_size(n).replace(" ", "")) == n
