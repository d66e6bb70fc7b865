"""What to copy where: one object or every object under a prefix, paired with its destination."""
from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

from ..config import TransferConfig
from ..errors import NotFound, UnsafePath
from ..location import Location, parse, safe_relative
from ..store import ObjectInfo, Stores
from .engine import Transfer
from .result import TransferResult


def safe_name(loc: Location, what: str) -> str:
    """The file name a single object is copied to; refuses ``.``/``..`` (``s3://b/x/..``)."""
    name = loc.name
    if name in (".", "..") or "/" in name or "\x00" in name:
        raise UnsafePath(f"{what}: {loc} would be copied to {name!r}, outside its directory")
    return name


def expand(stores: Stores, src: Location, dest: Location, what: str = "") -> List[Tuple[ObjectInfo, Location]]:
    """Pairs of (source object, destination) for one object or a whole prefix, all listed
    before the first is returned (for a free-space check before any byte moves)."""
    return list(expand_lazily(stores, src, dest, what))


def expand_lazily(stores: Stores, src: Location, dest: Location, what: str = "") -> Iterator[Tuple[ObjectInfo, Location]]:
    """:func:`expand` as the listing comes, page by page, so copies start with the first page.
    A key that would land outside the destination stops it there (pairs already given stay given)."""
    store = stores.for_location(src)
    if not src.is_prefix:
        if dest.is_prefix:
            dest = dest.as_prefix().child(safe_name(src, what or str(src)))
        info = store.stat(src)
        yield info, dest
        return
    base = dest.as_prefix()
    empty = True
    for info in store.list(src):
        empty = False
        yield info, base.child(safe_relative(info.relative, what or str(src)))
    if empty:
        raise NotFound(f"{src}: no objects under this prefix")


def copy(src: "str | Location", dest: "str | Location", stores: Optional[Stores] = None,
         config: Optional[TransferConfig] = None) -> List[TransferResult]:
    """Copy one object or a whole prefix, in either direction or S3 to S3, verified."""
    stores = stores or Stores(config)
    s, d = parse(src), parse(dest)
    return Transfer(stores, config or stores.config).copy_all(expand_lazily(stores, s, d), label=f"copy {s.name}")
