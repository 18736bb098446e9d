/* SPDX-License-Identifier: BSD-3-Clause */
/* qsnap reader (docs/qsnap.md): one stream of a qsnap file as an image.
 *
 * Opening reads the header and the stream table only, so it costs the
 * same for any disk size.  A block is found through its index page
 * (read on demand, checksummed, kept in a small per-image page cache),
 * then its stored bytes are read, checked against their checksum and
 * decompressed through the shared block cache (lib/cache.c), or straight
 * into the reply when the read covers the whole block.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "decompress.h"
#include "image.h"
#include "source.h"
#include "qsnap.h"
#include "thread-local.h"

/* Index pages cached per image: direct-mapped by page number.  Each
 * page covers 170 blocks (10.6 MiB of disk at 64 KiB blocks).
 */
#define PAGE_SLOTS 64

/* A lock per slot: readers of blocks in different pages (random reads
 * on several connections) do not queue on one lock.
 */
struct page_slot {
  pthread_mutex_t lock;
  uint64_t page;                /* UINT64_MAX: empty */
  struct qsnap_entry entries[QSNAP_ENTRIES_PER_PAGE];
};

struct qsnap {
  struct qsnap_header h;
  struct qsnap_stream stream;
  char **stream_names;          /* of the file, the served one first */
  size_t n_names;
  uint64_t blocks;
  struct block_cache *cache;    /* image_block_cache () */
  uint64_t owner;               /* key space in it */
  struct page_slot pages[PAGE_SLOTS];
};

static bool
qsnap_probe (struct source *src, const uint8_t *buf, size_t len)
{
  return len >= 8 && memcmp (buf, QSNAP_MAGIC, 8) == 0;
}

/* Pick the stream opts asks for: by name, else "disk", else the first. */
static int
choose_stream (struct image *img, struct qsnap *q,
               const struct qsnap_stream *streams, const char *want)
{
  uint32_t chosen = 0;

  for (uint32_t i = 0; i < q->h.n_streams; ++i)
    if (strcmp (streams[i].name, want ? want : "disk") == 0) {
      chosen = i;
      goto found;
    }
  if (want) {
    image_error ("%s: no stream called '%s'", img->path, want);
    return -1;
  }
 found:
  q->stream = streams[chosen];
  q->stream_names = calloc (q->h.n_streams, sizeof *q->stream_names);
  if (q->stream_names == NULL) {
    image_error ("%s: %m", img->path);
    return -1;
  }
  for (uint32_t i = 0; i < q->h.n_streams; ++i) {
    uint32_t from = i == 0 ? chosen : i <= chosen ? i - 1 : i;

    q->stream_names[q->n_names] = strdup (streams[from].name);
    if (q->stream_names[q->n_names++] == NULL) {
      image_error ("%s: %m", img->path);
      return -1;
    }
  }
  return 0;
}

/* A thin snapshot's parent: the same stream of the file it names, which
 * must carry the file id recorded here.
 */
static int
open_parent (struct image *img, struct qsnap *q,
             const struct image_options *opts, unsigned depth)
{
  struct image_options parent_opts = *opts;
  const struct qsnap *p;

  if (!(q->h.compat & QSNAP_COMPAT_PARENT))
    return 0;
  if (opts->backing == BACKING_NO) {
    image_warning ("%s: backing=no: parent %s not followed, blocks kept "
                   "there read as zeros", img->path, q->h.parent_path);
    return 0;
  }
  parent_opts.stream = q->stream.name;
  img->backing = image_open_backing (img, q->h.parent_path, "qsnap",
                                     &parent_opts, depth + 1);
  if (img->backing == NULL)
    return -1;
  p = img->backing->priv;
  if (memcmp (p->h.id, q->h.parent_id, QSNAP_ID_SIZE) != 0) {
    image_error ("%s: parent %s is not the snapshot this one was made "
                 "from (file id differs)", img->path, q->h.parent_path);
    return -1;
  }
  return 0;
}

static struct image *
qsnap_open (const char *path, struct source *src,
            const struct image_options *opts, unsigned depth)
{
  struct qsnap_stream streams[QSNAP_MAX_STREAMS];
  struct image *img;
  struct qsnap *q;

  img = image_alloc (&qsnap_ops, path, src, sizeof *q);
  if (img == NULL)
    return NULL;
  q = img->priv;
  for (unsigned i = 0; i < PAGE_SLOTS; ++i) {
    pthread_mutex_init (&q->pages[i].lock, NULL);
    q->pages[i].page = UINT64_MAX;
  }

  if (qsnap_read_tables (src, &q->h, streams) == -1 ||
      choose_stream (img, q, streams, opts->stream) == -1)
    goto err;
  img->version = q->h.version;
  img->size = q->stream.size;
  img->block_size = q->h.block_size;
  q->blocks = qsnap_blocks (q->stream.size, q->h.block_size);
  q->cache = image_block_cache ();
  if (q->cache == NULL || open_parent (img, q, opts, depth) == -1)
    goto err;
  q->owner = cache_new_owner ();
  return img;

 err:
  return image_open_failed (img);
}

/* Copy block's index entry to *e, reading its page if needed. */
static int
lookup (struct image *img, uint64_t block, struct qsnap_entry *e)
{
  struct qsnap *q = img->priv;
  uint64_t page = block / QSNAP_ENTRIES_PER_PAGE;
  struct page_slot *slot = &q->pages[page % PAGE_SLOTS];
  uint8_t buf[QSNAP_PAGE_SIZE];
  struct qsnap_entry entries[QSNAP_ENTRIES_PER_PAGE];
  const char *why;

  pthread_mutex_lock (&slot->lock);
  if (slot->page == page) {
    *e = slot->entries[block % QSNAP_ENTRIES_PER_PAGE];
    pthread_mutex_unlock (&slot->lock);
    return 0;
  }
  pthread_mutex_unlock (&slot->lock);

  if (image_read_file (img, buf, sizeof buf,
                       q->stream.index_offset + page * QSNAP_PAGE_SIZE,
                       "qsnap index page") == -1)
    return -1;
  why = qsnap_decode_page (buf, page, q->blocks, entries);
  if (why) {
    image_error ("%s: stream '%s': index page %" PRIu64 ": %s",
                 img->path, q->stream.name, page, why);
    errno = EIO;
    return -1;
  }
  *e = entries[block % QSNAP_ENTRIES_PER_PAGE];

  pthread_mutex_lock (&slot->lock);
  slot->page = page;
  memcpy (slot->entries, entries, sizeof entries);
  pthread_mutex_unlock (&slot->lock);
  return 0;
}

/* The rules an entry must follow before its bytes are read. */
static int
check_entry (struct image *img, uint64_t block, const struct qsnap_entry *e)
{
  struct qsnap *q = img->priv;
  const char *why = qsnap_check_entry (&q->h, e);

  if (why) {
    image_error ("%s: stream '%s' block %" PRIu64 ": %s", img->path,
                 q->stream.name, block, why);
    errno = EIO;
    return -1;
  }
  return 0;
}

struct load_request {
  struct image *img;
  uint64_t block;
  const struct qsnap_entry *e;
};

/* Read, verify and decompress one stored block into buf. */
static int
load_block (void *opaque, void *buf)
{
  const struct load_request *req = opaque;
  struct image *img = req->img;
  struct qsnap *q = img->priv;
  const struct qsnap_entry *e = req->e;
  char *stored = buf;
  int r;

  if (e->kind != QSNAP_RAW &&
      (stored = thread_scratch (qsnap_max_stored (q->h.block_size))) == NULL) {
    image_error ("%s: %m", img->path);
    return -1;
  }
  r = image_read_file (img, stored, e->length, e->offset, "qsnap block");
  if (r == 0 && qsnap_checksum (stored, e->length) != e->checksum) {
    image_error ("%s: stream '%s' block %" PRIu64 " (offset %" PRIu64
                 "): checksum mismatch, the stored data is corrupt",
                 img->path, q->stream.name, req->block, e->offset);
    errno = EIO;
    r = -1;
  }
  if (r == 0 && e->kind != QSNAP_RAW) {
    r = e->kind == QSNAP_LZ4 ?
      decompress_lz4 (stored, e->length, buf, q->h.block_size) :
      decompress_zstd (stored, e->length, buf, q->h.block_size);
    if (r == -1)
      image_error ("%s: stream '%s' block %" PRIu64 ": cannot decompress "
                   "(%s)", img->path, q->stream.name, req->block,
                   e->kind == QSNAP_LZ4 ? "lz4" : "zstd");
  }
  return r;
}

/* The run at offset: a zero or parent run goes on over the following
 * blocks of its kind in the same index page, a stored block is one run
 * (its entry in the token, for read_decoded) unless only extents are
 * wanted, when stored blocks join too.
 */
static int
qsnap_map (struct image *img, struct image_map_state *state, uint64_t offset,
           uint64_t end, bool for_extents, struct image_run *run)
{
  struct qsnap *q = img->priv;
  const uint32_t bs = q->h.block_size;
  const uint64_t block = offset / bs;
  const uint64_t page_end = (block / QSNAP_ENTRIES_PER_PAGE + 1) *
    QSNAP_ENTRIES_PER_PAGE;
  struct qsnap_entry e;
  uint64_t b;

  if (lookup (img, block, &e) == -1 || check_entry (img, block, &e) == -1)
    return -1;
  *run = (struct image_run) {
    .kind = e.kind == QSNAP_ZERO ? IMAGE_RUN_ZERO :
      e.kind == QSNAP_PARENT ? IMAGE_RUN_BACKING : IMAGE_RUN_DECODED,
    .hole = e.kind == QSNAP_ZERO,
    .length = bs - offset % bs,
    .token = { e.offset, e.length | (uint64_t) e.kind << 32, e.checksum },
  };
  if (run->kind != IMAGE_RUN_DECODED || for_extents) {
    for (b = block + 1; b < page_end && offset + run->length < end; ++b) {
      struct qsnap_entry next;

      if (lookup (img, b, &next) == -1 || check_entry (img, b, &next) == -1)
        return -1;
      if (next.kind != e.kind &&
          (run->kind != IMAGE_RUN_DECODED || next.kind == QSNAP_ZERO ||
           next.kind == QSNAP_PARENT))
        break;
      run->length += bs;
    }
  }
  if (run->length > end - offset)
    run->length = end - offset;
  return 0;
}

/* Read count bytes at offset from the stored block of the run. */
static int
qsnap_read_decoded (struct image *img, const struct image_run *run,
                    void *buf, size_t count, uint64_t offset)
{
  struct qsnap *q = img->priv;
  const uint32_t bs = q->h.block_size;
  const struct qsnap_entry e = {
    .offset = run->token[0], .length = (uint32_t) run->token[1],
    .kind = run->token[1] >> 32, .checksum = run->token[2],
  };
  struct load_request req = { .img = img, .block = offset / bs, .e = &e };
  /* Keyed by where the bytes are stored, so deduplicated blocks are
   * cached once; tagged with the rest of the entry, so that an entry
   * pointing at another block's bytes with a checksum, length or codec of
   * its own is checked against its own, not served that block.  A whole
   * block that is not cached is decoded straight into the reply; a
   * compressed one is then kept, a raw one is not: the page cache keeps
   * its bytes, and reading them again costs no more than a copy would.
   */
  const struct cache_block b = {
    .owner = q->owner, .key = e.offset, .size = bs,
    .tag = { e.checksum, (uint64_t) e.length << 8 | e.kind },
  };

  return cache_read (q->cache, &b, load_block, &req, buf, offset % bs, count,
                     CACHE_WHOLE_DIRECT |
                     (e.kind != QSNAP_RAW ? CACHE_WHOLE_KEEP : 0));
}

static void
qsnap_close (struct image *img)
{
  struct qsnap *q = img->priv;

  for (size_t i = 0; i < q->n_names; ++i)
    free (q->stream_names[i]);
  free (q->stream_names);
  for (unsigned i = 0; i < PAGE_SLOTS; ++i)
    pthread_mutex_destroy (&q->pages[i].lock);
}

int
image_list_streams (struct image *img, char ***names, size_t *n)
{
  const struct qsnap *q = img->priv;

  *names = NULL;
  *n = 0;
  if (img->ops != &qsnap_ops)
    return 0;
  *names = q->stream_names;
  *n = q->n_names;
  return 0;
}

const struct image_ops qsnap_ops = {
  .name = "qsnap",
  .probe = qsnap_probe,
  .open = qsnap_open,
  .map = qsnap_map,
  .read_decoded = qsnap_read_decoded,
  .close = qsnap_close,
};
