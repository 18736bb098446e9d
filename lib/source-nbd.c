/* SPDX-License-Identifier: BSD-3-Clause */
/* NBD byte sources through libnbd (nbd://, nbds://, nbd+unix://): a
 * pool of connections to the export, one per concurrent reader, each
 * running one command at a time.
 *
 * libnbd's synchronous calls wait for ever on a server that stops
 * answering, and it has no timeout setting: connecting and reading use
 * its asynchronous calls, polled until the timeout= passes with no
 * progress.  A handle that timed out has a command in flight and is
 * discarded.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>

#include <libnbd.h>

#include "image.h"
#include "source.h"

struct nbd {
  struct source *s;
  struct source_pool *pool;     /* of struct nbd_handle */
};

const char *
source_libnbd_version (void)
{
  static char version[32];
  struct nbd_handle *h = nbd_create ();

  /* nbd_get_version needs a handle; the string is the library's. */
  if (h && version[0] == '\0') {
    const char *v = nbd_get_version (h);

    if (v)
      snprintf (version, sizeof version, "%s", v);
  }
  nbd_close (h);
  return version;
}

/* Poll h until done (h, cookie) is non-zero; it is then returned (1:
 * done, -1: failed with libnbd's error).  0 when the timeout passes
 * with nothing happening on the connection.
 */
static int
run (struct nbd_handle *h, int (*done) (struct nbd_handle *h,
                                        uint64_t cookie), uint64_t cookie)
{
  const unsigned timeout = source_settings ()->timeout;
  const int timeout_ms = timeout < INT_MAX / 1000 ? (int) timeout * 1000 : -1;
  int r;

  while ((r = done (h, cookie)) == 0) {
    r = nbd_poll (h, timeout_ms);
    if (r == -1)
      return -1;
    if (r == 0)
      return 0;
  }
  return r;
}

/* Done connecting: 1 ready, -1 failed, 0 not yet. */
static int
connected (struct nbd_handle *h, uint64_t unused)
{
  if (nbd_aio_is_connecting (h) || nbd_aio_is_created (h))
    return 0;
  return nbd_aio_is_ready (h) ? 1 : -1;
}

static int
completed (struct nbd_handle *h, uint64_t cookie)
{
  return nbd_aio_command_completed (h, cookie);
}

/* A connected handle, or NULL after image_error. */
static void *
make_handle (void *opaque)
{
  struct nbd *n = opaque;
  struct nbd_handle *h = nbd_create ();
  int r;

  if (h == NULL) {
    image_error ("%s: %s", n->s->name, nbd_get_error ());
    return NULL;
  }
  r = nbd_aio_connect_uri (h, n->s->location) == -1 ? -1 :
    run (h, connected, 0);
  if (r == 0) {
    image_error ("%s: connecting: timed out (no progress for %u s)",
                 n->s->name, source_settings ()->timeout);
    errno = EIO;
  }
  else if (r == -1) {
    image_error ("%s: %s", n->s->name, nbd_get_error ());
    errno = nbd_get_errno () ? nbd_get_errno () : EIO;
  }
  if (r != 1) {
    nbd_close (h);
    return NULL;
  }
  return h;
}

static void
destroy_handle (void *handle)
{
  nbd_close (handle);
}

/* One read on one pooled handle: 1 done, 0 timed out, -1 failed (the
 * server's error reply, or the connection died; libnbd's error in
 * why), -2 no connection (said).
 */
static int
read_once (struct nbd *n, void *buf, size_t count, uint64_t offset,
           char *why, size_t why_size)
{
  struct nbd_handle *h = source_pool_get (n->pool);
  int64_t cookie;
  int r;

  if (h == NULL)
    return -2;
  cookie = nbd_aio_pread (h, buf, count, offset, NBD_NULL_COMPLETION, 0);
  r = cookie == -1 ? -1 : run (h, completed, cookie);
  if (r == -1)
    snprintf (why, why_size, "%s", nbd_get_error ());
  /* A handle whose connection died, or that still has the command in
   * flight, is of no more use.
   */
  if (r == 0 || (r == -1 && nbd_aio_is_dead (h)))
    source_pool_discard (n->pool, h);
  else
    source_pool_put (n->pool, h);
  return r;
}

static int
nbd_fetch (struct source *s, void *buf, size_t count, uint64_t offset)
{
  struct nbd *n = s->priv;
  unsigned attempt = 0;
  char why[256];
  int r;

  /* A failed read is tried again (on a new connection if that one
   * died); a timeout is the user's bound and a failed connect has said
   * why (make_handle).
   */
  while ((r = read_once (n, buf, count, offset, why, sizeof why)) == -1 &&
         source_backoff (attempt++))
    ;
  if (r == 0)
    image_error ("%s: reading %zu bytes at offset %" PRIu64 ": timed out "
                 "(no progress for %u s)", s->name, count, offset,
                 source_settings ()->timeout);
  else if (r == -1)
    image_error ("%s: reading %zu bytes at offset %" PRIu64 ": %s",
                 s->name, count, offset, why);
  if (r != 1) {
    errno = EIO;
    return -1;
  }
  return 0;
}

static void
nbd_source_close (struct source *s)
{
  struct nbd *n = s->priv;

  if (n == NULL)
    return;
  source_pool_destroy (n->pool);
  free (n);
}

static const struct source_ops nbd_ops = {
  .kind = "nbd",
  .fetch = nbd_fetch,
  .close = nbd_source_close,
};

int
source_nbd_open (struct source *s)
{
  struct nbd_handle *h;
  struct nbd *n;
  int64_t size;

  s->priv = n = calloc (1, sizeof *n);
  if (n == NULL) {
    image_error ("%s: %m", s->name);
    return -1;
  }
  s->ops = &nbd_ops;
  n->s = s;
  n->pool = source_pool_create (source_settings ()->connections,
                                make_handle, destroy_handle, n);
  if (n->pool == NULL) {
    image_error ("%s: %m", s->name);
    return -1;
  }
  h = source_pool_get (n->pool);
  if (h == NULL)
    return -1;
  size = nbd_get_size (h);
  if (size == -1)
    image_error ("%s: %s", s->name, nbd_get_error ());
  source_pool_put (n->pool, h);
  if (size == -1) {
    errno = EIO;
    return -1;
  }
  s->size = size;
  return 0;
}
