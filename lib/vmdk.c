/* SPDX-License-Identifier: BSD-3-Clause */
/* VMDK (VMware), read-only.
 *
 * A disk is a list of extents, each a range of sectors: a hosted sparse
 * extent (a file starting with the "KDMV" header: a grain directory of
 * grain table offsets, grain tables of grain offsets, the grains), a
 * flat extent (a plain file, from an offset), or zeros.  The list is in
 * a text descriptor, either a small file of its own (monolithicFlat,
 * twoGbMaxExtent*) naming the extent files, or embedded in a sparse
 * file that is then the only extent (monolithicSparse,
 * streamOptimized).  streamOptimized grains are zlib-compressed, each
 * behind a marker (its sector and size); its grain directory may be at
 * the end, its offset in a footer (a copy of the header) there.
 *
 * Grain tables are read and checked at open and kept in memory (4 bytes
 * per grain: 2 KiB per 32 MiB of a disk with 64 KiB grains).  A grain
 * table entry of 0 is a grain this file does not store (the parent's,
 * named by parentFileNameHint, or zeros); 1, when the header's flag says
 * so, a grain of zeros.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "cache.h"
#include "decompress.h"
#include "image.h"
#include "source.h"
#include "thread-local.h"
#include "vmdk.h"

#define SECTOR 512u

#define KDMV_MAGIC          0x564d444bu   /* "KDMV" */
#define FLAG_ZERO_GRAIN     (1u << 2)
#define FLAG_COMPRESSED     (1u << 16)
#define FLAG_MARKERS        (1u << 17)
#define COMPRESS_DEFLATE    1
#define GD_AT_END           UINT64_MAX

/* streamOptimized metadata markers (a grain marker has a size). */
#define MARKER_EOS          0
#define MARKER_FOOTER       3
#define GRAIN_MARKER_SIZE   12          /* lba (8), size (4) */

#define GTE_ZERO            1

/* Bounds on what a header may ask for: VMware writes 64 KiB grains and
 * 512 entries per grain table.
 */
#define MAX_GRAIN_BITS      26          /* 64 MiB */
#define MAX_GTES            512

struct sparse {
  unsigned grain_bits;          /* log2 of the grain size in bytes */
  uint32_t gtes;                /* entries per grain table */
  uint64_t capacity;            /* bytes */
  uint64_t file_size;
  bool compressed;
  bool zero_grain;              /* entry 1 is a grain of zeros */
  uint32_t **gt;                /* per grain directory entry, NULL:
                                   no table; into tables */
  uint32_t *tables;             /* host order */
  uint64_t owner;               /* block cache key space */
};

struct extent {
  uint64_t start, length;       /* in the disk, bytes */
  enum { EXT_DATA, EXT_ZERO, EXT_SPARSE } kind;
  struct source *file;          /* NULL: none; may be img->src */
  uint64_t offset;              /* EXT_DATA: of the first byte in file */
  struct sparse sparse;
};

struct vmdk {
  struct extent *extents;
  size_t n_extents;
  bool has_cid;
  uint32_t cid;
};

#define OPEN_ERROR(...) (image_error (__VA_ARGS__), errno = EINVAL, -1)

static bool
vmdk_probe (struct source *src, const uint8_t *buf, size_t len)
{
  static const char text[] = "# Disk DescriptorFile";

  return (len >= 4 && load_le32 (buf) == KDMV_MAGIC) ||
    (len >= sizeof text - 1 && memcmp (buf, text, sizeof text - 1) == 0);
}

/* The header fields we use, from one 512-byte header sector. */
struct header {
  uint32_t version, flags;
  uint64_t capacity, grain;     /* sectors */
  uint64_t desc_offset, desc_size, gd_offset;   /* sectors */
  uint32_t gtes;
  uint16_t compression;
};

static void
decode_header (const uint8_t *b, struct header *h)
{
  h->version = load_le32 (&b[4]);
  h->flags = load_le32 (&b[8]);
  h->capacity = load_le64 (&b[12]);
  h->grain = load_le64 (&b[20]);
  h->desc_offset = load_le64 (&b[28]);
  h->desc_size = load_le64 (&b[36]);
  h->gtes = load_le32 (&b[44]);
  h->gd_offset = load_le64 (&b[56]);
  h->compression = b[77] | (b[78] << 8);
}

/* A streamOptimized file written in one pass has its grain directory
 * at the end: the header there (after a footer marker, before the
 * end-of-stream marker) has its offset.
 */
static int
read_footer (struct source *f, uint64_t file_size,
             struct header *h)
{
  uint8_t b[3 * SECTOR];

  if (file_size < 4 * SECTOR)
    return OPEN_ERROR ("%s: the header says the grain directory is in the "
                       "footer, but the file is too short for one",
                       f->name);
  if (source_read (f, b, sizeof b, file_size - sizeof b,
                     "footer") == -1)
    return -1;
  if (load_le32 (&b[8]) != 0 || load_le32 (&b[12]) != MARKER_FOOTER ||
      load_le32 (&b[SECTOR]) != KDMV_MAGIC ||
      load_le64 (&b[2 * SECTOR]) != 0 || load_le32 (&b[2 * SECTOR + 8]) != 0 ||
      load_le32 (&b[2 * SECTOR + 12]) != MARKER_EOS)
    return OPEN_ERROR ("%s: the header says the grain directory is in the "
                       "footer, but there is no footer (with its markers) "
                       "at the end of the file", f->name);
  decode_header (&b[SECTOR], h);
  if (h->gd_offset == GD_AT_END)
    return OPEN_ERROR ("%s: the footer does not say where the grain "
                       "directory is", f->name);
  return 0;
}

static bool
overlaps (uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
  return a < b + blen && b < a + alen;
}

/* Check every grain table entry of table t (for grains from first):
 * the grains must be in the file and not in the header or the grain
 * directory.
 */
static int
check_table (struct source *f, struct sparse *s, uint32_t *t,
             uint64_t first, uint64_t gd, uint64_t gd_len)
{
  const uint64_t grain_size = UINT64_C (1) << s->grain_bits;

  for (uint32_t i = 0; i < s->gtes; ++i) {
    uint64_t grain = first + i, host, len;

    t[i] = le32toh (t[i]);
    if (t[i] == 0 || (t[i] == GTE_ZERO && s->zero_grain))
      continue;
    if ((grain << s->grain_bits) >= s->capacity)
      return OPEN_ERROR ("%s: grain table entry for grain %" PRIu64
                         " is past the disk's capacity", f->name, grain);
    host = (uint64_t) t[i] * SECTOR;
    len = s->compressed ? GRAIN_MARKER_SIZE
      : s->capacity - (grain << s->grain_bits) < grain_size
      ? s->capacity - (grain << s->grain_bits) : grain_size;
    if (host + len > s->file_size)
      return OPEN_ERROR ("%s: grain %" PRIu64 " points past the end of the "
                         "file (sector %" PRIu32 ")", f->name, grain, t[i]);
    if (host < SECTOR || overlaps (host, len, gd, gd_len))
      return OPEN_ERROR ("%s: grain %" PRIu64 " points into the header or "
                         "the grain directory (sector %" PRIu32 ")",
                         f->name, grain, t[i]);
  }
  return 0;
}

/* Read the grain directory and every grain table of sparse file f. */
static int
read_tables (struct source *f, struct sparse *s,
             const struct header *h)
{
  const uint64_t span = (uint64_t) s->gtes << s->grain_bits;
  const uint64_t entries = (s->capacity - 1) / span + 1;
  const uint64_t gd = h->gd_offset * SECTOR, gd_len = entries * 4;
  const size_t gt_len = (size_t) s->gtes * 4;
  uint32_t *dir;
  uint64_t used = 0, i;
  int r = -1;

  if (h->gd_offset == 0 || h->gd_offset > s->file_size / SECTOR ||
      gd_len > s->file_size - gd)
    return OPEN_ERROR ("%s: grain directory of %" PRIu64 " entries at "
                       "sector %" PRIu64 " is outside the file", f->name,
                       entries, h->gd_offset);
  dir = malloc (gd_len);
  s->gt = calloc (entries, sizeof *s->gt);
  if (dir == NULL || s->gt == NULL) {
    image_error ("%s: %m", f->name);
    goto out;
  }
  if (source_read (f, dir, gd_len, gd,
                     "grain directory") == -1)
    goto out;
  for (i = 0; i < entries; ++i) {
    dir[i] = le32toh (dir[i]);
    if (dir[i] != 0)
      used++;
  }
  /* Tables may not share room: then they all fit in the file, and so
   * does their copy in memory.
   */
  if (used * gt_len > s->file_size) {
    r = OPEN_ERROR ("%s: the grain directory's %" PRIu64 " grain tables "
                    "do not fit in the file (entries overlap?)", f->name,
                    used);
    goto out;
  }
  s->tables = malloc (used * gt_len + 1);
  if (s->tables == NULL) {
    image_error ("%s: %m", f->name);
    goto out;
  }
  used = 0;
  for (i = 0; i < entries; ++i) {
    uint64_t off = (uint64_t) dir[i] * SECTOR;
    uint32_t *t;

    if (dir[i] == 0)
      continue;
    if (off + gt_len > s->file_size || off < SECTOR ||
        overlaps (off, gt_len, gd, gd_len)) {
      r = OPEN_ERROR ("%s: grain directory entry %" PRIu64 " points %s "
                      "(sector %" PRIu32 ")", f->name, i,
                      off + gt_len > s->file_size ? "past the end of the file"
                      : "into the header or the grain directory", dir[i]);
      goto out;
    }
    t = s->tables + used++ * s->gtes;
    if (source_read (f, t, gt_len, off, "grain table") == -1 ||
        check_table (f, s, t, i * s->gtes, gd, gd_len) == -1)
      goto out;
    s->gt[i] = t;
  }
  r = 0;

 out:
  free (dir);
  return r;
}

/* Open the hosted sparse extent in f; its embedded descriptor, if it
 * has one and desc is not NULL, goes to *desc.
 */
static int
open_sparse (struct source *f, struct sparse *s,
             struct vmdk_descriptor *desc, struct image *img)
{
  uint8_t b[SECTOR];
  struct header h;

  s->file_size = f->size;
  if (s->file_size < SECTOR)
    return OPEN_ERROR ("%s: file is too short for a VMDK sparse extent "
                       "header", f->name);
  if (source_read (f, b, SECTOR, 0, "header") == -1)
    return -1;
  if (load_le32 (b) != KDMV_MAGIC) {
    if (memcmp (b, "COWD", 4) == 0)
      return OPEN_ERROR ("%s: VMFSSPARSE (COWD) extents are not supported",
                         f->name);
    return OPEN_ERROR ("%s: not a VMDK sparse extent (no KDMV magic)",
                       f->name);
  }
  decode_header (b, &h);
  if (h.version < 1 || h.version > 3)
    return OPEN_ERROR ("%s: VMDK sparse extent version %" PRIu32 " is not "
                       "supported (1 to 3 are)", f->name, h.version);
  if (img != NULL)
    img->version = h.version;

  /* The descriptor is where the first header says, even when the
   * footer's copy holds the grain directory's place.
   */
  if (desc != NULL && h.desc_offset != 0) {
    char *text;
    int r;

    if (h.desc_size > VMDK_MAX_DESCRIPTOR / SECTOR ||
        h.desc_offset > s->file_size / SECTOR ||
        h.desc_size * SECTOR > s->file_size - h.desc_offset * SECTOR)
      return OPEN_ERROR ("%s: embedded descriptor (%" PRIu64 " sectors at "
                         "sector %" PRIu64 ") is outside the file or "
                         "larger than %u KiB", f->name, h.desc_size,
                         h.desc_offset, VMDK_MAX_DESCRIPTOR >> 10);
    text = malloc (h.desc_size * SECTOR + 1);
    if (text == NULL) {
      image_error ("%s: %m", f->name);
      return -1;
    }
    r = source_read (f, text, h.desc_size * SECTOR,
                       h.desc_offset * SECTOR, "embedded descriptor");
    if (r == 0)
      r = vmdk_parse_descriptor (f->name, text, h.desc_size * SECTOR, false,
                                 desc);
    free (text);
    if (r == -1)
      return -1;
  }

  if (h.gd_offset == GD_AT_END && read_footer (f, s->file_size, &h) == -1)
    return -1;
  if (h.grain == 0 || (h.grain & (h.grain - 1)) != 0 ||
      h.grain > (UINT64_C (1) << MAX_GRAIN_BITS) / SECTOR)
    return OPEN_ERROR ("%s: grain size of %" PRIu64 " sectors is not a "
                       "power of two from 1 sector to %u MiB", f->name,
                       h.grain, 1u << (MAX_GRAIN_BITS - 20));
  if (h.gtes == 0 || h.gtes > MAX_GTES)
    return OPEN_ERROR ("%s: %" PRIu32 " entries per grain table (1 to %d "
                       "are allowed)", f->name, h.gtes, MAX_GTES);
  if (h.capacity == 0 || h.capacity > INT64_MAX / SECTOR)
    return OPEN_ERROR ("%s: capacity of %" PRIu64 " sectors is zero or "
                       "too large", f->name, h.capacity);
  s->compressed = h.flags & FLAG_COMPRESSED;
  s->zero_grain = h.flags & FLAG_ZERO_GRAIN;
  if (s->compressed &&
      (h.compression != COMPRESS_DEFLATE || !(h.flags & FLAG_MARKERS)))
    return OPEN_ERROR ("%s: compressed grains without markers or with "
                       "compression algorithm %u are not supported (only "
                       "deflate with markers, as VMware writes)", f->name,
                       h.compression);
  s->grain_bits = __builtin_ctzll (h.grain) + 9;
  s->gtes = h.gtes;
  s->capacity = h.capacity * SECTOR;
  if (read_tables (f, s, &h) == -1)
    return -1;

  if (s->compressed) {
    if (image_block_cache () == NULL)
      return -1;
    s->owner = cache_new_owner ();
  }
  return 0;
}

/* Open the extent files of a descriptor file and lay them out. */
static int
open_extents (struct image *img, struct vmdk *v,
              const struct vmdk_descriptor *d,
              const struct image_options *opts)
{
  uint64_t start = 0;

  v->extents = calloc (d->n_extents, sizeof *v->extents);
  if (v->extents == NULL) {
    image_error ("%s: %m", img->path);
    return -1;
  }
  for (size_t i = 0; i < d->n_extents; ++i) {
    const struct vmdk_descriptor_extent *de = &d->extents[i];
    struct extent *e = &v->extents[v->n_extents++];
    char *path;

    e->start = start;
    e->length = de->sectors * SECTOR;
    if (e->length > INT64_MAX - start)
      return OPEN_ERROR ("%s: the extents add up to more than 2^63 bytes",
                         img->path);
    start += e->length;
    if (de->noaccess || de->type == VMDK_EXTENT_ZERO) {
      e->kind = EXT_ZERO;
      continue;
    }

    path = image_resolve_relative (img->src, de->file, "extent file", opts);
    if (path == NULL)
      return -1;
    e->file = source_open (path);
    free (path);
    if (e->file == NULL)
      return -1;

    if (de->type == VMDK_EXTENT_SPARSE) {
      e->kind = EXT_SPARSE;
      if (open_sparse (e->file, &e->sparse, NULL, NULL) == -1)
        return -1;
      if (e->sparse.capacity < e->length)
        return OPEN_ERROR ("%s: extent %zu is %" PRIu64 " sectors, but its "
                           "file %s holds only %" PRIu64, img->path, i + 1,
                           de->sectors, de->file,
                           e->sparse.capacity / SECTOR);
    }
    else {
      uint64_t size;

      e->kind = EXT_DATA;
      e->offset = de->offset * SECTOR;
      size = e->file->size;
      if (e->offset > size || e->length > size - e->offset)
        return OPEN_ERROR ("%s: flat extent %zu (%" PRIu64 " sectors from "
                           "sector %" PRIu64 ") is past the end of its file "
                           "%s (truncated?)", img->path, i + 1, de->sectors,
                           de->offset, de->file);
    }
  }
  if (start == 0)
    return OPEN_ERROR ("%s: the extents hold no sectors", img->path);
  img->size = start;
  return 0;
}

/* The parent named by parentFileNameHint, in any format; a VMDK parent
 * must have the content ID the child was made on.
 */
static int
open_parent (struct image *img, const struct vmdk_descriptor *d,
             const struct image_options *opts, unsigned depth)
{
  const struct vmdk *parent;

  if (opts->backing == BACKING_NO) {
    image_warning ("%s: parent '%s' is not followed (backing=no): grains "
                   "this image does not store read as zeros", img->path,
                   d->parent_hint);
    return 0;
  }
  img->backing = image_open_backing (img, d->parent_hint, NULL, opts,
                                     depth + 1);
  if (img->backing == NULL)
    return -1;
  if (img->backing->ops != &vmdk_ops)
    return 0;
  parent = img->backing->priv;
  if (d->has_parent_cid && parent->has_cid && parent->cid != d->parent_cid)
    return OPEN_ERROR ("%s: its parent %s has content ID (CID) %08" PRIx32
                       ", but it was made on a parent with CID %08" PRIx32
                       " (parentCID): the parent was changed or is another "
                       "disk", img->path, img->backing->path, parent->cid,
                       d->parent_cid);
  return 0;
}

static int
vmdk_parse (struct image *img, struct vmdk *v,
            const struct image_options *opts, unsigned depth)
{
  struct vmdk_descriptor d = { .parent_cid = VMDK_NO_PARENT_CID };
  uint8_t magic[4];
  uint64_t size;
  int r = -1;

  size = img->src->size;
  if (size < 4)
    return OPEN_ERROR ("%s: file is too short for a VMDK image", img->path);
  if (image_read_file (img, magic, 4, 0, "header") == -1)
    return -1;

  if (load_le32 (magic) == KDMV_MAGIC) {
    /* The sparse file is the disk's one extent, whatever its embedded
     * descriptor's extent line says.
     */
    struct extent *e;

    v->extents = calloc (1, sizeof *v->extents);
    if (v->extents == NULL) {
      image_error ("%s: %m", img->path);
      return -1;
    }
    e = &v->extents[0];
    v->n_extents = 1;
    e->kind = EXT_SPARSE;
    e->file = img->src;
    if (open_sparse (e->file, &e->sparse, &d, img) == -1)
      goto out;
    e->length = img->size = e->sparse.capacity;
  }
  else {
    char *text;

    if (size > VMDK_MAX_DESCRIPTOR)
      return OPEN_ERROR ("%s: VMDK descriptor file is larger than %u KiB",
                         img->path, VMDK_MAX_DESCRIPTOR >> 10);
    text = malloc (size);
    if (text == NULL) {
      image_error ("%s: %m", img->path);
      return -1;
    }
    r = image_read_file (img, text, size, 0, "descriptor");
    if (r == 0)
      r = vmdk_parse_descriptor (img->path, text, size, true, &d);
    free (text);
    if (r == -1)
      return -1;
    r = open_extents (img, v, &d, opts);
    if (r == -1)
      goto out;
    r = -1;
  }

  for (size_t i = 0; i < v->n_extents; ++i)
    if (v->extents[i].kind == EXT_SPARSE) {
      img->block_size = UINT32_C (1) << v->extents[i].sparse.grain_bits;
      break;
    }
  img->subformat = d.create_type;
  v->has_cid = d.has_cid;
  v->cid = d.cid;
  if (d.parent_hint != NULL && open_parent (img, &d, opts, depth) == -1)
    goto out;
  r = 0;

 out:
  vmdk_descriptor_free (&d);
  return r;
}

static struct image *
vmdk_open (const char *path, struct source *src,
           const struct image_options *opts, unsigned depth)
{
  struct image *img = image_alloc (&vmdk_ops, path, src, sizeof (struct vmdk));

  if (img == NULL)
    return NULL;
  if (vmdk_parse (img, img->priv, opts, depth) == -1)
    return image_open_failed (img);
  return img;
}

/* The extent holding disk offset (< size). */
static const struct extent *
find_extent (const struct vmdk *v, uint64_t offset)
{
  size_t lo = 0, hi = v->n_extents;

  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;

    if (v->extents[mid].start <= offset)
      lo = mid;
    else
      hi = mid;
  }
  return &v->extents[lo];
}

static enum image_run_kind
grain_kind (const struct sparse *s, uint32_t g)
{
  if (g == 0)
    return IMAGE_RUN_BACKING;
  if (g == GTE_ZERO && s->zero_grain)
    return IMAGE_RUN_ZERO;
  return s->compressed ? IMAGE_RUN_DECODED : IMAGE_RUN_DATA;
}

/* The run at x (< end, both relative to the sparse extent e, the
 * index-th): up to the end of x's grain table at most, joining grains
 * of one kind, data only while they follow each other in the file.
 */
static void
map_sparse (const struct extent *e, size_t index, uint64_t x, uint64_t end,
            struct image_run *run)
{
  const struct sparse *s = &e->sparse;
  const uint64_t grain_size = UINT64_C (1) << s->grain_bits;
  const uint64_t grain = x >> s->grain_bits;
  const uint64_t within = x & (grain_size - 1);
  const uint32_t *t = s->gt[grain / s->gtes];
  const uint32_t i = grain % s->gtes;
  enum image_run_kind kind;
  uint32_t n;

  if (t == NULL) {
    *run = (struct image_run) {
      .kind = IMAGE_RUN_BACKING,
      .length = ((uint64_t) (s->gtes - i) << s->grain_bits) - within,
    };
    return;
  }
  kind = grain_kind (s, t[i]);
  *run = (struct image_run) {
    .kind = kind, .hole = kind == IMAGE_RUN_ZERO,
    .length = grain_size - within, .file = e->file,
  };
  if (kind == IMAGE_RUN_DECODED) {
    run->token[0] = index;
    run->token[1] = t[i];
    run->token[2] = grain;
    return;
  }
  if (kind == IMAGE_RUN_DATA)
    run->host = (uint64_t) t[i] * SECTOR + within;
  for (n = 1; i + n < s->gtes && run->length < end - x; ++n) {
    if (grain_kind (s, t[i + n]) != kind ||
        (kind == IMAGE_RUN_DATA &&
         t[i + n] != t[i] + (n << (s->grain_bits - 9))))
      break;
    run->length += grain_size;
  }
}

static int
vmdk_map (struct image *img, struct image_map_state *state, uint64_t offset,
          uint64_t end, bool for_extents, struct image_run *run)
{
  const struct vmdk *v = img->priv;
  const struct extent *e = find_extent (v, offset);
  const uint64_t x = offset - e->start;
  const uint64_t limit = end - e->start < e->length ? end - e->start
                                                    : e->length;

  switch (e->kind) {
  case EXT_DATA:
    *run = (struct image_run) {
      .kind = IMAGE_RUN_DATA, .host = e->offset + x, .file = e->file,
      .length = limit - x,
    };
    break;
  case EXT_ZERO:
    *run = (struct image_run) {
      .kind = IMAGE_RUN_ZERO, .hole = true, .length = limit - x,
    };
    break;
  case EXT_SPARSE:
    map_sparse (e, e - v->extents, x, limit, run);
    if (run->length > limit - x)
      run->length = limit - x;
    break;
  }
  return 0;
}

/* One compressed grain to load. */
struct grain_load {
  struct image *img;
  const struct extent *e;
  uint64_t grain;               /* within the extent */
  uint32_t sector;              /* of its marker */
};

/* Read and inflate a grain behind its marker into buf (a whole grain;
 * the last grain of a disk whose size is not a multiple of the grain
 * size may hold just the disk's part).
 */
static int
load_grain (void *opaque, void *buf)
{
  const struct grain_load *req = opaque;
  const struct sparse *s = &req->e->sparse;
  struct source *f = req->e->file;
  const uint64_t grain_size = UINT64_C (1) << s->grain_bits;
  const uint64_t host = (uint64_t) req->sector * SECTOR;
  const uint64_t disk_part = s->capacity - (req->grain << s->grain_bits);
  uint8_t marker[GRAIN_MARKER_SIZE];
  uint64_t lba;
  uint32_t size;
  size_t got;
  void *in;

  if (source_read (f, marker, sizeof marker, host,
                     "grain marker") == -1)
    return -1;
  lba = load_le64 (marker);
  size = load_le32 (&marker[8]);
  if (lba != req->grain << (s->grain_bits - 9)) {
    image_error ("%s: grain %" PRIu64 " (at sector %" PRIu32 "): its marker "
                 "says it is the grain at sector %" PRIu64, f->name,
                 req->grain, req->sector, lba);
    errno = EIO;
    return -1;
  }
  /* deflate never makes data more than a little bigger. */
  if (size == 0 || size > grain_size + grain_size / 8 + 1024 ||
      size > s->file_size - host - GRAIN_MARKER_SIZE) {
    image_error ("%s: grain %" PRIu64 " (at sector %" PRIu32 "): compressed "
                 "size %" PRIu32 " is zero, too large or past the end of "
                 "the file", f->name, req->grain, req->sector, size);
    errno = EIO;
    return -1;
  }
  in = thread_scratch (size);
  if (in == NULL) {
    image_error ("%s: %m", f->name);
    return -1;
  }
  if (source_read (f, in, size, host + GRAIN_MARKER_SIZE,
                     "compressed grain") == -1)
    return -1;
  if (decompress_zlib (in, size, buf, grain_size, &got) == -1 ||
      (got != grain_size && (disk_part >= grain_size || got != disk_part))) {
    image_error ("%s: compressed grain %" PRIu64 " (at sector %" PRIu32
                 ") does not inflate to the grain size of %" PRIu64
                 " bytes", f->name, req->grain, req->sector, grain_size);
    errno = EIO;
    return -1;
  }
  memset ((char *) buf + got, 0, grain_size - got);
  return 0;
}

/* Compressed grains go through the shared block cache keyed by their
 * place in the file; a whole grain read goes straight into the reply,
 * as qcow2's compressed clusters do.
 */
static int
vmdk_read_decoded (struct image *img, const struct image_run *run,
                   void *buf, size_t count, uint64_t offset)
{
  const struct vmdk *v = img->priv;
  const struct extent *e = &v->extents[run->token[0]];
  const struct sparse *s = &e->sparse;
  struct grain_load req = {
    .img = img, .e = e, .sector = run->token[1], .grain = run->token[2],
  };
  const struct cache_block b = {
    .owner = s->owner, .key = req.sector,
    .size = UINT32_C (1) << s->grain_bits,
  };

  return cache_read (image_block_cache (), &b, load_grain, &req, buf,
                     (offset - e->start) & (b.size - 1), count,
                     CACHE_WHOLE_DIRECT);
}

static void
vmdk_close (struct image *img)
{
  struct vmdk *v = img->priv;

  for (size_t i = 0; i < v->n_extents; ++i) {
    struct extent *e = &v->extents[i];

    if (e->file != img->src)
      source_close (e->file);
    free (e->sparse.gt);
    free (e->sparse.tables);
  }
  free (v->extents);
}

const struct image_ops vmdk_ops = {
  .name = "vmdk",
  .probe = vmdk_probe,
  .open = vmdk_open,
  .map = vmdk_map,
  .read_decoded = vmdk_read_decoded,
  .close = vmdk_close,
};
