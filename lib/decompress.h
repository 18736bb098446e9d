/* SPDX-License-Identifier: BSD-3-Clause */
/* Whole-buffer decompression helpers shared by the decoders.
 *
 * These functions decompress into a buffer whose final size is known in
 * advance (one cluster, one block) and succeed only if exactly out_len
 * bytes were produced.  They return 0, or -1 with errno = EIO and no
 * message: the caller knows the file and offset and reports.
 *
 * Decompressor contexts are cached per thread, so concurrent calls need
 * no lock and a call allocates nothing once its thread is warm.
 */

#ifndef QEMOUNT_DECOMPRESS_H
#define QEMOUNT_DECOMPRESS_H

#include <stddef.h>
#include <stdint.h>

/* Raw DEFLATE (RFC 1951, no zlib or gzip wrapper).  Input bytes after
 * the final block are ignored.
 */
int decompress_deflate_raw (const void *in, size_t in_len,
                            void *out, size_t out_len);

/* A zlib stream (RFC 1950: DEFLATE with a header and an Adler-32),
 * checksum checked; input bytes after it are ignored.  With actual,
 * output shorter than out_len is accepted and its length stored there
 * (more than out_len is still an error).
 */
int decompress_zlib (const void *in, size_t in_len, void *out,
                     size_t out_len, size_t *actual);

/* One or more concatenated zstd frames, possibly followed by padding
 * (e.g. zeros up to a sector boundary) which is never looked at once
 * out_len bytes have been produced.
 */
#define DECOMPRESS_ZSTD_WINDOW_LOG_MAX 23   /* 8 MiB: > any cluster or block */
int decompress_zstd (const void *in, size_t in_len,
                     void *out, size_t out_len);

/* One LZ4 block (not a frame) that must decompress to out_len bytes. */
int decompress_lz4 (const void *in, size_t in_len, void *out, size_t out_len);

/* One bzip2 stream. */
int decompress_bzip2 (const void *in, size_t in_len,
                      void *out, size_t out_len);

/* One .xz stream, or a .lzma ("LZMA alone") one; a stream that needs
 * more than DECOMPRESS_XZ_MEMLIMIT bytes of decoder memory (its
 * dictionary) is refused.
 */
#define DECOMPRESS_XZ_MEMLIMIT (UINT64_C (256) << 20)
int decompress_xz (const void *in, size_t in_len, void *out, size_t out_len);

/* Library versions, for --dump-plugin. */
const char *decompress_deflate_version (void);
const char *decompress_zstd_version (void);
const char *decompress_lz4_version (void);
const char *decompress_bzip2_version (void);
const char *decompress_xz_version (void);

#endif /* QEMOUNT_DECOMPRESS_H */
