"""The fault proxy of the older tests, on top of the chaos suite's (``tests/chaos/proxy.py``).

Every ``error_every``-th request gets a 503 SlowDown; every ``cut_every``-th ranged GET sends
half its body under its full Content-Length and then closes the connection; each ranged GET
waits ``delay`` seconds first (a slow network). ``requests``, ``ranged``, ``errors`` and
``cuts`` count what happened.
"""
from __future__ import annotations

import time
from typing import List

from .chaos.proxy import FaultProxy as _RuleProxy
from .chaos.proxy import Request, Rule


class FaultProxy(_RuleProxy):
    def __init__(self, upstream: str, error_every: int = 4, cut_every: int = 3, delay: float = 0.0) -> None:
        self.error_every = error_every
        self.delay = delay
        self._cut = Rule("truncate", op="GetObject", ranged=True, every=cut_every, at=0.5, name="cut")
        self._fail = Rule("status", status=503, name="error")
        self._slow = Rule("stall", op="GetObject", ranged=True, seconds=delay, name="delay")
        super().__init__(upstream)

    def choose(self, req: Request) -> List[Rule]:
        now = time.monotonic()
        fired = [self._slow] if self.delay and self._slow.fires(req, now) else []
        if self._cut.fires(req, now):
            fired.append(self._cut)
        elif self.requests % self.error_every == 0 and self._fail.fires(req, now):
            fired.append(self._fail)
        return fired

    @property
    def ranged(self) -> int:
        return self._cut.matched

    @property
    def errors(self) -> int:
        return self.count("error")

    @property
    def cuts(self) -> int:
        return self.count("cut")


__all__ = ["FaultProxy"]
