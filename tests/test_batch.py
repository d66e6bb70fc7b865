"""AWS Batch job definitions and the Batch API helpers.

The definitions are checked against botocore's service model (what the SDK and the service
accept) and registered with moto's in-process Batch (``mock_aws``: Batch has no server here).
Each template's command is run as Batch would run it: its ``Ref::`` arguments replaced by the
job's parameters (defaults from the definition, the rest as submitted), its environment and
volumes mapped to local directories, ``genostage run`` as the entrypoint, against moto's S3
server on loopback; the real tools (bwa, samtools, bcftools, tabix, snpEff) check the outputs.
"""
from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.session import get_session
from botocore.validate import ParamValidator
from moto import mock_aws

from genostage.cli import main
from genostage.deploy import batch
from genostage.errors import GenostageError, NotFound, TransferFailed, UsageError
from genostage.exitcodes import RETRYABLE
from genostage.job.tool import expand
from genostage.testing.s3server import LocalS3

REGION = "us-east-1"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/genostage/samtools:1.16.1"
SIMPLE_BATCH = {"batch": {"use_docker": False}}


def _botocore_errors(request: Mapping[str, Any], operation: str = "RegisterJobDefinition") -> str:
    shape = get_session().get_service_model("batch").operation_model(operation).input_shape
    report = ParamValidator().validate(dict(request), shape)
    return report.generate_report() if report.has_errors() else ""


# ---------------------------------------------------------------- the definitions themselves

@pytest.mark.parametrize("platform", batch.PLATFORMS)
@pytest.mark.parametrize("tool", sorted(batch.TEMPLATES))
def test_every_template_validates_against_botocores_model(tool: str, platform: str) -> None:
    d = batch.job_definition(tool, IMAGE, vcpus=8, memory=16384, platform=platform, job_role_arn="arn:aws:iam::1:role/r")
    assert _botocore_errors(d) == ""
    batch.validate(d)  # genostage's own check agrees
    c = d["containerProperties"]
    assert "vcpus" not in c and "memory" not in c  # deprecated fields
    assert {"type": "VCPU", "value": "8"} in c["resourceRequirements"]
    assert {"type": "MEMORY", "value": "16384"} in c["resourceRequirements"]
    assert c["linuxParameters"] == {"initProcessEnabled": True}
    assert c["ulimits"] == [{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}]
    assert d["timeout"]["attemptDurationSeconds"] == batch.TEMPLATES[tool].timeout >= 3600
    assert d["platformCapabilities"] == ["EC2"]
    assert d["tags"] == {"genostage:tool": tool, "genostage:architecture": platform}
    assert d["jobDefinitionName"] == f"genostage-{tool}" + ("" if platform == "x86_64" else "-arm64")


def test_a_broken_definition_is_refused_by_the_model_check() -> None:
    d = batch.job_definition("samtools", IMAGE, 2, 4096)
    d["containerProperties"]["ulimits"][0]["softLimit"] = "many"
    assert "softLimit" in _botocore_errors(d)
    with pytest.raises(UsageError, match="RegisterJobDefinition request: .*softLimit"):
        batch.validate(d)


def test_volumes_cache_and_environment() -> None:
    c = batch.job_definition("bwa", IMAGE, 4, 8192, host_cache="/nvme/cache", cache_max_size="200GiB")["containerProperties"]
    assert c["volumes"] == [{"name": "scratch", "host": {"sourcePath": "/scratch"}},
                            {"name": "genostage-cache", "host": {"sourcePath": "/nvme/cache"}}]
    assert c["mountPoints"] == [{"sourceVolume": "scratch", "containerPath": "/scratch", "readOnly": False},
                                {"sourceVolume": "genostage-cache", "containerPath": "/cache", "readOnly": False}]
    env = {e["name"]: e["value"] for e in c["environment"]}
    assert env == {"GENOSTAGE_SCRATCH": "/scratch", "GENOSTAGE_CACHE": "/cache", "GENOSTAGE_CACHE_MAX_SIZE": "200GiB"}


def test_retry_strategy_retries_spot_and_genostages_retryable_codes_only() -> None:
    rules = batch.job_definition("samtools", IMAGE, 2, 4096, attempts=4)["retryStrategy"]
    assert rules["attempts"] == 4
    assert rules["evaluateOnExit"] == [
        {"onStatusReason": "Host EC2*", "action": "RETRY"},
        {"onExitCode": "5", "action": "RETRY"},
        {"onExitCode": "6", "action": "RETRY"},
        {"onExitCode": "10", "action": "RETRY"},
        {"onReason": "*", "action": "EXIT"},
    ]
    assert {int(r["onExitCode"]) for r in rules["evaluateOnExit"] if "onExitCode" in r} == set(RETRYABLE)
    assert len(rules["evaluateOnExit"]) <= 5  # AWS Batch's limit


def _first_match(rules: List[Dict[str, str]], exit_code: Optional[int], status_reason: str) -> str:
    """Batch's evaluation: rules in order, the first whose given conditions all match (glob with a
    trailing *); no match at all means RETRY."""
    def glob(pattern: str, text: str) -> bool:
        return text.startswith(pattern[:-1]) if pattern.endswith("*") else text == pattern
    for rule in rules:
        if "onExitCode" in rule and (exit_code is None or not glob(rule["onExitCode"], str(exit_code))):
            continue
        if "onStatusReason" in rule and not glob(rule["onStatusReason"], status_reason):
            continue
        if "onReason" in rule and not glob(rule["onReason"], "Essential container in task exited"):
            continue
        return rule["action"]
    return "RETRY"


@pytest.mark.parametrize("exit_code, reason, action", [
    (None, "Host EC2 (instance i-0123) terminated.", "RETRY"),  # spot reclaim: no exit code
    (5, "Essential container in task exited", "RETRY"),
    (6, "Essential container in task exited", "RETRY"),
    (10, "Essential container in task exited", "RETRY"),
    (1, "Essential container in task exited", "EXIT"),   # bad input
    (2, "Essential container in task exited", "EXIT"),   # usage
    (9, "Essential container in task exited", "EXIT"),   # unusable scratch
    (137, "OutOfMemoryError: Container killed due to memory usage", "EXIT"),
    (None, "Job attempt duration exceeded timeout", "EXIT"),
])
def test_which_failures_are_retried(exit_code: Optional[int], reason: str, action: str) -> None:
    rules = batch.retry_strategy(3)["evaluateOnExit"]
    assert _first_match(rules, exit_code, reason) == action


def test_threads_follow_the_vcpus_and_nothing_is_hard_coded() -> None:
    for tool, template in batch.TEMPLATES.items():
        for vcpus in (1, 16):
            d = batch.job_definition(tool, IMAGE, vcpus, 32768)
            assert d["parameters"]["threads"] == str(vcpus), tool
            command = d["containerProperties"]["command"]
            text = " ".join(command)
            assert "-t 2" not in text and "ref.fa" not in text and ".fa\"" not in text, tool
            assert "Ref::threads" in command, tool


def test_references_are_staged_read_only_through_the_cache() -> None:
    for tool in ("bwa", "bcftools", "snpeff"):
        command = batch.job_definition(tool, IMAGE, 2, 4096)["containerProperties"]["command"]
        head = command[:command.index("--")]
        assert head[head.index("-r") + 1] in ("Ref::reference", "Ref::database")


def test_every_placeholder_is_a_whole_argument() -> None:
    for tool, template in batch.TEMPLATES.items():
        command = batch.job_definition(tool, "img", 1, 512)["containerProperties"]["command"]
        refs = [a for a in command if a.startswith("Ref::")]
        assert sorted(refs) == sorted(f"Ref::{p}" for p in template.parameters()), tool
        script = command[command.index("-c") + 1]
        assert script == template.script() and "\n" not in script  # one line: so is a failure's message
        assert expand([script], {}) == [script]  # genostage's {NAME} filling leaves it alone
        assert not [a for a in command if "Ref::" in a and not a.startswith("Ref::") and a != script], tool
        head = command[:command.index("--")]
        for name in template.staged:
            assert head[head.index(f"Ref::{name}") - 1] in ("-i", "-o", "-r")


@pytest.mark.parametrize("kwargs, message", [
    ({"vcpus": 0}, "--vcpus"),
    ({"memory": 2}, "--memory"),
    ({"attempts": 11}, "--attempts"),
    ({"attempts": 0}, "--attempts"),
    ({"timeout": 59}, "--timeout"),
    ({"host_scratch": "scratch"}, "--host-scratch"),
    ({"host_cache": "cache"}, "--host-cache"),
    ({"name": "bad name"}, "job definition name"),
    ({"platform": "riscv"}, "--platform"),
    ({"nofile": 10}, "--nofile"),
])
def test_bad_values_are_refused(kwargs: dict, message: str) -> None:
    args = {"vcpus": 2, "memory": 1024, **kwargs}
    with pytest.raises(UsageError, match=message):
        batch.job_definition("samtools", "img", **args)


def test_unknown_tool_needs_a_command() -> None:
    with pytest.raises(UsageError, match="no job template"):
        batch.job_definition("fastqc", "img", 1, 512)
    d = batch.job_definition("fastqc", "img", 1, 512, command=["-i", "Ref::fq", "--", "fastqc", "{fq}"])
    assert d["containerProperties"]["command"][-1] == "{fq}"
    assert d["timeout"] == {"attemptDurationSeconds": batch.DEFAULT_TIMEOUT}
    assert "parameters" not in d


# ---------------------------------------------------------------- the CLI

def test_cli_takes_the_run_arguments_after_dash_dash(capsys: pytest.CaptureFixture[str]) -> None:
    """Before: 'give the arguments after --', then argparse refused the --."""
    assert main(["batch", "job-definition", "fastqc", "--vcpus", "2", "--memory", "4096", "--image", "img:1",
                 "--", "-i", "Ref::reads", "-o", "Ref::report", "--", "fastqc", "--outdir", "{report}",
                 "{reads}"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["containerProperties"]["command"] == ["-i", "Ref::reads", "-o", "Ref::report", "--", "fastqc",
                                                   "--outdir", "{report}", "{reads}"]
    assert d["jobDefinitionName"] == "genostage-fastqc"


@pytest.mark.parametrize("argv, message", [
    (["fastqc", "--vcpus", "2", "--memory", "64", "--image", "i"], "no job template for 'fastqc'"),
    (["fastqc", "--vcpus", "2", "--memory", "64", "--image", "i", "--"], "nothing after --"),
    (["fastqc", "--vcpus", "2", "--memory", "64", "--image", "i", "--command-json", '["a"]', "--", "b"],
     "either after -- or with --command-json"),
    (["samtools", "--vcpus", "two", "--memory", "64"], "invalid int value: 'two'"),
    (["samtools", "--memory", "64"], "the following arguments are required: --vcpus"),
    (["samtools", "--vcpus", "1", "--memory", "64", "--platform", "sparc"], "invalid choice: 'sparc'"),
    (["x", "--vcpus", "1", "--memory", "64", "--image", "i", "--command-json", "{}"], "--command-json"),
    (["samtools", "--vcpus", "1", "--memory", "2048", "--register"], "--register needs --image"),
])
def test_cli_errors_are_one_line(argv: List[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(["batch", "job-definition", *argv])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert message in err


def test_cli_arm64_definition_names_the_arm64_image(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["batch", "job-definition", "bwa", "--vcpus", "4", "--memory", "8192", "--platform", "arm64"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["containerProperties"]["image"] == "genostage/bwa:0.7.17-arm64"
    assert d["jobDefinitionName"] == "genostage-bwa-arm64"
    assert d["parameters"] == {"threads": "4", "memory": "8192"}


@mock_aws
def test_register_with_batch() -> None:
    client = boto3.client("batch", region_name=REGION)
    d = batch.job_definition("samtools", IMAGE, vcpus=2, memory=4096, timeout=600, attempts=4)
    first = batch.register(d, client=client)
    second = batch.register(d, client=client)
    assert first["jobDefinitionName"] == "genostage-samtools"
    assert (first["revision"], second["revision"]) == (1, 2)
    described = client.describe_job_definitions(jobDefinitionName="genostage-samtools", status="ACTIVE")
    got = {j["revision"]: j for j in described["jobDefinitions"]}[1]
    assert got["containerProperties"]["command"] == d["containerProperties"]["command"]
    assert got["containerProperties"]["linuxParameters"] == {"initProcessEnabled": True}
    assert got["parameters"] == {"threads": "2"}
    assert got["retryStrategy"]["attempts"] == 4
    assert got["timeout"] == {"attemptDurationSeconds": 600}


@mock_aws
def test_cli_registers_every_template(capsys: pytest.CaptureFixture[str]) -> None:
    for tool in sorted(batch.TEMPLATES):
        assert main(["batch", "job-definition", tool, "--vcpus", "4", "--memory", "8192", "--register",
                     "--image", f"123456789012.dkr.ecr.us-east-1.amazonaws.com/genostage/{tool}:1",
                     "--region", REGION, "--platform", "arm64"]) == 0
        reply = json.loads(capsys.readouterr().out)
        assert reply["jobDefinitionName"] == f"genostage-{tool}-arm64" and reply["revision"] == 1
        assert f":job-definition/genostage-{tool}-arm64:1" in reply["jobDefinitionArn"]


# ---------------------------------------------------------------- the templates, run as Batch runs them

def substitute(command: Sequence[str], parameters: Mapping[str, str]) -> List[str]:
    """Batch's parameter substitution: an argument ``Ref::NAME`` becomes the parameter's value."""
    return [parameters.get(a[5:], a) if a.startswith("Ref::") else a for a in command]


def run_as_batch(definition: Dict[str, Any], submitted: Mapping[str, str], host: Path, s3: LocalS3) -> "subprocess.CompletedProcess[str]":
    """``genostage run`` with the definition's command and environment, its volumes under ``host``."""
    c = definition["containerProperties"]
    params = {**definition.get("parameters", {}), **submitted}
    mounts = {m["containerPath"]: host / m["sourceVolume"] for m in c["mountPoints"]}
    env = dict(os.environ)
    env.update(s3.env())
    for e in c["environment"]:
        env[e["name"]] = str(mounts.get(e["value"], e["value"]))
    for path in mounts.values():
        path.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "genostage", "run", "--no-progress",
                           *substitute(c["command"], params)],
                          env=env, capture_output=True, text=True, timeout=300)


COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}


def _genome(directory: Path) -> Dict[str, Any]:
    """A 20 kb reference with a bwa index and .fai, a sample with 8 SNPs, 1,500 read pairs."""
    rng = random.Random(11)
    ref = "".join(rng.choice("ACGT") for _ in range(20000))
    snps = sorted(rng.sample(range(2000, 18000), 8))
    sample = list(ref)
    for pos in snps:
        sample[pos] = rng.choice([b for b in "ACGT" if b != ref[pos]])
    alt = "".join(sample)
    directory.mkdir(parents=True)
    fasta = directory / "tiny.fa"
    fasta.write_text(">chr1\n" + "\n".join(ref[i:i + 60] for i in range(0, len(ref), 60)) + "\n")
    subprocess.run(["bwa", "index", str(fasta)], check=True, capture_output=True)
    subprocess.run(["samtools", "faidx", str(fasta)], check=True)
    r1, r2 = [], []
    for i in range(1500):
        start = rng.randrange(0, len(alt) - 400)
        frag = alt[start:start + rng.randrange(300, 400)]
        mate = "".join(COMPLEMENT[b] for b in reversed(frag[-100:]))
        q = "I" * 100
        r1.append(f"@p{i}/1\n{frag[:100]}\n+\n{q}\n")
        r2.append(f"@p{i}/2\n{mate}\n+\n{q}\n")
    reads = directory.parent / "reads"
    reads.mkdir()
    for name, recs in (("r1.fq.gz", r1), ("r2.fq.gz", r2)):
        with gzip.open(reads / name, "wt") as fh:
            fh.write("".join(recs))
    return {"ref": ref, "snps": snps, "fasta": fasta, "reads": reads}


def _upload_tree(client: Any, bucket: str, root: Path, prefix: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, prefix + path.relative_to(root).as_posix())


def _need(*commands: str) -> None:
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: make system-deps installs them")


@pytest.fixture(scope="module")
def pipeline(moto_s3: LocalS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    """bwa -> samtools stats, bcftools -> snpEff, each job run from its job definition."""
    _need("bwa", "samtools", "bcftools", "tabix", "bgzip")
    os.environ.update({k: v for k, v in moto_s3.env().items() if k.startswith("AWS_")})
    tmp = tmp_path_factory.mktemp("pipeline")
    data = _genome(tmp / "refs")
    client = moto_s3.client()
    bucket = f"pipeline-{random.Random().randrange(1 << 30):08x}"
    client.create_bucket(Bucket=bucket)
    _upload_tree(client, bucket, tmp / "refs", "refs/tiny/")
    _upload_tree(client, bucket, data["reads"], "reads/")
    yield {"client": client, "bucket": bucket, "tmp": tmp, "s3": moto_s3, **data}


def _definition(tool: str, vcpus: int = 2, memory: int = 2048) -> Dict[str, Any]:
    return batch.job_definition(tool, f"genostage/{tool}", vcpus, memory)


def _aligned(pipeline: Dict[str, Any]) -> Path:
    """The bwa job (run once per module): its published BAM and index, downloaded."""
    b = pipeline["bucket"]
    out, proc = _published(pipeline, "aligned", "bwa", _definition("bwa", vcpus=2, memory=1024), {
        "reference": f"reference=s3://{b}/refs/tiny/", "fasta": "tiny.fa", "sample": "S1",
        "reads1": f"reads1=s3://{b}/reads/r1.fq.gz", "reads2": f"reads2=s3://{b}/reads/r2.fq.gz",
        "bam": f"bam=s3://{b}/aln/S1.bam", "bai": f"bai=s3://{b}/aln/S1.bam.bai"}, ["aln/S1.bam", "aln/S1.bam.bai"])
    if proc is not None:
        pipeline["bwa_log"] = proc.stderr
    return out


def _published(pipeline: Dict[str, Any], name: str, tool: str, definition: Dict[str, Any], params: Dict[str, str],
               keys: List[str]) -> "Tuple[Path, Optional[subprocess.CompletedProcess[str]]]":
    """Run ``tool``'s job definition once for the module, as Batch would, and download the
    objects it published (``keys``) into ``tmp/name``; the run's process, None when cached."""
    out = pipeline["tmp"] / name
    if out.exists():
        return out, None
    proc = run_as_batch(definition, params, pipeline["tmp"] / f"host-{tool}", pipeline["s3"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out.mkdir()
    for key in keys:
        pipeline["client"].download_file(pipeline["bucket"], key, str(out / key.rsplit("/", 1)[-1]))
    return out, proc


def test_bwa_template_publishes_a_sorted_indexed_bam(pipeline: Dict[str, Any]) -> None:
    out = _aligned(pipeline)
    bam = out / "S1.bam"
    subprocess.run(["samtools", "quickcheck", str(bam)], check=True)
    header = subprocess.run(["samtools", "view", "-H", str(bam)], check=True, capture_output=True, text=True).stdout
    assert "SO:coordinate" in header and "@RG\tID:S1\tSM:S1" in header
    assert "bwa mem -t 2 -R" in header  # threads from the vCPUs
    positions = [int(line.split("\t")[3]) for line in subprocess.run(
        ["samtools", "view", "-F", "4", str(bam)], check=True, capture_output=True, text=True).stdout.splitlines()]
    assert len(positions) > 2800 and positions == sorted(positions)
    assert (out / "S1.bam.bai").read_bytes()[:4] == b"BAI\x01"
    idx = subprocess.run(["samtools", "idxstats", str(bam)], check=True, capture_output=True, text=True).stdout
    assert idx.startswith("chr1\t20000\t")  # read from the published index beside the BAM
    # the reference came through the node cache (the definition's cache volume)
    cache = pipeline["tmp"] / "host-bwa" / batch.CACHE_VOLUME
    assert any(p.name.endswith(".bwt") or p.stat().st_size > 0 for p in cache.rglob("*") if p.is_file())
    manifest = json.loads(pipeline["client"].get_object(Bucket=pipeline["bucket"], Key="aln/S1.bam.manifest.json")["Body"].read())
    assert manifest["status"] == "succeeded"


def test_samtools_template_matches_samtools_stats(pipeline: Dict[str, Any]) -> None:
    bam = _aligned(pipeline) / "S1.bam"
    b = pipeline["bucket"]
    proc = run_as_batch(_definition("samtools"), {"bam": f"bam=s3://{b}/aln/S1.bam", "stats": f"stats=s3://{b}/qc/S1.stats"},
                        pipeline["tmp"] / "host-stats", pipeline["s3"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    published = pipeline["client"].get_object(Bucket=b, Key="qc/S1.stats")["Body"].read().decode()
    expected = subprocess.run(["samtools", "stats", str(bam)], check=True, capture_output=True, text=True).stdout

    def body(text: str) -> List[str]:
        return [line for line in text.splitlines() if not line.startswith("# ")]
    assert body(published) == body(expected) and len(body(published)) > 100


def _called(pipeline: Dict[str, Any]) -> Path:
    _aligned(pipeline)
    b = pipeline["bucket"]
    out, _proc = _published(pipeline, "called", "bcftools", _definition("bcftools"), {
        "reference": f"reference=s3://{b}/refs/tiny/", "fasta": "tiny.fa", "bam": f"bam=s3://{b}/aln/S1.bam",
        "vcf": f"vcf=s3://{b}/calls/S1.vcf.gz", "tbi": f"tbi=s3://{b}/calls/S1.vcf.gz.tbi"},
        ["calls/S1.vcf.gz", "calls/S1.vcf.gz.tbi"])
    return out


def test_bcftools_template_calls_the_snps_into_an_indexed_vcf(pipeline: Dict[str, Any]) -> None:
    out = _called(pipeline)
    vcf = out / "S1.vcf.gz"
    with open(vcf, "rb") as fh:
        assert fh.read(4) == b"\x1f\x8b\x08\x04"  # BGZF, not plain gzip
    sites = subprocess.run(["bcftools", "query", "-f", "%POS\\n", "-r", "chr1", str(vcf)], check=True,
                           capture_output=True, text=True).stdout.split()  # -r reads the .tbi
    called = {int(p) - 1 for p in sites}
    assert len(called & set(pipeline["snps"])) >= 6, (sorted(called), pipeline["snps"])
    assert len(called - set(pipeline["snps"])) <= 1
    samples = subprocess.run(["bcftools", "query", "-l", str(vcf)], check=True, capture_output=True, text=True).stdout
    assert samples.split() == ["S1"]  # the read group bwa's job wrote


def _snpeff_database(pipeline: Dict[str, Any]) -> str:
    """A one-gene snpEff database over the first SNP, built with the real snpEff, uploaded."""
    jar = Path("/usr/share/java/snpeff.jar")
    if shutil.which("java") is None or not jar.is_file():
        pytest.fail("java and /usr/share/java/snpeff.jar not installed: apt-get install default-jre-headless "
                    "libsnpeff-java (make system-deps)")
    root = pipeline["tmp"] / "snpeff"
    genome = root / "data" / "tiny"
    genome.mkdir(parents=True)
    shutil.copy(pipeline["fasta"], genome / "sequences.fa")
    snp = pipeline["snps"][0] + 1
    start = snp - 150
    end = start + 299  # 100 codons; the SNP inside the coding sequence
    ref = pipeline["ref"]
    # a gene on + strand: force a start codon and a stop codon into the reference the database knows
    seq = ref[:start - 1] + "ATG" + ref[start + 2:end - 3] + "TAA" + ref[end:]
    (genome / "sequences.fa").write_text(">chr1\n" + seq + "\n")
    attrs = 'gene_id "G1"; transcript_id "T1"; gene_name "GENE1";'
    (genome / "genes.gtf").write_text("".join(
        f"chr1\ttest\t{kind}\t{a}\t{b}\t.\t+\t{frame}\t{attrs}\n"
        for kind, a, b, frame in (("exon", start, end, "."), ("CDS", start, end - 3, "0"),
                                  ("start_codon", start, start + 2, "0"), ("stop_codon", end - 2, end, "0"))))
    config = root / "build.config"
    config.write_text("tiny.genome : tiny\n")
    subprocess.run(["java", "-Xmx1g", "-jar", str(jar), "build", "-gtf22", "-noCheckCds", "-noCheckProtein",
                    "-c", str(config), "-dataDir", str(root / "data"), "tiny"], check=True, capture_output=True)
    for name in ("genes.gtf", "sequences.fa"):
        (genome / name).unlink()
    _upload_tree(pipeline["client"], pipeline["bucket"], root / "data", "snpeff/data/")
    return "tiny"


def test_snpeff_template_annotates_the_calls(pipeline: Dict[str, Any]) -> None:
    _called(pipeline)
    genome = _snpeff_database(pipeline)
    b = pipeline["bucket"]
    proc = run_as_batch(_definition("snpeff", memory=2048), {
        "database": f"database=s3://{b}/snpeff/data/", "genome": genome, "vcf": f"vcf=s3://{b}/calls/S1.vcf.gz",
        "annotated": f"annotated=s3://{b}/ann/S1.ann.vcf.gz", "tbi": f"tbi=s3://{b}/ann/S1.ann.vcf.gz.tbi"},
        pipeline["tmp"] / "host-snpeff", pipeline["s3"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = pipeline["tmp"] / "annotated"
    out.mkdir()
    for name in ("S1.ann.vcf.gz", "S1.ann.vcf.gz.tbi"):
        pipeline["client"].download_file(b, f"ann/{name}", str(out / name))
    records = subprocess.run(["bcftools", "view", "-H", "-r", "chr1", str(out / "S1.ann.vcf.gz")], check=True,
                             capture_output=True, text=True).stdout.splitlines()
    first = [r for r in records if int(r.split("\t")[1]) == pipeline["snps"][0] + 1]
    assert first and "ANN=" in first[0] and "|GENE1|G1|transcript|T1|" in first[0], first
    assert all("ANN=" in r for r in records)


def test_a_parameter_left_out_is_one_line_and_exit_2(pipeline: Dict[str, Any]) -> None:
    b = pipeline["bucket"]
    proc = run_as_batch(_definition("bcftools"), {
        "reference": f"reference=s3://{b}/refs/tiny/", "bam": f"bam=s3://{b}/aln/S1.bam",
        "vcf": f"vcf=s3://{b}/calls/x.vcf.gz", "tbi": f"tbi=s3://{b}/calls/x.vcf.gz.tbi"},  # no fasta
        pipeline["tmp"] / "host-missing", pipeline["s3"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "genostage-bcftools: job parameter fasta was not given" in proc.stderr


# ---------------------------------------------------------------- submitting and following jobs

def _queue(client: Any, name: str = "spot") -> str:
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="AWSBatchServiceRole", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    env = client.create_compute_environment(computeEnvironmentName=f"{name}-ce", type="UNMANAGED", state="ENABLED",
                                            serviceRole=role)
    client.create_job_queue(jobQueueName=name, state="ENABLED", priority=1,
                            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env["computeEnvironmentArn"]}])
    return name


@mock_aws(config=SIMPLE_BATCH)
def test_submit_and_describe_with_moto() -> None:
    client = boto3.client("batch", region_name=REGION)
    queue = _queue(client)
    batch.register(batch.job_definition("samtools", IMAGE, 2, 4096), client=client)
    request = batch.submit_request("s1-stats", queue, "genostage-samtools", vcpus=4, memory=8192,
                                   parameters={"bam": "bam=s3://b/s1.bam", "stats": "stats=s3://b/s1.stats"},
                                   tags={"genostage:sample": "s1"})
    assert request["parameters"]["threads"] == "4"  # threads follow the vCPUs asked for
    assert request["containerOverrides"]["resourceRequirements"] == [{"type": "VCPU", "value": "4"},
                                                                     {"type": "MEMORY", "value": "8192"}]
    job = batch.submit_job(client, request)
    assert job["jobName"] == "s1-stats" and job["jobId"]
    array = batch.submit_job(client, batch.submit_request("children", queue, "genostage-samtools", array_size=3,
                                                          depends_on=[job["jobId"]]))
    described = batch.describe_jobs(client, [job["jobId"], array["jobId"]])
    by_id = {d["jobId"]: d for d in described}
    assert by_id[job["jobId"]]["status"] == "SUCCEEDED"
    assert by_id[job["jobId"]]["parameters"]["threads"] == "4"
    assert by_id[array["jobId"]]["arrayProperties"]["size"] == 3


@mock_aws(config=SIMPLE_BATCH)
def test_missing_queue_and_definition_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    client = boto3.client("batch", region_name=REGION)
    queue = _queue(client)
    with pytest.raises(NotFound, match=r"no such job definition") as missing_definition:
        batch.submit_job(client, batch.submit_request("j", queue, "genostage-nope"))
    with pytest.raises(NotFound, match=r"no such job queue") as missing_queue:
        batch.register(batch.job_definition("samtools", IMAGE, 1, 512), client=client)
        batch.submit_job(client, batch.submit_request("j", "nope", "genostage-samtools"))
    for exc in (missing_definition.value, missing_queue.value):
        assert "\n" not in str(exc)


def _client_error(code: str, message: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "SubmitJob")


@pytest.mark.parametrize("message, want", [
    ("JobQueue arn:aws:batch:us-east-1:1:job-queue/spot not found.", "no such job queue"),
    ("Job definition genostage-x does not exist", "no such job definition"),
    ("Role arn:aws:iam::1:role/batch-job is invalid or cannot be assumed", "IAM role"),
    ("Could not find IAM role arn:aws:iam::1:role/AWSBatchServiceRole", "IAM role"),  # moto's words
])
def test_client_exceptions_are_translated(message: str, want: str) -> None:
    code = "InvalidParameterValue" if message.startswith("Could not") else "ClientException"
    exc = batch.client_error(_client_error(code, message + "\n(more)"), "submitting job j")
    assert isinstance(exc, NotFound) and want in str(exc) and "\n" not in str(exc)
    assert type(batch.client_error(_client_error("ClientException", "something else"), "x")) is GenostageError


class ThrottlingClient:
    """Answers 429 (or a throttling code) ``throttle`` times, then like Batch."""

    def __init__(self, throttle: int, code: str = "TooManyRequestsException", status: int = 429) -> None:
        self.throttle, self.code, self.status = throttle, code, status
        self.calls: List[Dict[str, Any]] = []

    def _maybe_throttle(self) -> None:
        if len(self.calls) <= self.throttle:
            raise _client_error(self.code, "Too Many Requests", self.status)

    def submit_job(self, **request: Any) -> Dict[str, Any]:
        self.calls.append(request)
        self._maybe_throttle()
        return {"jobId": f"id-{len(self.calls)}", "jobName": request["jobName"], "jobArn": "arn:j"}

    def describe_jobs(self, jobs: List[str]) -> Dict[str, Any]:
        self.calls.append({"jobs": jobs})
        self._maybe_throttle()
        return {"jobs": [{"jobId": j, "status": "RUNNING"} for j in jobs]}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: List[float] = []

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


@pytest.mark.parametrize("code, status", [("TooManyRequestsException", 429), ("ThrottlingException", 400),
                                          ("SomethingNew", 429)])
def test_submit_retries_throttling_with_jittered_backoff(code: str, status: int) -> None:
    client, clock = ThrottlingClient(4, code, status), FakeClock()
    backoff = batch.Backoff(budget=60, base=0.5, cap=4, sleep=clock.sleep, clock=lambda: clock.now,
                            rng=random.Random(1))
    job = batch.submit_job(client, batch.submit_request("j", "q", "d"), backoff=backoff)
    assert job["jobId"] == "id-5" and len(client.calls) == 5
    assert len(clock.pauses) == 4
    assert all(0 <= p <= min(4, 0.5 * 2 ** i) for i, p in enumerate(clock.pauses))
    assert len(set(clock.pauses)) == 4  # jittered, not a fixed schedule


def test_throttling_beyond_the_budget_gives_up_in_one_line() -> None:
    client, clock = ThrottlingClient(10_000), FakeClock()
    backoff = batch.Backoff(budget=30, base=1, cap=8, sleep=clock.sleep, clock=lambda: clock.now, rng=random.Random(2))
    with pytest.raises(TransferFailed, match=r"still throttled by AWS Batch after \d+ attempts") as info:
        batch.submit_job(client, batch.submit_request("j", "q", "d"), backoff=backoff)
    assert clock.now <= 30 and "\n" not in str(info.value)


def test_other_errors_are_not_retried() -> None:
    class Refusing:
        calls = 0

        def submit_job(self, **request: Any) -> Dict[str, Any]:
            Refusing.calls += 1
            raise _client_error("ClientException", "Job definition d does not exist")
    with pytest.raises(NotFound):
        batch.submit_job(Refusing(), batch.submit_request("j", "q", "d"), backoff=batch.Backoff(sleep=lambda s: None))
    assert Refusing.calls == 1


def test_describe_jobs_in_batches_of_100_through_throttling() -> None:
    client, clock = ThrottlingClient(2), FakeClock()
    ids = [f"job-{i}" for i in range(250)]
    backoff = batch.Backoff(sleep=clock.sleep, clock=lambda: clock.now, rng=random.Random(3))
    jobs = batch.describe_jobs(client, ids, backoff=backoff)
    assert [j["jobId"] for j in jobs] == ids
    sizes = [len(c["jobs"]) for c in client.calls]
    assert sizes == [100, 100, 100, 100, 50] and len(clock.pauses) == 2  # two throttled, then 3 batches


def test_payloads_over_batchs_limits_are_refused_with_their_size() -> None:
    big_env = {f"V{i}": "x" * 100 for i in range(80)}
    with pytest.raises(UsageError, match=r"containerOverrides is [\d,]+ characters, over AWS Batch's 8,192"):
        batch.submit_job(ThrottlingClient(0), batch.submit_request("j", "q", "d", environment=big_env))
    params = {f"p{i}": "s3://bucket/" + "k" * 200 for i in range(160)}
    with pytest.raises(UsageError, match=r"the SubmitJob request is [\d,]+ bytes, over AWS Batch's 30,720"):
        batch.submit_job(ThrottlingClient(0), batch.submit_request("j", "q", "d", parameters=params))
    with pytest.raises(UsageError, match="2 to 10,000 children, not 10,001"):
        batch.check_payload(batch.submit_request("j", "q", "d", array_size=10_001))
    with pytest.raises(UsageError, match="depends on 21 jobs; AWS Batch allows 20"):
        batch.check_payload(batch.submit_request("j", "q", "d", depends_on=[f"id{i}" for i in range(21)]))
    with pytest.raises(UsageError, match="job name"):
        batch.check_payload(batch.submit_request("bad name", "q", "d"))
    # just under the limits passes
    batch.check_payload(batch.submit_request("j", "q", "d", environment={"V": "x" * 8000}))
