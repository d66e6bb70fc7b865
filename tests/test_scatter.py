"""genostage scatter end to end: a FASTQ pair fanned out over chunks, aligned, gathered by
merge and proven complete; a BAM scattered by reference into a variant call gathered by
concat; children that fail, are killed, or lose reads; SIGTERM to the scatter; a rerun."""
from __future__ import annotations

import json
import random
import signal
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from genostage.testing.demo import make_reads, make_reference

from .helpers import genostage, get, keys
from .test_run import _start, _wait_for

BOTH = pytest.mark.parametrize("s3", ["moto", "rclone"], indirect=True)
RG = r"-R '@RG\tID:S1\tSM:S1'"
BWA = "bwa mem -t 1 -I 300,10 " + RG + " {ref}/ref.fa {reads.1} {reads.2} 2>/dev/null | samtools sort -o {bam} -"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """A 3-contig reference with its bwa index, 4,000 simulated pairs as plain gzip and BGZF,
    and their unchunked alignment (the answer a scatter must give)."""
    d = tmp_path_factory.mktemp("sample")
    rng = random.Random(11)
    seqs = make_reference(d / "ref.fa", rng)
    make_reads(d / "r1.fq", d / "r2.fq", seqs, rng, pairs=4000)
    subprocess.run(["bwa", "index", str(d / "ref.fa")], check=True, capture_output=True)
    subprocess.run(["samtools", "faidx", str(d / "ref.fa")], check=True)
    for n in ("r1", "r2"):
        subprocess.run(f"gzip -c {d}/{n}.fq > {d}/{n}.fq.gz && bgzip -c {d}/{n}.fq > {d}/{n}.bgz.fq.gz",
                       shell=True, check=True)
    script = BWA.replace("{ref}", str(d)).replace("{reads.1}", str(d / "r1.fq")).replace(
        "{reads.2}", str(d / "r2.fq")).replace("{bam}", str(d / "whole.bam"))
    subprocess.run(script, shell=True, check=True)
    subprocess.run(["samtools", "index", str(d / "whole.bam")], check=True)
    return {"dir": d}


def _records(bam: Path) -> List[str]:
    """A BAM's records as sorted SAM lines (header and @PG left out)."""
    out = subprocess.run(["samtools", "view", str(bam)], check=True, capture_output=True, text=True).stdout
    return sorted(out.splitlines())


def _upload(client, bucket: str, d: Path) -> None:  # type: ignore[no-untyped-def]
    for f in d.iterdir():
        if f.name.startswith("ref.fa"):
            client.upload_file(str(f), bucket, f"refs/bwa/{f.name}")
    for n, key in (("r1.fq.gz", "S1_R1.fq.gz"), ("r2.fq.gz", "S1_R2.fq.gz"),
                   ("r1.bgz.fq.gz", "S1_R1.bgz.fq.gz"), ("r2.bgz.fq.gz", "S1_R2.bgz.fq.gz")):
        client.upload_file(str(d / n), bucket, key)


def _scatter(bucket: str, tmp: Path, reads: str, *extra: str, command: str = BWA, out: str = "aln/S1.bam",
             timeout: float = 600) -> subprocess.CompletedProcess:
    r1, r2 = reads
    return genostage(["scatter", "--scratch", str(tmp / "scratch"), "--no-progress",
                      "-i", f"reads=s3://{bucket}/{r1},s3://{bucket}/{r2}", "--parts", "8",
                      "-r", f"ref=s3://{bucket}/refs/bwa/", "-o", f"bam=s3://{bucket}/{out}", "--gather", "bam=merge",
                      *extra, "--shell", "--", command], timeout=timeout)


@BOTH
def test_fastq_pair_scattered_aligned_merged_equals_the_whole(s3, s3_client, bucket, sample, tmp_path):
    """Plain gzip (split once into chunk objects): 8 chunks, bwa mem | samtools sort each,
    merged: the same records as the unchunked alignment, every read through exactly once."""
    d = sample["dir"]
    _upload(s3_client, bucket, d)
    r = _scatter(bucket, tmp_path, ("S1_R1.fq.gz", "S1_R2.fq.gz"))
    assert r.returncode == 0, r.stderr
    (tmp_path / "S1.bam").write_bytes(get(s3_client, bucket, "aln/S1.bam"))
    assert _records(tmp_path / "S1.bam") == _records(d / "whole.bam")
    header = subprocess.run(["samtools", "view", "-H", str(tmp_path / "S1.bam")], capture_output=True, text=True).stdout
    assert "SO:coordinate" in header and "ID:genostage-gather" in header
    manifest = json.loads(get(s3_client, bucket, "aln/S1.bam.manifest.json"))
    info = manifest["scatter"]
    assert manifest["status"] == "succeeded" and info["summary"] == {"succeeded": 8}
    assert info["conservation"]["checked"] and info["conservation"]["reads_in"] == 8000
    assert info["conservation"]["gathered"]["bam"]["primary"] == 8000
    assert len(info["children"]) == 8 and all(c["records"]["in"]["reads"] > 0 for c in info["children"])
    child = json.loads(get(s3_client, bucket, f"aln/S1.bam.scatter/children/{info['id']}/00003.manifest.json"))
    assert child["status"] == "succeeded" and child["array_index"] == 3


def test_bgzf_pair_is_planned_by_ranged_reads(s3, s3_client, bucket, sample, tmp_path):
    d = sample["dir"]
    _upload(s3_client, bucket, d)
    r = _scatter(bucket, tmp_path, ("S1_R1.bgz.fq.gz", "S1_R2.bgz.fq.gz"), out="bgz/S1.bam")
    assert r.returncode == 0, r.stderr
    assert "plan.json" in json.loads(get(s3_client, bucket, "bgz/S1.bam.scatter/spec.json"))["job"]["inputs"]["reads"]
    assert not [k for k in keys(s3_client, bucket, "bgz/S1.bam.scatter/") if "/chunks/" in k]  # nothing copied
    (tmp_path / "S1.bam").write_bytes(get(s3_client, bucket, "bgz/S1.bam"))
    assert _records(tmp_path / "S1.bam") == _records(d / "whole.bam")


def test_a_child_that_drops_reads_is_caught(s3, s3_client, bucket, sample, tmp_path):
    _upload(s3_client, bucket, sample["dir"])
    lossy = ("bwa mem -t 1 -I 300,10 " + RG + " {ref}/ref.fa {reads.1} {reads.2} 2>/dev/null | "
             "if [ \"$AWS_BATCH_JOB_ARRAY_INDEX\" = 3 ]; then awk '/^@/ || NR % 50'; else cat; fi | "
             "samtools sort -o {bam} -")
    r = _scatter(bucket, tmp_path, ("S1_R1.fq.gz", "S1_R2.fq.gz"), command=lossy, out="lossy/S1.bam")
    assert r.returncode == 11, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "reads not conserved: child 3 wrote" in last and "lost" in last and "--drops-reads" in last
    assert "lossy/S1.bam" not in keys(s3_client, bucket, "lossy/")
    manifest = json.loads(get(s3_client, bucket, "lossy/S1.bam.manifest.json"))
    assert manifest["exit_status"] == 11 and manifest["scatter"]["summary"] == {"succeeded": 8}
    # told that the tool drops reads, the same scatter (rerun: children done are not run again) gathers
    r = _scatter(bucket, tmp_path, ("S1_R1.fq.gz", "S1_R2.fq.gz"), "--drops-reads", command=lossy, out="lossy/S1.bam")
    assert r.returncode == 0, r.stderr
    assert "resuming it" in r.stderr and "8 of 8 children already done" in r.stderr and "child 0 succeeded" not in r.stderr


def test_a_failing_child_fails_the_scatter_unless_allowed(s3, s3_client, bucket, sample, tmp_path):
    _upload(s3_client, bucket, sample["dir"])
    failing = "if [ \"$AWS_BATCH_JOB_ARRAY_INDEX\" = 2 ]; then echo broken >&2; exit 9; fi; " + BWA
    r = _scatter(bucket, tmp_path, ("S1_R1.fq.gz", "S1_R2.fq.gz"), "--jobs", "2", command=failing, out="f/S1.bam")
    assert r.returncode == 9, r.stderr
    assert "child 2 failed with exit status 9" in r.stderr and "broken" in r.stderr
    assert "f/S1.bam" not in keys(s3_client, bucket, "f/")
    r = _scatter(bucket, tmp_path, ("S1_R1.fq.gz", "S1_R2.fq.gz"), "--allow-failed", "1", command=failing,
                 out="g/S1.bam")
    assert r.returncode == 0, r.stderr
    info = json.loads(get(s3_client, bucket, "g/S1.bam.manifest.json"))["scatter"]
    assert info["failed"] == [2] and info["summary"]["tool_failed"] == 1 and info["summary"]["succeeded"] == 7


def test_a_killed_child_is_tried_again(s3, s3_client, bucket, sample, tmp_path):
    """A child's genostage killed outright on its first attempt (as a lost instance would be)."""
    _upload(s3_client, bucket, sample["dir"])
    killing = ("if [ \"$AWS_BATCH_JOB_ARRAY_INDEX\" = 1 ] && [ \"$AWS_BATCH_JOB_ATTEMPT\" = 1 ]; then "
               "kill -9 $PPID; sleep 5; fi; " + BWA)
    r = _scatter(bucket, tmp_path, ("S1_R1.fq.gz", "S1_R2.fq.gz"), command=killing, out="k/S1.bam")
    assert r.returncode == 0, r.stderr
    assert "child 1 failed with exit status 137" in r.stderr and "trying again" in r.stderr
    ident = json.loads(get(s3_client, bucket, "k/S1.bam.manifest.json"))["scatter"]["id"]
    child = json.loads(get(s3_client, bucket, f"k/S1.bam.scatter/children/{ident}/00001.manifest.json"))
    assert child["attempt"] == 2 and child["status"] == "succeeded"
    (tmp_path / "S1.bam").write_bytes(get(s3_client, bucket, "k/S1.bam"))
    assert _records(tmp_path / "S1.bam") == _records(sample["dir"] / "whole.bam")


def test_sigterm_stops_every_child(s3, s3_client, bucket, sample, tmp_path):
    _upload(s3_client, bucket, sample["dir"])
    marker = f"sleep 299.{random.randrange(10**6)}"  # a command line only this test's children have
    slow = f"echo child-started >&2; {marker}; " + BWA
    proc = _start(["scatter", "--scratch", str(tmp_path / "scratch"), "--no-progress", "--jobs", "4",
                   "-i", f"reads=s3://{bucket}/S1_R1.fq.gz,s3://{bucket}/S1_R2.fq.gz", "--parts", "8",
                   "-r", f"ref=s3://{bucket}/refs/bwa/", "-o", f"bam=s3://{bucket}/t/S1.bam", "--gather", "bam=merge",
                   "--shell", "--", slow])
    lines: List[str] = []

    def children_running() -> bool:
        line = proc.stderr.readline()
        lines.append(line)
        return "planned in" in line or not line
    assert _wait_for(children_running, 120), "".join(lines)
    import time

    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 143, "".join(lines) + err
    assert "t/S1.bam" not in keys(s3_client, bucket, "t/")
    assert not [k for k in keys(s3_client, bucket, "t/S1.bam.scatter/parts/")]
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode != 0  # no child left
    assert not list((tmp_path / "scratch").glob("genostage-*"))


@BOTH
def test_bam_by_reference_called_and_concatenated_equals_the_whole(s3, s3_client, bucket, sample, tmp_path):
    """A BAM scattered by reference into bcftools mpileup | call, gathered by vcf=concat: the
    same calls as one call over the whole BAM."""
    d = sample["dir"]
    _upload(s3_client, bucket, d)
    s3_client.upload_file(str(d / "whole.bam"), bucket, "aln/whole.bam")
    s3_client.upload_file(str(d / "whole.bam.bai"), bucket, "aln/whole.bam.bai")
    call = "bcftools mpileup -f {ref}/ref.fa {bam} 2>/dev/null | bcftools call -mv -Oz -o {vcf}"
    r = genostage(["scatter", "--scratch", str(tmp_path / "scratch"), "--no-progress",
                   "-i", f"bam=s3://{bucket}/aln/whole.bam", "--by-reference", "-r", f"ref=s3://{bucket}/refs/bwa/",
                   "-o", f"vcf=s3://{bucket}/calls/S1.vcf.gz", "--gather", "vcf=concat", "--shell", "--", call],
                  timeout=600)
    assert r.returncode == 0, r.stderr
    spec = json.loads(get(s3_client, bucket, "calls/S1.vcf.gz.scatter/spec.json"))
    assert spec["children"] == 3  # one per contig
    (tmp_path / "S1.vcf.gz").write_bytes(get(s3_client, bucket, "calls/S1.vcf.gz"))
    subprocess.run(call.format(ref=d, bam=d / "whole.bam", vcf=tmp_path / "whole.vcf.gz"), shell=True, check=True)

    def calls(path: Path) -> List[str]:
        return subprocess.run(["bcftools", "view", "-H", str(path)], check=True, capture_output=True,
                              text=True).stdout.splitlines()
    assert calls(tmp_path / "S1.vcf.gz") == calls(tmp_path / "whole.vcf.gz") and calls(tmp_path / "whole.vcf.gz")
    info = json.loads(get(s3_client, bucket, "calls/S1.vcf.gz.manifest.json"))["scatter"]
    assert info["conservation"]["gathered"]["vcf"]["records"] == len(calls(tmp_path / "whole.vcf.gz"))


def test_status_and_a_rerun_that_runs_only_what_is_missing(s3, s3_client, bucket, sample, tmp_path):
    _upload(s3_client, bucket, sample["dir"])
    r = _scatter(bucket, tmp_path, ("S1_R1.fq.gz", "S1_R2.fq.gz"), out="re/S1.bam")
    assert r.returncode == 0, r.stderr
    spec = f"s3://{bucket}/re/S1.bam.scatter/spec.json"
    r = genostage(["scatter", "status", spec])
    assert r.returncode == 0 and "8 succeeded" in r.stdout, r.stdout + r.stderr
    s3_client.delete_object(Bucket=bucket, Key="re/S1.bam.scatter/parts/bam/part-00005.bam")
    r = genostage(["scatter", "status", spec])
    assert r.returncode == 1 and "1 outputs missing" in r.stdout and "child 5" in r.stdout
    r = genostage(["scatter", "gather", spec])
    assert r.returncode == 1 and "its outputs are gone" in r.stderr
    r = _scatter(bucket, tmp_path, ("S1_R1.fq.gz", "S1_R2.fq.gz"), out="re/S1.bam")
    assert r.returncode == 0, r.stderr
    assert "7 of 8 children already done" in r.stderr and "child 5 succeeded" in r.stderr
    assert "child 4 succeeded" not in r.stderr


@pytest.mark.parametrize("what", ["status", "gather"])
def test_the_spec_subcommands_have_help_and_one_line_usage_errors(what):
    shown = genostage(["scatter", what, "--help"])
    assert shown.returncode == 0 and f"usage: genostage scatter {what}" in shown.stdout and "SPEC" in shown.stdout
    missing = genostage(["scatter", what])
    assert missing.returncode == 2
    assert missing.stderr.startswith(f"genostage: scatter {what} SPEC") and missing.stderr.count("\n") == 1


def _small_reads(client, bucket: str) -> str:  # type: ignore[no-untyped-def]
    client.put_object(Bucket=bucket, Key="in/small.fq", Body=b"".join(b"@r%d\nACGT\n+\nIIII\n" % i for i in range(400)))
    return f"reads=s3://{bucket}/in/small.fq"


@BOTH
def test_outputs_kept_per_child_with_a_formatted_index_and_multipart(s3, s3_client, bucket, tmp_path):
    """Outputs without a gather rule, named with {index:05}, each large enough for a multipart
    upload: every child publishes its own, and the scatter finds them all still there (rclone
    reports a whole-object MD5 where the upload's completion answered a multipart ETag)."""
    r = genostage(["scatter", "--scratch", str(tmp_path / "scratch"), "--no-progress", "-i", _small_reads(s3_client, bucket),
                   "--parts", "2", "-o", f"n=s3://{bucket}/qc5/S1.part-{{index:05}}.bin", "--shell", "--",
                   "head -c 20000000 /dev/zero > {n}"], timeout=300)
    assert r.returncode == 0, r.stderr
    published = [k for k in keys(s3_client, bucket, "qc5/") if k.endswith(".bin")]
    assert published == ["qc5/S1.part-00000.bin", "qc5/S1.part-00001.bin"]
    heads = [s3_client.head_object(Bucket=bucket, Key=k) for k in published]
    assert [h["ContentLength"] for h in heads] == [20_000_000, 20_000_000]
    assert not [k for k in keys(s3_client, bucket, "qc5/") if "{index" in k]
    assert any(k.startswith("qc5/S1.part-all.bin.scatter/") for k in keys(s3_client, bucket, "qc5/"))


def test_the_scatter_names_and_exits_with_the_child_that_failed_not_the_one_it_stopped(s3, s3_client, bucket, tmp_path):
    """Child 3 fails (exit 9) while child 2 still runs: the scatter stops child 2 and exits 9,
    naming child 3, not 143 for the child it interrupted itself."""
    script = ('case "$AWS_BATCH_JOB_ARRAY_INDEX" in 2) sleep 60;; 3) echo broken >&2; exit 9;; esac; '
              'echo ok > {out}')
    r = genostage(["scatter", "--scratch", str(tmp_path / "scratch"), "--no-progress", "-i", _small_reads(s3_client, bucket),
                   "--parts", "4", "--jobs", "2", "-o", f"out=s3://{bucket}/stop/S1.txt", "--gather", "out=text=cat",
                   "--shell", "--", script], timeout=120)
    assert r.returncode == 9, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "child 3: tool_failed, exit status 9" in last, last
    assert "stop/S1.txt" not in keys(s3_client, bucket, "stop/")


def test_genostage_scatter_in_python_in_one_call(s3, s3_client, bucket, tmp_path):
    """genostage.scatter(...): the same scatter as the command, from Python."""
    import genostage
    from genostage.config import TransferConfig

    manifest = genostage.scatter('awk "NR % 4 == 1" {reads} > {names}', inputs={"reads": _small_reads(s3_client, bucket).split("=", 1)[1]},
                                 outputs={"names": f"s3://{bucket}/py/names.txt"}, parts=4, gather={"names": "text=cat"},
                                 scratch=str(tmp_path / "scratch"), jobs=2, show_progress=False,
                                 config=TransferConfig(endpoint_url=s3.endpoint_url))
    assert manifest["status"] == "succeeded" and manifest["scatter"]["summary"] == {"succeeded": 4}
    assert get(s3_client, bucket, "py/names.txt") == b"".join(b"@r%d\n" % i for i in range(400))
