"""``make demo``: a real genostage job end to end against an embedded S3 server.

1. starts moto's S3 server on loopback;
2. makes a small random reference genome and simulated paired-end reads;
3. uploads them, then runs two ``genostage run`` jobs as a container would:
   an alignment job (``bwa index`` + ``bwa mem`` | ``samtools sort``) and a
   ``samtools stats`` job on the BAM it published;
4. runs ``genostage scatter`` on the local executor: the same reads cut into 4
   chunks, each aligned by a child job with the same command, the parts merged
   and the conservation proof checked; the gathered BAM holds the same records
   as job 1's (the alignment is deterministic: ``bwa mem -I`` fixes the insert
   size model that bwa would otherwise estimate from each batch of reads);
5. downloads the results to ``demo-output/`` and prints what they contain.
"""
from __future__ import annotations

from . import require_extra

require_extra("genostage.testing.demo")  # before anything that needs the extra

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

from .s3server import moto_server

BUCKET = "genostage-demo"
COMPLEMENT = str.maketrans("ACGT", "TGCA")
PARTS = 4
# the same alignment in job 1 and in every scatter child: a fixed insert size model (-I) makes
# bwa's result independent of how the reads are cut into batches or chunks
BWA_MEM = r"bwa mem -t {threads} -I 300,10 -R '@RG\tID:sample\tSM:sample' demo {r1} {r2} 2>/dev/null"


def make_reference(path: Path, rng: random.Random, contigs: int = 3, length: int = 60_000) -> Dict[str, str]:
    seqs = {f"chr{i + 1}": "".join(rng.choice("ACGT") for _ in range(length)) for i in range(contigs)}
    with open(path, "w") as fh:
        for name, seq in seqs.items():
            fh.write(f">{name}\n")
            for i in range(0, len(seq), 60):
                fh.write(seq[i:i + 60] + "\n")
    return seqs


def _mutate(seq: str, rng: random.Random, rate: float = 0.01) -> str:
    return "".join(rng.choice("ACGT") if rng.random() < rate else b for b in seq)


def _quality(n: int, rng: random.Random) -> str:
    # falls off towards the 3' end, as Illumina qualities do
    return "".join(chr(33 + max(2, min(41, int(38 - 10 * i / n + rng.gauss(0, 3))))) for i in range(n))


def make_reads(r1: Path, r2: Path, seqs: Dict[str, str], rng: random.Random, pairs: int = 4000,
               read_len: int = 100, insert: int = 300) -> None:
    names = list(seqs)
    with open(r1, "w") as f1, open(r2, "w") as f2:
        for i in range(pairs):
            seq = seqs[rng.choice(names)]
            start = rng.randrange(0, len(seq) - insert)
            frag = seq[start:start + insert]
            a = _mutate(frag[:read_len], rng)
            b = _mutate(frag[-read_len:].translate(COMPLEMENT)[::-1], rng)
            f1.write(f"@pair{i}/1\n{a}\n+\n{_quality(read_len, rng)}\n")
            f2.write(f"@pair{i}/2\n{b}\n+\n{_quality(read_len, rng)}\n")


def genostage(args: List[str], env: Dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "genostage", *args]
    shown = " ".join(a if " " not in a else repr(a) for a in ["genostage", *args])
    print(f"\n$ {shown}", flush=True)
    subprocess.run(cmd, env=env, check=True)


def main() -> int:
    for tool in ("samtools", "bwa"):
        if shutil.which(tool) is None:
            print(f"demo: {tool} is not installed (make demo installs it)", file=sys.stderr)
            return 1
    out = Path("demo-output")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    work = Path(tempfile.mkdtemp(prefix="genostage-demo-"))
    rng = random.Random(42)
    with moto_server() as s3:
        env = {**os.environ, **s3.env(), "GENOSTAGE_SCRATCH": str(work / "scratch"),
               "GENOSTAGE_PROGRESS_INTERVAL": "2"}
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        print(f"1. started an S3 server (moto) on {s3.endpoint_url}, bucket s3://{BUCKET}")
        seqs = make_reference(work / "demo.fa", rng)
        make_reads(work / "sample_R1.fastq", work / "sample_R2.fastq", seqs, rng)
        subprocess.run(["samtools", "faidx", str(work / "demo.fa")], check=True)
        for name, key in (("demo.fa", "refs/demo/demo.fa"), ("demo.fa.fai", "refs/demo/demo.fa.fai"),
                          ("sample_R1.fastq", "reads/sample_R1.fastq"), ("sample_R2.fastq", "reads/sample_R2.fastq")):
            client.upload_file(str(work / name), BUCKET, key)
        print("2. made a 180 kb reference (3 contigs) and 4,000 simulated read pairs, uploaded to "
              f"s3://{BUCKET}/refs/demo/ and s3://{BUCKET}/reads/")
        print("3. job 1: align the reads (bwa mem | samtools sort) inside genostage run")
        genostage(["run", "-i", f"ref=s3://{BUCKET}/refs/demo/", "-i", f"r1=s3://{BUCKET}/reads/sample_R1.fastq",
                   "-i", f"r2=s3://{BUCKET}/reads/sample_R2.fastq",
                   "-o", f"bam=s3://{BUCKET}/aligned/sample.bam", "-o", f"bai=s3://{BUCKET}/aligned/sample.bam.bai",
                   "--shell", "--",
                   "bwa index -p demo {ref}/demo.fa 2>/dev/null && " + BWA_MEM.replace("{threads}", "2")
                   + " | samtools sort -o {bam} - && samtools index -o {bai} {bam}"], env)
        print("4. job 2: samtools stats on the published BAM (its index is staged beside it)")
        genostage(["run", "-i", f"bam=s3://{BUCKET}/aligned/sample.bam", "-i", f"bai=s3://{BUCKET}/aligned/sample.bam.bai",
                   "-i", f"ref=s3://{BUCKET}/refs/demo/",
                   "-o", f"stats=s3://{BUCKET}/results/sample.stats.txt", "--stdout", "stats",
                   "--", "samtools", "stats", "--reference", "{ref}/demo.fa", "{bam}"], env)
        _scatter(client, env, work)
        genostage(["cp", f"s3://{BUCKET}/", str(out) + "/", "--no-progress"], env)
        _report(out, client)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _records(bam: Path) -> List[str]:
    """A BAM's records as sorted SAM lines (the header, with its @PG lines, left out)."""
    out = subprocess.run(["samtools", "view", str(bam)], check=True, capture_output=True, text=True).stdout
    return sorted(out.splitlines())


def _get_json(client, key: str) -> Dict[str, Any]:  # type: ignore[no-untyped-def]
    return dict(json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()))


def _scatter(client, env: Dict[str, str], work: Path) -> None:  # type: ignore[no-untyped-def]
    print(f"5. scatter: the same reads in {PARTS} chunks, aligned, merged, proven (children run here, "
          "each a genostage run job)")
    # children's logs under the demo's temporary directory (removed at the end)
    tmp = work / "tmp"
    tmp.mkdir(exist_ok=True)
    genostage(["scatter", "-i", f"reads=s3://{BUCKET}/reads/sample_R1.fastq,s3://{BUCKET}/reads/sample_R2.fastq",
               "--parts", str(PARTS), "-r", f"ref=s3://{BUCKET}/refs/demo/",
               "-o", f"bam=s3://{BUCKET}/scatter/sample.bam", "--gather", "bam=merge", "--shell", "--",
               "bwa index -p demo {ref}/demo.fa 2>/dev/null && "
               + BWA_MEM.replace("{threads}", "1").replace("{r1}", "{reads.1}").replace("{r2}", "{reads.2}")
               + " | samtools sort -o {bam} -"], {**env, "TMPDIR": str(tmp)})
    key = "scatter/sample.bam.manifest.json"
    manifest = _get_json(client, key)
    info = manifest["scatter"]
    spec = _get_json(client, "scatter/sample.bam.scatter/spec.json")
    exact = _get_json(client, "scatter/sample.bam.scatter/plan.json").get("header", {}).get("exact")
    how = ("a pair this small is read whole and cut at exact record counts" if exact else
           f"at most {PARTS} x 1 MiB of ranged reads")
    print(f"\n   the scatter's spec: s3://{BUCKET}/scatter/sample.bam.scatter/spec.json: {spec['children']} children, "
          f"a FASTQ chunk plan (plan.json) made by reading {spec.get('planning_bytes_read', 0):,} bytes ({how})")
    print("   children (each child's manifest under scatter/sample.bam.scatter/children/):")
    for child in info["children"]:
        rec = child.get("records") or {}
        reads = (rec.get("in") or {}).get("reads")
        out = ((rec.get("out") or {}).get("bam") or {}).get("primary")
        print(f"     child {child['index']}: {child['status']}, attempt {child['attempt']}, {reads:,} reads in, "
              f"{out:,} primary alignments out")
    proof = info["conservation"]
    gathered = proof["gathered"]["bam"]
    print(f"   conservation: {proof['reads_in']:,} reads in = {proof['outputs']['bam']:,} primary alignments in the "
          f"parts = {gathered['primary']:,} primary alignments gathered ({gathered['records']:,} records in all): "
          f"{'checked, every read came through exactly once' if proof['checked'] else 'not checked'}")
    t = manifest["timings"]
    print(f"   final manifest (s3://{BUCKET}/{key}): status {manifest['status']}, exit status "
          f"{manifest['exit_status']}, children {', '.join(f'{v} {k}' for k, v in sorted(info['summary'].items()))}; "
          f"the gather job staged the parts in {t['stage_in']:.2f} s, published in {t['stage_out']:.2f} s, "
          f"{t['total']:.2f} s in all")
    for name, bam_key in (("job1.bam", "aligned/sample.bam"), ("scatter.bam", "scatter/sample.bam")):
        client.download_file(BUCKET, bam_key, str(work / name))
    one, scattered = _records(work / "job1.bam"), _records(work / "scatter.bam")
    if one != scattered:
        raise SystemExit(f"demo: the gathered BAM's records differ from job 1's ({len(scattered):,} against "
                         f"{len(one):,})")
    print(f"   the gathered BAM holds exactly job 1's {len(one):,} records (sorted samtools view lines compared; "
          "only the header's @PG lines differ)")


def _report(out: Path, client) -> None:  # type: ignore[no-untyped-def]
    print(f"\n6. everything in the bucket, downloaded to {out}/:")
    objects = client.list_objects_v2(Bucket=BUCKET)["Contents"]
    width = max(len(obj["Key"]) for obj in objects)
    for obj in objects:
        print(f"   s3://{BUCKET}/{obj['Key']:<{width}} {obj['Size']:>9,} bytes")
    stats = (out / "results" / "sample.stats.txt").read_text().splitlines()
    print("\n   samtools stats summary (results/sample.stats.txt):")
    for line in stats:
        if line.startswith("SN\t") and any(k in line for k in ("raw total sequences", "reads mapped:",
                                                                 "reads properly paired", "error rate")):
            print("     " + line[3:].replace("\t", " "))
    manifest = json.loads((out / "results" / "sample.stats.txt.manifest.json").read_text())
    print("\n   manifest (results/sample.stats.txt.manifest.json, named after the job's first output):")
    print(f"     status {manifest['status']}, exit status {manifest['exit_status']}, "
          f"command {' '.join(manifest['commands'][0]['command'])}")
    for entry in manifest["inputs"] + manifest["outputs"]:
        sums = entry.get("checksums") or {}
        print(f"     {entry['name']:<6} {entry['uri']:<44} {entry['size']:>9,} bytes  "
              f"crc64nvme {sums.get('crc64nvme', '(per file)')}  verified by {entry.get('verified', 'per file')}")
    print("     timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in manifest["timings"].items()))
    print("\nThe scratch directories of every job were removed; the server stops now.")


if __name__ == "__main__":
    sys.exit(main())
