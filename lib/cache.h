/* SPDX-License-Identifier: BSD-3-Clause */
/* A sharded LRU cache of decoded blocks (decompressed qsnap blocks and
 * qcow2 compressed clusters), one per process: image_block_cache().
 *
 * Readers of different blocks mostly take different shard locks, and the
 * slow part (reading and decompressing) runs with no lock held.  Two
 * readers missing the same block load it once: the second waits for the
 * first.  The size bound counts block bytes.
 */

#ifndef QEMOUNT_CACHE_H
#define QEMOUNT_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct block_cache;

/* Fill buf (block_size bytes) with the block; 0, or -1 after reporting. */
typedef int (*cache_load_fn) (void *opaque, void *buf);

/* A cache of at most bytes bytes of blocks; 0 disables caching (every
 * read loads).  NULL after image_error.
 */
struct block_cache *cache_create (uint64_t bytes);
void cache_destroy (struct block_cache *c);

/* false: created with size 0, it keeps nothing. */
bool cache_enabled (const struct block_cache *c);

/* A key space of its own for each cached file. */
uint64_t cache_new_owner (void);

/* How cache_read treats a read of a whole block (offset 0, len equal to
 * block_size) that is not cached.  Without flags it is loaded into the
 * cache and copied out, like any read.
 */
#define CACHE_WHOLE_DIRECT  1u  /* load it straight into dst, uncached;
                                   not waiting for another reader's load */
#define CACHE_WHOLE_KEEP    2u  /* ...then keep a copy (a copy costs less
                                   than loading again: decompression, a
                                   request), and as any load, the other
                                   readers of the block wait for it */

/* A block, as one reader asks for it. */
struct cache_block {
  uint64_t owner;               /* cache_new_owner () of the open file */
  uint64_t key;                 /* which block, within owner */
  uint64_t tag[2];              /* what the reader's metadata says the block
                                   is: a cached block loaded under another
                                   tag (or size) is not used, the reader
                                   loads its own, uncached */
  uint32_t size;                /* bytes */
};

/* Copy len bytes at offset within block b to dst, loading the block
 * with load(opaque, buf) if it is not cached.  Returns 0, or -1 with
 * errno set when the load failed (for this reader or the one it waited
 * for).
 */
int cache_read (struct block_cache *c, const struct cache_block *b,
                cache_load_fn load, void *opaque, void *dst, size_t offset,
                size_t len, unsigned flags);

/* A loader that fills several blocks at once (a remote request for a
 * block and those after it) claims the others before it starts, so that
 * their readers wait for it instead of loading them too.  true: claimed
 * (or the cache keeps nothing: load it, there is no one to tell); false:
 * the block is cached or being loaded already, leave it.  Every claim
 * ends in cache_fill (a copy of its size bytes from src is kept, and
 * its readers get it) or cache_abandon (its readers load it themselves).
 */
bool cache_claim (struct block_cache *c, const struct cache_block *b);
void cache_fill (struct block_cache *c, const struct cache_block *b,
                 const void *src);
void cache_abandon (struct block_cache *c, const struct cache_block *b);

/* Blocks and bytes held now, for tests and statistics. */
void cache_usage (struct block_cache *c, uint64_t *blocks, uint64_t *bytes);

#endif /* QEMOUNT_CACHE_H */
