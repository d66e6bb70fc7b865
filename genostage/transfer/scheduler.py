"""Scheduling one batch: every part of every object shares ``concurrency`` slots.

A batch of 2,000 small objects and one 2 GiB object in parts look alike here: parts wait
in order in ``todo`` and start while slots are free; a part whose requests are over gives
its slot to the next (:meth:`Batch.release`), on whatever thread it ended, so that small
objects move with no hand-off at all. ``outstanding`` counts what has started and not yet
ended (parts, hashing, completions); :meth:`Batch.drain` waits for it to reach zero, and
on a stop cancels what is in flight.
"""
from __future__ import annotations

import collections
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ..cancel import Linked
from ..progress import Progress
from ..store import Pending
from .copystate import ObjectCopy, Part
from .md5 import SmallMD5s
from .result import TransferResult


class Batch:
    """The moving state of one :meth:`Transfer.copy_all`."""

    def __init__(self, progress: Progress, slots: int, start: Callable[["Batch", ObjectCopy, Part], None],
                 cancel: Optional[threading.Event] = None) -> None:
        # the batch's own stop token: set by its first error (or the caller's token), so that one
        # failing batch does not stop the caller's other work
        self.halt = Linked(cancel)
        self.copies: List[ObjectCopy] = []  # prepared so far, in order
        self.results: List[Optional[TransferResult]] = []  # one per copy prepared, in order
        self.errors: List[BaseException] = []
        self.progress = progress
        self.pool = ThreadPoolExecutor(slots, thread_name_prefix="genostage-xfer")
        # one thread writes the small objects fetched on an event loop (more would fight over
        # the GIL; one already overlaps file creation and MD5 with the network)
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="genostage-write")
        self.writing = 0  # fetched small objects waiting for the writer
        self.cond = threading.Condition()
        self.free = slots  # parts that may start now
        self.todo: Deque[Tuple[ObjectCopy, Part]] = collections.deque()
        self.fed = False  # every copy prepared
        self.exhausted = False  # nothing left to start
        self.outstanding = 0
        self.inflight: Dict[int, Optional[Pending]] = {}  # requests to cancel on a stop
        self.stopped = False
        self.held: List[Tuple[ObjectCopy, Dict[str, str], Optional[str]]] = []  # waiting to be published together
        self.small_md5s = SmallMD5s()
        self._start = start
        self._local = threading.local()

    # -- accounting ----------------------------------------------------------------
    def begin(self) -> None:
        with self.cond:
            self.outstanding += 1

    def end(self) -> None:
        with self.cond:
            self.outstanding -= 1
            if self.outstanding == 0:
                self.cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self.cond:
            if not self.errors:
                self.errors.append(exc)
            self.cond.notify_all()
        self.halt.set()

    def stopping(self) -> bool:
        return bool(self.errors) or self.halt.is_set()

    # -- slots ---------------------------------------------------------------------
    def add(self, c: ObjectCopy) -> None:
        with self.cond:
            self.todo.extend((c, part) for part in c.parts if not part.done)

    def finish_feeding(self) -> None:
        with self.cond:
            self.fed = True

    def pump(self) -> None:
        """Start parts, in order, while slots are free. Re-entered on the same thread (a part
        that ends at once), it only asks the outer call to go round again: no deep recursion."""
        if getattr(self._local, "pumping", False):
            self._local.again = True
            return
        self._local.pumping = True
        try:
            again = True
            while again:
                self._local.again = False
                while True:
                    with self.cond:
                        if self.stopping() or self.free == 0 or self.exhausted:
                            break
                        if not self.todo:
                            if self.fed:
                                self.exhausted = True
                                self.cond.notify_all()
                            break
                        item = self.todo.popleft()
                        self.free -= 1
                        self.outstanding += 1
                    self._start(self, *item)
                again = self._local.again
        finally:
            self._local.pumping = False

    def release(self) -> None:
        """A part's requests are over: its slot goes to the next part."""
        with self.cond:
            self.free += 1
        self.pump()

    # -- requests in flight --------------------------------------------------------
    def track(self, key: int) -> None:
        self.inflight[key] = None

    def tracking(self, key: int, pending: Pending) -> None:
        if key in self.inflight:
            self.inflight[key] = pending

    def untrack(self, key: int) -> None:
        self.inflight.pop(key, None)

    def drain(self) -> None:
        """Wait for every part and completion; on a stop, cancel the requests in flight."""
        with self.cond:
            while self.outstanding or not (self.exhausted or self.stopping()):
                self.cond.wait(0.2)
                if self.stopping() and not self.stopped:
                    self.stopped = True
                    why = self.errors[0] if self.errors else self.halt.error()
                    for pending in list(self.inflight.values()):
                        if pending is not None:
                            pending.cancel(why)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)
        self.writer.shutdown(wait=True)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.pool.submit(fn, *args)
