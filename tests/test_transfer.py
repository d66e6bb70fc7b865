"""Transfers against real HTTP S3 servers: parallel, multipart, verified, atomic, resumable."""
from __future__ import annotations

import hashlib
import os
import threading

import pytest

from genostage.codec import checksum as ck
from genostage.config import TransferConfig
from genostage.errors import ChecksumMismatch, NotFound, TransferFailed
from genostage.location import parse
from genostage.store import S3Store, Stores
from genostage.transfer import Transfer, copy, download_part_size, expand

from .helpers import get, keys, put

MiB = 1 << 20
BOTH = pytest.mark.parametrize("s3", ["moto", "rclone"], indirect=True)


def small_config(s3, **kw):
    return TransferConfig(endpoint_url=s3.endpoint_url, part_size=5 * MiB, multipart_threshold=5 * MiB,
                          download_part_size=5 * MiB, concurrency=4, **kw)


@BOTH
def test_roundtrip_multipart_both_directions(s3, s3_client, bucket, tmp_path):
    data = os.urandom(12 * MiB + 123)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    stores = Stores(small_config(s3), s3_client)
    up = copy(str(src), f"s3://{bucket}/dir/big.bin", stores=stores)[0]
    assert up.parts == 3 and up.size == len(data)
    assert get(s3_client, bucket, "dir/big.bin") == data
    down = copy(f"s3://{bucket}/dir/big.bin", str(tmp_path / "back.bin"), stores=stores)[0]
    assert (tmp_path / "back.bin").read_bytes() == data
    assert down.checksums["crc64nvme"] == up.checksums["crc64nvme"] == ck.to_wire("crc64nvme", ck.crc("crc64nvme", data))
    assert down.verified in ("crc64nvme", "etag", "md5")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@BOTH
def test_prefix_many_small_objects(s3, s3_client, bucket, tmp_path):
    for i in range(60):
        put(s3_client, bucket, f"many/d{i % 3}/f{i:04d}.txt", b"x" * i)
    stores = Stores(small_config(s3), s3_client)
    results = copy(f"s3://{bucket}/many/", str(tmp_path / "out") + "/", stores=stores)
    assert len(results) == 60
    assert (tmp_path / "out" / "d1" / "f0007.txt").read_bytes() == b"x" * 7
    # and back up to another prefix, then S3 to S3
    copy(str(tmp_path / "out") + "/", f"s3://{bucket}/copy/", stores=stores)
    copy(f"s3://{bucket}/copy/", f"s3://{bucket}/copy2/", stores=stores)
    assert len(keys(s3_client, bucket, "copy2/")) == 60
    assert get(s3_client, bucket, "copy2/d2/f0005.txt") == b"x" * 5


def test_objects_genostage_puts_carry_a_crc64nvme(s3, s3_client, bucket, tmp_path):
    """A single PUT and a multipart upload both leave a full-object CRC64NVME that the next
    download is verified against (moto stores it; a store without checksums falls back to MD5)."""
    stores = Stores(small_config(s3), s3_client)
    for name, size in (("small.bin", 100 << 10), ("multi.bin", 12 * MiB)):
        (tmp_path / name).write_bytes(os.urandom(size))
        up = copy(str(tmp_path / name), f"s3://{bucket}/c/{name}", stores=stores)[0]
        assert up.verified == "crc64nvme"
        head = s3_client.head_object(Bucket=bucket, Key=f"c/{name}", ChecksumMode="ENABLED")
        assert head["ChecksumCRC64NVME"] == up.checksums["crc64nvme"]
        down = copy(f"s3://{bucket}/c/{name}", str(tmp_path / ("back-" + name)), stores=stores)[0]
        assert down.verified == "crc64nvme"
        assert (tmp_path / ("back-" + name)).read_bytes() == (tmp_path / name).read_bytes()


@pytest.mark.parametrize("s3", ["rclone"], indirect=True)
def test_upload_to_store_without_checksums_proved_by_multipart_etag(s3, s3_client, bucket, tmp_path, monkeypatch):
    """rclone keeps no checksums: each part goes with its Content-MD5, and the ETag that
    CompleteMultipartUpload answers (the MD5 of those MD5s) proves the object is our parts,
    so no HEAD follows (rclone would hash the whole object again to answer it)."""
    data = os.urandom(12 * MiB + 5)
    (tmp_path / "m.bin").write_bytes(data)
    stores = Stores(small_config(s3), s3_client)
    heads = []
    real_stat = S3Store.stat
    monkeypatch.setattr(S3Store, "stat", lambda self, loc, *a, **kw: heads.append(str(loc)) or real_stat(self, loc, *a, **kw))
    up = copy(str(tmp_path / "m.bin"), f"s3://{bucket}/proof/m.bin", stores=stores)[0]
    assert up.parts == 3 and up.verified == "md5 (multipart ETag)"
    assert heads == []
    parts = [data[i:i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
    etag = ck.etag_of_parts([hashlib.md5(p).digest() for p in parts])
    assert s3_client.head_object(Bucket=bucket, Key="proof/m.bin")["ContentLength"] == len(data)
    assert get(s3_client, bucket, "proof/m.bin") == data

    # an answer whose ETag is not the one our parts make: checked by a HEAD, as before
    monkeypatch.setattr("genostage.store.s3._completed_etag", lambda body: '"' + etag.replace("-3", "-4") + '"')
    up = copy(str(tmp_path / "m.bin"), f"s3://{bucket}/proof/m2.bin", stores=stores)[0]
    assert heads == [f"s3://{bucket}/proof/m2.bin"] and up.verified != "md5 (multipart ETag)"


def test_md5_etag_verified_for_single_put(s3, s3_client, bucket, tmp_path):
    data = os.urandom(11 * MiB)
    put(s3_client, bucket, "single.bin", data)  # one PUT: the ETag is the MD5
    stores = Stores(small_config(s3), s3_client)
    res = copy(f"s3://{bucket}/single.bin", str(tmp_path / "x"), stores=stores)[0]
    assert res.parts == 3
    if res.verified == "md5":
        assert res.checksums["md5"] == hashlib.md5(data).hexdigest()
    else:  # a server that stores a full-object CRC verifies against that instead
        assert res.verified in ("crc64nvme", "crc32", "crc32c")


class FlakyStore(S3Store):
    """Flips one byte of the first ``flips`` reads of a part: corruption in flight."""

    def __init__(self, *a, flips=1, at=6 * MiB, **kw):
        super().__init__(*a, **kw)
        self.flips = flips
        self.at = at

    def _flipping(self, start, length, consume):
        def flipping(piece):
            if self.flips and start <= self.at < start + length and len(piece) > 10:
                self.flips -= 1
                piece = bytes([piece[0] ^ 0xFF]) + bytes(piece[1:])
            consume(piece)
        return flipping

    def read_async(self, loc, start, length, consume, done, etag=None):
        return super().read_async(loc, start, length, self._flipping(start, length, consume), done, etag)


def _flaky_stores(s3, s3_client, flips):
    cfg = small_config(s3)
    stores = Stores(cfg, s3_client)
    stores._s3 = FlakyStore(s3_client, cfg, flips=flips)
    return stores


def test_corrupted_part_in_flight_is_fetched_again(s3, s3_client, bucket, tmp_path):
    data = os.urandom(12 * MiB)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    copy(str(src), f"s3://{bucket}/c.bin", stores=Stores(small_config(s3), s3_client))
    stores = _flaky_stores(s3, s3_client, flips=1)
    res = copy(f"s3://{bucket}/c.bin", str(tmp_path / "dst.bin"), stores=stores)[0]
    assert (tmp_path / "dst.bin").read_bytes() == data
    assert res.repaired_parts == 1


def test_persistent_corruption_raises_and_leaves_nothing(s3, s3_client, bucket, tmp_path):
    data = os.urandom(12 * MiB)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    copy(str(src), f"s3://{bucket}/c.bin", stores=Stores(small_config(s3), s3_client))
    stores = _flaky_stores(s3, s3_client, flips=1000)
    dest = tmp_path / "dl"
    dest.mkdir()
    with pytest.raises(ChecksumMismatch) as err:
        copy(f"s3://{bucket}/c.bin", str(dest / "dst.bin"), stores=stores)
    assert f"s3://{bucket}/c.bin" in str(err.value) and "expected" in str(err.value)
    assert list(dest.iterdir()) == []


def test_failed_upload_aborts_multipart(s3, s3_client, bucket, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(12 * MiB))
    stores = Stores(small_config(s3), s3_client)

    class Boom(Exception):
        pass

    real = stores.s3.begin_upload

    def failing_begin(loc, size, parts=1, resume_path=None):
        up = real(loc, size, parts, resume_path)
        original = up.write_part_async

        def write_part_async(number, offset, data, checksums, done):
            if number == 2:
                done(TransferFailed("injected failure"))
                return None
            return original(number, offset, data, checksums, done)
        up.write_part_async = write_part_async
        return up
    stores.s3.begin_upload = failing_begin
    with pytest.raises(TransferFailed):
        copy(str(src), f"s3://{bucket}/up.bin", stores=stores)
    assert keys(s3_client, bucket) == []
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_resume_from_journal(s3, s3_client, bucket, tmp_path):
    data = os.urandom(15 * MiB)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    cfg = TransferConfig(endpoint_url=s3.endpoint_url, part_size=5 * MiB, multipart_threshold=5 * MiB,
                         download_part_size=5 * MiB,
                         concurrency=2, max_attempts=1)
    copy(str(src), f"s3://{bucket}/r.bin", stores=Stores(cfg, s3_client))
    part = download_part_size(len(data), cfg)
    assert len(data) > part  # at least two parts
    partial = tmp_path / "partial"
    partial.mkdir()
    stores = Stores(cfg, s3_client)
    info = stores.s3.stat(parse(f"s3://{bucket}/r.bin"))
    dest = parse(str(tmp_path / "r.bin"))
    real_get = stores.s3.read_async
    calls = {"n": 0}
    first_done = threading.Event()

    def dying_get(loc, start, length, consume, done, etag=None):  # the first attempt dies once its first part is in
        calls["n"] += 1
        if calls["n"] > 1:
            def later():
                first_done.wait(30)
                done(TransferFailed("connection reset (injected)"))
            threading.Thread(target=later, daemon=True).start()
            return None

        def first(err):
            done(err)
            first_done.set()
        return real_get(loc, start, length, consume, first, etag)
    stores.s3.read_async = dying_get
    t = Transfer(stores, cfg, partial_dir=str(partial), show_progress=False)
    with pytest.raises(TransferFailed):
        t.copy(info, dest)
    assert len([p for p in partial.iterdir() if p.suffix == ".data"]) == 1
    assert not dest.path or not os.path.exists(dest.path)
    # the retry fetches only the missing parts
    stores.s3.read_async = real_get
    before = stores.s3.counters.snapshot()["bytes_read"]
    res = Transfer(stores, cfg, partial_dir=str(partial), show_progress=False).copy(info, dest)
    assert res.resumed_parts == 1
    assert stores.s3.counters.snapshot()["bytes_read"] - before == len(data) - part
    assert (tmp_path / "r.bin").read_bytes() == data
    assert list(partial.iterdir()) == []


@BOTH
def test_missing_object_and_bucket(s3, s3_client, bucket, tmp_path):
    stores = Stores(small_config(s3), s3_client)
    with pytest.raises(NotFound, match="does not exist"):
        copy(f"s3://{bucket}/nope.bam", str(tmp_path / "x"), stores=stores)
    with pytest.raises(NotFound, match="bucket"):
        copy("s3://no-such-bucket-genostage/x.bam", str(tmp_path / "x"), stores=stores)
    with pytest.raises(NotFound, match="no objects"):
        expand(stores, parse(f"s3://{bucket}/empty/"), parse(str(tmp_path) + "/"))
    assert not (tmp_path / "x").exists()


def test_zero_byte_object(s3, s3_client, bucket, tmp_path):
    put(s3_client, bucket, "empty.txt", b"")
    stores = Stores(small_config(s3), s3_client)
    copy(f"s3://{bucket}/empty.txt", str(tmp_path / "e.txt"), stores=stores)
    assert (tmp_path / "e.txt").read_bytes() == b""
    copy(str(tmp_path / "e.txt"), f"s3://{bucket}/e2.txt", stores=stores)
    assert get(s3_client, bucket, "e2.txt") == b""


def test_object_uploaded_by_another_tool_in_odd_parts(s3, s3_client, bucket, tmp_path):
    """A multipart upload with CRC32 part checksums (as aws-cli sends) and a 6 MiB part size
    (no common size): moto reports a composite CRC32 without '-N'; the ETag's part size is
    asked of the server (HeadObject PartNumber=1)."""
    data = os.urandom(13 * MiB)
    up = s3_client.create_multipart_upload(Bucket=bucket, Key="odd.bin", ChecksumAlgorithm="CRC32")
    parts = []
    for n, start in enumerate(range(0, len(data), 6 * MiB), 1):
        r = s3_client.upload_part(Bucket=bucket, Key="odd.bin", UploadId=up["UploadId"], PartNumber=n,
                                  Body=data[start:start + 6 * MiB], ChecksumAlgorithm="CRC32")
        parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumCRC32": r.get("ChecksumCRC32")})
    s3_client.complete_multipart_upload(Bucket=bucket, Key="odd.bin", UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": parts})
    stores = Stores(small_config(s3), s3_client)
    res = copy(f"s3://{bucket}/odd.bin", str(tmp_path / "odd.bin"), stores=stores)[0]
    assert (tmp_path / "odd.bin").read_bytes() == data
    assert res.verified in ("etag", "crc32", "crc64nvme") and res.repaired_parts == 0


def test_multipart_etag_checked_with_larger_aligned_requests(s3, s3_client, bucket, tmp_path):
    """An object uploaded in 5 MiB parts (MD5 ETag '-6') is fetched in fewer, larger requests,
    each covering whole upload parts, and still verified against its ETag."""
    data = os.urandom(30 * MiB)
    up = s3_client.create_multipart_upload(Bucket=bucket, Key="p.bin")
    parts = []
    for n, start in enumerate(range(0, len(data), 5 * MiB), 1):
        r = s3_client.upload_part(Bucket=bucket, Key="p.bin", UploadId=up["UploadId"], PartNumber=n,
                                  Body=data[start:start + 5 * MiB])
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    s3_client.complete_multipart_upload(Bucket=bucket, Key="p.bin", UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": parts})
    cfg = TransferConfig(endpoint_url=s3.endpoint_url, part_size=5 * MiB, multipart_threshold=5 * MiB,
                         download_part_size=15 * MiB, concurrency=2)  # requests of 3 upload parts
    stores = Stores(cfg, s3_client)
    info = stores.s3.stat(parse(f"s3://{bucket}/p.bin"))
    info.checksums = {}  # as from a server that keeps only the ETag
    res = Transfer(stores, cfg, show_progress=False).copy(info, parse(str(tmp_path / "p.bin")))
    assert (tmp_path / "p.bin").read_bytes() == data
    assert res.verified == "etag" and res.parts == 2 and res.checksums["etag"] == info.etag


def test_part_layout_ramps_up_for_a_pipe_and_covers_the_object():
    from genostage.transfer.copystate import part_layout

    M = 1 << 20
    assert part_layout(10 * M, 4 * M) == [(0, 4 * M), (4 * M, 4 * M), (8 * M, 2 * M)]
    ramp = part_layout(40 * M + 5, 16 * M, 1 * M)
    assert [n for _, n in ramp] == [M, 2 * M, 4 * M, 8 * M, 16 * M, 9 * M + 5]
    assert all(a + n == b for (a, n), (b, _) in zip(ramp, ramp[1:])) and sum(n for _, n in ramp) == 40 * M + 5
    assert part_layout(0, 16 * M, M) == []
