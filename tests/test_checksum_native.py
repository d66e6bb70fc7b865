"""The C kernels on their own: every path this CPU has, and the AArch64 path under qemu."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

EXT = Path(__file__).resolve().parent.parent / "ext"
SOURCES = [str(EXT / "crc_selftest.c"), str(EXT / "crc_kernels.c")]
ARM_GCC = "aarch64-linux-gnu-gcc"
ARM_LIBC = "/usr/aarch64-linux-gnu/include/stdio.h"


def _build_and_run(compiler: str, out: Path, runner: "list[str]", extra: "list[str]") -> str:
    subprocess.run([compiler, "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", *extra, "-o", str(out), *SOURCES],
                   check=True, capture_output=True, text=True)
    done = subprocess.run([*runner, str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_kernels_native(tmp_path: Path) -> None:
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler})")
    out = _build_and_run(compiler, tmp_path / "selftest", [], [])
    assert "failures: 0" in out


@pytest.mark.skipif(not (shutil.which(ARM_GCC) and shutil.which("qemu-aarch64") and os.path.exists(ARM_LIBC)),
                    reason="needs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user (`make cross-deps`)")
def test_kernels_aarch64_under_qemu(tmp_path: Path) -> None:
    out = _build_and_run(ARM_GCC, tmp_path / "selftest-arm", ["qemu-aarch64", "-cpu", "max"], ["-static"])
    assert out.startswith("paths tested: 2 (best 4)") and "failures: 0" in out  # portable + pmull
