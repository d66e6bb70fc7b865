"""background()/prefetch(): a producer on its own thread, consumed as an iterator; order kept,
queue bounded, errors handed over, and a consumer that stops early stops the producer."""
from __future__ import annotations

import threading
import time
from typing import Callable, List

import pytest

from genostage.background import Stopped, background, prefetch


def _threads(name: str) -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def test_every_item_in_order_on_another_thread():
    seen_on = []

    def produce(emit: Callable[[int], None]) -> None:
        seen_on.append(threading.current_thread().name)
        for i in range(1000):
            emit(i)

    assert list(background(produce, depth=4, name="t-order")) == list(range(1000))
    assert seen_on == ["t-order"] and not _threads("t-order")


def test_the_queue_is_bounded():
    emitted = []

    def produce(emit: Callable[[int], None]) -> None:
        for i in range(100):
            emitted.append(i)
            emit(i)

    it = background(produce, depth=2, name="t-bound")
    assert next(it) == 0
    time.sleep(0.3)  # let the producer run as far as it can
    assert len(emitted) <= 1 + 2 + 1  # one taken, two queued, one blocked in emit
    assert list(it) == list(range(1, 100))


def test_a_producer_error_is_raised_in_the_consumer_after_the_items_before_it():
    def produce(emit: Callable[[int], None]) -> None:
        emit(1)
        emit(2)
        raise ValueError("line 4812: quality and sequence lengths differ")

    got = []
    with pytest.raises(ValueError, match="line 4812") as info:
        for item in background(produce, name="t-error"):
            got.append(item)
    assert got == [1, 2]
    assert info.traceback[-1].name == "produce"  # the producer's own traceback comes along
    assert not _threads("t-error")


def test_base_exceptions_of_the_producer_reach_the_consumer():
    def produce(emit: Callable[[int], None]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(background(produce, name="t-kbd"))


@pytest.mark.parametrize("how", ["break", "raise", "close"])
def test_a_consumer_that_stops_early_stops_the_producer(how):
    state = {"emitted": 0, "stopped": False, "cleaned": False}

    def produce(emit: Callable[[int], None]) -> None:
        try:
            for i in range(10**9):
                emit(i)
                state["emitted"] += 1
        except Stopped:
            state["stopped"] = True
            raise
        finally:
            state["cleaned"] = True

    it = background(produce, depth=1, name=f"t-stop-{how}")
    if how == "break":
        for item in it:
            if item == 5:
                break
        it.close()  # what the for loop's end does for a generator dropped at once
    elif how == "raise":
        with pytest.raises(RuntimeError):
            for item in it:
                if item == 5:
                    raise RuntimeError("the consumer failed")
        it.close()
    else:
        assert next(it) == 0
        it.close()
    assert state["stopped"] and state["cleaned"] and state["emitted"] < 20
    assert not _threads(f"t-stop-{how}")


def test_a_producer_catching_exception_around_emit_still_stops():
    """Stopped is not an Exception (as GeneratorExit is not): a producer that logs and goes on
    after 'except Exception' cannot swallow it. Before, it did, and an endless producer then
    kept the consumer waiting for ever in its clean-up."""
    swallowed = []
    give_up = threading.Event()  # so that, should it fail, the test's producer does not spin for ever

    def produce(emit: Callable[[int], None]) -> None:
        i = 0
        while not give_up.is_set():
            try:
                emit(i)
            except Exception as exc:  # a producer's habit: note the record's problem, carry on
                swallowed.append(exc)
            i += 1

    done = threading.Event()

    def consume() -> None:
        it = background(produce, depth=1, name="t-swallow")
        next(it)
        it.close()
        done.set()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    try:
        assert done.wait(5), "closing the consumer hung: the producer swallowed Stopped"
    finally:
        give_up.set()
    assert swallowed == [] and not _threads("t-swallow")
    assert not issubclass(Stopped, Exception) and issubclass(Stopped, BaseException)


def test_prefetch_reads_ahead_on_its_own_thread():
    names = []

    def items():
        for i in range(5):
            names.append(threading.current_thread().name)
            yield i

    assert list(prefetch(items(), depth=2, name="t-prefetch")) == [0, 1, 2, 3, 4]
    assert set(names) == {"t-prefetch"}


def test_prefetch_hands_over_the_iterators_error():
    def items():
        yield "a"
        raise OSError(5, "Input/output error", "reads.fq")

    it = prefetch(items(), name="t-prefetch-error")
    assert next(it) == "a"
    with pytest.raises(OSError, match="reads.fq"):
        next(it)


def test_nothing_runs_before_the_first_item_is_asked_for():
    started = []
    it = background(lambda emit: started.append(1), name="t-lazy")
    time.sleep(0.1)
    assert started == []
    assert list(it) == [] and started == [1]


def test_a_producer_stuck_in_a_read_does_not_hang_the_consumer_that_stops(caplog):
    """A producer blocked in a read that never returns (a stalled socket) cannot see the stop:
    the consumer waits for it at most join_timeout, then leaves it behind with a warning."""
    release = threading.Event()

    def produce(emit):
        emit("first")
        release.wait(30)  # the read that does not come back

    it = background(produce, name="t-stuck", join_timeout=0.3)
    assert next(it) == "first"
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="genostage.background"):
        it.close()
    waited = time.monotonic() - started
    release.set()
    assert waited < 5
    assert "t-stuck did not stop" in caplog.text
