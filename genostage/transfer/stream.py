"""Streams of unknown size uploaded as they come: a tool's streamed output (a named pipe in
scratch), or ``genostage cp - s3://...`` (stdin).

:class:`StreamUpload` reads the stream in parts of ``part_size`` and sends each as a part of
a multipart upload while the next is read (at most ``concurrency`` parts in flight, so the
memory is ``concurrency x part_size``), each part checksummed on the way (its CRC64NVME, its
MD5 for ``Content-MD5``, and its ETag checked against that MD5 on receipt). Nothing is
published until :meth:`StreamUpload.commit`: the whole object then ends as one object with a
full-object CRC64NVME, proven by the store's answer as every upload is (or read back). A
failing tool, a signal or a failed part ends in :meth:`StreamUpload.abort`: the multipart
upload is aborted, nothing is published. A local destination is written under a temporary
name and renamed on commit.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Dict, List, Optional, Set

from ..cancel import error_of
from ..codec import checksum as ck
from ..config import TransferConfig
from ..errors import TransferFailed
from ..fsutil import os_error
from ..location import Location
from ..progress import Progress
from ..store import ObjectInfo, Stores, Upload
from ..store.base import Pending
from .copystate import ALWAYS
from .result import TransferResult
from .verify import read_back

log = logging.getLogger("genostage.transfer")


class StreamUpload:
    """See the module docstring. ``fd`` is read to its end by :meth:`send`."""

    def __init__(self, stores: Stores, dest: Location, config: Optional[TransferConfig] = None,
                 cancel: Optional[threading.Event] = None, show_progress: bool = True, label: str = "") -> None:
        self.stores = stores
        self.dest = dest
        self.config = config or stores.config
        self.cancel = cancel or threading.Event()
        self.store = stores.for_location(dest)
        self.progress = Progress(None, label or f"stream to {dest.name}", enabled=show_progress)
        self.upload: Optional[Upload] = None
        self.size = 0
        self.crc = 0
        self.parts = 0
        self.started = time.monotonic()
        self._slots = threading.Semaphore(self.config.concurrency)
        self._errors: List[BaseException] = []
        self._failed = threading.Event()  # a part failed: reading stops (the job's token is not ours to set)
        self._inflight = 0
        self._calls: Dict[int, Pending] = {}  # part number -> its request in flight
        self._ended: Set[int] = set()  # parts whose done() came (maybe before their request was noted)
        self._idle = threading.Condition()
        self.info: Optional[ObjectInfo] = None

    def _begin(self) -> Upload:
        # an object store gets a multipart upload (the size is not known in advance); a local
        # file its temporary name
        return self.store.begin_upload(self.dest, 0, 2)

    def send(self, fd: int) -> None:
        """Read ``fd`` to its end, sending its parts; raises the first failure (after which
        :meth:`abort` leaves nothing)."""
        self.upload = self._begin()
        size = self.config.part_size
        number = 0
        try:
            while True:
                data = self._read(fd, size)
                if self._errors:
                    raise self._errors[0]
                if not data and number:
                    break
                number += 1
                self._send_part(number, data)
                if len(data) < size:
                    break
            self._wait()
        finally:
            self.progress.close()
        if self._errors:
            raise self._errors[0]
        self.parts = number

    def _read(self, fd: int, size: int) -> bytes:
        chunks: List[bytes] = []
        got = 0
        while got < size:
            self._check()
            try:
                piece = os.read(fd, min(size - got, 1 << 20))
            except OSError as exc:
                raise os_error(exc, f"the stream for {self.dest}") from None
            if not piece:
                break
            chunks.append(piece)
            got += len(piece)
        return b"".join(chunks)

    def _check(self) -> None:
        """Raise the first part's failure, or the stop of the caller's token."""
        if self._failed.is_set():
            raise self._errors[0]
        if self.cancel.is_set():
            raise error_of(self.cancel)

    def _send_part(self, number: int, data: bytes) -> None:
        crc = ck.crc(ALWAYS, data)
        self.crc = ck.combine(ALWAYS, self.crc, crc, len(data)) if number > 1 else crc
        offset = self.size
        self.size += len(data)
        while not self._slots.acquire(timeout=0.2):
            self._check()
        with self._idle:
            self._inflight += 1

        def done(err: Optional[BaseException]) -> None:
            if err is not None:
                self._errors.append(err)
                self._failed.set()
            else:
                self.progress.update(len(data))
            self._slots.release()
            with self._idle:
                self._inflight -= 1
                self._calls.pop(number, None)
                self._ended.add(number)
                self._idle.notify_all()

        assert self.upload is not None
        if self.upload.accepts_pieces:
            try:
                self.upload.write_piece(offset, data)
            except BaseException as exc:
                done(exc)
                raise
            done(None)
            return
        call = self.upload.write_part_async(number, offset, data, {ALWAYS: ck.to_wire(ALWAYS, crc)}, done)
        with self._idle:
            if number not in self._ended:
                self._calls[number] = call

    def _wait(self) -> None:
        """Every part in flight answered; a stop (a failed part, the caller's token, :meth:`stop`)
        cancels the ones still waiting for their answer, so that a stalled request never holds
        the job up (the upload is aborted next)."""
        with self._idle:
            while self._inflight:
                if self._failed.is_set() or self.cancel.is_set():
                    self._idle.release()  # a cancel may report on this thread (its done() takes the lock)
                    try:
                        self._cancel_in_flight(self._errors[0] if self._errors else error_of(self.cancel))
                    finally:
                        self._idle.acquire()
                self._idle.wait(0.2)

    def stop(self, reason: BaseException) -> None:
        """End :meth:`send` wherever it is (the tool failed or the job stops): parts in flight
        are cancelled; :meth:`abort` then leaves nothing."""
        with self._idle:
            if not self._errors:
                self._errors.append(reason)
            self._failed.set()
        self._cancel_in_flight(reason)

    def _cancel_in_flight(self, reason: BaseException) -> None:
        """Cancel the requests of the parts still waiting for their answer (outside the lock)."""
        with self._idle:
            calls = list(self._calls.values())
        for call in calls:
            call.cancel(reason)

    @property
    def checksum(self) -> str:
        return ck.to_wire(ALWAYS, self.crc)

    def commit(self) -> TransferResult:
        """Publish the object (its full-object CRC64NVME checked by the store, or read back)."""
        assert self.upload is not None
        info = self.upload.complete({ALWAYS: self.checksum})
        self.info = info
        if info.size != self.size:
            self.store.delete(self.dest)
            raise TransferFailed(f"{self.dest}: the store holds {info.size} bytes, {self.size} were sent")
        verified = self._prove(info)
        return TransferResult(source="(stream)", destination=str(self.dest), size=self.size, etag=None,
                              version_id=info.version_id, checksums={ALWAYS: self.checksum}, verified=verified,
                              seconds=round(time.monotonic() - self.started, 3), parts=max(1, self.parts),
                              destination_etag=info.etag)

    def _prove(self, info: ObjectInfo) -> str:
        if self.store.writes_are_local:
            return f"{ALWAYS} (as written)"
        reported = info.checksums.get(ALWAYS)
        if reported and "-" not in reported:
            if reported != self.checksum:
                self.store.delete(self.dest)
                raise TransferFailed(f"{self.dest}: the store reports CRC64NVME {reported}, the stream gave "
                                     f"{self.checksum}")
            return ALWAYS
        if self.upload is not None and self.upload.proof:
            return self.upload.proof
        from .copystate import ObjectCopy  # a read-back check needs only where and how long

        c = ObjectCopy(ObjectInfo(self.dest, self.size), self.dest, max(self.size, 1), None)
        read_back(self.store, c, self.checksum)
        return f"{ALWAYS} (read back)"

    def abort(self) -> None:
        if self.upload is not None:
            self.upload.abort()
            self.upload = None
