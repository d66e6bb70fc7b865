"""isal is a dependency, but genostage must still work where it cannot be imported (a platform
without its wheel, a broken install): deflate then goes through zlib-ng, else zlib.

Each case runs genostage in a child process whose sitecustomize makes the accelerators
unimportable (``sys.modules[name] = None``: ``import isal`` raises ImportError), checks which
backend ``genostage.codec.compress`` chose, and splits a gzip pair with the CLI: every chunk is
valid gzip, the chunks hold the input's records in order, and they decompress to what the
default (isal) run writes, although their compressed bytes differ.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

from .fastq_util import pair

RECORDS = 30_000  # ~6 MB a mate: two chunks of more than one 2 MiB gzip member each


def _blocked_env(tmp_path: Path, blocked: Sequence[str]) -> Dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    lines = ["import sys"] + [f"sys.modules[{name!r}] = None" for name in blocked]
    (site / "sitecustomize.py").write_text("\n".join(lines) + "\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return env


def _python(code: str, env: Dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _split(inputs: Tuple[Path, Path], out: Path, env: Dict[str, str]) -> List[List[Path]]:
    summary = out.parent / f"{out.name}.json"
    done = subprocess.run(
        [sys.executable, "-m", "genostage", "split", "fastq", str(inputs[0]), str(inputs[1]), "--out-dir", str(out),
         "--parts", "2", "--threads", "2", "--summary", str(summary), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    chunks = json.loads(summary.read_text())["chunks"]
    assert len(chunks) == 2
    return [[Path(f) for f in chunk["files"]] for chunk in chunks]


@pytest.fixture(scope="module")
def gzip_pair(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Tuple[bytes, bytes], Tuple[Path, Path]]:
    tmp = tmp_path_factory.mktemp("pair")
    r1, r2 = pair(RECORDS, seed=5, max_len=150)
    a, b = tmp / "S_R1.fastq.gz", tmp / "S_R2.fastq.gz"
    a.write_bytes(gzip.compress(r1, 6))
    b.write_bytes(gzip.compress(r2, 6))
    return (r1, r2), (a, b)


@pytest.fixture(scope="module")
def isal_chunks(gzip_pair, tmp_path_factory: pytest.TempPathFactory) -> List[List[Path]]:  # type: ignore[no-untyped-def]
    env = dict(os.environ)
    assert _python("from genostage.codec import compress; print(compress.backend())", env) == "isal"
    return _split(gzip_pair[1], tmp_path_factory.mktemp("isal") / "out", env)


@pytest.mark.parametrize("blocked, backend", [(("isal", "zlib_ng"), "zlib"), (("isal",), "zlib-ng")],
                         ids=["zlib", "zlib-ng"])
def test_split_without_isal(tmp_path: Path, gzip_pair, isal_chunks, blocked: Tuple[str, ...],  # type: ignore[no-untyped-def]
                            backend: str) -> None:
    if "zlib_ng" not in blocked and importlib.util.find_spec("zlib_ng") is None:
        pytest.skip("zlib-ng is not installed")
    env = _blocked_env(tmp_path, blocked)
    probe = "import importlib.util as u; from genostage.codec import compress; print(compress.backend(), u.find_spec('isal'))"
    assert _python(probe, env).split() == [backend, "None"]

    chunks = _split(gzip_pair[1], tmp_path / "out", env)
    for mate, expected in enumerate(gzip_pair[0]):
        data = [gzip.decompress(chunk[mate].read_bytes()) for chunk in chunks]
        assert all(d.startswith(b"@") for d in data) and b"".join(data) == expected
        reference = [gzip.decompress(chunk[mate].read_bytes()) for chunk in isal_chunks]
        assert data == reference
        # the bytes come from another deflate: proof that the child did not use isal
        assert [c[mate].read_bytes() for c in chunks] != [c[mate].read_bytes() for c in isal_chunks]
