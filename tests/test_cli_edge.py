"""The CLI's edge: an OSError the library did not wrap still ends in one line and an exit code
from the README's table, never a traceback."""
from __future__ import annotations

import errno

import pytest

from genostage import cli
from genostage.cli import checksum


@pytest.mark.parametrize("code, status, words", [
    (errno.EIO, 5, "Input/output error"),
    (errno.ENOSPC, 7, "no space left"),
    (errno.EACCES, 4, "Permission denied"),
])
def test_an_unwrapped_os_error_is_one_line_and_its_exit_code(monkeypatch, capsys, tmp_path, code, status, words):
    def broken(args):
        raise OSError(code, __import__("os").strerror(code), str(tmp_path / "reads.fq"))

    monkeypatch.setattr(checksum, "run", broken)
    target = tmp_path / "reads.fq"
    target.write_text("@r\nA\n+\nI\n")
    assert cli.main(["checksum", str(target)]) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("genostage: ")
    assert "reads.fq" in err and words in err
    assert "Traceback" not in err
