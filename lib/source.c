/* SPDX-License-Identifier: BSD-3-Clause */
/* Byte sources: opening by path or URL, the local file, reads through
 * the block cache for remote kinds, and the pool of per-request handles
 * they share.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "image.h"
#include "source.h"

static struct source_settings settings = {
  .timeout = SOURCE_DEFAULT_TIMEOUT,
  .connections = SOURCE_DEFAULT_CONNECTIONS,
};

void
source_configure (const struct source_settings *s)
{
  settings.timeout = s->timeout ? s->timeout : SOURCE_DEFAULT_TIMEOUT;
  settings.connections = s->connections ? s->connections :
    SOURCE_DEFAULT_CONNECTIONS;
  settings.cache_dir = s->cache_dir;
}

const struct source_settings *
source_settings (void)
{
  return &settings;
}

static const char *const http_schemes[] = {
  "http://", "https://", "s3://", NULL
};
static const char *const nbd_schemes[] = {
  "nbd://", "nbds://", "nbd+unix://", "nbds+unix://", NULL
};

static bool
has_scheme (const char *location, const char *const *schemes)
{
  for (size_t i = 0; schemes[i] != NULL; ++i)
    if (strncasecmp (location, schemes[i], strlen (schemes[i])) == 0)
      return true;
  return false;
}

bool
source_is_url (const char *location)
{
  return has_scheme (location, http_schemes) ||
    has_scheme (location, nbd_schemes);
}

bool
source_is_s3 (const char *location)
{
  return has_scheme (location, (const char *const[]) { "s3://", NULL });
}

/* User and password may come with the URL, and a pre-signed HTTP URL
 * carries its signature in the query.  NBD keeps its query: it names
 * the socket.
 */
char *
source_display_name (const char *url)
{
  const char *authority = strstr (url, "://") + 3;
  size_t host_len = strcspn (authority, "/?#");
  const char *at = memchr (authority, '@', host_len);
  const char *host = at ? at + 1 : authority;
  size_t rest = has_scheme (url, http_schemes) ?
    strcspn (host, "?#") : strlen (host);
  char *name;

  if (asprintf (&name, "%.*s%.*s", (int) (authority - url), url,
                (int) rest, host) == -1)
    return NULL;
  return name;
}

bool
source_hides (const char *location)
{
  char *name;
  bool hides;

  if (!source_is_url (location))
    return false;
  name = source_display_name (location);
  hides = name == NULL || strcmp (name, location) != 0;
  free (name);
  return hides;
}

/* Transient failures (resets, refused connections, 5xx, an NBD
 * server's error reply) are retried this many times, after 0.1 s,
 * 0.4 s, 1.6 s: a server restarting or a proxy hiccup, not one that is
 * down.  A request that times out is not retried: the timeout is the
 * user's bound on waiting.
 */
#define RETRIES 3
#define FIRST_BACKOFF_NS 100000000L

bool
source_backoff (unsigned attempt)
{
  long backoff = FIRST_BACKOFF_NS;

  if (attempt >= RETRIES)
    return false;
  for (unsigned i = 0; i < attempt; ++i)
    backoff *= 4;
  nanosleep (&(struct timespec) { .tv_sec = backoff / 1000000000L,
                                  .tv_nsec = backoff % 1000000000L }, NULL);
  return true;
}

/* The local file. */

static int
file_fetch (struct source *s, void *buf, size_t count, uint64_t offset)
{
  char *p = buf;

  while (count > 0) {
    ssize_t r = pread (s->fd, p, count, offset);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (r == 0) {
      errno = 0;                /* the end of the file: source_read says */
      return -1;
    }
    p += r;
    count -= r;
    offset += r;
  }
  return 0;
}

static const struct source_ops file_ops = {
  .kind = "file",
  .fetch = file_fetch,
};

static struct source *
source_new (const char *location)
{
  struct source *s = calloc (1, sizeof *s);

  if (s == NULL || (s->location = strdup (location)) == NULL) {
    image_error ("%s: %m", location);
    free (s);
    return NULL;
  }
  s->fd = -1;
  return s;
}

struct source *
source_from_fd (int fd, const char *path)
{
  struct source *s = source_new (path);

  if (s == NULL || (s->name = strdup (path)) == NULL) {
    if (s)
      image_error ("%s: %m", path);
    close (fd);
    source_close (s);
    return NULL;
  }
  s->ops = &file_ops;
  s->fd = fd;
  if (image_file_size (fd, path, &s->size) == -1) {
    source_close (s);
    return NULL;
  }
  return s;
}

struct source *
source_open (const char *location)
{
  struct source *s;
  int fd, r;

  if (!source_is_url (location)) {
    fd = image_open_file (location, O_RDONLY);
    return fd == -1 ? NULL : source_from_fd (fd, location);
  }

  s = source_new (location);
  if (s == NULL)
    return NULL;
  s->remote = true;
  s->name = source_display_name (location);
  if (s->name == NULL) {
    image_error ("%s: %m", location);
    source_close (s);
    return NULL;
  }
  r = has_scheme (location, http_schemes) ? source_http_open (s) :
    source_nbd_open (s);
  if (r == -1) {
    int saved = errno ? errno : EIO;

    source_close (s);
    errno = saved;
    return NULL;
  }
  s->owner = cache_new_owner ();
  if (settings.cache_dir && s->pinned)
    s->disk = source_cache_open (settings.cache_dir, s->pinned, s->size);
  return s;
}

void
source_close (struct source *s)
{
  if (s == NULL)
    return;
  if (s->ops && s->ops->close)
    s->ops->close (s);
  if (s->fd >= 0)
    close (s->fd);
  source_cache_close (s->disk);
  free (s->pinned);
  free (s->location);
  free (s->name);
  free (s);
}

char *
source_identity (const struct source *s)
{
  struct stat st;
  char *id;

  if (s->remote)
    id = strdup (s->location);
  else if (fstat (s->fd, &st) == -1) {
    image_error ("%s: fstat: %m", s->name);
    return NULL;
  }
  else if (asprintf (&id, "%ju:%ju", (uintmax_t) st.st_dev,
                     (uintmax_t) st.st_ino) == -1)
    id = NULL;
  if (id == NULL)
    image_error ("%s: %m", s->name);
  return id;
}

/* Reading. */

/* Sequential readers get up to this many blocks per request. */
#define READAHEAD_MAX_BLOCKS 8

/* The size of block key of s: SOURCE_BLOCK, but for the last one. */
static size_t
block_size (const struct source *s, uint64_t key)
{
  const uint64_t start = key * SOURCE_BLOCK;

  return s->size - start < SOURCE_BLOCK ? s->size - start : SOURCE_BLOCK;
}

struct block_load {
  struct source *s;
  struct block_cache *c;
  uint64_t offset;              /* of the block, in the object */
  size_t count;                 /* its size */
  unsigned ahead;               /* blocks to fetch in the same request */
};

/* Fetch the block, and for a sequential reader the blocks after it in
 * the same request, which go into the cache for its next reads; with
 * cache-dir=, a block kept there is read from there, and fetched ones
 * are kept.  The blocks after it are claimed first, so that a parallel
 * reader of one of them waits for this request instead of fetching it
 * too, and the span stops at one that is cached or on its way already.
 */
static int
load_block (void *opaque, void *buf)
{
  struct block_load *l = opaque;
  struct source *s = l->s;
  const uint64_t key = l->offset / SOURCE_BLOCK;
  const uint64_t blocks = (s->size - l->offset + SOURCE_BLOCK - 1) /
    SOURCE_BLOCK;
  unsigned ahead;
  char *span = NULL;
  size_t len;
  int r;

  if (s->disk && source_cache_get (s->disk, key, buf, l->count))
    return 0;
  for (ahead = 1; ahead < l->ahead && ahead < blocks; ++ahead) {
    /* Not fetching again what the next reads will find there. */
    if (s->disk && source_cache_has (s->disk, key + ahead))
      break;
    if (!cache_claim (l->c, &(struct cache_block) {
          .owner = s->owner, .key = key + ahead,
          .size = block_size (s, key + ahead) }))
      break;
  }
  len = (ahead - 1) * (uint64_t) SOURCE_BLOCK +
    block_size (s, key + ahead - 1);
  if (len > l->count)
    span = malloc (len);
  if (span == NULL) {
    r = s->ops->fetch (s, buf, l->count, l->offset);
    if (r == 0 && s->disk)
      source_cache_put (s->disk, key, buf, l->count);
    len = l->count;
  }
  else if ((r = s->ops->fetch (s, span, len, l->offset)) == 0)
    memcpy (buf, span, l->count);
  for (unsigned i = 0; i < ahead; ++i) {
    const size_t at = (size_t) i * SOURCE_BLOCK;
    struct cache_block b = {
      .owner = s->owner, .key = key + i, .size = block_size (s, key + i),
    };

    if (i > 0 && (r == -1 || at >= len))
      cache_abandon (l->c, &b);
    else if (span) {
      if (s->disk)
        source_cache_put (s->disk, b.key, span + at, b.size);
      if (i > 0)
        cache_fill (l->c, &b, span + at);
    }
  }
  free (span);
  return r;
}

/* How many blocks a miss fetches: 1, or for a request that starts where
 * the last one ended (a sequential reader), more the longer that lasts
 * (2, 4, then 8).  A guess shared by all readers, so racy on purpose.
 */
static unsigned
blocks_ahead (struct source *s, size_t count, uint64_t offset)
{
  unsigned streak;

  if (atomic_exchange (&s->seq_end, offset + count) != offset) {
    atomic_store (&s->streak, 0);
    return 1;
  }
  streak = atomic_fetch_add (&s->streak, 1) + 1;
  return streak >= 3 ? READAHEAD_MAX_BLOCKS : 1u << streak;
}

/* A remote read, block by block through the cache: a whole block that
 * is not cached is fetched straight into buf and a copy kept.
 */
static int
read_cached (struct source *s, char *buf, size_t count, uint64_t offset)
{
  struct block_cache *c = image_block_cache ();
  unsigned ahead = blocks_ahead (s, count, offset);

  if (c == NULL)
    return -1;
  /* Blocks fetched ahead are kept for the next reads: with cache=0 and
   * no cache-dir=, nowhere.
   */
  if (!cache_enabled (c) && s->disk == NULL)
    ahead = 1;
  while (count > 0) {
    uint64_t key = offset / SOURCE_BLOCK, start = key * SOURCE_BLOCK;
    size_t within = offset - start;
    size_t block = block_size (s, key);
    size_t n = block - within < count ? block - within : count;
    struct cache_block b = {
      .owner = s->owner, .key = key, .size = block,
    };
    struct block_load l = {
      .s = s, .c = c, .offset = start, .count = block, .ahead = ahead,
    };

    if (cache_read (c, &b, load_block, &l, buf, within, n,
                    CACHE_WHOLE_DIRECT | CACHE_WHOLE_KEEP) == -1)
      return -1;
    buf += n;
    count -= n;
    offset += n;
  }
  return 0;
}

/* A local file is read as it is now, not bounded by its size at open:
 * an overlay grows as it is written.
 */
int
source_read (struct source *s, void *buf, size_t count, uint64_t offset,
             const char *what)
{
  const uint64_t limit = s->remote ? s->size : INT64_MAX;

  if (offset > limit || count > limit - offset) {
    if (what)
      image_error ("%s: %s at offset %" PRIu64 " is past the end of the "
                   "file (truncated image?)", s->name, what, offset);
    errno = EIO;
    return -1;
  }
  if (s->remote) {
    if (read_cached (s, buf, count, offset) == 0)
      return 0;
    if (what == NULL)
      s->probe_failed = true;
    return -1;
  }
  if (file_fetch (s, buf, count, offset) == 0)
    return 0;
  if (what != NULL && errno == 0)       /* shrunk since open */
    image_error ("%s: %s at offset %" PRIu64 " is past the end of the "
                 "file (truncated image?)", s->name, what, offset);
  else if (what != NULL)
    image_error ("%s: reading %s at offset %" PRIu64 ": %m",
                 s->name, what, offset);
  if (errno == 0)
    errno = EIO;
  return -1;
}

/* The pool of per-request handles. */

struct source_pool {
  pthread_mutex_t lock;
  pthread_cond_t freed;
  unsigned max, made, n_free;
  void **free;
  void *(*make) (void *opaque);
  void (*destroy) (void *handle);
  void *opaque;
};

struct source_pool *
source_pool_create (unsigned max, void *(*make) (void *opaque),
                    void (*destroy) (void *handle), void *opaque)
{
  struct source_pool *p = calloc (1, sizeof *p);

  if (p == NULL || (p->free = calloc (max, sizeof *p->free)) == NULL) {
    free (p);
    return NULL;
  }
  pthread_mutex_init (&p->lock, NULL);
  pthread_cond_init (&p->freed, NULL);
  p->max = max;
  p->make = make;
  p->destroy = destroy;
  p->opaque = opaque;
  return p;
}

void *
source_pool_get (struct source_pool *p)
{
  void *h = NULL;

  pthread_mutex_lock (&p->lock);
  while (p->n_free == 0 && p->made == p->max)
    pthread_cond_wait (&p->freed, &p->lock);
  if (p->n_free > 0) {
    h = p->free[--p->n_free];
    pthread_mutex_unlock (&p->lock);
    return h;
  }
  p->made++;                    /* made outside the lock: it may connect */
  pthread_mutex_unlock (&p->lock);
  h = p->make (p->opaque);
  if (h == NULL) {
    pthread_mutex_lock (&p->lock);
    p->made--;
    pthread_cond_signal (&p->freed);
    pthread_mutex_unlock (&p->lock);
  }
  return h;
}

void
source_pool_put (struct source_pool *p, void *handle)
{
  pthread_mutex_lock (&p->lock);
  p->free[p->n_free++] = handle;
  pthread_cond_signal (&p->freed);
  pthread_mutex_unlock (&p->lock);
}

void
source_pool_discard (struct source_pool *p, void *handle)
{
  p->destroy (handle);
  pthread_mutex_lock (&p->lock);
  p->made--;
  pthread_cond_signal (&p->freed);
  pthread_mutex_unlock (&p->lock);
}

void
source_pool_destroy (struct source_pool *p)
{
  if (p == NULL)
    return;
  for (unsigned i = 0; i < p->n_free; ++i)
    p->destroy (p->free[i]);
  pthread_mutex_destroy (&p->lock);
  pthread_cond_destroy (&p->freed);
  free (p->free);
  free (p);
}
