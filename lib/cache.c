/* SPDX-License-Identifier: BSD-3-Clause */
/* Sharded LRU block cache with single-flight loading; see cache.h. */

#include <config.h>

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cache.h"
#include "image.h"

#define SHARDS   16             /* at most; a power of two */
/* Each shard has its own share of the budget, and a share smaller than a
 * block would cache nothing, so small caches get fewer shards.
 */
#define MIN_SHARD_BYTES (1u << 20)
#define BUCKETS  1024           /* per shard, a power of two */
/* Buffers of evicted blocks kept for the next loads: big blocks are
 * mmap'd by malloc, and a fresh mapping per load costs a page fault per
 * 4 KiB (a third of the time of a cold sequential read of 1 MiB blocks).
 */
#define SPARES   4

enum state { LOADING, READY, FAILED };

struct entry {
  uint64_t owner, key;
  uint64_t tag[2];              /* as the reader that loaded it expected */
  enum state state;
  int load_errno;
  unsigned refs;                /* readers copying out or waiting */
  uint32_t size;
  char *data;
  struct entry *hash_next;
  struct entry *lru_prev, *lru_next;   /* READY entries only */
};

struct shard {
  pthread_mutex_t lock;
  pthread_cond_t loaded;
  struct entry *buckets[BUCKETS];
  struct entry *lru_head, *lru_tail;   /* most, least recently used */
  uint64_t bytes, blocks, budget;
  char *spares[SPARES];
  uint32_t spare_sizes[SPARES];
  unsigned n_spares;
};

struct block_cache {
  bool disabled;
  unsigned n_shards;
  struct shard shards[SHARDS];
};

static uint64_t next_owner = 1;

uint64_t
cache_new_owner (void)
{
  return __atomic_fetch_add (&next_owner, 1, __ATOMIC_RELAXED);
}

struct block_cache *
cache_create (uint64_t bytes)
{
  struct block_cache *c = calloc (1, sizeof *c);

  if (c == NULL) {
    image_error ("block cache: %m");
    return NULL;
  }
  c->disabled = bytes == 0;
  c->n_shards = 1;
  while (c->n_shards < SHARDS && bytes / (c->n_shards * 2) >= MIN_SHARD_BYTES)
    c->n_shards *= 2;
  for (unsigned i = 0; i < SHARDS; ++i) {
    pthread_mutex_init (&c->shards[i].lock, NULL);
    pthread_cond_init (&c->shards[i].loaded, NULL);
    c->shards[i].budget = bytes / c->n_shards;
  }
  return c;
}

bool
cache_enabled (const struct block_cache *c)
{
  return !c->disabled;
}

void
cache_destroy (struct block_cache *c)
{
  if (c == NULL)
    return;
  for (unsigned i = 0; i < SHARDS; ++i) {
    struct shard *s = &c->shards[i];

    for (unsigned b = 0; b < BUCKETS; ++b) {
      struct entry *e = s->buckets[b];
      while (e) {
        struct entry *next = e->hash_next;
        free (e->data);
        free (e);
        e = next;
      }
    }
    while (s->n_spares > 0)
      free (s->spares[--s->n_spares]);
    pthread_mutex_destroy (&s->lock);
    pthread_cond_destroy (&s->loaded);
  }
  free (c);
}

static uint64_t
hash (uint64_t owner, uint64_t key)
{
  uint64_t h = key * 0x9E3779B97F4A7C15u ^ owner * 0xC2B2AE3D27D4EB4Fu;

  return h ^ (h >> 29);
}

/* The shard holding the blocks of hash h. */
static struct shard *
shard_of (struct block_cache *c, uint64_t h)
{
  return &c->shards[h & (c->n_shards - 1)];
}

static struct entry **
bucket (struct shard *s, uint64_t h)
{
  return &s->buckets[(h >> 4) & (BUCKETS - 1)];
}

static void
lru_unlink (struct shard *s, struct entry *e)
{
  if (e->lru_prev) e->lru_prev->lru_next = e->lru_next;
  else s->lru_head = e->lru_next;
  if (e->lru_next) e->lru_next->lru_prev = e->lru_prev;
  else s->lru_tail = e->lru_prev;
  e->lru_prev = e->lru_next = NULL;
}

static void
lru_push_front (struct shard *s, struct entry *e)
{
  e->lru_prev = NULL;
  e->lru_next = s->lru_head;
  if (s->lru_head) s->lru_head->lru_prev = e;
  else s->lru_tail = e;
  s->lru_head = e;
}

static void
hash_remove (struct shard *s, struct entry *e)
{
  struct entry **p = bucket (s, hash (e->owner, e->key));

  while (*p != e)
    p = &(*p)->hash_next;
  *p = e->hash_next;
}

/* A new buffer for a block.  A fresh big buffer is touched page by page
 * as the block is loaded into it, and a page fault per 4 KiB is most of
 * the cost of filling the cache (a cold sequential read): the kernel
 * populates the whole range in one call for much less.  Older kernels
 * lack MADV_POPULATE_WRITE and fault as before.
 */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define POPULATE_MIN (256u << 10)

static char *
new_buffer (uint32_t size)
{
  char *data = malloc (size);

  if (data && size >= POPULATE_MIN) {
    uintptr_t page = sysconf (_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t) data + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t) data + size) & ~(page - 1);

    madvise ((void *) start, end - start, MADV_POPULATE_WRITE);
  }
  return data;
}

/* Keep a block's buffer for reuse, or free it.  Called with the lock. */
static void
recycle (struct shard *s, char *data, uint32_t size)
{
  if (s->n_spares < SPARES) {
    s->spares[s->n_spares] = data;
    s->spare_sizes[s->n_spares++] = size;
  }
  else
    free (data);
}

/* A spare buffer of size bytes, or NULL.  Called with the lock. */
static char *
take_spare (struct shard *s, uint32_t size)
{
  for (unsigned i = 0; i < s->n_spares; ++i)
    if (s->spare_sizes[i] == size) {
      char *data = s->spares[i];
      s->spares[i] = s->spares[--s->n_spares];
      s->spare_sizes[i] = s->spare_sizes[s->n_spares];
      return data;
    }
  return NULL;
}

/* Drop least recently used blocks nobody is reading until the shard
 * is within budget.  Called with the shard lock.
 */
static void
evict (struct shard *s)
{
  struct entry *e = s->lru_tail;

  while (s->bytes > s->budget && e != NULL) {
    struct entry *prev = e->lru_prev;

    if (e->refs == 0) {
      lru_unlink (s, e);
      hash_remove (s, e);
      s->bytes -= e->size;
      s->blocks--;
      recycle (s, e->data, e->size);
      free (e);
    }
    e = prev;
  }
}

/* Called with the shard lock, when a reader is done with e. */
static void
release (struct shard *s, struct entry *e)
{
  if (--e->refs == 0 && e->state == FAILED) {
    hash_remove (s, e);
    free (e);
  }
}

/* The live entry of a block, or NULL.  Called with the lock. */
static struct entry *
find (struct shard *s, uint64_t h, uint64_t owner, uint64_t key)
{
  struct entry *e;

  for (e = *bucket (s, h); e; e = e->hash_next)
    if (e->owner == owner && e->key == key && e->state != FAILED)
      break;
  return e;
}

/* Copy from a READY entry the caller holds a reference to, taken with
 * the lock held; returns with the lock released and the reference
 * dropped.
 */
static void
copy_out (struct shard *s, struct entry *e, void *dst, size_t offset,
          size_t len)
{
  lru_unlink (s, e);
  lru_push_front (s, e);
  pthread_mutex_unlock (&s->lock);

  /* refs keeps the block from eviction while we copy without the lock. */
  memcpy (dst, e->data + offset, len);

  pthread_mutex_lock (&s->lock);
  release (s, e);
  evict (s);
  pthread_mutex_unlock (&s->lock);
}

static int
load_uncached (uint32_t block_size, cache_load_fn load, void *opaque,
               void *dst, size_t offset, size_t len)
{
  char *buf = new_buffer (block_size);
  int r = -1;

  if (buf == NULL) {
    image_error ("block cache: %m");
    return -1;
  }
  if (load (opaque, buf) == 0) {
    memcpy (dst, buf + offset, len);
    r = 0;
  }
  free (buf);
  return r;
}

static int read_if_cached (struct block_cache *c, const struct cache_block *b,
                           void *dst, size_t offset, size_t len);

/* A whole block that is not to be kept (or a cache that keeps nothing):
 * decoded straight into the reply, saving a copy.  A block another
 * reader is loading is not waited for.
 */
static int
read_whole_direct (struct block_cache *c, const struct cache_block *b,
                   cache_load_fn load, void *opaque, void *dst)
{
  if (read_if_cached (c, b, dst, 0, b->size))
    return 0;
  return load (opaque, dst);
}

/* Whether cached entry e is the block reader b expects. */
static bool
same_tag (const struct entry *e, const struct cache_block *b)
{
  return e->tag[0] == b->tag[0] && e->tag[1] == b->tag[1] &&
    e->size == b->size;
}

/* A new LOADING entry for b, its loader holding the one reference, or
 * NULL (out of memory).  Called with the lock.
 */
static struct entry *
insert_loading (struct shard *s, uint64_t h, const struct cache_block *b)
{
  struct entry *e = calloc (1, sizeof *e);

  if (e == NULL)
    return NULL;
  e->owner = b->owner;
  e->key = b->key;
  e->tag[0] = b->tag[0];
  e->tag[1] = b->tag[1];
  e->size = b->size;
  e->state = LOADING;
  e->refs = 1;
  e->hash_next = *bucket (s, h);
  *bucket (s, h) = e;
  return e;
}

/* The end of a load of e, data holding the block (r == 0) or not:
 * waiters wake to copy it or to fail with err, or, for err 0, to load
 * it themselves.  Called with the lock, returns without.
 */
static void
loaded (struct shard *s, struct entry *e, char *data, int r, int err)
{
  if (r == 0) {
    e->data = data;
    e->state = READY;
    lru_push_front (s, e);
    s->bytes += e->size;
    s->blocks++;
  }
  else {
    if (data)
      recycle (s, data, e->size);
    e->state = FAILED;
    e->load_errno = err;
  }
  pthread_cond_broadcast (&s->loaded);
  release (s, e);
  evict (s);
  pthread_mutex_unlock (&s->lock);
}

int
cache_read (struct block_cache *c, const struct cache_block *b,
            cache_load_fn load, void *opaque, void *dst, size_t offset,
            size_t len, unsigned flags)
{
  const uint64_t owner = b->owner, key = b->key;
  const uint32_t block_size = b->size;
  const bool direct = (flags & CACHE_WHOLE_DIRECT) && offset == 0 &&
    len == block_size;
  uint64_t h = hash (owner, key);
  struct shard *s;
  struct entry *e;
  char *data;
  int r;

  if (direct && (c->disabled || !(flags & CACHE_WHOLE_KEEP)))
    return read_whole_direct (c, b, load, opaque, dst);
  if (c->disabled)
    return load_uncached (block_size, load, opaque, dst, offset, len);

  s = shard_of (c, h);
  pthread_mutex_lock (&s->lock);
 again:
  e = find (s, h, owner, key);
  if (e != NULL && !same_tag (e, b)) {
    /* The same stored bytes read as another block by the reader's
     * metadata: a damaged image.  This reader loads (and checks) its
     * own, and the cached block stays as it was.
     */
    pthread_mutex_unlock (&s->lock);
    return direct ? load (opaque, dst) :
      load_uncached (block_size, load, opaque, dst, offset, len);
  }

  if (e != NULL) {
    e->refs++;
    while (e->state == LOADING)
      pthread_cond_wait (&s->loaded, &s->lock);
    if (e->state == FAILED) {
      int err = e->load_errno;
      release (s, e);
      if (err == 0)             /* abandoned claim (cache_abandon) */
        goto again;
      pthread_mutex_unlock (&s->lock);
      errno = err;
      return -1;
    }
    copy_out (s, e, dst, offset, len);
    return 0;
  }

  /* Miss: this reader loads, later ones for the same block wait.  A
   * whole block is loaded straight into the reply, then copied.
   */
  e = insert_loading (s, h, b);
  if (e == NULL) {
    pthread_mutex_unlock (&s->lock);
    return load_uncached (block_size, load, opaque, dst, offset, len);
  }
  data = take_spare (s, block_size);
  pthread_mutex_unlock (&s->lock);
  if (data == NULL)
    data = new_buffer (block_size);

  r = data ? load (opaque, direct ? dst : data) : -1;
  if (data == NULL)
    image_error ("block cache: %m");
  else if (r == 0 && direct)
    memcpy (data, dst, block_size);
  else if (r == 0)
    memcpy (dst, data + offset, len);

  pthread_mutex_lock (&s->lock);
  loaded (s, e, data, r, errno ? errno : EIO);
  return r;
}

bool
cache_claim (struct block_cache *c, const struct cache_block *b)
{
  uint64_t h = hash (b->owner, b->key);
  struct shard *s;
  bool claimed;

  if (c->disabled)
    return true;
  s = shard_of (c, h);
  pthread_mutex_lock (&s->lock);
  claimed = find (s, h, b->owner, b->key) == NULL &&
    insert_loading (s, h, b) != NULL;
  pthread_mutex_unlock (&s->lock);
  return claimed;
}

/* The LOADING entry of a block the caller claimed.  Called with the
 * lock.
 */
static struct entry *
find_claimed (struct shard *s, uint64_t h, const struct cache_block *b)
{
  struct entry *e = find (s, h, b->owner, b->key);

  assert (e != NULL && e->state == LOADING);
  return e;
}

void
cache_fill (struct block_cache *c, const struct cache_block *b,
            const void *src)
{
  uint64_t h = hash (b->owner, b->key);
  struct shard *s;
  char *data;

  if (c->disabled)
    return;
  s = shard_of (c, h);
  pthread_mutex_lock (&s->lock);
  data = take_spare (s, b->size);
  pthread_mutex_unlock (&s->lock);
  if (data == NULL)
    data = new_buffer (b->size);
  if (data)
    memcpy (data, src, b->size);
  pthread_mutex_lock (&s->lock);
  /* Out of memory: the waiters load it themselves. */
  loaded (s, find_claimed (s, h, b), data, data ? 0 : -1, 0);
}

void
cache_abandon (struct block_cache *c, const struct cache_block *b)
{
  uint64_t h = hash (b->owner, b->key);
  struct shard *s;

  if (c->disabled)
    return;
  s = shard_of (c, h);
  pthread_mutex_lock (&s->lock);
  loaded (s, find_claimed (s, h, b), NULL, -1, 0);
}

/* Copy len bytes at offset within block (owner, key) to dst if the
 * block is cached (not while it loads): 1 if copied, 0 if not.
 */
static int
read_if_cached (struct block_cache *c, const struct cache_block *b,
                void *dst, size_t offset, size_t len)
{
  uint64_t h = hash (b->owner, b->key);
  struct shard *s;
  struct entry *e;

  if (c->disabled)
    return 0;
  s = shard_of (c, h);
  pthread_mutex_lock (&s->lock);
  e = find (s, h, b->owner, b->key);
  if (e == NULL || e->state != READY || !same_tag (e, b)) {
    pthread_mutex_unlock (&s->lock);
    return 0;
  }
  e->refs++;
  copy_out (s, e, dst, offset, len);
  return 1;
}

void
cache_usage (struct block_cache *c, uint64_t *blocks, uint64_t *bytes)
{
  *blocks = *bytes = 0;
  for (unsigned i = 0; i < SHARDS; ++i) {
    pthread_mutex_lock (&c->shards[i].lock);
    *blocks += c->shards[i].blocks;
    *bytes += c->shards[i].bytes;
    pthread_mutex_unlock (&c->shards[i].lock);
  }
}
