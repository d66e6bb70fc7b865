# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""BGZF and BAM hot loops: walk block headers, inflate one block, walk and validate BAM records.

Every function takes a buffer and returns offsets, counts or bytes; files and
networks stay in Python (``genostage.bgzf``, ``genostage.split.bam``).
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


cdef inline uint16_t _u16(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint16_t>p[1] << 8)


cdef inline uint32_t _u32(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline int32_t _i32(const uint8_t *p) noexcept nogil:
    return <int32_t>_u32(p)


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


cdef inline bint _pos_ok(int32_t ref, int32_t pos, Py_ssize_t n_ref, const int64_t *lens) noexcept nogil:
    if ref < -1 or ref >= n_ref:
        return False
    if ref == -1:
        return pos == -1
    return -1 <= pos and pos <= lens[ref]


cdef Py_ssize_t _check(const uint8_t *p, Py_ssize_t avail, Py_ssize_t n_ref, const int64_t *lens) noexcept nogil:
    """Length of the valid-looking record at ``p`` (4 + block_size); 0 if invalid, -1 if more data is needed."""
    cdef int32_t bs, ref, pos, l_seq, nref, npos
    cdef Py_ssize_t l_name, n_cigar, i, need, qlen = 0
    cdef uint32_t op
    cdef uint8_t c
    if avail < 36:
        if avail >= 4 and _i32(p) < 32:
            return 0
        return -1
    bs = _i32(p)
    ref = _i32(p + 4)
    pos = _i32(p + 8)
    l_name = p[12]
    n_cigar = _u16(p + 16)
    l_seq = _i32(p + 20)
    nref = _i32(p + 24)
    npos = _i32(p + 28)
    if bs < 32 or l_name < 2 or l_seq < 0:
        return 0
    if not _pos_ok(ref, pos, n_ref, lens) or not _pos_ok(nref, npos, n_ref, lens):
        return 0
    need = 32 + l_name + 4 * n_cigar + (l_seq + 1) // 2 + <Py_ssize_t>l_seq
    if bs < need:
        return 0
    if avail < 36 + l_name + 4 * n_cigar:
        return -1
    for i in range(l_name - 1):
        c = p[36 + i]
        if c < 0x21 or c > 0x7e or c == 0x40:
            return 0
    if p[36 + l_name - 1] != 0:
        return 0
    for i in range(n_cigar):
        op = _u32(p + 36 + l_name + 4 * i)
        if (op & 0xf) > 8:
            return 0
        if (op & 0xf) in (0, 1, 4, 7, 8):
            qlen += op >> 4
    if n_cigar and l_seq and qlen != l_seq:
        return 0
    return 4 + <Py_ssize_t>bs


cdef Py_ssize_t _chain(const uint8_t *p, Py_ssize_t n, Py_ssize_t u, Py_ssize_t n_ref, const int64_t *lens,
                       bint at_eof, Py_ssize_t min_records, Py_ssize_t min_bytes) noexcept nogil:
    """1 if records chain from ``u``, 0 if not, -1 if the buffer ends before deciding."""
    cdef Py_ssize_t q = u, k = 0, r
    while True:
        if q == n and at_eof:
            return 1 if k > 0 else 0
        r = _check(p + q, n - q, n_ref, lens)
        if r == 0:
            return 0
        if r < 0 or q + r > n:
            if at_eof and r > 0:
                return 0  # a record running past the end of the file
            if at_eof and r < 0:
                return 0
            return -1
        k += 1
        q += r
        if k >= min_records or q - u >= min_bytes:
            return 1


def check_record(const uint8_t[::1] data, Py_ssize_t offset, const int64_t[::1] ref_lengths):
    """4 + block_size of the record at ``offset`` if its fields are valid; 0 if invalid; -1 if more data is needed."""
    cdef Py_ssize_t n = data.shape[0]
    cdef const int64_t *lens = &ref_lengths[0] if ref_lengths.shape[0] else NULL
    if offset >= n:
        return -1
    return _check(&data[0] + offset, n - offset, ref_lengths.shape[0], lens)


def find_record(const uint8_t[::1] data, Py_ssize_t start, const int64_t[::1] ref_lengths,
                bint at_eof=False, Py_ssize_t min_records=5, Py_ssize_t min_bytes=262144):
    """First offset >= ``start`` where a chain of valid records begins: ``(offset, status)``.

    status 1: found; 0: no record starts in the buffer; -1: the candidate at
    ``offset`` needs more data to decide (read further and call again).
    """
    cdef Py_ssize_t n = data.shape[0], u = start, r
    cdef const uint8_t *p
    cdef const int64_t *lens = &ref_lengths[0] if ref_lengths.shape[0] else NULL
    cdef Py_ssize_t n_ref = ref_lengths.shape[0]
    if n == 0 or start >= n:
        return start, 0
    p = &data[0]
    with nogil:
        while u < n:
            r = _chain(p, n, u, n_ref, lens, at_eof, min_records, min_bytes)
            if r != 0:
                break
            u += 1
    if u >= n:
        return n, 0
    return u, (1 if r == 1 else -1)


def walk_records(const uint8_t[::1] data, Py_ssize_t start=0, bint starts=False):
    """Walk records by their block_size from ``start``: ``(next, count, starts_list)``.

    Counts the records that start at or after ``start`` and whose 4-byte length
    field is in the buffer; ``next`` is where the following record starts (may be
    past the end of the buffer). Records are not validated.
    """
    cdef Py_ssize_t n = data.shape[0], pos = start, count = 0
    cdef const uint8_t *p
    cdef list out = [] if starts else None
    if n == 0:
        return start, 0, out
    p = &data[0]
    if not starts:
        with nogil:
            while pos + 4 <= n:
                pos += 4 + <Py_ssize_t>_u32(p + pos)
                count += 1
    else:
        while pos + 4 <= n:
            out.append(pos)
            pos += 4 + <Py_ssize_t>_u32(p + pos)
            count += 1
    return pos, count, out


def first_at_or_after(const uint8_t[::1] data, Py_ssize_t start, int32_t ref, int32_t pos):
    """First complete-header record from ``start`` whose (refID, pos) >= (ref, pos), refID -1 last.

    Returns ``(offset, status)``: status 1 found, -1 the buffer ended first
    (``offset`` is where the next record starts).
    """
    cdef Py_ssize_t n = data.shape[0], q = start
    cdef const uint8_t *p
    cdef uint32_t r_ref, want_ref
    cdef int32_t r_pos
    if n == 0:
        return start, -1
    p = &data[0]
    want_ref = <uint32_t>ref
    with nogil:
        while q + 12 <= n:
            r_ref = <uint32_t>_i32(p + q + 4)  # -1 becomes the largest: unplaced reads sort last
            r_pos = _i32(p + q + 8)
            if r_ref > want_ref or (r_ref == want_ref and r_pos >= pos):
                break
            q += 4 + <Py_ssize_t>_u32(p + q)
    if q + 12 <= n:
        return q, 1
    return q, -1


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
