"""The distributions, as a user gets them: the sdist and the manylinux wheels that `make dist`
builds, installed (not editable) into fresh virtual environments outside the source tree.

The builds go through the Makefile's own targets (`dist-sdist`, `dist-x86_64` for the running
interpreter only, `dist-aarch64`), so these tests check what `make dist` makes. The kernel tests
run against the installed package from a copy of tests/ (no conftest: it needs the testing
extra), as the cibuildwheel configuration in pyproject.toml runs them on a public CI; the test
files and their requirements are read from that configuration. The aarch64 wheel's kernels run
under qemu-user with Debian's arm64 CPython.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest

from .fastq_util import pair

try:
    import tomllib
except ImportError:  # Python < 3.11: build depends on tomli there
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parent.parent
VERSION = re.search(r'^__version__ = "(.+)"', (REPO / "genostage" / "__init__.py").read_text(), re.M).group(1)  # type: ignore[union-attr]
CIBW = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["cibuildwheel"]
KERNEL_TESTS: List[str] = re.findall(r"tests/test_\w+\.py", CIBW["test-command"])
TEST_SOURCES: List[str] = CIBW["test-sources"]
KERNEL_TEST_REQUIRES: List[str] = CIBW["test-requires"]
# what reaches a child process from this one that could put the source tree on its path
LEAKY = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH", "PYTHONNOUSERSITE")


def _env(bin_dir: Optional[Path] = None, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY}
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _run(cmd: Sequence[Any], cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None,
         timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env if env is not None else _env(),
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"{' '.join(map(str, cmd))}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _make(*args: str, **variables: Any) -> subprocess.CompletedProcess:
    return _run(["make", "--no-print-directory", "-C", REPO, *args, *(f"{k}={v}" for k, v in variables.items())],
                timeout=1200)


def _auditwheel_show(wheel: Path) -> str:
    done = _run([sys.executable, "-m", "auditwheel", "show", wheel], env=_env(Path(sys.executable).parent))
    return " ".join((done.stdout + done.stderr).split())


def _copy_tests(dest: Path) -> Path:
    """A copy of cibuildwheel's test-sources (tests/ and the pytest configuration), outside the source tree."""
    dest.mkdir()
    for name in TEST_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, dest / name)
    return dest


def _run_kernel_tests(python: Sequence[Any], where: Path, env: Dict[str, str]) -> str:
    done = _run([*python, "-m", "pytest", "--noconftest", "-p", "no:cacheprovider", "-q", *KERNEL_TESTS],
                cwd=where, env=env, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    passed = re.search(r"(\d+) passed", out)
    assert passed and int(passed.group(1)) >= 100, out[-2000:]
    return out


# ---------------------------------------------------------------- building

@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make dist-sdist dist-x86_64` for this interpreter, into a temporary dist/."""
    root = tmp_path_factory.mktemp("dist")
    _make("dist-sdist", "dist-x86_64", DIST=root / "dist", DIST_BUILD=root / "build", DIST_PYTHONS=sys.executable)
    return root / "dist"


@pytest.fixture(scope="module")
def sdist(dist: Path) -> Path:
    return dist / f"genostage-{VERSION}.tar.gz"


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = sorted(dist.glob(f"genostage-{VERSION}-{tag}-{tag}-*manylinux*_x86_64.whl"))
    assert len(wheels) == 1, sorted(p.name for p in dist.iterdir())
    return wheels[0]


def _venv(where: Path, *install: Any) -> Path:
    _run([sys.executable, "-m", "venv", where], env=_env())
    python = where / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", *install, *KERNEL_TEST_REQUIRES], env=_env(where / "bin"))
    return where


@pytest.fixture(scope="module")
def installed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel, or the sdist, installed by pip."""
    artefact: Path = request.getfixturevalue(request.param)
    return _venv(tmp_path_factory.mktemp(f"venv-{request.param}") / "venv", artefact)


# ---------------------------------------------------------------- what the artefacts hold

@pytest.mark.slow
def test_sdist_holds_what_a_build_needs(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        info = tar.extractfile(f"genostage-{VERSION}/PKG-INFO").read().decode()  # type: ignore[union-attr]
    for source in [*(p.relative_to(REPO) for p in (REPO / "ext").glob("*.pyx")),
                   *(p.relative_to(REPO) for p in (REPO / "ext").glob("*.h")),
                   "ext/crc_kernels.c", "ext/md5_mb.c", "ext/crc_selftest.c",
                   "genostage/codec/_checksum.pyi", "genostage/codec/_bgzf.pyi", "genostage/split/_fastq.pyi",
                   "genostage/split/_bam.pyi",
                   "genostage/py.typed", "containers/README.md", "containers/base/Dockerfile",
                   "containers/samtools/Dockerfile", "README.md", "LICENSE", "setup.py", "pyproject.toml"]:
        assert str(source) in names, source
    assert not [n for n in names if n.endswith((".so", ".pyc")) or re.fullmatch(r"ext/_\w+\.c", n)]
    assert "License-Expression: MIT" in info and "Requires-Dist: isal" in info
    assert "Provides-Extra: testing" in info and "Provides-Extra: scatter" in info and "Provides-Extra: fast" in info


@pytest.mark.slow
def test_wheel_is_manylinux_stripped_and_carries_the_container_recipes(wheel: Path) -> None:
    shown = _auditwheel_show(wheel)
    assert 'is consistent with the following platform tag: "manylinux_2_17_x86_64"' in shown, shown
    assert wheel.name.endswith("-manylinux2014_x86_64.manylinux_2_17_x86_64.whl")
    from elftools.elf.elffile import ELFFile  # pyelftools, auditwheel's dependency

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        kernels = sorted(n for n in names if n.endswith(".so"))
        assert [k.split(".")[0] for k in kernels] == ["genostage/codec/_bgzf", "genostage/codec/_checksum",
                                                      "genostage/split/_bam", "genostage/split/_fastq"]
        for kernel in kernels:
            with zf.open(kernel) as fh:
                elf = ELFFile(fh)
                sections = {s.name for s in elf.iter_sections()}
                assert ".symtab" not in sections and not any(s.startswith(".debug") for s in sections), kernel
                assert elf["e_machine"] == "EM_X86_64"
    for tool in ("base", "samtools", "bwa", "bcftools"):
        assert f"genostage/deploy/containers/{tool}/Dockerfile" in names
    assert f"genostage-{VERSION}.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if n.endswith((".pyx", ".c", ".h")) or n.startswith(("tests/", "ext/"))]


# ---------------------------------------------------------------- installed, outside the source tree

@pytest.mark.slow
@pytest.mark.parametrize("installed", ["wheel", "sdist"], indirect=True)
def test_installed_package_works(installed: Path, tmp_path: Path) -> None:
    bin_dir = installed / "bin"
    env = _env(bin_dir)
    python = bin_dir / "python"
    probe = ("import importlib.resources as r, genostage; from genostage.codec import compress, _checksum; "
             "print(genostage.__file__); print(compress.backend()); print(_checksum.__file__); "
             "print((r.files('genostage.deploy') / 'containers' / 'samtools' / 'Dockerfile').is_file())")
    where, backend, kernel, recipes = _run([python, "-c", probe], cwd=tmp_path, env=env).stdout.split()
    assert Path(where).is_relative_to(installed) and Path(kernel).is_relative_to(installed)
    assert backend == "isal" and recipes == "True"  # isal came with a plain install

    assert _run([bin_dir / "genostage", "--version"], cwd=tmp_path, env=env).stdout.strip().endswith(VERSION)

    data = os.urandom(3 << 20)
    (tmp_path / "blob.bin").write_bytes(data)
    out = _run([bin_dir / "genostage", "checksum", "-a", "md5", "-a", "crc32c", "blob.bin"], cwd=tmp_path, env=env).stdout
    import google_crc32c

    crc32c = base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()
    assert out.split("\n")[:2] == [f"MD5 (blob.bin) = {hashlib.md5(data).hexdigest()}", f"CRC32C (blob.bin) = {crc32c}"]

    r1, r2 = pair(4000, seed=7, max_len=150)
    (tmp_path / "S_R1.fastq.gz").write_bytes(gzip.compress(r1))
    (tmp_path / "S_R2.fastq.gz").write_bytes(gzip.compress(r2))
    _run([bin_dir / "genostage", "split", "fastq", "S_R1.fastq.gz", "S_R2.fastq.gz", "-O", "chunks", "--parts", "3",
          "--summary", "s.json", "--no-progress"], cwd=tmp_path, env=env)
    chunks = json.loads((tmp_path / "s.json").read_text())["chunks"]
    assert len(chunks) == 3
    for mate, expected in enumerate((r1, r2)):
        assert b"".join(gzip.decompress(Path(tmp_path, c["files"][mate]).read_bytes()) for c in chunks) == expected

    # the testing helpers ship, but without their extra they say how to get it
    for how in (["-m", "genostage.testing.demo"], ["-c", "import genostage.testing.s3server"]):
        done = _run([python, *how], cwd=tmp_path, env=env, check=False)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1 and "pip install 'genostage[testing]'" in done.stderr

    _run_kernel_tests([python], _copy_tests(tmp_path / "kernel-tests"), env)


# ---------------------------------------------------------------- aarch64, under qemu-user

@pytest.fixture(scope="module")
def aarch64_wheel(dist: Path) -> Path:
    cross = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "cross-deps"], capture_output=True, text=True)
    if cross.returncode != 0:
        pytest.skip(f"the aarch64 cross compiler and qemu-user cannot be installed here: {cross.stderr.strip()[-300:]}")
    _make("dist-aarch64", "aarch64-python", DIST=dist, DIST_BUILD=dist.parent / "build")
    wheels = sorted(dist.glob(f"genostage-{VERSION}-cp311-cp311-*manylinux*_aarch64.whl"))
    assert len(wheels) == 1, sorted(p.name for p in dist.iterdir())
    return wheels[0]


@pytest.mark.slow
def test_aarch64_wheel_kernels_under_qemu(aarch64_wheel: Path, tmp_path: Path) -> None:
    shown = _auditwheel_show(aarch64_wheel)
    assert 'is consistent with the following platform tag: "manylinux_2_17_aarch64"' in shown, shown
    assert aarch64_wheel.name.endswith("-manylinux2014_aarch64.manylinux_2_17_aarch64.whl")

    site = tmp_path / "site"  # the wheel and the kernel tests' requirements, arm64 builds
    _run([sys.executable, "-m", "pip", "install", "-q", "--target", site, "--only-binary=:all:",
          "--platform", "manylinux_2_17_aarch64", "--platform", "manylinux2014_aarch64",
          "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
          aarch64_wheel, *KERNEL_TEST_REQUIRES], env=_env(Path(sys.executable).parent))
    python = REPO / "build" / "cross-aarch64" / "bin" / "python3.11"
    env = _env(PYTHONPATH=str(site), QEMU_CPU="max")
    probe = ("import platform, genostage; from genostage.codec import _checksum, compress; "
             "print(platform.machine(), _checksum.get_path(), compress.backend(), genostage.__file__)")
    machine, path, backend, where = _run([python, "-c", probe], cwd=tmp_path, env=env).stdout.split()
    assert (machine, path, backend) == ("aarch64", "pmull", "isal") and Path(where).is_relative_to(site)

    data = os.urandom(1 << 20)
    (tmp_path / "blob.bin").write_bytes(data)
    out = _run([python, "-m", "genostage", "checksum", "-a", "md5", "blob.bin"], cwd=tmp_path, env=env).stdout
    assert out.strip() == f"{hashlib.md5(data).hexdigest()}  blob.bin"

    _run_kernel_tests([python], _copy_tests(tmp_path / "kernel-tests"), env)


# ---------------------------------------------------------------- the CI configuration

def test_cibuildwheel_builds_the_same_set() -> None:
    done = _run([sys.executable, "-m", "cibuildwheel", "--print-build-identifiers", "--platform", "linux", REPO],
                env=_env(Path(sys.executable).parent))
    expected = {f"cp3{m}-manylinux_{arch}" for m in range(9, 14) for arch in ("x86_64", "aarch64")}
    assert set(done.stdout.split()) == expected
    assert TEST_SOURCES == ["tests", "pyproject.toml"]
    assert set(KERNEL_TESTS) == {"tests/test_checksum.py", "tests/test_bgzf.py", "tests/test_fastq_kernel.py",
                                 "tests/test_compress.py"}
