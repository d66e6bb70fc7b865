"""Run a producer on a background thread and consume what it emits as an iterator.

The queue between them is bounded (``depth``), errors raised by the producer are
re-raised in the consumer, and a consumer that stops early (``break``, an
exception, ``close()``) stops the producer at its next ``emit`` (which raises
:class:`Stopped` there). The thread starts when the first item is asked for.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Tuple, TypeVar

T = TypeVar("T")
log = logging.getLogger("genostage.background")

#: How long a consumer that stops waits for the producer to notice; a producer blocked in a
#: read that never returns (a stalled socket without a timeout) is left behind (daemon thread)
#: rather than hanging the consumer and, with it, a SIGTERM's cleanup.
JOIN_TIMEOUT = 30.0

_ITEM, _END, _ERROR = 0, 1, 2


class Stopped(BaseException):
    """Raised inside the producer's ``emit`` when the consumer went away.

    Not an ``Exception`` (as ``GeneratorExit`` is not): a producer that catches ``Exception``
    around ``emit`` to note a problem and carry on cannot swallow it and run on for ever."""


def background(produce: Callable[[Callable[[T], None]], None], depth: int = 1,
               name: str = "genostage-background", join_timeout: float = JOIN_TIMEOUT) -> Iterator[T]:
    """Iterate over what ``produce(emit)`` emits, while it runs on its own thread."""
    q: "queue.Queue[Tuple[int, Any]]" = queue.Queue(depth)
    stop = threading.Event()

    def emit(item: T) -> None:
        while not stop.is_set():
            try:
                q.put((_ITEM, item), timeout=0.1)
                return
            except queue.Full:
                continue
        raise Stopped()

    def run() -> None:
        try:
            produce(emit)
            q.put((_END, None))
        except Stopped:
            pass
        except BaseException as exc:  # handed to the consumer
            q.put((_ERROR, exc))

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == _ITEM:
                yield item
            elif kind == _END:
                return
            else:
                raise item
    finally:
        stop.set()
        _drain_until_done(thread, q, join_timeout)


def _drain_until_done(thread: threading.Thread, q: "queue.Queue[Tuple[int, Any]]", timeout: float) -> None:
    """Empty ``q`` (so a producer blocked in ``emit`` sees the stop) until ``thread`` ends, for at
    most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while thread.is_alive():
        if time.monotonic() >= deadline:
            log.warning("%s did not stop within %.0f s; left behind", thread.name, timeout)
            return
        try:
            q.get(timeout=0.05)
        except queue.Empty:
            pass


def prefetch(items: Iterable[T], depth: int = 3, name: str = "genostage-read") -> Iterator[T]:
    """Run the iterator ``items`` ahead on a background thread."""
    def produce(emit: Callable[[T], None]) -> None:
        for item in items:
            emit(item)
    return background(produce, depth, name)
