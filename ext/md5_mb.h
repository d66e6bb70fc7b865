/* MD5 of many independent buffers at once ("multi-buffer" MD5).
 *
 * One MD5 is a chain of dependent steps, so a single stream runs at ~0.6 GB/s a core
 * whatever the instruction set. Eight independent streams fit the eight 32-bit lanes
 * of an AVX2 register: the S3 multipart ETag (one MD5 per upload part), Content-MD5 of
 * the parts of an upload, and the MD5 ETags of many small objects are such streams.
 */
#ifndef GENOSTAGE_MD5_MB_H
#define GENOSTAGE_MD5_MB_H

#include <stddef.h>
#include <stdint.h>

/* 1 when the 8-lane path runs on this CPU (and build). */
int gs_md5_mb_lanes_supported(void);
/* Force the portable one-at-a-time path (0) or allow the 8-lane one (1); returns what is in use. */
int gs_md5_mb_set_lanes(int on);

/* MD5 digests of n buffers: out receives n x 16 bytes. Any lengths; equal lengths hash fastest. */
void gs_md5_many(const uint8_t *const *bufs, const uint64_t *lens, size_t n, uint8_t *out);

#endif
