/* SPDX-License-Identifier: BSD-3-Clause */
/* Whole-buffer decompression helpers: raw and zlib-wrapped DEFLATE
 * through libdeflate, zstd through libzstd's streaming API, bzip2
 * through libbz2 and xz through liblzma.
 */

#include <config.h>

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include <bzlib.h>
#include <libdeflate.h>
#include <lzma.h>
#include <lz4.h>
#include <zstd.h>

#include "decompress.h"
#include "thread-local.h"

/* The decompressors of one thread.  Each is created on first use. */
struct contexts {
  struct libdeflate_decompressor *deflate;
  ZSTD_DCtx *zstd;
  lzma_stream xz;               /* LZMA_STREAM_INIT when unused: zeros */
};

/* Free one thread's decompressors at its exit. */
static void
free_contexts (void *p)
{
  struct contexts *c = p;

  if (c->deflate)
    libdeflate_free_decompressor (c->deflate);
  ZSTD_freeDCtx (c->zstd);      /* accepts NULL */
  lzma_end (&c->xz);            /* accepts a stream never used */
}

static struct thread_local contexts =
  THREAD_LOCAL_INIT (struct contexts, free_contexts);

/* Decompression failures, whatever the cause, are I/O errors to the
 * caller: the image holds data we cannot decode.
 */
static int
failed (void)
{
  errno = EIO;
  return -1;
}

/* The libdeflate decompressor of this thread, or NULL. */
static struct libdeflate_decompressor *
deflate_context (void)
{
  struct contexts *c = thread_local_get (&contexts);

  if (c == NULL)
    return NULL;
  if (c->deflate == NULL)
    c->deflate = libdeflate_alloc_decompressor ();
  return c->deflate;
}

int
decompress_deflate_raw (const void *in, size_t in_len,
                        void *out, size_t out_len)
{
  struct libdeflate_decompressor *d;
  enum libdeflate_result res;

  d = deflate_context ();
  if (d == NULL)
    return failed ();
  /* A NULL actual_out makes libdeflate insist on exactly out_len bytes
   * (LIBDEFLATE_SHORT_OUTPUT otherwise); it stops at the final block,
   * so whatever follows in the input is ignored.
   */
  res = libdeflate_deflate_decompress (d, in, in_len, out, out_len, NULL);
  return res == LIBDEFLATE_SUCCESS ? 0 : failed ();
}

int
decompress_zlib (const void *in, size_t in_len, void *out, size_t out_len,
                 size_t *actual)
{
  struct libdeflate_decompressor *d = deflate_context ();

  if (d == NULL)
    return failed ();
  /* As for raw DEFLATE (with actual, shorter output is accepted); the
   * Adler-32 is checked too.
   */
  return libdeflate_zlib_decompress (d, in, in_len, out, out_len, actual)
    == LIBDEFLATE_SUCCESS ? 0 : failed ();
}

int
decompress_bzip2 (const void *in, size_t in_len, void *out, size_t out_len)
{
  unsigned int produced = out_len;

  if (in_len > UINT_MAX || out_len > UINT_MAX)
    return failed ();
  /* BZ_OK only at the end of the stream; more output than out_len is
   * BZ_OUTBUFF_FULL, a truncated stream BZ_UNEXPECTED_EOF.
   */
  if (BZ2_bzBuffToBuffDecompress (out, &produced, (char *) in, in_len,
                                  0, 0) != BZ_OK)
    return failed ();
  return produced == out_len ? 0 : failed ();
}

int
decompress_xz (const void *in, size_t in_len, void *out, size_t out_len)
{
  struct contexts *c = thread_local_get (&contexts);
  lzma_ret r;

  if (c == NULL ||
      lzma_auto_decoder (&c->xz, DECOMPRESS_XZ_MEMLIMIT, 0) != LZMA_OK)
    return failed ();
  c->xz.next_in = in;
  c->xz.avail_in = in_len;
  c->xz.next_out = out;
  c->xz.avail_out = out_len;
  /* With LZMA_FINISH the decoder runs until the stream ends, the input
   * is used up (LZMA_BUF_ERROR), the output is full with the stream not
   * at its end (LZMA_BUF_ERROR too: more bytes than out_len) or the
   * data is bad; each call makes progress or says so.
   */
  do
    r = lzma_code (&c->xz, LZMA_FINISH);
  while (r == LZMA_OK);
  return r == LZMA_STREAM_END && c->xz.avail_out == 0 ? 0 : failed ();
}

int
decompress_zstd (const void *in, size_t in_len, void *out, size_t out_len)
{
  struct contexts *c = thread_local_get (&contexts);
  ZSTD_inBuffer input = { .src = in, .size = in_len, .pos = 0 };
  ZSTD_outBuffer output = { .dst = out, .size = out_len, .pos = 0 };

  if (c == NULL)
    return failed ();
  if (c->zstd == NULL) {
    c->zstd = ZSTD_createDCtx ();
    /* Our outputs are at most a few MiB, so a frame asking for a larger
     * window is hostile: refuse it instead of reserving up to 128 MiB.
     */
    if (c->zstd == NULL ||
        ZSTD_isError (ZSTD_DCtx_setParameter (c->zstd, ZSTD_d_windowLogMax,
                                              DECOMPRESS_ZSTD_WINDOW_LOG_MAX)))
      return failed ();
  }
  else if (ZSTD_isError (ZSTD_DCtx_reset (c->zstd,
                                          ZSTD_reset_session_only)))
    return failed ();

  /* The streaming API walks across frame boundaries by itself, so
   * several frames need nothing special.  Stopping as soon as the
   * output is full means trailing padding is never parsed.
   */
  while (output.pos < output.size) {
    size_t in_before = input.pos, out_before = output.pos;
    size_t r = ZSTD_decompressStream (c->zstd, &output, &input);

    if (ZSTD_isError (r))
      return failed ();
    if (output.pos == output.size)
      break;
    /* Input exhausted with nothing more coming out, or a call that
     * made no progress at all: the data is truncated.
     */
    if (output.pos == out_before &&
        (input.pos == input.size || input.pos == in_before))
      return failed ();
  }
  return 0;
}

int
decompress_lz4 (const void *in, size_t in_len, void *out, size_t out_len)
{
  int r;

  if (in_len > INT_MAX || out_len > INT_MAX)
    return failed ();
  /* The _safe variant never reads or writes outside the buffers, whatever
   * the input says.
   */
  r = LZ4_decompress_safe (in, out, in_len, out_len);
  return r >= 0 && (size_t) r == out_len ? 0 : failed ();
}

const char *
decompress_lz4_version (void)
{
  return LZ4_versionString ();
}

const char *
decompress_deflate_version (void)
{
  return LIBDEFLATE_VERSION_STRING;
}

const char *
decompress_zstd_version (void)
{
  return ZSTD_versionString ();
}

const char *
decompress_bzip2_version (void)
{
  return BZ2_bzlibVersion ();
}

const char *
decompress_xz_version (void)
{
  return lzma_version_string ();
}
