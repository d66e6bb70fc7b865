"""The provenance manifest: where it goes, what it says, and how it is published.

**Where.** ``--manifest URI`` when given. Otherwise it is named after the job's first output,
so that the jobs of a pipeline (and the children of an array job) never overwrite each
other's: ``s3://b/aln/S1.bam`` gets ``s3://b/aln/S1.bam.manifest.json``; an array child
(``AWS_BATCH_JOB_ARRAY_INDEX=3``) gets ``S1.bam.3.manifest.json``; a directory output
``s3://b/out/`` gets ``s3://b/out.manifest.json``, beside the prefix and never inside it (so
a later job staging the prefix does not stage the manifest too). A job without outputs writes
its manifest only where ``--manifest`` says. The location is known before any byte moves, so
a job that fails while staging its inputs still leaves one.

**What.** genostage's version, the job's identity (AWS Batch job id, array index, attempt,
host), its status (``succeeded``, ``tool_failed``, ``failed``, ``interrupted``,
``preempted``) and exit status, each command as run with its resource use, each input and
output (URI, ETag, version, size, checksums, how each was verified, whether the output was
published), and the time spent in each phase.

**How.** From memory, verified like any upload (:func:`genostage.transfer.put_verified`), then
a copy in the scratch directory, written only if there is room: a full local disk does not
stop the manifest from reaching S3.
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Dict, List, Optional

from .. import __version__
from ..errors import GenostageError, Interrupted, Preempted, ToolFailed
from ..exitcodes import exit_code
from ..location import parse

SUFFIX = ".manifest.json"


def array_index() -> Optional[int]:
    return _int_or_none(os.environ.get("AWS_BATCH_JOB_ARRAY_INDEX"))


def default_location(first_output: Optional[str], index: Optional[int] = None) -> Optional[str]:
    """Where a job's manifest goes when ``--manifest`` is not given (module docstring)."""
    if not first_output:
        return None
    tail = (f".{index}" if index is not None else "") + SUFFIX
    if first_output.endswith("/"):
        return first_output.rstrip("/") + tail
    loc = parse(first_output)
    return (str(loc) if loc.is_s3 else loc.path) + tail


def status(error: Optional[BaseException]) -> Dict[str, Any]:
    """The manifest's ``status``, ``exit_status`` and ``error`` for a job that ended with ``error``."""
    if error is None:
        return {"status": "succeeded", "exit_status": 0}
    if isinstance(error, ToolFailed):
        return {"status": "tool_failed", "exit_status": error.returncode, "error": str(error)}
    if isinstance(error, Preempted):
        return {"status": "preempted", "exit_status": exit_code(error), "error": str(error)}
    if isinstance(error, Interrupted):
        return {"status": "interrupted", "exit_status": exit_code(error), "error": str(error)}
    kind = "failed" if isinstance(error, GenostageError) else "crashed"
    return {"status": kind, "exit_status": exit_code(error), "error": f"{error.__class__.__name__}: {error}"}


def identity() -> Dict[str, Any]:
    return {
        "genostage_version": __version__,
        "job_id": os.environ.get("AWS_BATCH_JOB_ID"),
        "array_index": array_index(),
        "attempt": _int_or_none(os.environ.get("AWS_BATCH_JOB_ATTEMPT")),
        "host": socket.gethostname(),
    }


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def encode(manifest: Dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2) + "\n").encode()


def _int_or_none(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


__all__: List[str] = ["SUFFIX", "array_index", "default_location", "encode", "identity", "iso", "status"]
