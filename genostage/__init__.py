"""genostage: the job layer of batch genomics pipelines.

Stage inputs from S3 into a private scratch directory, run a tool, publish its
outputs verified end to end, and clean up in every case.
"""
__version__ = "0.1.0"

from typing import TYPE_CHECKING

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

# The heavier parts load on first use, so that a command (or a wrapper script) that needs
# only some of them starts fast.
_LAZY = {"Job": ".job.job", "stage_in": ".job.staging", "stage_out": ".job.staging", "copy": ".transfer.listing",
         "Cache": ".job.cache"}
__all__ += list(_LAZY) + ["scatter"]

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from .job.cache import Cache as Cache
    from .job.job import Job as Job
    from .job.staging import stage_in as stage_in, stage_out as stage_out
    from .transfer.listing import copy as copy
    from . import scatter as scatter


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if name == "scatter":  # the subpackage, callable as genostage.scatter.scatter
        import importlib

        return importlib.import_module(".scatter", __name__)
    raise AttributeError(f"module 'genostage' has no attribute {name!r}")
