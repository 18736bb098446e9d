/* SPDX-License-Identifier: BSD-3-Clause */
/* Copy-on-write overlay: makes any image writable without touching it.
 *
 * One file, three regions, all in 4 KiB blocks:
 *
 *   header   magic, version, sizes, region offsets, a fingerprint of the
 *            base it was made for; written once at creation, checksummed
 *   map      one u32 per 4 KiB block of the disk: 0 = read the base,
 *            1 = zeros, n >= 2 = data slot n - 2.  A sparse region: only
 *            the pages holding entries exist on disk.
 *   data     4 KiB slots, allocated in order
 *
 * Crash consistency: a write goes to its slot at once, but the map entry
 * that makes it visible after a restart is only written by flush, after
 * an fdatasync of the slots.  So after a crash every write acknowledged
 * before a completed flush is there, and the map never points at a slot
 * whose data was not on disk first.  Overwriting a block that already has
 * a slot rewrites the slot in place, as a disk would.
 *
 * In memory the map is a directory of pages (1024 entries each) allocated
 * on first use, so memory follows the blocks written, not the disk size.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "bytes.h"
#include "image.h"
#include "source.h"
#include "outfile.h"

#define BLOCK               4096u
#define ENTRIES_PER_PAGE    (BLOCK / 4)
#define HEADER_SIZE         BLOCK
#define MAGIC               "QMOUNTOV"
#define OVERLAY_VERSION     1
#define ENTRY_BASE          0u
#define ENTRY_ZERO          1u
#define FIRST_SLOT_ENTRY    2u
#define MAX_SLOTS           (UINT32_MAX - FIRST_SLOT_ENTRY)
/* Writes to one block are serialized (read-modify-write of partial
 * blocks, slot allocation); blocks hash onto this many locks.
 */
#define BLOCK_LOCKS         64

/* Header layout (little-endian). */
#define H_MAGIC        0
#define H_VERSION      8
#define H_BLOCK        12
#define H_SIZE         16
#define H_MAP          24
#define H_DATA         32
#define H_FINGERPRINT  40
#define H_BASE_FORMAT  48       /* 16 bytes, for messages */
#define H_BASE_PATH    64       /* 1024 bytes, for messages */
#define H_FEATURES     1088     /* bits below; 0 in overlays of qemount 0.1 */
#define H_CHECKSUM     (HEADER_SIZE - 8)

/* H_FINGERPRINT is the dense fingerprint (see fingerprint); without it,
 * the sparse one of the first overlays.
 */
#define FEATURE_DENSE_FINGERPRINT  1u
#define KNOWN_FEATURES             FEATURE_DENSE_FINGERPRINT

struct overlay {
  pthread_mutex_t lock;         /* pages, dirty, next_slot */
  pthread_mutex_t flush_lock;   /* one flush at a time, see overlay_flush */
  pthread_mutex_t block_locks[BLOCK_LOCKS];
  uint64_t blocks;              /* of the disk */
  uint64_t n_pages;
  uint32_t **pages;             /* NULL: every entry of the page is 0 */
  uint8_t *dirty;               /* bitmap over pages: not yet on disk */
  uint64_t map_offset, data_offset;
  uint32_t next_slot;
  bool ephemeral;               /* deleted on close: flush need not sync */
  bool readonly;                /* opened to read only: never written */
};

/* The map, in memory. */

static uint32_t
get_entry (const struct overlay *o, uint64_t block)
{
  const uint32_t *page = o->pages[block / ENTRIES_PER_PAGE];

  return page ? page[block % ENTRIES_PER_PAGE] : ENTRY_BASE;
}

/* Called with o->lock held. */
static int
set_entry (struct image *img, uint64_t block, uint32_t entry)
{
  struct overlay *o = img->priv;
  uint64_t p = block / ENTRIES_PER_PAGE;

  if (o->pages[p] == NULL) {
    o->pages[p] = calloc (ENTRIES_PER_PAGE, sizeof (uint32_t));
    if (o->pages[p] == NULL) {
      image_error ("%s: %m", img->path);
      return -1;
    }
  }
  o->pages[p][block % ENTRIES_PER_PAGE] = entry;
  o->dirty[p / 8] |= 1 << (p % 8);
  return 0;
}

static uint64_t
slot_offset (const struct overlay *o, uint32_t entry)
{
  return o->data_offset + (uint64_t) (entry - FIRST_SLOT_ENTRY) * BLOCK;
}

/* A fingerprint being computed: XXH3 for the dense kind, XXH64 for the
 * sparse kind of the first overlays.
 */
struct print {
  struct image *base;
  bool dense;
  XXH3_state_t *xxh3;
  XXH64_state_t *xxh64;
  char *buf;                    /* 64 KiB */
};

static void
print_update (struct print *p, const void *data, size_t len)
{
  if (p->dense)
    XXH3_64bits_update (p->xxh3, data, len);
  else
    XXH64_update (p->xxh64, data, len);
}

/* Hash count bytes of the base at offset (cut at its end). */
static int
print_sample (struct print *p, size_t count, uint64_t offset)
{
  if (offset >= p->base->size)
    return 0;
  if (count > p->base->size - offset)
    count = p->base->size - offset;
  if (image_pread (p->base, p->buf, count, offset) == -1)
    return -1;
  print_update (p, p->buf, count);
  return 0;
}

/* The layout part of the dense fingerprint: the base's allocation map
 * as its format reports it, with adjacent runs of one kind joined so
 * that how a decoder splits its answers does not matter.
 */
struct map_hash {
  struct print *print;
  uint64_t start, length;       /* the run not hashed yet */
  uint32_t flags;
};

static void
map_hash_run (struct map_hash *m)
{
  uint64_t run[3] = {
    htole64 (m->start), htole64 (m->length), htole64 (m->flags)
  };

  if (m->length > 0)
    print_update (m->print, run, sizeof run);
}

static int
map_hash_extent (void *opaque, uint64_t offset, uint64_t length,
                 uint32_t flags)
{
  struct map_hash *m = opaque;

  if (m->length > 0 && flags == m->flags &&
      m->start + m->length == offset) {
    m->length += length;
    return 0;
  }
  map_hash_run (m);
  *m = (struct map_hash) {
    .print = m->print, .start = offset, .length = length, .flags = flags,
  };
  return 0;
}

static int
print_map (struct print *p)
{
  struct map_hash m = { .print = p };

  if (image_walk_extents (p->base, false, map_hash_extent, &m) == -1)
    return -1;
  map_hash_run (&m);
  return 0;
}

#define DENSE_SAMPLES 256

/* The base's identity.  Dense (FEATURE_DENSE_FINGERPRINT): its size; its
 * first and last 64 KiB (partition tables, GPT's backup, superblocks);
 * 4 KiB at 256 places across it; and, for formats with a map of their
 * own, which ranges are allocated.  So a clone of a qcow2, ploop or
 * qsnap base that was written to since (new clusters, zeroed or
 * discarded ones) is told apart from the original.  A raw base's holes
 * are a property of the copy (cp, rsync and scp make them differently),
 * not of the disk, so they are left out.  What no fingerprint short of
 * hashing every byte catches: data rewritten in place, away from the
 * samples, with the layout unchanged.  Sparse, as the first overlays
 * took it: the size, the first 64 KiB and 4 KiB at fifteen places.
 */
static int
fingerprint (struct image *base, uint32_t features, uint64_t *result)
{
  struct print p = {
    .base = base, .dense = features & FEATURE_DENSE_FINGERPRINT,
    .buf = malloc (65536),
  };
  uint64_t size_le = htole64 (base->size);
  int r = -1;

  if (p.dense)
    p.xxh3 = XXH3_createState ();
  else
    p.xxh64 = XXH64_createState ();
  if (p.buf == NULL || (p.dense ? p.xxh3 == NULL : p.xxh64 == NULL)) {
    image_error ("%s: %m", base->path);
    goto out;
  }
  if (p.dense)
    XXH3_64bits_reset (p.xxh3);
  else
    XXH64_reset (p.xxh64, 0);
  print_update (&p, &size_le, sizeof size_le);
  if (print_sample (&p, 65536, 0) == -1)
    goto out;
  if (p.dense) {
    if (print_sample (&p, 65536,
                      base->size > 65536 ? base->size - 65536 : 0) == -1)
      goto out;
    for (unsigned i = 1; i < DENSE_SAMPLES; ++i)
      if (print_sample (&p, BLOCK, base->size / DENSE_SAMPLES * i) == -1)
        goto out;
    if (base->ops != &raw_ops && print_map (&p) == -1)
      goto out;
    *result = XXH3_64bits_digest (p.xxh3);
  }
  else {
    for (unsigned i = 1; i < 16; ++i)
      if (print_sample (&p, BLOCK, base->size / 16 * i) == -1)
        goto out;
    *result = XXH64_digest (p.xxh64);
  }
  r = 0;
 out:
  XXH3_freeState (p.xxh3);
  XXH64_freeState (p.xxh64);
  free (p.buf);
  return r;
}

/* Creating and opening. */

static void
layout (struct overlay *o, uint64_t size)
{
  o->blocks = (size + BLOCK - 1) / BLOCK;
  o->n_pages = (o->blocks + ENTRIES_PER_PAGE - 1) / ENTRIES_PER_PAGE;
  o->map_offset = HEADER_SIZE;
  o->data_offset = o->map_offset + o->n_pages * BLOCK;
}

static void
make_header (uint8_t *h, const struct overlay *o, struct image *base,
             uint64_t print)
{
  memset (h, 0, HEADER_SIZE);
  memcpy (&h[H_MAGIC], MAGIC, 8);
  store_le32 (&h[H_VERSION], OVERLAY_VERSION);
  store_le32 (&h[H_BLOCK], BLOCK);
  store_le64 (&h[H_SIZE], base->size);
  store_le64 (&h[H_MAP], o->map_offset);
  store_le64 (&h[H_DATA], o->data_offset);
  store_le64 (&h[H_FINGERPRINT], print);
  store_le32 (&h[H_FEATURES], FEATURE_DENSE_FINGERPRINT);
  snprintf ((char *) &h[H_BASE_FORMAT], 16, "%s", base->ops->name);
  snprintf ((char *) &h[H_BASE_PATH], 1024, "%s", base->path);
  store_le64 (&h[H_CHECKSUM], XXH64 (h, H_CHECKSUM, 0));
}

/* A new overlay appears under its name complete or not at all, and
 * never replaces a file someone else created meanwhile.
 */
static int
create_file (const char *path, const uint8_t *header, uint64_t file_size)
{
  struct outfile out;
  int r = -1;

  if (outfile_create (&out, path, 0600) == -1)
    return -1;
  if (image_write_file (out.fd, header, HEADER_SIZE, 0) == -1 ||
      ftruncate (out.fd, file_size) == -1)
    image_error ("%s: writing the overlay header: %m", path);
  else
    r = outfile_commit (&out, false);
  outfile_close (&out);
  return r;
}

/* An ephemeral overlay is an unnamed file, gone when closed or when the
 * process dies, in $TMPDIR (or /var/tmp: on disk, not in memory).
 */
static int
create_ephemeral (struct image *img, const uint8_t *header,
                  uint64_t file_size)
{
  const char *dir = getenv ("TMPDIR");
  int fd;

  if (dir == NULL || *dir == '\0')
    dir = "/var/tmp";
  fd = open (dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd == -1) {
    image_error ("%s: cannot create an ephemeral overlay in %s: %m",
                 img->backing->path, dir);
    return -1;
  }
  if (image_write_file (fd, header, HEADER_SIZE, 0) == -1 ||
      ftruncate (fd, file_size) == -1) {
    image_error ("%s: writing the ephemeral overlay in %s: %m",
                 img->backing->path, dir);
    close (fd);
    return -1;
  }
  return fd;
}

/* print is the dense fingerprint of the base when the caller has it
 * already (it just made the overlay), else NULL.  A header that breaks
 * a rule fails with EINVAL, not with whatever errno an earlier call
 * happened to leave (since the byte sources landed that was ENOENT, and
 * qemount called the overlay of another image a missing file).
 */
static int
check_header (struct image *img, const uint8_t *h, const uint64_t *print)
{
  struct overlay *o = img->priv;
  char base_path[1024], base_format[16];
  uint32_t features;
  uint64_t computed = 0;

  if (memcmp (&h[H_MAGIC], MAGIC, 8) != 0) {
    image_error ("%s: not a qemount overlay", img->path);
    errno = EINVAL;
    return -1;
  }
  if (load_le64 (&h[H_CHECKSUM]) != XXH64 (h, H_CHECKSUM, 0)) {
    image_error ("%s: overlay header checksum mismatch (corrupt)",
                 img->path);
    errno = EINVAL;
    return -1;
  }
  features = load_le32 (&h[H_FEATURES]);
  if (load_le32 (&h[H_VERSION]) != OVERLAY_VERSION ||
      (features & ~KNOWN_FEATURES) != 0) {
    image_error ("%s: overlay version %" PRIu32 " (features 0x%" PRIx32
                 ") is not supported (this qemount reads version %d, "
                 "features 0x%x)", img->path, load_le32 (&h[H_VERSION]),
                 features, OVERLAY_VERSION, KNOWN_FEATURES);
    errno = EINVAL;
    return -1;
  }
  memcpy (base_path, &h[H_BASE_PATH], sizeof base_path);
  base_path[sizeof base_path - 1] = '\0';
  memcpy (base_format, &h[H_BASE_FORMAT], sizeof base_format);
  base_format[sizeof base_format - 1] = '\0';
  if (load_le64 (&h[H_SIZE]) == img->size && print == NULL &&
      fingerprint (img->backing, features, &computed) == -1)
    return -1;
  if (load_le64 (&h[H_SIZE]) != img->size ||
      load_le64 (&h[H_FINGERPRINT]) != (print ? *print : computed)) {
    image_error ("%s: overlay belongs to a different base image (it was "
                 "made for %s image %s of %" PRIu64 " bytes)", img->path,
                 base_format, base_path, load_le64 (&h[H_SIZE]));
    errno = EINVAL;
    return -1;
  }
  if (load_le32 (&h[H_BLOCK]) != BLOCK ||
      load_le64 (&h[H_MAP]) != o->map_offset ||
      load_le64 (&h[H_DATA]) != o->data_offset) {
    image_error ("%s: overlay layout does not match its size (corrupt)",
                 img->path);
    errno = EINVAL;
    return -1;
  }
  return 0;
}

/* Load the map pages that exist on disk (the map region is sparse) and
 * check every entry: slots inside the file, none used twice.
 */
static int
load_map (struct image *img, uint64_t file_size)
{
  struct overlay *o = img->priv;
  uint64_t slots = file_size > o->data_offset ?
    (file_size - o->data_offset) / BLOCK : 0;
  uint8_t *seen = calloc (slots / 8 + 1, 1);
  uint32_t buf[ENTRIES_PER_PAGE];
  uint64_t max_entry = FIRST_SLOT_ENTRY - 1;
  uint64_t pos = o->map_offset, end = o->data_offset;
  int r = -1;

  if (seen == NULL) {
    image_error ("%s: %m", img->path);
    return -1;
  }
  while (pos < end) {
    off_t data = lseek (img->src->fd, pos, SEEK_DATA);
    uint64_t p;

    if (data == -1 || (uint64_t) data >= end)
      break;
    pos = (uint64_t) data / BLOCK * BLOCK;
    p = (pos - o->map_offset) / BLOCK;
    if (image_read_file (img, buf, BLOCK, pos, "overlay map") == -1)
      goto out;
    for (uint32_t i = 0; i < ENTRIES_PER_PAGE; ++i) {
      uint32_t e = le32toh (buf[i]);
      uint64_t block = p * ENTRIES_PER_PAGE + i;

      if (e == ENTRY_BASE)
        continue;
      if (block >= o->blocks) {
        image_error ("%s: overlay map has an entry past the end of the "
                     "disk (corrupt)", img->path);
        goto out;
      }
      if (e >= FIRST_SLOT_ENTRY) {
        uint64_t slot = e - FIRST_SLOT_ENTRY;
        if (slot >= slots) {
          image_error ("%s: overlay map entry for block %" PRIu64 " points "
                       "past the end of the file (corrupt)", img->path,
                       block);
          goto out;
        }
        if (seen[slot / 8] & (1 << (slot % 8))) {
          image_error ("%s: two overlay map entries share data slot %"
                       PRIu64 " (corrupt)", img->path, slot);
          goto out;
        }
        seen[slot / 8] |= 1 << (slot % 8);
        if (e > max_entry)
          max_entry = e;
      }
      if (set_entry (img, block, e) == -1)
        goto out;
    }
    pos += BLOCK;
  }
  memset (o->dirty, 0, (o->n_pages + 7) / 8);
  /* Slots past the last mapped one were never flushed: reuse them. */
  o->next_slot = max_entry + 1 - FIRST_SLOT_ENTRY;
  r = 0;
 out:
  free (seen);
  return r;
}

static void overlay_close (struct image *img);
extern const struct image_ops overlay_ops, overlay_readonly_ops;

/* Open the named overlay, creating it (with the base's dense
 * fingerprint in *print, made here) if it is missing and may be written.
 */
static int
open_named (struct image *img, const char *path, uint64_t *print,
            bool *made)
{
  struct overlay *o = img->priv;
  uint8_t header[HEADER_SIZE];
  int fd = open (path, (o->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);

  if (fd == -1 && errno == ENOENT && !o->readonly) {
    if (fingerprint (img->backing, FEATURE_DENSE_FINGERPRINT, print) == -1)
      return -1;
    make_header (header, o, img->backing, *print);
    if (create_file (path, header, o->data_offset) == -1)
      return -1;
    *made = true;
    fd = open (path, O_RDWR | O_CLOEXEC);
  }
  if (fd == -1)
    image_error ("%s: %m", path);
  return fd;
}

struct image *
overlay_open (struct image *base, const char *path, bool readonly)
{
  uint8_t header[HEADER_SIZE];
  struct image *img;
  struct overlay *o;
  uint64_t print, file_size;
  bool made = false;
  int fd = -1;

  img = image_alloc (readonly ? &overlay_readonly_ops : &overlay_ops,
                     path ? path : base->path, NULL, sizeof *o);
  if (img == NULL)
    return NULL;
  img->backing = base;
  img->size = base->size;
  img->block_size = BLOCK;
  o = img->priv;
  o->readonly = readonly;
  pthread_mutex_init (&o->lock, NULL);
  pthread_mutex_init (&o->flush_lock, NULL);
  for (unsigned i = 0; i < BLOCK_LOCKS; ++i)
    pthread_mutex_init (&o->block_locks[i], NULL);
  layout (o, base->size);
  o->pages = calloc (o->n_pages, sizeof *o->pages);
  o->dirty = calloc ((o->n_pages + 7) / 8, 1);
  if (o->pages == NULL || o->dirty == NULL)
    goto nomem;

  if (path == NULL) {
    o->ephemeral = made = true;
    if (fingerprint (base, FEATURE_DENSE_FINGERPRINT, &print) == -1)
      goto err;
    make_header (header, o, base, print);
    fd = create_ephemeral (img, header, o->data_offset);
  }
  else
    fd = open_named (img, path, &print, &made);
  if (fd == -1)
    goto err;
  img->src = source_from_fd (fd, img->path);
  if (img->src == NULL)
    goto err;
  file_size = img->src->size;
  if (file_size < HEADER_SIZE) {
    image_error ("%s: file is too short for an overlay header", img->path);
    goto err;
  }
  if (image_read_file (img, header, HEADER_SIZE, 0, "overlay header") == -1 ||
      check_header (img, header, made ? &print : NULL) == -1 ||
      load_map (img, file_size) == -1)
    goto err;
  return img;

 nomem:
  image_error ("%s: %m", img->path);
 err:
  img->backing = NULL;          /* base stays the caller's */
  return image_open_failed (img);
}

/* Reading. */

/* How many blocks from block on (at most max) read the same way as it:
 * all from the base, all zeros, or all from consecutive slots.
 */
static uint64_t
same_run (struct overlay *o, uint64_t block, uint64_t max, uint32_t *first)
{
  uint64_t n = 1;
  uint32_t e;

  pthread_mutex_lock (&o->lock);
  e = *first = get_entry (o, block);
  while (n < max) {
    uint32_t next = get_entry (o, block + n);

    if (e >= FIRST_SLOT_ENTRY ? next != e + n : next != e)
      break;
    n++;
  }
  pthread_mutex_unlock (&o->lock);
  return n;
}

/* A map call looks at this many blocks at most (under the map lock). */
#define MAP_MAX_BLOCKS 65536

static int
overlay_map (struct image *img, struct image_map_state *state,
             uint64_t offset, uint64_t end, bool for_extents,
             struct image_run *run)
{
  struct overlay *o = img->priv;
  const uint64_t block = offset / BLOCK, within = offset % BLOCK;
  uint64_t max = (end - 1) / BLOCK - block + 1;
  uint64_t length;
  uint32_t e;

  length = same_run (o, block, max < MAP_MAX_BLOCKS ? max : MAP_MAX_BLOCKS,
                     &e) * BLOCK - within;
  *run = (struct image_run) {
    .kind = e == ENTRY_BASE ? IMAGE_RUN_BACKING :
      e == ENTRY_ZERO ? IMAGE_RUN_ZERO : IMAGE_RUN_DATA,
    .hole = e == ENTRY_ZERO,
    .host = e >= FIRST_SLOT_ENTRY ? slot_offset (o, e) + within : 0,
    .length = length < end - offset ? length : end - offset,
  };
  return 0;
}

/* Writing. */

static pthread_mutex_t *
block_lock (struct overlay *o, uint64_t block)
{
  return &o->block_locks[block % BLOCK_LOCKS];
}

/* Write one whole block's new contents.  Called with its block lock. */
static int
write_block (struct image *img, uint64_t block, const void *data)
{
  struct overlay *o = img->priv;
  uint32_t e;

  pthread_mutex_lock (&o->lock);
  e = get_entry (o, block);
  if (e < FIRST_SLOT_ENTRY) {
    if (o->next_slot >= MAX_SLOTS) {
      pthread_mutex_unlock (&o->lock);
      image_error ("%s: overlay is full", img->path);
      errno = ENOSPC;
      return -1;
    }
    /* A new slot; published only once its data is written, below.  A
     * block that has a slot already is rewritten in place.
     */
    e = FIRST_SLOT_ENTRY + o->next_slot++;
  }
  pthread_mutex_unlock (&o->lock);

  if (image_write_file (img->src->fd, data, BLOCK, slot_offset (o, e)) == -1) {
    image_error ("%s: writing the overlay: %m", img->path);
    return -1;
  }

  pthread_mutex_lock (&o->lock);
  int r = get_entry (o, block) == e ? 0 : set_entry (img, block, e);
  pthread_mutex_unlock (&o->lock);
  return r;
}

/* Apply fn to each block touched by [offset, offset+count): whole blocks
 * directly, partial ones by read-modify-write, each under its lock.
 */
static int
for_each_block (struct image *img, uint64_t offset, size_t count,
                const char *data, bool zero, bool trim)
{
  struct overlay *o = img->priv;
  char *tmp = NULL;
  int r = 0;

  while (count > 0 && r == 0) {
    uint64_t block = offset / BLOCK, within = offset % BLOCK;
    size_t n = BLOCK - within;
    pthread_mutex_t *lock = block_lock (o, block);

    if (n > count)
      n = count;
    pthread_mutex_lock (lock);
    if (n == BLOCK && zero) {
      /* A zeroed block keeps no data (the slot, if any, is dropped). */
      pthread_mutex_lock (&o->lock);
      r = set_entry (img, block, ENTRY_ZERO);
      pthread_mutex_unlock (&o->lock);
    }
    else if (n == BLOCK)
      r = write_block (img, block, data);
    else if (zero && trim)
      r = 0;                    /* trimming part of a block: advisory */
    else {
      if (tmp == NULL && (tmp = malloc (BLOCK)) == NULL) {
        image_error ("%s: %m", img->path);
        r = -1;
      }
      else {
        uint64_t start = block * BLOCK;
        size_t len = img->size - start < BLOCK ? img->size - start : BLOCK;

        memset (tmp, 0, BLOCK);
        r = image_pread (img, tmp, len, start);
        if (r == 0) {
          if (zero)
            memset (tmp + within, 0, n);
          else
            memcpy (tmp + within, data, n);
          r = write_block (img, block, tmp);
        }
      }
    }
    pthread_mutex_unlock (lock);
    if (data)
      data += n;
    offset += n;
    count -= n;
  }
  free (tmp);
  return r;
}

static int
overlay_pwrite (struct image *img, const void *buf, size_t count,
                uint64_t offset)
{
  return for_each_block (img, offset, count, buf, false, false);
}

static int
overlay_zero (struct image *img, size_t count, uint64_t offset, bool trim)
{
  return for_each_block (img, offset, count, NULL, true, trim);
}

/* Make every completed write durable: sync the slots, then write the map
 * pages that changed, then sync again.  The dirty pages are copied under
 * the lock before the first sync, so no entry written to disk can point
 * at a slot written after that sync began.
 *
 * Flushes run one at a time (every connection may send them).  Two at
 * once could each copy the same page, and the older copy could reach the
 * disk after the newer one with its dirty bit already clear: the writes
 * between the two copies would be lost at the next start.  And a flush
 * that found no dirty page would return while another one still had the
 * pages it depends on in its hands, not yet on disk.
 */
static int
overlay_flush (struct image *img)
{
  struct overlay *o = img->priv;
  uint64_t n = 0, *which = NULL;
  uint32_t (*copies)[ENTRIES_PER_PAGE] = NULL;
  int r = -1;

  if (o->ephemeral)
    return 0;

  pthread_mutex_lock (&o->flush_lock);
  pthread_mutex_lock (&o->lock);
  for (uint64_t p = 0; p < o->n_pages; p += 8) {
    if (o->dirty[p / 8] == 0)
      continue;
    for (uint64_t q = p; q < p + 8 && q < o->n_pages; ++q)
      if (o->dirty[q / 8] & (1 << (q % 8)))
        n++;
  }
  if (n > 0) {
    which = malloc (n * sizeof *which);
    copies = malloc (n * sizeof *copies);
    if (which == NULL || copies == NULL) {
      pthread_mutex_unlock (&o->lock);
      image_error ("%s: %m", img->path);
      goto out;
    }
    n = 0;
    for (uint64_t p = 0; p < o->n_pages; ++p) {
      if (!(o->dirty[p / 8] & (1 << (p % 8))))
        continue;
      which[n] = p;
      for (uint32_t i = 0; i < ENTRIES_PER_PAGE; ++i)
        copies[n][i] = htole32 (o->pages[p][i]);
      o->dirty[p / 8] &= ~(1 << (p % 8));
      n++;
    }
  }
  pthread_mutex_unlock (&o->lock);

  if (fdatasync (img->src->fd) == -1)
    goto io_error;
  for (uint64_t i = 0; i < n; ++i)
    if (image_write_file (img->src->fd, copies[i], BLOCK,
                   o->map_offset + which[i] * BLOCK) == -1)
      goto io_error;
  if (n > 0 && fdatasync (img->src->fd) == -1)
    goto io_error;
  r = 0;
  goto out;

 io_error:
  image_error ("%s: flushing the overlay: %m", img->path);
  /* Nothing is known to be on disk: write these pages next time. */
  pthread_mutex_lock (&o->lock);
  for (uint64_t i = 0; i < n; ++i)
    o->dirty[which[i] / 8] |= 1 << (which[i] % 8);
  pthread_mutex_unlock (&o->lock);
 out:
  pthread_mutex_unlock (&o->flush_lock);
  free (which);
  free (copies);
  return r;
}

static void
overlay_close (struct image *img)
{
  struct overlay *o = img->priv;

  /* A clean shutdown keeps every write, flushed or not. */
  if (img->src && o->pages && o->dirty && !o->readonly)
    overlay_flush (img);
  if (o->pages)
    for (uint64_t p = 0; p < o->n_pages; ++p)
      free (o->pages[p]);
  free (o->pages);
  free (o->dirty);
  pthread_mutex_destroy (&o->lock);
  pthread_mutex_destroy (&o->flush_lock);
  for (unsigned i = 0; i < BLOCK_LOCKS; ++i)
    pthread_mutex_destroy (&o->block_locks[i]);
}

const struct image_ops overlay_ops = {
  .name = "overlay",
  .map = overlay_map,
  .close = overlay_close,
  .pwrite = overlay_pwrite,
  .zero = overlay_zero,
  .flush = overlay_flush,
};

/* The same overlay, to read what it holds: image_writable is false, and
 * a connection that writes gets an ephemeral overlay on top of it.
 */
const struct image_ops overlay_readonly_ops = {
  .name = "overlay",
  .map = overlay_map,
  .close = overlay_close,
};
