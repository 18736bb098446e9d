/* Whole-buffer decompression helpers: raw DEFLATE through libdeflate and
 * zstd through libzstd's streaming API.
 */

#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include <libdeflate.h>
#include <zstd.h>

#include "decompress.h"

/* The decompressors of one thread.  Each is created on first use. */
struct contexts {
  struct libdeflate_decompressor *deflate;
  ZSTD_DCtx *zstd;
};

static pthread_key_t contexts_key;
static pthread_once_t contexts_once = PTHREAD_ONCE_INIT;
static bool contexts_key_ok;

/* Thread exit: free that thread's decompressors. */
static void
free_contexts (void *p)
{
  struct contexts *c = p;

  if (c == NULL)
    return;
  if (c->deflate)
    libdeflate_free_decompressor (c->deflate);
  ZSTD_freeDCtx (c->zstd);      /* accepts NULL */
  free (c);
}

/* Create the thread key, once per process. */
static void
make_contexts_key (void)
{
  contexts_key_ok = pthread_key_create (&contexts_key, free_contexts) == 0;
}

/* The plugin may be unloaded while threads that used it still exist;
 * deleting the key makes sure they never call free_contexts, which
 * would no longer be mapped.  Their contexts are leaked instead.
 */
static void __attribute__ ((destructor))
delete_contexts_key (void)
{
  if (contexts_key_ok) {
    pthread_key_delete (contexts_key);
    contexts_key_ok = false;
  }
}

/* This thread's contexts, or NULL when out of memory.  *temporary is
 * set when they could not be cached (no thread key): the caller must
 * then free them with free_contexts.
 */
static struct contexts *
get_contexts (bool *temporary)
{
  struct contexts *c;

  pthread_once (&contexts_once, make_contexts_key);
  *temporary = !contexts_key_ok;
  if (contexts_key_ok) {
    c = pthread_getspecific (contexts_key);
    if (c != NULL)
      return c;
  }

  c = calloc (1, sizeof *c);
  if (c == NULL)
    return NULL;
  if (contexts_key_ok && pthread_setspecific (contexts_key, c) != 0)
    *temporary = true;
  return c;
}

/* Finish a call: drop uncached contexts, and turn failure into EIO. */
static int
done (struct contexts *c, bool temporary, int r)
{
  if (temporary)
    free_contexts (c);
  if (r == -1)
    errno = EIO;
  return r;
}

int
decompress_deflate_raw (const void *in, size_t in_len,
                        void *out, size_t out_len)
{
  bool temporary;
  struct contexts *c = get_contexts (&temporary);
  enum libdeflate_result res;

  if (c == NULL)
    return done (c, false, -1);
  if (c->deflate == NULL) {
    c->deflate = libdeflate_alloc_decompressor ();
    if (c->deflate == NULL)
      return done (c, temporary, -1);
  }

  /* A NULL actual_out makes libdeflate insist on exactly out_len bytes
   * (LIBDEFLATE_SHORT_OUTPUT otherwise); it stops at the final block,
   * so whatever follows in the input is ignored.
   */
  res = libdeflate_deflate_decompress (c->deflate, in, in_len,
                                       out, out_len, NULL);
  return done (c, temporary, res == LIBDEFLATE_SUCCESS ? 0 : -1);
}

int
decompress_zstd (const void *in, size_t in_len, void *out, size_t out_len)
{
  bool temporary;
  struct contexts *c = get_contexts (&temporary);
  ZSTD_inBuffer input = { .src = in, .size = in_len, .pos = 0 };
  ZSTD_outBuffer output = { .dst = out, .size = out_len, .pos = 0 };

  if (c == NULL)
    return done (c, false, -1);
  if (c->zstd == NULL) {
    c->zstd = ZSTD_createDCtx ();
    if (c->zstd == NULL)
      return done (c, temporary, -1);
  }
  else if (ZSTD_isError (ZSTD_DCtx_reset (c->zstd,
                                          ZSTD_reset_session_only)))
    return done (c, temporary, -1);

  /* The streaming API walks across frame boundaries by itself, so
   * several frames need nothing special.  Stopping as soon as the
   * output is full means trailing padding is never parsed.
   */
  while (output.pos < output.size) {
    size_t in_before = input.pos, out_before = output.pos;
    size_t r = ZSTD_decompressStream (c->zstd, &output, &input);

    if (ZSTD_isError (r))
      return done (c, temporary, -1);
    if (output.pos == output.size)
      break;
    /* Input exhausted with nothing more coming out, or a call that
     * made no progress at all: the data is truncated.
     */
    if (output.pos == out_before &&
        (input.pos == input.size || input.pos == in_before))
      return done (c, temporary, -1);
  }
  return done (c, temporary, 0);
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
