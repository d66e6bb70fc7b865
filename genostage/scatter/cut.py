"""How a scatter cuts its input into one chunk per child.

- **FASTQ, plain or BGZF** (one file or a pair): a chunk plan made with ranged reads (at
  most N x 1 MiB read), saved as ``<work>/plan.json``; child i stages ``plan.json#i``.
- **FASTQ, plain gzip**: it cannot be cut without reading it, so it is split once, streamed
  from its store, into chunk objects under ``<work>/chunks/`` (verified uploads); child i
  stages its chunk's objects (a pair: ``{NAME.1}``, ``{NAME.2}``).
- **BAM**: a chunk plan by size (``parts``, ``records``, ``bytes``, ``by_name`` keeps a
  read name's records together), by reference, or by regions (needs the index).
- **A sample sheet** (TSV with a header row): one child per row; each column is an input of
  that name (a URI, or ``URI1,URI2`` for a pair); a column ``id`` names the child instead
  (``{id}`` in output URIs).
"""
from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from ..codec.compress import detect
from ..config import TransferConfig
from ..errors import FormatError, UsageError
from ..job.staging import split_list
from ..location import parse
from ..store import Stores
from ..transfer import copy

log = logging.getLogger("genostage.scatter")


@dataclass
class CutOptions:
    parts: Optional[int] = None
    records: Optional[int] = None
    nbytes: Optional[int] = None
    by_name: bool = False
    by_reference: bool = False
    regions: Optional[str] = None
    index: Optional[str] = None  # the BAM's .bai/.csi when not beside it


@dataclass
class Cut:
    """What the cut gives the scatter: how many children, the chunk input of the job template
    (with ``{index}``), per-child inputs (rows), and what counts as a child's reads."""

    children: int
    template: Dict[str, Any] = field(default_factory=dict)
    rows: List[Dict[str, Any]] = field(default_factory=list)
    reads: Dict[str, Any] = field(default_factory=dict)
    plan: Optional[str] = None
    kind: str = ""
    bytes_read: int = 0
    ids: List[str] = field(default_factory=list)  # a sample sheet's id column ({id} in output URIs)


def _head(stores: Stores, uri: str) -> bytes:
    loc = parse(uri)
    store = stores.for_location(loc)
    info = store.stat(loc, checksums=False)
    return store.read_range(loc, 0, min(64, info.size), etag=info.etag) if info.size else b""


def input_kind(stores: Stores, uris: Sequence[str]) -> str:
    """``bam``, ``fastq`` (plain or BGZF) or ``fastq-gzip`` (plain gzip), from the bytes."""
    head = _head(stores, uris[0])
    fmt = detect(head)
    if fmt == "bgzf":
        import zlib

        try:
            inner = zlib.decompressobj(31).decompress(head, 4)
        except zlib.error:
            inner = b""
        if inner[:4] == b"BAM\x01" or parse(uris[0]).name.lower().endswith(".bam"):
            return "bam"
        return "fastq"
    if fmt == "gzip":
        return "fastq-gzip"
    if head[:1] == b"@":
        return "fastq"
    raise FormatError("neither a BAM nor a FASTQ file (expected BGZF, gzip, or a record starting with '@')",
                      path=uris[0])


def cut_input(stores: Stores, config: TransferConfig, name: str, uris: Sequence[str], options: CutOptions,
              work: str, scratch: Optional[str] = None) -> Cut:
    """Plan the chunks of input ``name`` (one URI, or two for a FASTQ pair)."""
    kind = input_kind(stores, uris)
    if kind == "bam":
        if len(uris) != 1:
            raise UsageError(f"input {name!r}: a BAM is cut alone, not in a pair")
        return _cut_bam(stores, name, uris[0], options, work)
    if options.by_reference or options.regions or options.by_name:
        raise UsageError(f"input {name!r} is FASTQ: --by-reference, --regions and --by-name cut BAMs")
    if kind == "fastq":
        return _cut_fastq_plan(stores, name, list(uris), options, work)
    return _cut_fastq_gzip(stores, config, name, list(uris), options, work, scratch)


def _save_plan(plan: Any, work: str, stores: Stores) -> str:
    from ..split.plan import save

    uri = work + "plan.json"
    save(plan, uri, stores)
    return uri


def _cut_fastq_plan(stores: Stores, name: str, uris: List[str], options: CutOptions, work: str) -> Cut:
    from ..split.fastq_plan import make_plan

    if options.records or options.nbytes:
        raise UsageError(f"input {name!r}: a plain or BGZF FASTQ is planned with --parts N "
                         f"(--records and --bytes need a split: bgzip is not the issue, a plan is)")
    plan = make_plan(uris, options.parts or 1, stores)
    uri = _save_plan(plan, work, stores)
    return Cut(len(plan.chunks), {name: uri + "#{index}"}, reads={"input": name, "paired": len(uris) == 2},
               plan=uri, kind="fastq", bytes_read=plan.bytes_read)


def _cut_bam(stores: Stores, name: str, uri: str, options: CutOptions, work: str) -> Cut:
    from ..split.bam import make_plan

    runs = None
    if options.by_reference or options.regions:
        from ..split.bam_index import index_runs

        runs = index_runs(uri, stores, index_uri=options.index, by_reference=options.by_reference,
                          regions=options.regions)
    plan = make_plan(uri, stores, parts=options.parts if runs is None else None, records=options.records,
                     size=options.nbytes, by_name=options.by_name, runs=runs)
    if not plan.chunks:
        raise FormatError("the BAM holds no records to cut", path=uri)
    plan_uri = _save_plan(plan, work, stores)
    return Cut(len(plan.chunks), {name: plan_uri + "#{index}"}, reads={"input": name, "paired": False},
               plan=plan_uri, kind="bam", bytes_read=plan.bytes_read)


def _cut_fastq_gzip(stores: Stores, config: TransferConfig, name: str, uris: List[str], options: CutOptions,
                    work: str, scratch: Optional[str]) -> Cut:
    """Split once, streamed from the store, into chunk objects under ``<work>/chunks/``."""
    from ..split.fastq import split_fastq

    from ..job.scratch import default_root

    root = scratch or default_root()
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".genostage-scatter-chunks-", dir=root)
    try:
        log.info("%s is plain gzip: splitting it once into chunk objects under %schunks/", uris[0], work)
        summary = split_fastq(uris, tmp, parts=options.parts, records=options.records, nbytes=options.nbytes,
                              stores=stores)
        copy(tmp + "/", work + "chunks/", stores=stores, config=config)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows: List[Dict[str, Any]] = []
    for chunk in summary.chunks:
        objects = [work + "chunks/" + os.path.basename(f) for f in chunk.files]
        rows.append({name: objects if len(objects) > 1 else objects[0]})
    return Cut(len(rows), rows=rows, reads={"input": name, "paired": len(uris) == 2}, kind="fastq-gzip")


def read_sheet(stores: Stores, uri: str) -> Cut:
    """One child per row of a TSV sample sheet (see the module docstring)."""
    text = stores.read_whole(uri, "sample sheet").decode("utf-8", "replace")
    reader = csv.reader(io.StringIO(text), delimiter="\t")
    rows = [r for r in reader if r and any(c.strip() for c in r) and not r[0].startswith("#")]
    if len(rows) < 2:
        raise FormatError("a sample sheet needs a header row and at least one sample", path=uri)
    header = [h.strip() for h in rows[0]]
    for h in header:
        if not h.replace("_", "a").isalnum() or h[0].isdigit():
            raise FormatError(f"column {h!r}: names must be letters, digits and _", path=uri, line=0)
    out: List[Dict[str, Any]] = []
    for n, row in enumerate(rows[1:], 1):
        if len(row) != len(header):
            raise FormatError(f"{len(row)} columns, the header has {len(header)}", path=uri, line=n)
        out.append({h: split_list(v.strip()) for h, v in zip(header, row) if h != "id"})
    ids = [r[header.index("id")].strip() for r in rows[1:]] if "id" in header else []
    if len(set(ids)) != len(ids):
        raise FormatError("the id column repeats a value", path=uri)
    return Cut(len(out), rows=out, kind="sheet", ids=ids)
