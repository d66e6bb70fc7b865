from __future__ import annotations

import pytest

from genostage.errors import BadLocation, UnsafePath
from genostage.location import inside, parse, safe_relative


@pytest.mark.parametrize("text,bucket,key,prefix,name", [
    ("s3://bucket/sample.bam", "bucket", "sample.bam", False, "sample.bam"),
    ("s3://bucket/refs/hg38/", "bucket", "refs/hg38/", True, "hg38"),
    ("s3://bucket", "bucket", "", True, "bucket"),
    ("s3://bucket/", "bucket", "", True, "bucket"),
    ("S3://my.bucket-1/a/b c.txt", "my.bucket-1", "a/b c.txt", False, "b c.txt"),
])
def test_parse_s3(text, bucket, key, prefix, name):
    loc = parse(text)
    assert loc.is_s3 and (loc.bucket, loc.key, loc.is_prefix, loc.name) == (bucket, key, prefix, name)


def test_version_id():
    loc = parse("s3://bucket/k.bam?versionId=abc")
    assert loc.version_id == "abc" and loc.key == "k.bam"
    assert str(loc) == "s3://bucket/k.bam?versionId=abc"


@pytest.mark.parametrize("text,reason", [
    ("s3://", "missing bucket"),
    ("s3:///key", "missing bucket"),
    ("s3://a/key", "invalid bucket"),
    ("s3://bad_bucket!/key", "invalid bucket"),
    ("s3://bucket//key", "doubled slash"),
    ("gs://bucket/key", "unsupported scheme"),
    ("", "empty"),
    ("file://relative/path", "absolute"),
])
def test_bad_uris(text, reason):
    with pytest.raises(BadLocation, match=reason):
        parse(text)


def test_local(tmp_path):
    loc = parse(str(tmp_path / "x.txt"))
    assert loc.scheme == "file" and loc.name == "x.txt" and not loc.is_prefix
    assert parse(str(tmp_path)).is_prefix
    assert parse(f"file://{tmp_path}/y").path == f"{tmp_path}/y"
    assert parse(str(tmp_path)).child("a/b").path == str(tmp_path / "a" / "b")


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/./b", "", "a\\..\\b"])
def test_unsafe_relative(key):
    with pytest.raises(UnsafePath):
        safe_relative(key, "input 'ref'")


def test_inside(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "link").symlink_to("/etc")
    assert inside(tmp_path / "in" / "x", tmp_path)
    assert not inside(tmp_path / "in" / "link", tmp_path)
