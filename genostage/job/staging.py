"""Staging: what goes where between the stores and a job's scratch directory.

``stage_in`` and ``stage_out`` work without a Job; the Job uses the same
functions to stage all inputs (or all outputs) in one parallel batch.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from ..config import TransferConfig
from ..errors import NotFound, UnsafePath, UsageError
from ..fsutil import os_error
from ..location import Location, inside, parse, safe_relative
from ..store import ObjectInfo, Stores
from ..transfer import Transfer, TransferResult
from ..transfer.listing import safe_name


@dataclass
class Staged:
    """One named input or output: its URI, its local path, and what was moved."""

    name: str
    uri: str
    path: Path
    is_dir: bool
    items: List[Tuple[ObjectInfo, Location]] = field(default_factory=list)
    results: List[TransferResult] = field(default_factory=list)
    chunk: Optional[Tuple[object, int]] = None  # (Plan, index) for a PLAN#INDEX input
    chunk_size: int = 0  # its estimated size, for the free-space check
    chunk_stats: Dict[str, object] = field(default_factory=dict)
    chunk_files: List[str] = field(default_factory=list)
    published: bool = False  # an output: every object of it is published

    members: List[str] = field(default_factory=list)  # the files of a list input, in order

    def placeholders(self) -> Dict[str, Path]:
        """``{NAME}``, and for the files of a list input or a paired chunk ``{NAME.1}``, ``{NAME.2}``..."""
        out = {self.name: self.path}
        for i, f in enumerate(self.chunk_files or self.members, 1):
            out[f"{self.name}.{i}"] = Path(f)
        return out

    @property
    def size(self) -> int:
        return sum(info.size for info, _ in self.items) + self.chunk_size

    def to_json(self) -> Dict[str, object]:
        entry: Dict[str, object] = {"name": self.name, "uri": self.uri, "path": str(self.path),
                                    "kind": "directory" if self.is_dir else "file", "size": self.size}
        if self.chunk is not None:
            chunk_files = self.chunk_files or [str(self.path)]
            entry.update(kind="chunk", size=sum(os.path.getsize(f) for f in chunk_files if os.path.exists(f)),
                         chunk=self.chunk_stats)
            return entry
        files: List[Dict[str, Any]] = [r.to_json() for r in self.results]
        if self.published:
            entry["published"] = True
        if not self.is_dir and files:
            entry.update({k: files[0][k] for k in ("etag", "version_id", "checksums", "verified", "parts",
                                                   "resumed_parts", "repaired_parts", "destination_etag")})
        else:
            entry["files"] = files
        return entry


def _unique_path(base: Path, name: str, filename: str, taken: Set[str]) -> Path:
    """``base/filename``, or ``base/NAME/filename`` when another input already took that name."""
    path = base / filename
    if str(path) in taken or path.exists():
        path = base / name / filename
    taken.add(str(path))
    return path


_PLAN_REF = re.compile(r"^(.+\.json)#([0-9]*)$")


def plan_chunk_input(stores: Stores, name: str, uri: str, in_dir: Path, taken: Set[str],
                     index: Optional[int] = None) -> Staged:
    """``plan.json#3``: chunk 3 of a chunk plan, fetched with ranged reads as an ordinary file;
    ``plan.json#`` takes the job's array index (``index``)."""
    from ..split.plan import load, parse_plan_ref

    if uri.endswith("#"):
        if index is None:
            raise UsageError(f"input {name!r}: {uri} takes the chunk index from AWS_BATCH_JOB_ARRAY_INDEX, "
                             f"which is not set (write {uri}N for chunk N)")
        uri += str(index)
    plan_uri, index = parse_plan_ref(uri)
    try:
        plan = load(plan_uri, stores)
    except NotFound as exc:
        raise NotFound(f"input {name!r}: {exc}") from None
    chunk = plan.chunk(index)
    names = chunk_names(plan, index)
    if len(names) == 1:
        path = _unique_path(in_dir, name, names[0], taken)
        staged = Staged(name, uri, path, False, chunk=(plan, index))
    else:  # a paired FASTQ plan: a directory holding the R1 and R2 chunks
        path = _unique_path(in_dir, name, name, taken)
        staged = Staged(name, uri, path, True, chunk=(plan, index))
        staged.chunk_files = [str(path / n) for n in names]
    staged.chunk_size = _chunk_size(plan, chunk)
    return staged


def chunk_names(plan: Any, index: int) -> List[str]:
    """The file names chunk ``index`` of a plan is staged as (genostage.split.naming's scheme,
    as the splitters write them): ``sample.part-0003.bam``; ``S1.part-0003.R1.fastq.gz`` and
    ``.R2`` for a paired plan."""
    from ..split.fastq import default_prefix
    from ..split.naming import part_name

    n = len(plan.chunks)
    if len(plan.sources) == 2:
        prefix = default_prefix(plan.sources[0]["uri"], True)
        return [part_name(prefix, index, n, _suffix(src["uri"]), mate) for mate, src in enumerate(plan.sources, 1)]
    name = parse(plan.sources[0]["uri"]).name
    stem, dot, suffix = name.partition(".")
    return [part_name(stem, index, n, dot + suffix)]


def _suffix(uri: str) -> str:
    name = parse(uri).name
    for ext in (".fastq.gz", ".fq.gz", ".fastq.bgz", ".fastq", ".fq"):
        if name.endswith(ext):
            return ext
    return "." + name.partition(".")[2] if "." in name else ""


def _chunk_size(plan: Any, chunk: Dict[str, Any]) -> int:
    """What a chunk will take on disk, for the free-space check: a BAM chunk's compressed byte
    range plus its header; otherwise an even share of the sources (chunks are balanced)."""
    span = chunk.get("bytes")
    if isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span):
        header = (plan.header or {}).get("bytes") or [0, 0]
        return int(span[1] - span[0]) + int(header[1] - header[0])
    share = sum(int(src.get("size") or 0) for src in plan.sources) // max(1, len(plan.chunks))
    return share + share // 20


def fetch_chunks(stores: Stores, staged: Sequence[Staged]) -> None:
    """Fetch every ``PLAN#INDEX`` input (each writes its file atomically)."""
    from ..split.plan import fetch_chunk

    for s in staged:
        if s.chunk is not None:
            plan, index = s.chunk
            if s.chunk_files:
                s.chunk_stats = dict(fetch_chunk(plan, index, s.chunk_files[0], stores,  # type: ignore[arg-type]
                                                 dest2=s.chunk_files[1]))
            else:
                s.chunk_stats = dict(fetch_chunk(plan, index, str(s.path), stores))  # type: ignore[arg-type]


def split_list(text: str) -> "str | List[str]":
    """``a,b`` (a comma before ``s3://`` or ``/``) as a list of URIs; one URI as itself (a key
    may hold commas)."""
    pieces = re.split(r",(?=s3://|/)", text)
    return pieces if len(pieces) > 1 else text


def plan_list_input(stores: Stores, name: str, uris: Sequence[str], in_dir: Path, taken: Set[str]) -> Staged:
    """Several objects as one input (a read pair): a directory ``in/NAME/`` holding them, with
    ``{NAME.1}``, ``{NAME.2}``... for each, in order."""
    what = f"input {name!r}"
    path = _unique_path(in_dir, name, name, taken)
    items, members = [], []
    for uri in uris:
        loc = parse(uri)
        if loc.is_prefix:
            raise UsageError(f"{what}: {uri} is a prefix; a list input holds objects")
        filename = safe_name(loc, what)
        if str(path / filename) in members:
            raise UsageError(f"{what}: two objects named {filename!r}")
        try:
            info = stores.for_location(loc).stat(loc)
        except NotFound as exc:
            raise NotFound(f"{what}: {exc}") from None
        members.append(str(path / filename))
        items.append((info, parse(members[-1])))
    staged = Staged(name, ",".join(uris), path, True, items)
    staged.members = members
    return staged


def plan_input(stores: Stores, name: str, uri: "str | Sequence[str]", in_dir: Path, taken: Set[str],
               index: Optional[int] = None, into: bool = False) -> Staged:
    """Resolve an input (an object, a prefix, ``plan.json#I``, or a list of objects) into what
    to copy where, before any byte moves. ``index``: the job's array index (for
    ``plan.json#``); ``into``: a prefix's objects go straight into ``in_dir`` (not into a
    folder named after the prefix)."""
    if not isinstance(uri, str):
        return plan_list_input(stores, name, list(uri), in_dir, taken)
    if _PLAN_REF.match(uri):
        return plan_chunk_input(stores, name, uri, in_dir, taken, index)
    loc = parse(uri)
    store = stores.for_location(loc)
    what = f"input {name!r}"
    if loc.is_prefix:
        dest_dir = in_dir if into else _unique_path(in_dir, name, loc.name, taken)
        try:
            infos = list(store.list(loc))
        except NotFound as exc:
            raise NotFound(f"{what}: {exc}") from None
        if not infos:
            raise NotFound(f"{what}: {uri} has no objects under it")
        items = [(i, parse(str(dest_dir / safe_relative(i.relative, what)))) for i in infos]
        return Staged(name, uri, dest_dir, True, items)
    filename = safe_name(loc, what)
    try:
        info = store.stat(loc)
    except NotFound as exc:
        raise NotFound(f"{what}: {exc}") from None
    if loc.name.endswith(".json") and info.size <= MAX_PLAN_PEEK and _is_plan(store.read_range(loc, 0, 256)):
        raise UsageError(f"{what}: {uri} is a chunk plan: write {uri}#N to stage its chunk N, or {uri}# for "
                         f"the chunk of this array job's index (copy the plan itself with genostage cp)")
    path = _unique_path(in_dir, name, filename, taken)
    return Staged(name, uri, path, False, [(info, parse(str(path)))])


MAX_PLAN_PEEK = 512 << 20  # a .json input at most this large is checked for being a chunk plan


def _is_plan(head: bytes) -> bool:
    return b'"genostage-plan/' in head


def plan_output(name: str, uri: str, out_dir: Path, taken: Set[str]) -> Staged:
    """Where the tool must write output ``name`` (a file, or a directory for a URI ending in /)."""
    loc = parse(uri)
    if loc.is_s3 and loc.key == "":
        raise UsageError(f"output {name!r}: {uri} names a bucket, not a prefix or an object")
    if uri.endswith("/"):
        path = _unique_path(out_dir, name, loc.name, taken)
        path.mkdir(parents=True, exist_ok=True)
        return Staged(name, uri, path, True)
    path = _unique_path(out_dir, name, loc.name, taken)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Staged(name, uri, path, False)


def _checked_file(path: str, root: str, what: str) -> str:
    """The real file behind ``path``, which must lie inside ``root`` once every link on the
    way is followed (the path itself, or any directory above it, may have been replaced by a
    link to elsewhere)."""
    try:
        real = os.path.realpath(path, strict=True)
    except OSError as exc:
        raise os_error(exc, f"{what}: {path}") from None
    if not inside(real, root):
        raise UnsafePath(f"{what}: {path} resolves to {real}, outside the scratch directory; refusing to publish it")
    if not os.path.isfile(real):
        raise NotFound(f"{what}: {path} is not a regular file")
    return real


def collect_output(stores: Stores, out: Staged, root: str) -> None:
    """Find what the tool wrote for ``out`` and pair each file with its destination."""
    what = f"output {out.name!r}"
    dest = parse(out.uri)
    real_top = os.path.realpath(out.path)
    if os.path.lexists(out.path) and not inside(real_top, root):
        raise UnsafePath(f"{what}: {out.path} resolves to {real_top}, outside the scratch directory; "
                         f"refusing to publish it")
    if not out.is_dir:
        if not os.path.lexists(out.path):
            raise NotFound(f"{what}: the tool did not write {out.path}")
        real = _checked_file(str(out.path), root, what)
        out.items = [(stores.local.stat(parse(real)), dest)]
        return
    items = []
    for rel, full in _walk(str(out.path), root, what):
        real = _checked_file(full, root, what)
        items.append((stores.local.stat(parse(real)), dest.as_prefix().child(rel)))
    out.items = items


def _walk(top: str, root: str, what: str) -> List[Tuple[str, str]]:
    """Files under ``top`` as (relative key, path), following directory links only inside ``root``."""
    found: List[Tuple[str, str]] = []
    seen: Set[str] = set()

    def visit(directory: str, prefix: str) -> None:
        real = os.path.realpath(directory)
        if real in seen:
            return
        seen.add(real)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise os_error(exc, f"{what}: {directory}") from None
        for entry in entries:
            rel = prefix + entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError as exc:
                raise os_error(exc, f"{what}: {entry.path}") from None
            if is_dir:
                if entry.is_symlink() and not inside(entry.path, root):
                    raise UnsafePath(f"{what}: {entry.path} links to a directory outside the scratch directory; refusing to publish it")
                visit(entry.path, rel + "/")
            else:
                found.append((rel, entry.path))
    visit(top, "")
    return found


def transfer_staged(transfer: Transfer, staged: Sequence[Staged], label: str, together: bool = False) -> None:
    """Move every item of every Staged in one parallel batch and attach the results
    (``together``: publish all or none, see :meth:`genostage.transfer.Transfer.copy_all`)."""
    flat = [(s, item) for s in staged for item in s.items]
    results = transfer.copy_all([item for _, item in flat], label=label, together=together)
    for s in staged:
        s.results = []
    for (s, _), result in zip(flat, results):
        s.results.append(result)


def stage_in(uri: str, dest_dir: "str | os.PathLike[str]", stores: Optional[Stores] = None,
             config: Optional[TransferConfig] = None) -> Path:
    """Copy an object into ``dest_dir`` (returns the file's path), or every object under a
    prefix into ``dest_dir`` itself, keeping their relative keys, as ``genostage cp`` does
    (returns ``dest_dir``)."""
    from ..fsutil import check_space

    stores = stores or Stores(config)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    staged = plan_input(stores, "input", uri, dest, set(), into=True)
    check_space(str(dest), staged.size)
    transfer_staged(Transfer(stores, config or stores.config), [staged], f"stage in {staged.path.name}")
    return staged.path


def stage_out(path: "str | os.PathLike[str]", uri: str, stores: Optional[Stores] = None,
              config: Optional[TransferConfig] = None) -> List[TransferResult]:
    """Publish a local file (or a directory's files, for a URI ending in /) to ``uri``."""
    stores = stores or Stores(config)
    p = Path(path)
    out = Staged("output", uri, p, p.is_dir())
    if out.is_dir and not uri.endswith("/"):
        out.uri = uri + "/"
    collect_output(stores, out, str(p if p.is_dir() else p.parent))
    transfer_staged(Transfer(stores, config or stores.config), [out], f"stage out {p.name}")
    return out.results
