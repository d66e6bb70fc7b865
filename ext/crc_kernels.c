/* CRC32, CRC32C and CRC64NVME, chosen at run time among: portable slicing-by-16;
 * PCLMULQDQ folding; VPCLMULQDQ folding on 256-bit (AVX2) or 512-bit (AVX-512)
 * registers; on AArch64, PMULL folding with the CRC32/CRC32C instructions for
 * the tails.  CRC32C also runs SSE4.2 crc32-instruction streams beside the
 * folding on large x86 buffers (see crc32c_hybrid).
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

/* 256/512-bit VPCLMULQDQ code needs GCC >= 10 or clang >= 8 (intrinsics such as _mm512_zextsi128_si512). */
#ifndef GS_VPCLMUL
#if GS_X86 && (defined(__clang__) ? __clang_major__ >= 8 : __GNUC__ >= 10)
#define GS_VPCLMUL 1
#else
#define GS_VPCLMUL 0
#endif
#endif

#if defined(__aarch64__) && defined(__GNUC__) && defined(__linux__)
#define GS_ARM 1
#include <arm_acle.h>
#include <arm_neon.h>
#include <sys/auxv.h>
#ifndef HWCAP_PMULL
#define HWCAP_PMULL (1 << 4)
#endif
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#else
#define GS_ARM 0
#endif

typedef struct {
    int width;
    uint64_t poly; /* reflected */
    uint64_t mask; /* all ones of the width */
    uint64_t table[16][256]; /* table[k][b]: byte b followed by k zero bytes */
    uint64_t x2n[64]; /* x^(2^k) mod P */
    /* fold constants for distances of 128, 256, 384, 512, 1024 and 2048 bits */
    uint64_t k128[2], k256[2], k384[2], k512[2], k1024[2], k2048[2];
    /* for shifting 32-bit states with CLMUL + crc32 (CRC32C): x^r for r < 64, x^(2^k - 33) for k >= 6 */
    uint64_t xlow[64], xpow2k_33[64];
} crc_def;

static crc_def defs[GS_CRC_NALGS];
static const uint64_t polys[GS_CRC_NALGS] = {0xEDB88320u, 0x82F63B78u, 0x9A6C9329AC4BC9B5ull};
static const int widths[GS_CRC_NALGS] = {32, 32, 64};
static int initialised = 0;
/* CRC32C buffers at least this long use CLMUL and the crc32 instruction together. */
#define GS_HYBRID_MIN 24576
static int best_path = GS_PATH_PORTABLE;
static int active_path = GS_PATH_PORTABLE;
static int supported[GS_CRC_NPATHS] = {1, 0, 0, 0, 0};

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
    for (int k = 1; k < 16; k++)
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
    for (int r = 0; r < 64; r++)
        d->xlow[r] = xpow(d, (uint64_t)r);
    for (int k = 6; k < 64; k++)
        d->xpow2k_33[k] = xpow(d, (1ull << k) - 33);
}

/* ---- portable: slicing-by-16 ----------------------------------------------- */

static uint64_t table_update(const crc_def *d, uint64_t s, const uint8_t *p, size_t n)
{
    const uint64_t(*t)[256] = d->table;
    while (n && ((uintptr_t)p & 7)) {
        s = t[0][(s ^ *p++) & 0xff] ^ (s >> 8);
        n--;
    }
    while (n >= 16) {
        uint64_t v = load64le(p) ^ s, w = load64le(p + 8);
        s = t[15][v & 0xff] ^ t[14][(v >> 8) & 0xff] ^ t[13][(v >> 16) & 0xff] ^ t[12][(v >> 24) & 0xff] ^
            t[11][(v >> 32) & 0xff] ^ t[10][(v >> 40) & 0xff] ^ t[9][(v >> 48) & 0xff] ^ t[8][v >> 56] ^
            t[7][w & 0xff] ^ t[6][(w >> 8) & 0xff] ^ t[5][(w >> 16) & 0xff] ^ t[4][(w >> 24) & 0xff] ^
            t[3][(w >> 32) & 0xff] ^ t[2][(w >> 40) & 0xff] ^ t[1][(w >> 48) & 0xff] ^ t[0][w >> 56];
        p += 16;
        n -= 16;
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
#define GS_TARGET_AVX2 __attribute__((target("avx2,vpclmulqdq,pclmul,sse4.2")))
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

#if GS_VPCLMUL

/* ---- AVX2 + VPCLMULQDQ (256-bit; AMD Zen 3, Intel Alder Lake) ---------------- */

GS_TARGET_AVX2
static inline __m256i fold256(__m256i x, __m256i k, __m256i data)
{
    return _mm256_xor_si256(_mm256_xor_si256(_mm256_clmulepi64_epi128(x, k, 0x00), _mm256_clmulepi64_epi128(x, k, 0x11)),
                            data);
}

#define LDY(q) _mm256_loadu_si256((const __m256i *)(q))

/* Folds n >= 256 bytes with 8 256-bit accumulators (16 lanes of 128 bits). */
GS_TARGET_AVX2
static uint64_t fold_avx2(int alg, const crc_def *d, uint64_t s, const uint8_t *p, size_t n)
{
    __m256i y0 = _mm256_xor_si256(LDY(p), _mm256_zextsi128_si256(_mm_cvtsi64_si128((long long)s)));
    __m256i y1 = LDY(p + 32), y2 = LDY(p + 64), y3 = LDY(p + 96);
    __m256i y4 = LDY(p + 128), y5 = LDY(p + 160), y6 = LDY(p + 192), y7 = LDY(p + 224);
    p += 256;
    n -= 256;
    const __m256i k8 = _mm256_broadcastsi128_si256(kvec(d->k2048));
    while (n >= 256) {
        y0 = fold256(y0, k8, LDY(p));
        y1 = fold256(y1, k8, LDY(p + 32));
        y2 = fold256(y2, k8, LDY(p + 64));
        y3 = fold256(y3, k8, LDY(p + 96));
        y4 = fold256(y4, k8, LDY(p + 128));
        y5 = fold256(y5, k8, LDY(p + 160));
        y6 = fold256(y6, k8, LDY(p + 192));
        y7 = fold256(y7, k8, LDY(p + 224));
        p += 256;
        n -= 256;
    }
    const __m256i k1 = _mm256_broadcastsi128_si256(kvec(d->k256));
    y1 = fold256(y0, k1, y1);
    y2 = fold256(y1, k1, y2);
    y3 = fold256(y2, k1, y3);
    y4 = fold256(y3, k1, y4);
    y5 = fold256(y4, k1, y5);
    y6 = fold256(y5, k1, y6);
    y0 = fold256(y6, k1, y7);
    while (n >= 32) {
        y0 = fold256(y0, k1, LDY(p));
        p += 32;
        n -= 32;
    }
    const __m128i k128 = kvec(d->k128);
    __m128i x = _mm_xor_si128(fold128(_mm256_castsi256_si128(y0), k128), _mm256_extracti128_si256(y0, 1));
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

/* ---- AVX-512 + VPCLMULQDQ (512-bit; AMD Zen 4, Intel Ice Lake and later) ------ */

GS_TARGET_AVX512
static inline __m512i fold512(__m512i x, __m512i k, __m512i data)
{
    return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11),
                                     data, 0x96);
}

#define LDZ(q) _mm512_loadu_si512((const void *)(q))

/* Fold the four 128-bit lanes of a 512-bit accumulator into one 128-bit block. */
GS_TARGET_AVX512
static inline __m128i lanes_to_128(const crc_def *d, __m512i z)
{
    __m128i l0 = _mm512_extracti32x4_epi32(z, 0), l1 = _mm512_extracti32x4_epi32(z, 1);
    __m128i l2 = _mm512_extracti32x4_epi32(z, 2), l3 = _mm512_extracti32x4_epi32(z, 3);
    __m128i x = _mm_ternarylogic_epi64(fold128(l0, kvec(d->k384)), fold128(l1, kvec(d->k256)), l3, 0x96);
    return _mm_xor_si128(x, fold128(l2, kvec(d->k128)));
}

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
    __m128i x = lanes_to_128(d, z0);
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


#endif /* GS_VPCLMUL */

/* ---- CRC32C: CLMUL folding and the crc32 instruction side by side ----------
 * The folding is bound by CLMUL throughput and the crc32 instruction runs on
 * other execution units, so the buffer is cut into a folded region A and three
 * crc32 streams B1 B2 B3 that advance in the same loop; their states are then
 * shifted into place (state * x^(8 len) mod P) and XOR-ed together. */

/* a * b * x^33 mod P for reflected 32-bit CRC32C values: CLMUL, then crc32 reduces. */
GS_TARGET_SSE
static inline uint32_t mul33(uint32_t a, uint32_t b)
{
    __m128i prod = _mm_clmulepi64_si128(_mm_cvtsi32_si128((int)a), _mm_cvtsi32_si128((int)b), 0);
    return (uint32_t)_mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(prod));
}

/* x^e mod P (CRC32C), e >= 0, by CLMUL multiplications. */
GS_TARGET_SSE
static uint32_t xpow_fast32(const crc_def *d, uint64_t e)
{
    uint32_t p = (uint32_t)d->xlow[e & 63];
    e >>= 6;
    for (int k = 6; e; k++, e >>= 1)
        if (e & 1)
            p = mul33(p, (uint32_t)d->xpow2k_33[k]);
    return p;
}

/* The state c of a region, moved forward over `len` more bytes (len >= 5). */
GS_TARGET_SSE
static inline uint32_t shift32(const crc_def *d, uint32_t c, uint64_t len)
{
    return mul33(c, xpow_fast32(d, 8 * len - 33));
}

#if GS_VPCLMUL

#define HYB_Q 2 /* qwords per crc32 stream per loop iteration */

GS_TARGET_AVX512
static uint64_t crc32c_hybrid(const crc_def *d, uint64_t s, const uint8_t *p, size_t n)
{
    const size_t per = 256 + 3 * 8 * HYB_Q;
    const size_t iters = n / per;
    const size_t A = 256 * iters, B = 8 * HYB_Q * iters;
    const uint8_t *pa = p, *p1 = p + A, *p2 = p1 + B, *p3 = p2 + B, *end = p + n;
    uint64_t c1 = 0, c2 = 0, c3 = 0;
    __m512i z0 = _mm512_xor_si512(LDZ(pa), _mm512_zextsi128_si512(_mm_cvtsi64_si128((long long)s)));
    __m512i z1 = LDZ(pa + 64), z2 = LDZ(pa + 128), z3 = LDZ(pa + 192);
    const __m512i k4 = _mm512_broadcast_i32x4(kvec(d->k2048));
    pa += 256;
    for (size_t i = 0;;) {
        for (int q = 0; q < HYB_Q; q++) {
            uint64_t v1, v2, v3;
            memcpy(&v1, p1, 8);
            memcpy(&v2, p2, 8);
            memcpy(&v3, p3, 8);
            c1 = _mm_crc32_u64(c1, v1);
            c2 = _mm_crc32_u64(c2, v2);
            c3 = _mm_crc32_u64(c3, v3);
            p1 += 8;
            p2 += 8;
            p3 += 8;
        }
        if (++i == iters)
            break;
        z0 = fold512(z0, k4, LDZ(pa));
        z1 = fold512(z1, k4, LDZ(pa + 64));
        z2 = fold512(z2, k4, LDZ(pa + 128));
        z3 = fold512(z3, k4, LDZ(pa + 192));
        pa += 256;
    }
    const __m512i k1 = _mm512_broadcast_i32x4(kvec(d->k512));
    z0 = fold512(z0, k1, z1);
    z0 = fold512(z0, k1, z2);
    z0 = fold512(z0, k1, z3);
    uint8_t last[16];
    _mm_storeu_si128((__m128i *)last, lanes_to_128(d, z0));
    uint32_t ca = (uint32_t)hw_crc32c(0, last, 16);
    uint32_t state = shift32(d, ca, 3 * B) ^ shift32(d, (uint32_t)c1, 2 * B) ^ shift32(d, (uint32_t)c2, B) ^ (uint32_t)c3;
    return hw_crc32c(state, p3, (size_t)(end - p3));
}

#define HYB_AVX2_Q 3 /* qwords per crc32 stream per 256 folded bytes */

/* AVX2 + VPCLMULQDQ: 8 ymm accumulators + 3 crc32 streams. */
GS_TARGET_AVX2
static uint64_t crc32c_hybrid_avx2(const crc_def *d, uint64_t s, const uint8_t *p, size_t n)
{
    const size_t per = 256 + 3 * 8 * HYB_AVX2_Q;
    const size_t iters = n / per;
    const size_t A = 256 * iters, B = 8 * HYB_AVX2_Q * iters;
    const uint8_t *pa = p, *p1 = p + A, *p2 = p1 + B, *p3 = p2 + B, *end = p + n;
    uint64_t c1 = 0, c2 = 0, c3 = 0;
    __m256i y0 = _mm256_xor_si256(LDY(pa), _mm256_zextsi128_si256(_mm_cvtsi64_si128((long long)s)));
    __m256i y1 = LDY(pa + 32), y2 = LDY(pa + 64), y3 = LDY(pa + 96);
    __m256i y4 = LDY(pa + 128), y5 = LDY(pa + 160), y6 = LDY(pa + 192), y7 = LDY(pa + 224);
    const __m256i k8 = _mm256_broadcastsi128_si256(kvec(d->k2048));
    pa += 256;
    for (size_t i = 0;;) {
        for (int q = 0; q < HYB_AVX2_Q; q++) {
            uint64_t v1, v2, v3;
            memcpy(&v1, p1, 8);
            memcpy(&v2, p2, 8);
            memcpy(&v3, p3, 8);
            c1 = _mm_crc32_u64(c1, v1);
            c2 = _mm_crc32_u64(c2, v2);
            c3 = _mm_crc32_u64(c3, v3);
            p1 += 8;
            p2 += 8;
            p3 += 8;
        }
        if (++i == iters)
            break;
        y0 = fold256(y0, k8, LDY(pa));
        y1 = fold256(y1, k8, LDY(pa + 32));
        y2 = fold256(y2, k8, LDY(pa + 64));
        y3 = fold256(y3, k8, LDY(pa + 96));
        y4 = fold256(y4, k8, LDY(pa + 128));
        y5 = fold256(y5, k8, LDY(pa + 160));
        y6 = fold256(y6, k8, LDY(pa + 192));
        y7 = fold256(y7, k8, LDY(pa + 224));
        pa += 256;
    }
    const __m256i k1 = _mm256_broadcastsi128_si256(kvec(d->k256));
    y1 = fold256(y0, k1, y1);
    y2 = fold256(y1, k1, y2);
    y3 = fold256(y2, k1, y3);
    y4 = fold256(y3, k1, y4);
    y5 = fold256(y4, k1, y5);
    y6 = fold256(y5, k1, y6);
    y0 = fold256(y6, k1, y7);
    const __m128i k128 = kvec(d->k128);
    __m128i x = _mm_xor_si128(fold128(_mm256_castsi256_si128(y0), k128), _mm256_extracti128_si256(y0, 1));
    uint8_t last[16];
    _mm_storeu_si128((__m128i *)last, x);
    uint32_t ca = (uint32_t)hw_crc32c(0, last, 16);
    uint32_t state = shift32(d, ca, 3 * B) ^ shift32(d, (uint32_t)c1, 2 * B) ^ shift32(d, (uint32_t)c2, B) ^ (uint32_t)c3;
    return hw_crc32c(state, p3, (size_t)(end - p3));
}

#endif /* GS_VPCLMUL */

#define HYB_SSE_Q 4 /* qwords per crc32 stream per 128 folded bytes */

/* The same for CPUs with PCLMULQDQ but no VPCLMULQDQ: 8 xmm accumulators + 3 crc32 streams. */
GS_TARGET_SSE
static uint64_t crc32c_hybrid_sse(const crc_def *d, uint64_t s, const uint8_t *p, size_t n)
{
    const size_t per = 128 + 3 * 8 * HYB_SSE_Q;
    const size_t iters = n / per;
    const size_t A = 128 * iters, B = 8 * HYB_SSE_Q * iters;
    const uint8_t *pa = p, *p1 = p + A, *p2 = p1 + B, *p3 = p2 + B, *end = p + n;
    uint64_t c1 = 0, c2 = 0, c3 = 0;
    __m128i x0 = _mm_xor_si128(LD(pa), _mm_cvtsi64_si128((long long)s));
    __m128i x1 = LD(pa + 16), x2 = LD(pa + 32), x3 = LD(pa + 48);
    __m128i x4 = LD(pa + 64), x5 = LD(pa + 80), x6 = LD(pa + 96), x7 = LD(pa + 112);
    const __m128i k8 = kvec(d->k1024);
    pa += 128;
    for (size_t i = 0;;) {
        for (int q = 0; q < HYB_SSE_Q; q++) {
            uint64_t v1, v2, v3;
            memcpy(&v1, p1, 8);
            memcpy(&v2, p2, 8);
            memcpy(&v3, p3, 8);
            c1 = _mm_crc32_u64(c1, v1);
            c2 = _mm_crc32_u64(c2, v2);
            c3 = _mm_crc32_u64(c3, v3);
            p1 += 8;
            p2 += 8;
            p3 += 8;
        }
        if (++i == iters)
            break;
        x0 = _mm_xor_si128(fold128(x0, k8), LD(pa));
        x1 = _mm_xor_si128(fold128(x1, k8), LD(pa + 16));
        x2 = _mm_xor_si128(fold128(x2, k8), LD(pa + 32));
        x3 = _mm_xor_si128(fold128(x3, k8), LD(pa + 48));
        x4 = _mm_xor_si128(fold128(x4, k8), LD(pa + 64));
        x5 = _mm_xor_si128(fold128(x5, k8), LD(pa + 80));
        x6 = _mm_xor_si128(fold128(x6, k8), LD(pa + 96));
        x7 = _mm_xor_si128(fold128(x7, k8), LD(pa + 112));
        pa += 128;
    }
    const __m128i k1 = kvec(d->k128);
    x1 = _mm_xor_si128(fold128(x0, k1), x1);
    x2 = _mm_xor_si128(fold128(x1, k1), x2);
    x3 = _mm_xor_si128(fold128(x2, k1), x3);
    x4 = _mm_xor_si128(fold128(x3, k1), x4);
    x5 = _mm_xor_si128(fold128(x4, k1), x5);
    x6 = _mm_xor_si128(fold128(x5, k1), x6);
    x0 = _mm_xor_si128(fold128(x6, k1), x7);
    uint8_t last[16];
    _mm_storeu_si128((__m128i *)last, x0);
    uint32_t ca = (uint32_t)hw_crc32c(0, last, 16);
    uint32_t state = shift32(d, ca, 3 * B) ^ shift32(d, (uint32_t)c1, 2 * B) ^ shift32(d, (uint32_t)c2, B) ^ (uint32_t)c3;
    return hw_crc32c(state, p3, (size_t)(end - p3));
}

#endif /* GS_X86 */


#if GS_ARM

/* ---- AArch64: PMULL folding; the CRC32/CRC32C instructions for the tails ---- */

#define GS_TARGET_ARM __attribute__((target("+crc+crypto")))

GS_TARGET_ARM
static uint64_t arm_crc32x(int alg, uint64_t s, const uint8_t *p, size_t n)
{
    uint32_t c = (uint32_t)s;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = alg == GS_CRC32C ? __crc32cd(c, v) : __crc32d(c, v);
        p += 8;
        n -= 8;
    }
    while (n--) {
        c = alg == GS_CRC32C ? __crc32cb(c, *p) : __crc32b(c, *p);
        p++;
    }
    return c;
}

static inline uint64_t arm_tail(int alg, const crc_def *d, uint64_t s, const uint8_t *p, size_t n)
{
    if (alg == GS_CRC64NVME)
        return table_update(d, s, p, n);
    return arm_crc32x(alg, s, p, n);
}

GS_TARGET_ARM
static inline uint64x2_t fold_pmull1(uint64x2_t x, poly64x2_t k, uint64x2_t data)
{
    poly64x2_t px = vreinterpretq_p64_u64(x);
    uint64x2_t lo = vreinterpretq_u64_p128(vmull_p64(vgetq_lane_p64(px, 0), vgetq_lane_p64(k, 0)));
    uint64x2_t hi = vreinterpretq_u64_p128(vmull_high_p64(px, k));
    return veorq_u64(veorq_u64(lo, hi), data);
}

#define LDA(q) vreinterpretq_u64_u8(vld1q_u8(q))

GS_TARGET_ARM
static inline poly64x2_t kvec_arm(const uint64_t k[2])
{
    return vreinterpretq_p64_u64(vld1q_u64(k));
}

/* Folds n >= 64 bytes with 8 (then 1) 128-bit accumulators, as fold_sse does. */
GS_TARGET_ARM
static uint64_t fold_pmull(int alg, const crc_def *d, uint64_t s, const uint8_t *p, size_t n)
{
    uint64x2_t x0 = veorq_u64(LDA(p), vsetq_lane_u64(s, vdupq_n_u64(0), 0));
    p += 16;
    n -= 16;
    if (n >= 240) {
        uint64x2_t x1 = LDA(p), x2 = LDA(p + 16), x3 = LDA(p + 32), x4 = LDA(p + 48);
        uint64x2_t x5 = LDA(p + 64), x6 = LDA(p + 80), x7 = LDA(p + 96);
        p += 112;
        n -= 112;
        const poly64x2_t k8 = kvec_arm(d->k1024);
        while (n >= 128) {
            x0 = fold_pmull1(x0, k8, LDA(p));
            x1 = fold_pmull1(x1, k8, LDA(p + 16));
            x2 = fold_pmull1(x2, k8, LDA(p + 32));
            x3 = fold_pmull1(x3, k8, LDA(p + 48));
            x4 = fold_pmull1(x4, k8, LDA(p + 64));
            x5 = fold_pmull1(x5, k8, LDA(p + 80));
            x6 = fold_pmull1(x6, k8, LDA(p + 96));
            x7 = fold_pmull1(x7, k8, LDA(p + 112));
            p += 128;
            n -= 128;
        }
        const poly64x2_t k1 = kvec_arm(d->k128);
        x1 = fold_pmull1(x0, k1, x1);
        x2 = fold_pmull1(x1, k1, x2);
        x3 = fold_pmull1(x2, k1, x3);
        x4 = fold_pmull1(x3, k1, x4);
        x5 = fold_pmull1(x4, k1, x5);
        x6 = fold_pmull1(x5, k1, x6);
        x0 = fold_pmull1(x6, k1, x7);
    }
    const poly64x2_t k1 = kvec_arm(d->k128);
    while (n >= 16) {
        x0 = fold_pmull1(x0, k1, LDA(p));
        p += 16;
        n -= 16;
    }
    uint8_t last[16];
    vst1q_u8(last, vreinterpretq_u8_u64(x0));
    s = arm_tail(alg, d, 0, last, 16);
    return arm_tail(alg, d, s, p, n);
}

#endif /* GS_ARM */

/* ---- dispatch ------------------------------------------------------------- */

static uint64_t update_state(int alg, int path, uint64_t s, const uint8_t *p, size_t n)
{
    const crc_def *d = &defs[alg];
#if GS_X86
#if GS_VPCLMUL
    if (path == GS_PATH_AVX512 && n >= 512) {
        if (alg == GS_CRC32C && n >= GS_HYBRID_MIN)
            return crc32c_hybrid(d, s, p, n);
        return fold_avx512(alg, d, s, p, n);
    }
    if (path == GS_PATH_AVX2 && alg == GS_CRC32C && n >= GS_HYBRID_MIN)
        return crc32c_hybrid_avx2(d, s, p, n);
    if (path >= GS_PATH_AVX2 && n >= 256)
        return fold_avx2(alg, d, s, p, n);
#endif
    if (path >= GS_PATH_PCLMUL) {
        if (alg == GS_CRC32C && path == GS_PATH_PCLMUL && n >= GS_HYBRID_MIN)
            return crc32c_hybrid_sse(d, s, p, n);
        if (n >= 64)
            return fold_sse(alg, d, s, p, n);
        return tail_update(alg, d, s, p, n);
    }
#elif GS_ARM
    if (path == GS_PATH_PMULL)
        return n >= 64 ? fold_pmull(alg, d, s, p, n) : arm_tail(alg, d, s, p, n);
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
#if GS_VPCLMUL
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("vpclmulqdq"))
            supported[GS_PATH_AVX2] = 1;
        if (supported[GS_PATH_AVX2] && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("vpclmulqdq"))
            supported[GS_PATH_AVX512] = 1;
#endif
    }
#endif
#if GS_ARM
    {
        unsigned long hw = getauxval(AT_HWCAP);
        if ((hw & HWCAP_PMULL) && (hw & HWCAP_CRC32))
            supported[GS_PATH_PMULL] = 1;
    }
#endif
    best_path = GS_PATH_PORTABLE;
    for (int path = 0; path < GS_CRC_NPATHS; path++)
        if (supported[path])
            best_path = path;
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
