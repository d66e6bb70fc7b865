# cython: language_level=3
"""CRC kernels (CRC32, CRC32C, CRC64NVME) over any buffer, with runtime CPU dispatch.

Private: use :mod:`genostage.checksum`.  ``GENOSTAGE_CRC_PATH`` (``avx512``,
``avx2``, ``pclmul``, ``pmull`` on AArch64, or ``portable``) forces a code path at import; :func:`set_path`
changes it later (tests use it to cover every path the CPU supports).
"""
import os

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport free, malloc

cdef extern from "crc_kernels.h":
    int gs_crc_init()
    int gs_crc_path_supported(int path)
    int gs_crc_set_path(int path)
    int gs_crc_get_path()
    uint64_t gs_crc_update(int alg, uint64_t crc, const void *buf, size_t length) nogil
    uint64_t gs_crc_update_path(int alg, int path, uint64_t crc, const void *buf, size_t length) nogil
    uint64_t gs_crc_combine(int alg, uint64_t crc_a, uint64_t crc_b, uint64_t len_b)
    uint64_t gs_crc_xpow(int alg, uint64_t n)
    void gs_crc_fold_constants(int alg, uint64_t bits, uint64_t *out)
    int gs_crc_width(int alg)

cdef extern from "md5_mb.h":
    int gs_md5_mb_lanes_supported()
    int gs_md5_mb_set_lanes(int on)
    void gs_md5_many(const uint8_t *const *bufs, const uint64_t *lens, size_t n, uint8_t *out) nogil

ALGORITHMS = ("crc32", "crc32c", "crc64nvme")
PATHS = ("portable", "pclmul", "avx2", "avx512", "pmull")
WIDTHS = {"crc32": 32, "crc32c": 32, "crc64nvme": 64}
# Buffers longer than this are checksummed with the GIL released.
NOGIL_THRESHOLD = 4096

gs_crc_init()


cdef int _alg(str name) except -1:
    try:
        return ALGORITHMS.index(name)
    except ValueError:
        raise ValueError(f"unknown CRC {name!r} (expected one of {', '.join(ALGORITHMS)})") from None


cdef uint64_t _run(int alg, int path, uint64_t value, object buf) except? 0xFFFFFFFFFFFFFFFF:
    cdef Py_buffer view
    cdef uint64_t out
    cdef const void *data
    cdef size_t n
    try:
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    except (BufferError, ValueError):
        # non-contiguous (a strided numpy view, say): checksum its bytes in C order
        buf = memoryview(buf).tobytes()
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        data = view.buf
        n = <size_t>view.len
        if n > NOGIL_THRESHOLD:
            with nogil:
                out = gs_crc_update_path(alg, path, value, data, n)
        else:
            out = gs_crc_update_path(alg, path, value, data, n)
    finally:
        PyBuffer_Release(&view)
    return out


def crc(str name, buf, uint64_t value=0):
    """The CRC ``name`` of ``buf``, continuing from ``value`` (a finished CRC of what came before)."""
    return _run(_alg(name), gs_crc_get_path(), value, buf)


def crc32(buf, uint64_t value=0):
    return _run(0, gs_crc_get_path(), value, buf)


def crc32c(buf, uint64_t value=0):
    return _run(1, gs_crc_get_path(), value, buf)


def crc64nvme(buf, uint64_t value=0):
    return _run(2, gs_crc_get_path(), value, buf)


def crc_on_path(str name, str path, buf, uint64_t value=0):
    """Like :func:`crc` on an explicit code path (which must be supported)."""
    cdef int p = _path(path)
    if not gs_crc_path_supported(p):
        raise ValueError(f"CRC path {path!r} is not supported on this CPU")
    return _run(_alg(name), p, value, buf)


def combine(str name, uint64_t crc_a, uint64_t crc_b, uint64_t len_b):
    """crc(A + B) from crc(A), crc(B) and len(B), in O(log len_b)."""
    return gs_crc_combine(_alg(name), crc_a, crc_b, len_b)


def xpow(str name, uint64_t n):
    """x^n mod P of the CRC, in its reflected representation."""
    return gs_crc_xpow(_alg(name), n)


def fold_constants(str name, uint64_t bits):
    """The two 64-bit multipliers that fold a 128-bit block forward by ``bits`` bits."""
    cdef uint64_t out[2]
    gs_crc_fold_constants(_alg(name), bits, out)
    return (out[0], out[1])


cdef int _path(str name) except -1:
    try:
        return PATHS.index(name)
    except ValueError:
        raise ValueError(f"unknown CRC path {name!r} (expected one of {', '.join(PATHS)})") from None


def supported_paths():
    """The code paths this CPU can run, slowest first."""
    return tuple(p for i, p in enumerate(PATHS) if gs_crc_path_supported(i))


def get_path():
    """The code path in use."""
    return PATHS[gs_crc_get_path()]


def set_path(str name):
    """Use code path ``name``; returns the previous one. Raises ValueError if the CPU lacks it."""
    cdef int p = _path(name)
    previous = get_path()
    if gs_crc_set_path(p) != 0:
        raise ValueError(f"CRC path {name!r} is not supported on this CPU")
    return previous


def best_path():
    """The fastest path this CPU supports."""
    paths = supported_paths()
    return paths[len(paths) - 1]


def _from_environment():
    forced = os.environ.get("GENOSTAGE_CRC_PATH", "").strip().lower()
    if forced:
        set_path(forced)


_from_environment()


def md5_lanes(on=None):
    """Whether MD5s of several buffers run eight at a time (AVX2); ``on`` turns that off or back on."""
    if on is None:
        return bool(gs_md5_mb_set_lanes(1) if gs_md5_mb_lanes_supported() else 0)
    return bool(gs_md5_mb_set_lanes(1 if on else 0))


def md5_many(bufs):
    """The MD5 digests (16 bytes each) of a sequence of buffers, computed eight at a time
    where the CPU allows (the GIL released). Equal lengths hash fastest."""
    cdef Py_ssize_t n = len(bufs), i, got = 0
    cdef Py_buffer *views = <Py_buffer *>malloc(max(n, 1) * sizeof(Py_buffer))
    cdef const uint8_t **ptrs = <const uint8_t **>malloc(max(n, 1) * sizeof(uint8_t *))
    cdef uint64_t *lens = <uint64_t *>malloc(max(n, 1) * sizeof(uint64_t))
    out = bytearray(16 * n)
    cdef uint8_t *dst = out
    if views == NULL or ptrs == NULL or lens == NULL:
        free(views)
        free(ptrs)
        free(lens)
        raise MemoryError()
    try:
        for i in range(n):
            PyObject_GetBuffer(bufs[i], &views[i], PyBUF_SIMPLE)
            got += 1
            ptrs[i] = <const uint8_t *>views[i].buf
            lens[i] = <uint64_t>views[i].len
        with nogil:
            gs_md5_many(ptrs, lens, <size_t>n, dst)
    finally:
        for i in range(got):
            PyBuffer_Release(&views[i])
        free(views)
        free(ptrs)
        free(lens)
    return [bytes(out[16 * i:16 * i + 16]) for i in range(n)]
