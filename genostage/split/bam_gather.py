"""Concatenate BAM parts without recompression (as ``samtools cat``): one header, all records, one EOF."""
from __future__ import annotations

import os
from typing import Any, BinaryIO, Dict, List

from ..codec.bgzf import BgzfWriter, make_virtual
from ..errors import FormatError, UsageError
from ..store import Stores
from .bam_copy import copy_records
from .bam_io import Source, check_eof, read_header


def gather_bam(parts: List[str], out: BinaryIO, stores: Stores, level: int = 6) -> Dict[str, Any]:
    """Write the parts' records, in order, after the first part's header; every header must be the same."""
    if not parts:
        raise UsageError("gather needs at least one part")
    sources = [Source(p, stores) for p in parts]
    headers = [read_header(s) for s in sources]
    eofs = [check_eof(s) for s in sources]
    for src, h in zip(sources[1:], headers[1:]):
        if h.data != headers[0].data:
            raise FormatError(f"header differs from the header of {sources[0].path}", path=src.path, fmt="BAM", offset=0)
    writer = BgzfWriter(out, level)
    writer.write(headers[0].data)
    writer.flush()
    copied = reencoded = 0
    for src, h, eof in zip(sources, headers, eofs):
        first = h.first_record >> 16
        stats = copy_records(writer, src.iter(first, eof - first), h.first_record, make_virtual(eof, 0), src, out)
        copied += stats["blocks_copied"]
        reencoded += stats["blocks_reencoded"]
    writer.close()
    return {"parts": len(parts), "bytes_written": writer.compressed_bytes, "blocks_copied": copied,
            "blocks_reencoded": reencoded}


def gather_to_file(parts: List[str], dest: str, stores: Stores) -> Dict[str, Any]:
    """:func:`gather_bam` into ``dest``, which appears complete or not at all."""
    dest = os.path.abspath(dest)
    head, tail = os.path.split(dest)
    os.makedirs(head, exist_ok=True)
    tmp = os.path.join(head, f".{tail}.genostage-{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            stats = gather_bam(parts, fh, stores)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    stats["path"] = dest
    return stats
