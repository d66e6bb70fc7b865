"""The CRC kernels (every dispatch path the CPU has) and genostage.checksum."""
from __future__ import annotations

import array
import base64
import hashlib
import mmap
import os
import random
import subprocess
import sys
import threading
import zlib
from typing import Callable, Dict, Iterator

import awscrt.checksums
import crc32c as crc32c_pkg
import google_crc32c
import numpy as np
import pytest
from botocore import httpchecksum
from hypothesis import given, settings
from hypothesis import strategies as st

from genostage.codec import _checksum as K
from genostage.codec import checksum as C
from genostage.errors import FormatError, UsageError
from genostage.store import ObjectInfo
from genostage.location import Location

MiB = 1024 * 1024
PATHS = K.supported_paths()
CHECK = {"crc32": 0xCBF43926, "crc32c": 0xE3069283, "crc64nvme": 0xAE8B14860A799888}
POLY = {"crc32": 0xEDB88320, "crc32c": 0x82F63B78, "crc64nvme": 0x9A6C9329AC4BC9B5}
WIDTH = {"crc32": 32, "crc32c": 32, "crc64nvme": 64}

# Independent implementations to compare with (test-only dependencies).
REFERENCES: Dict[str, Callable[[bytes, int], int]] = {
    "crc32": lambda b, v: zlib.crc32(b, v),
    "crc32c": lambda b, v: google_crc32c.extend(v, b),
    "crc64nvme": lambda b, v: awscrt.checksums.crc64nvme(b, v),
}
SECOND_REFERENCES: Dict[str, Callable[[bytes, int], int]] = {
    "crc32": lambda b, v: awscrt.checksums.crc32(b, v),
    "crc32c": lambda b, v: crc32c_pkg.crc32c(b, v),
    "crc64nvme": lambda b, v: awscrt.checksums.crc64nvme(b, v),
}


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test on one code path the CPU supports, then restore the previous one."""
    previous = K.set_path(request.param)
    try:
        yield request.param
    finally:
        K.set_path(previous)


def test_this_cpu_paths_are_all_exercised() -> None:
    # The portable path always exists; on x86-64 with CLMUL the folding paths too.
    assert PATHS[0] == "portable"
    assert K.get_path() == K.best_path()
    assert set(PATHS) <= set(K.PATHS)


@pytest.mark.parametrize("name", ["crc32", "crc32c", "crc64nvme"])
def test_check_values(path: str, name: str) -> None:
    assert K.crc(name, b"123456789") == CHECK[name]
    assert C.crc(name, b"123456789") == CHECK[name]
    assert K.crc_on_path(name, path, b"123456789") == CHECK[name]


@pytest.mark.parametrize("name", ["crc32", "crc32c", "crc64nvme"])
def test_every_length_and_offset_against_references(path: str, name: str) -> None:
    rng = random.Random(f"{name}-{path}")
    data = rng.randbytes(4096 + 64)
    view = memoryview(data)
    ref, ref2 = REFERENCES[name], SECOND_REFERENCES[name]
    for n in range(4097):
        off = rng.randrange(64)
        piece = view[off:off + n]
        start = rng.choice((0, rng.getrandbits(WIDTH[name])))
        expected = ref(bytes(piece), start)
        assert K.crc(name, piece, start) == expected, (n, off, start)
    # and a second implementation on a sample of lengths
    for n in (0, 1, 15, 16, 17, 63, 64, 255, 256, 511, 512, 513, 1023, 4096):
        assert K.crc(name, view[3:3 + n]) == ref2(bytes(view[3:3 + n]), 0)


@pytest.mark.parametrize("name", ["crc32", "crc32c", "crc64nvme"])
def test_large_buffers(path: str, name: str) -> None:
    rng = random.Random(7)
    data = rng.randbytes(5 * MiB + 77)  # CRC32C: CLMUL + crc32 streams up to 4 MiB, folding alone above
    for n in (MiB, MiB + 1, 4 * MiB, 4 * MiB + 1, 5 * MiB + 77 - 5):
        off = rng.randrange(5)
        piece = data[off:off + n]
        assert K.crc(name, piece, 12345) == REFERENCES[name](piece, 12345)


@pytest.mark.parametrize("name", ["crc32", "crc32c", "crc64nvme"])
def test_lengths_around_the_large_buffer_strategies(path: str, name: str) -> None:
    # CRC32C switches to CLMUL + crc32 streams at 24 KiB; cover lengths on both sides
    rng = random.Random(11)
    data = rng.randbytes(80_000)
    lengths = list(range(24576 - 400, 24576 + 400, 13)) + [rng.randrange(512, 80_000 - 64) for _ in range(60)]
    for n in lengths:
        off = rng.randrange(64)
        piece = data[off:off + n]
        assert K.crc(name, piece, 99) == REFERENCES[name](piece, 99), (n, off)


def test_paths_agree_with_each_other() -> None:
    data = os.urandom(100_003)
    for name in ("crc32", "crc32c", "crc64nvme"):
        values = {p: K.crc_on_path(name, p, data) for p in PATHS}
        assert len(set(values.values())) == 1, values


def test_set_path_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="unknown CRC path"):
        K.set_path("sse9")
    with pytest.raises(ValueError, match="unknown CRC"):
        K.crc("crc16", b"")


def test_environment_forces_path() -> None:
    for p in PATHS:
        env = dict(os.environ, GENOSTAGE_CRC_PATH=p)
        out = subprocess.run(
            [sys.executable, "-c", "from genostage.codec import _checksum as k; print(k.get_path(), hex(k.crc32c(b'123456789')))"],
            env=env, capture_output=True, text=True, check=True)
        assert out.stdout.split() == [p, "0xe3069283"]
    bad = subprocess.run([sys.executable, "-c", "import genostage.codec._checksum"],
                         env=dict(os.environ, GENOSTAGE_CRC_PATH="nope"), capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown CRC path" in bad.stderr


# -- buffers of every kind ------------------------------------------------------------------

def test_buffer_kinds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(10_000)
    expected = awscrt.checksums.crc64nvme(data)
    arr = np.frombuffer(data, dtype=np.uint8).copy()
    assert C.crc("crc64nvme", arr) == expected
    assert C.crc("crc64nvme", arr.view(np.int64)[: 10_000 // 8]) == awscrt.checksums.crc64nvme(data[:10_000 // 8 * 8])
    assert C.crc("crc64nvme", bytearray(data)) == expected
    assert C.crc("crc64nvme", memoryview(data)[1:]) == awscrt.checksums.crc64nvme(data[1:])
    assert C.crc("crc64nvme", array.array("B", data)) == expected
    # non-contiguous: checksummed in C order
    strided = arr[::2]
    assert C.crc("crc64nvme", strided) == awscrt.checksums.crc64nvme(strided.tobytes())
    two_d = arr[:9000].reshape(90, 100)[:, :50]
    assert C.crc("crc32", two_d) == zlib.crc32(two_d.tobytes())
    f = tmp_path / "m.bin"
    f.write_bytes(data)
    with open(f, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert C.crc("crc64nvme", mm) == expected
        s = C.new("crc32c")
        s.update(mm)
        assert s.value() == google_crc32c.value(data) and s.length == len(data)
    with pytest.raises(TypeError):
        C.crc("crc32", "text")  # type: ignore[arg-type]


def test_threads_share_the_kernel() -> None:
    bufs = [os.urandom(MiB + i) for i in range(4)]
    results: Dict[int, int] = {}

    def work(i: int) -> None:
        for _ in range(5):
            results[i] = C.crc("crc32c", bufs[i])

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert results == {i: google_crc32c.value(bufs[i]) for i in range(4)}


# -- the mathematics: x^n mod P and the folding constants -----------------------------------

def _xpow_reference(name: str, n: int) -> int:
    """x^n mod P by plain polynomial arithmetic (normal bit order), then reflected."""
    w = WIDTH[name]
    poly = int(f"{POLY[name]:0{w}b}"[::-1], 2) | (1 << w)  # the normal polynomial with x^w
    r = 1
    for _ in range(n):
        r <<= 1
        if r >> w:
            r ^= poly
    return int(f"{r:0{w}b}"[::-1], 2)


@pytest.mark.parametrize("name", ["crc32", "crc32c", "crc64nvme"])
def test_xpow_and_fold_constants(name: str) -> None:
    w = WIDTH[name]
    for n in (0, 1, 31, 32, 63, 64, 65, 127, 191, 1087, 2111):
        assert K.xpow(name, n) == _xpow_reference(name, n), n
    for bits in (128, 256, 512, 1024, 2048):
        k_lo, k_hi = K.fold_constants(name, bits)
        assert k_lo == _xpow_reference(name, bits + 63) << (64 - w)
        assert k_hi == _xpow_reference(name, bits - 1) << (64 - w)


@pytest.mark.parametrize("name", ["crc32", "crc32c", "crc64nvme"])
@settings(max_examples=150, deadline=None)
@given(a=st.binary(max_size=3000), b=st.binary(max_size=3000))
def test_combine_is_the_crc_of_the_concatenation(name: str, a: bytes, b: bytes) -> None:
    assert C.combine(name, C.crc(name, a), C.crc(name, b), len(b)) == C.crc(name, a + b)


@pytest.mark.parametrize("name", ["crc32", "crc32c", "crc64nvme"])
def test_combine_long(name: str) -> None:
    a, b = os.urandom(1000), bytes(5 * MiB + 3)
    assert C.combine(name, C.crc(name, a), C.crc(name, b), len(b)) == C.crc(name, a + b)
    assert C.combine(name, 0, 0, 0) == 0


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(0, 5000), max_size=6),
       name=st.sampled_from(C.ALGORITHMS))
def test_streaming_equals_one_shot(data: bytes, cuts: list, name: str) -> None:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    stream = C.new(name)
    for lo, hi in zip(points, points[1:]):
        stream.update(memoryview(data)[lo:hi])
    whole = C.new(name)
    whole.update(data)
    assert stream.value() == whole.value() and stream.length == len(data)
    copy = stream.copy()
    copy.update(b"more")
    assert stream.wire() == whole.wire() and copy.wire() != whole.wire()


# -- the public face: wire forms, composite, ETag --------------------------------------------

def test_wire_forms_match_botocore() -> None:
    data = os.urandom(70_000)
    impls = {"crc32": httpchecksum.CrtCrc32Checksum, "crc32c": httpchecksum.CrtCrc32cChecksum,
             "sha256": httpchecksum.Sha256Checksum}
    if hasattr(httpchecksum, "CrtCrc64NvmeChecksum"):
        impls["crc64nvme"] = httpchecksum.CrtCrc64NvmeChecksum
    for name, cls in impls.items():
        ref = cls()
        ref.update(data)
        ours = C.new(name)
        ours.update(data)
        assert ours.wire() == ref.b64digest(), name
    md5 = C.new("md5")
    md5.update(data)
    assert md5.wire() == md5.hexdigest() == hashlib.md5(data).hexdigest()
    assert md5.value() == hashlib.md5(data).digest()


def test_known_wire_values() -> None:
    # moto reports this CRC64NVME for 5 MiB of b"x" + 10 bytes of b"y" uploaded in 2 parts
    s = C.new("crc64nvme")
    s.update(b"x" * (5 * MiB))
    s.update(b"y" * 10)
    assert s.wire() == "9sioeA3jJGY="
    assert C.to_wire("crc32", 0xCBF43926) == base64.b64encode(bytes.fromhex("cbf43926")).decode() == "y/Q5Jg=="
    assert C.from_wire("crc32", "y/Q5Jg==") == 0xCBF43926
    assert C.from_wire("crc64nvme", C.to_wire("crc64nvme", CHECK["crc64nvme"])) == CHECK["crc64nvme"]
    c = C.new("crc32c")
    c.update(b"123456789")
    assert c.hexdigest() == "e3069283" and c.value() == 0xE3069283
    with pytest.raises(FormatError, match="not a crc32c value"):
        C.from_wire("crc32c", "AAAAAAAAAAAA")  # 9 bytes
    assert C.from_wire("crc32c", "e3069283") == 0xE3069283  # hex is accepted too
    assert C.from_wire("md5", "CY9rzUYh03PK3k6DJie09g==") == int("098f6bcd4621d373cade4e832627b4f6", 16)
    with pytest.raises(UsageError, match="unknown checksum algorithm"):
        C.new("sha1024")


def test_composite_and_etag_match_moto_values() -> None:
    # values moto reported for the 2-part upload above (5 MiB + 10 bytes)
    data = b"x" * (5 * MiB) + b"y" * 10
    parts = [data[:5 * MiB], data[5 * MiB:]]
    assert C.composite_wire("crc32c", [C.crc("crc32c", p) for p in parts]) == "210PZw==-2"
    sha = [hashlib.sha256(p).digest() for p in parts]
    assert C.composite_wire("sha256", sha) == "OQQR0r2aBYGElLFYjS1zVN78b/rPcooIwJwTWnfll2E=-2"
    assert C.etag_of_parts([hashlib.md5(p).digest() for p in parts]) == "298c9a5c8205ea8eeef29652993678aa-2"
    e = C.ETag(5 * MiB)
    for lo in range(0, len(data), 1_000_003):
        e.update(data[lo:lo + 1_000_003])
    assert e.value() == "298c9a5c8205ea8eeef29652993678aa-2"
    assert e.matches('"298c9a5c8205ea8eeef29652993678aa-2"')
    assert e.matches(hashlib.md5(data).hexdigest())
    comp = C.Composite("crc32c", 5 * MiB)
    assert isinstance(C.new("composite:crc32c:5242880"), C.Composite)
    for lo in range(0, len(data), 3_000_001):
        comp.update(data[lo:lo + 3_000_001])
    assert comp.value() == "210PZw==-2" and comp.matches("210PZw==") and not comp.matches("210PZw==-3")
    small = C.new("etag", part_size=8 * MiB)
    small.update(b"abc")
    assert small.value() == hashlib.md5(b"abc").hexdigest()
    exact = C.ETag(4)
    exact.update(b"abcd")
    assert exact.value() == C.etag_of_parts([hashlib.md5(b"abcd").digest()])  # a 1-part upload
    with pytest.raises(UsageError):
        C.new("etag")


def _info(**kw) -> ObjectInfo:  # type: ignore[no-untyped-def]
    return ObjectInfo(location=Location("s3", "b", "k"), size=kw.pop("size", 10), **kw)


def test_expected_for() -> None:
    md5 = "0a348608355a356e517f616a2fc69630"
    assert C.expected_for(_info(checksums={"crc32c": "cSgl0w==", "crc64nvme": "9sioeA3jJGY="},
                                checksum_type="FULL_OBJECT", etag=md5)) == ("crc64nvme", "9sioeA3jJGY=")
    assert C.expected_for(_info(checksums={"crc32": "GuCnCA=="}, etag=md5)) == ("crc32", "GuCnCA==")
    assert C.expected_for(_info(checksums={"crc32c": "210PZw=="}, checksum_type="COMPOSITE",
                                etag=md5)) == ("md5", md5)
    assert C.expected_for(_info(checksums={"crc32c": "210PZw==-2"}, etag=f'"{md5}-2"')) == ("etag", md5 + "-2")
    assert C.expected_for(_info(checksums={"sha256": "OQQR0r2aBYGElLFYjS1zVN78b/rPcooIwJwTWnfll2E="},
                                etag="abc-kms")) == ("sha256", "OQQR0r2aBYGElLFYjS1zVN78b/rPcooIwJwTWnfll2E=")
    assert C.expected_for(_info(etag="not-an-md5")) is None
    assert C.expected_for(_info()) is None


def test_guess_etag_part_size() -> None:
    assert C.guess_etag_part_size(20 * MiB, 3) == 8 * MiB
    assert C.guess_etag_part_size(20 * MiB, 2) == 16 * MiB
    assert C.guess_etag_part_size(5 * MiB + 10, 2) == 5 * MiB
    assert C.guess_etag_part_size(1000 * MiB, 10) == 100 * MiB
    assert C.guess_etag_part_size(1000 * MiB + 1, 7) == 143 * MiB  # size/N rounded up to 1 MiB
    assert C.guess_etag_part_size(10, 5) == 2
    assert C.guess_etag_part_size(10 * MiB, 0) is None
    assert C.parts_in_etag('"298c9a5c8205ea8eeef29652993678aa-2"') == 2


# -- files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 4095, MiB - 1, 3 * MiB + 17])
def test_file_checksums_threads(tmp_path, size: int) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(size)
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    expected = {
        "crc64nvme": C.to_wire("crc64nvme", awscrt.checksums.crc64nvme(data)),
        "crc32c": C.to_wire("crc32c", google_crc32c.value(data)),
        "crc32": C.to_wire("crc32", zlib.crc32(data)),
    }
    for threads in (1, 2, 3):
        assert C.file_checksums(f, list(expected), threads=threads) == expected
    # small read chunks so the segments really are split and combined
    assert C.file_crcs(f, ["crc32c"], threads=3, chunk=4096) == {"crc32c": google_crc32c.value(data)}
    full = C.file_checksums(str(f), ["md5", "crc32c", "sha256", "etag"], part_size=MiB, threads=2)
    assert full["md5"] == hashlib.md5(data).hexdigest()
    assert full["sha256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert full["crc32c"] == expected["crc32c"]
    e = C.ETag(MiB)
    e.update(data)
    assert full["etag"] == e.value()
    with pytest.raises(UsageError, match="part size"):
        C.file_checksums(f, ["etag"])


def test_file_checksums_missing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError):
        C.file_checksums(tmp_path / "nope", ["crc32c"])


def test_file_checksums_hashers_in_threads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # several 4 MiB reads, so the read buffers are reused while other threads hash them
    data = os.urandom(13 * MiB + 5)
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    expected = {"md5": hashlib.md5(data).hexdigest(),
                "sha256": base64.b64encode(hashlib.sha256(data).digest()).decode(),
                "crc32c": C.to_wire("crc32c", google_crc32c.value(data)),
                "etag": C.etag_of_parts([hashlib.md5(data[i:i + 5 * MiB]).digest() for i in range(0, len(data), 5 * MiB)])}
    for threads in (1, 2, None):
        assert C.file_checksums(f, list(expected), part_size=5 * MiB, threads=threads) == expected


def test_file_checksums_of_a_pipe(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = os.urandom(5 * MiB + 1)

    def writer() -> None:
        with open(fifo, "wb") as w:
            w.write(data)

    t = threading.Thread(target=writer)
    t.start()
    try:
        got = C.file_checksums(fifo, ["crc64nvme", "crc32"], threads=2)
    finally:
        t.join()
    assert got == {"crc64nvme": C.to_wire("crc64nvme", awscrt.checksums.crc64nvme(data)),
                   "crc32": C.to_wire("crc32", zlib.crc32(data))}


@pytest.mark.parametrize("use_mmap", [True, False])
def test_file_crcs_mapped_and_read(tmp_path, monkeypatch: pytest.MonkeyPatch, use_mmap: bool) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(C, "MMAP_MIN", MiB)  # small files take the mmap path too
    monkeypatch.setattr(C, "MMAP_SLICE", 256 * 1024 + 3)
    data = os.urandom(5 * MiB + 17)
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    for threads in (1, 2, 3):
        got = C.file_crcs(f, ["crc64nvme", "crc32c"], threads=threads, use_mmap=use_mmap)
        assert got == {"crc64nvme": awscrt.checksums.crc64nvme(data), "crc32c": google_crc32c.value(data)}


@pytest.mark.parametrize("lanes", [True, False])
def test_md5_many_equals_hashlib(lanes: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    from genostage.codec import _checksum as K

    calls: list = []
    lanes_md5 = K.md5_many

    def spy(bufs):  # type: ignore[no-untyped-def]
        calls.append(len(bufs))
        return lanes_md5(bufs)

    monkeypatch.setattr(K, "md5_many", spy)
    was = C.md5_lanes()
    on = C.md5_lanes(lanes)
    try:
        assert C.md5_lanes() == on  # asking does not change it (it used to turn the lanes back on)
        rng = random.Random(7)
        for _ in range(200):
            bufs = [os.urandom(rng.choice([0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, rng.randint(0, 9000)]))
                    for _ in range(rng.randint(1, 19))]
            assert C.md5_many(bufs) == [hashlib.md5(b).digest() for b in bufs]
        big = [os.urandom(3 * MiB + 17) for _ in range(8)]  # equal lengths: all blocks in the lanes
        views = [memoryview(b)[5:] for b in big]
        assert C.md5_many(views) == [hashlib.md5(v).digest() for v in views]
    finally:
        C.md5_lanes(was)
    if not lanes:
        assert calls == []  # the hashlib path ran, not the lanes
    elif on:
        assert calls and calls[-1] == 8  # the kernel's lanes ran


def test_md5_batcher_from_many_threads() -> None:
    import threading

    batcher = C.MD5Batcher()
    data = [os.urandom(4096 * (i % 7 + 1)) for i in range(64)]
    got: dict = {}

    def work(i: int) -> None:
        got[i] = batcher.digest(data[i])
    threads = [threading.Thread(target=work, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(64)] == [hashlib.md5(d).digest() for d in data]
