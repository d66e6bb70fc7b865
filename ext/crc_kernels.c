/* CRC32, CRC32C and CRC64NVME: portable slicing-by-8, PCLMULQDQ folding and
 * VPCLMULQDQ/AVX-512 folding, chosen at run time.
 *
 * Representation.  A reflected CRC of width w keeps the coefficient of x^d in
 * bit (w-1-d).  A 16-byte block loaded into a 128-bit register keeps the
 * coefficient of x^(127-k) in bit k (byte 0, bit 0 is the highest degree).
 *
 * Folding.  After XOR-ing the CRC state into the first w bits of the message,
 * the CRC of a message M is (M(x) * x^w) mod P; a 128-bit block A that sits D
 * bits before another block B can be replaced by A * x^D mod P and XOR-ed into
 * B.  With A = A_hi * x^64 + A_lo (A_hi = the register's low qword), a
 * carry-less multiply of 64-bit reflected operands yields x * product in the
 * register convention, so
 *     fold(A) = clmul(A_hi, x^(D+63) mod P) ^ clmul(A_lo, x^(D-1) mod P)
 * where each constant is the reflected remainder shifted to the top of 64 bits
 * (degree < w <= 64, so every product fits in 127 bits).  The constants are
 * computed at init from x^n mod P (repeated squaring), never typed in.
 * The last 128-bit block plus the tail is then run through the byte-wise
 * algorithm (or the SSE4.2 crc32 instruction for CRC32C) from a zero state,
 * which avoids a Barrett reduction altogether.
 */
#include "crc_kernels.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define GS_X86 1
#include <immintrin.h>
#else
#define GS_X86 0
#endif

typedef struct {
    int width;
    uint64_t poly; /* reflected */
    uint64_t mask; /* all ones of the width */
    uint64_t table[8][256];
    uint64_t x2n[64]; /* x^(2^k) mod P */
    /* fold constants for distances of 128, 256, 384, 512, 1024 and 2048 bits */
    uint64_t k128[2], k256[2], k384[2], k512[2], k1024[2], k2048[2];
} crc_def;

static crc_def defs[GS_CRC_NALGS];
static const uint64_t polys[GS_CRC_NALGS] = {0xEDB88320u, 0x82F63B78u, 0x9A6C9329AC4BC9B5ull};
static const int widths[GS_CRC_NALGS] = {32, 32, 64};
static int initialised = 0;
static int best_path = GS_PATH_PORTABLE;
static int active_path = GS_PATH_PORTABLE;
static int supported[GS_CRC_NPATHS] = {1, 0, 0};

static inline uint64_t load64le(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* a * b mod P, both reflected. */
static uint64_t mulmod(const crc_def *d, uint64_t a, uint64_t b)
{
    uint64_t m = 1ull << (d->width - 1), p = 0;
    if (a == 0 || b == 0)
        return 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0)
                break;
        }
        m >>= 1;
        b = (b & 1) ? (b >> 1) ^ d->poly : b >> 1;
    }
    return p;
}

static uint64_t xpow(const crc_def *d, uint64_t n)
{
    uint64_t p = 1ull << (d->width - 1); /* x^0 */
    int k = 0;
    while (n) {
        if (n & 1)
            p = mulmod(d, d->x2n[k], p);
        n >>= 1;
        k++;
    }
    return p;
}

static void fold_constants(const crc_def *d, uint64_t bits, uint64_t out[2])
{
    int shift = 64 - d->width;
    out[0] = xpow(d, bits + 63) << shift; /* multiplies the low qword (first 8 bytes) */
    out[1] = xpow(d, bits - 1) << shift;  /* multiplies the high qword */
}

static void init_def(crc_def *d, uint64_t poly, int width)
{
    d->width = width;
    d->poly = poly;
    d->mask = width == 64 ? ~0ull : ((1ull << width) - 1);
    for (int b = 0; b < 256; b++) {
        uint64_t c = (uint64_t)b;
        for (int i = 0; i < 8; i++)
            c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
        d->table[0][b] = c;
    }
    for (int k = 1; k < 8; k++)
        for (int b = 0; b < 256; b++)
            d->table[k][b] = (d->table[k - 1][b] >> 8) ^ d->table[0][d->table[k - 1][b] & 0xff];
    d->x2n[0] = 1ull << (width - 2); /* x^1 */
    for (int k = 1; k < 64; k++)
        d->x2n[k] = mulmod(d, d->x2n[k - 1], d->x2n[k - 1]);
    fold_constants(d, 128, d->k128);
    fold_constants(d, 256, d->k256);
    fold_constants(d, 384, d->k384);
    fold_constants(d, 512, d->k512);
    fold_constants(d, 1024, d->k1024);
    fold_constants(d, 2048, d->k2048);
}

/* ---- portable: slicing-by-8 ------------------------------------------------ */

static uint64_t table_update(const crc_def *d, uint64_t s, const uint8_t *p, size_t n)
{
    const uint64_t(*t)[256] = d->table;
    while (n && ((uintptr_t)p & 7)) {
        s = t[0][(s ^ *p++) & 0xff] ^ (s >> 8);
        n--;
    }
    while (n >= 8) {
        uint64_t v = load64le(p) ^ s;
        s = t[7][v & 0xff] ^ t[6][(v >> 8) & 0xff] ^ t[5][(v >> 16) & 0xff] ^ t[4][(v >> 24) & 0xff] ^
            t[3][(v >> 32) & 0xff] ^ t[2][(v >> 40) & 0xff] ^ t[1][(v >> 48) & 0xff] ^ t[0][v >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        s = t[0][(s ^ *p++) & 0xff] ^ (s >> 8);
    return s;
}

#if GS_X86

#define GS_TARGET_SSE __attribute__((target("pclmul,sse4.2")))
#define GS_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,vpclmulqdq,pclmul,sse4.2")))

/* The SSE4.2 crc32 instruction computes CRC32C state updates (no inversion). */
GS_TARGET_SSE
static uint64_t hw_crc32c(uint64_t s, const uint8_t *p, size_t n)
{
    uint32_t c = (uint32_t)s;
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8(c, *p++);
        n--;
    }
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = _mm_crc32_u64(c64, v);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = _mm_crc32_u8(c, *p++);
    return c;
}

static inline uint64_t tail_update(int alg, const crc_def *d, uint64_t s, const uint8_t *p, size_t n)
{
    if (alg == GS_CRC32C)
        return hw_crc32c(s, p, n);
    return table_update(d, s, p, n);
}

GS_TARGET_SSE
static inline __m128i fold128(__m128i x, __m128i k)
{
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

GS_TARGET_SSE
static inline __m128i kvec(const uint64_t k[2])
{
    return _mm_set_epi64x((long long)k[1], (long long)k[0]);
}

#define LD(q) _mm_loadu_si128((const __m128i *)(q))

/* Folds n >= 32 bytes with 8 (then 1) 128-bit accumulators; returns the state. */
GS_TARGET_SSE
static uint64_t fold_sse(int alg, const crc_def *d, uint64_t s, const uint8_t *p, size_t n)
{
    __m128i x0 = _mm_xor_si128(LD(p), _mm_cvtsi64_si128((long long)s));
    p += 16;
    n -= 16;
    if (n >= 240) {
        __m128i x1 = LD(p), x2 = LD(p + 16), x3 = LD(p + 32), x4 = LD(p + 48);
        __m128i x5 = LD(p + 64), x6 = LD(p + 80), x7 = LD(p + 96);
        p += 112;
        n -= 112;
        const __m128i k8 = kvec(d->k1024);
        while (n >= 128) {
            x0 = _mm_xor_si128(fold128(x0, k8), LD(p));
            x1 = _mm_xor_si128(fold128(x1, k8), LD(p + 16));
            x2 = _mm_xor_si128(fold128(x2, k8), LD(p + 32));
            x3 = _mm_xor_si128(fold128(x3, k8), LD(p + 48));
            x4 = _mm_xor_si128(fold128(x4, k8), LD(p + 64));
            x5 = _mm_xor_si128(fold128(x5, k8), LD(p + 80));
            x6 = _mm_xor_si128(fold128(x6, k8), LD(p + 96));
            x7 = _mm_xor_si128(fold128(x7, k8), LD(p + 112));
            p += 128;
            n -= 128;
        }
        const __m128i k1 = kvec(d->k128);
        x1 = _mm_xor_si128(fold128(x0, k1), x1);
        x2 = _mm_xor_si128(fold128(x1, k1), x2);
        x3 = _mm_xor_si128(fold128(x2, k1), x3);
        x4 = _mm_xor_si128(fold128(x3, k1), x4);
        x5 = _mm_xor_si128(fold128(x4, k1), x5);
        x6 = _mm_xor_si128(fold128(x5, k1), x6);
        x0 = _mm_xor_si128(fold128(x6, k1), x7);
    }
    const __m128i k1 = kvec(d->k128);
    while (n >= 16) {
        x0 = _mm_xor_si128(fold128(x0, k1), LD(p));
        p += 16;
        n -= 16;
    }
    uint8_t last[16];
    _mm_storeu_si128((__m128i *)last, x0);
    s = tail_update(alg, d, 0, last, 16);
    return tail_update(alg, d, s, p, n);
}

GS_TARGET_AVX512
static inline __m512i fold512(__m512i x, __m512i k, __m512i data)
{
    return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11),
                                     data, 0x96);
}

#define LDZ(q) _mm512_loadu_si512((const void *)(q))

/* Folds n >= 256 bytes with 4 512-bit accumulators (16 lanes of 128 bits). */
GS_TARGET_AVX512
static uint64_t fold_avx512(int alg, const crc_def *d, uint64_t s, const uint8_t *p, size_t n)
{
    __m512i z0 = _mm512_xor_si512(LDZ(p), _mm512_zextsi128_si512(_mm_cvtsi64_si128((long long)s)));
    __m512i z1 = LDZ(p + 64), z2 = LDZ(p + 128), z3 = LDZ(p + 192);
    p += 256;
    n -= 256;
    const __m512i k4 = _mm512_broadcast_i32x4(kvec(d->k2048));
    while (n >= 256) {
        z0 = fold512(z0, k4, LDZ(p));
        z1 = fold512(z1, k4, LDZ(p + 64));
        z2 = fold512(z2, k4, LDZ(p + 128));
        z3 = fold512(z3, k4, LDZ(p + 192));
        p += 256;
        n -= 256;
    }
    const __m512i k1 = _mm512_broadcast_i32x4(kvec(d->k512));
    z0 = fold512(z0, k1, z1);
    z0 = fold512(z0, k1, z2);
    z0 = fold512(z0, k1, z3);
    while (n >= 64) {
        z0 = fold512(z0, k1, LDZ(p));
        p += 64;
        n -= 64;
    }
    __m128i l0 = _mm512_extracti32x4_epi32(z0, 0), l1 = _mm512_extracti32x4_epi32(z0, 1);
    __m128i l2 = _mm512_extracti32x4_epi32(z0, 2), l3 = _mm512_extracti32x4_epi32(z0, 3);
    __m128i x = _mm_ternarylogic_epi64(fold128(l0, kvec(d->k384)), fold128(l1, kvec(d->k256)), l3, 0x96);
    x = _mm_xor_si128(x, fold128(l2, kvec(d->k128)));
    const __m128i k128 = kvec(d->k128);
    while (n >= 16) {
        x = _mm_xor_si128(fold128(x, k128), LD(p));
        p += 16;
        n -= 16;
    }
    uint8_t last[16];
    _mm_storeu_si128((__m128i *)last, x);
    s = tail_update(alg, d, 0, last, 16);
    return tail_update(alg, d, s, p, n);
}

#endif /* GS_X86 */

/* ---- dispatch ------------------------------------------------------------- */

static uint64_t update_state(int alg, int path, uint64_t s, const uint8_t *p, size_t n)
{
    const crc_def *d = &defs[alg];
#if GS_X86
    if (path == GS_PATH_AVX512 && n >= 512)
        return fold_avx512(alg, d, s, p, n);
    if (path >= GS_PATH_PCLMUL) {
        if (n >= 64)
            return fold_sse(alg, d, s, p, n);
        return tail_update(alg, d, s, p, n);
    }
#else
    (void)path;
#endif
    return table_update(d, s, p, n);
}

int gs_crc_init(void)
{
    if (initialised)
        return best_path;
    for (int a = 0; a < GS_CRC_NALGS; a++)
        init_def(&defs[a], polys[a], widths[a]);
#if GS_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.2")) {
        supported[GS_PATH_PCLMUL] = 1;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("vpclmulqdq"))
            supported[GS_PATH_AVX512] = 1;
    }
#endif
    best_path = supported[GS_PATH_AVX512] ? GS_PATH_AVX512 : supported[GS_PATH_PCLMUL] ? GS_PATH_PCLMUL : GS_PATH_PORTABLE;
    active_path = best_path;
    initialised = 1;
    return best_path;
}

int gs_crc_path_supported(int path)
{
    gs_crc_init();
    return path >= 0 && path < GS_CRC_NPATHS && supported[path];
}

int gs_crc_set_path(int path)
{
    if (!gs_crc_path_supported(path))
        return -1;
    active_path = path;
    return 0;
}

int gs_crc_get_path(void)
{
    gs_crc_init();
    return active_path;
}

int gs_crc_width(int alg) { return widths[alg]; }

uint64_t gs_crc_update_path(int alg, int path, uint64_t crc, const void *buf, size_t len)
{
    const crc_def *d = &defs[alg];
    return update_state(alg, path, (crc & d->mask) ^ d->mask, (const uint8_t *)buf, len) ^ d->mask;
}

uint64_t gs_crc_update(int alg, uint64_t crc, const void *buf, size_t len)
{
    return gs_crc_update_path(alg, active_path, crc, buf, len);
}

uint64_t gs_crc_xpow(int alg, uint64_t n) { return xpow(&defs[alg], n); }

uint64_t gs_crc_combine(int alg, uint64_t crc_a, uint64_t crc_b, uint64_t len_b)
{
    const crc_def *d = &defs[alg];
    return mulmod(d, xpow(d, len_b * 8), crc_a & d->mask) ^ (crc_b & d->mask);
}

void gs_crc_fold_constants(int alg, uint64_t bits, uint64_t out[2]) { fold_constants(&defs[alg], bits, out); }
