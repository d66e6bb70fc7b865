"""The gather: the children's parts made into the scatter's outputs, proven complete.

Runs as one genostage job (its own scratch, its manifest at the scatter's ``manifest``, every
output published verified and all or none). It reads every child's manifest: the children
that did not succeed (or whose outputs are gone) may number at most ``allow_failed``, and
the manifest names them. It checks the conservation proof (:mod:`.proof`), stages the parts
of the children that succeeded (verified downloads), applies each output's rule
(:func:`genostage.split.gather.gather`, which refuses an output that does not hold exactly
the records of its parts), and publishes. The final manifest lists every child with its
status, attempt, counts and manifest.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from ..config import TransferConfig
from ..cpu import available
from ..errors import ChildrenFailed
from ..job.job import Job
from ..store import Stores
from .proof import check_children, child_count
from .spec import ScatterSpec
from .status import ChildState, scatter_state, summary

log = logging.getLogger("genostage.scatter")


# Children stopped because a sibling failed (interrupted) or never started are consequences:
# the scatter names, and exits with, a child that failed of its own accord.
_CONSEQUENCES = ("interrupted", "not run")


def _cause_first(state: ChildState) -> "tuple[int, int]":
    return (_CONSEQUENCES.index(state.status) + 1 if state.status in _CONSEQUENCES else 0, state.index)


def _refuse_failures(spec: ScatterSpec, states: List[ChildState]) -> List[ChildState]:
    """The children that failed or never ran, unless ``allow_failed`` covers them."""
    bad = [s for s in states if not s.done]
    if len(bad) > spec.allow_failed:
        first = min(bad, key=_cause_first)
        why = first.status if first.status != "succeeded" else "its outputs are gone"
        raise ChildrenFailed(f"{len(bad)} of {spec.children} children did not succeed (at most {spec.allow_failed} may; "
                             f"child {first.index}: {why}, exit status {first.exit_status}; "
                             f"genostage scatter status {spec.uri})",
                             first.exit_status if isinstance(first.exit_status, int) else 1)
    return bad


def run_gather(spec: ScatterSpec, stores: Stores, config: TransferConfig, show_progress: bool = True,
               threads: Optional[int] = None) -> Dict[str, Any]:
    """Gather ``spec``'s outputs (see the module docstring); returns the final manifest, which
    is written (saying why) when the gather refuses too."""
    from ..split.gather import gather

    threads = threads or available()
    job = Job(scratch_root=spec.job.scratch, config=config, stores=stores, manifest=spec.manifest,
              show_progress=show_progress, index=None)
    with job:
        states = scatter_state(spec, stores)
        info: Dict[str, Any] = {"id": spec.id, "spec": spec.uri, "children": [s.to_json() for s in states],
                                "summary": summary(states)}
        job.extra["scatter"] = info
        failed = _refuse_failures(spec, states)
        info["failed"] = [s.index for s in failed]
        done = [s for s in states if s.done]
        proof = check_children(spec, done)
        info["conservation"] = proof
        outputs = {g.name: job.output(g.output, g.name) for g in spec.gather}
        for g in spec.gather:
            parts = [spec.part(g, s.index) for s in done]
            if not parts:
                continue
            staged = job.stage_inputs({f"parts_{g.name}": parts})
            paths = [str(staged[f"parts_{g.name}.{n}"]) for n in range(1, len(parts) + 1)]
            expect = sum(child_count(s, g.name, g.kind) for s in done)
            log.info("gathering %s: %s of %d parts (%s records)", g.output, g.rule, len(parts), f"{expect:,}")
            result = gather(g.rule, paths, str(outputs[g.name]), threads=threads, expect=expect,
                            command_line=f"genostage scatter gather {spec.uri}")
            proof.setdefault("gathered", {})[g.name] = result.counts.to_json() if result.counts else None
    return job.manifest
