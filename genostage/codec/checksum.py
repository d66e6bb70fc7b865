"""Checksums of bytes, streams and files, and the forms S3 uses for them.

The CRCs (``crc64nvme``, ``crc32c``, ``crc32``) run in the compiled kernel
:mod:`genostage.codec._checksum` (CLMUL folding with runtime CPU dispatch); ``md5``
and ``sha256`` come from :mod:`hashlib`.  S3 wire forms:

- CRCs: base64 of the big-endian value (4 bytes for crc32/crc32c, 8 for crc64nvme);
- sha256: base64 of the digest; md5: hex (as in an ETag);
- COMPOSITE checksums: ``BASE64-N``, the checksum of the concatenated part checksums;
- multipart ETags: hex of the md5 of the concatenated part md5s, then ``-N``.

>>> c = new("crc64nvme"); c.update(b"123456789"); hex(c.value())
'0xae8b14860a799888'
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import logging
import mmap
import os
import re
import stat
import threading
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import _checksum as _k
from .. import cpu
from ..errors import ChecksumMismatch, FormatError, ObjectChanged, UsageError

log = logging.getLogger("genostage.checksum")

ALGORITHMS = ("crc64nvme", "crc32c", "crc32", "md5", "sha256")
CRCS = ("crc64nvme", "crc32c", "crc32")
HASHES = ("md5", "sha256")
CRC_BYTES = {"crc64nvme": 8, "crc32c": 4, "crc32": 4}
DIGEST_BYTES = {"crc64nvme": 8, "crc32c": 4, "crc32": 4, "md5": 16, "sha256": 32}
MiB = 1024 * 1024
# Part sizes tried (in this order) to reproduce a multipart ETag.
COMMON_PART_SIZES = (8 * MiB, 16 * MiB, 5 * MiB, 64 * MiB, 100 * MiB, 50 * MiB)  # 50 MiB: s5cmd
# Bytes read per call by file_checksums (fits in L2/L3 so the CRC reads it from cache).
READ_CHUNK = 1 * MiB
# Segments at least this long are read through mmap (15% less CPU than pread copies),
# checksummed MMAP_SLICE bytes per kernel call.
MMAP_MIN = 16 * MiB
MMAP_SLICE = 8 * MiB

Buffer = Union[bytes, bytearray, memoryview, Any]


def _check_name(name: str, allowed: Sequence[str] = ALGORITHMS) -> str:
    if name not in allowed:
        raise UsageError(f"unknown checksum algorithm {name!r} (expected one of {', '.join(allowed)})")
    return name


def _nbytes(buf: Buffer) -> int:
    if isinstance(buf, (bytes, bytearray)):
        return len(buf)
    with memoryview(buf) as view:
        return view.nbytes


class Checksum:
    """A running checksum of one algorithm; feed it with :meth:`update`."""

    def __init__(self, name: str) -> None:
        self.name = _check_name(name)
        self.length = 0
        self._crc = 0
        self._hash: Any = hashlib.new(name) if name in HASHES else None

    def update(self, buf: Buffer) -> None:
        """Add the bytes of ``buf`` (any buffer-protocol object)."""
        if self._hash is not None:
            self._hash.update(buf)
        else:
            self._crc = _k.crc(self.name, buf, self._crc)
        self.length += _nbytes(buf)

    def copy(self) -> "Checksum":
        other = Checksum.__new__(Checksum)
        other.name = self.name
        other.length = self.length
        other._crc = self._crc
        other._hash = self._hash.copy() if self._hash is not None else None
        return other

    def value(self) -> Union[int, bytes]:
        """The CRC as an int, or the md5/sha256 digest as bytes."""
        if self._hash is not None:
            return bytes(self._hash.digest())
        return self._crc

    def wire(self) -> str:
        """The S3 wire form (base64 big-endian CRC, base64 sha256, hex md5)."""
        return to_wire(self.name, self.value())

    def hexdigest(self) -> str:
        if self._hash is not None:
            return str(self._hash.hexdigest())
        return f"{self._crc:0{2 * CRC_BYTES[self.name]}x}"

    def __repr__(self) -> str:
        return f"<Checksum {self.name} {self.hexdigest()} over {self.length} bytes>"


def _bytes_view(buf: Buffer) -> memoryview:
    view = memoryview(buf)
    return view.cast("B") if view.ndim != 1 or view.itemsize != 1 else view


class _Parted:
    """A checksum made of per-part checksums of ``part_size`` bytes (the last part may be short)."""

    name = ""

    def __init__(self, part_size: int) -> None:
        if part_size <= 0:
            raise UsageError(f"part size must be positive, got {part_size}")
        self.part_size = part_size
        self.length = 0
        self._fill = 0
        self._part = self._new_part()
        self._done: List[Any] = []

    def _new_part(self) -> Any:
        raise NotImplementedError

    def _finish(self, part: Any) -> Any:
        raise NotImplementedError

    def update(self, buf: Buffer) -> None:
        with _bytes_view(buf) as data:
            self._whole_update(data)
            pos, n = 0, data.nbytes
            while pos < n:
                take = min(n - pos, self.part_size - self._fill)
                self._part.update(data[pos:pos + take])
                self._fill += take
                pos += take
                if self._fill == self.part_size:
                    self._done.append(self._finish(self._part))
                    self._part = self._new_part()
                    self._fill = 0
            self.length += n

    def _whole_update(self, data: memoryview) -> None:
        pass

    def _copy_into(self, other: "_Parted") -> None:
        other.length = self.length
        other._fill = self._fill
        other._part = self._part.copy()
        other._done = list(self._done)

    def part_values(self) -> List[Any]:
        """The per-part values so far (the last one possibly short; one part for an empty object)."""
        if self._fill or not self._done:
            return self._done + [self._finish(self._part)]
        return list(self._done)


class ETag(_Parted):
    """The ETag S3 gives an object uploaded in parts of ``part_size`` bytes.

    An object shorter than ``multipart_threshold`` (default: ``part_size``) is
    taken as a single PUT whose ETag is its md5 hex; otherwise the ETag is the md5
    of the concatenated part md5s, then ``-N``.  (Objects encrypted with SSE-KMS
    or SSE-C have ETags that are not md5s at all.)
    """

    name = "etag"

    def __init__(self, part_size: int, multipart_threshold: Optional[int] = None) -> None:
        super().__init__(part_size)
        self.multipart_threshold = part_size if multipart_threshold is None else multipart_threshold
        self._whole = hashlib.md5()

    def _new_part(self) -> Any:
        return hashlib.md5()

    def _finish(self, part: Any) -> bytes:
        return bytes(part.digest())

    def _whole_update(self, data: memoryview) -> None:
        self._whole.update(data)

    def copy(self) -> "ETag":
        other = ETag(self.part_size, self.multipart_threshold)
        self._copy_into(other)
        other._whole = self._whole.copy()
        return other

    def part_md5s(self) -> List[bytes]:
        """md5 digests of the parts so far (the last one possibly short)."""
        return self.part_values()

    def multipart_value(self) -> str:
        return etag_of_parts(self.part_values())

    def single_value(self) -> str:
        return str(self._whole.hexdigest())

    def value(self) -> str:
        if self.length < self.multipart_threshold:
            return self.single_value()
        return self.multipart_value()

    def wire(self) -> str:
        return self.value()

    def hexdigest(self) -> str:
        return self.value()

    def matches(self, etag: str) -> bool:
        """True if ``etag`` (quotes allowed) is either form of this object's ETag."""
        etag = etag.strip('"').lower()
        return etag == (self.multipart_value() if "-" in etag else self.single_value())


class Composite(_Parted):
    """The S3 COMPOSITE checksum (``BASE64-N``) of an object uploaded in parts of ``part_size``."""

    def __init__(self, algorithm: str, part_size: int) -> None:
        self.algorithm = _check_name(algorithm)
        self.name = f"composite:{algorithm}"
        super().__init__(part_size)

    def _new_part(self) -> "Checksum":
        return Checksum(self.algorithm)

    def _finish(self, part: "Checksum") -> Union[int, bytes]:
        return part.value()

    def copy(self) -> "Composite":
        other = Composite(self.algorithm, self.part_size)
        self._copy_into(other)
        return other

    def value(self) -> str:
        return composite_wire(self.algorithm, self.part_values())

    def wire(self) -> str:
        return self.value()

    def hexdigest(self) -> str:
        return self.value()

    def matches(self, text: str) -> bool:
        """Compare with a reported value; some servers leave out the ``-N``."""
        mine = self.value()
        return text == mine or ("-" not in text and text == mine.rsplit("-", 1)[0])


AnyChecksum = Union[Checksum, ETag, Composite]


def new(name: str, part_size: Optional[int] = None) -> AnyChecksum:
    """A running checksum by name.

    One of :data:`ALGORITHMS`; ``etag`` (needs ``part_size``) or ``etag:SIZE``; or
    ``composite:ALGO:SIZE`` for an S3 COMPOSITE checksum with parts of SIZE bytes.
    """
    if name == "etag":
        if part_size is None:
            raise UsageError("the etag checksum needs a part size (--part-size)")
        return ETag(part_size)
    kind, _, rest = name.partition(":")
    if kind == "etag" and rest.isdigit():
        return ETag(int(rest))
    if kind == "composite":
        algorithm, _, size = rest.partition(":")
        if size.isdigit():
            return Composite(algorithm, int(size))
    return Checksum(name)


def crc(name: str, buf: Buffer, value: int = 0) -> int:
    """The CRC ``name`` of ``buf``, continuing from ``value`` (the CRC of what came before)."""
    return int(_k.crc(_check_name(name, CRCS), buf, value))


def combine(name: str, crc_a: int, crc_b: int, len_b: int) -> int:
    """CRC of A + B from the CRCs of A and B and the length of B (O(log len_b))."""
    if len_b < 0:
        raise ValueError("len_b must not be negative")
    return int(_k.combine(_check_name(name, CRCS), crc_a, crc_b, len_b))


def to_wire(name: str, value: Union[int, bytes]) -> str:
    """The S3 wire form of a CRC (int) or digest (bytes)."""
    _check_name(name)
    if name in CRCS:
        if isinstance(value, (bytes, bytearray)):
            raw = bytes(value)
        else:
            raw = int(value).to_bytes(CRC_BYTES[name], "big")
        return base64.b64encode(raw).decode("ascii")
    raw = bytes(value) if isinstance(value, (bytes, bytearray)) else int(value).to_bytes(DIGEST_BYTES[name], "big")
    if name == "md5":
        return raw.hex()
    return base64.b64encode(raw).decode("ascii")


def wire_to_bytes(name: str, text: str) -> bytes:
    """The raw digest behind a wire value (base64, or hex for md5; hex also accepted for all)."""
    _check_name(name)
    text = text.strip().strip('"')
    size = DIGEST_BYTES[name]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size and len(text) == 2 * size and re.fullmatch(r"[0-9A-Fa-f]+", text):
        raw = bytes.fromhex(text)  # base64 of these sizes always ends in '=' or differs in length
    if len(raw) != size:
        raise FormatError(f"not a {name} value: {text!r} (expected base64 or hex of {size} bytes)")
    return raw


def from_wire(name: str, text: str) -> int:
    """The integer behind a wire value (the CRC; the digest as a big-endian int for md5/sha256)."""
    return int.from_bytes(wire_to_bytes(name, text), "big")


def composite_wire(name: str, part_values: Sequence[Union[int, bytes]]) -> str:
    """S3 COMPOSITE checksum: checksum of the concatenated big-endian part values, then ``-N``."""
    _check_name(name)
    joined = b"".join(
        bytes(v) if isinstance(v, (bytes, bytearray)) else int(v).to_bytes(DIGEST_BYTES[name], "big")
        for v in part_values
    )
    total = Checksum(name)
    total.update(joined)
    return f"{total.wire()}-{len(part_values)}"


# Whether md5_many hashes in the AVX2 lanes: the setting lives here, because asking the kernel
# (``_checksum.md5_lanes()`` with no argument) turns the lanes back on where the CPU has them.
_LANES = [bool(_k.md5_lanes(True))]


def md5_lanes(on: Optional[bool] = None) -> bool:
    """Whether :func:`md5_many` hashes eight buffers at once in AVX2 lanes; ``on`` turns that off
    (hashlib, one at a time) or back on (where the CPU has AVX2). Returns the setting in force."""
    if on is not None:
        _LANES[0] = bool(_k.md5_lanes(bool(on)))
    return _LANES[0]


def md5_many(bufs: Sequence[Buffer]) -> List[bytes]:
    """MD5 digests of several buffers, eight at a time on AVX2 (~4.5x one stream's speed:
    an MD5 is one chain of dependent steps, so only independent streams go faster)."""
    if len(bufs) == 1 or not _LANES[0]:
        return [hashlib.md5(b).digest() for b in bufs]
    return _k.md5_many(bufs)


class MD5Batcher:
    """MD5s asked for by several threads at once, hashed together (:func:`md5_many`).

    A thread calling :meth:`digest` while another is hashing queues its buffer and
    waits; the hashing thread takes up to eight queued buffers per round. Used for
    the parts of uploads in flight (their Content-MD5)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: List[Tuple[Buffer, List[Any], threading.Event]] = []
        self._busy = False

    def digest(self, buf: Buffer) -> bytes:
        box: List[Any] = []
        done = threading.Event()
        with self._lock:
            self._queue.append((buf, box, done))
            if self._busy:
                lead = False
            else:
                self._busy = lead = True
        if not lead:
            done.wait()
        else:
            self._drain()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._queue = self._queue[:8], self._queue[8:]
                if not batch:
                    self._busy = False
                    return
            try:
                digests: List[Any] = list(md5_many([b for b, _, _ in batch]))
            except BaseException as exc:  # handed to every waiter
                digests = [exc] * len(batch)
            for (_, box, done), d in zip(batch, digests):
                box.append(d)
                done.set()


def etag_of_parts(part_md5s: Sequence[bytes]) -> str:
    """The multipart ETag from the md5 digests of the parts."""
    return hashlib.md5(b"".join(part_md5s)).hexdigest() + f"-{len(part_md5s)}"


def is_md5_etag(etag: Optional[str]) -> bool:
    return bool(etag) and re.fullmatch(r"[0-9a-f]{32}", etag.strip('"').lower()) is not None  # type: ignore[union-attr]


def full_object_value(info: Any, name: str) -> Optional[str]:
    """The full-object value ``info`` reports for a CRC or sha256 (None if absent or COMPOSITE)."""
    value = (getattr(info, "checksums", None) or {}).get(name)
    ctype = (getattr(info, "checksum_type", None) or "").upper()
    if not value or ctype == "COMPOSITE" or "-" in value:
        return None
    if not ctype and name != "crc64nvme" and parts_in_etag(getattr(info, "etag", None) or ""):
        # A multipart object whose store does not say FULL_OBJECT: its CRC32/CRC32C may be the
        # composite value without the "-N" (moto does this); CRC64NVME is always full-object.
        return None
    return str(value)


def expected_for(info: Any) -> Optional[Tuple[str, str]]:
    """What a download of ``info`` (an ObjectInfo) can be verified against.

    A full-object CRC first (crc64nvme, crc32c, crc32), then a single-part sha256,
    then an md5 ETag; ``("etag", "hex-N")`` for a multipart ETag (find the part size
    with :func:`guess_etag_part_size`); None when there is nothing to check.
    """
    for name in CRCS:
        value = full_object_value(info, name)
        if value:
            return name, value
    etag = (getattr(info, "etag", None) or "").strip('"')
    if is_md5_etag(etag):
        return "md5", etag.lower()
    value = full_object_value(info, "sha256")
    if value:
        return "sha256", value
    if re.fullmatch(r"[0-9a-fA-F]{32}-[0-9]+", etag):
        return "etag", etag.lower()
    return None


def etag_part_sizes(size: int, n_parts: int) -> List[int]:
    """Part sizes that split ``size`` bytes into exactly ``n_parts`` parts, common ones first."""
    if n_parts < 1:
        return []
    candidates = list(COMMON_PART_SIZES)
    even = -(-size // n_parts)
    candidates.append(-(-even // MiB) * MiB)
    candidates.append(even)
    out: List[int] = []
    for ps in candidates:
        if ps > 0 and ps not in out and max(1, -(-size // ps)) == n_parts:
            out.append(ps)
    return out


def guess_etag_part_size(size: int, n_parts: int) -> Optional[int]:
    """The most likely part size of an ``n_parts`` multipart ETag for ``size`` bytes."""
    sizes = etag_part_sizes(size, n_parts)
    return sizes[0] if sizes else None


def parts_in_etag(etag: str) -> Optional[int]:
    m = re.fullmatch(r'"?[0-9a-fA-F]{32}-([0-9]+)"?', etag or "")
    return int(m.group(1)) if m else None


class MultiChecksum:
    """Several checksums fed from one stream (CRCs, md5, sha256, ETags)."""

    def __init__(self, algorithms: Iterable[str], part_size: Optional[int] = None) -> None:
        self.sums: Dict[str, AnyChecksum] = {}
        for name in dict.fromkeys(algorithms):
            self.sums[name] = new(name, part_size)
        self.length = 0

    def update(self, buf: Buffer) -> None:
        for s in self.sums.values():
            s.update(buf)
        self.length += _nbytes(buf)

    def wire(self) -> Dict[str, str]:
        return {name: s.wire() for name, s in self.sums.items()}


class _Fanout:
    """Feeds each slow checksum (md5, sha256, ETags) from its own thread, in order.

    CRCs are fast enough to run in the caller's thread.  ``feed`` returns the
    futures that still read the buffer; the caller must not reuse it before they finish.
    """

    def __init__(self, multi: MultiChecksum, threads: Optional[int]) -> None:
        sums = list(multi.sums.values())
        self.multi = multi
        self.slow = [s for s in sums if not (isinstance(s, Checksum) and s.name in CRCS)]
        self.fast = [s for s in sums if isinstance(s, Checksum) and s.name in CRCS]
        cpus = cpu.available()
        lanes = cpus if threads is None else threads
        self.parallel = lanes > 1 and len(self.slow) + (1 if self.fast else 0) >= 2
        self.pools: List[Any] = []
        if self.parallel:
            from concurrent.futures import ThreadPoolExecutor

            self.pools = [ThreadPoolExecutor(1, thread_name_prefix="genostage-hash") for _ in self.slow]

    def feed(self, view: memoryview) -> List[Any]:
        if not self.parallel:
            self.multi.update(view)
            return []
        futures = [pool.submit(s.update, view) for pool, s in zip(self.pools, self.slow)]
        for s in self.fast:
            s.update(view)
        self.multi.length += view.nbytes
        return futures

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(wait=True)

    def __enter__(self) -> "_Fanout":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait(futures: List[Any]) -> None:
    for fut in futures:
        fut.result()


def _read_into(fd: int, view: memoryview, offset: int, path: str) -> int:
    """Fill ``view`` from ``offset``; a short read means the file shrank."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            raise ObjectChanged(f"{path} shrank while it was being checksummed")
        got += n
    return got


def _crc_segment(fd: int, path: str, start: int, length: int, names: Sequence[str],
                 chunk: int) -> List[int]:
    values = [0] * len(names)
    buf = bytearray(min(chunk, max(length, 1)))
    view = memoryview(buf)
    pos = 0
    while pos < length:
        n = min(len(buf), length - pos)
        _read_into(fd, view[:n], start + pos, path)
        part = view[:n]
        for i, name in enumerate(names):
            values[i] = _k.crc(name, part, values[i])
        pos += n
    return values


def _crc_segment_mmap(fd: int, start: int, length: int, names: Sequence[str]) -> List[int]:
    """CRCs of a file segment read through a read-only mapping (no copy out of the page cache).

    ``start`` must be a multiple of mmap.ALLOCATIONGRANULARITY.  A file truncated while it is
    mapped raises SIGBUS, as with any memory-mapped reader (b3sum, xxhsum); pass
    ``use_mmap=False`` to file_checksums for files that may shrink under it.
    """
    values = [0] * len(names)
    with mmap.mmap(fd, length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, offset=start) as m:
        if hasattr(m, "madvise"):
            m.madvise(mmap.MADV_SEQUENTIAL)
        with memoryview(m) as view:
            for pos in range(0, length, MMAP_SLICE):
                piece = view[pos:pos + MMAP_SLICE]
                for i, name in enumerate(names):
                    values[i] = _k.crc(name, piece, values[i])
                piece.release()
    return values


def default_threads(size: int) -> int:
    """Threads worth using for ``size`` bytes: one per 64 MiB, at most the CPU count."""
    cpus = cpu.available()
    return max(1, min(cpus, size // (64 * MiB) or 1))


def file_crcs(path: "str | os.PathLike[str]", names: Sequence[str], threads: Optional[int] = None,
              chunk: int = READ_CHUNK, use_mmap: bool = True) -> Dict[str, int]:
    """CRCs of a whole file, its byte range split over ``threads`` threads and combined.

    Segments of at least :data:`MMAP_MIN` bytes are mapped rather than read when
    ``use_mmap`` (see :func:`_crc_segment_mmap` about files truncated meanwhile).
    """
    for name in names:
        _check_name(name, CRCS)
    path = os.fspath(path)
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        nthreads = max(1, min(threads or default_threads(size), max(1, size // chunk)))
        step = -(-size // nthreads) if size else 0
        step = -(-step // chunk) * chunk if step else 0
        bounds = [(s, min(step, size - s)) for s in range(0, size, step)] if size else []
        results: List[Optional[List[int]]] = [None] * len(bounds)
        errors: List[BaseException] = []

        def work(i: int) -> None:
            try:
                start, length = bounds[i]
                if use_mmap and length >= MMAP_MIN and start % mmap.ALLOCATIONGRANULARITY == 0:
                    results[i] = _crc_segment_mmap(fd, start, length, names)
                else:
                    results[i] = _crc_segment(fd, path, start, length, names, chunk)
            except BaseException as exc:  # re-raised in the calling thread
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(1, len(bounds))]
        for w in workers:
            w.start()
        if bounds:
            work(0)
        for w in workers:
            w.join()
        if errors:
            raise errors[0]
        if os.fstat(fd).st_size != size:
            raise ObjectChanged(f"{path} changed size while it was being checksummed")
    out = {name: 0 for name in names}
    for (start, length), vals in zip(bounds, results):
        assert vals is not None
        for name, v in zip(names, vals):
            out[name] = combine(name, out[name], v, length) if start else v
    return out


def _check_names(algorithms: Iterable[str], part_size: Optional[int]) -> List[str]:
    names = list(dict.fromkeys(algorithms))
    for name in names:
        new(name, part_size)  # raises for what is unknown or incomplete
    return names


def object_checksums(store: Any, info: Any, algorithms: Iterable[str] = ("crc64nvme",),
                     part_size: Optional[int] = None, threads: Optional[int] = None,
                     chunk: int = READ_CHUNK) -> Dict[str, str]:
    """Checksums of a stored object recomputed from its bytes, streamed with ranged reads.

    ``store`` is a :class:`genostage.store.Store` and ``info`` the object's ObjectInfo
    (its ETag pins the version being read).  CRCs alone: ``threads`` ranges read in
    parallel and combined; otherwise one sequential stream feeds every algorithm.
    """
    names = _check_names(algorithms, part_size)
    loc, size, etag = info.location, int(info.size), info.etag
    if names and all(name in CRCS for name in names):
        nthreads = max(1, min(threads or 4, max(1, size // chunk)))
        step = -(-size // nthreads) if size else 0
        bounds = [(s, min(step, size - s)) for s in range(0, size, step)] if size else []

        def work(bound: Tuple[int, int]) -> List[int]:
            start, length = bound
            values = [0] * len(names)
            seen = 0
            for data in store.iter_range(loc, start, length, etag=etag, chunk=chunk):
                for i, name in enumerate(names):
                    values[i] = _k.crc(name, data, values[i])
                seen += len(data)
            if seen != length:
                raise ObjectChanged(f"{loc}: got {seen} bytes of {length} from offset {start}")
            return values

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, len(bounds))) as pool:
            results = list(pool.map(work, bounds))
        out = {name: 0 for name in names}
        for (start, length), vals in zip(bounds, results):
            for name, v in zip(names, vals):
                out[name] = combine(name, out[name], v, length) if start else v
        return {name: to_wire(name, out[name]) for name in names}
    multi = MultiChecksum(names, part_size)
    pending: List[List[Any]] = []
    with _Fanout(multi, threads) as fan:
        for data in store.iter_range(loc, 0, size, etag=etag, chunk=chunk):
            pending.append(fan.feed(memoryview(data)))
            if len(pending) > 4:  # bound the bytes held by slow hashers
                _wait(pending.pop(0))
        for futures in pending:
            _wait(futures)
    if multi.length != size:
        raise ObjectChanged(f"{loc}: got {multi.length} bytes of {size}")
    return multi.wire()


# -- what a store reports, and checking it against the bytes ---------------------------------
def reported_value(info: Any, algo: str) -> Optional[str]:
    """The value a store reports for ``algo`` (``md5`` from a single-part ETag, ``etag`` the ETag)."""
    etag = getattr(info, "etag", None)
    if algo == "md5":
        return str(etag).strip('"').lower() if is_md5_etag(etag) else None
    if algo == "etag":
        return str(etag).strip('"').lower() if etag else None
    value = (getattr(info, "checksums", None) or {}).get(algo)
    return str(value) if value else None


def same_value(algo: str, expected: str, actual_wire: str) -> bool:
    """Compare an expected value (hex or base64, as listed or reported) with a computed wire value."""
    expected = expected.strip().strip('"')
    if algo in ("etag", "md5") and "-" in expected + actual_wire:
        return expected.lower() == actual_wire.lower()
    if "-" in actual_wire:  # COMPOSITE: some servers leave out the -N
        return expected == actual_wire or ("-" not in expected and expected == actual_wire.rsplit("-", 1)[0])
    try:
        return wire_to_bytes(algo, expected) == wire_to_bytes(algo, actual_wire)
    except FormatError:
        return False


def parts_of(value: str) -> Optional[int]:
    """The ``N`` of a ``VALUE-N`` multipart ETag or COMPOSITE checksum."""
    m = re.search(r"-([0-9]+)$", value.strip('"'))
    return int(m.group(1)) if m else None


def reported_checksums(store: Any, info: Any, algorithms: Sequence[str], part_size: Optional[int] = None,
                       threads: Optional[int] = None) -> Dict[str, str]:
    """What the store reports for each of ``algorithms``; those it reports nothing for are
    computed from the object's bytes (:func:`object_checksums`)."""
    reported = {a: v for a in algorithms if (v := reported_value(info, a)) is not None}
    missing = [a for a in algorithms if a not in reported]
    if missing:
        log.info("%s: the store reports no %s; computing from the bytes", info.location, ", ".join(missing))
        reported.update(object_checksums(store, info, missing, part_size, threads))
    return reported


def _parted_check(info: Any, algo: str, value: str, part_size: Optional[int]) -> Tuple[str, str, List[str]]:
    """A multipart ETag or COMPOSITE value: the checksum names to compute, one per plausible part size."""
    n = parts_of(value) or parts_in_etag(info.etag or "") or info.parts_count or 1
    sizes = [part_size] if part_size else etag_part_sizes(info.size, n)
    if algo in ("etag", "md5"):
        if algo == "md5" or "-" not in value:
            return ("md5", value, ["md5"])
        return ("etag", value, [f"etag:{ps}" for ps in sizes])
    return (algo, value, [f"composite:{algo}:{ps}" for ps in sizes])


def verify_object(store: Any, info: Any, algorithms: Sequence[str], part_size: Optional[int] = None,
                  threads: Optional[int] = None) -> Dict[str, str]:
    """Recompute a stored object's checksums from its bytes (ranged reads) and compare them with
    every value the store reports that can be compared: full-object CRCs and sha256 directly,
    multipart ETags and COMPOSITE values for each plausible part size, else the best value
    :func:`expected_for` finds. Raises :class:`~genostage.errors.ChecksumMismatch`; returns the
    wire values of ``algorithms`` (``etag`` needs ``part_size`` unless the store reports it)."""
    reported = {a: v for a in algorithms if (v := reported_value(info, a)) is not None}
    checks: List[Tuple[str, str, List[str]]] = []  # (algorithm, expected, names computed for it)
    for algo in algorithms:
        full = full_object_value(info, algo) if algo in CRCS or algo == "sha256" else None
        if full:
            checks.append((algo, full, [algo]))
        elif algo in reported:
            checks.append(_parted_check(info, algo, reported[algo], part_size))
    if not checks:
        best = expected_for(info)
        if best is not None:
            checks.append((best[0], best[1], [best[0]]) if best[0] != "etag"
                          else _parted_check(info, "etag", best[1], part_size))
    names = [a for a in algorithms if a != "etag"]
    if "etag" in algorithms and part_size:
        names.append(f"etag:{part_size}")
    for _, _, candidates in checks:
        names.extend(candidates)
    computed = object_checksums(store, info, list(dict.fromkeys(names)), None, threads)
    if not checks:
        log.warning("%s: the store reports no checksum or md5 ETag; nothing to verify against", info.location)
    for algo, expected, candidates in checks:
        got = [computed[n] for n in candidates]
        if not any(same_value(algo, expected, g) for g in got):
            raise ChecksumMismatch(str(info.location), algo, expected,
                                   got[0] if got else "(no common part size gives that many parts)")
        log.info("%s: %s verified", info.location, algo)
        if algo == "etag":
            computed["etag"] = expected.strip('"').lower()
    if "etag" in algorithms and "etag" not in computed:
        computed["etag"] = computed[f"etag:{part_size}"]
    return {a: computed[a] for a in algorithms}


def file_checksums(path: "str | os.PathLike[str]", algorithms: Iterable[str] = ("crc64nvme",),
                   part_size: Optional[int] = None, threads: Optional[int] = None,
                   use_mmap: bool = True) -> Dict[str, str]:
    """Several checksums of one file in one pass, as wire values (``etag`` needs ``part_size``).

    CRCs alone: the file is split over ``threads`` threads and the parts combined.
    With md5, sha256 or etag: one sequential pass, each of these hashed in its own
    thread (unless ``threads=1``) while the CRCs run in the reading thread.
    """
    names = _check_names(algorithms, part_size)
    path = os.fspath(path)
    regular = stat.S_ISREG(os.stat(path).st_mode)  # a pipe or device is read once, front to back
    if regular and all(name in CRCS for name in names):
        values = file_crcs(path, names, threads, use_mmap=use_mmap)
        return {name: to_wire(name, values[name]) for name in names}
    multi = MultiChecksum(names, part_size)
    ring = [bytearray(4 * MiB) for _ in range(3)]
    pending: List[List[Any]] = [[] for _ in ring]
    with open(path, "rb", buffering=0) as f, _Fanout(multi, threads) as fan:
        for i in itertools.count():
            slot = i % len(ring)
            _wait(pending[slot])  # the slow hashers are done with this buffer
            n = f.readinto(ring[slot])
            if not n:
                break
            pending[slot] = fan.feed(memoryview(ring[slot])[:n])
        for futures in pending:
            _wait(futures)
    return multi.wire()


__all__ = [
    "ALGORITHMS", "CRCS", "Checksum", "ETag", "Composite", "MultiChecksum", "new", "crc", "combine", "to_wire",
    "from_wire", "wire_to_bytes", "composite_wire", "etag_of_parts", "expected_for",
    "guess_etag_part_size", "etag_part_sizes", "parts_in_etag", "file_checksums", "file_crcs",
    "is_md5_etag", "md5_lanes", "md5_many", "MD5Batcher", "default_threads", "object_checksums",
    "full_object_value", "reported_value", "reported_checksums", "same_value", "parts_of", "verify_object",
]
