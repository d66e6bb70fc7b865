"""``genostage run`` end to end against real S3 servers, as a container entrypoint runs it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .helpers import genostage, get, keys, put

BOTH = pytest.mark.parametrize("s3", ["moto", "rclone"], indirect=True)


def scratch_dirs(root):
    return sorted(p.name for p in root.iterdir() if p.name.startswith("genostage-"))


@BOTH
def test_run_object_prefix_file_and_dir_outputs(s3, s3_client, bucket, tmp_path):
    put(s3_client, bucket, "sample.txt", b"line1\nline2\n")
    put(s3_client, bucket, "sample.txt.idx", b"index")
    for i in range(5):
        put(s3_client, bucket, f"refs/hg/chr{i}.fa", b">chr%d\nACGT\n" % i)
    root = tmp_path / "scratch"
    r = genostage([
        "run", "--scratch", str(root),
        "-i", f"data=s3://{bucket}/sample.txt", "-i", f"idx=s3://{bucket}/sample.txt.idx",
        "-i", f"ref=s3://{bucket}/refs/hg/",
        "-o", f"count=s3://{bucket}/results/count.txt", "-o", f"dir=s3://{bucket}/results/dir/",
        "--stdout", "count", "--shell", "--",
        "wc -l < {data} && ls $(dirname {data}) > {dir}/listing.txt && cat {ref}/chr*.fa > {dir}/all.fa"])
    assert r.returncode == 0, r.stderr
    assert get(s3_client, bucket, "results/count.txt").strip() == b"2"
    assert get(s3_client, bucket, "results/dir/listing.txt").split() == [b"hg", b"sample.txt", b"sample.txt.idx"]
    assert get(s3_client, bucket, "results/dir/all.fa").count(b">chr") == 5
    manifest = json.loads(get(s3_client, bucket, "results/count.txt.manifest.json"))
    assert manifest["status"] == "succeeded" and manifest["exit_status"] == 0
    names = {i["name"]: i for i in manifest["inputs"]}
    assert names["data"]["size"] == 12 and names["data"]["checksums"]["crc64nvme"]
    assert names["data"]["etag"] and names["ref"]["kind"] == "directory" and len(names["ref"]["files"]) == 5
    assert {o["name"] for o in manifest["outputs"]} == {"count", "dir"}
    assert set(manifest["timings"]) >= {"stage_in", "run", "stage_out", "total"}
    assert manifest["commands"][0]["returncode"] == 0 and manifest["commands"][0]["max_rss_kib"] > 0
    assert scratch_dirs(root) == []


def test_tool_failure_passes_exit_code_writes_manifest_removes_scratch(s3, s3_client, bucket, tmp_path):
    root = tmp_path / "scratch"
    r = genostage(["run", "--scratch", str(root), "-o", f"out=s3://{bucket}/res/out.txt", "--",
                   "bash", "-c", "echo partial > {out}; echo boom >&2; exit 42"])
    assert r.returncode == 42
    assert "[stderr] boom" in r.stderr
    assert keys(s3_client, bucket) == ["res/out.txt.manifest.json"]  # outputs of a failed tool are not published
    manifest = json.loads(get(s3_client, bucket, "res/out.txt.manifest.json"))
    assert manifest["status"] == "tool_failed" and manifest["exit_status"] == 42
    assert scratch_dirs(root) == []


def test_keep_scratch_on_failure(s3, bucket, tmp_path):
    root = tmp_path / "scratch"
    r = genostage(["run", "--scratch", str(root), "--keep-scratch", "on-failure", "--", "false"])
    assert r.returncode == 1
    assert len(scratch_dirs(root)) == 1


@pytest.mark.parametrize("args,code,message", [
    (["-i", "bam=s3://{bucket}/x.bam"], 3, "genostage: input 'bam': s3://{bucket}/x.bam does not exist"),
    (["-i", "bam=s3://no-such-bucket-gs/x.bam"], 3, "bucket 'no-such-bucket-gs' does not exist"),
    (["-i", "bam=s3://a/x.bam"], 2, "invalid bucket name"),
    (["-i", "bam"], 2, "--input expects NAME=URI"),
    (["-i", "bam=gs://bucket/x.bam"], 2, "unsupported scheme"),
    (["--stdout", "nope"], 2, "no output named 'nope'"),
])
def test_errors_are_one_clear_line(s3, bucket, tmp_path, args, code, message):
    args = [a.replace("{bucket}", bucket) for a in args]
    r = genostage(["run", "--scratch", str(tmp_path), *args, "--", "true"])
    assert r.returncode == code, r.stderr
    assert message.replace("{bucket}", bucket) in r.stderr
    assert "Traceback" not in r.stderr
    assert scratch_dirs(tmp_path) == []


def test_unknown_placeholder_and_missing_command(s3, tmp_path):
    r = genostage(["run", "--scratch", str(tmp_path), "--", "cat", "{nope}"])
    assert r.returncode == 2 and "unknown placeholder {nope}" in r.stderr
    r = genostage(["run", "--scratch", str(tmp_path)])
    assert r.returncode == 2 and "no command given" in r.stderr


@pytest.mark.parametrize("key", ["pre/a//b.txt", "pre/../../evil.txt", "pre/./x"])
def test_unsafe_keys_under_prefix_are_refused(s3, s3_client, bucket, tmp_path, key):
    put(s3_client, bucket, "pre/ok.txt", b"ok")
    put(s3_client, bucket, key, b"evil")
    listed = keys(s3_client, bucket, "pre/")
    if key not in listed:
        pytest.skip(f"this server normalised the key {key!r} to {listed}")
    r = genostage(["run", "--scratch", str(tmp_path / "s"), "-i", f"ref=s3://{bucket}/pre/", "--", "true"])
    assert r.returncode == 8, r.stderr
    assert key[len("pre/"):] in r.stderr and "input 'ref'" in r.stderr
    assert not (tmp_path / "evil.txt").exists()


def test_output_symlinks(s3, s3_client, bucket, tmp_path):
    root = tmp_path / "s"
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    r = genostage(["run", "--scratch", str(root), "-o", f"out=s3://{bucket}/o/x.txt", "--",
                   "ln", "-s", str(outside), "{out}"])
    assert r.returncode == 8 and "outside the scratch directory" in r.stderr
    assert keys(s3_client, bucket, "o/x") == ["o/x.txt.manifest.json"]  # the manifest, not the output
    r = genostage(["run", "--scratch", str(root), "-o", f"out=s3://{bucket}/o/d/", "--shell", "--",
                   "echo inside > {out}/real.txt && ln -s real.txt {out}/link.txt"])
    assert r.returncode == 0, r.stderr
    assert get(s3_client, bucket, "o/d/link.txt") == b"inside\n"


def test_missing_output_is_an_error(s3, s3_client, bucket, tmp_path):
    r = genostage(["run", "--scratch", str(tmp_path), "-o", f"out=s3://{bucket}/o/x.txt", "--", "true"])
    assert r.returncode == 3 and "output 'out': the tool did not write" in r.stderr


def _start(args, env=None):
    full = dict(os.environ, GENOSTAGE_PROGRESS_INTERVAL="0.2", **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "genostage", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full, start_new_session=True)


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_sigterm_during_run_stops_tool_and_cleans_up(s3, tmp_path):
    root = tmp_path / "s"
    marker = tmp_path / "started"
    proc = _start(["run", "--scratch", str(root), "--grace", "2", "--shell", "--",
                   f"trap '' TERM; echo $$ > {marker}; sleep 100; sleep 100"])
    assert _wait_for(lambda: marker.exists() and marker.read_text().strip())
    tool_pid = int(marker.read_text())
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=25)
    assert proc.returncode == 143, err
    assert time.monotonic() - t0 < 25
    assert scratch_dirs(root) == []
    assert not os.path.exists(f"/proc/{tool_pid}") or open(f"/proc/{tool_pid}/stat").read().split()[2] == "Z"


@pytest.mark.slow
def test_sigterm_during_upload_aborts_it(s3, s3_client, bucket, tmp_path):
    root = tmp_path / "s"
    proc = _start(["run", "--scratch", str(root), "--part-size", "5MiB", "--concurrency", "2",
                   "-o", f"big=s3://{bucket}/up/big.bin", "--",
                   "dd", "if=/dev/zero", "of={big}", "bs=1M", "count=400", "status=none"])
    lines = []

    def uploading():
        line = proc.stderr.readline()
        lines.append(line)
        return "stage out:" in line or not line
    assert _wait_for(uploading, 60), "".join(lines)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=25)
    assert proc.returncode == 143, "".join(lines) + err
    assert keys(s3_client, bucket, "up/") == ["up/big.bin.manifest.json"]  # the output was not published
    assert json.loads(get(s3_client, bucket, "up/big.bin.manifest.json"))["status"] == "interrupted"
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert scratch_dirs(root) == []


@pytest.mark.slow
def test_sigkilled_job_directory_is_swept_by_next_job(s3, tmp_path):
    root = tmp_path / "s"
    marker = tmp_path / "started"
    proc = _start(["run", "--scratch", str(root), "--shell", "--", f"touch {marker}; sleep 100"])
    assert _wait_for(marker.exists)
    live = scratch_dirs(root)
    assert len(live) == 1
    # a second job on the same root while the first lives: the live directory is untouched
    r = genostage(["run", "--scratch", str(root), "--", "true"])
    assert r.returncode == 0 and scratch_dirs(root) == live
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert scratch_dirs(root) == live  # SIGKILL: nothing cleaned up
    r = genostage(["run", "--scratch", str(root), "--", "true"])
    assert r.returncode == 0 and scratch_dirs(root) == []


@pytest.mark.slow
def test_killed_download_resumes_when_the_same_job_is_retried(s3, s3_client, bucket, tmp_path):
    from .faultproxy import FaultProxy

    data = os.urandom(30 << 20)
    s3_client.put_object(Bucket=bucket, Key="big.bin", Body=data)
    root = tmp_path / "s"
    env = {"AWS_BATCH_JOB_ID": "job-resume-1"}
    args = ["run", "--scratch", str(root), "--part-size", "5MiB", "--concurrency", "1",
            "-i", f"big=s3://{bucket}/big.bin", "-o", f"sum=s3://{bucket}/out/sum.txt", "--stdout", "sum",
            "--", "md5sum", "{big}"]
    with FaultProxy(s3.endpoint_url, error_every=10**9, cut_every=10**9, delay=0.4) as proxy:
        proc = _start(["--quiet", *args, "--endpoint-url", proxy.url], env=env)

        def two_parts_done():
            for journal in root.glob("genostage-*/.partial/*.journal"):
                with open(journal) as fh:
                    if len(fh.readlines()) >= 2:
                        return True
            return False
        assert _wait_for(two_parts_done, 60)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    r = genostage(args, env=env)
    assert r.returncode == 0, r.stderr
    assert "resuming, " in r.stderr
    manifest = json.loads(get(s3_client, bucket, "out/sum.txt.manifest.json"))
    assert manifest["inputs"][0]["resumed_parts"] >= 2 and manifest["inputs"][0]["verified"] == "md5"
    assert get(s3_client, bucket, "out/sum.txt").split()[0].decode() == __import__("hashlib").md5(data).hexdigest()
    assert scratch_dirs(root) == []


@pytest.mark.slow
@BOTH
def test_thousand_small_objects_in_and_out(s3, s3_client, bucket, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: put(s3_client, bucket, f"many/{i // 100:02d}/obj{i:04d}.txt", b"%d\n" % i), range(1000)))
    r = genostage(["run", "--scratch", str(tmp_path / "s"), "-i", f"many=s3://{bucket}/many/",
                   "-o", f"copy=s3://{bucket}/copy/", "--shell", "--",
                   "cp -r {many}/. {copy}/ && find {many} -type f | wc -l > {copy}/count.txt"], timeout=300)
    assert r.returncode == 0, r.stderr
    assert get(s3_client, bucket, "copy/count.txt").strip() == b"1000"
    assert len(keys(s3_client, bucket, "copy/")) == 1001  # 1000 + count.txt; the manifest goes beside the prefix
    assert json.loads(get(s3_client, bucket, "copy.manifest.json"))["status"] == "succeeded"
    assert get(s3_client, bucket, "copy/07/obj0712.txt") == b"712\n"


def test_sse_and_requester_pays_are_sent(s3, s3_client, bucket, tmp_path):
    r = genostage(["run", "--scratch", str(tmp_path), "--sse", "AES256", "--requester-pays",
                   "-o", f"out=s3://{bucket}/enc/out.txt", "--shell", "--", "echo hi > {out}"])
    assert r.returncode == 0, r.stderr
    head = s3_client.head_object(Bucket=bucket, Key="enc/out.txt")
    assert head["ServerSideEncryption"] == "AES256"
    r = genostage(["run", "--scratch", str(tmp_path), "--sse-kms-key-id", "k", "--", "true"])
    assert r.returncode == 2 and "--sse-kms-key-id needs --sse aws:kms" in r.stderr


def test_plan_chunk_as_a_staged_input(s3, s3_client, bucket, tmp_path):
    pysam = pytest.importorskip("pysam")
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 100000}]}
    src = tmp_path / "sample.bam"
    with pysam.AlignmentFile(str(src), "wb", header=header) as out:
        for i in range(3000):
            seg = pysam.AlignedSegment(out.header)
            seg.query_name = f"r{i}"
            seg.reference_id, seg.reference_start, seg.mapping_quality = 0, i * 30, 60
            seg.cigarstring = "50M"
            seg.query_sequence = "ACGT" * 12 + "AC"
            seg.query_qualities = pysam.qualitystring_to_array("I" * 50)
            out.write(seg)
    s3_client.upload_file(str(src), bucket, "sample.bam")
    r = genostage(["plan", "bam", f"s3://{bucket}/sample.bam", "--parts", "3", "-o", f"s3://{bucket}/sample.plan.json"])
    assert r.returncode == 0, r.stderr
    counts = []
    for i in range(3):
        r = genostage(["run", "--scratch", str(tmp_path / "s"), "-i", f"bam=s3://{bucket}/sample.plan.json#{i}",
                       "-o", f"n=s3://{bucket}/counts/{i}.txt", "--stdout", "n", "--", "samtools", "view", "-c", "{bam}"])
        assert r.returncode == 0, r.stderr
        counts.append(int(get(s3_client, bucket, f"counts/{i}.txt")))
        manifest = json.loads(get(s3_client, bucket, f"counts/{i}.txt.manifest.json"))
        assert manifest["inputs"][0]["kind"] == "chunk" and manifest["inputs"][0]["path"].endswith(f"sample.part-{i:04d}.bam")
    assert sum(counts) == 3000 and all(c > 0 for c in counts)
    r = genostage(["run", "--scratch", str(tmp_path / "s"), "-i", f"bam=s3://{bucket}/sample.plan.json#7", "--", "true"])
    assert r.returncode == 2 and "out of range" in r.stderr


def test_paired_fastq_plan_chunk_as_a_staged_input(s3, s3_client, bucket, tmp_path):
    r1, r2 = [], []
    for i in range(3000):
        r1.append(f"@read{i}/1\nACGTACGTAC\n+\nIIIIIIIIII\n")
        r2.append(f"@read{i}/2\nTTTTGGGGCC\n+\nIIIIIIIIII\n")
    put(s3_client, bucket, "s_R1.fastq", "".join(r1).encode())
    put(s3_client, bucket, "s_R2.fastq", "".join(r2).encode())
    r = genostage(["plan", "fastq", f"s3://{bucket}/s_R1.fastq", f"s3://{bucket}/s_R2.fastq", "--parts", "3",
                   "-o", f"s3://{bucket}/s.plan.json"])
    assert r.returncode == 0, r.stderr
    total = 0
    for i in range(3):
        r = genostage(["run", "--scratch", str(tmp_path / "s"), "-i", f"reads=s3://{bucket}/s.plan.json#{i}",
                       "-o", f"n=s3://{bucket}/n/{i}.txt", "--stdout", "n", "--shell", "--",
                       f"ls {{reads}} && cat {{reads}}/s.part-000{i}.R1.fastq | wc -l && "
                       f"cat {{reads}}/s.part-000{i}.R2.fastq | wc -l"])
        assert r.returncode == 0, r.stderr
        listing_r1, listing_r2, n1, n2 = get(s3_client, bucket, f"n/{i}.txt").decode().split()
        assert (listing_r1, listing_r2) == (f"s.part-000{i}.R1.fastq", f"s.part-000{i}.R2.fastq")
        assert int(n1) == int(n2) > 0
        total += int(n1) // 4
    assert total == 3000
    out1, out2 = tmp_path / "c1.fq", tmp_path / "c2.fq"
    r = genostage(["chunk", f"s3://{bucket}/s.plan.json", "--index", "0", "-o", str(out1), "-2", str(out2)])
    assert r.returncode == 0, r.stderr
    assert out1.read_text().count("\n") == out2.read_text().count("\n") > 0


def test_outputs_are_published_all_or_none(s3, s3_client, bucket, tmp_path):
    """Output b cannot be published (its bucket does not exist): output a, uploaded in the
    same batch, is removed again, and the manifest says nothing is published."""
    root = tmp_path / "s"
    r = genostage(["run", "--scratch", str(root), "-o", f"a=s3://{bucket}/x/a.txt",
                   "-o", "b=s3://no-such-bucket-genostage/b.txt", "-o", f"d=s3://{bucket}/x/d/", "--shell", "--",
                   "echo A > {a}; echo B > {b}; for i in $(seq 20); do echo $i > {d}/$i.txt; done"])
    assert r.returncode == 3, r.stderr
    assert "no-such-bucket-genostage" in r.stderr.splitlines()[-1]
    assert keys(s3_client, bucket) == ["x/a.txt.manifest.json"]
    manifest = json.loads(get(s3_client, bucket, "x/a.txt.manifest.json"))
    assert manifest["status"] == "failed" and manifest["exit_status"] == 3
    assert not any(o.get("published") for o in manifest["outputs"])
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert scratch_dirs(root) == []


def test_a_job_that_fails_to_stage_still_leaves_its_manifest(s3, s3_client, bucket, tmp_path):
    r = genostage(["run", "--scratch", str(tmp_path / "s"), "-i", f"x=s3://{bucket}/missing.bam",
                   "-o", f"out=s3://{bucket}/res/out.txt", "--", "true"])
    assert r.returncode == 3
    manifest = json.loads(get(s3_client, bucket, "res/out.txt.manifest.json"))
    assert manifest["status"] == "failed" and "missing.bam" in manifest["error"]


def test_index_placeholders_in_output_uris(s3, s3_client, bucket, tmp_path):
    r = genostage(["run", "--scratch", str(tmp_path / "s"), "--index", "7",
                   "-o", f"out=s3://{bucket}/p/part-{{index:04}}.txt", "-o", f"raw=s3://{bucket}/p/{{index}}.raw",
                   "--shell", "--", "echo x > {out}; echo y > {raw}"])
    assert r.returncode == 0, r.stderr
    assert keys(s3_client, bucket, "p/") == ["p/7.raw", "p/part-0007.txt", "p/part-0007.txt.7.manifest.json"]
    r = genostage(["run", "--scratch", str(tmp_path / "s"), "-o", f"out=s3://{bucket}/q/{{index}}.txt", "--", "true"],
                  env={"AWS_BATCH_JOB_ARRAY_INDEX": ""})
    assert r.returncode == 2 and "has no array index" in r.stderr


def test_shell_paths_never_run_code(s3, s3_client, bucket, tmp_path):
    """An object key holding $(...) and backticks, used inside double quotes in --shell."""
    key = "in/$(touch PWNED)`touch PWNED2`.txt"
    put(s3_client, bucket, key, b"data\n")
    r = genostage(["run", "--scratch", str(tmp_path / "s"), "-i", f"in=s3://{bucket}/{key}",
                   "-o", f"out=s3://{bucket}/o.txt", "--shell", "--", 'cat "{in}" > "{out}"'], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert get(s3_client, bucket, "o.txt") == b"data\n"
    assert not list(tmp_path.rglob("PWNED*"))


def test_a_spot_notice_stops_the_job_for_a_retry(s3, s3_client, bucket, tmp_path):
    """The metadata service announces the instance's reclaim: the running job stops its tool,
    cleans up and exits 10 (what the job definitions retry) within 5 s of the notice."""
    import threading

    from .test_spot import FakeIMDS

    server = FakeIMDS()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    root = tmp_path / "s"
    try:
        proc = _start(["run", "--scratch", str(root), "-o", f"out=s3://{bucket}/spot/out.txt", "--shell", "--",
                       "echo started >&2; sleep 300; echo done > {out}"],
                      env={"AWS_BATCH_JOB_ID": "spot-job-1", "GENOSTAGE_IMDS_ENDPOINT": server.endpoint,
                           "GENOSTAGE_SPOT_INTERVAL": "0.5"})
        lines = []

        def started():
            line = proc.stderr.readline()
            lines.append(line)
            return "started" in line or not line
        assert _wait_for(started, 60), "".join(lines)
        announced = server.announce()
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - announced
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 10, "".join(lines) + err
    assert took < 5, took
    assert "spot interruption notice" in err and "Traceback" not in err
    manifest = json.loads(get(s3_client, bucket, "spot/out.txt.manifest.json"))
    assert manifest["status"] == "preempted" and manifest["exit_status"] == 10
    assert keys(s3_client, bucket, "spot/") == ["spot/out.txt.manifest.json"]
    assert scratch_dirs(root) == []
