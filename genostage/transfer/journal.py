"""Resuming: what an earlier attempt of the same job left on disk, proven before it is used.

- :class:`PartJournal`: a download into a job's ``.partial`` directory writes its bytes into
  a data file there and appends one line per finished part (its checksums). A retried job
  (same ``AWS_BATCH_JOB_ID``, same scratch root) finds both, reads each listed part back
  from the data file and keeps only the parts whose bytes still give the journalled
  CRC64NVME: one flipped byte on disk means that part is fetched again.
- :class:`UploadJournal`: every multipart upload a job starts is noted until it is completed
  or aborted, so an attempt killed mid stage-out (SIGKILL) leaves its next attempt a list of
  uploads to abort.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import mmap
import os
import threading
import uuid
from typing import Any, Dict, List, Optional, Tuple

from ..codec import checksum as ck
from .copystate import ObjectCopy, Part

log = logging.getLogger("genostage.transfer")


def _range_crcs(path: str, start: int, length: int, names: List[str]) -> Dict[str, int]:
    """CRCs of bytes ``[start, start+length)`` of ``path`` (None-safe: a short file gives {})."""
    if length == 0:
        return {name: 0 for name in names}
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size < start + length:
            return {}
        base = start - start % mmap.ALLOCATIONGRANULARITY
        m = mmap.mmap(fd, start + length - base, offset=base, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    view = memoryview(m)
    try:
        span = view[start - base:start - base + length]
        out = {name: ck.crc(name, span) for name in names}
        span.release()
        return out
    finally:
        view.release()
        m.close()


class PartJournal:
    """The journal and data file of one resumable download (see the module docstring)."""

    def __init__(self, directory: str, c: ObjectCopy) -> None:
        ident = f"{c.src.location}|{c.src.etag}|{c.src.version_id}|{c.src.size}|{c.part_size}"
        name = hashlib.sha1(ident.encode()).hexdigest()[:24]
        self.data_path = os.path.join(directory, name + ".data")
        self.path = os.path.join(directory, name + ".journal")
        self._lock = threading.Lock()

    def load(self, c: ObjectCopy) -> None:
        """Mark the parts an earlier attempt finished as done, each proven by reading it back."""
        if not (os.path.exists(self.path) and os.path.exists(self.data_path)):
            return
        entries: List[Dict[str, Any]] = []
        with open(self.path) as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                    part = c.parts[int(entry["index"])]
                except (ValueError, KeyError, IndexError, TypeError):
                    break  # a torn last line: ignore it and what follows
                entries.append(entry)
        rejected = 0
        for entry in entries:
            part = c.parts[int(entry["index"])]
            values = {k: ([bytes.fromhex(d) for d in v] if k == "md5" else v) for k, v in entry["values"].items()}
            if part.done:
                continue
            if not self._proven(part, values, c.algorithms):
                rejected += 1
                continue
            part.values = values
            part.done = part.resumed = True
            c.remaining -= 1
            c.resumed += 1
        if rejected:
            log.warning("%s: %d part(s) on disk no longer match their checksums; fetching them again",
                        c.src.location, rejected)
        if c.resumed:
            log.info("%s: resuming, %d of %d parts already on disk (read back and verified)",
                     c.src.location, c.resumed, len(c.parts))

    def _proven(self, part: Part, values: Dict[str, Any], names: List[str]) -> bool:
        if any(name not in values for name in names):
            return False
        got = _range_crcs(self.data_path, part.start, part.length, names)
        return bool(got) and all(got[name] == values[name] for name in names)

    def record(self, part: Part) -> None:
        entry = {"index": part.index,
                 "values": {k: ([d.hex() for d in v] if k == "md5" else v) for k, v in part.values.items()}}
        with self._lock:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(entry) + "\n")

    def remove(self) -> None:
        """The copy is complete (its data file was renamed into place): forget it."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class UploadJournal:
    """Multipart uploads started and not yet completed or aborted (see the module docstring).
    Each process appends to a file of its own (``uploads-<id>.jsonl``): ``+`` when an upload
    starts, ``-`` when it ends."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, f"uploads-{uuid.uuid4().hex[:12]}.jsonl")
        self._lock = threading.Lock()

    def _append(self, sign: str, entry: Dict[str, str]) -> None:
        with self._lock:
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"op": sign, **entry}) + "\n")

    def started(self, entry: Optional[Dict[str, str]]) -> None:
        if entry:
            self._append("+", entry)

    def ended(self, entry: Optional[Dict[str, str]]) -> None:
        if entry:
            self._append("-", entry)


def leftover_uploads(directory: str) -> List[Dict[str, str]]:
    """The uploads that the journals in ``directory`` list as started and never ended."""
    open_: Dict[Tuple[str, str, str], Dict[str, str]] = {}
    for path in sorted(glob.glob(os.path.join(directory, "uploads-*.jsonl"))):
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                entry = json.loads(line)
                key = (entry["bucket"], entry["key"], entry["upload_id"])
            except (ValueError, KeyError, TypeError):
                continue
            if entry.get("op") == "+":
                open_[key] = {"bucket": key[0], "key": key[1], "upload_id": key[2]}
            else:
                open_.pop(key, None)
    return list(open_.values())


def clear_upload_journals(directory: str) -> None:
    for path in glob.glob(os.path.join(directory, "uploads-*.jsonl")):
        try:
            os.unlink(path)
        except OSError:
            pass
