"""The local file system as a store."""
from __future__ import annotations

import errno
import os
import threading
from typing import Callable, Dict, Iterator, Optional, Set

from ..errors import AccessDenied, NotFound, StorageError
from ..fsutil import temp_name
from ..location import Location
from .base import ObjectInfo, Store, Upload


def _oserror(exc: OSError, loc: Location) -> StorageError:
    if exc.errno == errno.ENOENT:
        return NotFound(f"{loc} does not exist")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return AccessDenied(f"{loc}: permission denied")
    return StorageError(f"{loc}: {exc.strerror or exc}")


SMALL_FILE = 1 << 20  # written in one go: no need to size the file first


class LocalUpload(Upload):
    def __init__(self, store: "LocalStore", loc: Location, size: int, temp_path: Optional[str] = None) -> None:
        """Write into ``temp_path`` (a fresh hidden sibling by default); an existing
        ``temp_path`` of the right size is reused, so a download can resume into it."""
        self._store = store
        self._loc = loc
        self._size = size
        directory = os.path.dirname(loc.path) or "."
        store.ensure_dir(directory)
        self._tmp = temp_path or temp_name(loc.path)
        self.resumed = temp_path is not None and os.path.exists(temp_path) and os.path.getsize(temp_path) == size
        flags = os.O_WRONLY | os.O_CREAT | (0 if temp_path else os.O_EXCL)
        try:
            self._fd = os.open(self._tmp, flags, 0o644)
        except FileNotFoundError:  # the directory went away since it was made
            store.ensure_dir(directory, again=True)
            self._fd = os.open(self._tmp, flags, 0o644)
        if not self.resumed and size > SMALL_FILE:  # parts land at their offsets: size it first
            os.ftruncate(self._fd, size)

    @property
    def temp_path(self) -> str:
        """Where the bytes are until :meth:`complete` renames them into place."""
        return self._tmp

    def write_part(self, number: int, offset: int, data: "bytes | memoryview",
                   checksums: Optional[Dict[str, str]] = None) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view = view[n:]
            offset += n
        self._store.counters.add(requests=1, written=len(data))

    def complete(self, checksums: Optional[Dict[str, str]] = None) -> ObjectInfo:
        st = os.fstat(self._fd)  # what was written, without a lookup by name afterwards
        os.close(self._fd)
        self._fd = -1
        os.replace(self._tmp, self._loc.path)
        return ObjectInfo(self._loc, st.st_size, mtime=st.st_mtime)

    def close_keep(self) -> None:
        """Close without removing the temporary file (a journalled download resumes into it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass


class LocalStore(Store):
    """Files on local disk; paths are absolute (see :func:`genostage.location.parse`)."""

    def __init__(self) -> None:
        super().__init__()
        self._dirs: Set[str] = set()  # directories this store has made or seen

    def ensure_dir(self, path: str, again: bool = False) -> None:
        """``mkdir -p`` once per directory (a batch of small files shares a few)."""
        if again or path not in self._dirs:
            os.makedirs(path, exist_ok=True)
            self._dirs.add(path)

    def stat(self, loc: Location, checksums: bool = True) -> ObjectInfo:
        try:
            st = os.stat(loc.path)
        except OSError as exc:
            raise _oserror(exc, loc) from None
        if not os.path.isfile(loc.path):
            raise NotFound(f"{loc} is not a regular file")
        return ObjectInfo(loc, st.st_size, mtime=st.st_mtime)

    def list(self, prefix: Location) -> Iterator[ObjectInfo]:
        root = prefix.path.rstrip("/") or "/"
        if not os.path.isdir(root):
            raise NotFound(f"{prefix} is not a directory")
        yield from self._walk(root, "")

    def _walk(self, directory: str, rel: str) -> Iterator[ObjectInfo]:
        """Files under ``directory`` in name order, subdirectories after the files beside them
        (as ``os.walk`` orders them), with one ``stat`` per file."""
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        subdirs = []
        for entry in entries:
            try:
                if entry.is_dir():
                    if not entry.is_symlink():  # like os.walk: a linked directory is not entered
                        subdirs.append(entry)
                    continue
                st = entry.stat()
            except OSError:
                st = entry.stat(follow_symlinks=False)
            yield ObjectInfo(Location("file", path=entry.path), st.st_size, mtime=st.st_mtime,
                             relative=rel + entry.name)
        for entry in subdirs:
            yield from self._walk(entry.path, rel + entry.name + "/")

    def read_range(self, loc: Location, start: int, length: int, etag: Optional[str] = None) -> bytes:
        try:
            with open(loc.path, "rb") as fh:
                fh.seek(start)
                data = fh.read(length)
        except OSError as exc:
            raise _oserror(exc, loc) from None
        self.counters.add(requests=1, read=len(data))
        return data

    def iter_range(self, loc: Location, start: int, length: int, etag: Optional[str] = None,
                   chunk: int = 1 << 20) -> Iterator[bytes]:
        try:
            fh = open(loc.path, "rb")
        except OSError as exc:
            raise _oserror(exc, loc) from None
        self.counters.add(requests=1)
        with fh:
            fh.seek(start)
            while length > 0:
                data = fh.read(min(chunk, length))
                if not data:
                    return
                self.counters.add(read=len(data))
                length -= len(data)
                yield data

    def read_into(self, loc: Location, start: int, length: int, consume: Callable[[memoryview], None],
                  etag: Optional[str] = None, chunk: int = 1 << 20,
                  cancel: Optional[threading.Event] = None) -> None:
        """Ranges of up to 64 MiB (a part held in memory anyway) in one read, without a join."""
        if length > (64 << 20):
            return super().read_into(loc, start, length, consume, etag=etag, chunk=chunk, cancel=cancel)
        data = self.read_range(loc, start, length)
        if data:
            consume(data)  # type: ignore[arg-type]  # bytes: the consumer may keep it without a copy
        return None

    def put_bytes(self, loc: Location, data: bytes, checksums: Optional[Dict[str, str]] = None) -> ObjectInfo:
        up = self.begin_upload(loc, len(data))
        try:
            up.write_part(1, 0, data)
            return up.complete()
        except BaseException:
            up.abort()
            raise

    def begin_upload(self, loc: Location, size: int, temp_path: Optional[str] = None) -> LocalUpload:
        try:
            return LocalUpload(self, loc, size, temp_path)
        except OSError as exc:
            raise _oserror(exc, loc) from None

    def delete(self, loc: Location) -> None:
        try:
            os.unlink(loc.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _oserror(exc, loc) from None
