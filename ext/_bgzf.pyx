# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""BGZF hot loops: walk block headers, find a block start, inflate one block (CRC checked).

Every function takes a buffer (or a descriptor and a range) and returns offsets, counts or
bytes; files and networks stay in Python. Public face: ``genostage.codec.blocks`` (and
``genostage.codec.bgzf``). BAM records are the ``genostage.split._bam`` kernel's.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset


cdef extern from "zlib.h" nogil:
    ctypedef struct z_stream:
        uint8_t *next_in
        unsigned int avail_in
        uint8_t *next_out
        unsigned int avail_out
        void *zalloc
        void *zfree
        void *opaque
        unsigned long total_out
    int Z_OK
    int Z_STREAM_END
    int Z_FINISH
    int inflateInit2(z_stream *strm, int window_bits)
    int z_inflate "inflate"(z_stream *strm, int flush)
    int inflateEnd(z_stream *strm)
    unsigned long z_crc32 "crc32"(unsigned long crc, const uint8_t *buf, unsigned int length)


include "le.pxi"


cdef Py_ssize_t _bsize(const uint8_t *p, Py_ssize_t avail) noexcept nogil:
    """Size of the BGZF block at ``p``: 0 when the header is incomplete, -1 when it is not BGZF."""
    cdef Py_ssize_t xlen, off, end, slen, size
    if avail < 4:
        return 0
    if p[0] != 0x1f or p[1] != 0x8b or p[2] != 8 or p[3] != 4:
        return -1
    if avail < 12:
        return 0
    xlen = _u16(p + 10)
    if avail < 12 + xlen:
        return 0
    off = 12
    end = 12 + xlen
    while off + 4 <= end:
        slen = _u16(p + off + 2)
        if p[off] == 66 and p[off + 1] == 67 and slen == 2 and off + 6 <= end:
            size = <Py_ssize_t>_u16(p + off + 4) + 1
            if size < 12 + xlen + 8 + 2:  # header, footer and at least an empty deflate stream
                return -1
            return size
        off += 4 + slen
    return -1


def block_size(const uint8_t[::1] buf, Py_ssize_t offset=0):
    """Size of the block at ``offset``; 0 if the header is incomplete, -1 if it is not a BGZF header."""
    if offset < 0 or offset > buf.shape[0]:
        raise IndexError("offset out of range")
    return _bsize(&buf[0] + offset if buf.shape[0] else NULL, buf.shape[0] - offset) if buf.shape[0] else 0


def walk_blocks(const uint8_t[::1] buf, Py_ssize_t start=0, bint offsets=False):
    """Walk whole blocks from ``start``: ``(next, count, status, offsets)``.

    ``next`` is where walking stopped: ``len(buf)`` or an incomplete block when
    ``status == 0``; a header that is not BGZF when ``status == -1``.
    ``offsets`` is a list of the block starts when asked for, else None.
    """
    cdef Py_ssize_t n = buf.shape[0], pos = start, size, count = 0
    cdef const uint8_t *p
    cdef list out = [] if offsets else None
    cdef int status = 0
    if n == 0 or start >= n:
        return start, 0, 0, out
    p = &buf[0]
    if not offsets:
        with nogil:
            while pos < n:
                size = _bsize(p + pos, n - pos)
                if size < 0:
                    status = -1
                    break
                if size == 0 or pos + size > n:
                    break
                pos += size
                count += 1
    else:
        while pos < n:
            size = _bsize(p + pos, n - pos)
            if size < 0:
                status = -1
                break
            if size == 0 or pos + size > n:
                break
            out.append(pos)
            pos += size
            count += 1
    return pos, count, status, out


def find_block(const uint8_t[::1] buf, Py_ssize_t start=0, bint at_end=False):
    """First offset >= ``start`` where a BGZF block starts and the next block chains from it.

    A candidate whose block ends exactly at the end of the buffer counts only
    when ``at_end`` (the buffer ends where the file ends). Returns -1 if none.
    """
    cdef Py_ssize_t n = buf.shape[0], pos = start, size, nxt, found = -1
    cdef const uint8_t *p
    if n == 0:
        return -1
    p = &buf[0]
    with nogil:
        while pos + 18 <= n:
            if p[pos] == 0x1f and p[pos + 1] == 0x8b and p[pos + 2] == 8 and p[pos + 3] == 4:
                size = _bsize(p + pos, n - pos)
                if size > 0:
                    nxt = pos + size
                    if nxt == n:
                        if at_end:
                            found = pos
                            break
                    elif nxt < n and (_bsize(p + nxt, n - nxt) > 0 or (n - nxt < 18 and _bsize(p + nxt, n - nxt) == 0)):
                        found = pos
                        break
            pos += 1
    return found


def inflate(const uint8_t[::1] buf, Py_ssize_t offset=0):
    """Decompress the block at ``offset``, checking CRC32 and length; ValueError says what is wrong."""
    cdef Py_ssize_t n = buf.shape[0], size, xlen
    cdef const uint8_t *p
    cdef uint32_t crc, isize
    cdef z_stream strm
    cdef int rc
    cdef bytes out
    if offset < 0 or offset >= n:
        raise ValueError("truncated BGZF block header")
    p = &buf[0] + offset
    size = _bsize(p, n - offset)
    if size < 0:
        raise ValueError("not a BGZF block (expected gzip magic 1f 8b 08 04 and a BC field)")
    if size == 0 or size > n - offset:
        raise ValueError("truncated BGZF block")
    xlen = _u16(p + 10)
    crc = _u32(p + size - 8)
    isize = _u32(p + size - 4)
    if isize > 65536:
        raise ValueError("corrupt BGZF block (ISIZE above 64 KiB)")
    out = PyBytes_FromStringAndSize(NULL, isize)
    cdef uint8_t *outp = <uint8_t *>PyBytes_AS_STRING(out)
    memset(&strm, 0, sizeof(strm))
    with nogil:
        rc = inflateInit2(&strm, -15)
        if rc == Z_OK:
            strm.next_in = <uint8_t *>(p + 12 + xlen)
            strm.avail_in = <unsigned int>(size - 12 - xlen - 8)
            strm.next_out = outp
            strm.avail_out = isize
            rc = z_inflate(&strm, Z_FINISH)
            if strm.total_out != isize:
                rc = -100
            inflateEnd(&strm)
    if rc == -100:
        raise ValueError("corrupt BGZF block (length differs from ISIZE)")
    if rc != Z_STREAM_END:
        raise ValueError(f"corrupt BGZF block (inflate error {rc})")
    with nogil:
        rc = z_crc32(0, outp, isize) == crc
    if not rc:
        raise ValueError("corrupt BGZF block (CRC32 mismatch)")
    return out


cdef extern from "unistd.h" nogil:
    ssize_t pread(int fd, void *buf, size_t count, long offset)


def walk_blocks_fd(int fd, Py_ssize_t start, Py_ssize_t end):
    """Walk the block headers of a file between byte offsets ``start`` and ``end`` with small preads
    (the data itself is not read): ``(stop, count, status)`` as :func:`walk_blocks`; status -2 on a read error."""
    cdef uint8_t head[1024]
    cdef Py_ssize_t pos = start, size, got, want
    cdef Py_ssize_t count = 0
    cdef int status = 0
    with nogil:
        while pos < end:
            want = 32 if end - pos > 32 else end - pos  # the usual header is 18 bytes
            got = pread(fd, head, want, pos)
            if got < 0:
                status = -2
                break
            size = _bsize(head, got)
            if size == 0 and got == 32:  # a longer extra field: read more of it
                want = 1024 if end - pos > 1024 else end - pos
                got = pread(fd, head, want, pos)
                if got < 0:
                    status = -2
                    break
                size = _bsize(head, got)
            if size < 0:
                status = -1
                break
            if size == 0 or pos + size > end:
                break
            pos += size
            count += 1
    return pos, count, status
