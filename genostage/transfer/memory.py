"""Small objects written from memory (a manifest, a plan, a scatter spec), verified as every
other upload: the PUT carries its MD5 and CRC64NVME, the store's answer must prove the bytes
(ETag = MD5, or the CRC64NVME it keeps), and a write the store proves wrong is sent again
under the retry policy. Local destinations are written whole or not at all."""
from __future__ import annotations

import hashlib
import logging
import time
from typing import Optional

from ..codec import checksum as ck
from ..config import TransferConfig
from ..errors import ChecksumMismatch
from ..fsutil import write_atomic
from ..location import Location
from ..store import Stores
from .copystate import ALWAYS

log = logging.getLogger("genostage.transfer")


def put_verified(stores: Stores, dest: Location, data: bytes, config: Optional[TransferConfig] = None) -> str:
    """Write ``data`` to ``dest``; returns how the store proved it holds those bytes."""
    if not dest.is_s3:
        write_atomic(dest.path, data)
        return "written whole"
    config = config or stores.config
    store = stores.for_location(dest)
    crc = ck.to_wire(ALWAYS, ck.crc(ALWAYS, data))
    md5 = hashlib.md5(data).hexdigest()
    retry = config.retry_policy()
    first, tries = time.monotonic(), 0
    while True:
        tries += 1
        up = store.begin_upload(dest, len(data), 1)
        try:
            up.write_part(1, 0, data, {ALWAYS: crc, "md5": md5})
            info = up.complete({ALWAYS: crc})
            reported = info.checksums.get(ALWAYS)
            if reported and "-" not in reported and reported != crc:
                store.delete(dest)
                raise ChecksumMismatch(str(dest), ALWAYS, crc, reported)
            if up.proof or reported == crc:
                return up.proof or ALWAYS
            got = store.read_range(dest, 0, len(data))  # nothing in the answer proves it: read it back
            if got != data:
                store.delete(dest)
                raise ChecksumMismatch(str(dest), f"{ALWAYS} (read back)", crc,
                                       ck.to_wire(ALWAYS, ck.crc(ALWAYS, got)))
            return f"{ALWAYS} (read back)"
        except ChecksumMismatch as exc:
            delay = retry.delay(tries, time.monotonic() - first)
            if delay is None:
                raise
            log.warning("%s; sending it again in %.1f s", exc, delay)
            time.sleep(delay)
