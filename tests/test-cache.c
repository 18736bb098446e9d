/* SPDX-License-Identifier: BSD-3-Clause */
/* Unit test of lib/cache.c: concurrent misses on one block load it once,
 * misses on different blocks load in parallel, a failed load reaches every
 * waiter, the size bound holds, a disabled cache still reads, and whole-
 * block reads with CACHE_WHOLE_DIRECT use a cached block, else load
 * straight into the reply and keep a copy only with CACHE_WHOLE_KEEP (once
 * for concurrent readers), a reader expecting another tag never gets the
 * cached block, and readers of a claimed block wait for its fill, or load
 * it themselves when it is abandoned.
 */

#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"

#define BLOCK 65536
#define THREADS 8

static int loads, loading, max_loading;
static pthread_mutex_t counter_lock = PTHREAD_MUTEX_INITIALIZER;
static int fail_loads;

#define CHECK(cond)                                                      \
  do {                                                                  \
    if (!(cond)) {                                                      \
      fprintf (stderr, "FAIL: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      exit (EXIT_FAILURE);                                              \
    }                                                                   \
  } while (0)

/* Fills the block with its key, slowly, counting concurrent loaders. */
static int
slow_load (void *opaque, void *buf)
{
  uint64_t key = *(uint64_t *) opaque;

  pthread_mutex_lock (&counter_lock);
  loads++;
  if (++loading > max_loading)
    max_loading = loading;
  pthread_mutex_unlock (&counter_lock);
  usleep (50000);
  memset (buf, (int) (key & 0xff), BLOCK);
  pthread_mutex_lock (&counter_lock);
  loading--;
  pthread_mutex_unlock (&counter_lock);
  if (fail_loads) {
    errno = EIO;
    return -1;
  }
  return 0;
}

/* Read through the cache, loading with slow_load (the block filled with
 * its key); tag as the reader's metadata would give it.
 */
static int
read_block (struct block_cache *c, uint64_t owner, uint64_t key,
            uint64_t tag, void *dst, size_t offset, size_t len,
            unsigned flags)
{
  const struct cache_block b = {
    .owner = owner, .key = key, .tag = { tag, 0 }, .size = BLOCK,
  };

  return cache_read (c, &b, slow_load, &key, dst, offset, len, flags);
}

struct job {
  struct block_cache *cache;
  uint64_t key;
  unsigned flags;               /* 0: a partial read, else a whole one */
  int result, err;
  unsigned char byte;
};

static void *
reader (void *p)
{
  struct job *j = p;
  static __thread unsigned char out[BLOCK];

  if (j->flags)
    j->result = read_block (j->cache, 1, j->key, 0, out, 0, BLOCK, j->flags);
  else
    j->result = read_block (j->cache, 1, j->key, 0, out, 1000, 100, 0);
  j->err = errno;
  j->byte = out[j->flags ? BLOCK - 1 : 99];
  return NULL;
}

/* n readers of blocks key, key + step, ...: whole blocks with flags, or
 * a part without.
 */
static void
start (struct block_cache *c, struct job *jobs, pthread_t *t, int n,
       uint64_t key, uint64_t step, unsigned flags)
{
  loads = max_loading = 0;
  for (int i = 0; i < n; ++i) {
    jobs[i] = (struct job) {
      .cache = c, .key = key + i * step, .flags = flags,
    };
    pthread_create (&t[i], NULL, reader, &jobs[i]);
  }
}

static void
join (pthread_t *t, int n)
{
  for (int i = 0; i < n; ++i)
    pthread_join (t[i], NULL);
}

static void
run (struct block_cache *c, struct job *jobs, int same_key)
{
  pthread_t t[THREADS];

  start (c, jobs, t, THREADS, same_key ? 7 : 100, same_key ? 0 : 1, 0);
  join (t, THREADS);
}

int
main (void)
{
  struct block_cache *c = cache_create (16 * BLOCK);
  struct job jobs[THREADS];
  uint64_t blocks, bytes;

  /* Single flight: eight readers of one missing block, one load. */
  run (c, jobs, 1);
  CHECK (loads == 1);
  for (int i = 0; i < THREADS; ++i)
    CHECK (jobs[i].result == 0 && jobs[i].byte == 7);

  /* Different blocks load concurrently (no global lock around loads). */
  run (c, jobs, 0);
  CHECK (loads == THREADS);
  CHECK (max_loading > 1);
  for (int i = 0; i < THREADS; ++i)
    CHECK (jobs[i].result == 0 && jobs[i].byte == ((100 + i) & 0xff));

  /* Hits do not load. */
  run (c, jobs, 1);
  CHECK (loads == 0);

  /* CACHE_WHOLE_DIRECT: a cached block is copied without a load; a
   * missing one is loaded into the reply and, without CACHE_WHOLE_KEEP,
   * not added; with it, added once (a cached block is never replaced).
   */
  {
    static unsigned char whole[BLOCK];
    uint64_t blocks_after;

    cache_usage (c, &blocks, &bytes);
    CHECK (read_block (c, 1, 7, 0, whole, 0, BLOCK, CACHE_WHOLE_DIRECT) == 0);
    CHECK (loads == 0 && whole[0] == 7 && whole[BLOCK - 1] == 7);

    CHECK (read_block (c, 1, 5000, 0, whole, 0, BLOCK, CACHE_WHOLE_DIRECT) == 0);
    CHECK (loads == 1 && whole[0] == (5000 & 0xff));
    cache_usage (c, &blocks_after, &bytes);
    CHECK (blocks_after == blocks);

    CHECK (read_block (c, 1, 5000, 0, whole, 0, BLOCK,
                       CACHE_WHOLE_DIRECT | CACHE_WHOLE_KEEP) == 0);
    CHECK (loads == 2);
    cache_usage (c, &blocks_after, &bytes);
    CHECK (blocks_after == blocks + 1);
    /* Kept: a partial read and another whole one load nothing. */
    CHECK (read_block (c, 1, 5000, 0, whole, 100, 2, 0) == 0);
    CHECK (read_block (c, 1, 5000, 0, whole, 0, BLOCK,
                       CACHE_WHOLE_DIRECT | CACHE_WHOLE_KEEP) == 0);
    CHECK (loads == 2 && whole[0] == (5000 & 0xff));
    cache_usage (c, &blocks_after, &bytes);
    CHECK (blocks_after == blocks + 1);

    /* Without the flag, a whole-block miss goes through the cache. */
    CHECK (read_block (c, 1, 6000, 0, whole, 0, BLOCK, 0) == 0);
    cache_usage (c, &blocks_after, &bytes);
    CHECK (loads == 3 && blocks_after == blocks + 2);

    /* A reader whose metadata tags the block otherwise (a damaged image
     * pointing two entries at one block) loads its own, whole or part,
     * and the cached block stays for the readers that expect it.
     */
    CHECK (read_block (c, 1, 5000, 99, whole, 100, 2, 0) == 0);
    CHECK (read_block (c, 1, 5000, 99, whole, 0, BLOCK,
                       CACHE_WHOLE_DIRECT | CACHE_WHOLE_KEEP) == 0);
    CHECK (loads == 5);
    CHECK (read_block (c, 1, 5000, 0, whole, 100, 2, 0) == 0);
    cache_usage (c, &blocks_after, &bytes);
    CHECK (loads == 5 && blocks_after == blocks + 2);
    loads = 0;
  }

  /* Concurrent whole-block readers with CACHE_WHOLE_KEEP load once (the
   * others wait), and all get the block.
   */
  {
    pthread_t t[THREADS];

    start (c, jobs, t, THREADS, 9000, 0, CACHE_WHOLE_DIRECT | CACHE_WHOLE_KEEP);
    join (t, THREADS);
    CHECK (loads == 1);
    for (int i = 0; i < THREADS; ++i)
      CHECK (jobs[i].result == 0 && jobs[i].byte == (9000 & 0xff));
  }

  /* A claimed block: its readers, whole or part, wait for the fill and
   * load nothing; a block claimed already cannot be claimed again; an
   * abandoned claim's readers load it themselves, once.
   */
  {
    static unsigned char filled[BLOCK];
    const struct cache_block b = { .owner = 1, .key = 9100, .size = BLOCK };
    const struct cache_block d = { .owner = 1, .key = 9200, .size = BLOCK };
    pthread_t t[2];

    CHECK (cache_claim (c, &b));
    CHECK (!cache_claim (c, &b));
    start (c, jobs, t, 1, 9100, 0, 0);
    start (c, jobs + 1, t + 1, 1, 9100, 0,
           CACHE_WHOLE_DIRECT | CACHE_WHOLE_KEEP);
    usleep (100000);
    memset (filled, 0x55, sizeof filled);
    cache_fill (c, &b, filled);
    join (t, 2);
    CHECK (loads == 0);
    CHECK (jobs[0].result == 0 && jobs[0].byte == 0x55);
    CHECK (jobs[1].result == 0 && jobs[1].byte == 0x55);
    CHECK (!cache_claim (c, &b));

    CHECK (cache_claim (c, &d));
    start (c, jobs, t, 2, 9200, 0, 0);
    usleep (100000);
    cache_abandon (c, &d);
    join (t, 2);
    CHECK (loads == 1);
    CHECK (jobs[0].result == 0 && jobs[0].byte == (9200 & 0xff));
    CHECK (jobs[1].result == 0 && jobs[1].byte == (9200 & 0xff));
    loads = 0;
  }

  /* A failed load reaches every waiter, and is not cached. */
  cache_destroy (c);
  c = cache_create (16 * BLOCK);
  fail_loads = 1;
  run (c, jobs, 1);
  CHECK (loads == 1);
  for (int i = 0; i < THREADS; ++i)
    CHECK (jobs[i].result == -1 && jobs[i].err == EIO);
  fail_loads = 0;
  run (c, jobs, 1);
  CHECK (loads == 1 && jobs[0].result == 0);

  /* The size bound: 200 distinct blocks through a 16-block cache. */
  for (uint64_t k = 0; k < 200; ++k) {
    unsigned char out[1];
    CHECK (read_block (c, 2, k, 0, out, 0, 1, 0) == 0);
  }
  cache_usage (c, &blocks, &bytes);
  CHECK (bytes <= 16 * BLOCK && blocks <= 16);
  cache_destroy (c);

  /* cache=0: every read loads, and still returns the data. */
  c = cache_create (0);
  run (c, jobs, 1);
  CHECK (loads == THREADS);
  for (int i = 0; i < THREADS; ++i)
    CHECK (jobs[i].result == 0 && jobs[i].byte == 7);
  {
    static unsigned char whole[BLOCK];
    loads = 0;
    for (int i = 0; i < 2; ++i)
      CHECK (read_block (c, 1, 7, 0, whole, 0, BLOCK,
                         CACHE_WHOLE_DIRECT | CACHE_WHOLE_KEEP) == 0);
    CHECK (loads == 2 && whole[0] == 7);
  }
  cache_destroy (c);
  printf ("PASS: block cache\n");
  return 0;
}
