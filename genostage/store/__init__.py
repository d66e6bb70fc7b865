"""Stores: where bytes live. ``store_for(location)`` picks one."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Optional

from ..config import TransferConfig
from ..errors import NotFound
from ..location import Location, parse
from .base import Counters, ObjectInfo, Pending, Store, Upload, UploadLost
from .local import LocalStore
from .pipe import PipeStore

if TYPE_CHECKING:  # pragma: no cover
    from .s3 import S3Store


class Stores:
    """Hands out one store per scheme, sharing one S3 client (created lazily)."""

    def __init__(self, config: Optional[TransferConfig] = None, s3_client: Any = None) -> None:
        self.config = config or TransferConfig()
        self._s3_client = s3_client
        self._s3: "Optional[S3Store]" = None
        self._local = LocalStore(readers=min(8, self.config.concurrency))
        self._pipe = PipeStore()
        self._lock = threading.Lock()

    def for_location(self, loc: Location) -> Store:
        if loc.is_pipe:
            return self._pipe
        if loc.is_s3:
            if self._s3 is None:
                with self._lock:  # worker threads must share one client, not build one each
                    if self._s3 is None:
                        from .s3 import S3Store  # loaded on first use: local-only commands start faster

                        self._s3 = S3Store(self._s3_client, self.config)
            return self._s3
        return self._local

    @property
    def s3(self) -> "S3Store":
        return self.for_location(Location("s3", "x"))  # type: ignore[return-value]

    @property
    def local(self) -> LocalStore:
        return self._local

    @property
    def pipe(self) -> PipeStore:
        return self._pipe

    def read_whole(self, uri: str, what: str = "") -> bytes:
        """All the bytes of a small object or file (a plan, a spec, a manifest, a sample sheet).
        A missing one is :class:`NotFound` naming ``what`` (``"scatter spec"``) and ``uri``."""
        loc = parse(uri)
        store = self.for_location(loc)
        try:
            info = store.stat(loc, checksums=False)
        except NotFound:
            raise NotFound(f"{what + ' ' if what else ''}{uri} does not exist") from None
        return store.read_range(loc, 0, info.size, etag=info.etag) if info.size else b""

    def close(self) -> None:
        """Close the S3 client's connections (a store made later starts afresh)."""
        if self._s3 is not None:
            self._s3.close()


__all__ = ["Counters", "LocalStore", "ObjectInfo", "Pending", "S3Store", "Store", "Stores", "Upload", "UploadLost"]


def __getattr__(name: str) -> Any:
    if name == "S3Store":
        from .s3 import S3Store

        return S3Store
    raise AttributeError(f"module 'genostage.store' has no attribute {name!r}")
