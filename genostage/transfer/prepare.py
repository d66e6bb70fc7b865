"""Preparing one object's copy: what it must match, its part sizes, where it resumes, and
the destination it writes (created here, where blocking is allowed, unless it is a small
object written in one go later)."""
from __future__ import annotations

from typing import Optional

from ..codec import checksum as ck
from ..config import TransferConfig
from ..location import Location
from ..store import ObjectInfo, Stores
from .copystate import ObjectCopy
from .journal import PartJournal

MiB = 1 << 20


PIPE_FIRST_PART = 1 * MiB  # a pipe's parts ramp up from this: the tool gets its first bytes
# at once rather than when a whole part has shared the link with every other part in flight


def download_part_size(size: int, config: TransferConfig) -> int:
    """Ranged-GET size for a download streamed to disk: at least ``config.part_size`` and
    ``config.download_part_size``, and large enough that an object takes one round of
    ``concurrency`` requests (at most 256 MiB).

    Streaming to disk keeps memory at one socket buffer per request whatever the part
    size, and fewer, larger requests cost less per byte on every server (some
    S3-compatible servers, moto among them, read the whole object for every ranged GET)."""
    share = -(-size // config.concurrency)
    return max(config.part_size, config.download_part_size, min(256 * MiB, -(-share // MiB) * MiB))


def _expected(src: ObjectInfo, config: TransferConfig):  # type: ignore[no-untyped-def]
    """What the source's bytes must match, or None (nothing stored, or verification off)."""
    if not config.verify:
        return None
    expected = ck.expected_for(src)
    if expected and expected[0] == "md5" and src.sse == "aws:kms":
        return None  # an SSE-KMS ETag is not an MD5 of the bytes
    return expected


def prepare(stores: Stores, config: TransferConfig, src: ObjectInfo, dest: Location,
            journal_dir: Optional[str] = None) -> ObjectCopy:
    """An :class:`ObjectCopy` ready to move (the source asked for its checksums first when
    ``src`` came from a listing and is large enough to be worth it)."""
    src_store = stores.for_location(src.location)
    dest_store = stores.for_location(dest)
    if config.verify and not src.checksums_known and src.size >= config.multipart_threshold:
        src = src_store.stat(src.location)  # a listing carries no checksum values: one HEAD
    expected = _expected(src, config)
    in_memory = not dest_store.uploads_accept_pieces  # parts are held whole before they are sent
    part_size = config.part_size
    etag_part_size = 0
    if expected and expected[0] == "etag":
        n = int(expected[1].rsplit("-", 1)[1])
        first = src_store.part_size(src.location)
        guessed = first if first and -(-src.size // first) == n else ck.guess_etag_part_size(src.size, n)
        if guessed is None:
            expected = None
        else:
            etag_part_size = part_size = guessed
            if not in_memory:  # several of the upload's parts per request, not so many that their
                # MD5s (hashed as each request ends) cannot keep pace with the download
                part_size = max(guessed, max(config.part_size, config.download_part_size) // guessed * guessed)
    elif not in_memory and not (expected and expected[0] == "md5"):
        part_size = download_part_size(src.size, config)
    if src.size < config.multipart_threshold and not (expected and expected[0] == "etag"):
        part_size = max(src.size, 1)
    first_part = PIPE_FIRST_PART if dest.is_pipe and not etag_part_size else 0
    c = ObjectCopy(src, dest, part_size, expected, etag_part_size, first_part)
    if c.held:
        return c  # its destination is made when its bytes are in (by the writer, for local files)
    resume = None
    if journal_dir and not in_memory and not c.single:
        c.journal = PartJournal(journal_dir, c)
        c.journal.load(c)
        resume = c.journal.data_path
    c.upload = dest_store.begin_upload(dest, src.size, len(c.parts), resume_path=resume)
    c.streams = c.upload.accepts_pieces
    if c.md5 is not None and c.upload.temp_path is not None:
        for part in c.parts:
            if part.resumed:  # hashed in order from the file, with the rest
                c.md5.on_disk(part.index, c.upload.temp_path)
    return c
