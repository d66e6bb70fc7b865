"""The local file system as a store.

Reads of up to 1 MiB run on the caller's thread (a hand-off would cost more than the read);
longer ones on a small pool of the store's own, so that several parts are read at once while
the caller goes on. A local upload writes into a hidden temporary file beside the destination
(:func:`genostage.fsutil.temp_name`) and renames it into place on :meth:`LocalUpload.complete`.
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

from ..errors import NotFound
from ..fsutil import os_error, temp_name
from ..location import Location
from .base import DONE, Consume, Done, ObjectInfo, Pending, Store, Upload

SMALL_FILE = 1 << 20  # written in one go: no need to size the file first
INLINE_READ = 1 << 20  # reads up to this size run on the caller's thread
READ_PIECE = 8 << 20  # a long read is handed over in pieces of this size


class _Workers:
    """A few daemon threads running queued calls (started on first use)."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._q: "queue.SimpleQueue[Callable[[], None]]" = queue.SimpleQueue()
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], None]) -> None:
        if len(self._threads) < self._n:
            with self._lock:
                if len(self._threads) < self._n:
                    t = threading.Thread(target=self._run, name="genostage-local-read", daemon=True)
                    t.start()
                    self._threads.append(t)
        self._q.put(fn)

    def _run(self) -> None:
        while True:
            self._q.get()()


class _LocalRead(Pending):
    def __init__(self) -> None:
        self.reason: Optional[BaseException] = None

    def cancel(self, reason: BaseException) -> None:
        self.reason = reason


class LocalUpload(Upload):
    """Writes into a temporary file beside the destination; ``complete`` renames it into place."""

    accepts_pieces = True
    completes_quickly = True

    def __init__(self, store: "LocalStore", loc: Location, size: int, resume_path: Optional[str] = None) -> None:
        self._store = store
        self._loc = loc
        directory = os.path.dirname(loc.path) or "."
        store.ensure_dir(directory)
        self._temp = resume_path or temp_name(loc.path)
        self.temp_path = self._temp
        self.resumed = resume_path is not None and os.path.exists(resume_path) and os.path.getsize(resume_path) == size
        flags = os.O_WRONLY | os.O_CREAT | (0 if resume_path else os.O_EXCL)
        try:
            self._fd = os.open(self._temp, flags, 0o644)
        except FileNotFoundError:  # the directory went away since it was made
            store.ensure_dir(directory, again=True)
            self._fd = os.open(self._temp, flags, 0o644)
        if not self.resumed and size > SMALL_FILE:  # parts land at their offsets: size it first
            try:
                os.ftruncate(self._fd, size)
            except OSError as exc:
                self.abort()
                raise os_error(exc, str(loc)) from None

    def write_piece(self, offset: int, piece: "bytes | memoryview") -> None:
        view = memoryview(piece)
        try:
            while view:
                n = os.pwrite(self._fd, view, offset)
                view = view[n:]
                offset += n
        except OSError as exc:
            raise os_error(exc, str(self._loc)) from None
        self._store.counters.add(written=len(piece))

    def write_part_async(self, number: int, offset: int, data: "bytes | memoryview",
                         checksums: Dict[str, str], done: Done) -> Pending:
        try:
            self.write_piece(offset, data)
            self._store.counters.add(requests=1)
        except BaseException as exc:  # handed to the caller's continuation
            done(exc)
            return DONE
        done(None)
        return DONE

    def complete(self, checksums: Optional[Dict[str, str]] = None) -> ObjectInfo:
        try:
            st = os.fstat(self._fd)  # what was written, without a lookup by name afterwards
            os.close(self._fd)
            self._fd = -1
            os.replace(self._temp, self._loc.path)
        except OSError as exc:
            self.abort()
            raise os_error(exc, str(self._loc)) from None
        return ObjectInfo(self._loc, st.st_size, mtime=st.st_mtime)

    def keep(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def abort(self) -> None:
        self.keep()
        try:
            os.unlink(self._temp)
        except OSError:
            pass


class LocalStore(Store):
    """Files on local disk; paths are absolute (see :func:`genostage.location.parse`)."""

    writes_block = True
    uploads_accept_pieces = True
    writes_are_local = True

    def __init__(self, readers: int = 4) -> None:
        super().__init__()
        self._dirs: Set[str] = set()  # directories this store has made or seen
        self._workers = _Workers(readers)

    def ensure_dir(self, path: str, again: bool = False) -> None:
        """``mkdir -p`` once per directory (a batch of small files shares a few)."""
        if again or path not in self._dirs:
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as exc:
                raise os_error(exc, path) from None
            self._dirs.add(path)

    def free_space(self, loc: Location) -> "Optional[Tuple[object, int]]":
        path = os.path.dirname(loc.path.rstrip("/")) or "/"
        while not os.path.isdir(path):
            path = os.path.dirname(path)
        st = os.statvfs(path)
        return (st.f_fsid or os.stat(path).st_dev, st.f_bavail * st.f_frsize)

    def stat(self, loc: Location, checksums: bool = True) -> ObjectInfo:
        try:
            st = os.stat(loc.path)
        except OSError as exc:
            raise os_error(exc, str(loc)) from None
        if not os.path.isfile(loc.path):
            raise NotFound(f"{loc} is not a regular file")
        return ObjectInfo(loc, st.st_size, mtime=st.st_mtime, checksums_known=True)

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
                             relative=rel + entry.name, checksums_known=True)
        for entry in subdirs:
            yield from self._walk(entry.path, rel + entry.name + "/")

    # -- reads -------------------------------------------------------------------
    def read_async(self, loc: Location, start: int, length: int, consume: Consume, done: Done,
                   etag: Optional[str] = None) -> Pending:
        handle = _LocalRead()
        if length <= INLINE_READ:
            self._read(loc, start, length, consume, done, handle)
            return DONE
        self._workers.submit(lambda: self._read(loc, start, length, consume, done, handle))
        return handle

    def _read(self, loc: Location, start: int, length: int, consume: Consume, done: Done,
              handle: _LocalRead) -> None:
        """Pieces of up to 8 MiB (one piece for a part of up to 64 MiB: held whole anyway)."""
        try:
            fd = os.open(loc.path, os.O_RDONLY)
        except OSError as exc:
            done(os_error(exc, str(loc)))
            return
        self.counters.add(requests=1)
        try:
            piece = length if length <= (64 << 20) else READ_PIECE
            pos, end = start, start + length
            while pos < end:
                if handle.reason is not None:
                    raise handle.reason
                data = os.pread(fd, min(piece, end - pos), pos)
                if not data:
                    break
                self.counters.add(read=len(data))
                pos += len(data)
                consume(data)  # type: ignore[arg-type]  # bytes: the consumer may keep it without a copy
        except OSError as exc:
            done(os_error(exc, str(loc)))
            return
        except BaseException as exc:  # handed to the caller's continuation
            done(exc)
            return
        finally:
            os.close(fd)
        done(None)

    def read_range(self, loc: Location, start: int, length: int, etag: Optional[str] = None) -> bytes:
        try:
            with open(loc.path, "rb") as fh:
                fh.seek(start)
                data = fh.read(length)
        except OSError as exc:
            raise os_error(exc, str(loc)) from None
        self.counters.add(requests=1, read=len(data))
        return data

    def iter_range(self, loc: Location, start: int, length: int, etag: Optional[str] = None,
                   chunk: int = 1 << 20) -> Iterator[bytes]:
        try:
            fh = open(loc.path, "rb")
        except OSError as exc:
            raise os_error(exc, str(loc)) from None
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

    # -- writes ------------------------------------------------------------------
    def begin_upload(self, loc: Location, size: int, parts: int = 1,
                     resume_path: Optional[str] = None) -> LocalUpload:
        try:
            return LocalUpload(self, loc, size, resume_path)
        except OSError as exc:
            raise os_error(exc, str(loc)) from None

    def delete(self, loc: Location) -> None:
        try:
            os.unlink(loc.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise os_error(exc, str(loc)) from None
