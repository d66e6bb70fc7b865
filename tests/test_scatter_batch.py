"""genostage scatter --executor batch: the requests it sends to AWS Batch, children and gather run
as Batch would run them, following the jobs, status, and a rerun that resubmits what is missing.

Batch is moto's in-process backend (``mock_aws`` with ``batch: use_docker: False``: every job
it is given is marked SUCCEEDED at once, or every one FAILED with
``MOTO_SIMPLE_BATCH_FAIL_AFTER=0``; it runs nothing). S3 is moto's server on loopback (the
``s3`` and ``bucket`` fixtures). ``mock_aws`` is started without its reset, so that it does not
wipe the S3 server's buckets (the server runs in this process, on the same backends), and
``AWS_ENDPOINT_URL`` is taken out of the environment, so that boto3's Batch client goes to
the (intercepted) AWS endpoint, not to the S3 server; genostage's own S3 client is not
botocore, so mock_aws never sees its requests. The children and the gather are then run as
Batch would run them: ``genostage run`` (the images' entrypoint) with the command Batch holds
for the job, ``AWS_BATCH_JOB_ARRAY_INDEX`` and ``AWS_BATCH_JOB_ID`` set. What moto cannot
produce (jobs still running, arrays that partly failed, a gather that failed with or without
an exit code, throttling) comes from :class:`Scripted`, a client answering as it is told.
"""
from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from genostage.cli import main
from genostage.config import TransferConfig
from genostage.deploy import batch as B
from genostage.errors import ChildrenFailed, UsageError
from genostage.exitcodes import RETRYABLE
from genostage.job.spec import JobSpec
from genostage.scatter.batch import MAX_CHILDREN, BatchOptions, BatchScatter, Submission, latest
from genostage.scatter.spec import Gather, ScatterSpec, load, save
from genostage.store import Stores
from genostage.testing.demo import make_reads, make_reference

from .helpers import get, keys, put

REGION = "us-east-1"
SIMPLE_BATCH = {"batch": {"use_docker": False}}
RG = r"-R '@RG\tID:S1\tSM:S1'"
BWA = "bwa mem -t 1 -I 300,10 " + RG + " {ref}/ref.fa {reads.1} {reads.2} 2>/dev/null | samtools sort -o {bam} -"


# ---------------------------------------------------------------- Batch: moto, recorded

class Recorder:
    """Every Batch request a client sends: (operation, the JSON body as sent, its size in bytes)."""

    def __init__(self, client: Any) -> None:
        self.calls: List[Tuple[str, Dict[str, Any], int]] = []
        client.meta.events.register("before-call.batch.*", self._before)

    def _before(self, model: Any, params: Dict[str, Any], **_: Any) -> None:
        body = params.get("body") or b""
        self.calls.append((model.name, json.loads(body) if body else {}, len(body)))

    def submits(self) -> List[Tuple[Dict[str, Any], int]]:
        return [(body, size) for op, body, size in self.calls if op == "SubmitJob"]

    def clear(self) -> None:
        self.calls.clear()


@pytest.fixture
def aws(s3: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dict[str, Any]]:
    """moto's Batch (in process) beside moto's S3 server: a queue, the bwa job definition, and a
    recorded client that the CLI uses."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("S3_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", raising=False)
    # the genostage logger as pytest captures it (main() in an earlier test bound it to that test's stderr)
    monkeypatch.setattr(logging.getLogger("genostage"), "handlers", [])
    monkeypatch.setattr(logging.getLogger("genostage"), "propagate", True)
    mock = mock_aws(config=SIMPLE_BATCH)
    mock.start(reset=False)  # a reset would empty the S3 server's buckets too
    try:
        client = boto3.client("batch", region_name=REGION)
        name = f"q{uuid.uuid4().hex[:10]}"
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        env = client.create_compute_environment(computeEnvironmentName=f"{name}-ce", type="UNMANAGED",
                                                state="ENABLED", serviceRole=role)
        client.create_job_queue(jobQueueName=name, state="ENABLED", priority=1, computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": env["computeEnvironmentArn"]}])
        definition = B.register(B.job_definition("bwa", "123456789012.dkr.ecr.us-east-1.amazonaws.com/genostage/bwa:1",
                                                 2, 4096, name=f"{name}-bwa"), client=client)
        recorder = Recorder(client)
        monkeypatch.setattr(B, "batch_client", lambda region=None: client)
        yield {"client": client, "queue": name, "definition": definition["jobDefinitionName"], "recorder": recorder,
               "endpoint": s3.endpoint_url, "s3": s3}
    finally:
        mock.stop(remove_data=False)


def as_batch(command: List[str], s3: Any, tmp: Path, job_id: str, array_index: Optional[int] = None,
             timeout: float = 300) -> "subprocess.CompletedProcess[str]":
    """A job's container as Batch starts it: the image's entrypoint ``genostage run`` and the
    job's command; AWS_BATCH_JOB_ID (``<array id>:<index>`` for a child), the array index, the
    definition's scratch; S3 reached through the environment; ``genostage`` on PATH."""
    env = dict(os.environ)
    env.update(s3.env())
    env.update(AWS_BATCH_JOB_ID=job_id if array_index is None else f"{job_id}:{array_index}",
               AWS_BATCH_JOB_ATTEMPT="1", GENOSTAGE_SCRATCH=str(tmp / "scratch"), GENOSTAGE_IMDS_ENDPOINT="off",
               PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
    env.pop("AWS_BATCH_JOB_ARRAY_INDEX", None)
    if array_index is not None:
        env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(array_index)
    (tmp / "scratch").mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "genostage", "run", *command], env=env, capture_output=True,
                          text=True, timeout=timeout)


def held_command(client: Any, job_id: str) -> List[str]:
    """The command Batch holds for a job (the definition's, overridden by the submission)."""
    return list(client.describe_jobs(jobs=[job_id])["jobs"][0]["container"]["command"])


# ---------------------------------------------------------------- a sample

@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-contig reference with its bwa index, 1,500 simulated pairs (plain gzip), and their
    unchunked alignment."""
    d = tmp_path_factory.mktemp("sample")
    rng = random.Random(5)
    seqs = make_reference(d / "ref.fa", rng, length=20_000)
    make_reads(d / "r1.fq", d / "r2.fq", seqs, rng, pairs=1500)
    subprocess.run(["bwa", "index", str(d / "ref.fa")], check=True, capture_output=True)
    for n in ("r1", "r2"):
        subprocess.run(f"gzip -c {d}/{n}.fq > {d}/{n}.fq.gz", shell=True, check=True)
    script = BWA.replace("{ref}", str(d)).replace("{reads.1}", str(d / "r1.fq")).replace(
        "{reads.2}", str(d / "r2.fq")).replace("{bam}", str(d / "whole.bam"))
    subprocess.run(script, shell=True, check=True)
    return d


def _records(bam: Path) -> List[str]:
    out = subprocess.run(["samtools", "view", str(bam)], check=True, capture_output=True, text=True).stdout
    return sorted(out.splitlines())


def _upload(client: Any, bucket: str, d: Path) -> None:
    for f in d.iterdir():
        if f.name.startswith("ref.fa"):
            client.upload_file(str(f), bucket, f"refs/bwa/{f.name}")
    client.upload_file(str(d / "r1.fq.gz"), bucket, "S1_R1.fq.gz")
    client.upload_file(str(d / "r2.fq.gz"), bucket, "S1_R2.fq.gz")


def _scatter_args(aws: Dict[str, Any], bucket: str, *extra: str) -> List[str]:
    return ["scatter", "--executor", "batch", "--job-queue", aws["queue"], "--job-definition", aws["definition"],
            "--endpoint-url", aws["endpoint"], "--no-progress",
            "-i", f"reads=s3://{bucket}/S1_R1.fq.gz,s3://{bucket}/S1_R2.fq.gz", "--parts", "3",
            "-r", f"ref=s3://{bucket}/refs/bwa/", "-o", f"bam=s3://{bucket}/aln/S1.bam", "--gather", "bam=merge",
            *extra, "--shell", "--", BWA]


def _check_limits(submits: List[Tuple[Dict[str, Any], int]]) -> None:
    for body, size in submits:
        assert size < B.MAX_SUBMIT_BYTES, size
        overrides = json.dumps(body.get("containerOverrides", {}), separators=(",", ":"))
        assert len(overrides) < B.MAX_OVERRIDES_CHARS
        assert len(body.get("dependsOn", [])) <= B.MAX_DEPENDS_ON
        size_of_array = body.get("arrayProperties", {}).get("size")
        assert size_of_array is None or 2 <= size_of_array <= B.MAX_ARRAY_SIZE


def test_three_children_submitted_run_as_batch_runs_them_gathered(aws, s3, s3_client, bucket, sample, tmp_path,
                                                                    capsys):
    """The whole flow on moto: 3 chunks submitted as one array and a gather depending on it
    (every request checked), each child and the gather run as Batch would run them, the
    gathered BAM equal to the unchunked alignment; status and status --wait report it."""
    _upload(s3_client, bucket, sample)
    code = main(_scatter_args(aws, bucket, "--child-vcpus", "2", "--child-memory", "3072", "--gather-vcpus", "4",
                              "--gather-memory", "8192", "--tag", "project=wgs-42", "--attempts", "3"))
    out = capsys.readouterr()
    assert code == 0, out.err
    spec_uri = f"s3://{bucket}/aln/S1.bam.scatter/spec.json"
    spec = json.loads(get(s3_client, bucket, "aln/S1.bam.scatter/spec.json"))
    ident = spec["id"]
    submits = aws["recorder"].submits()
    assert len(submits) == 2
    _check_limits(submits)
    (children, _), (gather, _) = submits
    assert children["arrayProperties"] == {"size": 3}
    assert children["jobQueue"] == aws["queue"] and children["jobDefinition"] == aws["definition"]
    assert children["containerOverrides"]["command"] == ["--spec", spec_uri]
    assert children["containerOverrides"]["resourceRequirements"] == [{"type": "VCPU", "value": "2"},
                                                                      {"type": "MEMORY", "value": "3072"}]
    assert children["tags"] == {"genostage:scatter": ident, "genostage:sample": "S1", "genostage:role": "children",
                                "genostage:submission": "1", "project": "wgs-42"}
    assert children["propagateTags"] is True
    rules = children["retryStrategy"]
    assert rules["attempts"] == 3 and rules["evaluateOnExit"][0] == {"onStatusReason": "Host EC2*", "action": "RETRY"}
    assert {int(r["onExitCode"]) for r in rules["evaluateOnExit"] if "onExitCode" in r} == set(RETRYABLE)
    assert rules["evaluateOnExit"][-1] == {"onReason": "*", "action": "EXIT"}
    batch = spec["batch"]["submissions"][0]
    array_id, gather_id = batch["arrays"][0]["jobId"], batch["gathers"][0]["jobId"]
    assert gather["dependsOn"] == [{"jobId": array_id}]
    assert gather["containerOverrides"]["command"] == ["--", "genostage", "scatter", "gather", spec_uri]
    assert gather["containerOverrides"]["resourceRequirements"] == [{"type": "VCPU", "value": "4"},
                                                                    {"type": "MEMORY", "value": "8192"}]
    assert gather["tags"]["genostage:role"] == "gather" and "arrayProperties" not in gather
    assert array_id in out.out and gather_id in out.out and f"spec: {spec_uri}" in out.out
    # what Batch holds is what the children run
    command = held_command(aws["client"], array_id)
    assert command == ["--spec", spec_uri]
    for i in range(3):
        r = as_batch(command, s3, tmp_path, array_id, array_index=i)
        assert r.returncode == 0, r.stderr
    child = json.loads(get(s3_client, bucket, f"aln/S1.bam.scatter/children/{ident}/00002.manifest.json"))
    assert child["status"] == "succeeded" and child["array_index"] == 2 and child["job_id"] == f"{array_id}:2"
    r = as_batch(held_command(aws["client"], gather_id), s3, tmp_path, gather_id)
    assert r.returncode == 0, r.stderr
    (tmp_path / "S1.bam").write_bytes(get(s3_client, bucket, "aln/S1.bam"))
    assert _records(tmp_path / "S1.bam") == _records(sample / "whole.bam")
    manifest = json.loads(get(s3_client, bucket, "aln/S1.bam.manifest.json"))
    assert manifest["status"] == "succeeded" and manifest["scatter"]["conservation"]["reads_in"] == 3000
    assert manifest["scatter"]["conservation"]["gathered"]["bam"]["primary"] == 3000
    # status: the manifests and the Batch jobs
    assert main(["scatter", "--endpoint-url", aws["endpoint"], "status", spec_uri]) == 0
    report = capsys.readouterr().out
    assert "3 succeeded" in report and f"children {ident.replace('.', '-')}-children {array_id}: SUCCEEDED" in report
    assert "array of 3: 3 SUCCEEDED" in report and f"gather {ident.replace('.', '-')}-gather {gather_id}: SUCCEEDED" \
        in report
    # status --wait: the gather has ended; its manifest says what was gathered
    assert main(["scatter", "--endpoint-url", aws["endpoint"], "--no-progress", "status", spec_uri, "--wait",
                 "--region", REGION]) == 0
    err = capsys.readouterr().err
    assert "children succeeded 3" in err and "3,000 reads in" in err and "bam: 3,000 records gathered" in err

    # ---- a rerun resubmits only the children whose verified outputs are gone
    for n in (0, 2):
        s3_client.delete_object(Bucket=bucket, Key=f"aln/S1.bam.scatter/parts/bam/part-{n:05d}.bam")
    aws["recorder"].clear()
    assert main(_scatter_args(aws, bucket)) == 0
    out = capsys.readouterr()
    assert "resuming it" in out.err and "1 of 3 children already done" in out.err
    assert "2 of 3 children submitted" in out.out
    submits = aws["recorder"].submits()
    _check_limits(submits)
    (children, _), (gather, _) = submits
    spec = json.loads(get(s3_client, bucket, "aln/S1.bam.scatter/spec.json"))
    assert spec["id"] == ident and len(spec["batch"]["submissions"]) == 2
    second = spec["batch"]["submissions"][1]
    indices = f"s3://{bucket}/aln/S1.bam.scatter/batch/{ident}/submission-002.indices.json"
    assert second["indices"] == indices and second["first"] is None
    assert children["arrayProperties"] == {"size": 2}
    assert children["containerOverrides"]["command"] == ["--spec", spec_uri, "--indices", indices]
    assert "retryStrategy" not in children  # no --attempts: the definition's strategy is kept
    assert children["tags"]["genostage:submission"] == "2"
    assert json.loads(get(s3_client, bucket, indices.split("/", 3)[3]))["indices"] == [0, 2]
    assert gather["dependsOn"] == [{"jobId": second["arrays"][0]["jobId"]}]
    array_id = second["arrays"][0]["jobId"]
    for i in range(2):
        r = as_batch(held_command(aws["client"], array_id), s3, tmp_path, array_id, array_index=i)
        assert r.returncode == 0, r.stderr
    child = json.loads(get(s3_client, bucket, f"aln/S1.bam.scatter/children/{ident}/00002.manifest.json"))
    assert child["job_id"] == f"{array_id}:1" and child["array_index"] == 2  # array index 1 ran child 2
    gather_id = second["gathers"][0]["jobId"]
    r = as_batch(held_command(aws["client"], gather_id), s3, tmp_path, gather_id)
    assert r.returncode == 0, r.stderr
    (tmp_path / "S1.bam").write_bytes(get(s3_client, bucket, "aln/S1.bam"))
    assert _records(tmp_path / "S1.bam") == _records(sample / "whole.bam")
    # nothing left to do: a rerun submits the gather alone
    aws["recorder"].clear()
    assert main(_scatter_args(aws, bucket)) == 0
    assert "0 of 3 children submitted" in capsys.readouterr().out
    (only, _), = aws["recorder"].submits()
    assert "dependsOn" not in only and only["containerOverrides"]["command"][:4] == ["--", "genostage", "scatter",
                                                                                   "gather"]


def test_one_child_is_a_plain_job_with_its_index(aws, s3_client, bucket, sample, tmp_path, capsys):
    _upload(s3_client, bucket, sample)
    args = _scatter_args(aws, bucket)
    args[args.index("--parts") + 1] = "1"
    assert main(args) == 0, capsys.readouterr().err
    (child, _), (gather, _) = aws["recorder"].submits()
    assert "arrayProperties" not in child
    spec_uri = f"s3://{bucket}/aln/S1.bam.scatter/spec.json"
    assert child["containerOverrides"]["command"] == ["--spec", spec_uri, "--index", "0"]
    record = json.loads(get(s3_client, bucket, "aln/S1.bam.scatter/spec.json"))["batch"]["submissions"][0]
    assert gather["dependsOn"] == [{"jobId": record["arrays"][0]["jobId"]}]
    r = as_batch(child["containerOverrides"]["command"], aws["s3"], tmp_path, record["arrays"][0]["jobId"])
    assert r.returncode == 0, r.stderr
    r = as_batch(gather["containerOverrides"]["command"], aws["s3"], tmp_path, record["gathers"][0]["jobId"])
    assert r.returncode == 0, r.stderr
    (tmp_path / "S1.bam").write_bytes(get(s3_client, bucket, "aln/S1.bam"))
    assert _records(tmp_path / "S1.bam") == _records(sample / "whole.bam")


# ---------------------------------------------------------------- many children

def _fake_spec(bucket: str, children: int, name: str) -> ScatterSpec:
    """A spec as Scatter.plan() writes it, without the data behind it (for the requests only)."""
    job = JobSpec(command=["samtools view -c {bam} > {count}"], shell=True,
                  inputs={"bam": f"s3://{bucket}/{name}/plan.json#"},
                  outputs={"count": f"s3://{bucket}/{name}.scatter/parts/count/part-{{index:05}}.txt"})
    return ScatterSpec(id=f"{name}.txt-0badc0de", children=children, job=job, work=f"s3://{bucket}/{name}.scatter/",
                       gather=[Gather("count", "text=cat", job.outputs["count"], f"s3://{bucket}/{name}.txt")],
                       manifest=f"s3://{bucket}/{name}.txt.manifest.json")


def _executor(aws: Dict[str, Any], stores: Stores, **options: Any) -> BatchScatter:
    return BatchScatter(BatchOptions(queue=aws["queue"], definition=aws["definition"], **options), aws["client"],
                        stores)


@pytest.mark.parametrize("children, sizes", [(10_000, [10_000]), (10_001, [10_000, 1])])
def test_ten_thousand_children(aws, bucket, children, sizes):
    stores = Stores(TransferConfig(endpoint_url=aws["endpoint"]))
    spec = _fake_spec(bucket, children, f"big{children}")
    save(spec, stores)
    submission = _executor(aws, stores, child_vcpus=1, child_memory=1024).submit(spec)
    submits = aws["recorder"].submits()
    _check_limits(submits)
    jobs, (gather, _) = submits[:-1], submits[-1]
    assert [b.get("arrayProperties", {}).get("size", 1) for b, _ in jobs] == sizes
    assert jobs[0][0]["containerOverrides"]["command"] == ["--spec", spec.uri]
    for body, _ in jobs:
        assert body["containerOverrides"]["resourceRequirements"] == [{"type": "VCPU", "value": "1"},
                                                                      {"type": "MEMORY", "value": "1024"}]
        assert body["tags"]["genostage:scatter"] == spec.id and body["tags"]["genostage:role"] == "children"
    assert "resourceRequirements" not in gather.get("containerOverrides", {})  # the definition's
    if children == 10_001:  # the one left over: a plain job with its index
        assert jobs[1][0]["containerOverrides"]["command"] == ["--spec", spec.uri, "--index", "10000"]
    assert gather["dependsOn"] == [{"jobId": a.job_id} for a in submission.arrays]
    assert max(size for _, size in submits) < 2048  # the spec carries the detail, not the request
    described = aws["client"].describe_jobs(jobs=[submission.arrays[0].job_id])["jobs"][0]
    assert described["arrayProperties"]["size"] == 10_000


def test_twenty_five_thousand_children_from_a_sample_sheet(aws, s3_client, bucket, tmp_path, capsys):
    """Planned through the CLI from a sample sheet of 25,000 rows: three arrays (10,000, 10,000,
    5,000), the later ones with their offsets, a gather depending on all three; the last child
    of the last array, run as Batch would, runs row 24,999."""
    rows = ["id\tfq"] + [f"S{i:05d}\ts3://{bucket}/fq/S{i:05d}.fq" for i in range(25_000)]
    put(s3_client, bucket, "sheet.tsv", ("\n".join(rows) + "\n").encode())
    put(s3_client, bucket, "fq/S24999.fq", b"@r1\nACGT\n+\nIIII\n@r2\nTTTT\n+\nIIII\n")
    code = main(["scatter", "--executor", "batch", "--job-queue", aws["queue"], "--job-definition",
                 aws["definition"], "--endpoint-url", aws["endpoint"], "--no-progress", "--work",
                 f"s3://{bucket}/many/", "--sheet", f"s3://{bucket}/sheet.tsv", "-o",
                 f"n=s3://{bucket}/counts/{{id}}.txt", "--stdout", "n", "--", "wc", "-l", "{fq}"])
    out = capsys.readouterr()
    assert code == 0, out.err
    spec_uri = f"s3://{bucket}/many/spec.json"
    submits = aws["recorder"].submits()
    _check_limits(submits)
    jobs, (gather, _) = submits[:3], submits[3]
    assert [b["arrayProperties"]["size"] for b, _ in jobs] == [10_000, 10_000, 5_000]
    assert [b["containerOverrides"]["command"] for b, _ in jobs] == [
        ["--spec", spec_uri], ["--spec", spec_uri, "--index-offset", "10000"],
        ["--spec", spec_uri, "--index-offset", "20000"]]
    assert [b["jobName"].rsplit("-", 2)[-2:] for b, _ in jobs] == [["children", "1"], ["children", "2"],
                                                                   ["children", "3"]]
    assert all(b["tags"]["genostage:sample"] == "many" and b["propagateTags"] for b, _ in submits)
    record = latest(load(spec_uri, Stores(TransferConfig(endpoint_url=aws["endpoint"]))))
    assert record is not None and [a.size for a in record.arrays] == [10_000, 10_000, 5_000]
    assert gather["dependsOn"] == [{"jobId": a.job_id} for a in record.arrays]
    assert max(size for _, size in submits) < 2048
    last = record.arrays[2]
    assert record.child_index(last, 4999) == 24_999
    r = as_batch(held_command(aws["client"], last.job_id), aws["s3"], tmp_path, last.job_id, array_index=4999)
    assert r.returncode == 0, r.stderr
    assert get(s3_client, bucket, "counts/S24999.txt").split()[0] == b"8"  # row 24,999's 8 lines
    assert keys(s3_client, bucket, "counts/") == ["counts/S24999.txt"]


def test_more_than_two_hundred_thousand_children_is_refused_before_submitting(bucket, s3):
    stores = Stores(TransferConfig(endpoint_url=s3.endpoint_url))
    spec = _fake_spec(bucket, MAX_CHILDREN + 1, "huge")
    client = Scripted()
    with pytest.raises(UsageError, match=r"200,001 children: AWS Batch takes at most 200,000 in one scatter \(20 arrays "
                                         r"of 10,000: the gather may depend on 20 jobs\); cut the input into fewer"):
        BatchScatter(BatchOptions(queue="q", definition="d"), client, stores).submit(
            spec, children=list(range(MAX_CHILDREN + 1)))
    assert client.submitted == []


# ---------------------------------------------------------------- following: a scripted Batch

def _throttled(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "Too Many Requests"},
                        "ResponseMetadata": {"HTTPStatusCode": 429}}, operation)


class Scripted:
    """A Batch client that answers ``describe_jobs`` from a script: each poll takes the next
    state (the last one stays), a state mapping a job's name to its description. ``throttle``:
    how many calls of each operation are answered 429 first."""

    def __init__(self, states: Optional[List[Dict[str, Dict[str, Any]]]] = None, throttle: int = 0,
                 failed_children: Optional[List[Dict[str, Any]]] = None) -> None:
        self.states = states or [{}]
        self.polls = 0
        self.throttle = throttle
        self.throttled: Dict[str, int] = {}
        self.submitted: List[Dict[str, Any]] = []
        self.names: Dict[str, str] = {}  # job id -> name key ("children", "gather", "gather2")
        self.terminated: List[str] = []
        self.failed_children = failed_children or []
        self.described = threading.Event()
        self.fail_submit: Optional[Callable[[Dict[str, Any]], Optional[ClientError]]] = None

    def _maybe_throttle(self, operation: str) -> None:
        n = self.throttled.get(operation, 0)
        if n < self.throttle:
            self.throttled[operation] = n + 1
            raise _throttled(operation)

    def submit_job(self, **request: Any) -> Dict[str, Any]:
        self._maybe_throttle("SubmitJob")
        if self.fail_submit is not None:
            error = self.fail_submit(request)
            if error is not None:
                raise error
        self.submitted.append(request)
        role = request["tags"]["genostage:role"]
        key = role if role not in self.names.values() else f"{role}{sum(v.startswith(role) for v in self.names.values()) + 1}"
        job_id = f"id-{len(self.submitted)}"
        self.names[job_id] = key
        return {"jobId": job_id, "jobName": request["jobName"], "jobArn": f"arn:{job_id}"}

    def describe_jobs(self, jobs: List[str]) -> Dict[str, Any]:
        self._maybe_throttle("DescribeJobs")
        state = self.states[min(self.polls, len(self.states) - 1)]
        if any(self.names.get(j, "").startswith("gather") for j in jobs):
            self.polls += 1
        self.described.set()
        out = []
        for j in jobs:
            if j in self.names:
                out.append({"jobId": j, "jobName": self.names[j], **state.get(self.names[j], {"status": "PENDING"})})
            else:
                child = next((c for c in self.failed_children if c["jobId"] == j), None)
                if child is not None:
                    out.append(child)
        return {"jobs": out}

    def list_jobs(self, **query: Any) -> Dict[str, Any]:
        self._maybe_throttle("ListJobs")
        return {"jobSummaryList": [{"jobId": c["jobId"], "status": "FAILED"} for c in self.failed_children]}

    def terminate_job(self, jobId: str, reason: str) -> Dict[str, Any]:
        self.terminated.append(jobId)
        return {}

    def describe_job_queues(self, jobQueues: List[str]) -> Dict[str, Any]:
        return {"jobQueues": [{"jobQueueName": jobQueues[0], "state": "ENABLED"}]}

    def describe_job_definitions(self, **query: Any) -> Dict[str, Any]:
        return {"jobDefinitions": [{"jobDefinitionName": "d", "revision": 1, "status": "ACTIVE"}]}


def _array(summary: Dict[str, int], status: str = "PENDING", size: int = 3) -> Dict[str, Any]:
    return {"status": status, "arrayProperties": {"size": size, "statusSummary": summary}}


FAST = dict(sleep=lambda s: None)


def _scripted(bucket: str, stores: Stores, client: Scripted, allow_failed: int = 0,
              name: str = "w") -> Tuple[BatchScatter, ScatterSpec, Submission]:
    spec = _fake_spec(bucket, 3, name)
    spec.allow_failed = allow_failed
    save(spec, stores)
    executor = BatchScatter(BatchOptions(queue="q", definition="d", gather_vcpus=2), client, stores,
                            backoff=B.Backoff(**FAST))  # type: ignore[arg-type]
    return executor, spec, executor.submit(spec)


@pytest.fixture
def plain_stores(s3: Any) -> Stores:
    return Stores(TransferConfig(endpoint_url=s3.endpoint_url))


def test_wait_through_running_to_succeeded_with_progress_lines(bucket, plain_stores, caplog, monkeypatch):
    monkeypatch.setenv("GENOSTAGE_PROGRESS_INTERVAL", "0.1")  # a line a look (0.12 s apart)
    client = Scripted([
        {"children": _array({"RUNNABLE": 3})},
        {"children": _array({"SUCCEEDED": 1, "RUNNING": 2}, "RUNNING")},
        {"children": _array({"SUCCEEDED": 3}, "SUCCEEDED"), "gather": {"status": "RUNNING"}},
        {"children": _array({"SUCCEEDED": 3}, "SUCCEEDED"), "gather": {"status": "SUCCEEDED",
                                                                         "container": {"exitCode": 0}}},
    ])
    executor, spec, submission = _scripted(bucket, plain_stores, client)
    caplog.set_level("INFO", logger="genostage")
    followed = executor.follow(spec, submission, poll=0.12, show_progress=True)
    assert (followed.state, followed.exit_status) == ("succeeded", 0)
    assert followed.counts == {"succeeded": 3, "failed": 0, "running": 0, "waiting": 0}
    lines = [r.getMessage() for r in caplog.records if r.name == "genostage.progress"]
    assert any("3 waiting" in line for line in lines), lines
    assert any("1 children / 3 children (33%)" in line and "1 succeeded, 2 running" in line for line in lines), lines
    assert any("3 children / 3 children (100%)" in line and "3 succeeded; gather RUNNING" in line
               for line in lines), lines
    assert client.polls == 4


def test_a_gather_that_fails_exits_with_its_status(bucket, plain_stores):
    done = _array({"SUCCEEDED": 3}, "SUCCEEDED")
    client = Scripted([{"children": done, "gather": {"status": "FAILED", "statusReason": "Essential container in "
                                                     "task exited", "container": {"exitCode": 11}}}])
    executor, spec, submission = _scripted(bucket, plain_stores, client)
    followed = executor.follow(spec, submission, poll=0.01)
    assert (followed.state, followed.exit_status) == ("failed", 11)
    assert "failed with exit status 11 (Essential container in task exited)" in followed.message
    assert spec.manifest and spec.manifest in followed.message


def test_a_gather_that_fails_without_an_exit_code_exits_5(bucket, plain_stores):
    done = _array({"SUCCEEDED": 3}, "SUCCEEDED")
    client = Scripted([{"children": done, "gather": {"status": "FAILED",
                                                     "statusReason": "Host EC2 (instance i-1) terminated."}}])
    executor, spec, submission = _scripted(bucket, plain_stores, client)
    followed = executor.follow(spec, submission, poll=0.01)
    assert (followed.state, followed.exit_status) == ("failed", 5)
    assert "failed without an exit code (Host EC2 (instance i-1) terminated.)" in followed.message
    assert "\n" not in followed.message


def test_a_partly_failed_array_fails_the_scatter_naming_the_child(bucket, plain_stores):
    client = Scripted([{"children": _array({"SUCCEEDED": 2, "FAILED": 1}, "FAILED"),
                        "gather": {"status": "FAILED", "statusReason": "Dependent Job failed"}}],
                      failed_children=[{"jobId": "id-1:1", "status": "FAILED", "statusReason": "Essential container "
                                        "in task exited", "container": {"exitCode": 9},
                                        "arrayProperties": {"index": 1}}])
    executor, spec, submission = _scripted(bucket, plain_stores, client)
    with pytest.raises(ChildrenFailed) as info:
        executor.follow(spec, submission, poll=0.01)
    message = str(info.value)
    assert info.value.exit_status == 9 and "\n" not in message
    assert "1 of 3 children failed on AWS Batch (at most 0 may), so the gather did not run; child 1: exit status 9" \
        in message
    assert spec.child_manifest(1) in message and f"genostage scatter status {spec.uri}" in message
    assert len(client.submitted) == 2  # no gather submitted again


def test_failures_within_allow_failed_get_a_gather_without_dependencies(bucket, plain_stores):
    failed = _array({"SUCCEEDED": 2, "FAILED": 1}, "FAILED")
    client = Scripted([{"children": failed, "gather": {"status": "FAILED", "statusReason": "Dependent Job failed"}},
                       {"children": failed, "gather": {"status": "FAILED", "statusReason": "Dependent Job failed"},
                        "gather2": {"status": "RUNNING"}},
                       {"children": failed, "gather": {"status": "FAILED"},
                        "gather2": {"status": "SUCCEEDED", "container": {"exitCode": 0}}}])
    executor, spec, submission = _scripted(bucket, plain_stores, client, allow_failed=1)
    followed = executor.follow(spec, submission, poll=0.01)
    assert (followed.state, followed.exit_status) == ("succeeded", 0)
    again = client.submitted[-1]
    assert len(client.submitted) == 3 and "dependsOn" not in again
    assert again["containerOverrides"]["command"] == ["--", "genostage", "scatter", "gather", spec.uri]
    assert again["containerOverrides"]["resourceRequirements"] == [{"type": "VCPU", "value": "2"}]
    recorded = latest(load(spec.uri, plain_stores))
    assert recorded is not None and [g["jobId"] for g in recorded.gathers] == ["id-2", "id-3"]


def test_every_child_failed_on_moto(aws, bucket, monkeypatch):
    """moto fails every job (MOTO_SIMPLE_BATCH_FAIL_AFTER=0): the array and the gather FAILED,
    no exit code anywhere: exit 5, naming the first child."""
    stores = Stores(TransferConfig(endpoint_url=aws["endpoint"]))
    spec = _fake_spec(bucket, 3, "failing")
    save(spec, stores)
    monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "0")
    executor = _executor(aws, stores)
    submission = executor.submit(spec)
    with pytest.raises(ChildrenFailed) as info:
        executor.follow(spec, submission, poll=0.01)
    assert info.value.exit_status == 5
    assert "3 of 3 children failed on AWS Batch (at most 0 may), so the gather did not run; child 0: no exit code" \
        in str(info.value)


def test_throttling_is_retried_when_submitting_and_following(bucket, plain_stores):
    client = Scripted([{"children": _array({"SUCCEEDED": 3}, "SUCCEEDED"),
                        "gather": {"status": "SUCCEEDED", "container": {"exitCode": 0}}}], throttle=2)
    pauses: List[float] = []
    spec = _fake_spec(bucket, 3, "throttled")
    save(spec, plain_stores)
    executor = BatchScatter(BatchOptions(queue="q", definition="d"), client, plain_stores,
                            backoff=B.Backoff(sleep=pauses.append, rng=random.Random(1)))
    submission = executor.submit(spec)
    assert client.throttled == {"SubmitJob": 2}
    followed = executor.follow(spec, submission, poll=0.01)
    assert followed.state == "succeeded"
    assert client.throttled == {"SubmitJob": 2, "DescribeJobs": 2} and len(pauses) == 4
    assert len(client.submitted) == 2  # nothing submitted twice


def test_a_look_that_fails_is_tried_again_at_the_next_poll(bucket, plain_stores, caplog):
    """A network fault answering DescribeJobs (after botocore's own retries) does not end a long
    wait; five in a row do."""
    from botocore.exceptions import EndpointConnectionError

    client = Scripted([{"children": _array({"SUCCEEDED": 3}, "SUCCEEDED"),
                        "gather": {"status": "SUCCEEDED", "container": {"exitCode": 0}}}])
    executor, spec, submission = _scripted(bucket, plain_stores, client, name="blip")
    real = client.describe_jobs
    faults = {"left": 2}

    def flaky(jobs: List[str]) -> Dict[str, Any]:
        if faults["left"]:
            faults["left"] -= 1
            raise EndpointConnectionError(endpoint_url="https://batch.us-east-1.amazonaws.com/v1/describejobs")
        return real(jobs)
    client.describe_jobs = flaky  # type: ignore[method-assign]
    caplog.set_level("WARNING", logger="genostage")
    assert executor.follow(spec, submission, poll=0.01).state == "succeeded"
    assert sum("looking at the jobs failed" in r.getMessage() for r in caplog.records) == 2
    faults["left"] = 5
    with pytest.raises(Exception, match="Could not connect to the endpoint URL"):
        executor.follow(spec, submission, poll=0.01)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_waiting_stops_waiting_and_says_how_to_follow(bucket, plain_stores, monkeypatch, capsys, s3,
                                                                       signum):
    client = Scripted([{"children": _array({"RUNNING": 3}, "RUNNING")}])
    executor, spec, submission = _scripted(bucket, plain_stores, client, name="sig")
    monkeypatch.setattr(B, "batch_client", lambda region=None: client)

    def interrupt() -> None:
        client.described.wait(30)
        os.kill(os.getpid(), signum)
    threading.Thread(target=interrupt, daemon=True).start()
    code = main(["scatter", "--endpoint-url", s3.endpoint_url, "--no-progress", "--poll", "5", "status", spec.uri,
                 "--wait"])
    err = capsys.readouterr().err
    assert code == 128 + signum, err
    assert f"stopped waiting; the jobs go on: follow them with genostage scatter status {spec.uri} --wait" in err
    assert client.terminated == []


def test_status_reports_the_batch_jobs_beside_the_manifests(bucket, plain_stores, monkeypatch, capsys, s3):
    client = Scripted([{"children": _array({"SUCCEEDED": 1, "RUNNING": 1, "RUNNABLE": 1}, "PENDING"),
                        "gather": {"status": "PENDING"}}])
    executor, spec, submission = _scripted(bucket, plain_stores, client, name="st")
    monkeypatch.setattr(B, "batch_client", lambda region=None: client)
    assert main(["scatter", "--endpoint-url", s3.endpoint_url, "status", spec.uri]) == 1
    out = capsys.readouterr().out
    assert "3 children; 3 not run" in out  # the manifests: none yet
    assert "AWS Batch: submission 1" in out and "queue q, definition d): 3 children in 1 job(s)" in out
    assert "children st-txt-0badc0de-children id-1: PENDING; array of 3: 1 SUCCEEDED, 1 RUNNING, 1 RUNNABLE" in out
    assert "gather st-txt-0badc0de-gather id-2: PENDING" in out


def test_a_rerun_while_the_last_submission_runs_is_refused(bucket, plain_stores):
    client = Scripted([{"children": _array({"RUNNING": 3}, "RUNNING")}])
    executor, spec, _ = _scripted(bucket, plain_stores, client, name="busy")
    with pytest.raises(UsageError, match=r"its last submission's jobs are still going \(children id-1: RUNNING; "
                                         r"2 active\): follow them with genostage scatter status .* --wait"):
        executor.submit(spec)
    assert len(client.submitted) == 2


def test_a_submission_that_fails_part_way_terminates_what_it_submitted(bucket, plain_stores):
    client = Scripted()
    client.fail_submit = lambda request: ClientError(
        {"Error": {"Code": "ClientException", "Message": "Job definition d does not exist"},
         "ResponseMetadata": {"HTTPStatusCode": 400}}, "SubmitJob") if request["tags"]["genostage:role"] == "gather" \
        else None
    spec = _fake_spec(bucket, 3, "half")
    save(spec, plain_stores)
    executor = BatchScatter(BatchOptions(queue="q", definition="d"), client, plain_stores)
    with pytest.raises(Exception, match="no such job definition"):
        executor.submit(spec)
    assert client.terminated == ["id-1"]
    assert latest(load(spec.uri, plain_stores)) is None  # nothing recorded


# ---------------------------------------------------------------- errors and definitions

def test_a_missing_queue_or_definition_is_one_line_before_planning(aws, s3_client, bucket, sample, capsys):
    _upload(s3_client, bucket, sample)
    args = _scatter_args(aws, bucket)
    args[args.index("--job-queue") + 1] = "no-such-queue"
    assert main(args) == 3
    err = capsys.readouterr().err
    assert err.strip() == "genostage: looking up job queue no-such-queue: no such job queue"
    args = _scatter_args(aws, bucket)
    args[args.index("--job-definition") + 1] = aws["definition"] + ":7"
    assert main(args) == 3
    err = capsys.readouterr().err
    assert err.strip() == (f"genostage: looking up job definition {aws['definition']}:7: no such job definition, "
                           "or not ACTIVE")
    assert keys(s3_client, bucket, "aln/") == []  # nothing planned
    assert aws["recorder"].submits() == []


def test_an_image_registers_a_definition_once(aws, s3_client, bucket, sample, capsys):
    _upload(s3_client, bucket, sample)
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/genostage/bwa:0.7.17"
    args = _scatter_args(aws, bucket, "--image", image, "--child-vcpus", "2", "--child-memory", "2048")
    args[args.index("--job-definition"):args.index("--job-definition") + 2] = []
    assert main(args) == 0, capsys.readouterr().err
    registered = [b for op, b, _ in aws["recorder"].calls if op == "RegisterJobDefinition"]
    assert len(registered) == 1 and registered[0]["jobDefinitionName"] == "genostage-scatter-bwa"
    assert registered[0]["containerProperties"]["image"] == image
    assert registered[0]["retryStrategy"] == B.retry_strategy(3)
    (child, _), _ = aws["recorder"].submits()
    assert child["jobDefinition"].startswith("genostage-scatter-bwa:")
    aws["recorder"].clear()
    s3_client.delete_object(Bucket=bucket, Key="aln/S1.bam.scatter/spec.json")  # plan again
    assert main(args) == 0, capsys.readouterr().err
    assert not [op for op, _, _ in aws["recorder"].calls if op == "RegisterJobDefinition"]  # the same: reused


@pytest.mark.parametrize("extra, message", [
    (["--jobs", "4"], "--jobs is for the local executor"),
    (["--scratch", "/tmp/x"], "--scratch is for the local executor"),
    (["--image", "img:1"], "--job-definition NAME[:REV] or --image URI (to register one), not both"),
    (["--attempts", "11"], "--attempts must be between 1 and 10 on AWS Batch"),
    (["--tag", "aws:x=1"], "does not start with 'aws:'"),
    (["--tag", "novalue"], "--tag expects KEY=VALUE"),
    (["--child-vcpus", "0"], "--child-vcpus must be at least 1"),
])
def test_bad_batch_options_are_one_line(aws, bucket, extra, message, capsys):
    assert main(_scatter_args(aws, bucket, *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_batch_options_need_the_batch_executor(bucket, s3, capsys):
    assert main(["scatter", "--job-queue", "q", "-i", f"x=s3://{bucket}/x", "--parts", "2", "-o",
                 f"y=s3://{bucket}/y.txt", "--gather", "y=cat", "--", "cat", "{x}"]) == 2
    assert "--job-queue is for --executor batch" in capsys.readouterr().err


def test_a_child_index_outside_the_indices_list_is_one_line(bucket, plain_stores, s3, tmp_path):
    spec = _fake_spec(bucket, 3, "idx")
    save(spec, plain_stores)
    indices = f"s3://{bucket}/idx.scatter/batch/x.indices.json"
    from genostage.transfer import put_verified
    from genostage.location import parse
    put_verified(plain_stores, parse(indices), json.dumps({"format": "genostage-scatter-indices/1",
                                                           "indices": [2]}).encode())
    r = as_batch(["--spec", spec.uri, "--indices", indices], s3, tmp_path, "job", array_index=1)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (f"genostage: array position 1 is outside the indices list {indices} "
                                                 "(1 children: 0..0)")
    r = as_batch(["--indices", indices, "--", "true"], s3, tmp_path, "job")
    assert r.returncode == 2 and "--index-offset and --indices pick a scatter's child: they go with --spec" in r.stderr
