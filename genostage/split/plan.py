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

Each kind's module provides ``make_plan(uris, parts, stores) -> Plan`` and
``write_chunk(plan, index, out, stores) -> dict`` where ``out`` is a writable
binary file object; :func:`write_chunk` and :func:`fetch_chunk` dispatch on
``plan.kind``.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, List, Optional, Union

from .. import __version__
from ..errors import FormatError, ObjectChanged, UsageError
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
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FormatError(f"not a genostage plan (expected \"format\": \"{FORMAT}\")", path=where)
    if data.get("kind") not in KINDS:
        raise FormatError(f"unknown plan kind {data.get('kind')!r} (expected one of {', '.join(KINDS)})", path=where)
    for key in ("sources", "chunks"):
        if not isinstance(data.get(key), list) or not data[key]:
            raise FormatError(f"plan has no {key}", path=where)
    known = {"format", "kind", "sources", "header", "chunks", "created_by", "bytes_read"}
    return Plan(data["kind"], data["sources"], data["chunks"], data.get("header") or {},
                int(data.get("bytes_read") or 0), {k: v for k, v in data.items() if k not in known})


def load(uri: str, stores: Optional[Stores] = None) -> Plan:
    """Read a plan from a local path or an ``s3://`` URI."""
    stores = stores or Stores()
    loc = parse(uri)
    store = stores.for_location(loc)
    info = store.stat(loc, checksums=False)
    raw = store.read_range(loc, 0, info.size)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise FormatError(f"plan is not valid JSON ({exc})", path=uri) from None
    return from_json(data, uri)


def save(plan: Plan, uri: str, stores: Optional[Stores] = None) -> None:
    """Write a plan (atomically) to a local path or an ``s3://`` URI."""
    stores = stores or Stores()
    loc = parse(uri)
    body = (json.dumps(plan.to_json(), indent=1) + "\n").encode()
    stores.for_location(loc).put_bytes(loc, body)


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


# kind -> module with make_plan/write_chunk; FASTQ's module lands separately (imported lazily)
_KIND_MODULES = {"bam": "genostage.split.bam", "fastq": "genostage.split.fastq_plan"}


def _kind_module(kind: str) -> Any:
    try:
        return importlib.import_module(_KIND_MODULES[kind])
    except KeyError:
        raise UsageError(f"unknown plan kind {kind!r} (expected one of {', '.join(KINDS)})") from None
    except ImportError:
        raise UsageError(f"{kind} plans are not supported by this genostage build") from None


def write_chunk(plan: Plan, index: int, out: BinaryIO, stores: Stores,
                out2: Optional[BinaryIO] = None) -> Dict[str, Any]:
    """Write chunk ``index`` of ``plan`` to the binary file object ``out`` (``out2``: R2 of a
    paired FASTQ plan); returns what it did."""
    plan.chunk(index)
    if plan.kind == "bam":
        from .bam import write_plan_chunk

        return write_plan_chunk(plan, index, out, stores)
    if out2 is not None:
        return dict(_kind_module(plan.kind).write_chunk(plan, index, out, stores, out2=out2))
    return dict(_kind_module(plan.kind).write_chunk(plan, index, out, stores))


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
    tmps = []
    for dest in dests:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        head, tail = os.path.split(dest)
        tmps.append(os.path.join(head, f".{tail}.genostage-{os.getpid()}.tmp"))
    try:
        with contextlib.ExitStack() as stack:
            handles = [stack.enter_context(open(t, "wb")) for t in tmps]
            stats = write_chunk(plan, index, handles[0], stores, handles[1] if len(handles) > 1 else None)
        for tmp, dest in zip(tmps, dests):
            os.replace(tmp, dest)
    except BaseException:
        for tmp in tmps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
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
