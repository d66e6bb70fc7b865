"""The conservation proof: every read of the input came through the scatter exactly once.

Each child's manifest records its reads in (the records of its chunk: FASTQ records, or
BAM primary records; a pair counts two) and the records of each output (BAM: primary
alignments, every read has exactly one, unmapped ones included; FASTQ: records; VCF: records).

- **Per child** (reads kept): a BAM output must hold one primary alignment per read in; a
  FASTQ output one record per read (per mate, when a pair's mates go to two outputs). A child
  that lost or doubled reads is named. A tool that drops reads on purpose (a filter) is told
  so with ``--drops-reads``; VCF and text outputs are not reads and are not held to this.
- **Per gather**: the gathered output must hold exactly the records of its parts (the sum of
  the children's counts), so no part was lost or doubled on the way.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from ..errors import RecordsNotConserved
from .spec import ScatterSpec
from .status import ChildState


def child_reads(state: ChildState) -> Optional[int]:
    value = (state.records().get("in") or {}).get("reads")
    return int(value) if isinstance(value, int) else None


def child_count(state: ChildState, name: str, kind: str) -> int:
    counts = (state.records().get("out") or {}).get(name) or {}
    return int(counts.get("primary" if kind == "bam" else "records", 0))


def check_children(spec: ScatterSpec, states: Sequence[ChildState]) -> Dict[str, Any]:
    """Reads in against records out, child by child; raises :class:`RecordsNotConserved`
    naming the children that lost or doubled reads. Returns the figures for the manifest."""
    fastq_outputs = [g for g in spec.gather if g.kind == "fastq"]
    mates = 2 if spec.reads.get("paired") and len(fastq_outputs) >= 2 else 1
    report: Dict[str, Any] = {"reads_in": 0, "checked": bool(spec.conserve and spec.reads), "outputs": {}}
    bad: List[str] = []
    for g in spec.gather:
        report["outputs"][g.name] = 0
    for state in states:
        reads = child_reads(state)
        if reads is not None:
            report["reads_in"] += reads
        for g in spec.gather:
            got = child_count(state, g.name, g.kind)
            report["outputs"][g.name] += got
            if not report["checked"] or reads is None or g.kind not in ("bam", "fastq"):
                continue
            want = reads if g.kind == "bam" else reads // mates
            if got != want:
                what = "primary alignments" if g.kind == "bam" else "FASTQ records"
                verb = "lost" if got < want else "doubled"
                bad.append(f"child {state.index} wrote {got:,} {what} to {g.name!r} for {want:,} reads "
                           f"({abs(want - got):,} {verb})")
    if bad:
        raise RecordsNotConserved("reads not conserved: " + "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more"
                                                                                   if len(bad) > 5 else "")
                                  + " (a tool that drops reads on purpose: scatter --drops-reads)")
    return report
