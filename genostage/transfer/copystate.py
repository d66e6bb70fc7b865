"""The state of one object's copy while its parts move."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..location import Location
from ..store import ObjectInfo, Upload
from .md5 import OrderedMD5

ALWAYS = "crc64nvme"  # computed for every transfer: the manifest's value and the upload's full-object checksum
SMALL = 1 << 20  # single parts up to this size are held whole and written in one go


@dataclass
class Part:
    index: int
    start: int
    length: int
    values: Dict[str, Any] = field(default_factory=dict)  # algorithm -> int CRC, "md5" -> [digests]
    done: bool = False
    resumed: bool = False
    tries: int = 0  # fetches started
    first_try: float = 0.0


def part_layout(size: int, part_size: int, first_part: int = 0) -> List[Tuple[int, int]]:
    """(start, length) of each part: ``part_size`` each, or, with ``first_part``, a ramp
    (first_part, twice that, ... up to part_size) so that the first bytes arrive early."""
    out: List[Tuple[int, int]] = []
    start, step = 0, min(first_part, part_size) if first_part > 0 else part_size
    while start < size:
        length = min(step, size - start)
        out.append((start, length))
        start += length
        step = min(step * 2, part_size)
    return out


class ObjectCopy:
    """One object moving from ``src`` to ``dest``: its parts, what it must match
    (``expected``: (algorithm, value) from the source store, or None), the destination
    being written, and counts for the result."""

    def __init__(self, src: ObjectInfo, dest: Location, part_size: int, expected: Optional[Tuple[str, str]],
                 etag_part_size: int = 0, first_part: int = 0) -> None:
        self.src = src
        self.dest = dest
        self.expected = expected
        self.algorithms = [ALWAYS]
        if expected and expected[0] in ("crc32c", "crc32"):
            self.algorithms.append(expected[0])
        self.part_size = part_size
        self.etag_part_size = etag_part_size  # the source's upload part size, for a multipart-ETag check
        self.parts = [Part(i, start, length) for i, (start, length) in
                      enumerate(part_layout(src.size, part_size, first_part))]
        if src.size == 0:
            self.parts = [Part(0, 0, 0)]
        self.remaining = len(self.parts)
        self.lock = threading.Lock()
        self.upload: Optional[Upload] = None
        self.streams = False  # pieces are written to the destination as they arrive
        self.started = time.monotonic()
        self.md5 = OrderedMD5([(p.start, p.length) for p in self.parts]) if expected and expected[0] == "md5" else None
        self.journal: Any = None  # a PartJournal when the copy can resume
        self.resumed = 0
        self.repaired = 0
        self.n = 0  # index in the batch
        self.together = False  # published with the rest of its batch, or not at all
        self.published = False  # the destination shows this copy's bytes
        self.sent = False  # a write that publishes (a PUT) was sent: the object may be there
        self.lost = False  # the destination dropped the upload: the object is written again at the end

    @property
    def single(self) -> bool:
        return len(self.parts) == 1

    @property
    def wants_etag(self) -> bool:
        return self.expected is not None and self.expected[0] == "etag"

    @property
    def held(self) -> bool:
        """A small single part: held whole in memory and written in one go."""
        return self.single and self.src.size <= SMALL

    def part_done(self) -> bool:
        """Count one part done; True when it was the last."""
        with self.lock:
            self.remaining -= 1
            return self.remaining == 0
