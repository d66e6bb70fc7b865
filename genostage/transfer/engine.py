"""Parallel, multipart, verified, atomic copies between stores.

The flow of one object, top to bottom in this file:

1. **prepare** (:mod:`.prepare`): what its bytes must match, its part sizes, the parts an
   earlier attempt left on disk (:mod:`.journal`), and the destination it writes;
2. **fetch** each part (:meth:`Transfer._fetch`): a read from the source store, whose pieces
   an :class:`~.attempt.Attempt` checksums (CRC64NVME always, plus what the source keeps)
   and, for a destination that takes pieces (a local file), writes at their offset as they
   arrive; a part whose read fails in a way a retry may cure is fetched again under the one
   :class:`~genostage.retry.RetryPolicy`;
3. **deliver** a part held in memory to the destination (:meth:`Transfer._deliver`): a
   part of a multipart upload, a single PUT, or a small local file written by the writer
   thread;
4. **finish** once every part is in (:meth:`Transfer._finish`): the part values combined into
   the whole-object value and compared with the source's (:mod:`.verify`); a mismatch fetches
   every part again and rewrites those whose bytes differ; then the destination is published
   (the upload completed, the temporary file renamed) and proven (:func:`.verify.check_destination`).

Scheduling (:mod:`.scheduler`): every part of every object of a batch shares
``concurrency`` slots. A store says how its callbacks may be used
(``callbacks_must_not_block``: S3's event loop): work that blocks (completing an upload,
hashing an MD5 from disk, creating local files) then goes to the batch's pool or writer.

``copy_all(..., together=True)`` publishes all objects of a batch or none: multipart uploads
are completed only once every part of every object is in, and if anything fails or a stop
comes before the last is published, what this batch published is removed again.
"""
from __future__ import annotations

import collections.abc
import logging
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..codec import checksum as ck
from ..config import TransferConfig
from ..errors import ChecksumMismatch, TransferFailed
from ..fsutil import no_space
from ..location import Location
from ..progress import Progress
from ..store import ObjectInfo, Store, Stores, UploadLost
from .attempt import Attempt
from .copystate import ALWAYS, ObjectCopy, Part
from .journal import UploadJournal
from .md5 import file_part_md5s
from .prepare import prepare
from .result import TransferResult
from .scheduler import Batch
from .verify import actual, check_destination, check_source

log = logging.getLogger("genostage.transfer")

WRITE_AHEAD = 4  # x concurrency: small objects fetched ahead of the writer


class _Space:
    """Free space on the local file systems a batch writes to, claimed object by object, so a
    copy that cannot fit fails before its bytes move (``InsufficientSpace``)."""

    def __init__(self) -> None:
        self._free: Dict[Any, int] = {}

    def claim(self, store: Store, dest: Location, size: int) -> None:
        found = store.free_space(dest)
        if found is None:
            return
        fs, free = found
        left = self._free.setdefault(fs, free)
        if size > left:
            raise no_space(size, left, str(dest))
        self._free[fs] = left - size


class Transfer:
    """Copies batches of objects between stores, verified and atomic.

    ``cancel`` (a :class:`genostage.cancel.Cancel` or any ``threading.Event``) stops every
    part between pieces and cancels the requests in flight; uploads are aborted and temporary
    files removed before ``copy_all`` raises what the token stands for (``Interrupted``).
    ``partial_dir`` makes downloads resumable (:mod:`.journal`) and notes the multipart
    uploads started, so a later attempt can abort those a killed one left behind.
    """

    def __init__(self, stores: Stores, config: Optional[TransferConfig] = None,
                 cancel: Optional[threading.Event] = None, partial_dir: Optional[str] = None,
                 show_progress: bool = True, resend: bool = True) -> None:
        self.stores = stores
        self.config = config or stores.config
        self.cancel = cancel or threading.Event()
        self.partial_dir = partial_dir
        self.show_progress = show_progress
        self.resend = resend  # an upload the destination proves wrong is sent once more
        self.retry = self.config.retry_policy()
        self.uploads = UploadJournal(partial_dir) if partial_dir else None

    # -- public --------------------------------------------------------------
    def copy_all(self, items: Iterable[Tuple[ObjectInfo, Location]], label: str = "transfer",
                 together: bool = False) -> List[TransferResult]:
        """Copy every ``(source info, destination)`` pair; all succeed or the first error is raised.

        ``items`` may be lazy (:func:`genostage.transfer.expand_lazily`: a listing read page by
        page): the first copies start while later pairs are still coming, and the progress
        total grows with them. ``together``: publish all or none (see the module docstring)."""
        listed = items if isinstance(items, collections.abc.Sized) else None
        if listed is not None and not len(listed):
            return []
        total = sum(src.size for src, _ in items) if listed is not None else None
        progress = Progress(total, label, enabled=self.show_progress,
                            files=len(listed) if listed is not None else None)
        b = Batch(progress, self.config.concurrency, self._start, self.cancel)
        try:
            self._schedule(b, items, grow=listed is None, together=together)
            self._drain(b)
            if together and not b.errors and not b.halt.is_set():
                self._publish_held(b)
        except BaseException:  # an interrupt while waiting: stop every part, then leave nothing half-done
            b.halt.set()
            self._drain(b)
            self._cleanup(b, together)
            raise
        finally:
            b.shutdown()
            progress.close()
        if b.errors or b.halt.is_set():
            self._cleanup(b, together)
            raise b.errors[0] if b.errors else b.halt.error()
        return [r for r in b.results if r is not None]

    def copy(self, src: ObjectInfo, dest: Location, label: str = "transfer") -> TransferResult:
        return self.copy_all([(src, dest)], label)[0]

    # -- scheduling ------------------------------------------------------------
    def _schedule(self, b: Batch, items: Iterable[Tuple[ObjectInfo, Location]], grow: bool,
                  together: bool) -> None:
        """Prepare the copies in order, starting parts as soon as they are ready. Preparing
        may ask the stores (a HEAD for a large object's checksum, CreateMultipartUpload), so
        it stays on this thread, overlapped with the transfers."""
        space = _Space()
        try:
            for n, (src, dest) in enumerate(items):
                if b.stopping():
                    break
                if grow:
                    b.progress.grow(src.size, files=1)
                space.claim(self.stores.for_location(dest), dest, src.size)
                c = prepare(self.stores, self.config, src, dest, self.partial_dir)
                c.n, c.together = n, together
                with b.cond:
                    b.copies.append(c)
                    b.results.append(None)
                if self.uploads is not None and c.upload is not None:
                    self.uploads.started(c.upload.journal_entry)
                if c.remaining == 0:  # every part resumed from an earlier attempt
                    b.begin()
                    b.submit(self._finish_task, b, c)
                    continue
                b.add(c)
                b.pump()
        except BaseException as exc:
            b.fail(exc)
        b.progress.settle()
        b.finish_feeding()
        b.pump()

    def _drain(self, b: Batch) -> None:
        b.drain()

    # -- fetching ----------------------------------------------------------------
    def _start(self, b: Batch, c: ObjectCopy, part: Part) -> None:
        part.tries, part.first_try = 0, time.monotonic()
        self._fetch(b, c, part)

    def _again(self, b: Batch, c: ObjectCopy, part: Part, err: BaseException) -> bool:
        """Fetch ``part`` again after ``err``, later, if the retry policy allows; False otherwise."""
        delay = self.retry.delay(part.tries, time.monotonic() - part.first_try) \
            if isinstance(err, TransferFailed) and not b.stopping() else None
        if delay is None:
            return False
        log.warning("%s: part %d: %s; again in %.1f s", c.src.location, part.index + 1, err, delay)
        timer = threading.Timer(delay, self._fetch, (b, c, part))
        timer.daemon = True
        timer.start()
        return True

    def _fetch(self, b: Batch, c: ObjectCopy, part: Part) -> None:
        """Read one part, retrying what a retry may cure; every path ends in
        :meth:`_fetched` or :meth:`_part_failed`."""
        part.tries += 1
        store = self.stores.for_location(c.src.location)
        att = Attempt(c, part, b.progress, b.halt, sink=c.upload if c.streams else None)
        key = id(att)

        def done(err: Optional[BaseException]) -> None:
            b.untrack(key)
            if err is None:
                err = att.check()
            if err is None:
                try:
                    values, data = att.outcome()
                except BaseException as exc:
                    self._part_failed(b, exc)
                    return
                self._fetched(b, c, part, values, data, att.hash_later, not store.callbacks_must_not_block)
                return
            b.progress.update(-att.streamed)
            if not self._again(b, c, part, err):
                self._part_failed(b, err)

        if part.length == 0:
            done(None)
            return
        b.track(key)
        b.tracking(key, store.read_async(c.src.location, part.start, part.length, att.consume, done,
                                         etag=c.src.etag))

    def _fetch_blocking(self, c: ObjectCopy, part: Part, sink: Any,
                        halt: threading.Event) -> Tuple[Dict[str, Any], Optional[bytes]]:
        """Read one part and wait (the repair path), retrying what a retry may cure."""
        store = self.stores.for_location(c.src.location)
        quiet = Progress(None, "", enabled=False)
        first, attempt = time.monotonic(), 1
        while True:
            att = Attempt(c, part, quiet, halt, sink=sink, hash_later=False)
            try:
                store.read_into(c.src.location, part.start, part.length, att.consume, etag=c.src.etag,
                                cancel=halt)
                err = att.check()
                if err is not None:
                    raise err
                return att.outcome()
            except TransferFailed as exc:
                delay = self.retry.delay(attempt, time.monotonic() - first)
                if delay is None:
                    raise
                log.warning("%s: part %d: %s; again in %.1f s", c.src.location, part.index + 1, exc, delay)
                time.sleep(delay)
                attempt += 1

    def _fetched(self, b: Batch, c: ObjectCopy, part: Part, values: Dict[str, Any], data: Optional[bytes],
                 hash_later: bool, may_block: bool) -> None:
        """A part's bytes are in: written already (streamed), or to be delivered."""
        part.values = values
        if data is None:
            if hash_later:  # the network is done with it: the slot goes on while the MD5s are read back
                b.release()
                b.submit(self._hash_task, b, c, part)
                return
            self._part_done(b, c, part, may_block)
            return
        dest = self.stores.for_location(c.dest)
        if c.held and dest.writes_block and not may_block:
            # a small object for a local file, fetched on an event loop: the writer creates it
            with b.cond:
                early = b.writing < WRITE_AHEAD * self.config.concurrency  # memory stays bounded
                b.writing += 1
            if c.md5 is not None:
                b.small_md5s.queue(id(c), data)
            if early:
                b.release()
            b.writer.submit(self._deliver, b, c, part, data, early, True)
            return
        if c.md5 is not None and not c.held and not may_block:
            b.submit(self._deliver, b, c, part, data)  # hashing a part in order may take long
            return
        self._deliver(b, c, part, data)

    def _hash_task(self, b: Batch, c: ObjectCopy, part: Part) -> None:
        """The upload-part MD5s of a streamed part, read back from the file (for a multipart ETag)."""
        try:
            assert c.upload is not None and c.upload.temp_path is not None
            part.values["md5"] = file_part_md5s(c.upload.temp_path, part.start, part.length, c.etag_part_size)
        except BaseException as exc:
            self._part_failed(b, exc, released=True)
            return
        self._part_done(b, c, part, True, released=True)

    # -- delivering --------------------------------------------------------------
    def _deliver(self, b: Batch, c: ObjectCopy, part: Part, data: bytes, released: bool = False,
                 queued: bool = False) -> None:
        """Send (or write) a part held in memory to the destination. A small object whose
        write publishes it (a PUT) is checked against the source first: bytes that came
        corrupted are fetched again, never published."""
        if queued:
            with b.cond:
                b.writing -= 1
        if b.stopping():  # another copy failed, or a stop: this one goes no further
            self._part_abandoned(b, released)
            return
        dest = self.stores.for_location(c.dest)
        try:
            if c.md5 is not None:
                if c.held:
                    c.md5.set_digest(b.small_md5s.digest(id(c), data).hex())
                else:
                    c.md5.offer(part.index, data)
            if c.upload is None:
                c.upload = dest.begin_upload(c.dest, c.src.size, 1)
            if c.upload.publishes_on_write:
                check_source(c, actual(c))
            sums = {ALWAYS: ck.to_wire(ALWAYS, part.values[ALWAYS])}
        except ChecksumMismatch as exc:
            if c.md5 is not None:
                c.md5.reset()
            if not self._again(b, c, part, TransferFailed(str(exc))):
                self._part_failed(b, exc, released)
            elif not released:
                b.release()
            return
        except BaseException as exc:
            self._part_failed(b, exc, released)
            return

        size, key = len(data), id(data)  # the callback must not hold the part's bytes (see store.s3._Call.end)

        def written(err: Optional[BaseException]) -> None:
            b.untrack(key)
            if isinstance(err, UploadLost) and self.resend:
                c.lost = True  # the rest of its parts go on (and fail the same way); sent again at the end
                log.warning("%s; the object will be sent again", err)
                err = None
            if err is not None:
                self._part_failed(b, err, released)
                return
            b.progress.update(size)
            if c.upload is not None and c.upload.publishes_on_write:
                c.published = True
            self._part_done(b, c, part, not dest.callbacks_must_not_block, released)

        b.track(key)
        if c.upload.publishes_on_write:
            c.sent = True  # from here on the object may be there, even if the answer never comes
        b.tracking(key, c.upload.write_part_async(part.index + 1, part.start, data, sums, written))

    # -- parts done ----------------------------------------------------------------
    def _part_done(self, b: Batch, c: ObjectCopy, part: Part, may_block: bool, released: bool = False) -> None:
        try:
            part.done = True
            if c.journal is not None:
                c.journal.record(part)
        except BaseException as exc:
            self._part_failed(b, exc, released)
            return
        if c.md5 is not None and c.streams:
            assert c.upload is not None and c.upload.temp_path is not None
            c.md5.on_disk(part.index, c.upload.temp_path)
            b.begin()
            b.submit(self._md5_task, b, c)
        if c.part_done():
            b.begin()
            if may_block and (c.held or c.md5 is None):
                self._finish_task(b, c)
            else:
                b.submit(self._finish_task, b, c)
        b.end()
        if not released:
            b.release()

    def _part_failed(self, b: Batch, exc: BaseException, released: bool = False) -> None:
        b.fail(exc)
        self._part_abandoned(b, released)

    def _part_abandoned(self, b: Batch, released: bool = False) -> None:
        b.end()
        if not released:
            b.release()

    def _md5_task(self, b: Batch, c: ObjectCopy) -> None:
        """A streamed part is on disk: the whole-object MD5 takes what is next in order."""
        try:
            assert c.md5 is not None
            c.md5.drain()
        except BaseException as exc:
            b.fail(exc)
        b.end()

    # -- finishing ---------------------------------------------------------------
    def _finish_task(self, b: Batch, c: ObjectCopy) -> None:
        try:
            if c.lost:
                if self.uploads is not None and c.upload is not None:
                    self.uploads.ended(c.upload.journal_entry)
                b.results[c.n] = self._resend(c)
                b.progress.file_done()
                c.published = True
            else:
                self._verify_and_publish(b, c)
        except BaseException as exc:
            b.fail(exc)
        b.end()

    def _verify_and_publish(self, b: Batch, c: ObjectCopy) -> None:
        """Check the copy against its source; publish it now, or with its batch (``together``)."""
        values, verified = self._verified(c, b)
        if c.together:
            with b.cond:
                b.held.append((c, values, verified))
        else:
            b.results[c.n] = self._publish(c, values, verified, b)

    def _verified(self, c: ObjectCopy, b: Batch) -> Tuple[Dict[str, str], Optional[str]]:
        """The copy's values, checked against the source's (repaired when they differ)."""
        if c.md5 is not None and not c.held:
            with b.progress.phase("verifying MD5"):
                values = actual(c)
        else:
            values = actual(c)
        try:
            return values, check_source(c, values)
        except ChecksumMismatch:
            with b.progress.phase("fetching corrupted parts again"):
                repaired = self._repair(c, b)
            if not repaired:
                raise
            values = actual(c)
            return values, check_source(c, values)

    def _publish(self, c: ObjectCopy, values: Dict[str, str], verified: Optional[str], b: Batch) -> TransferResult:
        """Complete the destination and prove it; an upload the store proves wrong is sent
        once more from the start (the source is read again)."""
        dest = self.stores.for_location(c.dest)
        assert c.upload is not None
        try:
            if c.upload.completes_quickly:
                info = c.upload.complete({ALWAYS: values[ALWAYS]})
                c.published = True
                proof = check_destination(dest, self.config, c, info, values)
            else:
                with b.progress.phase("completing upload"):
                    info = c.upload.complete({ALWAYS: values[ALWAYS]})
                    c.published = True
                    proof = check_destination(dest, self.config, c, info, values)
        except ChecksumMismatch as exc:
            c.published = False
            if not self.resend or b.halt.is_set():
                raise
            log.warning("%s; sending it again", exc)
            return self._resend(c)
        finally:
            if self.uploads is not None:
                self.uploads.ended(c.upload.journal_entry)
        if c.journal is not None:
            c.journal.remove()
        b.progress.file_done()
        return TransferResult(
            source=str(c.src.location), destination=str(c.dest), size=c.src.size, etag=c.src.etag,
            version_id=c.src.version_id, checksums=values, verified=verified or proof or "size",
            seconds=round(time.monotonic() - c.started, 3), parts=len(c.parts),
            resumed_parts=c.resumed, repaired_parts=c.repaired, destination_etag=info.etag)

    def _resend(self, c: ObjectCopy) -> TransferResult:
        """The whole object again, in a batch of its own (on this pool thread)."""
        again = Transfer(self.stores, self.config, self.cancel, show_progress=False, resend=False)
        result = again.copy(c.src, c.dest, label=f"again {c.dest.name}")
        result.repaired_parts = len(c.parts)
        return result

    def _repair(self, c: ObjectCopy, b: Batch) -> bool:
        """Fetch every part again; rewrite those whose bytes differ; True once the whole value matches."""
        upload = c.upload
        if upload is None or not upload.can_rewrite:
            return False
        for _ in range(2):
            changed = 0
            if c.md5 is not None:
                c.md5.reset()
            for part in c.parts:
                values, data = self._fetch_blocking(c, part, upload if c.streams else None, b.halt)
                if c.md5 is not None:
                    if data is not None:
                        c.md5.offer(part.index, data)
                    else:
                        assert upload.temp_path is not None
                        c.md5.on_disk(part.index, upload.temp_path)
                if values != part.values:
                    if data is not None:
                        upload.write_part(part.index + 1, part.start, data, {ALWAYS: ck.to_wire(ALWAYS, values[ALWAYS])})
                    part.values = values
                    changed += 1
            c.repaired += changed
            log.warning("%s: checksum mismatch; fetched again, %d part(s) differed", c.src.location, changed)
            if not changed:
                return False  # the same bytes twice: the source itself does not match its checksum
            try:
                check_source(c, actual(c))
                return True
            except ChecksumMismatch:
                continue
        return False

    def _publish_held(self, b: Batch) -> None:
        """``together``: every object's parts are in; publish them all (on the pool), or none."""
        for c, values, verified in b.held:
            b.begin()
            b.submit(self._publish_task, b, c, values, verified)
        self._drain(b)

    def _publish_task(self, b: Batch, c: ObjectCopy, values: Dict[str, str], verified: Optional[str]) -> None:
        try:
            if b.stopping():
                return
            b.results[c.n] = self._publish(c, values, verified, b)
        except BaseException as exc:
            b.fail(exc)
        finally:
            b.end()

    # -- cleaning up ---------------------------------------------------------------
    def _cleanup(self, b: Batch, together: bool) -> None:
        """Leave nothing half-done: abort the uploads that did not complete (a journalled
        download keeps its data for a resume); with ``together``, remove what was published."""
        for c in b.copies:
            up = c.upload
            if up is None:
                continue
            published = c.published
            try:
                if together and (published or c.sent):
                    self.stores.for_location(c.dest).delete(c.dest)
                    log.info("%s: removed (the batch it belongs to did not complete)", c.dest)
                elif not published:
                    if c.journal is not None:
                        up.keep()
                    else:
                        up.abort()
            except Exception as exc:  # best effort: the first error is what the caller hears about
                log.warning("%s: could not clean up: %s", c.dest, exc)
            finally:
                if self.uploads is not None and not published:
                    self.uploads.ended(up.journal_entry)
            if not published:
                c.upload = None
