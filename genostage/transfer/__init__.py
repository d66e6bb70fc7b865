"""The transfer engine: parallel, multipart, verified, atomic copies between stores."""
from .engine import Transfer, TransferResult, copy, download_part_size, expand, expand_lazily

__all__ = ["Transfer", "TransferResult", "copy", "download_part_size", "expand", "expand_lazily"]
