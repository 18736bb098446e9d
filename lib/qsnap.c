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
#include "qsnap.h"
#include "thread-local.h"

/* Index pages cached per image: direct-mapped by page number.  Each
 * page covers 170 blocks (10.6 MiB of disk at 64 KiB blocks).
 */
#define PAGE_SLOTS 64

/* Bounded work per extents call: at most this many index pages. */
#define EXTENTS_MAX_PAGES 64

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
  uint64_t owner;               /* key space in the block cache */
  struct page_slot pages[PAGE_SLOTS];
};

static uint64_t cache_size = IMAGE_DEFAULT_CACHE_SIZE;
static struct block_cache *cache;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

void
image_set_cache_size (uint64_t bytes)
{
  cache_size = bytes;
}

/* The process-wide block cache, created by the first qsnap open (so the
 * size set by the plugin's config applies).
 */
static struct block_cache *
shared_cache (void)
{
  pthread_mutex_lock (&cache_lock);
  if (cache == NULL)
    cache = cache_create (cache_size);
  pthread_mutex_unlock (&cache_lock);
  return cache;
}

static void __attribute__ ((destructor))
free_shared_cache (void)
{
  cache_destroy (cache);
  cache = NULL;
}

static bool
qsnap_probe (const uint8_t *buf, size_t len)
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
qsnap_open (const char *path, int fd, const struct image_options *opts,
            unsigned depth)
{
  struct qsnap_stream streams[QSNAP_MAX_STREAMS];
  struct image *img;
  struct qsnap *q;
  uint64_t file_size;

  img = image_alloc (&qsnap_ops, path, fd, sizeof *q);
  if (img == NULL)
    return NULL;
  q = img->priv;
  for (unsigned i = 0; i < PAGE_SLOTS; ++i) {
    pthread_mutex_init (&q->pages[i].lock, NULL);
    q->pages[i].page = UINT64_MAX;
  }

  if (image_file_size (fd, path, &file_size) == -1 ||
      qsnap_read_tables (fd, img->path, file_size, &q->h, streams) == -1 ||
      choose_stream (img, q, streams, opts->stream) == -1)
    goto err;
  img->version = q->h.version;
  img->size = q->stream.size;
  img->block_size = q->h.block_size;
  q->blocks = qsnap_blocks (q->stream.size, q->h.block_size);
  if (shared_cache () == NULL || open_parent (img, q, opts, depth) == -1)
    goto err;
  q->owner = cache_new_owner ();
  return img;

 err:
  if (errno == 0)
    errno = EINVAL;
  image_close (img);
  return NULL;
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

/* Each thread's buffer for compressed bytes, grown as needed: a fresh
 * allocation per block would be mmap'd and page-faulted for big blocks.
 */
struct scratch {
  char *buf;
  size_t size;
};

static void
free_scratch (void *p)
{
  free (((struct scratch *) p)->buf);
}

static struct thread_local scratch_buffers =
  THREAD_LOCAL_INIT (struct scratch, free_scratch);

static char *
scratch (struct image *img, size_t size)
{
  struct scratch *s = thread_local_get (&scratch_buffers);

  if (s != NULL && s->size < size) {
    free (s->buf);
    s->buf = malloc (size);
    s->size = s->buf ? size : 0;
  }
  if (s == NULL || s->buf == NULL) {
    image_error ("%s: %m", img->path);
    return NULL;
  }
  return s->buf;
}

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
      (stored = scratch (img, qsnap_max_stored (q->h.block_size))) == NULL)
    return -1;
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

static int
qsnap_pread (struct image *img, void *buf, size_t count, uint64_t offset)
{
  struct qsnap *q = img->priv;
  const uint32_t bs = q->h.block_size;
  char *out = buf;

  while (count > 0) {
    uint64_t block = offset / bs;
    size_t within = offset % bs;
    size_t n = bs - within < count ? bs - within : count;
    struct qsnap_entry e;
    int r;

    if (lookup (img, block, &e) == -1 || check_entry (img, block, &e) == -1)
      return -1;
    switch (e.kind) {
    case QSNAP_ZERO:
      memset (out, 0, n);
      r = 0;
      break;
    case QSNAP_PARENT:
      r = image_read_backing (img, out, n, offset);
      break;
    default: {
      struct load_request req = { .img = img, .block = block, .e = &e };
      /* Keyed by where the bytes are stored, so deduplicated blocks are
       * cached once.
       */
      if (n < bs)
        r = cache_read (cache, q->owner, e.offset, bs, load_block, &req,
                        out, within, n);
      /* A whole block that is not cached is decoded straight into the
       * reply, saving a copy.  Then a compressed block is also cached
       * (a copy costs less than decompressing again), a raw one is not:
       * the page cache keeps its bytes, and reading them again costs
       * no more than the copy would.
       */
      else if (cache_read_cached (cache, q->owner, e.offset, out, 0, n))
        r = 0;
      else if ((r = load_block (&req, out)) == 0 && e.kind != QSNAP_RAW)
        cache_insert (cache, q->owner, e.offset, bs, out);
    }
    }
    if (r == -1)
      return -1;
    out += n;
    offset += n;
    count -= n;
  }
  return 0;
}

static uint32_t
extent_flags (uint8_t kind)
{
  return kind == QSNAP_ZERO ? IMAGE_EXTENT_HOLE | IMAGE_EXTENT_ZERO :
    kind == QSNAP_PARENT ? IMAGE_EXTENT_BACKING : 0;
}

static int
qsnap_extents (struct image *img, uint64_t offset, uint64_t length,
               image_extent_fn fn, void *opaque)
{
  struct qsnap *q = img->priv;
  const uint32_t bs = q->h.block_size;
  const uint64_t end = offset + length;
  uint64_t first_page = offset / bs / QSNAP_ENTRIES_PER_PAGE;

  while (offset < end) {
    uint64_t block = offset / bs, next;
    struct qsnap_entry e;
    uint32_t flags;
    int r;

    if (lookup (img, block, &e) == -1 || check_entry (img, block, &e) == -1)
      return -1;
    flags = extent_flags (e.kind);
    next = (block + 1) * bs;
    while (next < end) {
      uint64_t b = next / bs;

      if (b / QSNAP_ENTRIES_PER_PAGE - first_page >= EXTENTS_MAX_PAGES)
        break;
      if (lookup (img, b, &e) == -1 || check_entry (img, b, &e) == -1)
        return -1;
      if (extent_flags (e.kind) != flags)
        break;
      next += bs;
    }
    if (next > end)
      next = end;
    r = fn (opaque, offset, next - offset, flags);
    if (r != 0)
      return r == -1 ? -1 : 0;
    offset = next;
    if (offset / bs / QSNAP_ENTRIES_PER_PAGE - first_page >= EXTENTS_MAX_PAGES)
      break;
  }
  return 0;
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
  .pread = qsnap_pread,
  .extents = qsnap_extents,
  .close = qsnap_close,
};
