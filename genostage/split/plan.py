"""Chunk plans: one JSON format shared by BAM and FASTQ.

A plan is made once (``genostage plan``) from a few ranged reads of the source,
then each array-job child fetches only its chunk (``genostage chunk``)::

    {
      "format": "genostage-plan/1",
      "kind": "bam" | "fastq",
      "sources": [{"uri": ..., "size": ..., "etag": ..., "version_id": ...}],  # 2 for paired FASTQ
      "header": {...},            # kind-specific (BAM: compressed byte range of the header)
      "chunks": [{...}, ...],     # kind-specific, in order; chunk i is "--index i"
      "created_by": "genostage 0.1.0",
      "bytes_read": N             # what making the plan read from the source(s)
    }

A plan is refused when a source no longer matches its recorded size/ETag/version
(and, for local files, modification time).

BAM plans (``genostage.split.bam``): ``header`` is ``{"bytes": [0, end], "length":
decompressed header length, "first_record": virtual offset, "n_ref": n}`` and each
chunk is ``{"start": voffset, "end": voffset, "bytes": [first, last]}``: the records
from ``start`` (inclusive) to ``end`` (exclusive), found in compressed bytes
``[first, last)``. FASTQ plans come from ``genostage.split.fastq_plan``.

Each kind's module provides ``make_plan(uris, parts, stores) -> Plan`` and a chunk writer
(``write_chunk(plan, index, out, stores)``; BAM: ``write_plan_chunk``) where ``out`` is a
writable binary file object; :func:`write_chunk` and :func:`fetch_chunk` dispatch on
``plan.kind`` through :data:`KIND_MODULES`, by name, so this module imports neither kind's
module (they import it).

:func:`from_json` checks a plan's shape before anything uses it: types, required keys, ranges
that go forward and stay inside their source, FASTQ chunks that cover each source end to end.
A plan that fails names itself and the field (``plan.json: chunks[2].ranges[0]: start is
after end``), exit 1.
"""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, List, Optional, Sequence, Tuple, Union

from .. import __version__
from ..errors import FormatError, ObjectChanged, UsageError
from ..fsutil import AtomicFile, os_error
from ..location import parse
from ..store import ObjectInfo, Stores

FORMAT = "genostage-plan/1"
KINDS = ("bam", "fastq")


@dataclass
class Plan:
    kind: str
    sources: List[Dict[str, Any]]
    chunks: List[Dict[str, Any]]
    header: Dict[str, Any] = field(default_factory=dict)
    bytes_read: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return {"format": FORMAT, "kind": self.kind, "sources": self.sources, "header": self.header,
                "chunks": self.chunks, "created_by": f"genostage {__version__}",
                "bytes_read": self.bytes_read, **self.extra}

    def chunk(self, index: int) -> Dict[str, Any]:
        if not 0 <= index < len(self.chunks):
            raise UsageError(f"chunk index {index} out of range: the plan has {len(self.chunks)} chunks (0..{len(self.chunks) - 1})")
        return self.chunks[index]


def source_entry(info: ObjectInfo) -> Dict[str, Any]:
    return {"uri": str(info.location), "size": info.size, "etag": info.etag, "version_id": info.version_id}


def from_json(data: Any, where: str) -> Plan:
    """A :class:`Plan` from decoded JSON, its shape checked (see the module docstring)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FormatError(f"not a genostage plan (expected \"format\": \"{FORMAT}\")", path=where)
    if data.get("kind") not in KINDS:
        raise FormatError(f"unknown plan kind {data.get('kind')!r} (expected one of {', '.join(KINDS)})", path=where)
    for key in ("sources", "chunks"):
        if not isinstance(data.get(key), list) or not data[key]:
            raise FormatError(f"plan has no {key}", path=where)
    check = _Check(where)
    header = data.get("header") or {}
    check.is_a(header, dict, "header")
    bytes_read = data.get("bytes_read") or 0
    check.count(bytes_read, "bytes_read")
    sources = [check.source(src, f"sources[{i}]", data["kind"]) for i, src in enumerate(data["sources"])]
    if data["kind"] == "fastq":
        check.fastq_chunks(data["chunks"], sources)
    else:
        check.bam_chunks(data["chunks"], sources)
    known = {"format", "kind", "sources", "header", "chunks", "created_by", "bytes_read"}
    return Plan(data["kind"], data["sources"], data["chunks"], header, bytes_read,
                {k: v for k, v in data.items() if k not in known})


class _Check:
    """The checks of :func:`from_json`; each failure names the plan and the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field_name: str, what: str) -> FormatError:
        return FormatError(f"{field_name}: {what}", path=self.where)

    def is_a(self, value: Any, kind: "type | Tuple[type, ...]", name: str) -> None:
        if not isinstance(value, kind) or isinstance(value, bool):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise self.fail(name, f"expected {names.replace('NoneType', 'null')}, got {_json_type(value)}")

    def count(self, value: Any, name: str) -> int:
        self.is_a(value, int, name)
        if value < 0:
            raise self.fail(name, f"must not be negative, got {value}")
        return int(value)

    def key(self, obj: Dict[str, Any], key: str, name: str) -> Any:
        if key not in obj:
            raise self.fail(name, f"missing {key!r}")
        return obj[key]

    def source(self, src: Any, name: str, kind: str) -> Dict[str, Any]:
        self.is_a(src, dict, name)
        uri = self.key(src, "uri", name)
        self.is_a(uri, str, f"{name}.uri")
        if not uri:
            raise self.fail(f"{name}.uri", "empty")
        self.count(self.key(src, "size", name), f"{name}.size")
        for opt in ("etag", "version_id"):
            if src.get(opt) is not None:
                self.is_a(src[opt], str, f"{name}.{opt}")
        if src.get("mtime") is not None:
            self.is_a(src["mtime"], (int, float), f"{name}.mtime")
        if kind == "fastq" and src.get("format", "plain") not in ("plain", "bgzf"):
            raise self.fail(f"{name}.format", f"expected \"plain\" or \"bgzf\", got {src.get('format')!r}")
        return src

    def position(self, value: Any, name: str, size: int) -> Tuple[int, int]:
        if not isinstance(value, list) or len(value) != 2:
            raise self.fail(name, f"expected [offset, offset in block], got {_json_type(value)}")
        c = self.count(value[0], f"{name}[0]")
        u = self.count(value[1], f"{name}[1]")
        if c > size or (c == size and u):
            raise self.fail(name, f"{value} is past the end of the source ({size} bytes)")
        if u > 65536:
            raise self.fail(f"{name}[1]", f"{u} is past the end of a BGZF block")
        return c, u

    def fastq_chunks(self, chunks: Sequence[Any], sources: List[Dict[str, Any]]) -> None:
        ends: List[Tuple[int, int]] = [(0, 0)] * len(sources)
        for i, chunk in enumerate(chunks):
            name = f"chunks[{i}]"
            self._chunk_head(chunk, name, i)
            if chunk.get("records") is not None:
                self.count(chunk["records"], f"{name}.records")
            ranges = self.key(chunk, "ranges", name)
            self.is_a(ranges, list, f"{name}.ranges")
            if len(ranges) != len(sources):
                raise self.fail(f"{name}.ranges", f"{len(ranges)} ranges for {len(sources)} sources")
            for k, (rng, src) in enumerate(zip(ranges, sources)):
                rname = f"{name}.ranges[{k}]"
                self.is_a(rng, dict, rname)
                start = self.position(self.key(rng, "start", rname), f"{rname}.start", src["size"])
                end = self.position(self.key(rng, "end", rname), f"{rname}.end", src["size"])
                if start > end:
                    raise self.fail(rname, f"start {list(start)} is after end {list(end)}")
                if start != ends[k]:
                    raise self.fail(f"{rname}.start", f"{list(start)} leaves a gap or an overlap after "
                                    f"{list(ends[k])}: the chunks must cover the source in order")
                ends[k] = end
        for k, src in enumerate(sources):
            if ends[k] != (src["size"], 0):
                raise self.fail(f"chunks[{len(chunks) - 1}].ranges[{k}].end",
                                f"{list(ends[k])}: the last chunk must end at the end of the source "
                                f"([{src['size']}, 0])")

    def bam_chunks(self, chunks: Sequence[Any], sources: List[Dict[str, Any]]) -> None:
        if len(sources) != 1:
            raise self.fail("sources", f"a BAM plan has one source, not {len(sources)}")
        size = sources[0]["size"]
        for i, chunk in enumerate(chunks):
            name = f"chunks[{i}]"
            self._chunk_head(chunk, name, i)
            start = self.count(self.key(chunk, "start", name), f"{name}.start")
            end = self.count(self.key(chunk, "end", name), f"{name}.end")
            if start > end:
                raise self.fail(name, f"start {start} is after end {end}")
            spans = self.key(chunk, "bytes", name)
            if not isinstance(spans, list) or len(spans) != 2:
                raise self.fail(f"{name}.bytes", f"expected [first, last], got {_json_type(spans)}")
            first = self.count(spans[0], f"{name}.bytes[0]")
            last = self.count(spans[1], f"{name}.bytes[1]")
            if first > last or last > size:
                raise self.fail(f"{name}.bytes", f"[{first}, {last}] is not a byte range of the source "
                                f"({size} bytes)")

    def _chunk_head(self, chunk: Any, name: str, i: int) -> None:
        self.is_a(chunk, dict, name)
        if "index" in chunk:
            index = self.count(chunk["index"], f"{name}.index")
            if index != i:
                raise self.fail(f"{name}.index", f"{index}: chunks must be listed in order (expected {i})")


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null",
            int: "a whole number", float: "a number"}.get(type(value), type(value).__name__)


def load(uri: str, stores: Optional[Stores] = None) -> Plan:
    """Read a plan from a local path or an ``s3://`` URI."""
    stores = stores or Stores()
    raw = stores.read_whole(uri, "plan")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise FormatError(f"plan is not valid JSON ({exc})", path=uri) from None
    except RecursionError:
        raise FormatError("plan is nested too deeply to be a genostage plan", path=uri) from None
    return from_json(data, uri)


def save(plan: Plan, uri: str, stores: Optional[Stores] = None) -> None:
    """Write a plan (atomically) to a local path or an ``s3://`` URI."""
    stores = stores or Stores()
    loc = parse(uri)
    body = (json.dumps(plan.to_json(), indent=1) + "\n").encode()
    try:
        stores.for_location(loc).put_bytes(loc, body)
    except OSError as exc:  # a local file system full or read-only
        raise os_error(exc, uri) from None


def check_unchanged(plan: Plan, stores: Stores) -> List[ObjectInfo]:
    """Stat every source and refuse the plan if one changed since it was made."""
    infos = []
    for src in plan.sources:
        loc = parse(src["uri"])
        info = stores.for_location(loc).stat(loc, checksums=False)
        same = info.size == src.get("size") and (src.get("etag") in (None, info.etag)) and \
            (src.get("version_id") in (None, info.version_id)) and \
            (src.get("mtime") is None or info.mtime is None or abs(info.mtime - src["mtime"]) < 1e-6)
        if not same:
            what = [f"size {src.get('size')} -> {info.size}"]
            if src.get("etag") or info.etag:
                what.append(f"ETag {src.get('etag')} -> {info.etag}")
            if src.get("mtime") is not None and info.mtime is not None:
                what.append(f"modified {src['mtime']:.6f} -> {info.mtime:.6f}")
            raise ObjectChanged(f"{src['uri']} changed since the plan was made ({', '.join(what)}); make a new plan")
        infos.append(info)
    return infos


# kind -> (module, its chunk writer): imported by name, so that this module, which the kinds'
# modules import, imports none of them
KIND_MODULES: Dict[str, Tuple[str, str]] = {
    "bam": ("genostage.split.bam", "write_plan_chunk"),
    "fastq": ("genostage.split.fastq_plan", "write_chunk"),
}


def kind_module(kind: str) -> Any:
    """The module that makes and reads plans of ``kind`` (``make_plan``, its chunk writer)."""
    try:
        return importlib.import_module(KIND_MODULES[kind][0])
    except KeyError:
        raise UsageError(f"unknown plan kind {kind!r} (expected one of {', '.join(KINDS)})") from None


def write_chunk(plan: Plan, index: int, out: BinaryIO, stores: Stores,
                out2: Optional[BinaryIO] = None) -> Dict[str, Any]:
    """Write chunk ``index`` of ``plan`` to the binary file object ``out`` (``out2``: R2 of a
    paired FASTQ plan); returns what it did."""
    plan.chunk(index)
    writer = getattr(kind_module(plan.kind), KIND_MODULES[plan.kind][1])
    if out2 is not None:
        return dict(writer(plan, index, out, stores, out2=out2))
    return dict(writer(plan, index, out, stores))


def is_paired(plan: Plan) -> bool:
    return plan.kind == "fastq" and len(plan.sources) == 2


def fetch_chunk(plan: Union[str, Plan], index: int, dest_path: str, stores: Optional[Stores] = None,
                dest2: Optional[str] = None) -> Dict[str, Any]:
    """Write chunk ``index`` of a plan (a Plan, or its local path / ``s3://`` URI) to ``dest_path``
    (and R2 of a paired FASTQ plan to ``dest2``).

    The files appear complete or not at all (temporary names, then rename).
    Used by ``genostage chunk`` and by ``genostage run --input NAME=plan.json#I``.
    """
    stores = stores or Stores()
    if not isinstance(plan, Plan):
        plan = load(plan, stores)
    plan.chunk(index)
    if is_paired(plan) and dest2 is None:
        raise UsageError("a paired FASTQ plan writes two files: give an output for R2 too")
    dests = [os.path.abspath(d) for d in ([dest_path] + ([dest2] if dest2 else []))]
    outs = []
    for dest in dests:
        try:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
        except OSError as exc:
            raise os_error(exc, os.path.dirname(dest)) from None
        outs.append(AtomicFile(dest))
    published: List[str] = []
    try:
        handles: List[BinaryIO] = [out.open() for out in outs]  # type: ignore[misc]
        stats = write_chunk(plan, index, handles[0], stores, handles[1] if len(handles) > 1 else None)
        for out in outs:
            published.append(out.path)
            out.commit()
    except BaseException as exc:
        for out in outs:
            out.abort()
        for path in published:  # R1 in place but R2 failed: neither stays
            try:
                os.unlink(path)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise os_error(exc, dests[0]) from None
        raise
    stats["path"] = dests[0]
    if len(dests) > 1:
        stats["path2"] = dests[1]
    return stats


def parse_plan_ref(text: str) -> "tuple[str, int]":
    """Split ``plan.json#3`` into ``("plan.json", 3)``."""
    uri, sep, idx = text.rpartition("#")
    if not sep or not uri or not idx.isdigit():
        raise UsageError(f"{text!r}: expected PLAN#INDEX, e.g. plan.json#3")
    return uri, int(idx)
