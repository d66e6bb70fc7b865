# Little-endian reads from raw bytes, shared by the BGZF and BAM kernels (textually included).
cdef inline uint16_t _u16(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint16_t>p[1] << 8)


cdef inline uint32_t _u32(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline int32_t _i32(const uint8_t *p) noexcept nogil:
    return <int32_t>_u32(p)
