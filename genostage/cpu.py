"""How many CPUs this process may use: the one place genostage counts them.

``os.cpu_count()`` is the machine's count. A container on AWS Batch or Kubernetes usually
gets fewer: an affinity mask (``taskset``, cpusets: ``os.sched_getaffinity``) or a CFS
quota (``--cpus 2``: cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``).
Threads beyond that only queue behind each other. :func:`available` is the smallest of the
three, rounded up, at least 1.
"""
from __future__ import annotations

import math
import os
from typing import Callable, List, Optional, Tuple

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"


def available(cgroup_root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> int:
    """CPUs this process may run on at once (affinity and cgroup quota honoured; at least 1)."""
    if hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - not Linux
        count = os.cpu_count() or 1
    quota = cgroup_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_quota(cgroup_root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> Optional[float]:
    """The CPU quota of this process's cgroup, in CPUs (``1.5`` for 150 ms per 100 ms), the
    tightest along the path to the root; None when there is none (or no cgroup file system)."""
    try:
        with open(proc_cgroup) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    limits: List[float] = []
    for line in lines:
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":  # cgroup v2 (the unified hierarchy)
            limits += _walk(cgroup_root, path, _v2_limit)
        elif "cpu" in controllers.split(","):  # cgroup v1, the cpu controller
            for mount in (os.path.join(cgroup_root, controllers), os.path.join(cgroup_root, "cpu"),
                          os.path.join(cgroup_root, "cpu,cpuacct")):
                if os.path.isdir(mount):
                    limits += _walk(mount, path, _v1_limit)
                    break
    return min(limits) if limits else None


def _walk(mount: str, path: str, read: Callable[[str], Optional[float]]) -> List[float]:
    """Limits in ``mount/path`` and each of its parents. Inside a container without a cgroup
    namespace ``path`` names the host's view: when it is not there, the mount's root is
    the container's own cgroup."""
    found: List[float] = []
    rel = path.strip("/")
    base = os.path.join(mount, rel) if rel else mount
    if not os.path.isdir(base):
        base, rel = mount, ""
    while True:
        value = read(base)
        if value is not None:
            found.append(value)
        if not rel:
            return found
        rel = os.path.dirname(rel)
        base = os.path.join(mount, rel) if rel else mount


def _v2_limit(directory: str) -> Optional[float]:
    """``cpu.max`` holds ``QUOTA PERIOD`` (microseconds) or ``max PERIOD`` (no limit)."""
    fields = _read(os.path.join(directory, "cpu.max"))
    if fields is None or len(fields) < 1 or fields[0] == "max":
        return None
    period = fields[1] if len(fields) > 1 else "100000"
    return _ratio(fields[0], period)


def _v1_limit(directory: str) -> Optional[float]:
    """``cpu.cfs_quota_us`` (-1: no limit) over ``cpu.cfs_period_us``."""
    quota = _read(os.path.join(directory, "cpu.cfs_quota_us"))
    period = _read(os.path.join(directory, "cpu.cfs_period_us"))
    if not quota or not period:
        return None
    return _ratio(quota[0], period[0])


def _ratio(quota: str, period: str) -> Optional[float]:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _read(path: str) -> Optional[Tuple[str, ...]]:
    try:
        with open(path) as fh:
            return tuple(fh.read().split())
    except OSError:
        return None


__all__ = ["available", "cgroup_quota"]
