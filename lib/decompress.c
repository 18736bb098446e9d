/* SPDX-License-Identifier: BSD-3-Clause */
/* Whole-buffer decompression helpers: raw DEFLATE through libdeflate and
 * zstd through libzstd's streaming API.
 */

#include <config.h>

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include <libdeflate.h>
#include <lz4.h>
#include <zstd.h>

#include "decompress.h"
#include "thread-local.h"

/* The decompressors of one thread.  Each is created on first use. */
struct contexts {
  struct libdeflate_decompressor *deflate;
  ZSTD_DCtx *zstd;
};

/* Free one thread's decompressors at its exit. */
static void
free_contexts (void *p)
{
  struct contexts *c = p;

  if (c->deflate)
    libdeflate_free_decompressor (c->deflate);
  ZSTD_freeDCtx (c->zstd);      /* accepts NULL */
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

int
decompress_deflate_raw (const void *in, size_t in_len,
                        void *out, size_t out_len)
{
  struct contexts *c = thread_local_get (&contexts);
  enum libdeflate_result res;

  if (c == NULL)
    return failed ();
  if (c->deflate == NULL) {
    c->deflate = libdeflate_alloc_decompressor ();
    if (c->deflate == NULL)
      return failed ();
  }

  /* A NULL actual_out makes libdeflate insist on exactly out_len bytes
   * (LIBDEFLATE_SHORT_OUTPUT otherwise); it stops at the final block,
   * so whatever follows in the input is ignored.
   */
  res = libdeflate_deflate_decompress (c->deflate, in, in_len,
                                       out, out_len, NULL);
  return res == LIBDEFLATE_SUCCESS ? 0 : failed ();
}

int
decompress_zlib (const void *in, size_t in_len, void *out, size_t out_len,
                 size_t *actual)
{
  struct contexts *c = thread_local_get (&contexts);

  if (c == NULL)
    return failed ();
  if (c->deflate == NULL) {
    c->deflate = libdeflate_alloc_decompressor ();
    if (c->deflate == NULL)
      return failed ();
  }
  /* As above; the Adler-32 is checked too. */
  return libdeflate_zlib_decompress (c->deflate, in, in_len, out, out_len,
                                     actual) == LIBDEFLATE_SUCCESS ? 0
    : failed ();
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
