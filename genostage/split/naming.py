"""One naming scheme for every chunk file genostage writes or stages, FASTQ and BAM alike:
``<stem>.part-<NNNN>[.R1|.R2]<ext>`` with at least four digits (more when there are more
chunks), so that names sort in chunk order: ``S1.part-0003.R1.fastq.gz``, ``big.part-0012.bam``."""
from __future__ import annotations

from typing import Optional


def width(parts: int) -> int:
    return max(4, len(str(max(parts, 1) - 1)))


def part_name(stem: str, index: int, parts: int, ext: str, mate: Optional[int] = None) -> str:
    """The file name of chunk ``index`` of ``parts`` (``mate``: 1 or 2 for a pair)."""
    tag = f".R{mate}" if mate else ""
    return f"{stem}.part-{index:0{width(parts)}d}{tag}{ext}"
