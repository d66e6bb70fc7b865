"""Where a scatter stands, from its children's manifests: which succeeded (and still have their
outputs), which failed and how, which have not run. Used by ``genostage scatter status``, by
a rerun (children whose verified outputs exist are not run again) and by the gather."""
from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..errors import FormatError, NotFound
from ..location import parse
from ..store import Stores
from .spec import ScatterSpec

log = logging.getLogger("genostage.scatter")


@dataclass
class ChildState:
    index: int
    status: str  # succeeded, tool_failed, failed, interrupted, preempted, crashed, not run
    exit_status: Optional[int] = None
    attempt: Optional[int] = None
    manifest_uri: str = ""
    manifest: Dict[str, Any] = field(default_factory=dict)
    outputs_present: bool = False

    @property
    def done(self) -> bool:
        """Succeeded, and every output it published is still there as it published it."""
        return self.status == "succeeded" and self.outputs_present

    def records(self) -> Dict[str, Any]:
        return dict(self.manifest.get("records") or {})

    def to_json(self) -> Dict[str, Any]:
        return {"index": self.index, "status": self.status, "exit_status": self.exit_status,
                "attempt": self.attempt, "manifest": self.manifest_uri, **({"records": self.records()}
                                                                          if self.records() else {})}


def read_manifest(stores: Stores, uri: str) -> Optional[Dict[str, Any]]:
    try:
        raw = stores.read_whole(uri, "manifest")
    except NotFound:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        raise FormatError("a child's manifest is not JSON", path=uri) from None
    return data if isinstance(data, dict) else None


def _outputs_present(stores: Stores, manifest: Dict[str, Any]) -> bool:
    """Every object the child published is still there with the ETag and size it recorded."""
    for out in manifest.get("outputs", []):
        if not out.get("published"):
            return False
        files = out.get("files")
        entries = files if files is not None else [{"destination": out.get("uri"), "size": out.get("size"),
                                                     "destination_etag": out.get("destination_etag")}]
        for entry in entries:
            loc = parse(str(entry.get("destination")))
            try:
                info = stores.for_location(loc).stat(loc, checksums=False)
            except NotFound:
                return False
            if info.size != entry.get("size") or not _same_etag(info.etag, entry.get("destination_etag")):
                return False
    return True


def _same_etag(found: Optional[str], recorded: Optional[str]) -> bool:
    """The ETag a store reports now against the one the child recorded when it published.
    Compared only when both are of one form: a store may answer a multipart upload's completion
    with the multipart ETag (``...-3``) and report the whole object's MD5 afterwards (rclone);
    then the size is all that is compared."""
    if not found or not recorded:
        return True
    a, b = found.strip('"'), str(recorded).strip('"')
    if ("-" in a) != ("-" in b):
        return True
    return a == b


def child_state(spec: ScatterSpec, index: int, stores: Stores, check_outputs: bool = True) -> ChildState:
    uri = spec.child_manifest(index)
    manifest = read_manifest(stores, uri)
    if manifest is None:
        return ChildState(index, "not run", manifest_uri=uri)
    state = ChildState(index, str(manifest.get("status")), manifest.get("exit_status"), manifest.get("attempt"),
                       uri, manifest)
    if state.status == "succeeded" and check_outputs:
        state.outputs_present = _outputs_present(stores, manifest)
    return state


def scatter_state(spec: ScatterSpec, stores: Stores, check_outputs: bool = True) -> List[ChildState]:
    """Every child's state (manifests read a few at a time)."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda i: child_state(spec, i, stores, check_outputs), range(spec.children)))


def summary(states: List[ChildState]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for s in states:
        key = "succeeded" if s.done else ("outputs missing" if s.status == "succeeded" else s.status)
        out[key] = out.get(key, 0) + 1
    return out
