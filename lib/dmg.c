/* SPDX-License-Identifier: BSD-3-Clause */
/* Apple UDIF disk images (.dmg), read-only.  All fields are big-endian.
 *
 * A UDIF file ends in a 512-byte trailer, "koly", which locates the data
 * fork (the stored chunks) and an XML property list.  The plist's
 * resource-fork/blkx array holds one "mish" table per partition, in
 * base64: a 204-byte header (the partition's first sector and sector
 * count) and 40-byte chunk entries, each a run of the partition's
 * sectors stored one way: zeros, raw bytes, or compressed with ADC,
 * zlib, bzip2, LZFSE or LZMA (xz).  The partitions, put in sector order,
 * make the disk.
 *
 * No library for UDIF is packaged in Debian; the format is small: the
 * trailer and plist are read at open into one sorted table of chunks
 * (lib/dmg-plist.c parses the plist), and reads look a chunk up by
 * binary search.  Compressed chunks are decoded whole (usually 1 MiB,
 * but any size up to MAX_DECODED) through the shared block cache.  ADC
 * has no library either: adc_decode () below.  LZFSE has no Debian
 * package: its chunks fail to read with an error saying so.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "cache.h"
#include "decompress.h"
#include "dmg.h"
#include "image.h"
#include "source.h"
#include "thread-local.h"

#define SECTOR              512
#define KOLY_SIZE           512
/* How far before the end of the file the trailer may start: some tools
 * append a few bytes (padding, a signature) after it.
 */
#define KOLY_SEARCH         (8192 + KOLY_SIZE)
/* The largest plist we parse (a 1 TiB disk in 1 MiB chunks needs about
 * 56 MiB of base64).
 */
#define MAX_PLIST           (64u << 20)
/* The largest chunk we decode into memory; QEMU's 64 MiB is too small
 * for real images, and a decoded chunk must fit the cache's u32 sizes.
 */
#define MAX_DECODED         (256u << 20)
/* A compressed chunk bigger than this is not a compressed chunk of at
 * most MAX_DECODED bytes, even of incompressible data.
 */
#define MAX_STORED          (MAX_DECODED + (MAX_DECODED >> 3))
/* The largest disk: sector numbers times 512 must not overflow. */
#define MAX_SECTORS         (INT64_MAX / SECTOR)

struct dmg {
  struct chunk *chunks;         /* sorted by sector, covering the disk */
  size_t n_chunks;
  uint64_t owner;               /* of our blocks in the cache */
  struct block_cache *cache;
};

#define OPEN_ERROR(...) (image_error (__VA_ARGS__), errno = EINVAL, -1)
#define READ_ERROR(...) (image_error (__VA_ARGS__), errno = EIO, -1)

const char *
dmg_chunk_type_name (uint32_t type)
{
  switch (type) {
  case DMG_ZERO: return "zero";
  case DMG_RAW: return "raw";
  case DMG_IGNORE: return "ignore";
  case DMG_ADC: return "ADC";
  case DMG_ZLIB: return "zlib";
  case DMG_BZIP2: return "bzip2";
  case DMG_LZFSE: return "LZFSE";
  case DMG_LZMA: return "LZMA";
  case DMG_COMMENT: return "comment";
  case DMG_END: return "end";
  default: return "unknown";
  }
}

/* Whether buf (KOLY_SIZE bytes) starts like a trailer: the magic, the
 * version and its own size.
 */
static bool
is_koly (const uint8_t *buf)
{
  return memcmp (buf, "koly", 4) == 0 && load_be32 (&buf[4]) == 4 &&
    load_be32 (&buf[8]) == KOLY_SIZE;
}

/* The trailer's offset in the file: at its end, or the last one found
 * within KOLY_SEARCH bytes of it.  -1 if there is none (no message).
 */
static int64_t
find_koly (struct source *src, uint64_t file_size, uint8_t *koly)
{
  uint8_t buf[KOLY_SEARCH];
  size_t len = file_size < KOLY_SEARCH ? file_size : KOLY_SEARCH;
  const uint64_t start = file_size - len;

  if (len < KOLY_SIZE || source_read (src, buf, len, start, NULL) == -1)
    return -1;
  for (size_t i = len - KOLY_SIZE + 1; i-- > 0; )
    if (buf[i] == 'k' && is_koly (&buf[i])) {
      memcpy (koly, &buf[i], KOLY_SIZE);
      return start + i;
    }
  return -1;
}

/* A bounded read of the end of the file: UDIF has no magic at its start
 * (its data fork starts with the disk, or a compressed chunk).
 */
static bool
dmg_probe (struct source *src, const uint8_t *buf, size_t len)
{
  uint8_t koly[KOLY_SIZE];

  return find_koly (src, src->size, koly) >= 0;
}

static bool
in_range (uint64_t offset, uint64_t length, uint64_t start, uint64_t end)
{
  return offset >= start && offset <= end && length <= end - offset;
}

/* Check one chunk against the rules that need only itself and the
 * file: where its bytes are and how big it decodes.
 */
static int
check_chunk (struct image *img, const struct chunk *c, uint64_t fork_start,
             uint64_t fork_end)
{
  const uint64_t bytes = c->sectors * SECTOR;

  switch (c->type) {
  case DMG_ZERO:
  case DMG_IGNORE:
    return 0;
  case DMG_RAW:
    if (c->length != bytes)
      return OPEN_ERROR ("%s: raw chunk %" PRIu32 " of partition %" PRIu32
                         " stores %" PRIu64 " bytes for %" PRIu64
                         " sectors", img->path, c->entry, c->partition,
                         c->length, c->sectors);
    break;
  case DMG_ADC:
  case DMG_ZLIB:
  case DMG_BZIP2:
  case DMG_LZFSE:
  case DMG_LZMA:
    if (bytes > MAX_DECODED)
      return OPEN_ERROR ("%s: %s chunk %" PRIu32 " of partition %" PRIu32
                         " decodes to %" PRIu64 " bytes (limit %u MiB)",
                         img->path, dmg_chunk_type_name (c->type), c->entry,
                         c->partition, bytes, MAX_DECODED >> 20);
    if (c->length == 0 || c->length > MAX_STORED)
      return OPEN_ERROR ("%s: %s chunk %" PRIu32 " of partition %" PRIu32
                         " has an impossible stored size of %" PRIu64
                         " bytes", img->path, dmg_chunk_type_name (c->type),
                         c->entry, c->partition, c->length);
    break;
  default:
    return OPEN_ERROR ("%s: chunk %" PRIu32 " of partition %" PRIu32
                       " has unknown type 0x%08" PRIx32, img->path,
                       c->entry, c->partition, c->type);
  }
  if (c->offset > UINT64_MAX - fork_start ||
      !in_range (fork_start + c->offset, c->length, fork_start, fork_end))
    return OPEN_ERROR ("%s: %s chunk %" PRIu32 " of partition %" PRIu32
                       " (offset %" PRIu64 ", %" PRIu64 " bytes) is outside "
                       "the data fork, which ends at %" PRIu64, img->path,
                       dmg_chunk_type_name (c->type), c->entry, c->partition,
                       c->offset, c->length, fork_end);
  return 0;
}

static int
compare_chunks (const void *a, const void *b)
{
  const struct chunk *x = a, *y = b;

  return x->sector < y->sector ? -1 : x->sector > y->sector;
}

/* The chunks, sorted, must cover sectors 0 to the disk's end once. */
static int
check_coverage (struct image *img, struct dmg *d, uint64_t koly_sectors)
{
  uint64_t next = 0;

  if (d->n_chunks == 0)
    return OPEN_ERROR ("%s: the blkx partitions hold no sectors", img->path);
  qsort (d->chunks, d->n_chunks, sizeof *d->chunks, compare_chunks);
  for (size_t i = 0; i < d->n_chunks; ++i) {
    const struct chunk *c = &d->chunks[i];

    if (c->sector > next)
      return OPEN_ERROR ("%s: sectors %" PRIu64 " to %" PRIu64 " are in no "
                         "chunk (partition %" PRIu32 " starts after a gap)",
                         img->path, next, c->sector - 1, c->partition);
    if (c->sector < next)
      return OPEN_ERROR ("%s: chunk %" PRIu32 " of partition %" PRIu32
                         " overlaps another chunk at sector %" PRIu64,
                         img->path, c->entry, c->partition, c->sector);
    next = c->sector + c->sectors;
  }
  /* Some writers leave the trailer's sector count 0. */
  if (koly_sectors != 0 && koly_sectors != next)
    return OPEN_ERROR ("%s: the partitions hold %" PRIu64 " sectors but the "
                       "koly trailer says the disk has %" PRIu64, img->path,
                       next, koly_sectors);
  img->size = next * SECTOR;
  return 0;
}

/* The variant in hdiutil's words, from the chunk types used most: UDZO
 * zlib, UDBZ bzip2, ULMO LZMA, ULFO LZFSE, UDCO ADC; no compression is
 * UDRW (UDRO, its read-only twin, looks the same).
 */
static const char *
variant (const struct dmg *d)
{
  static const struct { uint32_t type; const char *name; } names[] = {
    { DMG_ZLIB, "UDZO" }, { DMG_BZIP2, "UDBZ" }, { DMG_LZMA, "ULMO" },
    { DMG_LZFSE, "ULFO" }, { DMG_ADC, "UDCO" },
  };
  size_t count[5] = { 0 }, best = 0;
  const char *name = "UDRW";

  for (size_t i = 0; i < d->n_chunks; ++i)
    for (size_t t = 0; t < 5; ++t)
      if (d->chunks[i].type == names[t].type)
        count[t]++;
  for (size_t t = 0; t < 5; ++t)
    if (count[t] > best) {
      best = count[t];
      name = names[t].name;
    }
  return name;
}

static int
dmg_parse (struct image *img, struct dmg *d)
{
  uint8_t koly[KOLY_SIZE];
  uint64_t file_size, fork_start, fork_length, plist_offset, plist_length;
  uint64_t koly_sectors;
  int64_t koly_at;
  size_t lzfse = 0;

  file_size = img->src->size;
  koly_at = find_koly (img->src, file_size, koly);
  if (koly_at < 0)
    return OPEN_ERROR ("%s: not a UDIF disk image (no koly trailer in the "
                       "last %u bytes)", img->path, KOLY_SEARCH);

  fork_start = load_be64 (&koly[24]);
  fork_length = load_be64 (&koly[32]);
  plist_offset = load_be64 (&koly[216]);
  plist_length = load_be64 (&koly[224]);
  koly_sectors = load_be64 (&koly[492]);
  if (load_be32 (&koly[60]) > 1)
    return OPEN_ERROR ("%s: segment of a multi-segment UDIF image (%" PRIu32
                       " segments): not supported", img->path,
                       load_be32 (&koly[60]));
  if (!in_range (fork_start, fork_length, 0, koly_at))
    return OPEN_ERROR ("%s: the data fork (offset %" PRIu64 ", %" PRIu64
                       " bytes) is not inside the file before the koly "
                       "trailer", img->path, fork_start, fork_length);
  if (plist_length == 0)
    return OPEN_ERROR ("%s: UDIF image without an XML property list (only "
                       "a binary resource fork): not supported", img->path);
  if (plist_length > MAX_PLIST)
    return OPEN_ERROR ("%s: XML property list of %" PRIu64 " bytes is too "
                       "large (limit %u MiB)", img->path, plist_length,
                       MAX_PLIST >> 20);
  if (!in_range (plist_offset, plist_length, 0, koly_at))
    return OPEN_ERROR ("%s: the XML property list (offset %" PRIu64 ", %"
                       PRIu64 " bytes) is not inside the file before the "
                       "koly trailer", img->path, plist_offset, plist_length);
  if (koly_sectors > MAX_SECTORS)
    return OPEN_ERROR ("%s: koly trailer sector count %" PRIu64 " is too "
                       "large", img->path, koly_sectors);

  if (dmg_read_plist (img, plist_offset, plist_length, &d->chunks,
                      &d->n_chunks) == -1)
    return -1;
  for (size_t i = 0; i < d->n_chunks; ++i) {
    if (check_chunk (img, &d->chunks[i], fork_start,
                     fork_start + fork_length) == -1)
      return -1;
    d->chunks[i].offset += fork_start;
    lzfse += d->chunks[i].type == DMG_LZFSE;
  }
  if (check_coverage (img, d, koly_sectors) == -1)
    return -1;
  if (lzfse > 0)
    image_warning ("%s: has LZFSE-compressed chunks (%zu), which cannot "
                   "be read (no LZFSE decoder)", img->path, lzfse);

  img->subformat = variant (d);
  img->version = 4;
  img->block_size = SECTOR;
  d->cache = image_block_cache ();
  if (d->cache == NULL)
    return -1;
  d->owner = cache_new_owner ();
  return 0;
}

static struct image *
dmg_open (const char *path, struct source *src,
          const struct image_options *opts, unsigned depth)
{
  struct image *img = image_alloc (&dmg_ops, path, src, sizeof (struct dmg));

  if (img == NULL)
    return NULL;
  if (dmg_parse (img, img->priv) == -1)
    return image_open_failed (img);
  return img;
}

/* The chunk holding sector s (which is below the disk's end). */
static size_t
find_chunk (const struct dmg *d, uint64_t s)
{
  size_t lo = 0, hi = d->n_chunks;

  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;

    if (d->chunks[mid].sector <= s)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

/* A map call joins at most this many chunks of zeros or raw data. */
#define MAP_MAX_CHUNKS 4096

static bool
is_zero (uint32_t type)
{
  return type == DMG_ZERO || type == DMG_IGNORE;
}

static int
dmg_map (struct image *img, struct image_map_state *state, uint64_t offset,
         uint64_t end, bool for_extents, struct image_run *run)
{
  const struct dmg *d = img->priv;
  size_t i = find_chunk (d, offset / SECTOR);
  const struct chunk *c = &d->chunks[i];
  const uint64_t within = offset - c->sector * SECTOR;
  uint64_t len = c->sectors * SECTOR - within;

  if (is_zero (c->type)) {
    for (size_t n = 1; n < MAP_MAX_CHUNKS && len < end - offset &&
           i + n < d->n_chunks && is_zero (d->chunks[i + n].type); ++n)
      len += d->chunks[i + n].sectors * SECTOR;
    *run = (struct image_run) {
      .kind = IMAGE_RUN_ZERO, .hole = true, .length = len,
    };
  }
  else if (c->type == DMG_RAW) {
    uint64_t host_end = c->offset + c->length;

    for (size_t n = 1; n < MAP_MAX_CHUNKS && len < end - offset &&
           i + n < d->n_chunks && d->chunks[i + n].type == DMG_RAW &&
           d->chunks[i + n].offset == host_end; ++n) {
      len += d->chunks[i + n].length;
      host_end += d->chunks[i + n].length;
    }
    *run = (struct image_run) {
      .kind = IMAGE_RUN_DATA, .host = c->offset + within, .length = len,
    };
  }
  else
    *run = (struct image_run) {
      .kind = IMAGE_RUN_DECODED, .length = len, .token = { i },
    };
  if (run->length > end - offset)
    run->length = end - offset;
  return 0;
}

/* ADC (Apple Data Compression), an LZ77 variant with three codes, by
 * the first byte b:
 *   1xxxxxxx              a literal run of (b & 0x7f) + 1 bytes
 *   01xxxxxx hi lo        copy (b & 0x3f) + 4 bytes from distance
 *                         (hi << 8 | lo) + 1 back
 *   00xxxxyy lo           copy ((b >> 2) & 0xf) + 3 bytes from distance
 *                         (yy << 8 | lo) + 1 back
 * Copies may overlap the bytes they produce.  The output must come out
 * exactly out_len bytes long; a code reaching before the start of the
 * output or past its end, or input ending early, is an error.  Input
 * left over once the output is full is an error too: the chunk decodes
 * to more bytes than its sectors.  -1 with errno EIO.
 */
static int
adc_decode (const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
  size_t i = 0, o = 0;

  while (o < out_len) {
    size_t len, dist;
    uint8_t b;

    if (i >= in_len)
      goto bad;
    b = in[i++];
    if (b & 0x80) {
      len = (b & 0x7f) + 1;
      if (len > in_len - i || len > out_len - o)
        goto bad;
      memcpy (&out[o], &in[i], len);
      i += len;
      o += len;
      continue;
    }
    if (b & 0x40) {
      if (in_len - i < 2)
        goto bad;
      len = (b & 0x3f) + 4;
      dist = ((size_t) in[i] << 8 | in[i + 1]) + 1;
      i += 2;
    }
    else {
      if (in_len - i < 1)
        goto bad;
      len = ((b >> 2) & 0x0f) + 3;
      dist = ((size_t) (b & 0x03) << 8 | in[i]) + 1;
      i += 1;
    }
    if (dist > o || len > out_len - o)
      goto bad;
    for (size_t k = 0; k < len; ++k, ++o)
      out[o] = out[o - dist];
  }
  if (i == in_len)
    return 0;
 bad:
  errno = EIO;
  return -1;
}

struct chunk_load {
  struct image *img;
  const struct chunk *chunk;
};

/* Read and decode a compressed chunk into buf (its whole sectors). */
static int
load_chunk (void *opaque, void *buf)
{
  const struct chunk_load *req = opaque;
  struct image *img = req->img;
  const struct chunk *c = req->chunk;
  const size_t out_len = c->sectors * SECTOR;
  uint8_t *in;
  int r;

  if (c->type == DMG_LZFSE)
    return READ_ERROR ("%s: chunk %" PRIu32 " of partition %" PRIu32
                       " (disk offset %" PRIu64 ") is LZFSE-compressed, "
                       "which qemount cannot decode (no LZFSE library)",
                       img->path, c->entry, c->partition, c->sector * SECTOR);
  in = thread_scratch (c->length);
  if (in == NULL) {
    image_error ("%s: %m", img->path);
    return -1;
  }
  if (image_read_file (img, in, c->length, c->offset, "compressed chunk")
      == -1)
    return -1;
  switch (c->type) {
  case DMG_ADC: r = adc_decode (in, c->length, buf, out_len); break;
  case DMG_ZLIB: r = decompress_zlib (in, c->length, buf, out_len, NULL); break;
  case DMG_BZIP2: r = decompress_bzip2 (in, c->length, buf, out_len); break;
  default: r = decompress_xz (in, c->length, buf, out_len); break;
  }
  if (r == -1)
    return READ_ERROR ("%s: cannot decode %s chunk %" PRIu32 " of partition %"
                       PRIu32 " (file offset %" PRIu64 ", %" PRIu64 " bytes):"
                       " corrupt, or not exactly the %zu bytes of its %" PRIu64
                       " sectors", img->path, dmg_chunk_type_name (c->type),
                       c->entry, c->partition, c->offset, c->length, out_len,
                       c->sectors);
  return 0;
}

/* Bytes of a compressed chunk (the run's token is its index) through the
 * shared block cache: readers mostly ask for parts of a chunk, and the
 * next part is then a copy, not a decode.
 */
static int
dmg_read_decoded (struct image *img, const struct image_run *run,
                  void *buf, size_t count, uint64_t offset)
{
  const struct dmg *d = img->priv;
  const struct chunk *c = &d->chunks[run->token[0]];
  struct chunk_load req = { .img = img, .chunk = c };
  const struct cache_block b = {
    .owner = d->owner, .key = run->token[0],
    .size = c->sectors * SECTOR,
  };

  return cache_read (d->cache, &b, load_chunk, &req, buf,
                     offset - c->sector * SECTOR, count, CACHE_WHOLE_DIRECT);
}

static void
dmg_close (struct image *img)
{
  struct dmg *d = img->priv;

  free (d->chunks);
}

const struct image_ops dmg_ops = {
  .name = "dmg",
  .probe = dmg_probe,
  .open = dmg_open,
  .map = dmg_map,
  .read_decoded = dmg_read_decoded,
  .close = dmg_close,
};
