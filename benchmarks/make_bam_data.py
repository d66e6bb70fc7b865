"""Make a coordinate-sorted, indexed BAM of simulated aligned paired reads (benchmark data).

Reads are sampled from a random reference with 0.5% substitutions, Illumina-style binned
qualities, NM/MD-free tags; records are written already sorted as SAM text piped into
``samtools view -b`` (no aligner run: `bwa mem` on 10M reads takes hours on 2 cores).

    python benchmarks/make_bam_data.py OUT.bam --reads 18000000 --level 3
    # parts of one sample, as per-chunk sorted alignments (same header, reads of their own):
    python benchmarks/make_bam_data.py part-3.bam --reads 2250000 --seed 3
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

READ_LEN = 150
BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
QUALS = np.frombuffer(b"F:,#", dtype=np.uint8)


def records(rng: np.random.Generator, name: str, ref: np.ndarray, n_frag: int, start_id: int, run: int = 1):
    frag_len = rng.normal(350, 40, n_frag).astype(np.int64).clip(READ_LEN, 600)
    p1 = np.sort(rng.integers(0, len(ref) - 700, n_frag))
    p2 = p1 + frag_len - READ_LEN
    pos = np.concatenate([p1, p2])
    mate = np.concatenate([p2, p1])
    tlen = np.concatenate([frag_len, -frag_len])
    flag = np.concatenate([np.full(n_frag, 99), np.full(n_frag, 147)])
    ids = np.concatenate([np.arange(n_frag), np.arange(n_frag)]) + start_id
    order = np.argsort(pos, kind="stable")
    batch = 200_000
    for lo in range(0, len(order), batch):
        sel = order[lo:lo + batch]
        idx = pos[sel, None] + np.arange(READ_LEN)
        seq = BASES[ref[idx]]
        mut = rng.random(seq.shape) < 0.005
        seq[mut] = BASES[rng.integers(0, 4, int(mut.sum()))]
        nm = mut.sum(axis=1)
        qual = QUALS[rng.choice(4, size=seq.shape, p=[0.86, 0.08, 0.05, 0.01])]
        seqb = seq.tobytes()
        qualb = qual.tobytes()
        lines = []
        for k, i in enumerate(sel):
            o = k * READ_LEN
            lines.append(
                f"SIM:{run}:HXXX:1:{1101 + ids[i] % 97}:{ids[i]}:{ids[i] % 30011}\t{flag[i]}\t{name}\t{pos[i] + 1}\t60\t150M\t=\t"
                f"{mate[i] + 1}\t{tlen[i]}\t{seqb[o:o + READ_LEN].decode()}\t{qualb[o:o + READ_LEN].decode()}"
                f"\tNM:i:{nm[k]}\tAS:i:{150 - 5 * nm[k]}\tRG:Z:s1\n")
        yield "".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--reads", type=int, default=18_000_000)
    ap.add_argument("--contigs", type=int, default=24)
    ap.add_argument("--genome", type=int, default=200_000_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--level", type=int, default=3, help="deflate level of the BAM (3 makes >= 1 GiB from 18M reads)")
    ap.add_argument("--seed", type=int, help="seed of the reads alone: files made with different seeds share the "
                                             "genome and header (the parts of one sample)")
    args = ap.parse_args()
    rng = np.random.default_rng(42)
    reads_rng = rng if args.seed is None else np.random.default_rng(args.seed)
    lens = rng.integers(args.genome // args.contigs // 2, args.genome // args.contigs * 3 // 2, args.contigs)
    names = [f"chr{i + 1}" for i in range(args.contigs)]
    header = "@HD\tVN:1.6\tSO:coordinate\n" + "".join(f"@SQ\tSN:{n}\tLN:{ln}\n" for n, ln in zip(names, lens))
    header += "@RG\tID:s1\tSM:sample1\tPL:ILLUMINA\n@PG\tID:sim\tPN:make_bam_data.py\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)  # a fresh machine has no data folder
    tmp = args.out + ".tmp"
    proc = subprocess.Popen(["samtools", "view", "-@", str(args.threads), "--output-fmt", f"bam,level={args.level}",
                             "-o", tmp, "-"],
                            stdin=subprocess.PIPE, text=True, bufsize=1 << 20)
    assert proc.stdin is not None
    proc.stdin.write(header)
    frags_total = args.reads // 2
    start = 0
    for name, ln in zip(names, lens):
        n_frag = int(frags_total * ln / lens.sum())
        ref = rng.integers(0, 4, int(ln), dtype=np.uint8)
        for text in records(reads_rng, name, ref, n_frag, start, 1 if args.seed is None else args.seed):
            proc.stdin.write(text)
        start += n_frag
        print(f"{name} done", file=sys.stderr, flush=True)
    proc.stdin.close()
    if proc.wait() != 0:
        sys.exit("samtools view failed")
    os.replace(tmp, args.out)
    subprocess.run(["samtools", "index", args.out], check=True)


if __name__ == "__main__":
    main()
