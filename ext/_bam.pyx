# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""BAM record hot loops on inflated bytes: validate a record, find the next record start, walk
records, find the first record at or after a position.

Every function takes a buffer and returns offsets or counts; files and networks stay in Python
(``genostage.split.bam_io``, ``genostage.split.bam``). BGZF blocks are the ``_bgzf`` kernel's.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t


include "le.pxi"


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
