"""genostage: the job layer of batch genomics pipelines.

Stage inputs from S3 into a private scratch directory, run a tool, publish its
outputs verified end to end, and clean up in every case.
"""
__version__ = "0.1.0"

from .config import TransferConfig
from .errors import (
    AccessDenied,
    BadLocation,
    ChecksumMismatch,
    FormatError,
    GenostageError,
    InsufficientSpace,
    Interrupted,
    NotFound,
    ToolFailed,
    UnsafePath,
    UsageError,
)

__all__ = [
    "AccessDenied", "BadLocation", "ChecksumMismatch", "FormatError", "GenostageError",
    "InsufficientSpace", "Interrupted", "NotFound", "ToolFailed", "TransferConfig",
    "UnsafePath", "UsageError", "__version__",
]

from .job import Job  # noqa: E402
from .staging import stage_in, stage_out  # noqa: E402
from .transfer import copy  # noqa: E402

__all__ += ["Job", "copy", "stage_in", "stage_out"]

from .cache import Cache  # noqa: E402

__all__ += ["Cache"]
