/* SPDX-License-Identifier: BSD-3-Clause */
/* NBD byte sources through libnbd (nbd://, nbds://, nbd+unix://): a
 * pool of connections to the export, one per concurrent reader, since a
 * libnbd handle runs one synchronous command at a time.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
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

/* A connected handle, or NULL after image_error. */
static void *
make_handle (void *opaque)
{
  struct nbd *n = opaque;
  struct nbd_handle *h = nbd_create ();

  if (h == NULL) {
    image_error ("%s: %s", n->s->name, nbd_get_error ());
    return NULL;
  }
  if (nbd_connect_uri (h, n->s->location) == -1) {
    image_error ("%s: %s", n->s->name, nbd_get_error ());
    errno = nbd_get_errno () ? nbd_get_errno () : EIO;
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

static int
nbd_fetch (struct source *s, void *buf, size_t count, uint64_t offset)
{
  struct nbd *n = s->priv;
  struct nbd_handle *h = source_pool_get (n->pool);
  int r;

  if (h == NULL) {
    errno = EIO;
    return -1;
  }
  r = nbd_pread (h, buf, count, offset, 0);
  if (r == -1) {
    image_error ("%s: reading %zu bytes at offset %" PRIu64 ": %s",
                 s->name, count, offset, nbd_get_error ());
    errno = EIO;
  }
  /* A handle whose connection died is of no more use. */
  if (r == -1 && nbd_aio_is_dead (h))
    source_pool_discard (n->pool, h);
  else
    source_pool_put (n->pool, h);
  return r;
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
