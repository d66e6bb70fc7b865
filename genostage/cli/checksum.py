"""``genostage checksum``: checksums of files and objects, sha256sum style, and ``--check``.

Values print as ``VALUE  NAME`` (one algorithm) or ``ALGO (NAME) = VALUE`` (several,
or ``--tag``).  CRCs print in the S3 wire form (base64 of the big-endian value);
md5 and sha256 print as hex, so ``--algorithm md5`` prints what ``md5sum`` does.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..codec import checksum as C
from ..config import TransferConfig
from ..errors import AccessDenied, ChecksumMismatch, FormatError, NotFound, UsageError
from ..location import Location, parse
from ..fsutil import os_error
from ..units import parse_size
from .common import one_line_errors

log = logging.getLogger("genostage.checksum")

CHOICES = C.ALGORITHMS + ("etag",)
_TAGGED = re.compile(r"^([A-Za-z0-9]+) \((.*)\) = (\S+)$")
_PLAIN = re.compile(r"^(\S+) [ *]?(.*)$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_EXTENSIONS = {".md5": "md5", ".sha256": "sha256", ".crc64nvme": "crc64nvme", ".crc32c": "crc32c",
               ".crc32": "crc32", ".etag": "etag"}


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = subparsers.add_parser(
        "checksum",
        help="checksum files or S3 objects, or verify a checksum list",
        description="Print checksums (default crc64nvme) of local files and s3:// objects, or "
        "verify them against a list (--check) like sha256sum -c.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH_OR_URI",
                   help="local files, s3:// objects or prefixes, or - for standard input")
    p.add_argument("-a", "--algorithm", action="append", choices=CHOICES,
                   help="checksum algorithm (repeat for several; default crc64nvme)")
    p.add_argument("--part-size", metavar="SIZE", help="part size for the multipart ETag (e.g. 8MiB)")
    p.add_argument("--threads", type=int, metavar="N", help="threads per file: CRCs split the file into N ranges; md5/sha256/etag each "
                   "hash in their own thread unless N is 1 (default: the CPUs available)")
    p.add_argument("-c", "--check", action="append", metavar="FILE",
                   help="verify the checksums listed in FILE (sha256sum/md5sum output, tagged lines, "
                   "or a sidecar such as reads.fq.gz.md5 holding just the hash)")
    p.add_argument("--verify", action="store_true",
                   help="for s3:// objects, recompute from the bytes and compare with what the store reports")
    p.add_argument("--tag", action="store_true", help="print 'ALGO (NAME) = VALUE' lines")
    p.add_argument("--no-mmap", dest="use_mmap", action="store_false",
                   help="read files with pread instead of mapping them (for files that may shrink meanwhile)")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL)")
    p.set_defaults(func=run)
    one_line_errors(p)


@dataclass
class Options:
    algorithms: List[str]
    part_size: Optional[int]
    threads: Optional[int]
    verify: bool
    endpoint_url: Optional[str]
    explicit: bool = False  # --algorithm given
    use_mmap: bool = True


def run(args: argparse.Namespace) -> int:
    opts = Options(
        algorithms=list(dict.fromkeys(args.algorithm or ["crc64nvme"])),
        part_size=parse_size(args.part_size) if args.part_size else None,
        threads=args.threads,
        verify=args.verify,
        endpoint_url=args.endpoint_url,
        explicit=bool(args.algorithm),
        use_mmap=args.use_mmap,
    )
    if opts.threads is not None and opts.threads < 1:
        raise UsageError("--threads must be at least 1")
    if "etag" in opts.algorithms and opts.part_size is None:
        raise UsageError("--algorithm etag needs --part-size")
    ctx = Context(opts)
    if args.check:
        if args.paths:
            raise UsageError("--check takes the files to verify from the list; give no other paths")
        for check_file in args.check:
            check(ctx, check_file)
        return 0
    if not args.paths:
        raise UsageError("give at least one PATH_OR_URI (or --check FILE)")
    tagged = args.tag or len(opts.algorithms) > 1
    for text in args.paths:
        for name, values in ctx.checksums(text):
            for algo in opts.algorithms:
                emit(format_line(algo, display(algo, values[algo]), name, tagged))
    return 0


# -- formatting ---------------------------------------------------------------

def emit(line: str) -> None:
    """One line on standard output, flushed; a full disk under it is InsufficientSpace (exit 7)."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise os_error(exc, "standard output") from None


def display(algo: str, wire: str) -> str:
    """What is printed: hex for md5/sha256 (as md5sum/sha256sum), the wire form otherwise."""
    if algo == "sha256" and "-" not in wire:
        return C.wire_to_bytes("sha256", wire).hex()
    return wire


def _escape(name: str) -> Tuple[str, str]:
    if "\\" in name or "\n" in name or "\r" in name:
        return "\\", name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return "", name


def format_line(algo: str, value: str, name: str, tagged: bool) -> str:
    prefix, name = _escape(name)
    if tagged:
        return f"{prefix}{algo.upper()} ({name}) = {value}"
    return f"{prefix}{value}  {name}"


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "\\": "\\"}.get(m.group(1), m.group(0)), text)


# -- computing ----------------------------------------------------------------

class Context:
    """Stores (created on the first s3:// URI) and the options."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self._stores = None

    @property
    def stores(self):  # type: ignore[no-untyped-def]
        if self._stores is None:
            from ..store import Stores

            self._stores = Stores(TransferConfig(endpoint_url=self.opts.endpoint_url))  # type: ignore[assignment]
        return self._stores

    def checksums(self, text: str, algorithms: Optional[Sequence[str]] = None) -> List[Tuple[str, Dict[str, str]]]:
        """(display name, {algorithm: wire}) for a local file, an object or every object under a prefix."""
        algos = list(algorithms or self.opts.algorithms)
        if text == "-":
            return [("-", stdin_checksums(algos, self.opts.part_size))]
        loc = parse(text)
        if not loc.is_s3:
            if os.path.isdir(loc.path):
                raise UsageError(f"{text}: is a directory")
            if not os.path.exists(loc.path):
                raise NotFound(f"{text}: no such file")
            return [(text, self.local(loc.path, algos))]
        store = self.stores.for_location(loc)
        infos = list(store.list(loc)) if loc.is_prefix else [store.stat(loc)]
        return [(str(info.location), self.remote(store, info, algos)) for info in infos]

    def local(self, path: str, algos: Sequence[str]) -> Dict[str, str]:
        try:
            return C.file_checksums(path, self._computable(algos), self.opts.part_size, self.opts.threads,
                                    use_mmap=self.opts.use_mmap)
        except FileNotFoundError:
            raise NotFound(f"{path}: no such file") from None
        except IsADirectoryError:
            raise UsageError(f"{path}: is a directory") from None
        except PermissionError as exc:
            raise AccessDenied(f"{path}: {exc.strerror}") from None

    def _computable(self, algos: Sequence[str]) -> List[str]:
        return [a for a in algos if a != "etag"] + (["etag"] if "etag" in algos else [])

    def remote(self, store, info, algos: Sequence[str]) -> Dict[str, str]:  # type: ignore[no-untyped-def]
        """What the store reports, or (``--verify``) what the bytes give, checked against it."""
        if self.opts.verify:
            return C.verify_object(store, info, algos, self.opts.part_size, self.opts.threads)
        return C.reported_checksums(store, info, algos, self.opts.part_size, self.opts.threads)


def stdin_checksums(algos: Sequence[str], part_size: Optional[int]) -> Dict[str, str]:
    """Checksums of standard input, read to its end."""
    multi = C.MultiChecksum(algos, part_size)
    buf = bytearray(4 * 1024 * 1024)
    view = memoryview(buf)
    stream = sys.stdin.buffer
    while True:
        n = stream.readinto(buf)  # type: ignore[union-attr]
        if not n:
            break
        multi.update(view[:n])
    return multi.wire()


# -- --check ------------------------------------------------------------------

@dataclass
class Entry:
    algo: str
    value: str
    name: str
    line: int  # 0-based


def guess_algorithm(value: str, check_file: str, line: int) -> str:
    if re.fullmatch(r"[0-9a-fA-F]{32}-[0-9]+", value):
        return "etag"
    if re.fullmatch(r"[0-9a-fA-F]{32}", value):
        return "md5"
    if re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return "sha256"
    if _BASE64.match(value):
        if len(value) == 12:
            return "crc64nvme"
        if len(value) == 44:
            return "sha256"
        if len(value) == 8:
            raise FormatError(f"{value!r} is a 4-byte CRC: pass --algorithm crc32c or crc32",
                              path=check_file, fmt="checksum list", line=line)
    raise FormatError(f"cannot tell the algorithm of {value!r}: pass --algorithm",
                      path=check_file, fmt="checksum list", line=line)


def parse_check_file(check_file: str, default_algo: Optional[str]) -> List[Entry]:
    """The entries of a checksum list; a bare hash names the file beside it (``x.fq.gz.md5``)."""
    try:
        with open(check_file, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise NotFound(f"{check_file}: no such file") from None
    ext = os.path.splitext(check_file)[1].lower()
    default_algo = default_algo or _EXTENSIONS.get(ext)
    entries: List[Entry] = []
    lines = raw.split(b"\n")
    for i, bline in enumerate(lines):
        try:
            text = bline.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            raise FormatError("line is not UTF-8 text", path=check_file, fmt="checksum list", line=i) from None
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        escaped = text.startswith("\\")
        body = text[1:] if escaped else text
        m = _TAGGED.match(body)
        if m:
            algo = m.group(1).lower()
            if algo not in CHOICES:
                raise FormatError(f"unknown algorithm {m.group(1)!r}", path=check_file, fmt="checksum list", line=i)
            value, name = m.group(3), m.group(2)
        else:
            bare = body.strip()
            if bare and not re.search(r"\s", bare):
                value, name = bare, _sidecar_target(check_file, i)
            else:
                m = _PLAIN.match(body)
                if not m or not m.group(2):
                    raise FormatError("expected 'CHECKSUM  NAME', 'ALGO (NAME) = CHECKSUM' or a bare checksum",
                                      path=check_file, fmt="checksum list", line=i)
                value, name = m.group(1), m.group(2)
            algo = default_algo or guess_algorithm(value, check_file, i)
        if escaped:
            name = _unescape(name)
        if algo != "etag":
            try:
                C.wire_to_bytes(algo, value)
            except FormatError as exc:
                raise FormatError(exc.message, path=check_file, fmt="checksum list", line=i) from None
        entries.append(Entry(algo, value, name, i))
    if not entries:
        raise FormatError("no checksum lines found", path=check_file, fmt="checksum list", line=0)
    return entries


def _sidecar_target(check_file: str, line: int) -> str:
    stem, ext = os.path.splitext(check_file)
    if ext.lower() not in _EXTENSIONS or not stem:
        raise FormatError(
            "a bare checksum without a file name needs a sidecar list named after its file (e.g. reads.fq.gz.md5)",
            path=check_file, fmt="checksum list", line=line)
    return os.path.basename(stem)


def _resolve(name: str, check_file: str) -> str:
    if name.lower().startswith("s3://") or os.path.isabs(name) or os.path.exists(name):
        return name
    beside = os.path.join(os.path.dirname(os.path.abspath(check_file)), name)
    return beside if os.path.exists(beside) else name


def check(ctx: Context, check_file: str) -> None:
    """Verify every entry of ``check_file``; print ``NAME: OK``/``FAILED``; raise on failure."""
    algo_opt = ctx.opts.algorithms[0] if ctx.opts.explicit and len(ctx.opts.algorithms) == 1 else None
    entries = parse_check_file(check_file, algo_opt)
    # group the algorithms wanted per file so each file is read once
    wanted: Dict[str, List[str]] = {}
    for e in entries:
        algos = wanted.setdefault(e.name, [])
        if e.algo not in algos:
            algos.append(e.algo)
    failures: List[Tuple[Entry, str]] = []
    missing: List[str] = []
    results: Dict[str, Dict[str, str]] = {}
    for e in entries:
        if e.name not in results:
            try:
                results[e.name] = compute_for_check(ctx, _resolve(e.name, check_file), wanted[e.name], e)
            except NotFound as exc:
                emit(f"{e.name}: FAILED open or read")
                log.error("%s", exc)
                missing.append(e.name)
                results[e.name] = {}
                continue
        got = results[e.name]
        if not got:
            continue
        actual = _actual_for(e, got)
        ok = actual is not None and C.same_value(e.algo, e.value, actual)
        emit(f"{e.name}: {'OK' if ok else 'FAILED'}")
        if not ok:
            failures.append((e, actual or "(none)"))
    if failures:
        if len(failures) > 1:
            log.error("%s: %d of %d computed checksums did NOT match", check_file, len(failures), len(entries))
        e, actual = failures[0]
        raise ChecksumMismatch(e.name, e.algo, e.value, display(e.algo, actual) if "-" not in actual else actual)
    if missing:
        raise NotFound(f"{check_file}: {len(missing)} listed file(s) could not be read: {', '.join(missing)}")


def compute_for_check(ctx: Context, target: str, algos: List[str], entry: Entry) -> Dict[str, str]:
    loc = parse(target)
    if "etag" in algos:
        size = _size_of(ctx, loc)
        n = C.parts_in_etag(entry.value) or 1
        sizes = [ctx.opts.part_size] if ctx.opts.part_size else C.etag_part_sizes(size, n)
        algos = [a for a in algos if a != "etag" and not a.startswith("etag:")] + [f"etag:{ps}" for ps in sizes]
    if not loc.is_s3:
        if not os.path.isfile(loc.path):
            raise NotFound(f"{target}: no such file")
        return C.file_checksums(loc.path, algos, None, ctx.opts.threads, use_mmap=ctx.opts.use_mmap)
    store = ctx.stores.for_location(loc)
    info = store.stat(loc)
    return C.object_checksums(store, info, algos, None, ctx.opts.threads)


def _size_of(ctx: Context, loc: Location) -> int:
    if loc.is_s3:
        return int(ctx.stores.for_location(loc).stat(loc).size)
    try:
        return os.path.getsize(loc.path)
    except OSError:
        raise NotFound(f"{loc.path}: no such file") from None


def _actual_for(e: Entry, got: Dict[str, str]) -> Optional[str]:
    if e.algo != "etag":
        return got.get(e.algo)
    candidates = [v for k, v in got.items() if k.startswith("etag:")]
    for v in candidates:
        if v.lower() == e.value.lower():
            return v
    return candidates[0] if candidates else None


__all__ = ["register", "run", "parse_check_file", "format_line", "display"]
