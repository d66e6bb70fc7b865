"""Parallel, multipart, verified, atomic copies between stores.

One thread pool moves every part of every object of a batch (no thread or
process per file): a batch of 2,000 small objects and one 2 GiB object in 16 MiB
parts both keep ``concurrency`` requests in flight. Each part is checksummed as
it arrives (CRC64NVME always, plus what the source's stored checksum needs); the
part values are combined in order into the whole-object value and compared with
what the source store reports, without a second read pass. Destinations are
written under a temporary name (local) or as a multipart upload (S3) and appear
only when complete and verified; a failure aborts the upload and removes the
temporary file. A part whose bytes turn out corrupted is fetched again.

Downloads into a ``partial_dir`` keep a journal of finished parts, so a job that
was killed and retried on the same scratch root resumes from the parts on disk.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import checksum as ck
from .config import TransferConfig
from .errors import ChecksumMismatch, Interrupted, TransferFailed
from .location import Location
from .progress import Progress
from .store import ObjectInfo, Stores, Upload

log = logging.getLogger("genostage.transfer")

ALWAYS = "crc64nvme"  # computed for every transfer: the manifest's value and the upload's full-object checksum


@dataclass
class TransferResult:
    """What one verified copy did (goes into the manifest)."""

    source: str
    destination: str
    size: int
    etag: Optional[str]
    version_id: Optional[str]
    checksums: Dict[str, str]
    verified: Optional[str]  # e.g. "crc64nvme", "etag", "size"
    seconds: float
    parts: int
    resumed_parts: int = 0
    repaired_parts: int = 0

    def to_json(self) -> Dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Part:
    index: int
    start: int
    length: int
    values: Dict[str, Any] = field(default_factory=dict)  # algorithm -> int CRC / bytes md5
    done: bool = False
    resumed: bool = False


class _Copy:
    """The state of one object's copy while its parts move."""

    def __init__(self, src: ObjectInfo, dest: Location, part_size: int, expected: Optional[Tuple[str, str]]) -> None:
        self.src = src
        self.dest = dest
        self.expected = expected
        self.algorithms = [ALWAYS]
        if expected and expected[0] in ("crc32c", "crc32") and expected[0] not in self.algorithms:
            self.algorithms.append(expected[0])
        self.part_size = part_size
        n = max(1, -(-src.size // part_size))
        self.parts = [_Part(i, i * part_size, min(part_size, src.size - i * part_size)) for i in range(n)]
        if src.size == 0:
            self.parts = [_Part(0, 0, 0)]
        self.remaining = len(self.parts)
        self.lock = threading.Lock()
        self.upload: Optional[Upload] = None
        self.started = time.monotonic()
        self.md5 = hashlib.md5() if expected and expected[0] == "md5" else None
        self.md5_next = 0
        self.md5_pending: Dict[int, bytes] = {}
        self.md5_busy = False
        self.md5_cond = threading.Condition(self.lock)
        self.journal: Optional[str] = None
        self.resumed = 0
        self.repaired = 0
        self.put_info: Optional[ObjectInfo] = None
        self.etag_part_size = 0  # the upload's part size, for a multipart-ETag check
        self.dest_verified: Optional[str] = None

    @property
    def single(self) -> bool:
        return len(self.parts) == 1


class _PartMD5s:
    """MD5s of consecutive ``size``-byte spans of a stream: the upload's parts, for a
    multipart ETag, when one request fetches several of them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.done: List[bytes] = []
        self.cur = hashlib.md5()
        self.filled = 0

    def update(self, piece: bytes) -> None:
        view = memoryview(piece)
        while view:
            take = min(len(view), self.size - self.filled)
            self.cur.update(view[:take])
            self.filled += take
            view = view[take:]
            if self.filled == self.size:
                self.done.append(self.cur.digest())
                self.cur, self.filled = hashlib.md5(), 0

    def digests(self) -> List[bytes]:
        return self.done + ([self.cur.digest()] if self.filled else [])


def download_part_size(size: int, config: TransferConfig) -> int:
    """Ranged-GET size for a download streamed to disk: at least ``config.part_size``, and large
    enough that an object takes one round of ``concurrency`` requests (at most 256 MiB).

    Streaming to disk keeps memory at ``io_chunk`` per request whatever the part size, and
    fewer, larger requests cost less per byte on every server (some S3-compatible servers,
    moto among them, read the whole object for every ranged GET)."""
    mib = 1 << 20
    share = -(-size // config.concurrency)
    return max(config.part_size, min(256 * mib, -(-share // mib) * mib))


class Transfer:
    """Copies batches of objects between stores, verified and atomic.

    ``cancel`` (a threading.Event) stops every part between pieces; in-flight
    uploads are aborted and temporary files removed before ``copy_all`` raises
    :class:`Interrupted`.
    """

    def __init__(self, stores: Stores, config: Optional[TransferConfig] = None,
                 cancel: Optional[threading.Event] = None, partial_dir: Optional[str] = None,
                 show_progress: bool = True) -> None:
        self.stores = stores
        self.config = config or stores.config
        self.cancel = cancel or threading.Event()
        self.partial_dir = partial_dir
        self.show_progress = show_progress
        self._active: List[_Copy] = []
        self._active_lock = threading.Lock()

    # -- public --------------------------------------------------------------
    def copy_all(self, items: Sequence[Tuple[ObjectInfo, Location]], label: str = "transfer") -> List[TransferResult]:
        """Copy every ``(source info, destination)`` pair; all succeed or the first error is raised."""
        if not items:
            return []
        copies = [self._prepare(src, dest) for src, dest in items]
        total = sum(c.src.size for c in copies)
        results: List[Optional[TransferResult]] = [None] * len(copies)
        errors: List[BaseException] = []
        progress = Progress(total, label, enabled=self.show_progress)
        pool = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="genostage-xfer")
        try:
            futures = []
            for n, c in enumerate(copies):
                for part in c.parts:
                    if not part.done:
                        futures.append(pool.submit(self._run_part, c, part, n, results, errors, progress))
                if c.remaining == 0:  # fully resumed from a journal
                    futures.append(pool.submit(self._finish_guarded, c, n, results, errors))
            for fut in futures:
                fut.result()
        finally:
            pool.shutdown(wait=True)
            progress.close()
        if errors:
            self._cleanup(copies)
            raise errors[0]
        if self.cancel.is_set():
            self._cleanup(copies)
            raise Interrupted(getattr(self.cancel, "signum", 15))
        return [r for r in results if r is not None]

    def copy(self, src: ObjectInfo, dest: Location, label: str = "transfer") -> TransferResult:
        return self.copy_all([(src, dest)], label)[0]

    # -- preparation ---------------------------------------------------------
    def _prepare(self, src: ObjectInfo, dest: Location) -> _Copy:
        if self.config.verify and src.location.is_s3 and not src.checksums and src.size >= self.config.multipart_threshold:
            # a listing carries no checksum values: ask for the full-object one (one HEAD per large object)
            src = self.stores.for_location(src.location).stat(src.location)
        expected = ck.expected_for(src) if self.config.verify else None
        if expected and expected[0] == "md5" and src.sse == "aws:kms":
            expected = None  # an SSE-KMS ETag is not an MD5 of the bytes
        part_size = self.config.part_size
        etag_part_size = 0
        if expected and expected[0] == "etag":
            n = int(expected[1].rsplit("-", 1)[1])
            store = self.stores.for_location(src.location)
            first = store.first_part_size(src.location) if hasattr(store, "first_part_size") else None
            guessed = first if first and -(-src.size // first) == n else ck.guess_etag_part_size(src.size, n)
            if guessed is None:
                expected = None
            else:
                etag_part_size = part_size = guessed
                if dest.scheme == "file":  # fetch several of the upload's parts per request
                    part_size = max(guessed, download_part_size(src.size, self.config) // guessed * guessed)
        elif dest.scheme == "file" and not (expected and expected[0] == "md5"):
            part_size = download_part_size(src.size, self.config)
        if src.size < self.config.multipart_threshold and not (expected and expected[0] == "etag"):
            part_size = max(src.size, 1)
        c = _Copy(src, dest, part_size, expected)
        c.etag_part_size = etag_part_size
        if dest.scheme == "file" and self.partial_dir and not c.single:
            self._load_journal(c)
        return c

    def _partial_paths(self, c: _Copy) -> Tuple[str, str]:
        ident = f"{c.src.location}|{c.src.etag}|{c.src.version_id}|{c.src.size}|{c.part_size}"
        name = hashlib.sha1(ident.encode()).hexdigest()[:24]
        assert self.partial_dir is not None
        return os.path.join(self.partial_dir, name + ".data"), os.path.join(self.partial_dir, name + ".journal")

    def _load_journal(self, c: _Copy) -> None:
        data_path, journal = self._partial_paths(c)
        c.journal = journal
        if not (os.path.exists(journal) and os.path.exists(data_path)):
            return
        with open(journal) as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    break  # a torn last line: ignore it and what follows
                part = c.parts[entry["index"]]
                part.values = {k: ([bytes.fromhex(d) for d in v] if k == "md5" else v) for k, v in entry["values"].items()}
                if not part.done:
                    part.done = part.resumed = True
                    c.remaining -= 1
                    c.resumed += 1
        if c.resumed:
            log.info("%s: resuming, %d of %d parts already on disk", c.src.location, c.resumed, len(c.parts))

    # -- parts ---------------------------------------------------------------
    def _run_part(self, c: _Copy, part: _Part, n: int, results: List[Optional[TransferResult]],
                  errors: List[BaseException], progress: Progress) -> None:
        if errors or self.cancel.is_set():
            return
        try:
            self._move_part(c, part, progress)
            with c.lock:
                c.remaining -= 1
                last = c.remaining == 0
            if last:
                results[n] = self._finish(c)
        except BaseException as exc:  # recorded; the batch stops and cleans up
            if not errors:
                errors.append(exc)
            self.cancel.set()

    def _finish_guarded(self, c: _Copy, n: int, results: List[Optional[TransferResult]], errors: List[BaseException]) -> None:
        try:
            results[n] = self._finish(c)
        except BaseException as exc:
            errors.append(exc)
            self.cancel.set()

    def _ensure_upload(self, c: _Copy) -> Upload:
        with c.lock:
            if c.upload is None:
                store = self.stores.for_location(c.dest)
                if c.dest.scheme == "file" and c.journal is not None:
                    data_path, _ = self._partial_paths(c)
                    os.makedirs(os.path.dirname(data_path), exist_ok=True)
                    c.upload = store.begin_upload(c.dest, c.src.size, temp_path=data_path)  # type: ignore[call-arg]
                else:
                    c.upload = store.begin_upload(c.dest, c.src.size)
                with self._active_lock:
                    self._active.append(c)
            return c.upload

    def _streams(self, c: _Copy) -> bool:
        """Downloads to a local file stream each piece to disk; others hold the part in memory."""
        return c.dest.scheme == "file" and c.md5 is None

    def _fetch(self, c: _Copy, part: _Part, progress: Progress,
               sink: Optional[Upload] = None) -> Tuple[Dict[str, Any], Optional[bytes]]:
        """Read one part, checksumming each piece as it arrives, retrying transient failures.

        With a ``sink`` every piece is written at its offset as it arrives and no
        data is returned; without one the part's bytes are returned.
        """
        store = self.stores.for_location(c.src.location)
        want_md5 = c.expected is not None and c.expected[0] == "etag"
        delay = 0.2
        for attempt in range(1, self.config.max_attempts + 1):
            pieces: List[bytes] = []
            values: Dict[str, Any] = {name: 0 for name in c.algorithms}
            md5 = _PartMD5s(c.etag_part_size) if want_md5 else None
            got = 0
            try:
                for piece in store.iter_range(c.src.location, part.start, part.length, etag=c.src.etag,
                                              chunk=self.config.io_chunk):
                    if self.cancel.is_set():
                        raise Interrupted(getattr(self.cancel, "signum", 15))
                    for name in c.algorithms:
                        values[name] = ck.crc(name, piece, values[name])
                    if md5 is not None:
                        md5.update(piece)
                    if sink is not None:
                        sink.write_part(part.index + 1, part.start + got, piece)
                    else:
                        pieces.append(piece)
                    got += len(piece)
                    progress.update(len(piece))
                if got != part.length:
                    raise TransferFailed(f"{c.src.location}: short read at byte {part.start + got} "
                                         f"(expected {part.length} bytes from {part.start})")
                if md5 is not None:
                    values["md5"] = md5.digests()
                if sink is not None:
                    return values, None
                return values, (b"".join(pieces) if len(pieces) != 1 else pieces[0])
            except TransferFailed as exc:
                progress.update(-got)
                if attempt == self.config.max_attempts:
                    raise
                log.warning("%s: part %d: %s; retrying in %.1f s", c.src.location, part.index + 1, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    def _move_part(self, c: _Copy, part: _Part, progress: Progress) -> None:
        if self._streams(c):
            part.values, _ = self._fetch(c, part, progress, sink=self._ensure_upload(c))
        else:
            part.values, data = self._fetch(c, part, progress)
            assert data is not None
            if c.md5 is not None:
                self._feed_md5(c, part.index, data)
            if c.single and c.dest.is_s3:
                self._single_put(c, part, data)
            else:
                self._ensure_upload(c).write_part(part.index + 1, part.start, data,
                                                  {ALWAYS: ck.to_wire(ALWAYS, part.values[ALWAYS])})
        part.done = True
        self._journal(c, part)

    def _single_put(self, c: _Copy, part: _Part, data: bytes) -> None:
        """One PutObject; the returned ETag (an MD5 unless SSE-KMS) checks what the store received."""
        store = self.stores.for_location(c.dest)
        info = store.put_bytes(c.dest, data, {ALWAYS: ck.to_wire(ALWAYS, part.values[ALWAYS])})
        c.put_info = info
        if self.config.verify and self.config.sse != "aws:kms" and ck.is_md5_etag(info.etag):
            md5 = hashlib.md5(data).hexdigest()
            if info.etag != md5:
                store.delete(c.dest)
                raise ChecksumMismatch(str(c.dest), "md5 (ETag)", md5, str(info.etag))
            c.dest_verified = "md5"

    def _feed_md5(self, c: _Copy, index: Optional[int] = None, data: bytes = b"") -> None:
        """MD5 is not combinable: parts are hashed in order, early arrivals held in memory
        (bounded by the pool size). One thread at a time hashes, outside the lock, so the
        other workers go on fetching; parts resumed from an earlier attempt are read back
        from the partial file on disk (never fetched again)."""
        with c.lock:
            if index is not None:
                c.md5_pending[index] = data
            if c.md5_busy:
                return
            c.md5_busy = True
        try:
            while True:
                with c.lock:
                    piece = self._next_md5_piece(c)
                    if piece is None:
                        c.md5_busy = False
                        c.md5_cond.notify_all()
                        return
                assert c.md5 is not None
                c.md5.update(piece)
        except BaseException:
            with c.lock:
                c.md5_busy = False
                c.md5_cond.notify_all()
            raise

    def _next_md5_piece(self, c: _Copy) -> Optional[bytes]:
        """The next part to hash, in order, if it is here (called with ``c.lock`` held)."""
        if c.md5_next >= len(c.parts):
            return None
        part = c.parts[c.md5_next]
        if c.md5_next in c.md5_pending:
            piece = c.md5_pending.pop(c.md5_next)
        elif part.resumed:
            with open(self._partial_paths(c)[0], "rb") as fh:
                fh.seek(part.start)
                piece = fh.read(part.length)
        else:
            return None
        c.md5_next += 1
        return piece

    def _wait_md5(self, c: _Copy) -> None:
        """Hash whatever is left once every part is in."""
        with c.lock:
            while c.md5_busy:
                c.md5_cond.wait()
        self._feed_md5(c)

    def _journal(self, c: _Copy, part: _Part) -> None:
        if c.journal is None:
            return
        entry = {"index": part.index, "values": {k: ([d.hex() for d in v] if k == "md5" else v) for k, v in part.values.items()}}
        with c.lock:
            with open(c.journal, "a") as fh:
                fh.write(json.dumps(entry) + "\n")

    # -- completion ----------------------------------------------------------
    def _combined(self, c: _Copy, name: str) -> int:
        value = c.parts[0].values[name]
        for part in c.parts[1:]:
            value = ck.combine(name, value, part.values[name], part.length)
        return int(value)

    def _actual(self, c: _Copy) -> Dict[str, str]:
        out = {name: ck.to_wire(name, self._combined(c, name)) for name in c.algorithms}
        if c.expected and c.expected[0] == "etag":
            out["etag"] = ck.etag_of_parts([d for p in c.parts for d in p.values["md5"]])
        if c.md5 is not None:
            out["md5"] = c.md5.hexdigest()
        return out

    def _verify(self, c: _Copy, actual: Dict[str, str]) -> Optional[str]:
        if c.expected is None:
            return None
        name, want = c.expected
        got = actual.get(name)
        if name in ("etag", "md5"):
            want, got = want.strip('"'), (got or "").strip('"')
        if got != want:
            raise ChecksumMismatch(str(c.src.location), name, want, str(got))
        return name

    def _finish(self, c: _Copy) -> TransferResult:
        if c.md5 is not None:
            self._wait_md5(c)
        actual = self._actual(c)
        try:
            verified = self._verify(c, actual)
        except ChecksumMismatch:
            if not self._repair(c):
                raise
            actual = self._actual(c)
            verified = self._verify(c, actual)
        if c.upload is not None:
            info = c.upload.complete({ALWAYS: actual[ALWAYS]})
            with self._active_lock:
                if c in self._active:
                    self._active.remove(c)
            c.upload = None
        else:
            info = c.put_info or self.stores.for_location(c.dest).stat(c.dest)
        self._check_destination(c, info, actual)
        if c.journal is not None and os.path.exists(c.journal):
            os.unlink(c.journal)
        return TransferResult(
            source=str(c.src.location), destination=str(c.dest), size=c.src.size, etag=c.src.etag,
            version_id=c.src.version_id, checksums=actual, verified=verified or c.dest_verified or "size",
            seconds=round(time.monotonic() - c.started, 3), parts=len(c.parts),
            resumed_parts=c.resumed, repaired_parts=c.repaired)

    def _repair(self, c: _Copy) -> bool:
        """Fetch every part again; rewrite those whose bytes differ; True once the whole value matches."""
        if c.md5 is not None or c.upload is None:
            return False  # single-stream checks: the batch-level retry handles them
        quiet = Progress(None, "", enabled=False)
        for _ in range(self.config.max_attempts - 1):
            changed = 0
            for part in c.parts:
                if self._streams(c):
                    values, _ = self._fetch(c, part, quiet, sink=c.upload)
                else:
                    values, data = self._fetch(c, part, quiet)
                    if values != part.values:
                        assert data is not None
                        c.upload.write_part(part.index + 1, part.start, data,
                                            {ALWAYS: ck.to_wire(ALWAYS, values[ALWAYS])})
                if values != part.values:
                    part.values = values
                    changed += 1
            c.repaired += changed
            log.warning("%s: checksum mismatch; fetched again, %d part(s) differed", c.src.location, changed)
            if not changed:
                return False  # the same bytes twice: the source itself does not match its checksum
            try:
                self._verify(c, self._actual(c))
                return True
            except ChecksumMismatch:
                continue
        return False

    def _check_destination(self, c: _Copy, info: ObjectInfo, actual: Dict[str, str]) -> None:
        """After publishing: the destination must report our size and, where it keeps one, our CRC64NVME."""
        reported = info.checksums.get(ALWAYS)
        problem = None
        if info.size != c.src.size:
            problem = ("size", str(c.src.size), str(info.size))
        elif reported and "-" not in reported and info.checksum_type != "COMPOSITE":
            if reported != actual[ALWAYS]:
                problem = (ALWAYS, actual[ALWAYS], reported)
            elif c.dest.is_s3:
                c.dest_verified = ALWAYS
        if problem:
            self.stores.for_location(c.dest).delete(c.dest)
            raise ChecksumMismatch(str(c.dest), *problem)

    def _cleanup(self, copies: Sequence[_Copy]) -> None:
        """Abort what did not complete: multipart uploads, temporary files (journals stay for a resume)."""
        for c in copies:
            if c.upload is None:
                continue
            try:
                if c.journal is not None:
                    c.upload.close_keep()  # type: ignore[attr-defined]  # partial data + journal: a retry resumes
                else:
                    c.upload.abort()
            except Exception:  # best effort
                pass
            c.upload = None


def expand(stores: Stores, src: Location, dest: Location, what: str = "") -> List[Tuple[ObjectInfo, Location]]:
    """Pairs of (source object, destination) for one object or a whole prefix."""
    from .location import safe_relative

    store = stores.for_location(src)
    if src.is_prefix:
        infos = list(store.list(src))
        if not infos:
            from .errors import NotFound

            raise NotFound(f"{src}: no objects under this prefix")
        base = dest.as_prefix()
        return [(i, base.child(safe_relative(i.relative, what or str(src)))) for i in infos]
    info = store.stat(src)
    if dest.is_prefix:
        dest = dest.as_prefix().child(src.name)
    return [(info, dest)]


def copy(src: "str | Location", dest: "str | Location", stores: Optional[Stores] = None,
         config: Optional[TransferConfig] = None) -> List[TransferResult]:
    """Copy one object or a whole prefix, in either direction or S3 to S3, verified."""
    from .location import parse

    stores = stores or Stores(config)
    s, d = parse(src), parse(dest)
    return Transfer(stores, config or stores.config).copy_all(expand(stores, s, d), label=f"copy {s.name}")
