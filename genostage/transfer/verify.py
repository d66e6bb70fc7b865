"""Verification: the values a copy's bytes gave, compared with what the source store keeps
before anything is published, and what the destination store reports after.

A download is verified against the source's stored checksum (a full-object CRC, a
whole-object or multipart MD5 ETag). An upload is proven by the destination's answers
(:attr:`genostage.store.Upload.proof`: part and object ETags that are the MD5s of our bytes),
or by the full-object CRC64NVME AWS S3 computes itself; where neither is available (an
S3-compatible store whose ETags are not MD5s, such as under SSE-KMS), the object is read
back and checksummed. A destination that holds other bytes is deleted and the copy fails
(or is tried again: see the engine).
"""
from __future__ import annotations

from typing import Dict, Optional

from ..codec import checksum as ck
from ..config import TransferConfig
from ..errors import ChecksumMismatch
from ..store import ObjectInfo, Store
from .copystate import ALWAYS, ObjectCopy


def combined(c: ObjectCopy, name: str) -> int:
    value = c.parts[0].values[name]
    for part in c.parts[1:]:
        value = ck.combine(name, value, part.values[name], part.length)
    return int(value)


def actual(c: ObjectCopy) -> Dict[str, str]:
    """The values of the bytes moved, in the stores' wire forms."""
    out = {name: ck.to_wire(name, combined(c, name)) for name in c.algorithms}
    if c.wants_etag:
        out["etag"] = ck.etag_of_parts([d for p in c.parts for d in p.values["md5"]])
    if c.md5 is not None:
        out["md5"] = c.md5.finish()
    return out


def check_source(c: ObjectCopy, values: Dict[str, str]) -> Optional[str]:
    """Compare with what the source keeps; the name of the check, or None (nothing to check)."""
    if c.expected is None:
        return None
    name, want = c.expected
    got = values.get(name)
    if name in ("etag", "md5"):
        want, got = want.strip('"'), (got or "").strip('"')
    if got != want:
        raise ChecksumMismatch(str(c.src.location), name, want, str(got))
    return name


def _reported_crc(info: ObjectInfo) -> Optional[str]:
    reported = info.checksums.get(ALWAYS)
    if not reported or "-" in reported or info.checksum_type == "COMPOSITE":
        return None
    return reported


def read_back(store: Store, c: ObjectCopy, expected: str) -> None:
    """Read the published object back and compare its CRC64NVME (deleting it when it differs)."""
    value = [0]

    def consume(piece: memoryview) -> None:
        value[0] = ck.crc(ALWAYS, piece, value[0])

    store.read_into(c.dest, 0, c.src.size, consume)
    got = ck.to_wire(ALWAYS, value[0])
    if got != expected:
        store.delete(c.dest)
        raise ChecksumMismatch(str(c.dest), f"{ALWAYS} (read back)", expected, got)


def check_destination(store: Store, config: TransferConfig, c: ObjectCopy, info: ObjectInfo,
                      values: Dict[str, str]) -> Optional[str]:
    """After publishing: the destination holds our bytes. Returns how that was proven
    (None for a local file, which holds what was checksummed as it was written)."""
    if info.size != c.src.size:
        store.delete(c.dest)
        raise ChecksumMismatch(str(c.dest), "size", str(c.src.size), str(info.size))
    if store.writes_are_local:
        return None
    reported = _reported_crc(info)
    if reported is not None and reported != values[ALWAYS]:
        store.delete(c.dest)
        raise ChecksumMismatch(str(c.dest), ALWAYS, values[ALWAYS], reported)
    proof = c.upload.proof if c.upload is not None else None
    if reported is not None and (proof or not config.endpoint_url):
        return ALWAYS  # the store keeps our CRC64NVME, and checked it (AWS S3) or its ETags prove the bytes
    if proof:
        return proof
    if not config.verify:
        return None
    read_back(store, c, values[ALWAYS])  # a value the store may only have echoed, or none
    return f"{ALWAYS} (read back)"
