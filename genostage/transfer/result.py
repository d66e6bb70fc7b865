"""What one verified copy did (goes into the manifest)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional


@dataclass
class TransferResult:
    """One object copied: where from and to, its identity and checksums, how it was verified
    (``crc64nvme``, ``md5``, ``etag``, ``md5 (multipart ETag)``, ``crc64nvme (read back)``,
    ``size``), and what the copy took (seconds, parts, parts resumed from an earlier attempt,
    parts fetched again because their bytes came corrupted)."""

    source: str
    destination: str
    size: int
    etag: Optional[str]
    version_id: Optional[str]
    checksums: Dict[str, str]
    verified: Optional[str]
    seconds: float
    parts: int
    resumed_parts: int = 0
    repaired_parts: int = 0
    destination_etag: Optional[str] = None  # what the destination store calls the published object

    def to_json(self) -> Dict[str, Any]:
        return dict(self.__dict__)
