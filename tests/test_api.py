"""The Python API as a user's type checker sees it: genostage.Job, stage_in, copy and the
exceptions are typed (not ``object`` behind the lazy imports), and ``help(Job)`` explains
its parameters."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import genostage

USER_SCRIPT = '''
from pathlib import Path
from typing import List

import genostage
from genostage import GenostageError, NotFound, ToolFailed, TransferConfig


def main() -> int:
    config = TransferConfig(concurrency=4)
    try:
        with genostage.Job(scratch_root="/tmp", keep="on-failure", config=config) as job:
            stats: Path = job.output("s3://bucket/results/x.stats")
            bam: Path = job.input("s3://bucket/x.bam")
            result = job.run(["samtools", "stats", bam], stdout=stats)
            seconds: float = result.wall_seconds
    except ToolFailed as err:
        tail: List[str] = err.stderr_tail
        return err.returncode
    except NotFound:
        return 3
    except GenostageError:
        return 1
    local: Path = genostage.stage_in("s3://bucket/refs/hg38/", "/data/refs")
    results = genostage.copy("s3://bucket/a.bam", "s3://other/a.bam")
    verified: List[str] = [r.verified or "" for r in results]
    return 0
'''

BAD_SCRIPT = '''
import genostage

with genostage.Job(keep="sometimes") as job:
    job.output(3)
'''


def _mypy(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent(text))
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--cache-dir", str(tmp_path / ".mypy"), str(script)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)


@pytest.mark.slow
def test_a_user_script_type_checks(tmp_path):
    r = _mypy(tmp_path, USER_SCRIPT)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_type_errors_in_a_user_script_are_caught(tmp_path):
    """The names are really typed: a wrong keep policy and a non-str URI are reported."""
    r = _mypy(tmp_path, BAD_SCRIPT)
    assert r.returncode == 1
    assert "Literal['sometimes']" in r.stdout and 'Argument 1 to "output" of "Job"' in r.stdout


def test_help_explains_the_job_parameters():
    doc = genostage.Job.__doc__ or ""
    for name in ("scratch_root", "keep", "config", "manifest", "grace", "cache", "index"):
        assert f"``{name}``" in doc, name
