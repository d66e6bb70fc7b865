"""Exit codes: what each class of error ends a command (or a job's manifest) with.

The library raises; the CLI and the manifest turn an error into a code through
:func:`exit_code`, and only through it. The table is also in the README.

====  =====================================================================
0     success
1     bad input data (FASTQ, BAM, BGZF, plan or checksum-list format error) or another error
2     usage error: bad option, malformed URI
3     not found: a missing object, prefix, bucket or file
4     access denied, or no credentials
5     transfer failed after retries (network, server errors), or the object changed
6     checksum mismatch that persisted after retries
7     insufficient space (scratch, a destination file system)
8     unsafe path: a key or symlink that would land outside its directory
9     scratch unusable: its directory cannot be created or written
10    stopped ahead of a spot interruption (the instance is being reclaimed): retry elsewhere
11    a gather refused to publish: records lost or doubled across the parts
N     ``genostage run``: the tool's own exit status when it fails
128+N stopped by signal N (130 for SIGINT, 143 for SIGTERM)
====  =====================================================================
"""
from __future__ import annotations

from typing import FrozenSet, List, Tuple, Type

from . import errors as E

OK = 0
DATA = 1
USAGE = 2
NOT_FOUND = 3
ACCESS = 4
TRANSFER = 5
CHECKSUM = 6
SPACE = 7
UNSAFE = 8
SCRATCH = 9
PREEMPTED = 10
INCOMPLETE = 11

# Codes a retry of the same job may cure: a network or server fault, bytes corrupted in
# flight, the instance taken away. Bad input, usage, a missing object, an unsafe key or an
# unusable scratch directory come back the same on every attempt.
RETRYABLE: FrozenSet[int] = frozenset({TRANSFER, CHECKSUM, PREEMPTED})

# most specific first
_CODES: List[Tuple[Type[BaseException], int]] = [
    (E.UsageError, USAGE),
    (E.NotFound, NOT_FOUND),
    (E.AccessDenied, ACCESS),
    (E.ChecksumMismatch, CHECKSUM),
    (E.InsufficientSpace, SPACE),
    (E.ScratchUnusable, SCRATCH),
    (E.StorageError, TRANSFER),
    (E.UnsafePath, UNSAFE),
    (E.Preempted, PREEMPTED),
    (E.RecordsNotConserved, INCOMPLETE),
    (E.FormatError, DATA),
]


def exit_code(exc: BaseException) -> int:
    """The exit status for an exception raised by the library."""
    if isinstance(exc, E.ToolFailed):
        return exc.returncode if exc.returncode > 0 else 128 - exc.returncode
    if isinstance(exc, E.Preempted):
        return PREEMPTED
    if isinstance(exc, E.ChildrenFailed):
        return exc.exit_status or DATA
    if isinstance(exc, E.Interrupted):
        return 128 + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC that reached the edge unwrapped
        return SPACE
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return DATA


__all__ = ["exit_code", "RETRYABLE", "OK", "DATA", "USAGE", "NOT_FOUND", "ACCESS", "TRANSFER", "CHECKSUM",
           "SPACE", "UNSAFE", "SCRATCH", "PREEMPTED", "INCOMPLETE"]
