"""The Python API: Job, stage_in, stage_out, copy."""
from __future__ import annotations

import json
import os

import pytest

import genostage
from genostage.job import scratch as scratch_mod
from genostage import fsutil
from genostage.errors import InsufficientSpace, ToolFailed

from .helpers import get, keys, put


def test_job_api_like_the_readme(s3, s3_client, bucket, tmp_path):
    put(s3_client, bucket, "sample.txt", b"a\nb\nc\n")
    put(s3_client, bucket, "refs/hg38/hg38.fa", b">chr1\nACGT\n")
    with genostage.Job(scratch_root=str(tmp_path)) as job:
        data = job.input(f"s3://{bucket}/sample.txt")
        ref = job.input(f"s3://{bucket}/refs/hg38/")
        out = job.output(f"s3://{bucket}/results/sample.count.txt")
        assert data.read_bytes() == b"a\nb\nc\n" and (ref / "hg38.fa").exists()
        job.run(["wc", "-l", data], stdout=out)
        scratch = job.path
    assert get(s3_client, bucket, "results/sample.count.txt").split()[0] == b"3"
    manifest = json.loads(get(s3_client, bucket, "results/sample.count.txt.manifest.json"))
    assert manifest["status"] == "succeeded"
    assert not scratch.exists()


def test_job_tool_failure_raises_and_cleans(s3, s3_client, bucket, tmp_path):
    with pytest.raises(ToolFailed) as err:
        with genostage.Job(scratch_root=str(tmp_path)) as job:
            job.output(f"s3://{bucket}/r/out.txt")
            job.run(["sh", "-c", "exit 3"])
    assert err.value.returncode == 3
    assert json.loads(get(s3_client, bucket, "r/out.txt.manifest.json"))["exit_status"] == 3
    assert [p for p in tmp_path.iterdir() if p.name.startswith("genostage-")] == []


def test_free_space_preflight_before_any_byte_moves(s3, s3_client, bucket, tmp_path, monkeypatch, stores):
    put(s3_client, bucket, "big.bin", b"x" * 5000)
    monkeypatch.setattr(fsutil, "free_bytes", lambda path: 1000)
    with pytest.raises(InsufficientSpace) as err:
        with genostage.Job(scratch_root=str(tmp_path), stores=stores) as job:
            job.input(f"s3://{bucket}/big.bin")
    assert str(err.value) == f"needs 4.9 KiB, 1000 B free on {tmp_path}"
    assert stores.s3.counters.snapshot()["bytes_read"] == 0


def test_insufficient_space_message_format():
    err = fsutil.no_space(int(120 * 1024**3), int(80.3 * 1024**3), "/scratch")
    assert str(err) == "needs 120.0 GiB, 80.3 GiB free on /scratch"


def test_stage_in_stage_out_without_job(s3, s3_client, bucket, tmp_path):
    put(s3_client, bucket, "d/a.txt", b"A")
    put(s3_client, bucket, "d/sub/b.txt", b"B")
    path = genostage.stage_in(f"s3://{bucket}/d/", tmp_path / "in")
    assert (path / "sub" / "b.txt").read_bytes() == b"B"
    genostage.stage_out(path, f"s3://{bucket}/copy/")
    assert keys(s3_client, bucket, "copy/") == ["copy/a.txt", "copy/sub/b.txt"]
    genostage.copy(f"s3://{bucket}/copy/a.txt", str(tmp_path / "a2.txt"))
    assert (tmp_path / "a2.txt").read_bytes() == b"A"


def test_same_file_names_from_two_inputs_do_not_collide(s3, s3_client, bucket, tmp_path):
    put(s3_client, bucket, "x/reads.fq", b"1")
    put(s3_client, bucket, "y/reads.fq", b"2")
    put(s3_client, bucket, "x/reads.fq.fai", b"i")
    with genostage.Job(scratch_root=str(tmp_path)) as job:
        paths = job.stage_inputs({"a": f"s3://{bucket}/x/reads.fq", "b": f"s3://{bucket}/y/reads.fq",
                                  "ai": f"s3://{bucket}/x/reads.fq.fai"})
        assert paths["a"].read_bytes() == b"1" and paths["b"].read_bytes() == b"2"
        assert paths["ai"].parent == paths["a"].parent  # the index sits beside its data


def test_scratch_dir_name_and_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_BATCH_JOB_ID", "abc-123:7")
    with scratch_mod.Scratch(str(tmp_path)) as s:
        assert s.path.name.startswith("genostage-abc-123_7-")
        assert oct(os.stat(s.path).st_mode & 0o777) == "0o700"
    monkeypatch.delenv("AWS_BATCH_JOB_ID")
    with scratch_mod.Scratch(str(tmp_path)) as s:
        assert f"-{os.getpid()}-" in s.path.name


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("GENOSTAGE_SCRATCH", str(tmp_path))
    assert scratch_mod.default_root() == str(tmp_path)
    monkeypatch.delenv("GENOSTAGE_SCRATCH")
    assert scratch_mod.default_root() in ("/scratch", __import__("tempfile").gettempdir())


def test_sweeping_never_removes_a_starting_or_live_job(tmp_path):
    import threading

    live, stop = [], threading.Event()

    def sweeper():
        s = scratch_mod.Scratch(str(tmp_path))
        while not stop.is_set():
            s.sweep()

    t = threading.Thread(target=sweeper)
    t.start()
    try:
        for _ in range(60):
            s = scratch_mod.Scratch(str(tmp_path))
            s.create()
            live.append(s)
    finally:
        stop.set()
        t.join()
    assert all(s.path.exists() for s in live)
    for s in live:
        s.close(failed=False)
    assert [p for p in tmp_path.iterdir()] == []


def test_sweep_leaves_folders_it_did_not_make(tmp_path):
    """A node cache under the scratch root (genostage-cache, say) is not a dead job's directory."""
    cache = tmp_path / "genostage-cache"
    (cache / "entries").mkdir(parents=True)
    old = 1_000_000
    os.utime(cache, (old, old))
    with scratch_mod.Scratch(str(tmp_path)) as s:
        s.sweep()
    assert (cache / "entries").is_dir()


def test_tool_failed_is_one_line_whatever_the_script():
    err = ToolFailed("set -e\nstep one\nstep two", 2, ["first", "last words"])
    assert "\n" not in str(err) and str(err).endswith("(its last words: last words)")
