"""The transfer engine: parallel, multipart, verified, atomic copies between stores.

- :mod:`.engine`: :class:`Transfer`, the flow of one object (fetch, deliver, finish) and of a batch;
- :mod:`.prepare`: what an object's copy must match, its part sizes, its destination;
- :mod:`.attempt`: one try at fetching a part, checksummed (and written) as its bytes arrive;
- :mod:`.scheduler`: the slots every part of a batch shares;
- :mod:`.verify`: the source's checksums before publishing, the destination's after;
- :mod:`.md5`: whole-object and part MD5s, where that is all a store keeps;
- :mod:`.journal`: resuming downloads and aborting uploads an earlier attempt left;
- :mod:`.listing`: one object or a prefix, paired with destinations; :func:`copy`;
- :mod:`.memory`: small objects written from memory, verified (:func:`put_verified`).
"""
from .engine import Transfer
from .listing import copy, expand, expand_lazily
from .memory import put_verified
from .prepare import download_part_size
from .result import TransferResult

__all__ = ["Transfer", "TransferResult", "copy", "download_part_size", "expand", "expand_lazily", "put_verified"]
