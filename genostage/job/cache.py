"""A node-level cache of reference data shared by the jobs running on one machine.

    cache = Cache("/scratch/genostage-cache", max_size="200GiB")
    with Job(cache=cache) as job:
        ref = job.ref("s3://bucket/refs/hg38/")     # downloaded once per node, then linked

Layout (no database: only files, directories and ``flock``)::

    <root>/CACHEDIR.TAG            marks the directory (backup tools skip it)
    <root>/entries/<key>/          one cached object; key = sha256(URI, version id, ETag, size)
        data                       the bytes (mode 0444), present once verified
        meta.json                  identity, store checksums, our CRC64NVME, mtime; written last
        used                       its mtime is the last use (LRU)
        use.lock                   LOCK_SH by every job using the entry, for the job's lifetime;
                                   LOCK_EX (non-blocking) by whoever evicts or prunes it
        fill.lock                  LOCK_EX by the one job downloading it
        partial/                   resumable parts of a large download in progress
    <root>/trash/                  entries being removed (renamed here first: removal is atomic)

A dead process's ``flock`` is released by the kernel, so a job SIGKILLed while
downloading frees ``fill.lock`` and a waiting job takes the download over
(resuming from the parts already on disk); a job SIGKILLed while using an entry
stops protecting it from eviction. Lock files are re-checked after locking
(same inode as the path), so an entry removed meanwhile is never mistaken for
a live one.

An entry is served only when its identity (URI, version id, ETag, size) matches
what the store reports now, every checksum the store reports matches the one
recorded (ours or the store's), and the data file still has its recorded size,
mtime and read-only mode; otherwise it is removed and downloaded again.

How a job gets the file (``link``):

* ``reflink``: a copy-on-write clone (XFS, btrfs): instant, no extra space,
  and a tool writing into it changes only its own copy, even as root.
* ``hardlink``: the same inode, mode 0444. The kernel refuses writes by
  non-root users; root ignores permissions, so as root a hard link protects
  nothing by itself.
* ``copy``: a private copy (costs local disk I/O and space, never network).
* ``auto`` (default): reflink where the file system supports it; else a hard
  link when not running as root; else (root on ext4 and the like) a copy.

Whatever the mode, every entry a job used is checked when the job releases it
(size, mtime, mode): a damaged entry is removed so no later job is served it.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import resource
import shutil
import socket
import stat
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

from ..codec import checksum as ck
from ..config import TransferConfig
from ..cancel import check
from ..errors import ChecksumMismatch, GenostageError, NotFound, UsageError
from ..location import Location, parse
from ..progress import Progress, log_interval
from ..fsutil import check_space, free_bytes
from ..store import ObjectInfo, Stores
from ..transfer import Transfer, TransferResult
from ..units import format_size, parse_size

log = logging.getLogger("genostage.cache")

LINK_MODES = ("auto", "reflink", "hardlink", "copy")
FICLONE = 0x40049409  # ioctl(dest_fd, FICLONE, src_fd): a copy-on-write clone
TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# genostage node cache (https://bford.info/cachedir/)\n"
_POLL = 0.1  # seconds between looks at an entry another job is downloading
_CRCS = ("crc64nvme", "crc32c", "crc32")


def cache_key(info: ObjectInfo) -> str:
    """The identity of one version of an object: a changed object is a new entry.

    S3: URI, version id, ETag and size. A local file (``-r ref=/data/x.fa``) has no
    ETag, so its mtime stands in for it."""
    loc = info.location
    uri = f"s3://{loc.bucket}/{loc.key}" if loc.is_s3 else os.path.abspath(loc.path)
    etag = (info.etag or "").strip('"')
    ident = json.dumps([uri, info.version_id or "", etag, info.size] + ([] if loc.is_s3 else [info.mtime]))
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


# -- locks ---------------------------------------------------------------------
def _lock(path: str, mode: int, block: bool = True, create: bool = True) -> Optional[int]:
    """An fd holding ``flock(mode)`` on ``path``, or None (would block, or the file is gone).

    After locking, the path must still name the locked inode: an entry removed
    (renamed to trash) while we waited is not the entry we asked for.
    """
    while True:
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0) | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, mode | (0 if block else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
        if not create:
            return None


def _close(fd: Optional[int]) -> None:
    if fd is not None and fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def _current(fd: int, path: str) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def _raise_nofile(wanted: int) -> None:
    """Each entry in use holds one fd; lift the soft limit towards the hard one if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):
            pass


# -- placing files in a job's directory -----------------------------------------
def _reflink(src: str, dest: str) -> None:
    sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dfd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.ioctl(dfd, FICLONE, sfd)
        except OSError:
            os.close(dfd)
            os.unlink(dest)
            raise
        os.close(dfd)
    finally:
        os.close(sfd)


def _place(src: str, dest: str, mode: str) -> str:
    """Put the cached file ``src`` at ``dest``; returns how (the mode actually used)."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if mode == "reflink":
        try:
            _reflink(src, dest)
            os.chmod(dest, 0o444)
            return "reflink"
        except OSError as exc:
            log.warning("cannot clone %s into %s (%s): copying instead", src, dest, exc.strerror)
            mode = "copy"
    if mode == "hardlink":
        try:
            os.link(src, dest)
            return "hardlink"
        except OSError as exc:  # EXDEV (another file system), EPERM (protected_hardlinks), EMLINK
            log.warning("cannot hard-link %s into %s (%s): copying instead", src, dest, exc.strerror)
    shutil.copyfile(src, dest)
    os.chmod(dest, 0o444)
    return "copy"


_probe_lock = threading.Lock()
_probed: Dict[Tuple[int, int], bool] = {}


def reflink_supported(cache_dir: str, target_dir: str) -> bool:
    """Whether a file in ``cache_dir`` can be cloned into ``target_dir`` (probed once per pair of devices)."""
    try:
        devs = (os.stat(cache_dir).st_dev, os.stat(target_dir).st_dev)
    except OSError:
        return False
    with _probe_lock:
        if devs in _probed:
            return _probed[devs]
        src = os.path.join(cache_dir, f".reflink-probe-{uuid.uuid4().hex[:8]}")
        dest = os.path.join(target_dir, f".reflink-probe-{uuid.uuid4().hex[:8]}")
        ok = False
        try:
            with open(src, "wb") as fh:
                fh.write(b"genostage")
            _reflink(src, dest)
            ok = True
        except OSError:
            ok = False
        finally:
            for p in (src, dest):
                try:
                    os.unlink(p)
                except OSError:
                    pass
        _probed[devs] = ok
        return ok


def resolve_link(mode: str, cache_dir: str, target_dir: str) -> str:
    """The mode ``auto`` stands for here (see the module docstring)."""
    if mode not in LINK_MODES:
        raise UsageError(f"cache link mode must be one of {', '.join(LINK_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    if reflink_supported(cache_dir, target_dir):
        return "reflink"
    if os.geteuid() != 0:
        return "hardlink"
    return "copy"


# -- entries -------------------------------------------------------------------
@dataclass
class Entry:
    """What ``genostage cache ls`` shows about one entry."""

    key: str
    path: str
    complete: bool
    size: int
    disk_bytes: int
    last_use: float
    in_use: bool
    users: List[int] = field(default_factory=list)
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return str(self.meta.get("uri", "(incomplete)"))


@dataclass
class _Slot:
    """One object a job asks for, while the job acquires it."""

    info: ObjectInfo
    dest: str
    key: str
    dir: str
    use_fd: int = -1
    fill_fd: int = -1
    meta: Optional[Dict[str, Any]] = None
    how: str = ""  # "hit", "waited", "downloaded"
    waited_since: float = 0.0

    @property
    def data(self) -> str:
        return os.path.join(self.dir, "data")


class Cache:
    """A cache of verified objects on one node's disk, shared by concurrent jobs (and processes).

    ``max_size`` (bytes or a size string; None: bounded only by free space) is the
    total the cache shrinks to after a download, evicting the least recently used
    entries that no live job uses. ``link`` is how jobs get the files (see the module).
    """

    def __init__(self, root: "str | os.PathLike[str]", max_size: "Union[int, str, None]" = None,
                 link: str = "auto") -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.max_size = parse_size(max_size) if max_size is not None else None
        if link not in LINK_MODES:
            raise UsageError(f"cache link mode must be one of {', '.join(LINK_MODES)}, got {link!r}")
        self.link = link
        self.entries_dir = os.path.join(self.root, "entries")
        self.trash_dir = os.path.join(self.root, "trash")

    # -- set-up ------------------------------------------------------------
    def create(self) -> None:
        try:
            os.makedirs(self.entries_dir, exist_ok=True)
            os.makedirs(self.trash_dir, exist_ok=True)
            tag = os.path.join(self.root, "CACHEDIR.TAG")
            if not os.path.exists(tag):
                tmp = f"{tag}.{uuid.uuid4().hex[:8]}"
                with open(tmp, "w") as fh:
                    fh.write(TAG)
                os.replace(tmp, tag)
        except OSError as exc:
            raise GenostageError(f"cannot create the cache directory {self.root}: {exc.strerror}") from None

    def check_exists(self) -> None:
        """For the ``cache`` commands: refuse a directory that is not a genostage cache."""
        if not os.path.isdir(self.entries_dir):
            raise NotFound(f"{self.root} is not a genostage cache (no entries/ directory)")

    def entry_dir(self, key: str) -> str:
        """The directory of the entry ``key`` (whether or not it exists)."""
        return os.path.join(self.entries_dir, key)

    # -- acquiring (the job's side) ----------------------------------------
    def lease(self, stores: Stores, items: Sequence[Tuple[ObjectInfo, Location]],
              config: Optional[TransferConfig] = None, cancel: Optional[threading.Event] = None,
              show_progress: bool = True, label: str = "reference") -> "Lease":
        """Make every ``(object, local destination)`` available at its destination, via the cache.

        Objects already cached are linked at once; missing ones are downloaded by
        this job (verified, in one batch) unless another job is downloading them,
        in which case this job waits for it, or takes over if it dies. The
        returned :class:`Lease` keeps the entries in use until ``release()``.
        """
        self.create()
        lease = Lease(self, stores, config or stores.config, cancel or threading.Event(), show_progress)
        try:
            lease.acquire(items, label)
        except BaseException:
            lease.release()
            raise
        return lease

    # -- reading entries -----------------------------------------------------
    def read_meta(self, entry_dir: str) -> Optional[Dict[str, Any]]:
        """The entry's ``meta.json`` (None while it is incomplete, or unreadable)."""
        try:
            with open(os.path.join(entry_dir, "meta.json")) as fh:
                meta = json.load(fh)
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def _keys(self) -> List[str]:
        try:
            return sorted(n for n in os.listdir(self.entries_dir) if re.fullmatch(r"[0-9a-f]{32}", n))
        except FileNotFoundError:
            return []

    def entry(self, key: str, users: Optional[Dict[int, List[int]]] = None) -> Optional[Entry]:
        d = self.entry_dir(key)
        meta = self.read_meta(d)
        disk = _disk_bytes(d)
        try:
            last = os.stat(os.path.join(d, "used")).st_mtime
        except OSError:
            try:
                last = os.stat(d).st_mtime
            except OSError:
                return None
        in_use, pids = False, []
        lock = os.path.join(d, "use.lock")
        fd = _lock(lock, fcntl.LOCK_EX, block=False, create=False)
        if fd is None and os.path.exists(lock):
            in_use = True
            try:
                pids = sorted(set((users or _flock_holders()).get(os.stat(lock).st_ino, [])))
            except OSError:
                pids = []
        _close(fd)
        size = int(meta["size"]) if meta else disk
        return Entry(key, d, meta is not None, size, disk, last, in_use, pids, meta or {})

    def entries(self) -> List[Entry]:
        """Every entry, least recently used first."""
        users = _flock_holders()
        found = [e for e in (self.entry(k, users) for k in self._keys()) if e is not None]
        return sorted(found, key=lambda e: e.last_use)

    def total_size(self) -> int:
        return sum(e.size for e in self.entries())

    # -- removing --------------------------------------------------------------
    def discard(self, entry_dir: str) -> None:
        """Remove an entry atomically (rename into trash, then delete); the caller holds a lock on it."""
        os.makedirs(self.trash_dir, exist_ok=True)
        gone = os.path.join(self.trash_dir, f"{os.path.basename(entry_dir)}.{uuid.uuid4().hex[:8]}")
        try:
            os.rename(entry_dir, gone)
        except FileNotFoundError:
            return
        _rmtree(gone)

    def _try_remove(self, key: str) -> bool:
        """Remove an entry nobody uses or fills; False when a live job holds it."""
        d = self.entry_dir(key)
        fd = _lock(os.path.join(d, "use.lock"), fcntl.LOCK_EX, block=False, create=True)
        if fd is None:
            return not os.path.isdir(d)
        try:
            fill = _lock(os.path.join(d, "fill.lock"), fcntl.LOCK_EX, block=False, create=True)
            if fill is None:
                return False
            try:
                self.discard(d)
            finally:
                _close(fill)
        finally:
            _close(fd)
        return True

    def evict(self, limit: int, protect: Set[str] = frozenset()) -> List[Entry]:  # type: ignore[assignment]
        """Remove least recently used entries no live job holds until the total is at most ``limit``."""
        entries = self.entries()
        total = sum(e.size for e in entries)
        removed: List[Entry] = []
        for e in entries:
            if total <= limit:
                break
            if e.key in protect or e.in_use:
                continue
            if self._try_remove(e.key):
                total -= e.size
                removed.append(e)
                log.info("cache: evicted %s (%s, last used %s)", e.uri, format_size(e.size), _iso(e.last_use))
        self._empty_trash()
        if total > limit:
            log.warning("cache: %s in use by live jobs, above the limit of %s", format_size(total), format_size(limit))
        return removed

    def make_room(self, needed: int, protect: Set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """Before downloading ``needed`` bytes: evict down to max_size - needed, then free disk space."""
        if self.max_size is not None:
            entries = self.entries()
            if sum(e.size for e in entries) + needed > self.max_size:
                self.evict(max(0, self.max_size - needed), protect)
        free = free_bytes(self.root)
        if needed > free:
            entries = self.entries()
            total = sum(e.size for e in entries)
            self.evict(max(0, total - (needed - free)), protect)
        check_space(self.root, needed)

    def reclaim_for(self, path: str, needed: int) -> None:
        """Before staging ``needed`` bytes of ordinary inputs to ``path``: when ``path`` shares the cache's
        file system and lacks the space, evict unused entries (least recently used first) to make it."""
        try:
            same = os.stat(path).st_dev == os.stat(self.root).st_dev
        except OSError:
            return
        free = free_bytes(path)
        if not same or needed <= free:
            return
        total = self.total_size()
        log.info("cache: %s needed on %s, %s free: evicting unused cache entries", format_size(needed), path,
                 format_size(free))
        self.evict(max(0, total - (needed - free)))

    def _empty_trash(self) -> None:
        try:
            names = os.listdir(self.trash_dir)
        except FileNotFoundError:
            return
        for name in names:
            _rmtree(os.path.join(self.trash_dir, name))

    def prune(self, max_size: int) -> List[Entry]:
        """Evict down to ``max_size`` bytes (0: every entry no live job holds), dropping leftovers of
        dead downloads. No default: emptying the cache is asked for, never implied."""
        removed = []
        for e in self.entries():
            if not e.complete and not e.in_use and self._try_remove(e.key):
                removed.append(e)
        return removed + self.evict(max_size)

    def verify(self, remove: bool = True) -> List[Tuple[Entry, Optional[str]]]:
        """Re-read every complete entry and compare with the recorded CRC64NVME; damaged ones are removed."""
        out: List[Tuple[Entry, Optional[str]]] = []
        for e in self.entries():
            if not e.complete:
                continue
            problem = _check_data(e.meta, os.path.join(e.path, "data"), full=True)
            if problem and remove and not e.in_use:
                self._try_remove(e.key)
            out.append((e, problem))
        return out


class Lease:
    """The entries one job uses: held (shared locks) from acquisition until ``release()``."""

    def __init__(self, cache: Cache, stores: Stores, config: TransferConfig, cancel: threading.Event,
                 show_progress: bool) -> None:
        self.cache = cache
        self.stores = stores
        self.config = config
        self.cancel = cancel
        self.show_progress = show_progress
        self.slots: List[_Slot] = []
        self.results: List[TransferResult] = []
        self.link_modes: Dict[str, int] = {}
        self.damaged: List[str] = []

    # -- counts for the manifest ---------------------------------------------
    def summary(self) -> Dict[str, Any]:
        counts = {"hit": 0, "waited": 0, "downloaded": 0}
        fetched = 0
        for s in self.slots:
            counts[s.how] = counts.get(s.how, 0) + 1
            if s.how == "downloaded":
                fetched += s.info.size
        return {"root": self.cache.root, **counts, "bytes_downloaded": fetched, "link": dict(self.link_modes),
                "damaged": list(self.damaged)}

    # -- acquisition -----------------------------------------------------------
    def acquire(self, items: Sequence[Tuple[ObjectInfo, Location]], label: str) -> None:
        _raise_nofile(len(items) + 256)
        first = len(self.slots)
        for info, dest in items:
            key = cache_key(info)
            slot = _Slot(info, dest.path, key, self.cache.entry_dir(key))
            self._open_use(slot)
            self.slots.append(slot)
        pending = list(self.slots[first:])
        waits: Dict[str, Progress] = {}
        last_note = 0.0
        while pending:
            self._check_cancel()
            mine: List[_Slot] = []
            still: List[_Slot] = []
            for slot in pending:
                state = self._look(slot)
                if state == "ready":
                    if slot.key in waits:
                        waits.pop(slot.key).close()
                elif state == "mine":
                    mine.append(slot)
                else:
                    still.append(slot)
            if mine:
                try:
                    self._download(mine, label)
                finally:
                    for slot in mine:
                        _close(slot.fill_fd)
                        slot.fill_fd = -1
                continue  # look again: every slot we filled is now ready
            pending = still
            if pending:
                now = time.monotonic()
                if now - last_note >= log_interval() or not waits:
                    for slot in pending:
                        if slot.key not in waits:
                            log.info("%s: another job is downloading it; waiting", slot.info.location)
                            waits[slot.key] = Progress(slot.info.size, f"waiting for {slot.info.location.name}",
                                                       enabled=self.show_progress)
                    last_note = now
                for slot in pending:
                    p = waits.get(slot.key)
                    if p is not None:
                        p.update(_partial_bytes(slot.dir) - p.done)
                time.sleep(_POLL)
        for p in waits.values():
            p.close()
        self._place(self.slots[first:])

    def _check_cancel(self) -> None:
        check(self.cancel)

    def _open_use(self, slot: _Slot) -> None:
        """Hold ``use.lock`` shared: from now on nobody evicts this entry under us."""
        while True:
            os.makedirs(slot.dir, exist_ok=True)
            fd = _lock(os.path.join(slot.dir, "use.lock"), fcntl.LOCK_SH, block=True, create=True)
            if fd is not None:
                slot.use_fd = fd
                return

    def _reopen(self, slot: _Slot) -> None:
        _close(slot.fill_fd)
        _close(slot.use_fd)
        slot.fill_fd = slot.use_fd = -1
        self._open_use(slot)

    def _look(self, slot: _Slot) -> str:
        """``ready`` (served from the cache), ``mine`` (we hold fill.lock and must download) or ``wait``."""
        if not _current(slot.use_fd, os.path.join(slot.dir, "use.lock")):
            self._reopen(slot)  # the entry was removed (damaged or stale) since we locked it
        meta = self.cache.read_meta(slot.dir)
        if meta is not None:
            problem = _mismatch(meta, slot.info) or _check_data(meta, slot.data, full=False)
            if problem is None:
                return self._ready(slot, meta)
        fill = _lock(os.path.join(slot.dir, "fill.lock"), fcntl.LOCK_EX, block=False, create=True)
        if fill is None:
            if slot.waited_since == 0.0:
                slot.waited_since = time.monotonic()
            return "wait"
        if not _current(slot.use_fd, os.path.join(slot.dir, "use.lock")):
            _close(fill)
            self._reopen(slot)
            return "wait"
        meta = self.cache.read_meta(slot.dir)  # it may have been completed since we looked
        if meta is not None:
            problem = _mismatch(meta, slot.info) or _check_data(meta, slot.data, full=False)
            if problem is None:
                _close(fill)
                return self._ready(slot, meta)
            log.warning("cache: %s: %s; removing the cached copy and downloading it again",
                        slot.info.location, problem)
            self.cache.discard(slot.dir)
            _close(fill)
            self._reopen(slot)
            return self._look(slot)
        slot.fill_fd = fill
        return "mine"

    def _ready(self, slot: _Slot, meta: Dict[str, Any]) -> str:
        slot.meta = meta
        if not slot.how:
            slot.how = "waited" if slot.waited_since else "hit"
        _touch(os.path.join(slot.dir, "used"))
        return "ready"

    # -- downloading -------------------------------------------------------------
    def _download(self, slots: List[_Slot], label: str) -> None:
        needed = sum(s.info.size for s in slots)
        self.cache.make_room(needed, protect={s.key for s in self.slots})
        for s in slots:
            _clean_leftovers(s.dir)
        small = [s for s in slots if s.info.size < self.config.multipart_threshold]
        large = [s for s in slots if s.info.size >= self.config.multipart_threshold]
        if small:
            t = Transfer(self.stores, self.config, cancel=self.cancel, show_progress=self.show_progress)
            results = t.copy_all([(s.info, parse(s.data + ".new")) for s in small], label=f"cache fill: {label}")
            for s, r in zip(small, results):
                self._commit(s, r)
        for s in large:
            t = Transfer(self.stores, self.config, cancel=self.cancel, partial_dir=os.path.join(s.dir, "partial"),
                         show_progress=self.show_progress)
            os.makedirs(os.path.join(s.dir, "partial"), exist_ok=True)
            r = t.copy(s.info, parse(s.data + ".new"), label=f"cache fill: {s.info.location.name}")
            self._commit(s, r)

    def _commit(self, slot: _Slot, result: TransferResult) -> None:
        """Publish a verified download: data read-only, then meta.json (an entry is complete once it exists)."""
        new = slot.data + ".new"
        os.chmod(new, 0o444)
        os.replace(new, slot.data)
        st = os.stat(slot.data)
        info = slot.info
        meta = {
            "uri": str(info.location), "size": info.size, "etag": (info.etag or "").strip('"') or None,
            "version_id": info.version_id, "store_checksums": dict(info.checksums),
            "checksum_type": info.checksum_type, "checksums": dict(result.checksums),
            "verified": result.verified, "mtime_ns": st.st_mtime_ns, "created": time.time(),
            "by": f"{socket.gethostname()}:{os.getpid()}",
        }
        tmp = os.path.join(slot.dir, f".meta.{uuid.uuid4().hex[:8]}")
        with open(tmp, "w") as fh:
            json.dump(meta, fh, indent=1)
        os.replace(tmp, os.path.join(slot.dir, "meta.json"))
        _touch(os.path.join(slot.dir, "used"))
        shutil.rmtree(os.path.join(slot.dir, "partial"), ignore_errors=True)
        slot.how = "downloaded"
        slot.meta = meta

    # -- placing -----------------------------------------------------------------
    def _place(self, slots: Sequence[_Slot]) -> None:
        if not slots:
            return
        dest_dir = os.path.dirname(slots[0].dest)
        os.makedirs(dest_dir, exist_ok=True)
        mode = resolve_link(self.cache.link, self.cache.entries_dir, dest_dir)
        if mode == "hardlink" and os.geteuid() == 0:
            log.warning("cache: hard links as root: a tool writing into a reference changes the cached copy "
                        "(detected and evicted when the job ends); use --cache-link auto or copy to prevent it")
        for s in slots:
            how = _place(s.data, s.dest, mode)
            self.link_modes[how] = self.link_modes.get(how, 0) + 1
            assert s.meta is not None
            r = TransferResult(source=str(s.info.location), destination=s.dest, size=s.info.size,
                               etag=s.info.etag, version_id=s.info.version_id, checksums=dict(s.meta["checksums"]),
                               verified=s.meta.get("verified"), seconds=0.0, parts=0)
            r.cache = s.how  # type: ignore[attr-defined]
            self.results.append(r)

    # -- release -----------------------------------------------------------------
    def release(self) -> List[str]:
        """Stop using the entries; remove any the job damaged (a tool that wrote into its input)."""
        for s in self.slots:
            _close(s.fill_fd)
            s.fill_fd = -1
            if s.use_fd < 0:
                continue
            if s.meta is not None and _current(s.use_fd, os.path.join(s.dir, "use.lock")):
                problem = _check_data(s.meta, s.data, full=False)
                if problem is not None:
                    self.damaged.append(str(s.info.location))
                    log.error("cache: %s was changed while in use (%s); removing it from the cache",
                              s.info.location, problem)
                    fill = _lock(os.path.join(s.dir, "fill.lock"), fcntl.LOCK_EX, block=True, create=True)
                    try:
                        if fill is not None and self.cache.read_meta(s.dir) == s.meta:
                            self.cache.discard(s.dir)
                    finally:
                        _close(fill)
            _close(s.use_fd)
            s.use_fd = -1
        return self.damaged


# -- checks --------------------------------------------------------------------
def _mismatch(meta: Dict[str, Any], info: ObjectInfo) -> Optional[str]:
    """Why a cached entry must not be served for ``info`` (None: it may be)."""
    if int(meta.get("size", -1)) != info.size:
        return f"size {meta.get('size')} cached, {info.size} in the store"
    if (meta.get("etag") or None) != ((info.etag or "").strip('"') or None):
        return "the ETag changed"
    if (meta.get("version_id") or None) != (info.version_id or None):
        return "the version id changed"
    recorded_store = meta.get("store_checksums") or {}
    ours = meta.get("checksums") or {}
    for name, value in (info.checksums or {}).items():
        if recorded_store.get(name) not in (None, value):
            return f"the store's {name} changed ({recorded_store[name]} cached, {value} now)"
        full = name in _CRCS and "-" not in value and (info.checksum_type or "").upper() != "COMPOSITE"
        if full and ours.get(name) not in (None, value):
            return ChecksumMismatch(str(info.location), name, value, ours[name]).args[0]
    return None


def _check_data(meta: Dict[str, Any], path: str, full: bool) -> Optional[str]:
    """Whether the data file is still what was verified: size, mtime, read-only; ``full`` re-reads it."""
    try:
        st = os.stat(path)
    except OSError:
        return "the cached data file is missing"
    if st.st_size != int(meta.get("size", -1)):
        return f"the cached file has {st.st_size} bytes, {meta.get('size')} expected"
    if meta.get("mtime_ns") is not None and st.st_mtime_ns != int(meta["mtime_ns"]):
        return "the cached file was modified"
    if st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return "the cached file was made writable"
    if full:
        want = (meta.get("checksums") or {}).get("crc64nvme")
        if want:
            got = ck.file_checksums(path, ["crc64nvme"])["crc64nvme"]
            if got != want:
                return f"crc64nvme mismatch: recorded {want}, file has {got}"
    return None


# -- small helpers ---------------------------------------------------------------
def _touch(path: str) -> None:
    try:
        os.utime(path)
    except FileNotFoundError:
        with open(path, "a"):
            pass


def _rmtree(path: str) -> None:
    def onerror(func, p, _exc):  # type: ignore[no-untyped-def]
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=onerror)


def _clean_leftovers(entry_dir: str) -> None:
    """Temporary files of a dead downloader of this entry (its resumable parts stay in partial/)."""
    for name in os.listdir(entry_dir):
        if name.startswith(".data.new.") or name.startswith(".meta.") or name == "data.new":
            try:
                os.unlink(os.path.join(entry_dir, name))
            except OSError:
                pass


def _partial_bytes(entry_dir: str) -> int:
    """Bytes a downloader has written so far (allocated blocks of its temporary files)."""
    total = 0
    for base, _dirs, files in os.walk(entry_dir):
        for name in files:
            if name.endswith(".data") or ".genostage-" in name:
                try:
                    total += os.stat(os.path.join(base, name)).st_blocks * 512
                except OSError:
                    pass
    return total


def _disk_bytes(entry_dir: str) -> int:
    total = 0
    for base, _dirs, files in os.walk(entry_dir):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_blocks * 512
            except OSError:
                pass
    return total


def _flock_holders() -> Dict[int, List[int]]:
    """inode -> pids holding a flock on it, from /proc/locks (best effort, Linux)."""
    out: Dict[int, List[int]] = {}
    try:
        with open("/proc/locks") as fh:
            lines = fh.readlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if "->" in parts:
            continue  # a blocked waiter
        if len(parts) >= 6 and parts[1] == "FLOCK":
            try:
                pid = int(parts[4])
                inode = int(parts[5].rsplit(":", 1)[1])
            except (ValueError, IndexError):
                continue
            out.setdefault(inode, []).append(pid)
    return out


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def stage_cached(cache: Cache, stores: Stores, staged: Sequence[Any], config: TransferConfig,
                 cancel: threading.Event, show_progress: bool) -> Lease:
    """Stage ``Staged`` reference inputs through ``cache``; attach per-file results; return the lease."""
    items = [item for s in staged for item in s.items]
    label = ", ".join(s.name for s in staged)
    lease = cache.lease(stores, items, config, cancel, show_progress, label=label)
    results = iter(lease.results)
    for s in staged:
        s.results = [next(results) for _ in s.items]
    return lease


__all__ = ["Cache", "Entry", "Lease", "LINK_MODES", "cache_key", "reflink_supported", "resolve_link", "stage_cached"]
