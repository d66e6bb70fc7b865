"""A realistic Illumina-like paired FASTQ generator (numpy, no external tools).

Reads are sampled from a random reference (41% GC) with a fragment-length
distribution; R2 is the reverse complement of the fragment's other end.
Qualities follow a per-read quality level, a position-dependent decline
towards the 3' end, autocorrelated noise and occasional quality drops, then
Illumina 8-level binning (2, 6, 15, 22, 27, 33, 37, 40). Sequencing errors
follow the qualities; Q2 calls become N. Headers are Casava 1.8 style with
lane/tile/x/y coordinates and an index in the comment.
"""
from __future__ import annotations

import argparse
import os
from typing import BinaryIO, Optional

import numpy as np

BINS = np.array([2, 6, 15, 22, 27, 33, 37, 40])
COMP = bytes.maketrans(b"ACGTN", b"TGCAN")


def _binned(q: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(BINS, q, side="left").clip(0, len(BINS) - 1)
    lower = BINS[np.maximum(idx - 1, 0)]
    upper = BINS[idx]
    return np.where((q - lower) < (upper - q), lower, upper)


def _qualities(rng: np.random.Generator, n: int, length: int, mate: int) -> np.ndarray:
    pos = np.arange(length)
    level = rng.normal(36.0 - 1.5 * mate, 2.5, size=(n, 1))
    decline = (pos / length) ** 2.2 * rng.uniform(4, 14, size=(n, 1))
    noise = np.empty((n, length))
    e = rng.normal(0, 3.0, size=n)
    for i in range(length):  # AR(1) noise along the read
        e = 0.7 * e + rng.normal(0, 2.2, size=n)
        noise[:, i] = e
    q = level - decline + noise
    drops = rng.random((n, length)) < 0.004  # sporadic low-quality calls
    q[drops] = rng.uniform(2, 12, size=drops.sum())
    tail = rng.random(n) < 0.03  # a few reads fail towards the end (Illumina 'B-tails')
    start = rng.integers(length // 2, length, size=n)
    q[tail[:, None] & (pos[None, :] >= start[:, None])] = 2
    return _binned(np.clip(np.rint(q), 2, 41).astype(np.int64))


def _apply_errors(rng: np.random.Generator, seqs: np.ndarray, quals: np.ndarray) -> np.ndarray:
    perr = 10.0 ** (-quals / 10.0)
    err = rng.random(seqs.shape) < perr
    bases = np.frombuffer(b"ACGT", dtype=np.uint8)
    out = seqs.copy()
    out[err] = bases[rng.integers(0, 4, size=err.sum())]
    out[quals <= 2] = ord("N")
    return out


def generate(r1: str, r2: Optional[str], size: int, read_length: int = 150, seed: int = 1,
             genome_size: int = 20_000_000, batch: int = 20000) -> int:
    """Write about ``size`` bytes of R1 (and as much R2); returns the number of records."""
    rng = np.random.default_rng(seed)
    genome = rng.choice(np.frombuffer(b"ACGT", dtype=np.uint8), size=genome_size, p=[0.295, 0.205, 0.205, 0.295])
    comp = np.zeros(256, dtype=np.uint8)
    comp[list(b"ACGTN")] = list(b"TGCAN")
    index = b"1:N:0:CGATGTTT+AGGCTATA"
    written = 0
    records = 0
    tile_read = 0
    f1: BinaryIO = open(r1, "wb")
    f2: Optional[BinaryIO] = open(r2, "wb") if r2 else None
    try:
        while written < size:
            n = batch
            frag = rng.normal(350, 60, size=n).astype(np.int64).clip(read_length, 800)
            start = rng.integers(0, genome_size - 800, size=n)
            idx = start[:, None] + np.arange(read_length)[None, :]
            s1 = genome[idx]
            idx2 = (start + frag - 1)[:, None] - np.arange(read_length)[None, :]
            s2 = comp[genome[idx2]]
            flip = rng.random(n) < 0.5
            s1[flip], s2[flip] = s2[flip].copy(), s1[flip].copy()
            q1 = _qualities(rng, n, read_length, 0)
            s1 = _apply_errors(rng, s1, q1)
            q1c = (q1 + 33).astype(np.uint8)
            lanes = 1 + (tile_read // 2_000_000) % 4
            tiles = 1101 + (tile_read // 400_000) % 78
            xs = rng.integers(1000, 32000, size=n)
            ys = np.sort(rng.integers(1000, 37000, size=n))
            names = [b"@A00953:187:HVKJWDSXY:%d:%d:%d:%d" % (lanes, tiles, x, y) for x, y in zip(xs.tolist(), ys.tolist())]
            seq_lines = s1.tobytes()
            qual_lines = q1c.tobytes()
            L = read_length
            out = b"".join(b"%s %s\n%s\n+\n%s\n" % (names[i], index, seq_lines[i * L:(i + 1) * L], qual_lines[i * L:(i + 1) * L])
                           for i in range(n))
            f1.write(out)
            written += len(out)
            if f2 is not None:
                q2 = _qualities(rng, n, read_length, 1)
                s2 = _apply_errors(rng, s2, q2)
                seq2 = s2.tobytes()
                qual2 = (q2 + 33).astype(np.uint8).tobytes()
                idx2b = b"2" + index[1:]
                f2.write(b"".join(b"%s %s\n%s\n+\n%s\n" % (names[i], idx2b, seq2[i * L:(i + 1) * L], qual2[i * L:(i + 1) * L])
                                  for i in range(n)))
            records += n
            tile_read += n
    finally:
        f1.close()
        if f2 is not None:
            f2.close()
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("r1")
    ap.add_argument("r2", nargs="?")
    ap.add_argument("--size", type=float, default=1.0, help="GiB of R1")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    n = generate(args.r1, args.r2, int(args.size * (1 << 30)), seed=args.seed)
    print(f"{n} records -> {args.r1} ({os.path.getsize(args.r1)} bytes)")


if __name__ == "__main__":
    main()
