from __future__ import annotations

import pytest

from genostage.errors import BadLocation, UnsafePath
from genostage.location import inside, parse, parse_object, safe_relative


@pytest.mark.parametrize("text,bucket,key,prefix,name", [
    ("s3://bucket/sample.bam", "bucket", "sample.bam", False, "sample.bam"),
    ("s3://bucket/refs/hg38/", "bucket", "refs/hg38/", True, "hg38"),
    ("s3://bucket", "bucket", "", True, "bucket"),
    ("s3://bucket/", "bucket", "", True, "bucket"),
    ("s3://my.bucket-1/a/b c.txt", "my.bucket-1", "a/b c.txt", False, "b c.txt"),
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


@pytest.mark.parametrize("text,reason,meant", [
    # one slash, no slash, no colon: refused with the URI meant, never taken for a local path
    ("s3:/bucket/key", "not an S3 URI", "s3://bucket/key"),
    ("s3:bucket/key", "not an S3 URI", "s3://bucket/key"),
    ("s3//bucket/key", "not an S3 URI", "s3://bucket/key"),
    ("S3:/bucket/key", "not an S3 URI", "s3://bucket/key"),
    # the scheme in capitals: aws and s5cmd would read a local directory 'S3:'
    ("S3://bucket/key", "lower case", "s3://bucket/key"),
    ("s3://bucket//key", "doubled slash", "s3://bucket/key"),
])
def test_mistyped_s3_uris_are_refused_with_the_spelling_meant(text, reason, meant):
    with pytest.raises(BadLocation, match=reason) as info:
        parse(text)
    message = str(info.value)
    assert meant in message and "\n" not in message


@pytest.mark.parametrize("text,reason", [
    (" s3://bucket/key", "white space"),
    ("s3://bucket/key ", "white space"),
    ("s3://bucket/key\n", "white space"),  # $(cat uri.txt) keeps no newline, but a file read in Python does
    ("s3://my bucket/key", "invalid bucket name 'my bucket'"),
    ("s3://localhost:9000/bucket/key", "--endpoint-url"),
    ("s3://bucket?versionId=abc", "not a prefix"),
    ("s3://bucket/dir/?versionId=abc", "not a prefix"),
])
def test_other_uri_typos_get_one_line(text, reason):
    with pytest.raises(BadLocation, match=reason) as info:
        parse(text)
    assert "\n" not in str(info.value).replace("\\n", "")


def test_a_local_path_spelled_like_a_typo_is_still_reachable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse("./s3:/x").path == str(tmp_path / "s3:" / "x")
    assert parse("s3/bucket/key").path == str(tmp_path / "s3" / "bucket" / "key")  # a directory named s3
    assert parse("run 1/a b.fq").path == str(tmp_path / "run 1" / "a b.fq")  # spaces inside local paths


@pytest.mark.parametrize("text,reason", [
    ("s3://bucket", "names the whole bucket"),
    ("s3://bucket/", "names the whole bucket"),
    ("s3://bucket/dir/", "names a prefix"),
])
def test_where_an_object_is_needed_a_bucket_or_prefix_is_one_line(text, reason):
    with pytest.raises(BadLocation, match=reason) as info:
        parse_object(text, "--manifest")
    assert "--manifest needs an object" in str(info.value)
    assert parse_object("s3://bucket/dir/x.bam", "--manifest").key == "dir/x.bam"


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
