"""``genostage cp`` as a user runs it: a prefix both ways, unsafe keys, missing sources, and
copies that start while the listing is still being read."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from genostage.location import parse
from genostage.store import Stores
from genostage.transfer import Transfer, expand

from .helpers import genostage, get, keys, put
from .test_run import _start, _wait_for
from .test_transfer import small_config


def test_cp_prefix_down_and_up(s3, s3_client, bucket, tmp_path):
    for i in range(25):
        put(s3_client, bucket, f"cp/d{i % 2}/f{i:03d}.txt", b"%d" % i * 100)
    r = genostage(["cp", "--no-progress", f"s3://{bucket}/cp/", str(tmp_path / "out") + "/"])
    assert r.returncode == 0, r.stderr
    assert "copied 25 object(s)" in r.stderr
    assert (tmp_path / "out" / "d1" / "f007.txt").read_bytes() == b"7" * 100
    r = genostage(["cp", "--no-progress", str(tmp_path / "out") + "/", f"s3://{bucket}/back/"])
    assert r.returncode == 0, r.stderr
    assert len(keys(s3_client, bucket, "back/")) == 25
    assert get(s3_client, bucket, "back/d0/f010.txt") == b"10" * 100


def test_cp_refuses_a_key_outside_the_destination(s3, s3_client, bucket, tmp_path):
    put(s3_client, bucket, "up/../../evil.txt", b"evil")
    put(s3_client, bucket, "up/ok.txt", b"ok")
    if "up/../../evil.txt" not in keys(s3_client, bucket, "up/"):
        pytest.skip("this server normalised the key")
    r = genostage(["cp", "--no-progress", f"s3://{bucket}/up/", str(tmp_path / "a" / "b") + "/"])
    assert r.returncode == 8, r.stderr
    assert "../../evil.txt" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "evil.txt").exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # the refused key came first: nothing copied


def test_cp_missing_sources(s3, bucket, tmp_path):
    r = genostage(["cp", f"s3://{bucket}/nothing/here/", str(tmp_path) + "/"])
    assert r.returncode == 3 and "no objects under this prefix" in r.stderr
    r = genostage(["cp", f"s3://{bucket}-missing/x/", str(tmp_path) + "/"])
    assert r.returncode == 3 and "does not exist" in r.stderr
    r = genostage(["cp", f"s3://{bucket}/nope.bam", str(tmp_path) + "/"])
    assert r.returncode == 3 and "nope.bam" in r.stderr


def test_copies_start_while_the_listing_is_read(s3, s3_client, bucket, tmp_path):
    """A lazy listing: the first object is copied before the second is even listed."""
    for i in range(3):
        put(s3_client, bucket, f"lazy/{i}.txt", b"x%d" % i)
    stores = Stores(small_config(s3), s3_client)
    pairs = expand(stores, parse(f"s3://{bucket}/lazy/"), parse(str(tmp_path / "out") + "/"))
    first_done_before_second_listed = []

    def slow_listing():
        yield pairs[0]
        deadline = time.monotonic() + 30
        while not os.path.exists(pairs[0][1].path) and time.monotonic() < deadline:
            time.sleep(0.01)
        first_done_before_second_listed.append(os.path.exists(pairs[0][1].path))
        yield from pairs[1:]

    results = Transfer(stores, stores.config).copy_all(slow_listing())
    assert first_done_before_second_listed == [True]
    assert [r.destination for r in results] == [str(d) for _, d in pairs]
    assert (tmp_path / "out" / "2.txt").read_bytes() == b"x2"


def test_cli_returns_large_buffers_to_the_system(tmp_path):
    """Part-sized buffers freed on several threads go back to the system (glibc's default keeps
    them in per-thread heaps once its threshold has grown: a 2 GiB upload peaked at 400 MB)."""
    import subprocess
    import sys

    script = tmp_path / "rss.py"
    script.write_text(
        "import sys, threading\n"
        "from genostage.cli import map_large_buffers\n"
        "if sys.argv[1] == 'mapped':\n"
        "    map_large_buffers()\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * 4096 >> 20\n"
        "base = rss()\n"
        "def work():\n"
        "    for _ in range(20):\n"
        "        bufs = [bytes(16 << 20) for _ in range(4)]\n"
        "        del bufs\n"
        "threads = [threading.Thread(target=work) for _ in range(4)]\n"
        "for t in threads: t.start()\n"
        "for t in threads: t.join()\n"
        "print(rss() - base)\n")
    kept = {mode: int(subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True,
                                     check=True).stdout) for mode in ("default", "mapped")}
    assert kept["mapped"] <= 4, kept
    if kept["default"] <= 4:
        pytest.skip(f"this allocator returns freed buffers by itself: {kept}")


@pytest.mark.slow
def test_cp_upload_stopped_by_sigterm_aborts_its_multipart_upload(s3, s3_client, bucket, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(400 << 20)
    proc = _start(["cp", "--part-size", "5MiB", "--concurrency", "2", str(big), f"s3://{bucket}/cp-up/big.bin"])
    assert _wait_for(lambda: s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads"), 60)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=25)
    assert proc.returncode == 143, err
    assert "interrupted by signal 15" in err and "Traceback" not in err
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert keys(s3_client, bucket, "cp-up/") == []


@pytest.mark.slow
def test_cp_download_stopped_by_sigint_leaves_no_partial_file(s3, s3_client, bucket, tmp_path):
    from .faultproxy import FaultProxy

    s3_client.put_object(Bucket=bucket, Key="slow/big.bin", Body=os.urandom(30 << 20))
    out = tmp_path / "out"
    with FaultProxy(s3.endpoint_url, error_every=10**9, cut_every=10**9, delay=0.4) as proxy:
        proc = _start(["cp", "--part-size", "5MiB", "--concurrency", "1", "--endpoint-url", proxy.url,
                       f"s3://{bucket}/slow/", str(out) + "/"])
        assert _wait_for(lambda: out.is_dir() and any(out.iterdir()), 60)  # the temporary file is there
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=25)
    assert proc.returncode == 130, err
    assert "interrupted by signal 2" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


def _big_fastq(path, n: int) -> None:
    rnd = os.urandom(n * 150)
    seq = rnd.translate(bytes(b"ACGT"[i % 4] for i in range(256)))
    qual = rnd.translate(bytes(33 + i % 40 for i in range(256)))
    with open(path, "wb") as fh:
        for i in range(n):
            fh.write(b"@r%d\n%s\n+\n%s\n" % (i, seq[i * 150:(i + 1) * 150], qual[i * 150:(i + 1) * 150]))


@pytest.mark.slow
def test_any_command_stopped_by_sigterm_cleans_up_and_exits_143(tmp_path):
    """Commands without a handler of their own (here split) get SIGTERM as an exception, so
    their cleanup runs: no temporary file is left, and the status is 128+15."""
    src = tmp_path / "big.fq"
    _big_fastq(src, 300_000)
    out = tmp_path / "out"
    proc = _start(["split", "fastq", str(src), "--out-dir", str(out), "--parts", "4", "--compress", "gzip",
                   "--level", "9", "--threads", "1", "--no-progress"])
    assert _wait_for(lambda: out.is_dir() and any(out.iterdir()), 60)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=25)
    assert proc.returncode == 143, err
    assert "interrupted by signal 15" in err and "Traceback" not in err
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


# -- first-hour mistakes: one line, exit status 2, nothing copied ----------------------------------
def _one_line(r) -> str:  # type: ignore[no-untyped-def]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.mark.parametrize("src,meant", [
    ("s3:/bucket/key.bam", "s3://bucket/key.bam"),
    ("s3//bucket/key.bam", "s3://bucket/key.bam"),
    ("S3://bucket/key.bam", "s3://bucket/key.bam"),
])
def test_cp_refuses_a_mistyped_s3_uri(tmp_path, src, meant):
    """Before: s3:/ and s3// were taken as local paths ('does not exist', exit 3) and S3:// was
    accepted where aws and s5cmd would read a local directory."""
    r = genostage(["cp", src, str(tmp_path) + "/"])
    assert r.returncode == 2 and meant in _one_line(r)
    assert list(tmp_path.iterdir()) == []


def test_cp_refuses_an_endpoint_without_its_scheme_before_any_request(s3, bucket, tmp_path):
    """Before: taken as https:// and, against this plain-HTTP server, a TLS error (exit 5)."""
    hostport = s3.endpoint_url.split("://", 1)[1].rstrip("/")
    r = genostage(["cp", "--endpoint-url", hostport, f"s3://{bucket}/k", str(tmp_path) + "/"])
    assert r.returncode == 2
    assert f"write http://{hostport}" in _one_line(r)
    r = genostage(["cp", f"s3://{bucket}/k", str(tmp_path) + "/"], env={"AWS_ENDPOINT_URL": hostport})
    assert r.returncode == 2 and "AWS_ENDPOINT_URL" in _one_line(r)


@pytest.mark.parametrize("flag", ["--recursive", "-r"])
def test_cp_recursive_says_that_a_trailing_slash_copies_a_prefix(tmp_path, flag):
    r = genostage(["cp", flag, "s3://bucket/run1", str(tmp_path / "out")])
    assert r.returncode == 2
    line = _one_line(r)
    assert "no --recursive" in line and f"genostage cp s3://bucket/run1/ {tmp_path / 'out'}/" in line


@pytest.mark.parametrize("args,reason", [
    (["--concurrency", "0"], "--concurrency must be 1..256, got 0"),
    (["--concurrency", "-4"], "--concurrency must be 1..256, got -4"),
    (["--concurrency", "ten"], "--concurrency takes a whole number"),
    (["--part-size", "-1"], "--part-size: a size cannot be negative"),
    (["--part-size", "1KB"], "--part-size must be 5MiB..5GiB (S3's limits for a part), got 1KB (1000 bytes)"),
    (["--part-size", "8 parsecs"], "--part-size: not a size"),
])
@pytest.mark.parametrize("command", [["cp", "SRC", "DST/"], ["split", "fastq", "SRC", "-O", "DST", "--parts", "2"],
                                     ["run"]])
def test_bad_numbers_and_sizes_are_one_line_for_every_command(tmp_path, args, reason, command):
    src = tmp_path / "in.fq"
    src.write_bytes(b"@r\nACGT\n+\nIIII\n")
    argv = [str(src) if a == "SRC" else str(tmp_path / "out") + ("/" if a.endswith("/") else "") if a.startswith("DST")
            else a for a in command] + args + (["--", "true"] if command == ["run"] else [])
    r = genostage(argv)
    assert r.returncode == 2 and reason in _one_line(r)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("parts", ["-3", "0"])
def test_split_refuses_a_negative_or_zero_count_without_a_traceback(tmp_path, parts):
    """Before: --parts -3 ended in a traceback (a UsageError raised inside argparse), exit 1."""
    src = tmp_path / "in.fq"
    src.write_bytes(b"@r\nACGT\n+\nIIII\n")
    r = genostage(["split", "fastq", str(src), "-O", str(tmp_path / "out"), f"--parts={parts}"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "--parts" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_argparse_types_for_counts_and_sizes_say_what_is_wrong(capsys):
    """For the commands' own count and size options (split's --parts, split bam's --bytes)."""
    import argparse

    from genostage.cli.common import count_type, size_type

    parser = argparse.ArgumentParser(prog="genostage split bam")
    parser.add_argument("--parts", type=count_type)
    parser.add_argument("--bytes", type=size_type)
    args = parser.parse_args(["--parts", "4k", "--bytes", "256M"])
    assert (args.parts, args.bytes) == (4096, 256 << 20)
    for argv, message in ((["--parts", "-3"], "argument --parts: a count cannot be negative: '-3'"),
                          (["--parts", "0"], "argument --parts: must be at least 1, got 0"),
                          (["--bytes", "-1"], "argument --bytes: a size cannot be negative: '-1'"),
                          (["--bytes", "lots"], "argument --bytes: not a size: 'lots'")):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err


def _no_credentials_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION="us-east-1")
    return env


def test_no_credentials_is_named_as_such(s3, s3_client, bucket, tmp_path):
    """Without credentials nothing goes out unsigned (to come back 'access denied'): one line
    saying what is missing, exit 4; --no-sign-request is the way to public data."""
    s3_client.put_object(Bucket=bucket, Key="pub.txt", Body=b"public", ACL="public-read")
    env = _no_credentials_env(tmp_path)
    r = subprocess.run([sys.executable, "-m", "genostage", "cp", "--endpoint-url", s3.endpoint_url,
                        f"s3://{bucket}/pub.txt", str(tmp_path / "x")], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 4, r.stderr
    assert "no AWS credentials found" in r.stderr and "--no-sign-request" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "genostage", "cp", "--endpoint-url", s3.endpoint_url, "--no-sign-request",
                        f"s3://{bucket}/pub.txt", str(tmp_path / "x")], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr  # moto serves unsigned requests, as a public bucket would
    assert (tmp_path / "x").read_bytes() == b"public"


def test_dns_failure_in_words(tmp_path):
    r = genostage(["cp", "--endpoint-url", "http://no-such-host.invalid:9000", "s3://bucket-x/k.txt",
                   str(tmp_path / "k")], env={"AWS_MAX_ATTEMPTS": "1"})
    assert r.returncode == 5, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "cannot resolve host 'no-such-host.invalid'" in last and "Unknown error" not in r.stderr
