"""Property: for any BAM blocking and any cut count, the chunks' records concatenate to the input's."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import List

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genostage.codec import _bgzf as K
from genostage.codec.bgzf import EOF_BLOCK, compress_block
from genostage.split.bam import split_bam
from genostage.store import Stores

HEADER_TEXT = b"@HD\tVN:1.6\tSO:queryname\n@SQ\tSN:c1\tLN:5000\n"


def _header() -> bytes:
    name = b"c1\0"
    return b"BAM\x01" + struct.pack("<i", len(HEADER_TEXT)) + HEADER_TEXT + struct.pack("<i", 1) + \
        struct.pack("<i", len(name)) + name + struct.pack("<i", 5000)


def _record(i: int, seq_len: int, group: int) -> bytes:
    name = b"g%05d" % group
    mapped = i % 5 != 0
    cigar = struct.pack("<I", seq_len << 4) if mapped else b""
    body = struct.pack("<iiBBHHHiiii", 0 if mapped else -1, (i * 7) % 4900 if mapped else -1, len(name) + 1, 30,
                       4680, 1 if mapped else 0, 0 if mapped else 4, seq_len, -1, -1, 0)
    body += name + b"\0" + cigar + b"\x12" * ((seq_len + 1) // 2) + bytes([i % 40]) * seq_len
    return struct.pack("<i", len(body)) + body


def _inflate_all(raw: bytes) -> bytes:
    """All of a BGZF file's data (gzip.decompress is quadratic in the number of members)."""
    nxt, _n, status, offsets = K.walk_blocks(raw, 0, True)
    assert status == 0 and nxt == len(raw) and raw.endswith(EOF_BLOCK)
    return b"".join(K.inflate(raw, o) for o in offsets or [])


def _split_payload(path: Path) -> bytes:
    data = _inflate_all(path.read_bytes())
    assert data.startswith(_header())
    return data[len(_header()):]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 400), sizes=st.lists(st.integers(1, 0xFF00), min_size=1, max_size=8),
       parts=st.integers(1, 12), by_name=st.booleans(), seed=st.integers(0, 1000))
def test_split_round_trip(tmp_path_factory, n: int, sizes: List[int], parts: int, by_name: bool, seed: int) -> None:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("rt")
    records = b"".join(_record(i, 20 + (i * seed) % 3000, (i + seed) // 3) for i in range(n))
    data = _header() + records
    blocks, pos, k = [], 0, 0
    while pos < len(data):
        step = sizes[k % len(sizes)]
        blocks.append(compress_block(data[pos:pos + step], 1))
        pos += step
        k += 1
    src = tmp / "in.bam"
    src.write_bytes(b"".join(blocks) + EOF_BLOCK)
    report = split_bam(str(src), str(tmp / "out"), Stores(), parts=parts, by_name=by_name)
    payloads = [_split_payload(Path(p["path"])) for p in report["parts"]]
    assert len(payloads) == parts
    assert b"".join(payloads) == records
    names = {}
    pos = 0
    while pos < len(records):
        names[pos] = records[pos + 36:pos + 42]
        pos += 4 + struct.unpack_from("<i", records, pos)[0]
    names[len(records)] = b"end"
    order = sorted(names)
    boundary = 0
    for pl in payloads[:-1]:
        boundary += len(pl)
        assert boundary in names  # every part starts at a record
        if by_name and 0 < boundary < len(records):
            before = order[order.index(boundary) - 1]
            assert names[before] != names[boundary]
