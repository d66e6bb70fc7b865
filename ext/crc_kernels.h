/* CRC32, CRC32C and CRC64NVME kernels with runtime CPU dispatch.
 *
 * All three CRCs are reflected with init = xorout = all ones.  Values passed in
 * and out are the finished CRCs (after xorout), so gs_crc_update(alg, 0, ...) is
 * the one-shot value and feeding the result back continues the stream.
 */
#ifndef GENOSTAGE_CRC_KERNELS_H
#define GENOSTAGE_CRC_KERNELS_H

#include <stddef.h>
#include <stdint.h>

enum gs_crc_alg { GS_CRC32 = 0, GS_CRC32C = 1, GS_CRC64NVME = 2, GS_CRC_NALGS = 3 };
/* x86-64: pclmul < avx2 < avx512; AArch64: pmull. */
enum gs_crc_path {
    GS_PATH_PORTABLE = 0, GS_PATH_PCLMUL = 1, GS_PATH_AVX2 = 2, GS_PATH_AVX512 = 3, GS_PATH_PMULL = 4, GS_CRC_NPATHS = 5
};

/* Build tables and folding constants, detect the CPU; returns the best path. Idempotent. */
int gs_crc_init(void);
/* 1 when the CPU (and this build) can run the path. */
int gs_crc_path_supported(int path);
/* Force a path; returns 0, or -1 when unsupported. */
int gs_crc_set_path(int path);
int gs_crc_get_path(void);

uint64_t gs_crc_update(int alg, uint64_t crc, const void *buf, size_t len);
/* Same, on an explicit path (the caller checked it is supported). */
uint64_t gs_crc_update_path(int alg, int path, uint64_t crc, const void *buf, size_t len);
/* crc(A || B) from crc(A), crc(B) and len(B), in O(log len_b). */
uint64_t gs_crc_combine(int alg, uint64_t crc_a, uint64_t crc_b, uint64_t len_b);
/* x^n mod P in the reflected representation of the CRC. */
uint64_t gs_crc_xpow(int alg, uint64_t n);
/* The pair of 64-bit multipliers that fold a 128-bit block forward by `bits`. */
void gs_crc_fold_constants(int alg, uint64_t bits, uint64_t out[2]);
int gs_crc_width(int alg);

#endif
