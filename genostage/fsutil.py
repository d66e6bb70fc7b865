"""Local files written whole or not at all, and OS errors in words.

Every file genostage writes (a downloaded object, a chunk, a gathered BAM, a plan, a cache
entry's metadata) is written under a hidden temporary name beside its destination and
renamed into place only when complete: :func:`temp_name` makes that name (unique to the
process and call, and short enough for any destination whose own name is legal), and
:class:`AtomicFile` wraps the write-then-rename. :func:`os_error` turns an ``OSError`` into
the genostage error a user can act on (a full disk is :class:`InsufficientSpace`).
"""
from __future__ import annotations

import errno
import hashlib
import itertools
import os
import uuid
from typing import IO, Any, Optional

from .errors import (AccessDenied, GenostageError, InsufficientSpace, NotFound, StorageError, UnsafePath,
                     UsageError)
from .units import format_size

NAME_MAX = 255  # bytes in one path component (ext4, XFS, tmpfs, overlayfs)

_TOKEN = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
_SERIAL = itertools.count()


def _fits(name: bytes, budget: int) -> bytes:
    """``name`` cut to ``budget`` bytes, with a short hash of the whole when it had to be cut."""
    if len(name) <= budget:
        return name
    digest = hashlib.sha1(name).hexdigest()[:8].encode()
    return name[:budget - 9] + b"~" + digest


def temp_name(path: "str | os.PathLike[str]") -> str:
    """A hidden sibling name, unique to this process and call, for writing ``path`` before
    the rename; at most 255 bytes whatever the destination's own name (a long name is cut
    and tagged with its hash)."""
    head, tail = os.path.split(os.fspath(path))
    suffix = f".genostage-{_TOKEN}-{next(_SERIAL)}.tmp".encode()
    stem = _fits(os.fsencode(tail), NAME_MAX - 1 - len(suffix))
    return os.path.join(head, os.fsdecode(b"." + stem + suffix))


def is_temp_name(name: str) -> bool:
    """True for a name :func:`temp_name` made (to sweep leftovers of killed processes)."""
    return name.startswith(".") and ".genostage-" in name and name.endswith(".tmp")


def os_error(exc: OSError, what: str) -> GenostageError:
    """The genostage error an ``OSError`` met while working on ``what`` stands for."""
    code = exc.errno
    reason = exc.strerror or str(exc)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientSpace(0, 0, what, f"no space left on the file system of {what}")
    if code == errno.ENOENT:
        return NotFound(f"{what} does not exist")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return AccessDenied(f"{what}: {reason}")
    if code == errno.ENAMETOOLONG:
        return UsageError(f"{what}: file name too long (at most {NAME_MAX} bytes per path component)")
    if code == errno.ELOOP:
        return UnsafePath(f"{what}: too many levels of symbolic links (a link loop?)")
    if code == errno.EISDIR:
        return UsageError(f"{what} is a directory")
    if code == errno.ENOTDIR:
        return UsageError(f"{what}: a component of the path is not a directory")
    return StorageError(f"{what}: {reason}")


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still use on the file system of ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def no_space(needed: int, free: int, where: str) -> InsufficientSpace:
    return InsufficientSpace(needed, free, where, f"needs {format_size(needed)}, {format_size(free)} free on {where}")


def check_space(root: str, needed: int, already_there: int = 0) -> None:
    """Raise :class:`InsufficientSpace` when ``needed`` bytes do not fit on ``root``'s file system
    (``already_there``: bytes it holds that may be given up for them)."""
    free = free_bytes(root) + already_there
    if needed > free:
        raise no_space(needed, free, root)


class AtomicFile:
    """``with AtomicFile(path) as fh: fh.write(...)``: the file appears at ``path`` only when
    the block ends without an error; otherwise the temporary file is removed. Errors from
    the file system come out as genostage errors (:func:`os_error`)."""

    def __init__(self, path: "str | os.PathLike[str]", mode: int = 0o644) -> None:
        self.path = os.fspath(path)
        self.tmp = temp_name(self.path)
        self._mode = mode
        self.fh: Optional[IO[bytes]] = None

    def open(self) -> IO[bytes]:
        try:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self._mode)
        except OSError as exc:
            raise os_error(exc, self.path) from None
        self.fh = os.fdopen(fd, "wb")
        return self.fh

    def commit(self) -> None:
        assert self.fh is not None
        try:
            self.fh.close()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise os_error(exc, self.path) from None
        self.fh = None

    def abort(self) -> None:
        if self.fh is not None:
            try:
                self.fh.close()
            except OSError:
                pass
            self.fh = None
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> IO[bytes]:
        return self.open()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
            if isinstance(exc, OSError):
                raise os_error(exc, self.path) from None
            return
        self.commit()


def write_atomic(path: "str | os.PathLike[str]", data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` whole or not at all."""
    with AtomicFile(path, mode) as fh:
        fh.write(data)


__all__ = ["AtomicFile", "NAME_MAX", "check_space", "free_bytes", "is_temp_name", "no_space", "os_error",
           "temp_name", "write_atomic"]
