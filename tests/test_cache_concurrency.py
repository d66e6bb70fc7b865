"""Concurrent ``genostage run`` processes sharing one node cache, counted on the S3 server's side."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genostage.job.cache import Cache, _flock_holders

from .cache_helpers import counting, counting_server, manifest_of  # noqa: F401  (fixtures)
from .helpers import genostage as run_cli

MiB = 1 << 20


def start(args, stderr=subprocess.PIPE, stdout=subprocess.PIPE):  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-m", "genostage", *args], stdout=stdout, stderr=stderr,
                            text=True, env=dict(os.environ))


def lock_holders(cache_dir: Path) -> set:
    """Pids holding a flock on any entry's use.lock (jobs using or waiting for an entry)."""
    inodes = set()
    for lock in cache_dir.glob("entries/*/use.lock"):
        try:
            inodes.add(lock.stat().st_ino)
        except OSError:
            pass
    return {pid for inode, pids in _flock_holders().items() if inode in inodes for pid in pids}


@pytest.mark.slow
def test_eight_concurrent_jobs_fetch_a_shared_prefix_once(counting, tmp_path):
    _, app, client, bucket = counting
    files = {"genome.fa": os.urandom(64 * MiB), "genome.fa.bwt": os.urandom(24 * MiB),
             "genome.fa.sa": os.urandom(8 * MiB), "genome.fa.fai": b"chr1\t100\t6\t60\t61\n"}
    for name, data in files.items():
        client.put_object(Bucket=bucket, Key=f"refs/hg/{name}", Body=data)
    expected = "".join(f"{hashlib.md5(files[n]).hexdigest()}  {n}\n" for n in sorted(files))
    total = sum(len(d) for d in files.values())
    app.delay = 2.0  # slow the download down until every job has reached the cache (holds its use lock)
    cache_dir = tmp_path / "cache"
    # All eight jobs share one scratch root, as on a real node (each sweeps the others' dead dirs).
    procs = [start(["run", "--no-progress", "--scratch", str(tmp_path / "scratch"), "--cache", str(cache_dir),
                    "--part-size", "8MiB", "-r", f"ref=s3://{bucket}/refs/hg/",
                    "-o", f"sums=s3://{bucket}/out/{i}/sums.txt", "--stdout", "sums", "--shell", "--",
                    "cd {ref} && md5sum *"]) for i in range(8)]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not {p.pid for p in procs} <= lock_holders(cache_dir):
        time.sleep(0.05)
    app.delay = 0.0
    logs = [p.communicate(timeout=240)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, "\n".join(logs)
    assert app.bytes_under(f"/{bucket}/refs/") == total  # every byte fetched exactly once, for all 8 jobs
    for i in range(8):
        assert client.get_object(Bucket=bucket, Key=f"out/{i}/sums.txt")["Body"].read().decode() == expected
    manifests = [manifest_of(client, bucket, f"out/{i}/sums.txt.manifest.json") for i in range(8)]
    per_file = {}
    for m in manifests:
        for f in m["inputs"][0]["files"]:
            per_file.setdefault(f["source"].rsplit("/", 1)[1], []).append(f["cache"])
    for name, hows in per_file.items():
        assert sorted(hows).count("downloaded") == 1, (name, hows)  # exactly one job downloaded each object
    assert sum(m["cache"][0]["waited"] for m in manifests) >= 1
    assert any("another job is downloading it" in log for log in logs)
    assert sorted(e.uri.rsplit("/", 1)[1] for e in Cache(cache_dir).entries()) == sorted(files)
    assert run_cli(["cache", "verify", str(cache_dir)]).returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("checksum", ["crc64nvme", "md5"])
def test_a_waiting_job_takes_over_when_the_downloader_is_killed(counting, tmp_path, checksum):
    """The new downloader resumes from the parts the dead one finished (CRC-verified or MD5-ETag-verified)."""
    _, app, client, bucket = counting
    size, part = 40 * MiB, 5 * MiB
    body = os.urandom(size)
    extra = {"ChecksumAlgorithm": "CRC64NVME"} if checksum == "crc64nvme" else {}
    client.put_object(Bucket=bucket, Key="refs/db.bin", Body=body, **extra)
    app.delay, app.delay_from = 0.2, size // 2  # the first half arrives at once, the second slowly
    cache_dir = tmp_path / "cache"
    args = ["run", "--no-progress", "--scratch", str(tmp_path / "scratch"), "--cache", str(cache_dir),
            "--part-size", "5MiB", "--concurrency", "2", "-r", f"db=s3://{bucket}/refs/db.bin", "--shell", "--",
            "md5sum {db}"]
    first = start(args, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    journals: list = []
    while time.monotonic() < deadline:  # wait until the first job has parts on disk
        journals = list(cache_dir.glob("entries/*/partial/*.journal"))
        if journals and len(journals[0].read_text().splitlines()) >= 1:
            break
        time.sleep(0.05)
    assert journals, "the first job never started downloading"
    app.delay = 5.0  # hold the first job mid-download (whatever the machine's load) until the second waits
    log_path = tmp_path / "second.log"
    with open(log_path, "w") as log:
        second = start(args, stderr=log, stdout=subprocess.DEVNULL)
        while time.monotonic() < deadline + 60 and "another job is downloading it" not in log_path.read_text():
            assert second.poll() is None, log_path.read_text()
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)  # mid-download, while the second job waits for it
        app.delay = 0.0
        first.wait(30)
        second.wait(120)
    text = log_path.read_text()
    assert first.returncode == -signal.SIGKILL
    assert second.returncode == 0, text
    assert f"[stdout] {hashlib.md5(body).hexdigest()}" in text
    served = app.bytes_under(f"/{bucket}/refs/")
    assert "resuming" in text  # it took over from the parts already on disk
    assert size <= served < size + 2 * part, served  # only what was in flight when killed was fetched twice
    (entry,) = Cache(cache_dir).entries()
    assert entry.complete and not (Path(entry.path) / "partial").exists()
    assert (Path(entry.path) / "data").read_bytes() == body
