"""Parse and normalise locations: ``s3://bucket/key``, ``s3://bucket/prefix/``, local paths.

A location is either an S3 object/prefix or a local file/directory. A trailing
``/`` marks a prefix (a directory of objects). Malformed URIs are refused with
:class:`~genostage.errors.BadLocation`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional
from urllib.parse import unquote

from .errors import BadLocation, UnsafePath

# Bucket naming rules (general purpose buckets, plus the legacy upper-case/underscore
# names some S3-compatible servers still accept).
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")


@dataclass(frozen=True)
class Location:
    """Where bytes live. ``scheme`` is ``"s3"`` or ``"file"``; ``"pipe"`` is a named pipe (or
    an open descriptor: ``fd``) that a streamed copy writes into in order (never parsed from
    text: see :mod:`genostage.store.pipe`)."""

    scheme: str
    bucket: str = ""
    key: str = ""
    path: str = ""
    version_id: Optional[str] = None
    fd: int = -1

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    @property
    def is_pipe(self) -> bool:
        return self.scheme == "pipe"

    @property
    def is_prefix(self) -> bool:
        """True for ``s3://b/p/`` and for a local path ending in ``/`` or naming a directory."""
        if self.is_s3:
            return self.key == "" or self.key.endswith("/")
        if self.is_pipe:
            return False
        return self.path.endswith("/") or os.path.isdir(self.path)

    @property
    def name(self) -> str:
        """The last non-empty component (the file name a staged copy keeps)."""
        text = self.key if self.is_s3 else self.path
        name = PurePosixPath(text.rstrip("/")).name
        return name or self.bucket

    def child(self, relative: str) -> "Location":
        """The location of ``relative`` (a safe relative key) under this prefix."""
        if self.is_s3:
            base = self.key if (self.key == "" or self.key.endswith("/")) else self.key + "/"
            return Location("s3", self.bucket, base + relative)
        return Location("file", path=os.path.join(self.path, *relative.split("/")))

    def as_prefix(self) -> "Location":
        if self.is_s3:
            if self.key and not self.key.endswith("/"):
                return Location("s3", self.bucket, self.key + "/")
            return self
        return self if self.path.endswith("/") else Location("file", path=self.path + "/")

    def __str__(self) -> str:
        if self.is_s3:
            text = f"s3://{self.bucket}/{self.key}"
            return text + (f"?versionId={self.version_id}" if self.version_id else "")
        return self.path


def parse(text: "str | os.PathLike[str] | Location") -> Location:
    """Parse a URI or a local path into a :class:`Location`.

    ``s3://bucket/key`` (scheme in lower case, as ``aws`` and ``s5cmd`` read it),
    ``s3://bucket/prefix/``, ``s3://bucket`` (the whole bucket), ``file:///abs/path`` or a
    local path. What looks like a mistyped S3 URI (``s3:/b/k``, ``s3//b/k``, ``S3://b/k``,
    white space around it) is refused with the spelling it probably meant, instead of
    being taken for a local path."""
    if isinstance(text, Location):
        return text
    if isinstance(text, os.PathLike):
        text = os.fspath(text)
    if not isinstance(text, str) or text == "":
        raise BadLocation(repr(text), "empty location")
    if "\x00" in text:
        raise BadLocation(repr(text), "contains a NUL byte")
    _refuse_s3_typos(text)
    if text.startswith("s3://"):
        return _parse_s3(text)
    if text.lower().startswith("file://"):
        path = unquote(text[7:])
        if not path.startswith("/"):
            raise BadLocation(text, "file:// URIs must be absolute (file:///path)")
        return Location("file", path=path)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        scheme = text.split("://", 1)[0]
        raise BadLocation(text, f"unsupported scheme {scheme!r} (expected s3://bucket/key or a local path)")
    trailing = text.endswith("/")
    path = os.path.abspath(text) + ("/" if trailing and text != "/" else "")
    return Location("file", path=path)


# s3:/b/k, s3:b/k, s3//b/k: an S3 URI with a slash too few or its colon missing
_S3_TYPO = re.compile(r"^s3(:(?!//)|//)", re.IGNORECASE)


def _refuse_s3_typos(text: str) -> None:
    """Refuse what is almost surely a mistyped S3 URI rather than a local path."""
    stripped = text.strip()
    if stripped != text and (stripped[:3].lower() == "s3:" or stripped[:4].lower() == "s3//"):
        raise BadLocation(repr(text), f"white space around the URI (a stray space or newline?): write {stripped!r}")
    if _S3_TYPO.match(text):
        rest = re.sub(r"^s3[:/\\]+", "", text, flags=re.IGNORECASE).replace("\\", "/") or "bucket/key"
        raise BadLocation(text, f"not an S3 URI: write s3://{rest} (two slashes after 's3:'), "
                                f"or ./{text} for a local path")
    if text[:5].lower() == "s3://" and not text.startswith("s3://"):
        raise BadLocation(text, f"write the scheme in lower case: s3://{text[5:]} (aws and s5cmd would "
                                f"take {text[:3]!r} for a local directory)")


def _parse_s3(text: str) -> Location:
    rest = text[5:]
    if rest != rest.strip():
        raise BadLocation(repr(text), "white space at the end of the URI (a stray space or newline?)")
    version_id = None
    if "?versionId=" in rest:
        rest, version_id = rest.split("?versionId=", 1)
        if not version_id:
            raise BadLocation(text, "empty versionId")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise BadLocation(text, "missing bucket name (expected s3://bucket/key)")
    if ":" in bucket:
        raise BadLocation(text, f"{bucket!r} is not a bucket name: a server and port go in --endpoint-url "
                                f"(e.g. --endpoint-url http://{bucket}), the URI is s3://bucket/key")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise BadLocation(text, f"invalid bucket name {bucket!r} (3-63 letters, digits, '.', '-' or '_', "
                                "beginning and ending with a letter or digit)")
    if key.startswith("/"):
        raise BadLocation(text, f"key starts with '/' (a doubled slash after the bucket): write "
                                f"s3://{bucket}/{key.lstrip('/')}")
    if len(key.encode("utf-8")) > 1024:
        raise BadLocation(text, "key longer than 1024 bytes")
    if version_id is not None and (key == "" or key.endswith("/")):
        raise BadLocation(text, "a versionId names one version of an object: give the object's key, not a prefix")
    return Location("s3", bucket, key, version_id=version_id)


def parse_object(text: "str | os.PathLike[str] | Location", what: str = "this") -> Location:
    """:func:`parse`, for where one object (or file) is needed: ``s3://bucket`` and
    ``s3://bucket/prefix/`` are refused in one line naming ``what`` needs it."""
    loc = parse(text)
    if loc.is_s3 and loc.key == "":
        raise BadLocation(str(text), f"{what} needs an object, and s3://{loc.bucket} names the whole bucket: "
                                     f"give its key (s3://{loc.bucket}/KEY)")
    if loc.is_s3 and loc.key.endswith("/"):
        raise BadLocation(str(text), f"{what} needs an object, and a URI ending in '/' names a prefix: "
                                     f"write s3://{loc.bucket}/{loc.key.rstrip('/')} for the object")
    return loc


def safe_relative(relative: str, what: str) -> str:
    """Check that a key relative to a prefix stays inside the directory it is staged into.

    Refuses ``..`` segments, absolute keys, empty segments (``a//b``), ``.`` segments
    and backslashes or NULs, naming the offending key.
    """
    if relative == "":
        raise UnsafePath(f"{what}: empty key name under the prefix")
    if relative.startswith("/"):
        raise UnsafePath(f"{what}: key {relative!r} is absolute; refusing to write outside the input directory")
    if "\x00" in relative or "\\" in relative:
        raise UnsafePath(f"{what}: key {relative!r} contains a NUL or a backslash")
    for part in relative.split("/"):
        if part == "..":
            raise UnsafePath(f"{what}: key {relative!r} contains '..'; refusing to write outside the input directory")
        if part in ("", "."):
            raise UnsafePath(f"{what}: key {relative!r} has an empty or '.' path segment")
    return relative


def inside(path: "str | Path", root: "str | Path") -> bool:
    """True when ``path`` (resolved, following links) lies inside ``root`` (resolved)."""
    real = os.path.realpath(path)
    top = os.path.realpath(root)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)
