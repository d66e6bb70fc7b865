"""The exception tree of genostage.

Every error the library raises on purpose derives from :class:`GenostageError`.
The CLI and the manifest map these classes to exit codes, through
:func:`genostage.exitcodes.exit_code` only.
"""
from __future__ import annotations

from typing import List, Optional


class GenostageError(Exception):
    """Root of every error genostage raises on purpose."""


class UsageError(GenostageError):
    """The caller asked for something malformed (bad option, bad URI)."""


class BadLocation(UsageError):
    """A URI or path that cannot be parsed or is not allowed."""

    def __init__(self, location: str, reason: str) -> None:
        self.location = location
        self.reason = reason
        super().__init__(f"{location}: {reason}")


class StorageError(GenostageError):
    """Something went wrong talking to a store (S3 or the local disk)."""


class NotFound(StorageError):
    """The object, prefix, bucket or file does not exist."""


class AccessDenied(StorageError):
    """The store refused access."""


class NoCredentials(AccessDenied):
    """No credentials were found to sign requests with."""


class TransferFailed(StorageError):
    """A transfer gave up (after retries for transient errors)."""


class ObjectChanged(StorageError):
    """The object changed during a transfer or since a plan was made."""


class ChecksumMismatch(StorageError):
    """Bytes do not match the checksum the store or the plan records."""

    def __init__(self, what: str, algorithm: str, expected: str, actual: str) -> None:
        self.what = what
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{what}: {algorithm} mismatch: expected {expected}, got {actual}"
        )


class UnsafePath(GenostageError):
    """A key or symlink would land outside the directory it belongs in."""


class InsufficientSpace(GenostageError):
    """A file system cannot hold what is about to be written (checked before, or ENOSPC);
    made by :func:`genostage.fsutil.check_space` and :func:`genostage.fsutil.os_error`."""

    def __init__(self, needed: int, free: int, where: str, message: str) -> None:
        self.needed = needed
        self.free = free
        self.where = where
        super().__init__(message)


class ScratchUnusable(GenostageError):
    """The scratch directory (or its root) cannot be created or written."""


class Preempted(GenostageError):
    """The instance is being reclaimed (a spot interruption notice): stopped so a retry can run elsewhere."""


class RecordsNotConserved(GenostageError):
    """A gather found reads lost or doubled across the parts of a scatter."""


class ChildrenFailed(GenostageError):
    """More children of a scatter failed than it allows; ``exit_status`` is the first one's."""

    def __init__(self, message: str, exit_status: int) -> None:
        self.exit_status = exit_status
        super().__init__(message)


class FormatError(GenostageError):
    """Malformed input data (FASTQ, BAM, BGZF, plan, checksum list).

    ``line`` is 0-based internally and rendered 1-based; ``record`` is 0-based
    internally and rendered 1-based; ``offset`` is a byte or virtual offset.
    """

    def __init__(
        self,
        message: str,
        path: Optional[str] = None,
        fmt: str = "",
        line: Optional[int] = None,
        record: Optional[int] = None,
        offset: Optional[int] = None,
    ) -> None:
        self.message = message
        self.path = path
        self.fmt = fmt
        self.line = line
        self.record = record
        self.offset = offset
        super().__init__(self._render())

    def _render(self) -> str:
        where = "Error"
        if self.fmt:
            where += f" in {self.fmt} file"
        elif self.path is not None:
            where += " in"
        if self.path is not None:
            where += f" {self.path}"
        if self.line is not None:
            where += f" at line {self.line + 1}"
        elif self.record is not None:
            where += f" at record {self.record + 1}"
        elif self.offset is not None:
            where += f" at offset {self.offset}"
        return f"{where}: {self.message}"


class ToolFailed(GenostageError):
    """The tool exited with a non-zero status (or was killed by a signal). ``stderr_tail``
    holds the last lines it wrote to stderr; the message names the last of them."""

    def __init__(self, command: str, returncode: int, stderr_tail: Optional[List[str]] = None) -> None:
        self.command = command
        self.returncode = returncode
        self.stderr_tail = list(stderr_tail or [])
        if returncode < 0:
            what = f"was killed by signal {-returncode}"
        else:
            what = f"exited with status {returncode}"
        last = next((line.strip() for line in reversed(self.stderr_tail) if line.strip()), "")
        shown = " ".join(command.split())  # one line, whatever the script's layout
        shown = shown if len(shown) <= 300 else shown[:297] + "..."
        super().__init__(f"tool {what}: {shown}" + (f" (its last words: {last[:200]})" if last else ""))


class Interrupted(GenostageError):
    """The job received SIGTERM or SIGINT."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by signal {signum}")
