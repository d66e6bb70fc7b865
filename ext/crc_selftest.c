/* Self-test of the CRC kernels without Python: every code path this CPU supports
 * against the portable one, on lengths 0..2047 and a spread up to 70000 at
 * several alignments, plus the check values.  Used by tests/test_checksum_native.py,
 * natively and (for the AArch64 path) under qemu-aarch64.  Exit status 0 = pass. */
#include "crc_kernels.h"

#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    static const uint64_t check[GS_CRC_NALGS] = {0xCBF43926u, 0xE3069283u, 0xAE8B14860A799888ull};
    const size_t max = 70000;
    unsigned char *buf = malloc(max + 64);
    unsigned long long x = 88172645463325252ull; /* xorshift64 */
    int bad = 0, paths = 0;

    if (!buf)
        return 2;
    gs_crc_init();
    for (size_t i = 0; i < max + 64; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
    for (int path = 0; path < GS_CRC_NPATHS; path++) {
        if (!gs_crc_path_supported(path))
            continue;
        paths++;
        for (int alg = 0; alg < GS_CRC_NALGS; alg++) {
            if (gs_crc_update_path(alg, path, 0, "123456789", 9) != check[alg]) {
                printf("path %d alg %d: wrong check value\n", path, alg);
                bad++;
            }
            for (size_t n = 0; n < max; n += (n < 2048 ? 1 : 997)) {
                size_t off = n % 61;
                uint64_t want = gs_crc_update_path(alg, GS_PATH_PORTABLE, 12345, buf + off, n);
                uint64_t got = gs_crc_update_path(alg, path, 12345, buf + off, n);
                if (want != got && bad++ < 10)
                    printf("path %d alg %d length %zu offset %zu: %llx, portable %llx\n", path, alg, n, off,
                           (unsigned long long)got, (unsigned long long)want);
            }
        }
    }
    printf("paths tested: %d (best %d), failures: %d\n", paths, gs_crc_get_path(), bad);
    free(buf);
    return bad != 0;
}
