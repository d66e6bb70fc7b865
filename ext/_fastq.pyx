# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""FASTQ record scanning: buffers in, offsets and counts out (GIL released).

A record is four lines: ``@name``, sequence, ``+[name]``, quality of the
sequence's length. Line ends are ``\\n`` or ``\\r\\n``. The kernel never
allocates and never does I/O; the Python side (``genostage.split.fastq``)
feeds it buffers and turns its error codes into ``FormatError``.
"""
from libc.string cimport memchr, memcmp

# Error codes returned by ``scan`` (0 = none).
cdef enum:
    C_HEADER = 1      # header line does not start with '@'
    C_PLUS = 2        # third line does not start with '+'
    C_LENGTH = 3      # quality length differs from sequence length
    C_TRUNCATED = 4   # the buffer ends inside a record (only reported when final)

OK = 0
E_HEADER = C_HEADER
E_PLUS = C_PLUS
E_LENGTH = C_LENGTH
E_TRUNCATED = C_TRUNCATED


cdef inline Py_ssize_t _line_len(const unsigned char* p, Py_ssize_t start, Py_ssize_t nl) noexcept nogil:
    """Length of the line [start, nl) without a trailing CR."""
    if nl > start and p[nl - 1] == 13:
        return nl - start - 1
    return nl - start


def scan(const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end,
         long long max_records, long long max_bases, long long max_bytes,
         int step=1, bint final=False):
    """Scan whole records of ``buf[start:end]``.

    Stops after the first record (at a multiple of ``step`` records) at which
    ``records >= max_records`` or ``bases >= max_bases`` or
    ``bytes >= max_bytes`` (each counted from ``start``; pass a huge value for
    no limit), or when the buffer holds no further complete record.

    Returns ``(pos, records, bases, error, error_line, stopped)``: ``pos`` is
    the offset just after the last accepted record (a multiple of ``step``
    records after ``start``); ``error_line`` is 0-based, counted from
    ``start``; ``stopped`` is true when a limit was reached. With ``final``
    a trailing record cut short is an error (E_TRUNCATED); a last line without
    its newline must be added by the caller (``end`` then points past it).
    """
    cdef const unsigned char* p = &buf[0] if buf.shape[0] > 0 else NULL
    cdef Py_ssize_t pos = start, commit = start, rec_start, h_nl, s_nl, p_nl, q_nl
    cdef Py_ssize_t seq_len, qual_len
    cdef long long records = 0, bases = 0, c_records = 0, c_bases = 0
    cdef int error = 0
    cdef long long error_line = 0
    cdef bint stopped = False
    cdef bint blank_tail = False
    cdef const unsigned char* hit
    if end > buf.shape[0]:
        raise ValueError("end beyond the buffer")
    if start < 0 or start > end:
        raise ValueError("bad start")
    if p == NULL:
        return (start, 0, 0, 0, 0, False)
    with nogil:
        while pos < end:
            rec_start = pos
            if p[pos] != 64:  # '@'
                if p[pos] == 10 or p[pos] == 13:
                    # blank lines are allowed at the very end of the file only
                    h_nl = pos
                    while h_nl < end and (p[h_nl] == 10 or p[h_nl] == 13 or p[h_nl] == 32 or p[h_nl] == 9):
                        h_nl += 1
                    if h_nl == end:
                        blank_tail = True
                        break
                error = C_HEADER
                error_line = records * 4
                break
            hit = <const unsigned char*>memchr(p + pos, 10, end - pos)
            if hit == NULL:
                break
            h_nl = hit - p
            hit = <const unsigned char*>memchr(p + h_nl + 1, 10, end - h_nl - 1)
            if hit == NULL:
                break
            s_nl = hit - p
            if s_nl + 1 < end and p[s_nl + 1] != 43:  # '+'
                error = C_PLUS
                error_line = records * 4 + 2
                break
            hit = <const unsigned char*>memchr(p + s_nl + 1, 10, end - s_nl - 1)
            if hit == NULL:
                break
            p_nl = hit - p
            hit = <const unsigned char*>memchr(p + p_nl + 1, 10, end - p_nl - 1)
            if hit == NULL:
                break
            q_nl = hit - p
            seq_len = _line_len(p, h_nl + 1, s_nl)
            qual_len = _line_len(p, p_nl + 1, q_nl)
            if seq_len != qual_len:
                error = C_LENGTH
                error_line = records * 4 + 3
                break
            records += 1
            bases += seq_len
            pos = q_nl + 1
            if records % step == 0:
                commit = pos
                c_records = records
                c_bases = bases
                if records >= max_records or bases >= max_bases or pos - start >= max_bytes:
                    stopped = True
                    break
        if error == 0 and not stopped and final and commit < end and not (blank_tail and commit == pos):
            # Something is left that is not a whole (group of) record(s).
            if pos == end:
                # whole records but not a multiple of step
                error = C_TRUNCATED
                error_line = records * 4
            else:
                error = C_TRUNCATED
                error_line = records * 4
                # count the complete lines of the partial record
                hit = <const unsigned char*>memchr(p + pos, 10, end - pos)
                while hit != NULL:
                    error_line += 1
                    h_nl = hit - p
                    hit = <const unsigned char*>memchr(p + h_nl + 1, 10, end - h_nl - 1)
    if error:
        return (commit, c_records, c_bases, error, error_line, False)
    return (commit, c_records, c_bases, 0, 0, stopped)


cdef inline Py_ssize_t _name_end(const unsigned char* p, Py_ssize_t start, Py_ssize_t nl) noexcept nogil:
    """End of the read name in the header line [start, nl): before the first
    space/tab, without a trailing CR and without a trailing /1 or /2."""
    cdef Py_ssize_t i = start
    while i < nl and p[i] != 32 and p[i] != 9 and p[i] != 13:
        i += 1
    if i - start >= 2 and p[i - 2] == 47 and (p[i - 1] == 49 or p[i - 1] == 50):
        i -= 2
    return i


cdef inline Py_ssize_t _skip_record(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end) noexcept nogil:
    cdef int k
    cdef const unsigned char* hit
    for k in range(4):
        hit = <const unsigned char*>memchr(p + pos, 10, end - pos)
        if hit == NULL:
            return end
        pos = (hit - p) + 1
    return pos


def compare_names(const unsigned char[::1] buf1, Py_ssize_t pos1,
                  const unsigned char[::1] buf2, Py_ssize_t pos2, Py_ssize_t n):
    """Compare the names of ``n`` validated records starting at ``pos1`` in
    ``buf1`` and ``pos2`` in ``buf2`` (names without ``/1``, ``/2`` and the
    comment). Returns ``(mismatch, pos1, pos2)``: the 0-based index of the
    first record whose names differ (-1 if none) and the offsets after the
    records compared (at the mismatching record if there is one)."""
    cdef const unsigned char* a = &buf1[0] if buf1.shape[0] > 0 else NULL
    cdef const unsigned char* b = &buf2[0] if buf2.shape[0] > 0 else NULL
    cdef Py_ssize_t end1 = buf1.shape[0], end2 = buf2.shape[0], i, na, nb, ea, eb
    cdef const unsigned char* hit
    cdef Py_ssize_t mismatch = -1
    if n <= 0:
        return (-1, pos1, pos2)
    if a == NULL or b == NULL:
        raise ValueError("empty buffer")
    with nogil:
        for i in range(n):
            if pos1 >= end1 or pos2 >= end2:
                mismatch = i
                break
            hit = <const unsigned char*>memchr(a + pos1, 10, end1 - pos1)
            na = (hit - a) if hit != NULL else end1
            hit = <const unsigned char*>memchr(b + pos2, 10, end2 - pos2)
            nb = (hit - b) if hit != NULL else end2
            ea = _name_end(a, pos1 + 1, na)
            eb = _name_end(b, pos2 + 1, nb)
            if ea - pos1 != eb - pos2 or memcmp(a + pos1 + 1, b + pos2 + 1, ea - pos1 - 1) != 0:
                mismatch = i
                break
            pos1 = _skip_record(a, pos1, end1)
            pos2 = _skip_record(b, pos2, end2)
    return (mismatch, pos1, pos2)


def record_name(const unsigned char[::1] buf, Py_ssize_t pos):
    """The name (as ``compare_names`` sees it) of the record starting at ``pos``."""
    cdef const unsigned char* p = &buf[0]
    cdef Py_ssize_t end = buf.shape[0]
    cdef const unsigned char* hit = <const unsigned char*>memchr(p + pos, 10, end - pos)
    cdef Py_ssize_t nl = (hit - p) if hit != NULL else end
    cdef Py_ssize_t e = _name_end(p, pos + 1, nl)
    return bytes(buf[pos + 1:e])


def find_record_start(const unsigned char[::1] buf, Py_ssize_t pos, Py_ssize_t end):
    """The offset of the first record start at or after ``pos`` in ``buf[:end]``
    where ``pos`` may be anywhere: skip to a line start, then accept a line
    that starts with '@' whose second next line starts with '+' and whose
    quality line (third next) has the sequence's length. Returns -1 if no
    record start can be proven inside the buffer. A position 0 or just after
    a newline counts as a line start."""
    cdef const unsigned char* p = &buf[0] if buf.shape[0] > 0 else NULL
    cdef const unsigned char* hit
    cdef Py_ssize_t ls, h_nl, s_nl, p_nl, q_nl, result = -1
    if p == NULL or pos >= end:
        return -1
    with nogil:
        if pos == 0 or p[pos - 1] == 10:
            ls = pos
        else:
            hit = <const unsigned char*>memchr(p + pos, 10, end - pos)
            ls = (hit - p) + 1 if hit != NULL else end
        while ls < end:
            hit = <const unsigned char*>memchr(p + ls, 10, end - ls)
            if hit == NULL:
                break
            h_nl = hit - p
            if p[ls] == 64:
                hit = <const unsigned char*>memchr(p + h_nl + 1, 10, end - h_nl - 1)
                if hit == NULL:
                    break
                s_nl = hit - p
                if s_nl + 1 < end and p[s_nl + 1] == 43:
                    hit = <const unsigned char*>memchr(p + s_nl + 1, 10, end - s_nl - 1)
                    if hit == NULL:
                        break
                    p_nl = hit - p
                    hit = <const unsigned char*>memchr(p + p_nl + 1, 10, end - p_nl - 1)
                    if hit == NULL:
                        break
                    q_nl = hit - p
                    if _line_len(p, h_nl + 1, s_nl) == _line_len(p, p_nl + 1, q_nl):
                        result = ls
                        break
            ls = h_nl + 1
    return result


def count_lines(const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end):
    """Number of newlines in ``buf[start:end]``."""
    cdef const unsigned char* p = &buf[0] if buf.shape[0] > 0 else NULL
    cdef const unsigned char* hit
    cdef Py_ssize_t n = 0
    if p == NULL:
        return 0
    with nogil:
        while start < end:
            hit = <const unsigned char*>memchr(p + start, 10, end - start)
            if hit == NULL:
                break
            n += 1
            start = (hit - p) + 1
    return n


def compare_pairs(const unsigned char[::1] buf, Py_ssize_t pos, Py_ssize_t npairs):
    """Check that records 2i and 2i+1 (interleaved mates) from ``pos`` have
    the same name. Returns ``(mismatch, pos, 0)``: the 0-based index of the
    first pair that differs (-1 if none) and the offset after the pairs
    checked (at the mismatching pair if there is one)."""
    cdef const unsigned char* p = &buf[0] if buf.shape[0] > 0 else NULL
    cdef Py_ssize_t end = buf.shape[0], i, na, nb, ea, eb, q
    cdef const unsigned char* hit
    cdef Py_ssize_t mismatch = -1
    if npairs <= 0 or p == NULL:
        return (-1, pos, 0)
    with nogil:
        for i in range(npairs):
            q = _skip_record(p, pos, end)
            if q >= end:
                mismatch = i
                break
            hit = <const unsigned char*>memchr(p + pos, 10, end - pos)
            na = (hit - p) if hit != NULL else end
            hit = <const unsigned char*>memchr(p + q, 10, end - q)
            nb = (hit - p) if hit != NULL else end
            ea = _name_end(p, pos + 1, na)
            eb = _name_end(p, q + 1, nb)
            if ea - pos != eb - q or memcmp(p + pos + 1, p + q + 1, ea - pos - 1) != 0:
                mismatch = i
                break
            pos = _skip_record(p, q, end)
    return (mismatch, pos, 0)
