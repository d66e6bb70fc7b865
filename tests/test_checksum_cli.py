"""``genostage checksum``: output vs md5sum/sha256sum, --check, and S3 objects (--verify)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import google_crc32c
import pytest

from genostage.codec import checksum as C
from genostage.cli import main
from genostage.exitcodes import CHECKSUM as EXIT_CHECKSUM, DATA as EXIT_DATA, NOT_FOUND as EXIT_NOT_FOUND
from genostage.store.s3 import S3Store

MiB = 1024 * 1024


def run_cli(args: List[str], cwd: "Path | None" = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genostage", "checksum", *args], capture_output=True,
                          text=True, cwd=cwd)


@pytest.fixture
def files(tmp_path: Path) -> List[Path]:
    out = []
    for i, size in enumerate([0, 1, 1000, 300_001]):
        p = tmp_path / f"f{i} name.bin"
        p.write_bytes(os.urandom(size))
        out.append(p)
    return out


@pytest.mark.parametrize("algo,tool", [("md5", "md5sum"), ("sha256", "sha256sum")])
def test_output_equals_coreutils(files: List[Path], algo: str, tool: str, tmp_path: Path) -> None:
    names = [p.name for p in files]
    ours = run_cli(["--algorithm", algo, *names], cwd=tmp_path)
    theirs = subprocess.run([tool, *names], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout


def test_default_is_crc64nvme_wire(files: List[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checksum", str(files[3])]) == 0
    data = files[3].read_bytes()
    assert capsys.readouterr().out == f"{C.to_wire('crc64nvme', C.crc('crc64nvme', data))}  {files[3]}\n"
    assert main(["checksum", "-a", "crc32c", "-a", "md5", "--threads", "2", "--no-mmap", str(files[3])]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"CRC32C ({files[3]}) = {C.to_wire('crc32c', google_crc32c.value(data))}",
        f"MD5 ({files[3]}) = {hashlib.md5(data).hexdigest()}",
    ]


def test_standard_input(tmp_path: Path) -> None:
    data = os.urandom(9 * MiB + 3)
    out = subprocess.run([sys.executable, "-m", "genostage", "checksum", "-a", "md5", "-"], input=data,
                         capture_output=True, check=True)
    assert out.stdout.decode() == f"{hashlib.md5(data).hexdigest()}  -\n"


def test_missing_file_and_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checksum", str(tmp_path / "nope")]) == EXIT_NOT_FOUND
    assert "no such file" in capsys.readouterr().err
    assert main(["checksum", str(tmp_path)]) == 2


def test_check_sha256sum_list(files: List[Path], tmp_path: Path) -> None:
    names = [p.name for p in files]
    listing = subprocess.run(["sha256sum", *names], capture_output=True, text=True, cwd=tmp_path, check=True)
    (tmp_path / "SHA256SUMS").write_text(listing.stdout)
    ok = run_cli(["--check", "SHA256SUMS"], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [f"{n}: OK" for n in names]
    # corrupt one file: that line fails, the command exits with the checksum-mismatch status
    files[2].write_bytes(b"changed")
    bad = run_cli(["--check", "SHA256SUMS"], cwd=tmp_path)
    assert bad.returncode == EXIT_CHECKSUM
    assert f"{names[2]}: FAILED" in bad.stdout.splitlines()
    assert "sha256 mismatch" in bad.stderr and names[2] in bad.stderr


def test_check_tagged_and_md5sum_lists(files: List[Path], tmp_path: Path) -> None:
    tagged = run_cli(["-a", "crc32c", "-a", "crc64nvme", "-a", "md5", *[p.name for p in files]], cwd=tmp_path)
    (tmp_path / "sums.txt").write_text(tagged.stdout)
    ok = run_cli(["-c", "sums.txt"], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.splitlines()) == 3 * len(files)
    md5 = subprocess.run(["md5sum", "-b", files[3].name], capture_output=True, text=True, cwd=tmp_path, check=True)
    (tmp_path / "x.md5").write_text(md5.stdout)  # "HASH *NAME"
    assert run_cli(["-c", "x.md5"], cwd=tmp_path).returncode == 0


def test_check_bare_md5_sidecar(tmp_path: Path) -> None:
    data = os.urandom(5000)
    (tmp_path / "reads.fastq.gz").write_bytes(data)
    side = tmp_path / "reads.fastq.gz.md5"
    side.write_text(hashlib.md5(data).hexdigest() + "\n")
    ok = run_cli(["--check", str(side)])  # the file is found beside the sidecar
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "reads.fastq.gz: OK\n"
    side.write_text(hashlib.md5(b"other").hexdigest() + "\n")
    bad = run_cli(["--check", str(side)])
    assert bad.returncode == EXIT_CHECKSUM and bad.stdout == "reads.fastq.gz: FAILED\n"


@pytest.mark.parametrize("text,message,line", [
    ("0123  a\nnot a checksum line at all\n", "cannot tell the algorithm", 1),
    ("d41d8cd98f00b204e9800998ecf8427e  a\n\nSHA9 (a) = 00\n", "unknown algorithm 'SHA9'", 3),
    ("d41d8cd98f00b204e9800998ecf8427e  a\nd41d8cd98f00b204e9800998ecf8427e\n", "bare checksum", 2),
    ("# only a comment\n", "no checksum lines", 1),
    ("MD5 (a) = zz\n", "not a md5 value", 1),
])
def test_check_bad_lines(tmp_path: Path, text: str, message: str, line: int,
                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").write_bytes(b"")
    lst = tmp_path / "list.txt"
    lst.write_text(text)
    assert main(["checksum", "--check", str(lst)]) == EXIT_DATA
    err = capsys.readouterr().err
    assert f"Error in checksum list file {lst} at line {line}: " in err and message in err


def test_check_missing_listed_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lst = tmp_path / "list.md5"
    lst.write_text("d41d8cd98f00b204e9800998ecf8427e  missing.bin\n")
    assert main(["checksum", "-c", str(lst)]) == EXIT_NOT_FOUND
    assert "missing.bin: FAILED open or read" in capsys.readouterr().out


# -- S3 -------------------------------------------------------------------------------------------

def _upload_two_parts(client, bucket: str, key: str, data: bytes, algorithm: str, ctype: str) -> None:  # type: ignore[no-untyped-def]
    up = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=algorithm.upper(),
                                        ChecksumType=ctype)
    parts = []
    for number, (lo, hi) in enumerate([(0, 5 * MiB), (5 * MiB, len(data))], start=1):
        s = C.new(algorithm)
        s.update(data[lo:hi])
        field = f"Checksum{algorithm.upper()}"
        r = client.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=number,
                               Body=data[lo:hi], **{field: s.wire()})
        parts.append({"PartNumber": number, "ETag": r["ETag"], field: s.wire()})
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": parts})


@pytest.mark.slow
def test_s3_reported_and_verified(s3, s3_client, bucket: str, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    data = b"x" * (5 * MiB) + b"y" * 10
    _upload_two_parts(s3_client, bucket, "full.bin", data, "crc64nvme", "FULL_OBJECT")
    _upload_two_parts(s3_client, bucket, "comp.bin", data, "crc32c", "COMPOSITE")
    s3_client.put_object(Bucket=bucket, Key="small.bin", Body=b"hello\n")
    uri = f"s3://{bucket}/full.bin"
    ep = ["--endpoint-url", s3.endpoint_url]
    assert main(["checksum", *ep, uri]) == 0
    assert capsys.readouterr().out == f"9sioeA3jJGY=  {uri}\n"  # as the store reports it
    assert main(["checksum", *ep, "--verify", "--threads", "3", uri]) == 0
    assert capsys.readouterr().out == f"9sioeA3jJGY=  {uri}\n"
    # a COMPOSITE crc32c: --verify recomputes it part by part (part size guessed from the ETag)
    comp = f"s3://{bucket}/comp.bin"
    assert main(["-v", "checksum", *ep, "--verify", "-a", "crc32c", comp]) == 0
    out = capsys.readouterr()
    assert out.out == f"{C.to_wire('crc32c', google_crc32c.value(data))}  {comp}\n"
    assert "crc32c verified" in out.err  # the COMPOSITE value, recomputed per part
    # and the multipart ETag
    assert main(["-v", "checksum", *ep, "--verify", "-a", "etag", "--part-size", "5MiB", comp]) == 0
    out = capsys.readouterr()
    assert out.out == f"298c9a5c8205ea8eeef29652993678aa-2  {comp}\n" and "etag verified" in out.err
    # md5 of a single-part object is its ETag; a prefix lists every object
    assert main(["checksum", *ep, "-a", "md5", f"s3://{bucket}/"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"{hashlib.md5(b'hello' + bytes([10])).hexdigest()}  s3://{bucket}/small.bin" in lines
    assert len(lines) == 3


@pytest.mark.slow
def test_s3_verify_catches_corruption(s3, s3_client, bucket: str, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(3 * MiB)
    wire = C.to_wire("crc64nvme", C.crc("crc64nvme", data))
    s3_client.put_object(Bucket=bucket, Key="obj", Body=data, ChecksumAlgorithm="CRC64NVME", ChecksumCRC64NVME=wire)
    assert s3_client.head_object(Bucket=bucket, Key="obj", ChecksumMode="ENABLED")["ChecksumCRC64NVME"] == wire
    original = S3Store.iter_range

    def flipped(self, loc, start, length, etag=None, chunk=1 << 20):  # type: ignore[no-untyped-def]
        for i, piece in enumerate(original(self, loc, start, length, etag, chunk)):
            if start > 0 and i == 0:  # one bit flipped in flight, in every range but the first
                piece = bytes([piece[0] ^ 1]) + piece[1:]
            yield piece

    monkeypatch.setattr(S3Store, "iter_range", flipped)
    uri = f"s3://{bucket}/obj"
    assert main(["checksum", "--endpoint-url", s3.endpoint_url, "--verify", uri]) == EXIT_CHECKSUM
    err = capsys.readouterr().err
    assert "crc64nvme mismatch" in err and uri in err


@pytest.mark.slow
@pytest.mark.parametrize("s3", ["moto", "rclone"], indirect=True)
def test_check_list_naming_s3_objects(s3, s3_client, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(100_000)
    s3_client.put_object(Bucket=bucket, Key="a/b.bin", Body=data)
    lst = tmp_path / "list.sha256"
    lst.write_text(f"{hashlib.sha256(data).hexdigest()}  s3://{bucket}/a/b.bin\n")
    ok = run_cli(["--endpoint-url", s3.endpoint_url, "-c", str(lst)])
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"s3://{bucket}/a/b.bin: OK\n"
    # --verify against whatever this server reports (an md5 ETag at least)
    uri = f"s3://{bucket}/a/b.bin"
    ver = run_cli(["--endpoint-url", s3.endpoint_url, "--verify", "-a", "md5", "-a", "crc32c", uri])
    assert ver.returncode == 0, ver.stderr
    assert ver.stdout.splitlines() == [f"MD5 ({uri}) = {hashlib.md5(data).hexdigest()}",
                                       f"CRC32C ({uri}) = {C.to_wire('crc32c', google_crc32c.value(data))}"]


def test_check_multipart_etag_guesses_the_part_size(tmp_path: Path) -> None:
    data = os.urandom(9 * MiB)
    (tmp_path / "big.bin").write_bytes(data)
    parts = [hashlib.md5(data[i:i + 8 * MiB]).digest() for i in range(0, len(data), 8 * MiB)]
    etag = C.etag_of_parts(parts)  # 8 MiB parts (aws cli's default), 2 parts
    (tmp_path / "list.txt").write_text(f"ETAG (big.bin) = {etag}\n")
    ok = run_cli(["-c", "list.txt"], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "big.bin: OK\n"
    (tmp_path / "list.txt").write_text(f"ETAG (big.bin) = {etag[:-1]}3\n")  # 3 parts of 3 MiB: another value
    assert run_cli(["-c", "list.txt"], cwd=tmp_path).returncode == EXIT_CHECKSUM


# -- issue 12: a full disk under the output, bad sizes; issue 17: verification in the library ----
@pytest.mark.parametrize("check", [False, True])
def test_output_onto_a_full_disk_is_one_line(tmp_path: Path, check: bool) -> None:
    """stdout on a full file system (/dev/full): exit 7, one line (was: a traceback)."""
    (tmp_path / "f.txt").write_bytes(b"hello")
    args = ["-a", "md5", str(tmp_path / "f.txt")]
    if check:
        (tmp_path / "f.md5").write_text(hashlib.md5(b"hello").hexdigest() + "  f.txt\n")
        args = ["--check", str(tmp_path / "f.md5")]
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "genostage", "checksum", *args], stdout=full,
                           stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 7, r.stderr
    assert r.stderr.count("\n") == 1 and "no space left" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [["-a", "etag", "--part-size", "-5MiB"], ["-a", "etag", "--part-size", "0"],
                                  ["--threads", "-2"], ["-a", "crc99"]])
def test_bad_options_are_one_usage_line(tmp_path: Path, args: List[str]) -> None:
    (tmp_path / "f.txt").write_bytes(b"hello")
    r = subprocess.run([sys.executable, "-m", "genostage", "checksum", *args, str(tmp_path / "f.txt")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


def test_verify_object_is_library_code(s3, s3_client, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """The remote verification `checksum --verify` prints lives in genostage.codec.checksum."""
    from genostage.errors import ChecksumMismatch
    from genostage.location import parse
    from genostage.store import Stores

    data = os.urandom(100_000)
    s3_client.put_object(Bucket=bucket, Key="v.bin", Body=data, ChecksumAlgorithm="CRC32C")
    stores = Stores()
    loc = parse(f"s3://{bucket}/v.bin")
    store = stores.for_location(loc)
    info = store.stat(loc)
    got = C.verify_object(store, info, ["crc32c", "md5"])
    assert got["md5"] == hashlib.md5(data).hexdigest()
    assert C.reported_checksums(store, info, ["md5"]) == {"md5": hashlib.md5(data).hexdigest()}
    info.checksums["crc32c"] = C.to_wire("crc32c", 1234)
    with pytest.raises(ChecksumMismatch, match="crc32c mismatch"):
        C.verify_object(store, info, ["crc32c"])
