"""One retry policy for everything that talks to a store.

As the AWS SDKs' standard mode does: a failed try that may succeed when tried again (a
reset connection, a timeout, a 5xx, throttling, bytes corrupted in flight) waits a jittered,
exponentially growing delay and goes again, up to ``max_attempts`` tries and as long as the
tries of that one request have not taken more than ``budget`` seconds. A few seconds of
throttling (SlowDown bursts) are outlasted; a store that is down for good fails the request
within the budget. Used by the S3 client (:mod:`genostage.store.wire`) for requests and by
the transfer engine for parts whose bytes had already started to arrive.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` tries at most, within ``budget`` seconds from the first (but always a
    second try: one that timed out after a read timeout as long as the budget); delays of
    ``base * 2**(n-1)`` seconds (n = tries so far), at most ``cap``, times a random factor
    in [0.5, 1) so that many clients do not come back in step."""

    max_attempts: int = 10
    budget: float = 60.0
    base: float = 0.1
    cap: float = 5.0

    def delay(self, attempts: int, elapsed: float) -> Optional[float]:
        """Seconds to wait before the next try after ``attempts`` failed tries that took
        ``elapsed`` seconds in all; None when the request should give up."""
        if attempts >= self.max_attempts:
            return None
        wait = min(self.cap, self.base * 2 ** max(0, attempts - 1)) * (0.5 + random.random() / 2)
        if elapsed + wait > self.budget and attempts > 1:  # a first try that took the whole budget
            return None  # (a read timeout as long as the budget) still gets one more
        return wait


