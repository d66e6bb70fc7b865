"""Build the base and samtools images here (no docker: debootstrap + podman, vfs, chroot) and run
``genostage run ... -- samtools stats`` inside the samtools image against the moto S3 server on the
host's loopback; the published stats must equal ``samtools stats`` run on the host.

Each run uses its own container storage (``CONTAINERS_STORAGE_CONF``), so concurrent runs on one
machine cannot disturb each other and nothing piles up; the debootstrap root file system, the slow
and network-bound part, is cached under /var/tmp/genostage-containers between runs.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from genostage.testing.s3server import moto_server

pytestmark = [pytest.mark.containers, pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parent.parent
MAX_SAMTOOLS_IMAGE = 300 * 1000 * 1000  # bytes


def _need(*commands: str) -> None:
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run `make container-deps` (make test does)")
    if os.geteuid() != 0:
        pytest.fail("building images with debootstrap and podman --isolation chroot needs root")


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, str]]:
    """Environment giving podman and buildah a private vfs storage for this run."""
    _need("podman", "buildah", "debootstrap", "samtools")
    # not under /tmp's pytest dirs: vfs layers are whole root file systems; removed at the end
    root = Path(os.environ.get("GENOSTAGE_CONTAINER_CACHE", "/var/tmp/genostage-containers")) / f"storage-{uuid.uuid4().hex[:12]}"
    root.mkdir(parents=True)
    conf = root / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{root / "graph"}"\nrunroot = "{root / "run"}"\n')
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)}
    try:
        yield env
    finally:
        subprocess.run(["buildah", "--storage-driver", "vfs", "rm", "--all"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)])


@pytest.fixture(scope="module")
def samtools_image(storage: Dict[str, str]) -> Dict[str, object]:
    """``genostage image build samtools`` (builds the base first) through the CLI."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "genostage", "image", "build", "samtools", "--engine", "podman",
                           "--repo", str(REPO)], env=storage, capture_output=True, text=True, errors="replace")
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = proc.stdout.strip().splitlines()[-1]
    built = [line for line in proc.stderr.splitlines() if line.startswith("genostage: built ")]
    sys.stderr.write("\n" + "\n".join(built) + f"\n(base + samtools, {seconds:.0f} s in all)\n")
    return {"tag": "genostage/samtools:1.16.1", "report": report, "log": proc.stderr}


def _podman(env: Dict[str, str], *args: str) -> str:
    proc = subprocess.run(["podman", "--storage-driver", "vfs", *args], env=env, capture_output=True, text=True,
                          errors="replace")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_images_are_small_labelled_and_report_their_size(storage: Dict[str, str], samtools_image: Dict[str, object]) -> None:
    size = int(_podman(storage, "image", "inspect", "--format", "{{.Size}}", "genostage/samtools:1.16.1"))
    assert size < MAX_SAMTOOLS_IMAGE, f"samtools image is {size} bytes"
    assert str(size) in str(samtools_image["report"])  # the build reports the size it measured
    assert "built genostage/base:" in str(samtools_image["log"])
    labels = json.loads(_podman(storage, "image", "inspect", "--format", "{{json .Labels}}", "genostage/samtools:1.16.1"))
    assert labels["org.opencontainers.image.version"] == "1.16.1"
    assert labels["software.version"] == "1.16.1"
    assert labels["org.opencontainers.image.title"] == "genostage-samtools"
    config = json.loads(_podman(storage, "image", "inspect", "--format", "{{json .Config}}", "genostage/samtools:1.16.1"))
    assert config["Entrypoint"] == ["genostage", "run"]
    assert config["User"] == "1000:1000"
    assert "GENOSTAGE_SCRATCH=/scratch" in config["Env"]


def _small_bam(path: Path) -> None:
    rng = random.Random(7)
    ref = "".join(rng.choice("ACGT") for _ in range(5000))
    lines = ["@HD\tVN:1.6\tSO:coordinate", f"@SQ\tSN:chr1\tLN:{len(ref)}"]
    reads = []
    for i in range(400):
        pos = rng.randrange(0, len(ref) - 100)
        seq = list(ref[pos:pos + 100])
        for _ in range(rng.randrange(0, 3)):
            seq[rng.randrange(100)] = rng.choice("ACGT")
        flag = rng.choice([0, 16, 1024]) if i % 50 else 4
        qual = "".join(chr(33 + rng.randrange(2, 41)) for _ in range(100))
        reads.append((pos, f"r{i}\t{flag}\tchr1\t{pos + 1}\t{rng.randrange(61)}\t100M\t*\t0\t0\t{''.join(seq)}\t{qual}"))
    lines += [r for _, r in sorted(reads)]
    sam = path.with_suffix(".sam")
    sam.write_text("\n".join(lines) + "\n")
    subprocess.run(["samtools", "view", "-b", "-o", str(path), str(sam)], check=True)


def _without_header(stats: str) -> List[str]:
    """Drop the lines naming the command and the date; everything else must match."""
    return [line for line in stats.splitlines()
            if not line.startswith(("# This file was produced by samtools stats", "# The command line was"))]


def test_genostage_run_samtools_stats_inside_the_image(storage: Dict[str, str], samtools_image: Dict[str, object],
                                                       tmp_path: Path) -> None:
    bam = tmp_path / "x.bam"
    _small_bam(bam)
    expected = subprocess.run(["samtools", "stats", str(bam)], check=True, capture_output=True, text=True).stdout
    bucket = f"containers-{uuid.uuid4().hex[:12]}"
    with moto_server() as s3:
        client = s3.client()
        client.create_bucket(Bucket=bucket)
        client.upload_file(str(bam), bucket, "in/x.bam")
        name = subprocess.run(["buildah", "--storage-driver", "vfs", "from", "--pull-never",
                               "--name", f"gs-test-{uuid.uuid4().hex[:8]}", str(samtools_image["tag"])],
                              env=storage, check=True, capture_output=True, text=True).stdout.strip()
        env_args: List[str] = []
        for key, value in s3.env().items():
            env_args += ["--env", f"{key}={value}"]
        run = subprocess.run(
            ["buildah", "--storage-driver", "vfs", "run", "--isolation", "chroot", "--network", "host",
             *env_args, name, "--",
             "genostage", "run", "-i", f"bam=s3://{bucket}/in/x.bam", "-o", f"stats=s3://{bucket}/out/x.stats",
             "--stdout", "stats", "--", "samtools", "stats", "{bam}"],
            env=storage, capture_output=True, text=True, errors="replace", timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        published = client.get_object(Bucket=bucket, Key="out/x.stats")["Body"].read().decode()
        manifest = json.loads(client.get_object(Bucket=bucket, Key="out/x.stats.manifest.json")["Body"].read())
        # the job ran as the image's non-root user and left no scratch behind
        leftover = subprocess.run(["buildah", "--storage-driver", "vfs", "run", "--isolation", "chroot",
                                   "--network", "host", name, "--", "sh", "-c", "id -u; ls -A /scratch"],
                                  env=storage, check=True, capture_output=True, text=True).stdout.split()
        subprocess.run(["buildah", "--storage-driver", "vfs", "rm", name], env=storage, capture_output=True)
    assert "SN\traw total sequences:\t400" in published
    assert _without_header(published) == _without_header(expected)
    assert len(_without_header(published)) > 100
    assert manifest["exit_status"] == 0 and manifest["status"] == "succeeded"
    assert manifest["inputs"] and manifest["outputs"]
    assert leftover == ["1000"], leftover


@pytest.fixture(scope="module")
def bwa_image(storage: Dict[str, str], samtools_image: Dict[str, object]) -> Dict[str, object]:
    """``genostage image build bwa`` on the base image the samtools build made (one more build)."""
    from genostage import __version__

    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "genostage", "image", "build", "bwa", "--engine", "podman",
                           "--repo", str(REPO), "--base", f"genostage/base:{__version__}"],
                          env=storage, capture_output=True, text=True, errors="replace")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    sys.stderr.write(f"\n{proc.stdout.strip()} ({time.monotonic() - started:.0f} s)\n")
    return {"tag": "genostage/bwa:0.7.17", "report": proc.stdout.strip()}


def test_the_bwa_job_definition_runs_inside_the_bwa_image(storage: Dict[str, str], bwa_image: Dict[str, object],
                                                         tmp_path: Path) -> None:
    """The bwa template's command, substituted as Batch does, run by the image's entrypoint:
    bwa mem | samtools sort inside the image, the reference through the node cache (/cache)."""
    from genostage.deploy import batch
    from tests.test_batch import _genome, _upload_tree, substitute

    data = _genome(tmp_path / "refs")
    definition = batch.job_definition("bwa", str(bwa_image["tag"]), vcpus=2, memory=1024)
    bucket = f"containers-{uuid.uuid4().hex[:12]}"
    with moto_server() as s3:
        client = s3.client()
        client.create_bucket(Bucket=bucket)
        _upload_tree(client, bucket, tmp_path / "refs", "refs/tiny/")
        _upload_tree(client, bucket, data["reads"], "reads/")
        params = {**definition["parameters"], "reference": f"reference=s3://{bucket}/refs/tiny/", "fasta": "tiny.fa",
                  "sample": "S1", "reads1": f"reads1=s3://{bucket}/reads/r1.fq.gz",
                  "reads2": f"reads2=s3://{bucket}/reads/r2.fq.gz", "bam": f"bam=s3://{bucket}/aln/S1.bam",
                  "bai": f"bai=s3://{bucket}/aln/S1.bam.bai"}
        name = subprocess.run(["buildah", "--storage-driver", "vfs", "from", "--pull-never",
                               "--name", f"gs-test-{uuid.uuid4().hex[:8]}", str(bwa_image["tag"])],
                              env=storage, check=True, capture_output=True, text=True).stdout.strip()
        env_args: List[str] = []
        environment = {e["name"]: e["value"] for e in definition["containerProperties"]["environment"]}
        for key, value in {**environment, **s3.env()}.items():
            env_args += ["--env", f"{key}={value}"]
        run = subprocess.run(
            ["buildah", "--storage-driver", "vfs", "run", "--isolation", "chroot", "--network", "host",
             *env_args, name, "--", "genostage", "run",
             *substitute(definition["containerProperties"]["command"], params)],
            env=storage, capture_output=True, text=True, errors="replace", timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        cached = subprocess.run(["buildah", "--storage-driver", "vfs", "run", "--isolation", "chroot",
                                 name, "--", "sh", "-c", "ls -A /cache"],
                                env=storage, check=True, capture_output=True, text=True).stdout.split()
        subprocess.run(["buildah", "--storage-driver", "vfs", "rm", name], env=storage, capture_output=True)
        for key in ("aln/S1.bam", "aln/S1.bam.bai"):
            client.download_file(bucket, key, str(tmp_path / key.split("/")[-1]))
    header = subprocess.run(["samtools", "view", "-H", str(tmp_path / "S1.bam")], check=True, capture_output=True,
                            text=True).stdout
    assert "SO:coordinate" in header and "@RG\tID:S1\tSM:S1" in header and "bwa mem -t 2" in header
    stats = subprocess.run(["samtools", "idxstats", str(tmp_path / "S1.bam")], check=True, capture_output=True,
                           text=True).stdout
    assert int(stats.split("\t")[2]) > 2800  # mapped reads, read through the published index
    assert cached, "the reference did not go through the node cache"
