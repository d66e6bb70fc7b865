"""genostage.compress: format detection, readers (multi-member gzip, BGZF), threaded writers."""
from __future__ import annotations

import gzip
import io
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import List

import pytest

from genostage.codec import accel, bgzf
from genostage.codec import compress as C
from genostage.errors import FormatError

DATA = b"".join(b"@r%d\nACGTACGTAC\n+\nIIIIIIIIII\n" % i for i in range(20000))


def pieces(raw: bytes, fmt: str) -> List[C.Piece]:
    return list(C.iter_pieces(io.BytesIO(raw), fmt, "x.gz"))


def bgzf_bytes(data: bytes, size: int = 30000) -> bytes:
    return b"".join(bgzf.compress_block(data[i:i + size]) for i in range(0, len(data), size)) + bgzf.EOF_BLOCK


def test_detect() -> None:
    assert C.detect(b"@r1\nAC") == "plain"
    assert C.detect(gzip.compress(b"x")) == "gzip"
    assert C.detect(bgzf.compress_block(b"x")) == "bgzf"
    assert C.detect(b"") == "plain"


@pytest.mark.parametrize("read", [1 << 10, 1 << 16])
def test_multi_member_gzip(monkeypatch: pytest.MonkeyPatch, read: int) -> None:
    monkeypatch.setattr(C, "GZIP_READ", read)
    raw = gzip.compress(DATA[:100000]) + gzip.compress(b"") + gzip.compress(DATA[100000:])
    got = pieces(raw, "gzip")
    assert b"".join(p.data for p in got) == DATA
    assert got[-1].cend == len(raw)
    assert all(a.cend <= b.cend for a, b in zip(got, got[1:]))


def test_truncated_and_corrupt_gzip() -> None:
    raw = gzip.compress(DATA)
    with pytest.raises(FormatError, match="truncated gzip"):
        pieces(raw[:len(raw) // 2], "gzip")
    bad = bytearray(raw)
    bad[len(bad) // 2] ^= 0xFF
    with pytest.raises(FormatError):
        pieces(bytes(bad), "gzip")
    with pytest.raises(FormatError, match="after the end of a gzip member|truncated gzip"):
        pieces(raw + b"garbage", "gzip")


def test_bgzf_pieces_keep_raw_blocks() -> None:
    raw = bgzf_bytes(DATA)
    got = pieces(raw, "bgzf")
    assert b"".join(p.data for p in got) == DATA
    for p in got:
        assert p.blocks is not None
        assert sum(u for _, u in p.blocks) == len(p.data)
        assert sum(len(r) for r, _ in p.blocks) == p.cend - p.cstart
    with pytest.raises(FormatError, match="truncated BGZF"):
        pieces(raw[:-40], "bgzf")
    bad = bytearray(raw)
    bad[100] ^= 0xFF
    with pytest.raises(FormatError, match="corrupt BGZF"):
        pieces(bytes(bad), "bgzf")


@pytest.mark.parametrize("kind", ["none", "gzip", "bgzf"])
@pytest.mark.parametrize("threads", [1, 3])
def test_writers_round_trip(kind: str, threads: int) -> None:
    out = io.BytesIO()
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    w = C.make_writer(out, kind, 6, pool, threads)
    for i in range(0, len(DATA), 70001):
        w.write(DATA[i:i + 70001])
    w.close()
    if pool:
        pool.shutdown()
    raw = out.getvalue()
    assert (gzip.decompress(raw) if kind != "none" else raw) == DATA
    if kind == "bgzf":
        assert raw.endswith(bgzf.EOF_BLOCK)
        assert sum(1 for _ in bgzf.iter_blocks(io.BytesIO(raw))) > 1


def test_empty_gzip_output_is_valid() -> None:
    out = io.BytesIO()
    w = C.make_writer(out, "gzip")
    w.close()
    assert gzip.decompress(out.getvalue()) == b""


def test_without_accelerators() -> None:
    with accel.use("zlib"):
        assert C.backend() == "zlib"
        member = C.gzip_member(DATA, 6)
        assert zlib.decompress(member, 31) == DATA
        assert b"".join(p.data for p in pieces(gzip.compress(DATA), "gzip")) == DATA
        assert b"".join(p.data for p in pieces(bgzf_bytes(DATA), "bgzf")) == DATA


def test_prefetch_propagates_errors() -> None:
    def gen():  # type: ignore[no-untyped-def]
        yield C.Piece(b"a", 0, 1)
        raise FormatError("boom", path="p")

    it = C.prefetch(gen())
    assert next(it).data == b"a"
    with pytest.raises(FormatError, match="boom"):
        next(it)


def test_zlib_gzip_reader_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decompressobj reader used without ISA-L's gzip reader: members, garbage."""
    raw = gzip.compress(DATA[:5000]) + gzip.compress(DATA[5000:])
    got = list(C._zlib_gzip_pieces(io.BytesIO(raw[10:]), "x.gz", raw[:10]))
    assert b"".join(p.data for p in got) == DATA
    with pytest.raises(FormatError, match="after the end of a gzip member"):
        list(C._zlib_gzip_pieces(io.BytesIO(raw + b"garbage"), "x.gz", b""))
    with pytest.raises(FormatError, match="truncated gzip"):
        list(C._zlib_gzip_pieces(io.BytesIO(raw[:-20]), "x.gz", b""))


# -- genostage.codec.accel: the accelerators in one place (issue 17) ---------------------------
def test_accelerators_in_their_documented_order() -> None:
    names = [b.name for b in accel.available()]
    assert names[-1] == "zlib" and names == [n for n in accel.ORDER if n in names]
    assert accel.backend() == names[0]


@pytest.mark.parametrize("name", [b.name for b in accel.available()])
def test_every_backend_round_trips(name: str) -> None:
    with accel.use(name) as b:
        assert accel.backend() == name and C.backend() == name
        for level in (0, 1, 6, 9):
            assert gzip.decompress(accel.gzip_member(DATA, level)) == DATA
            raw = accel.deflate_raw(DATA[:60000], level)
            assert accel.inflate_raw(raw, 60000) == DATA[:60000]
            block = bgzf.compress_block(DATA[:60000], level)
            assert bgzf.inflate_block(block) == DATA[:60000]
        assert accel.crc32(DATA) == zlib.crc32(DATA)
        with pytest.raises(ValueError):
            accel.inflate_raw(b"\xff" * 100, 10)
        assert b.level(6) == (2 if name == "isal" else 6) and b.level(1) == (0 if name == "isal" else 1)
        assert b.level(9) == (3 if name == "isal" else 9)
    with pytest.raises(ValueError, match="not installed"):
        with accel.use("brotli"):
            pass


def test_one_bgzf_inflate() -> None:
    """compress.py and fastq_plan.py inflate BGZF blocks through bgzf.inflate_block (issue 17)."""
    import inspect

    from genostage.split import fastq_plan

    for module in (C, fastq_plan):
        src = inspect.getsource(module)
        assert "bgzf.inflate_block(" in src and "RAW_WBITS" not in src and "-15" not in src
    assert not hasattr(C, "_inflate_block") and not hasattr(C, "_isal")
    bad = bytearray(bgzf.compress_block(DATA[:5000]))
    bad[-8] ^= 1
    with pytest.raises(FormatError, match=r"x.fq.gz: corrupt BGZF block at offset 77 \(CRC32"):
        bgzf.inflate_block(bytes(bad), "x.fq.gz", 77, "FASTQ")
