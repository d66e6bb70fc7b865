"""Small FASTQ makers shared by the FASTQ tests."""
from __future__ import annotations

import random
from typing import List, Optional, Tuple


_QUALS = range(35, 75)


def records(n: int, seed: int = 0, min_len: int = 1, max_len: int = 60, mate: Optional[int] = None,
            crlf: bool = False) -> List[bytes]:
    rng = random.Random(seed)
    out = []
    nl = b"\r\n" if crlf else b"\n"
    for i in range(n):
        length = rng.randint(min_len, max_len)
        seq = bytes(rng.choices(b"ACGTN", k=length))
        qual = bytes(rng.choices(_QUALS, k=length))
        name = b"read%d" % i + (b"/%d" % mate if mate else b"")
        comment = b" %d:N:0:ACGT" % (mate or 1) if rng.random() < 0.5 else b""
        plus = b"+" + (name if rng.random() < 0.2 else b"")
        out.append(b"@" + name + comment + nl + seq + nl + plus + nl + qual + nl)
    return out


def fastq(n: int, **kw: object) -> bytes:
    return b"".join(records(n, **kw))  # type: ignore[arg-type]


def pair(n: int, seed: int = 0, **kw: object) -> Tuple[bytes, bytes]:
    return fastq(n, seed=seed, mate=1, **kw), fastq(n, seed=seed + 1000, mate=2, **kw)
