"""Streamed inputs and outputs (named pipes in scratch) and cp from stdin / to stdout: the
same bytes as staging, verified, and nothing published when anything goes wrong."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import genostage
from genostage.errors import ChecksumMismatch
from genostage.store import Stores

from .helpers import genostage as run_cli, get, keys
from .test_run import _start, _wait_for, scratch_dirs
from .test_transfer import FlakyStore, small_config

MiB = 1 << 20
BOTH = pytest.mark.parametrize("s3", ["moto", "rclone"], indirect=True)


@BOTH
def test_streamed_input_and_output_equal_staged_ones(s3, s3_client, bucket, tmp_path):
    data = os.urandom(23 * MiB + 17)
    s3_client.put_object(Bucket=bucket, Key="in.bin", Body=data)
    common = ["run", "--scratch", str(tmp_path / "s"), "--part-size", "5MiB", "-i", f"x=s3://{bucket}/in.bin"]
    r = run_cli([*common, "-o", f"y=s3://{bucket}/staged.bin", "--shell", "--", "cat {x} > {y}"])
    assert r.returncode == 0, r.stderr
    r = run_cli([*common, "--stream", "x", "-o", f"y=s3://{bucket}/streamed.bin", "--stream", "y", "--shell", "--",
                 "cat {x} > {y}"])
    assert r.returncode == 0, r.stderr
    assert get(s3_client, bucket, "streamed.bin") == get(s3_client, bucket, "staged.bin") == data
    manifest = json.loads(get(s3_client, bucket, "streamed.bin.manifest.json"))
    (inp,), (out,) = manifest["inputs"], manifest["outputs"]
    assert inp["streamed"] and inp["verified"] in ("crc64nvme", "md5", "etag") and inp["size"] == len(data)
    assert out["streamed"] and out["published"] and out["size"] == len(data)
    assert out["verified"] in ("crc64nvme", "md5 (multipart ETag)")
    assert scratch_dirs(tmp_path / "s") == []


def test_a_bit_flipped_in_a_streamed_input_fails_the_job_and_publishes_nothing(s3, s3_client, bucket, tmp_path):
    data = os.urandom(12 * MiB)
    s3_client.put_object(Bucket=bucket, Key="in.bin", Body=data)
    cfg = small_config(s3)
    stores = Stores(cfg, s3_client)
    stores._s3 = FlakyStore(s3_client, cfg, flips=1)
    with pytest.raises(ChecksumMismatch):
        with genostage.Job(scratch_root=str(tmp_path), stores=stores) as job:
            x = job.stream_input(f"s3://{bucket}/in.bin", "x")["x"]
            y = job.stream_output(f"s3://{bucket}/out.bin", "y")
            job.run(["sh", "-c", f"cat {x} > {y}"])
    assert keys(s3_client, bucket) == ["in.bin", "out.bin.manifest.json"]
    assert json.loads(get(s3_client, bucket, "out.bin.manifest.json"))["exit_status"] == 6
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert scratch_dirs(tmp_path) == []


def test_a_tool_that_stops_reading_early_ends_the_download_quietly(s3, s3_client, bucket, tmp_path):
    s3_client.put_object(Bucket=bucket, Key="in.bin", Body=os.urandom(40 * MiB))
    r = run_cli(["run", "--scratch", str(tmp_path / "s"), "-i", f"x=s3://{bucket}/in.bin", "--stream", "x",
                 "-o", f"y=s3://{bucket}/head.bin", "--shell", "--", "head -c 100 {x} > {y}"], timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(get(s3_client, bucket, "head.bin")) == 100
    inp = json.loads(get(s3_client, bucket, "head.bin.manifest.json"))["inputs"][0]
    assert inp["verified"] is None and "not verified whole" in inp["note"]
    assert scratch_dirs(tmp_path / "s") == []


def test_a_tool_failing_mid_stream_leaves_no_object_and_no_upload(s3, s3_client, bucket, tmp_path):
    r = run_cli(["run", "--scratch", str(tmp_path / "s"), "--part-size", "5MiB", "-o", f"y=s3://{bucket}/y.bin",
                 "--stream", "y", "--shell", "--", "head -c 12000000 /dev/urandom > {y}; exit 4"])
    assert r.returncode == 4
    assert keys(s3_client, bucket) == ["y.bin.manifest.json"]
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_sigterm_while_streaming_cleans_up(s3, s3_client, bucket, tmp_path):
    s3_client.put_object(Bucket=bucket, Key="in.bin", Body=os.urandom(30 * MiB))
    root = tmp_path / "s"
    proc = _start(["run", "--scratch", str(root), "--part-size", "5MiB", "-i", f"x=s3://{bucket}/in.bin",
                   "--stream", "x", "-o", f"y=s3://{bucket}/y.bin", "--stream", "y", "--shell", "--",
                   "echo streaming >&2; (cat {x}; sleep 300) > {y}"])
    lines = []

    def streaming():
        line = proc.stderr.readline()
        lines.append(line)
        return "streaming" in line or not line
    assert _wait_for(streaming, 60), "".join(lines)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, "".join(lines) + err
    assert keys(s3_client, bucket) == ["in.bin", "y.bin.manifest.json"]
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert scratch_dirs(root) == []


def test_a_streamed_output_the_tool_never_writes_is_an_error(s3, s3_client, bucket, tmp_path):
    r = run_cli(["run", "--scratch", str(tmp_path / "s"), "-o", f"y=s3://{bucket}/y.bin", "--stream", "y",
                 "--", "true"], timeout=60)
    assert r.returncode == 3 and "did not write" in r.stderr
    assert keys(s3_client, bucket) == ["y.bin.manifest.json"]


@BOTH
def test_cp_from_stdin_and_to_stdout(s3, s3_client, bucket, tmp_path):
    data = os.urandom(11 * MiB + 3)
    cli = [sys.executable, "-m", "genostage", "--quiet", "cp", "--part-size", "5MiB"]
    r = subprocess.run([*cli, "-", f"s3://{bucket}/piped.bin"], input=data, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert get(s3_client, bucket, "piped.bin") == data
    r = subprocess.run([*cli, f"s3://{bucket}/piped.bin", "-"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data
    r = subprocess.run(" ".join(cli) + f" s3://{bucket}/piped.bin - | head -c 5 | wc -c", shell=True,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "5", r.stderr


def test_cp_from_a_failing_stdin_publishes_nothing(s3, s3_client, bucket):
    """stdin that ends with an error (a producer killed by a signal) is not published: the
    shell pipeline fails (pipefail) and no multipart upload is left open."""
    r = subprocess.run(["bash", "-o", "pipefail", "-c",
                        f"(head -c 9000000 /dev/urandom; kill -9 $$) | {sys.executable} -m genostage --quiet cp "
                        f"--part-size 5MiB - s3://{bucket}/partial.bin"], capture_output=True, timeout=120)
    assert r.returncode != 0
    # the producer died mid-stream: cp saw a short stream and published it, or not; either way
    # no upload stays open
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# -- a streamed FASTQ pair from a chunk plan (one thread cuts both mates) ------------------
def _paired_plan(s3_client, bucket, tmp_path):  # type: ignore[no-untyped-def]
    from .fastq_util import pair
    from .test_fastq_plan import to_bgzf

    r1, r2 = pair(60000, seed=7, min_len=50, max_len=150)  # ~13 MB a mate: a chunk > queue + pipe
    for key, data in (("r1.fq.gz", r1), ("r2.fq.gz", r2)):
        s3_client.put_object(Bucket=bucket, Key=key, Body=to_bgzf(data, 0))
    r = run_cli(["plan", "fastq", f"s3://{bucket}/r1.fq.gz", f"s3://{bucket}/r2.fq.gz", "--parts", "2",
                 "-o", f"s3://{bucket}/plan.json"])
    assert r.returncode == 0, r.stderr
    return f"reads=s3://{bucket}/plan.json#1"


def _chunk_job(bucket, tmp_path, reads, name, stream, script):  # type: ignore[no-untyped-def]
    r = run_cli(["run", "--scratch", str(tmp_path / "s"), "-i", reads, *(["--stream", "reads"] if stream else []),
                 "-o", f"a=s3://{bucket}/{name}.1", "-o", f"b=s3://{bucket}/{name}.2", "--shell", "--", script],
                timeout=120)
    assert r.returncode == 0, r.stderr
    assert scratch_dirs(tmp_path / "s") == []


@BOTH
def test_a_streamed_pair_read_one_mate_after_the_other(s3, s3_client, bucket, tmp_path):
    """``cat R1; cat R2``: the tool opens R2 only after R1's end, while one thread cuts both
    mates in step. R2 waits in a spool file in scratch instead of both waiting for ever."""
    reads = _paired_plan(s3_client, bucket, tmp_path)
    script = "cat {reads.1} > {a}; cat {reads.2} > {b}"
    _chunk_job(bucket, tmp_path, reads, "staged", False, script)
    _chunk_job(bucket, tmp_path, reads, "streamed", True, script)
    for mate in ("1", "2"):
        assert get(s3_client, bucket, f"streamed.{mate}") == get(s3_client, bucket, f"staged.{mate}")
    chunk = json.loads(get(s3_client, bucket, "streamed.1.manifest.json"))["inputs"][0]["chunk"]
    assert chunk["records"] > 20000 and chunk["spooled"] > 0


def test_a_streamed_pair_read_in_step_needs_no_spool(s3, s3_client, bucket, tmp_path):
    """A reader that takes both mates in step (as ``bwa mem`` does) never makes R2 spill."""
    reads = _paired_plan(s3_client, bucket, tmp_path)
    reader = ("import sys\n"
              "f1, f2, o1, o2 = (open(p, m) for p, m in zip(sys.argv[1:], ('rb', 'rb', 'wb', 'wb')))\n"
              "while True:\n"
              "    a, b = f1.read(65536), f2.read(65536)\n"
              "    o1.write(a); o2.write(b)\n"
              "    if not a and not b: break\n")
    (tmp_path / "instep.py").write_text(reader)
    script = f"{sys.executable} {tmp_path / 'instep.py'} {{reads.1}} {{reads.2}} {{a}} {{b}}"
    _chunk_job(bucket, tmp_path, reads, "staged", False, script)
    _chunk_job(bucket, tmp_path, reads, "streamed", True, script)
    for mate in ("1", "2"):
        assert get(s3_client, bucket, f"streamed.{mate}") == get(s3_client, bucket, f"staged.{mate}")
    chunk = json.loads(get(s3_client, bucket, "streamed.1.manifest.json"))["inputs"][0]["chunk"]
    assert chunk["spooled"] == 0


def test_a_staged_output_failing_leaves_the_object_at_a_streamed_outputs_key(s3, s3_client, bucket, tmp_path):
    """The streamed output is completed only after the staged ones are in: one that fails
    leaves what was at the streamed output's key as it was."""
    s3_client.put_object(Bucket=bucket, Key="y.bin", Body=b"old bytes")
    (tmp_path / "not-a-dir").write_text("a file where the staged output's directory should be")
    r = run_cli(["run", "--scratch", str(tmp_path / "s"), "--part-size", "5MiB",
                 "--manifest", f"s3://{bucket}/m.json", "-o", f"y=s3://{bucket}/y.bin", "--stream", "y",
                 "-o", f"z={tmp_path / 'not-a-dir' / 'z.txt'}", "--shell", "--",
                 "head -c 12000000 /dev/urandom > {y}; echo z > {z}"], timeout=60)
    assert r.returncode != 0, r.stderr
    assert get(s3_client, bucket, "y.bin") == b"old bytes"
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert not json.loads(get(s3_client, bucket, "m.json"))["outputs"][1].get("published")
