"""One try at fetching one part: its bytes checksummed (and, when the destination takes
pieces, written at their offset) as they arrive."""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Tuple

from ..cancel import error_of
from ..codec import checksum as ck
from ..errors import TransferFailed
from ..progress import Progress
from ..store import Upload
from .copystate import ObjectCopy, Part
from .md5 import PartMD5s


class Attempt:
    """``consume`` is handed each piece of the part's bytes, on whatever thread the source
    store delivers them; :meth:`check` then says whether the part came whole and
    :meth:`outcome` gives its checksum values (and its bytes, when not written as they came).

    A part written to a local file as it arrives has the MD5s of a multipart ETag hashed
    later, read back from the file (``hash_later``), so that the delivering thread only
    checksums and writes; a part held in memory hashes them as it arrives."""

    def __init__(self, c: ObjectCopy, part: Part, progress: Progress, cancel: Optional[threading.Event],
                 sink: Optional[Upload] = None, hash_later: bool = True) -> None:
        self.c, self.part, self.progress, self.cancel, self.sink = c, part, progress, cancel, sink
        self.values: Dict[str, Any] = {name: 0 for name in c.algorithms}
        self.hash_later = c.wants_etag and hash_later and sink is not None
        self.part_md5s = PartMD5s(c.etag_part_size) if c.wants_etag and not self.hash_later else None
        self.pieces: List[bytes] = []
        self.got = 0

    def consume(self, piece: "memoryview | bytes") -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise error_of(self.cancel)
        for name in self.c.algorithms:
            self.values[name] = ck.crc(name, piece, self.values[name])
        if self.part_md5s is not None:
            self.part_md5s.update(piece)
        if self.sink is not None:
            self.sink.write_piece(self.part.start + self.got, piece)
            self.progress.update(len(piece))
        else:  # a view is only valid during the call; bytes may be kept as they are
            self.pieces.append(piece if isinstance(piece, bytes) else bytes(piece))
        self.got += len(piece)

    @property
    def streamed(self) -> int:
        """Bytes written to the destination (and counted as progress) by this attempt."""
        return self.got if self.sink is not None else 0

    def check(self) -> Optional[TransferFailed]:
        if self.got != self.part.length:
            loc, start = self.c.src.location, self.part.start
            return TransferFailed(f"{loc}: short read at byte {start + self.got} "
                                  f"(expected {self.part.length} bytes from {start})")
        return None

    def outcome(self) -> Tuple[Dict[str, Any], Optional[bytes]]:
        """The part's checksum values and, when not written as it came, its bytes."""
        if self.part_md5s is not None:
            self.values["md5"] = self.part_md5s.digests()
        if self.sink is not None:
            return self.values, None
        return self.values, (b"".join(self.pieces) if len(self.pieces) != 1 else self.pieces[0])
