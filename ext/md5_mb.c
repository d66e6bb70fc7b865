/* Multi-buffer MD5 (RFC 1321): a portable one-block compression, and an AVX2 one that
 * runs eight blocks of eight different messages at once, lane j of each register
 * holding message j. The step constants are the RFC's table; rotations are two shifts
 * and an OR (AVX2 has no rotate). Messages of a group share the SIMD rounds for as
 * many whole blocks as the shortest has; each finishes (its remaining blocks and the
 * padding) on the portable path from its lane's state.
 */
#include "md5_mb.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define GS_MD5_X86 1
#include <immintrin.h>
#else
#define GS_MD5_X86 0
#endif

static const uint32_t K[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};
static const int S[64] = {
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
};
static const uint32_t INIT[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};

static inline int word_index(int i) {
    if (i < 16) return i;
    if (i < 32) return (5 * i + 1) & 15;
    if (i < 48) return (3 * i + 5) & 15;
    return (7 * i) & 15;
}

static inline uint32_t load_le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint32_t rotl32(uint32_t x, int s) { return (x << s) | (x >> (32 - s)); }

static void md5_block(uint32_t st[4], const uint8_t *p) {
    uint32_t m[16];
    for (int w = 0; w < 16; w++) m[w] = load_le32(p + 4 * w);
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
    for (int i = 0; i < 64; i++) {
        uint32_t f;
        if (i < 16) f = (b & c) | (~b & d);
        else if (i < 32) f = (d & b) | (~d & c);
        else if (i < 48) f = b ^ c ^ d;
        else f = c ^ (b | ~d);
        f += a + K[i] + m[word_index(i)];
        a = d;
        d = c;
        c = b;
        b += rotl32(f, S[i]);
    }
    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += d;
}

/* The rest of a message from `done` whole blocks on, padding included; digest to out. */
static void md5_finish(uint32_t st[4], const uint8_t *buf, uint64_t len, uint64_t done, uint8_t out[16]) {
    uint64_t off = done * 64;
    while (len - off >= 64) {
        md5_block(st, buf + off);
        off += 64;
    }
    uint8_t tail[128];
    size_t rest = (size_t)(len - off);
    memcpy(tail, buf + off, rest);
    tail[rest] = 0x80;
    size_t total = rest + 1 + 8 <= 64 ? 64 : 128;
    memset(tail + rest + 1, 0, total - rest - 1);
    uint64_t bits = len * 8;
    for (int i = 0; i < 8; i++) tail[total - 8 + i] = (uint8_t)(bits >> (8 * i));
    md5_block(st, tail);
    if (total == 128) md5_block(st, tail + 64);
    for (int i = 0; i < 4; i++) {
        out[4 * i] = (uint8_t)st[i];
        out[4 * i + 1] = (uint8_t)(st[i] >> 8);
        out[4 * i + 2] = (uint8_t)(st[i] >> 16);
        out[4 * i + 3] = (uint8_t)(st[i] >> 24);
    }
}

#if GS_MD5_X86
/* Eight 32-byte rows (lane j: bytes of message j) turned into eight vectors of one word each. */
__attribute__((target("avx2"))) static inline void transpose8(__m256i r[8]) {
    __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

#define ROTL8(x, s) _mm256_or_si256(_mm256_sll_epi32((x), _mm_cvtsi32_si128(s)), \
                                    _mm256_srl_epi32((x), _mm_cvtsi32_si128(32 - (s))))

#define STEP(FN, a, b, c, d, i)                                                                  \
    do {                                                                                         \
        __m256i f_ = FN(b, c, d);                                                                \
        f_ = _mm256_add_epi32(_mm256_add_epi32(f_, a),                                           \
                              _mm256_add_epi32(_mm256_set1_epi32((int)K[i]), m[word_index(i)])); \
        a = _mm256_add_epi32(b, ROTL8(f_, S[i]));                                                \
    } while (0)

/* Sixteen steps of one round function (the state words rotate their roles each step). */
#define ROUND(FN, i0)                                   \
    _Pragma("GCC unroll 4") for (int i = (i0); i < (i0) + 16; i += 4) { \
        STEP(FN, a, b, c, d, i);                        \
        STEP(FN, d, a, b, c, i + 1);                    \
        STEP(FN, c, d, a, b, i + 2);                    \
        STEP(FN, b, c, d, a, i + 3);                    \
    }

/* With ones = all bits set: F, G, H, I of RFC 1321. */
#define FF(b, c, d) _mm256_or_si256(_mm256_and_si256(b, c), _mm256_andnot_si256(b, d))
#define GG(b, c, d) _mm256_or_si256(_mm256_and_si256(d, b), _mm256_andnot_si256(d, c))
#define HH(b, c, d) _mm256_xor_si256(_mm256_xor_si256(b, c), d)
#define II(b, c, d) _mm256_xor_si256(c, _mm256_or_si256(b, _mm256_xor_si256(d, ones)))

/* `nblocks` whole blocks of eight messages; st[j] holds lane j's state in and out. */
__attribute__((target("avx2"))) static void md5_x8(uint32_t st[8][4], const uint8_t *const p[8], uint64_t nblocks) {
    __m256i a = _mm256_setr_epi32((int)st[0][0], (int)st[1][0], (int)st[2][0], (int)st[3][0], (int)st[4][0],
                                  (int)st[5][0], (int)st[6][0], (int)st[7][0]);
    __m256i b = _mm256_setr_epi32((int)st[0][1], (int)st[1][1], (int)st[2][1], (int)st[3][1], (int)st[4][1],
                                  (int)st[5][1], (int)st[6][1], (int)st[7][1]);
    __m256i c = _mm256_setr_epi32((int)st[0][2], (int)st[1][2], (int)st[2][2], (int)st[3][2], (int)st[4][2],
                                  (int)st[5][2], (int)st[6][2], (int)st[7][2]);
    __m256i d = _mm256_setr_epi32((int)st[0][3], (int)st[1][3], (int)st[2][3], (int)st[3][3], (int)st[4][3],
                                  (int)st[5][3], (int)st[6][3], (int)st[7][3]);
    const __m256i ones = _mm256_set1_epi32(-1);
    for (uint64_t blk = 0; blk < nblocks; blk++) {
        __m256i m[16];
        for (int half = 0; half < 2; half++) {
            for (int j = 0; j < 8; j++)
                m[8 * half + j] = _mm256_loadu_si256((const __m256i *)(p[j] + blk * 64 + 32 * half));
            transpose8(m + 8 * half);
        }
        __m256i aa = a, bb = b, cc = c, dd = d;
        ROUND(FF, 0);
        ROUND(GG, 16);
        ROUND(HH, 32);
        ROUND(II, 48);
        a = _mm256_add_epi32(a, aa);
        b = _mm256_add_epi32(b, bb);
        c = _mm256_add_epi32(c, cc);
        d = _mm256_add_epi32(d, dd);
    }
    uint32_t out[4][8];
    _mm256_storeu_si256((__m256i *)out[0], a);
    _mm256_storeu_si256((__m256i *)out[1], b);
    _mm256_storeu_si256((__m256i *)out[2], c);
    _mm256_storeu_si256((__m256i *)out[3], d);
    for (int j = 0; j < 8; j++)
        for (int w = 0; w < 4; w++) st[j][w] = out[w][j];
}

static int have_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}
#endif

static int lanes_on = -1;

int gs_md5_mb_lanes_supported(void) {
#if GS_MD5_X86
    return have_avx2();
#else
    return 0;
#endif
}

int gs_md5_mb_set_lanes(int on) {
    lanes_on = on && gs_md5_mb_lanes_supported();
    return lanes_on;
}

void gs_md5_many(const uint8_t *const *bufs, const uint64_t *lens, size_t n, uint8_t *out) {
    if (lanes_on < 0) lanes_on = gs_md5_mb_lanes_supported();
    size_t i = 0;
#if GS_MD5_X86
    if (lanes_on) {
        for (; i + 1 < n; i += 8) {  /* groups of up to 8 (a lone last buffer goes below) */
            size_t k = n - i < 8 ? n - i : 8;
            uint32_t st[8][4];
            const uint8_t *p[8];
            uint64_t common = UINT64_MAX;
            for (size_t j = 0; j < 8; j++) {
                size_t src = i + (j < k ? j : 0);  /* spare lanes repeat the first message */
                memcpy(st[j], INIT, sizeof INIT);
                p[j] = bufs[src];
                if (lens[src] / 64 < common) common = lens[src] / 64;
            }
            md5_x8(st, p, common);
            for (size_t j = 0; j < k; j++) md5_finish(st[j], bufs[i + j], lens[i + j], common, out + 16 * (i + j));
        }
    }
#endif
    for (; i < n; i++) {
        uint32_t st[4];
        memcpy(st, INIT, sizeof INIT);
        md5_finish(st, bufs[i], lens[i], 0, out + 16 * i);
    }
}
