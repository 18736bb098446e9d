/* SPDX-License-Identifier: BSD-3-Clause */
/* VHDX (Hyper-V virtual hard disk v2, [MS-VHDX]), read-only.
 *
 * A file identifier ("vhdxfile"), two headers (the current one has a
 * valid CRC-32C and the higher sequence number), two copies of a region
 * table locating the BAT and the metadata region, the metadata items
 * (block size, virtual size, sector sizes, parent locator) and the BAT:
 * one 64-bit entry per payload block (a state and a file offset in MiB),
 * with the entry of a sector bitmap block after every chunk ratio of
 * them.  Differencing images read the blocks, or in partially present
 * blocks the sectors, they do not hold from their parent.
 *
 * A log left by a writer that stopped is replayed in memory (vhdx-log.c)
 * and every read of the file past the headers goes through it; the file
 * is never written.  The BAT is read and checked at open.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l.h>

#include "bytes.h"
#include "image.h"
#include "source.h"
#include "vhdx.h"

#define FILE_SIGNATURE          "vhdxfile"
#define HEADER_OFFSET_1         (64 * 1024)
#define HEADER_OFFSET_2         (128 * 1024)
#define HEADER_SIZE             4096
#define REGION_TABLE_OFFSET_1   (192 * 1024)
#define REGION_TABLE_OFFSET_2   (256 * 1024)
#define REGION_TABLE_SIZE       (64 * 1024)
#define HEADER_SECTION          VHDX_MiB
#define MAX_TABLE_ENTRIES       2047
#define METADATA_TABLE_SIZE     (64 * 1024)
#define METADATA_MAX_ITEM       VHDX_MiB

#define SIG_HEAD                0x64616568u     /* "head" */
#define SIG_REGI                0x69676572u     /* "regi" */

#define MAX_VIRTUAL_SIZE        (UINT64_C (64) << 40)
#define MIN_BLOCK_SIZE          VHDX_MiB
#define MAX_BLOCK_SIZE          (256 * VHDX_MiB)
#define SECTORS_PER_BITMAP      (UINT64_C (1) << 23)

/* BAT entry states. */
#define PAYLOAD_NOT_PRESENT     0
#define PAYLOAD_UNDEFINED       1
#define PAYLOAD_ZERO            2
#define PAYLOAD_UNMAPPED        3
#define PAYLOAD_FULLY_PRESENT   6
#define PAYLOAD_PARTIALLY_PRESENT 7
#define SB_NOT_PRESENT          0
#define SB_PRESENT              6
#define STATE_MASK              UINT64_C (7)

/* Metadata entry flags. */
#define METADATA_IS_USER        1u
#define METADATA_IS_REQUIRED    4u

/* Binary form of a GUID: the first three fields little-endian. */
#define GUID(a, b, c, d0, d1, d2, d3, d4, d5, d6, d7)                   \
  { (a) & 0xff, ((a) >> 8) & 0xff, ((a) >> 16) & 0xff, (a) >> 24,       \
    (b) & 0xff, (b) >> 8, (c) & 0xff, (c) >> 8,                         \
    d0, d1, d2, d3, d4, d5, d6, d7 }

static const uint8_t bat_region[] = GUID (0x2dc27766, 0xf623, 0x4200,
  0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08);
static const uint8_t metadata_region[] = GUID (0x8b7ca206, 0x4790, 0x4b9a,
  0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e);
static const uint8_t file_parameters_item[] = GUID (0xcaa16737, 0xfa36,
  0x4d43, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b);
static const uint8_t virtual_size_item[] = GUID (0x2fa54224, 0xcd1b, 0x4876,
  0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8);
static const uint8_t page83_item[] = GUID (0xbeca12ab, 0xb2e6, 0x4523,
  0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46);
static const uint8_t logical_sector_item[] = GUID (0x8141bf1d, 0xa96f,
  0x4709, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f);
static const uint8_t physical_sector_item[] = GUID (0xcda348c7, 0x445d,
  0x4471, 0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56);
static const uint8_t parent_locator_item[] = GUID (0xa8d35f2d, 0xb30b,
  0x454d, 0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c);
static const uint8_t vhdx_parent_locator[] = GUID (0xb04aefb7, 0xd19e,
  0x4a81, 0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13);

struct vhdx {
  uint64_t file_size;           /* as the file is */
  uint64_t end;                 /* as the log leaves it (>= file_size) */
  struct vhdx_log *log;         /* NULL: nothing to replay */
  uint8_t data_write_guid[VHDX_GUID_SIZE];
  uint32_t block_size;
  unsigned block_bits;
  unsigned sector_bits;         /* logical sector */
  uint64_t chunk_ratio;         /* payload blocks per sector bitmap block */
  uint64_t blocks;              /* payload blocks */
  uint64_t *bat;
  uint64_t bat_entries;
  bool has_parent;
};

/* A part of the file that blocks must stay clear of. */
struct area {
  uint64_t offset, length;
  char what[64];
};

/* What the metadata items say. */
struct params {
  uint32_t block_size;
  bool leave_blocks_allocated;  /* a fixed image */
  bool has_parent;
  uint64_t virtual_size;
  uint32_t logical_sector, physical_sector;
  uint8_t *locator;             /* parent locator item, or NULL */
  uint32_t locator_len;
};

/* For format errors at open: report, set errno, evaluate to -1 (also
 * usable as a statement).
 */
#define OPEN_ERROR(err, ...) \
  ({ image_error (__VA_ARGS__); errno = (err); -1; })

uint32_t
vhdx_crc32c (uint32_t crc, const void *buf, size_t len)
{
  const unsigned char *p = buf;

  /* ISA-L keeps the register uninverted and takes an int length. */
  crc = ~crc;
  while (len > 0) {
    int n = len > INT_MAX ? INT_MAX : (int) len;

    crc = crc32_iscsi ((unsigned char *) p, n, crc);
    p += n;
    len -= n;
  }
  return ~crc;
}

#define STRINGIFY(x) #x
#define VERSION_STRING(a, b, c) STRINGIFY (a) "." STRINGIFY (b) "." STRINGIFY (c)

/* ISA-L has no run-time version: the one of its headers. */
const char *
vhdx_isal_version (void)
{
  return VERSION_STRING (ISAL_MAJOR_VERSION, ISAL_MINOR_VERSION,
                         ISAL_PATCH_VERSION);
}

uint32_t
vhdx_checksum (const uint8_t *buf, size_t len)
{
  static const uint8_t zeros[4];
  uint32_t crc = vhdx_crc32c (0, buf, 4);

  crc = vhdx_crc32c (crc, zeros, 4);
  return vhdx_crc32c (crc, buf + 8, len - 8);
}

void
vhdx_format_guid (const uint8_t *g, char out[VHDX_GUID_STRLEN])
{
  snprintf (out, VHDX_GUID_STRLEN,
            "%08" PRIx32 "-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x",
            load_le32 (g), g[4] | g[5] << 8, g[6] | g[7] << 8, g[8], g[9],
            g[10], g[11], g[12], g[13], g[14], g[15]);
}

static bool
vhdx_probe (struct source *src, const uint8_t *buf, size_t len)
{
  return len >= 8 && memcmp (buf, FILE_SIGNATURE, 8) == 0;
}

/* Headers. */

struct header {
  uint64_t seq;
  uint8_t data_write_guid[VHDX_GUID_SIZE];
  uint8_t log_guid[VHDX_GUID_SIZE];
  uint16_t log_version, version;
  uint32_t log_length;
  uint64_t log_offset;
};

static bool
parse_header (const uint8_t *b, struct header *h)
{
  if (load_le32 (b) != SIG_HEAD || load_le32 (b + 4) !=
      vhdx_checksum (b, HEADER_SIZE))
    return false;
  h->seq = load_le64 (b + 8);
  memcpy (h->data_write_guid, b + 32, VHDX_GUID_SIZE);
  memcpy (h->log_guid, b + 48, VHDX_GUID_SIZE);
  h->log_version = b[64] | b[65] << 8;
  h->version = b[66] | b[67] << 8;
  h->log_length = load_le32 (b + 68);
  h->log_offset = load_le64 (b + 72);
  return true;
}

/* The current header: the valid one, or of two valid ones the one with
 * the higher sequence number.  The spec calls two valid headers with
 * equal numbers corrupt, but disk2vhd writes them so (identical): the
 * first is taken.
 */
static int
read_header (struct image *img, struct header *h)
{
  uint8_t b[HEADER_SIZE];
  struct header h2;
  bool ok1, ok2;

  if (image_read_file (img, b, sizeof b, HEADER_OFFSET_1, "header 1") == -1)
    return -1;
  ok1 = parse_header (b, h);
  if (image_read_file (img, b, sizeof b, HEADER_OFFSET_2, "header 2") == -1)
    return -1;
  ok2 = parse_header (b, &h2);
  if (!ok1 && !ok2)
    return OPEN_ERROR (EINVAL, "%s: neither VHDX header is valid (bad "
                       "signature or checksum)", img->path);
  if (!ok1 || (ok2 && h2.seq > h->seq))
    *h = h2;

  if (h->version != 1)
    return OPEN_ERROR (ENOTSUP, "%s: VHDX version %" PRIu16 " is not "
                       "supported (only version 1 is)", img->path,
                       h->version);
  if (h->log_version != 0)
    return OPEN_ERROR (ENOTSUP, "%s: VHDX log version %" PRIu16 " is not "
                       "supported (only version 0 is)", img->path,
                       h->log_version);
  return 0;
}

static bool
is_zero_guid (const uint8_t *g)
{
  for (size_t i = 0; i < VHDX_GUID_SIZE; ++i)
    if (g[i])
      return false;
  return true;
}

/* The log area, checked, and its replay when it holds entries. */
static int
open_log (struct image *img, struct vhdx *v, const struct header *h,
          struct area *areas, size_t *nareas)
{
  if (h->log_length == 0)
    return 0;
  if (h->log_offset < HEADER_SECTION || h->log_offset % VHDX_MiB != 0 ||
      h->log_length % VHDX_MiB != 0)
    return OPEN_ERROR (EINVAL, "%s: log (offset %" PRIu64 ", %" PRIu32
                       " bytes) is not aligned to 1 MiB past the headers",
                       img->path, h->log_offset, h->log_length);
  if (h->log_offset > v->file_size ||
      h->log_length > v->file_size - h->log_offset)
    return OPEN_ERROR (EINVAL, "%s: log (offset %" PRIu64 ", %" PRIu32
                       " bytes) extends past the end of the file",
                       img->path, h->log_offset, h->log_length);
  areas[*nareas] = (struct area) {
    .offset = h->log_offset, .length = h->log_length, .what = "log",
  };
  ++*nareas;

  /* A zero GUID is an empty log, whatever the area holds. */
  if (is_zero_guid (h->log_guid))
    return 0;
  if (vhdx_log_replay (img, v->file_size, h->log_offset, h->log_length,
                       h->log_guid, &v->log) == -1)
    return -1;
  if (v->log) {
    v->end = vhdx_log_file_size (v->log);
    img->dirty = true;
    image_warning ("%s: the image has a log its last writer did not "
                   "apply (not closed cleanly); it is applied in memory, "
                   "the file is not changed", img->path);
  }
  return 0;
}

/* Regions. */

static int
compare_areas (const void *a, const void *b)
{
  const struct area *x = a, *y = b;

  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* The first copy of the region table whose checksum holds, into t. */
static int
read_region_table (struct image *img, struct vhdx *v, uint8_t *t)
{
  static const uint64_t copies[] = {
    REGION_TABLE_OFFSET_1, REGION_TABLE_OFFSET_2,
  };

  for (size_t i = 0; i < sizeof copies / sizeof copies[0]; ++i) {
    if (vhdx_read (img, v->log, t, REGION_TABLE_SIZE, copies[i],
                   "region table") == -1)
      return -1;
    if (load_le32 (t) == SIG_REGI &&
        load_le32 (t + 4) == vhdx_checksum (t, REGION_TABLE_SIZE))
      return 0;
  }
  return OPEN_ERROR (EINVAL, "%s: neither copy of the region table is valid "
                     "(bad signature or checksum)", img->path);
}

/* Check region table entry e and describe it in a; it may be the BAT
 * or the metadata region (each only once) or one this reader does not
 * know, which must not be required.
 */
static int
check_region (struct image *img, const struct vhdx *v, const uint8_t *e,
              struct area *a, struct area *bat, struct area *metadata)
{
  const uint64_t offset = load_le64 (e + 16);
  const uint32_t length = load_le32 (e + 24);
  const bool required = load_le32 (e + 28) & 1;
  const bool is_bat = memcmp (e, bat_region, VHDX_GUID_SIZE) == 0;
  char guid[VHDX_GUID_STRLEN];

  vhdx_format_guid (e, guid);
  if (offset < HEADER_SECTION || offset % VHDX_MiB != 0 ||
      length % VHDX_MiB != 0 || length == 0)
    return OPEN_ERROR (EINVAL, "%s: region %s (offset %" PRIu64 ", %" PRIu32
                       " bytes) is not a whole number of MiB past the "
                       "headers", img->path, guid, offset, length);
  if (offset > v->end || length > v->end - offset)
    return OPEN_ERROR (EINVAL, "%s: region %s (offset %" PRIu64 ", %" PRIu32
                       " bytes) extends past the end of the file", img->path,
                       guid, offset, length);
  *a = (struct area) { .offset = offset, .length = length };
  if (is_bat || memcmp (e, metadata_region, VHDX_GUID_SIZE) == 0) {
    struct area *known = is_bat ? bat : metadata;

    if (known->length != 0)
      return OPEN_ERROR (EINVAL, "%s: region %s appears twice in the region "
                         "table", img->path, guid);
    snprintf (a->what, sizeof a->what, "%s region",
              is_bat ? "BAT" : "metadata");
    *known = *a;
  }
  else if (required)
    return OPEN_ERROR (ENOTSUP, "%s: unknown required region %s: the image "
                       "needs a feature this reader does not have",
                       img->path, guid);
  else
    snprintf (a->what, sizeof a->what, "region %s", guid);
  return 0;
}

/* Read the region table, add every region to areas and find the BAT and
 * the metadata region.
 */
static int
read_regions (struct image *img, struct vhdx *v, struct area *areas,
              size_t *nareas, struct area *bat, struct area *metadata)
{
  uint8_t *t = malloc (REGION_TABLE_SIZE);
  uint32_t count;
  int r = -1;

  if (t == NULL)
    return OPEN_ERROR (ENOMEM, "%s: %m", img->path);
  if (read_region_table (img, v, t) == -1)
    goto out;
  count = load_le32 (t + 8);
  if (count > MAX_TABLE_ENTRIES) {
    OPEN_ERROR (EINVAL, "%s: region table has %" PRIu32 " entries (at most "
                "%d are allowed)", img->path, count, MAX_TABLE_ENTRIES);
    goto out;
  }
  bat->length = metadata->length = 0;
  for (uint32_t i = 0; i < count; ++i, ++*nareas)
    if (check_region (img, v, t + 16 + 32 * i, &areas[*nareas], bat,
                      metadata) == -1)
      goto out;
  if (bat->length == 0 || metadata->length == 0) {
    OPEN_ERROR (EINVAL, "%s: the region table has no %s region", img->path,
                bat->length == 0 ? "BAT" : "metadata");
    goto out;
  }

  /* The header section, the log and the regions must not overlap. */
  qsort (areas, *nareas, sizeof *areas, compare_areas);
  for (size_t i = 1; i < *nareas; ++i)
    if (areas[i].offset < areas[i - 1].offset + areas[i - 1].length) {
      OPEN_ERROR (EINVAL, "%s: the %s and the %s overlap", img->path,
                  areas[i - 1].what, areas[i].what);
      goto out;
    }
  r = 0;

 out:
  free (t);
  return r;
}

/* Metadata. */

/* Read a known item of exactly len bytes (or at least len, with
 * at_least) into a new buffer.
 */
static int
read_item (struct image *img, struct vhdx *v, const struct area *md,
           const uint8_t *entry, const char *name, uint32_t len,
           bool at_least, uint8_t **data, uint32_t *data_len)
{
  const uint32_t offset = load_le32 (entry + 16);
  const uint32_t length = load_le32 (entry + 20);

  if (*data != NULL)
    return OPEN_ERROR (EINVAL, "%s: metadata item '%s' appears twice",
                       img->path, name);
  if (at_least ? length < len : length != len)
    return OPEN_ERROR (EINVAL, "%s: metadata item '%s' has %" PRIu32
                       " bytes (%s%" PRIu32 " expected)", img->path, name,
                       length, at_least ? "at least " : "", len);
  *data = malloc (length);
  if (*data == NULL)
    return OPEN_ERROR (ENOMEM, "%s: %m", img->path);
  *data_len = length;
  return vhdx_read (img, v->log, *data, length, md->offset + offset,
                    "metadata item");
}

static int
read_metadata (struct image *img, struct vhdx *v, const struct area *md,
               struct params *p)
{
  uint8_t *t = malloc (METADATA_TABLE_SIZE);
  uint8_t *fp = NULL, *vs = NULL, *ls = NULL, *ps = NULL, *page83 = NULL;
  uint32_t count, len;
  int r = -1;

  memset (p, 0, sizeof *p);
  if (t == NULL)
    return OPEN_ERROR (ENOMEM, "%s: %m", img->path);
  if (vhdx_read (img, v->log, t, METADATA_TABLE_SIZE, md->offset,
                 "metadata table") == -1)
    goto out;
  if (memcmp (t, "metadata", 8) != 0) {
    OPEN_ERROR (EINVAL, "%s: the metadata region does not start with a "
                "metadata table (bad signature)", img->path);
    goto out;
  }
  count = t[10] | t[11] << 8;
  if (count > MAX_TABLE_ENTRIES) {
    OPEN_ERROR (EINVAL, "%s: metadata table has %" PRIu32 " entries (at "
                "most %d are allowed)", img->path, count, MAX_TABLE_ENTRIES);
    goto out;
  }

  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t *e = t + 32 + 32 * i;
    const uint32_t offset = load_le32 (e + 16);
    const uint32_t length = load_le32 (e + 20);
    const uint32_t flags = load_le32 (e + 24);
    const bool system = !(flags & METADATA_IS_USER);
    char guid[VHDX_GUID_STRLEN];
    int k = 0;

    vhdx_format_guid (e, guid);
    if (length > 0 &&
        (offset < METADATA_TABLE_SIZE || length > METADATA_MAX_ITEM ||
         offset > md->length || length > md->length - offset)) {
      OPEN_ERROR (EINVAL, "%s: metadata item %s (offset %" PRIu32 ", %"
                  PRIu32 " bytes) is not inside the metadata region after "
                  "its table", img->path, guid, offset, length);
      goto out;
    }
    if (system && memcmp (e, file_parameters_item, VHDX_GUID_SIZE) == 0)
      k = read_item (img, v, md, e, "file parameters", 8, false, &fp, &len);
    else if (system && memcmp (e, virtual_size_item, VHDX_GUID_SIZE) == 0)
      k = read_item (img, v, md, e, "virtual disk size", 8, false, &vs, &len);
    else if (system && memcmp (e, logical_sector_item, VHDX_GUID_SIZE) == 0)
      k = read_item (img, v, md, e, "logical sector size", 4, false, &ls,
                     &len);
    else if (system && memcmp (e, physical_sector_item, VHDX_GUID_SIZE) == 0)
      k = read_item (img, v, md, e, "physical sector size", 4, false, &ps,
                     &len);
    else if (system && memcmp (e, page83_item, VHDX_GUID_SIZE) == 0)
      k = read_item (img, v, md, e, "page 83 data", 16, false, &page83,
                     &len);
    else if (system && memcmp (e, parent_locator_item, VHDX_GUID_SIZE) == 0)
      k = read_item (img, v, md, e, "parent locator", 20, true, &p->locator,
                     &p->locator_len);
    else if (flags & METADATA_IS_REQUIRED) {
      OPEN_ERROR (ENOTSUP, "%s: unknown required metadata item %s: the image "
                  "needs a feature this reader does not have", img->path,
                  guid);
      goto out;
    }
    if (k == -1)
      goto out;
  }

  if (fp == NULL || vs == NULL || ls == NULL) {
    OPEN_ERROR (EINVAL, "%s: the metadata has no '%s' item", img->path,
                fp == NULL ? "file parameters" : vs == NULL
                ? "virtual disk size" : "logical sector size");
    goto out;
  }
  p->block_size = load_le32 (fp);
  p->leave_blocks_allocated = load_le32 (fp + 4) & 1;
  p->has_parent = load_le32 (fp + 4) & 2;
  p->virtual_size = load_le64 (vs);
  p->logical_sector = load_le32 (ls);
  p->physical_sector = ps ? load_le32 (ps) : 512;
  if (p->block_size < MIN_BLOCK_SIZE || p->block_size > MAX_BLOCK_SIZE ||
      (p->block_size & (p->block_size - 1)) != 0) {
    OPEN_ERROR (EINVAL, "%s: invalid block size of %" PRIu32 " bytes (must "
                "be a power of two from 1 MiB to 256 MiB)", img->path,
                p->block_size);
    goto out;
  }
  if (p->logical_sector != 512 && p->logical_sector != 4096) {
    OPEN_ERROR (EINVAL, "%s: invalid logical sector size of %" PRIu32
                " bytes (must be 512 or 4096)", img->path, p->logical_sector);
    goto out;
  }
  if (p->physical_sector != 512 && p->physical_sector != 4096) {
    OPEN_ERROR (EINVAL, "%s: invalid physical sector size of %" PRIu32
                " bytes (must be 512 or 4096)", img->path,
                p->physical_sector);
    goto out;
  }
  if (p->virtual_size > MAX_VIRTUAL_SIZE ||
      p->virtual_size % p->logical_sector != 0) {
    OPEN_ERROR (EINVAL, "%s: invalid virtual disk size of %" PRIu64 " bytes "
                "(must be a multiple of the %" PRIu32 "-byte logical sector, "
                "at most 64 TiB)", img->path, p->virtual_size,
                p->logical_sector);
    goto out;
  }
  if (p->has_parent && p->locator == NULL) {
    OPEN_ERROR (EINVAL, "%s: differencing image without a parent locator",
                img->path);
    goto out;
  }
  r = 0;

 out:
  free (t);
  free (fp);
  free (vs);
  free (ls);
  free (ps);
  free (page83);
  return r;
}

/* BAT. */

static uint64_t
entry_offset (uint64_t entry)
{
  return entry & ~(VHDX_MiB - 1);
}

/* The BAT entry of payload block b. */
static uint64_t
payload_entry (const struct vhdx *v, uint64_t b)
{
  return v->bat[b + b / v->chunk_ratio];
}

/* The BAT index of the sector bitmap entry of chunk c. */
static uint64_t
bitmap_index (const struct vhdx *v, uint64_t c)
{
  return c * (v->chunk_ratio + 1) + v->chunk_ratio;
}

static int
compare_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

  return x < y ? -1 : x > y;
}

/* A block (BAT entry index) at offset, length bytes, must be inside the
 * file and clear of the headers, the log and the regions.  A payload
 * block may end past the end of the file (it reads as zeros there);
 * a sector bitmap block is read whole and may not.
 */
static int
check_block (struct image *img, struct vhdx *v, const struct area *areas,
             size_t nareas, uint64_t index, uint64_t offset, uint64_t length,
             bool whole)
{
  size_t lo = 0, hi = nareas;

  if (offset >= v->end || (whole && length > v->end - offset))
    return OPEN_ERROR (EINVAL, "%s: BAT entry %" PRIu64 " points past the "
                       "end of the file (offset %" PRIu64 ", file size %"
                       PRIu64 ")", img->path, index, offset, v->end);
  /* The first area ending after offset is the only one it may hit. */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;

    if (areas[mid].offset + areas[mid].length <= offset)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < nareas && areas[lo].offset < offset + length)
    return OPEN_ERROR (EINVAL, "%s: BAT entry %" PRIu64 " points into the %s "
                       "(offset %" PRIu64 ")", img->path, index,
                       areas[lo].what, offset);
  return 0;
}

/* Whether BAT entry i (checked by read_bat) has a block stored in the
 * file, and if so its sort key: the file offset in MiB shifted left by
 * one, the low bit set for a sector bitmap block.  Sector bitmaps count
 * in differencing images only, payload entries only for blocks of the
 * disk (a differencing image's last chunk may have more entries).
 */
static bool
stored_block (const struct vhdx *v, uint64_t i, uint64_t *key)
{
  const uint64_t e = v->bat[i], state = e & STATE_MASK;
  const bool sb = i % (v->chunk_ratio + 1) == v->chunk_ratio;

  if (sb ? !v->has_parent || state != SB_PRESENT
      : state < PAYLOAD_FULLY_PRESENT ||
        i - i / (v->chunk_ratio + 1) >= v->blocks)
    return false;
  *key = entry_offset (e) / VHDX_MiB << 1 | sb;
  return true;
}

/* No two blocks may share bytes of the file: a duplicate mapping would
 * show one guest range's data at another.  n blocks are stored.
 */
static int
check_overlaps (struct image *img, struct vhdx *v, size_t n)
{
  const uint64_t block_mib = v->block_size / VHDX_MiB;
  uint64_t *keys, end = 0, end_key = 0, key, offset, first = 0, second = 0;
  size_t i = 0;
  int r = 0;

  /* Only the stored blocks: a huge BAT of holes costs no more memory. */
  keys = malloc (n * sizeof *keys + 1);
  if (keys == NULL)
    return OPEN_ERROR (ENOMEM, "%s: %m", img->path);
  for (uint64_t j = 0; j < v->bat_entries; ++j)
    if (stored_block (v, j, &key))
      keys[i++] = key;
  qsort (keys, n, sizeof *keys, compare_u64);
  for (i = 0; i < n; ++i) {
    uint64_t start = keys[i] >> 1;

    if (i > 0 && start < end)
      break;
    end = start + ((keys[i] & 1) ? 1 : block_mib);
    end_key = keys[i];
  }
  if (i == n)
    goto out;

  /* Name the two entries. */
  offset = keys[i] >> 1;
  for (uint64_t j = 0; j < v->bat_entries; ++j) {
    if (!stored_block (v, j, &key))
      continue;
    if (key == end_key && first == 0)
      first = j + 1;
    else if (key == keys[i] && second == 0)
      second = j + 1;
  }
  r = OPEN_ERROR (EINVAL, "%s: BAT entries %" PRIu64 " and %" PRIu64
                  " map overlapping blocks (file offset %" PRIu64 ")",
                  img->path, first - 1, second - 1, offset * VHDX_MiB);

 out:
  free (keys);
  return r;
}

/* Read the BAT and check every entry a read can meet. */
static int
read_bat (struct image *img, struct vhdx *v, const struct area *bat,
          const struct area *areas, size_t nareas)
{
  const uint64_t cr = v->chunk_ratio;
  uint64_t chunks, b;
  size_t n = 0;

  /* The BAT must hold an entry for every block (and, for differencing
   * images, the sector bitmap entry of every chunk): a size the header
   * claims, checked against the region, not assumed (CVE-2014-0148).
   */
  chunks = (v->blocks + cr - 1) / cr;
  if (v->has_parent)
    v->bat_entries = chunks * (cr + 1);
  else
    v->bat_entries = v->blocks ? v->blocks + (v->blocks - 1) / cr : 0;
  if (v->bat_entries > bat->length / 8)
    return OPEN_ERROR (EINVAL, "%s: the BAT needs %" PRIu64 " entries for "
                       "the virtual size but its region holds %" PRIu64,
                       img->path, v->bat_entries, bat->length / 8);

  v->bat = malloc (v->bat_entries * 8 + 8);
  if (v->bat == NULL)
    return OPEN_ERROR (ENOMEM, "%s: %m", img->path);
  if (vhdx_read (img, v->log, v->bat, v->bat_entries * 8, bat->offset,
                 "BAT") == -1)
    return -1;
  for (uint64_t i = 0; i < v->bat_entries; ++i)
    v->bat[i] = le64toh (v->bat[i]);

  for (b = 0; b < v->blocks; ++b) {
    const uint64_t index = b + b / cr, e = v->bat[index];
    const uint64_t offset = entry_offset (e);

    switch (e & STATE_MASK) {
    case PAYLOAD_NOT_PRESENT:
    case PAYLOAD_UNDEFINED:
    case PAYLOAD_ZERO:
    case PAYLOAD_UNMAPPED:
      continue;                 /* the offset is reserved */
    case PAYLOAD_PARTIALLY_PRESENT:
      if (!v->has_parent)
        return OPEN_ERROR (EINVAL, "%s: BAT entry %" PRIu64 " is partially "
                           "present, which only differencing images allow",
                           img->path, index);
      if ((v->bat[bitmap_index (v, b / cr)] & STATE_MASK) != SB_PRESENT)
        return OPEN_ERROR (EINVAL, "%s: BAT entry %" PRIu64 " is partially "
                           "present but its chunk has no sector bitmap",
                           img->path, index);
      /* fall through */
    case PAYLOAD_FULLY_PRESENT:
      if (check_block (img, v, areas, nareas, index, offset, v->block_size,
                       false) == -1)
        return -1;
      n++;
      break;
    default:
      return OPEN_ERROR (EINVAL, "%s: BAT entry %" PRIu64 " has the reserved "
                         "state %" PRIu64, img->path, index, e & STATE_MASK);
    }
  }

  /* Sector bitmaps matter only to differencing images; the others must
   * leave them out, but QEMU up to 7.2 left stray values there, so they
   * are not looked at.
   */
  for (uint64_t c = 0; v->has_parent && c < chunks; ++c) {
    const uint64_t index = bitmap_index (v, c), e = v->bat[index];

    switch (e & STATE_MASK) {
    case SB_NOT_PRESENT:
      break;
    case SB_PRESENT:
      if (check_block (img, v, areas, nareas, index, entry_offset (e),
                       VHDX_MiB, true) == -1)
        return -1;
      n++;
      break;
    default:
      return OPEN_ERROR (EINVAL, "%s: BAT entry %" PRIu64 " (a sector "
                         "bitmap) has the reserved state %" PRIu64,
                         img->path, index, e & STATE_MASK);
    }
  }
  return check_overlaps (img, v, n);
}

/* Parent locator. */

/* UTF-16LE text of len bytes to a new UTF-8 string, or NULL (EINVAL
 * for text that is not UTF-16 or holds control characters, which no
 * key, GUID or path has and which would go into messages).
 */
static char *
utf16_to_utf8 (const uint8_t *s, size_t len)
{
  char *out, *o;

  if (len % 2 != 0) {
    errno = EINVAL;
    return NULL;
  }
  out = o = malloc (len / 2 * 3 + 1);
  if (out == NULL)
    return NULL;
  for (size_t i = 0; i < len; i += 2) {
    uint32_t c = s[i] | s[i + 1] << 8;

    if (c >= 0xd800 && c < 0xdc00 && i + 2 < len) {
      uint32_t low = s[i + 2] | s[i + 3] << 8;

      if (low >= 0xdc00 && low < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
        i += 2;
      }
    }
    if (c < 0x20 || c == 0x7f || (c >= 0xd800 && c < 0xe000)) {
      free (out);
      errno = EINVAL;
      return NULL;
    }
    if (c < 0x80)
      *o++ = c;
    else if (c < 0x800) {
      *o++ = 0xc0 | c >> 6;
      *o++ = 0x80 | (c & 0x3f);
    }
    else if (c < 0x10000) {
      *o++ = 0xe0 | c >> 12;
      *o++ = 0x80 | ((c >> 6) & 0x3f);
      *o++ = 0x80 | (c & 0x3f);
    }
    else {
      *o++ = 0xf0 | c >> 18;
      *o++ = 0x80 | ((c >> 12) & 0x3f);
      *o++ = 0x80 | ((c >> 6) & 0x3f);
      *o++ = 0x80 | (c & 0x3f);
    }
  }
  *o = '\0';
  return out;
}

static int
hex_digit (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}" (braces optional) to the
 * binary form of the GUID.
 */
static bool
parse_guid (const char *s, uint8_t *g)
{
  uint8_t be[VHDX_GUID_SIZE];
  size_t n = 0, len = strlen (s);

  if (len == 38 && s[0] == '{' && s[37] == '}')
    s++;
  else if (len != 36)
    return false;
  for (size_t i = 0; i < 36; ++i) {
    int hi, lo;

    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-')
        return false;
      continue;
    }
    hi = hex_digit (s[i]);
    lo = hex_digit (s[++i]);
    if (hi < 0 || lo < 0)
      return false;
    be[n++] = hi << 4 | lo;
  }
  /* The first three fields are stored little-endian. */
  g[0] = be[3]; g[1] = be[2]; g[2] = be[1]; g[3] = be[0];
  g[4] = be[5]; g[5] = be[4]; g[6] = be[7]; g[7] = be[6];
  memcpy (g + 8, be + 8, 8);
  return true;
}

struct locator {
  char *linkage, *linkage2, *relative_path, *absolute_win32_path;
};

static void
free_locator (struct locator *l)
{
  free (l->linkage);
  free (l->linkage2);
  free (l->relative_path);
  free (l->absolute_win32_path);
}

static int
parse_locator (struct image *img, const uint8_t *p, uint32_t len,
               struct locator *l)
{
  const uint32_t count = p[18] | p[19] << 8;

  memset (l, 0, sizeof *l);
  if (memcmp (p, vhdx_parent_locator, VHDX_GUID_SIZE) != 0) {
    char guid[VHDX_GUID_STRLEN];

    vhdx_format_guid (p, guid);
    return OPEN_ERROR (ENOTSUP, "%s: unknown parent locator type %s (only "
                       "VHDX parents are supported)", img->path, guid);
  }
  if (20 + (uint64_t) count * 12 > len)
    return OPEN_ERROR (EINVAL, "%s: the parent locator's %" PRIu32 " entries "
                       "do not fit in it", img->path, count);
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t *e = p + 20 + 12 * i;
    const uint32_t ko = load_le32 (e), vo = load_le32 (e + 4);
    const uint32_t kl = e[8] | e[9] << 8, vl = e[10] | e[11] << 8;
    char *key, *value, **slot = NULL;

    if (ko > len || kl > len - ko || vo > len || vl > len - vo ||
        kl == 0 || vl == 0)
      return OPEN_ERROR (EINVAL, "%s: parent locator entry %" PRIu32 " is "
                         "not inside the locator", img->path, i);
    key = utf16_to_utf8 (p + ko, kl);
    value = utf16_to_utf8 (p + vo, vl);
    if (key == NULL || value == NULL) {
      free (key);
      free (value);
      return OPEN_ERROR (EINVAL, "%s: parent locator entry %" PRIu32 " is "
                         "not valid UTF-16 text", img->path, i);
    }
    if (strcmp (key, "parent_linkage") == 0)
      slot = &l->linkage;
    else if (strcmp (key, "parent_linkage2") == 0)
      slot = &l->linkage2;
    else if (strcmp (key, "relative_path") == 0)
      slot = &l->relative_path;
    else if (strcmp (key, "absolute_win32_path") == 0)
      slot = &l->absolute_win32_path;
    if (slot != NULL && *slot != NULL) {
      OPEN_ERROR (EINVAL, "%s: parent locator key '%s' appears twice",
                  img->path, key);
      free (key);
      free (value);
      return -1;
    }
    free (key);
    if (slot != NULL)
      *slot = value;
    else
      free (value);
  }
  if (l->linkage == NULL)
    return OPEN_ERROR (EINVAL, "%s: the parent locator has no "
                       "parent_linkage", img->path);
  return 0;
}

/* Open the parent named by the locator (through the backing policy) and
 * check that it is the image this one was made from: its data write GUID
 * is the parent_linkage (or parent_linkage2) the locator recorded.
 */
static int
open_parent (struct image *img, const struct params *p,
             const struct image_options *opts, unsigned depth)
{
  struct locator l;
  uint8_t linkage[VHDX_GUID_SIZE], linkage2[VHDX_GUID_SIZE];
  const struct vhdx *pv;
  int r = -1;

  if (parse_locator (img, p->locator, p->locator_len, &l) == -1)
    goto out;
  if (!parse_guid (l.linkage, linkage) ||
      (l.linkage2 && !parse_guid (l.linkage2, linkage2))) {
    OPEN_ERROR (EINVAL, "%s: the parent locator's parent_linkage is not a "
                "GUID", img->path);
    goto out;
  }
  if (l.relative_path == NULL) {
    if (l.absolute_win32_path)
      OPEN_ERROR (ENOTSUP, "%s: the parent locator has no relative_path (its "
                  "absolute_win32_path '%s' is a Windows path)", img->path,
                  l.absolute_win32_path);
    else
      OPEN_ERROR (EINVAL, "%s: the parent locator has no relative_path",
                  img->path);
    goto out;
  }
  /* Windows separates with backslashes. */
  for (char *c = l.relative_path; *c; ++c)
    if (*c == '\\')
      *c = '/';

  if (opts->backing == BACKING_NO) {
    image_warning ("%s: parent '%s' is not followed (backing=no): what the "
                   "image does not hold reads as zeros", img->path,
                   l.relative_path);
    r = 0;
    goto out;
  }
  /* It reports its own errors (policy, loops, depth, not a VHDX). */
  img->backing = image_open_relative (img->src, l.relative_path, "vhdx",
                                      opts, depth + 1);
  if (img->backing == NULL)
    goto out;
  pv = img->backing->priv;
  if (memcmp (pv->data_write_guid, linkage, VHDX_GUID_SIZE) != 0 &&
      (l.linkage2 == NULL ||
       memcmp (pv->data_write_guid, linkage2, VHDX_GUID_SIZE) != 0)) {
    char has[VHDX_GUID_STRLEN];

    vhdx_format_guid (pv->data_write_guid, has);
    OPEN_ERROR (EINVAL, "%s: parent %s is not the image this one was made "
                "from (its data write GUID is %s, the parent locator wants "
                "%s): it was changed or replaced since", img->path,
                img->backing->path, has, l.linkage);
    goto out;
  }
  r = 0;

 out:
  free_locator (&l);
  return r;
}

/* Opening. */

static int
vhdx_parse (struct image *img, struct vhdx *v,
            const struct image_options *opts, unsigned depth)
{
  /* The header section, the log and every region. */
  struct area *areas = malloc ((MAX_TABLE_ENTRIES + 2) * sizeof *areas);
  struct area bat = { .length = 0 }, metadata = { .length = 0 };
  size_t nareas = 0;
  struct header h;
  struct params p = { .locator = NULL };
  char sig[8];
  int r = -1;

  if (areas == NULL)
    return OPEN_ERROR (ENOMEM, "%s: %m", img->path);
  v->file_size = img->src->size;
  v->end = v->file_size;
  if (v->file_size < HEADER_SECTION) {
    OPEN_ERROR (EINVAL, "%s: file is too short for a VHDX image (%" PRIu64
                " bytes, the headers alone take 1 MiB)", img->path,
                v->file_size);
    goto out;
  }
  if (image_read_file (img, sig, sizeof sig, 0, "file identifier") == -1)
    goto out;
  if (memcmp (sig, FILE_SIGNATURE, sizeof sig) != 0) {
    OPEN_ERROR (EINVAL, "%s: not a VHDX image (no vhdxfile signature)",
                img->path);
    goto out;
  }
  if (read_header (img, &h) == -1)
    goto out;
  img->version = h.version;
  memcpy (v->data_write_guid, h.data_write_guid, VHDX_GUID_SIZE);

  areas[nareas++] = (struct area) {
    .offset = 0, .length = HEADER_SECTION, .what = "header section",
  };
  if (open_log (img, v, &h, areas, &nareas) == -1 ||
      read_regions (img, v, areas, &nareas, &bat, &metadata) == -1 ||
      read_metadata (img, v, &metadata, &p) == -1)
    goto out;

  img->size = p.virtual_size;
  img->block_size = v->block_size = p.block_size;
  v->block_bits = __builtin_ctz (p.block_size);
  v->sector_bits = __builtin_ctz (p.logical_sector);
  v->has_parent = p.has_parent;
  img->subformat = p.has_parent ? "differencing"
    : p.leave_blocks_allocated ? "fixed" : "dynamic";
  /* 2^23 sectors per bitmap block; a whole number of blocks, since
   * blocks are at most 2^28 bytes and sectors at least 2^9.
   */
  v->chunk_ratio = (SECTORS_PER_BITMAP << v->sector_bits) >> v->block_bits;
  v->blocks = (p.virtual_size + p.block_size - 1) >> v->block_bits;
  if (read_bat (img, v, &bat, areas, nareas) == -1)
    goto out;

  /* The parent last: it opens a whole chain below us. */
  r = p.has_parent ? open_parent (img, &p, opts, depth) : 0;

 out:
  free (areas);
  free (p.locator);
  return r;
}

static void vhdx_close (struct image *img);

static struct image *
vhdx_open (const char *path, struct source *src,
           const struct image_options *opts, unsigned depth)
{
  struct image *img = image_alloc (&vhdx_ops, path, src, sizeof (struct vhdx));

  if (img == NULL)
    return NULL;
  if (vhdx_parse (img, img->priv, opts, depth) == -1)
    return image_open_failed (img);
  return img;
}

static void
vhdx_close (struct image *img)
{
  struct vhdx *v = img->priv;

  vhdx_log_free (v->log);
  free (v->bat);
}

/* Mapping. */

/* A run joins following blocks of the same kind (data only while it is
 * stored right after the run), up to this many: the BAT is in memory,
 * but a map call must be bounded work.
 */
#define MAP_MAX_BLOCKS 65536

/* Data stored at file offset host, len bytes.  What lies past the end of
 * the file (a last block cut short) reads as zeros, as it does for QEMU;
 * data the log rewrites, or past the end of the file but inside the size
 * the log gives it, is read through the log.
 */
static void
data_run (struct vhdx *v, uint64_t host, uint64_t len, uint64_t guest,
          struct image_run *run)
{
  if (host >= v->end) {
    *run = (struct image_run) { .kind = IMAGE_RUN_ZERO, .length = len };
    return;
  }
  if (len > v->end - host)
    len = v->end - host;
  if (v->log && (host + len > v->file_size ||
                 vhdx_log_writes (v->log, host, len)))
    *run = (struct image_run) {
      .kind = IMAGE_RUN_DECODED, .length = len,
      .token = { host, guest },
    };
  else
    *run = (struct image_run) {
      .kind = IMAGE_RUN_DATA, .length = len, .host = host,
    };
}

/* A window of a sector bitmap block, kept in the map state between the
 * calls of one request.
 */
struct bitmap_window {
  uint64_t offset;              /* file offset of bytes[0]; 0: empty */
  uint8_t bytes[4096];
};
_Static_assert (sizeof (struct bitmap_window) <= sizeof (struct image_map_state),
                "the bitmap window must fit in the map state");

/* The sectors of a partially present block from byte within on, up to
 * max bytes: stored here (bit set) or in the parent, as long as the
 * window tells.
 */
static int
partial_run (struct image *img, struct vhdx *v, struct bitmap_window *w,
             uint64_t block, uint64_t within, uint64_t max, uint64_t guest,
             struct image_run *run)
{
  const uint64_t sb = entry_offset (v->bat[bitmap_index (v, block
                                                         / v->chunk_ratio)]);
  const uint64_t sectors_per_block = v->block_size >> v->sector_bits;
  const uint64_t first = (block % v->chunk_ratio) * sectors_per_block;
  const uint64_t sector = within >> v->sector_bits;
  const uint64_t last = (within + max - 1) >> v->sector_bits;
  uint64_t bit = first + sector, want, end;
  bool set;

  want = sb + (bit / 8 & ~(uint64_t) (sizeof w->bytes - 1));
  if (w->offset != want) {
    w->offset = 0;
    if (vhdx_read (img, v->log, w->bytes, sizeof w->bytes, want,
                   "sector bitmap") == -1)
      return -1;
    w->offset = want;
  }
  /* Bits of the window: from (want - sb) * 8 on. */
  end = ((want - sb) + sizeof w->bytes) * 8;
  if (end > first + last + 1)
    end = first + last + 1;
#define BIT(n) ((w->bytes[(n) / 8 - (want - sb)] >> ((n) % 8)) & 1)
  set = BIT (bit);
  for (bit++; bit < end && BIT (bit) == set; ++bit)
    ;
#undef BIT
  {
    uint64_t len = ((bit - first) << v->sector_bits) - within;

    if (len > max)
      len = max;
    if (set)
      data_run (v, entry_offset (payload_entry (v, block)) + within, len,
                guest, run);
    else
      *run = (struct image_run) { .kind = IMAGE_RUN_BACKING, .length = len };
  }
  return 0;
}

static int
vhdx_map (struct image *img, struct image_map_state *state, uint64_t offset,
          uint64_t end, bool for_extents, struct image_run *run)
{
  struct vhdx *v = img->priv;
  const uint64_t block = offset >> v->block_bits;
  const uint64_t within = offset & (v->block_size - 1);
  const uint64_t e = payload_entry (v, block);
  uint64_t len = v->block_size - within;
  unsigned n;

  switch (e & STATE_MASK) {
  case PAYLOAD_FULLY_PRESENT: {
    const uint64_t host = entry_offset (e) + within;

    /* offset + len < end <= size: block + n is a block of the disk. */
    for (n = 1; n < MAP_MAX_BLOCKS && len < end - offset; ++n) {
      uint64_t next = payload_entry (v, block + n);

      if ((next & STATE_MASK) != PAYLOAD_FULLY_PRESENT ||
          entry_offset (next) != host + len)
        break;
      len += v->block_size;
    }
    data_run (v, host, len < end - offset ? len : end - offset, offset, run);
    return 0;
  }

  case PAYLOAD_PARTIALLY_PRESENT:
    return partial_run (img, v, (struct bitmap_window *) state->words, block,
                        within, len < end - offset ? len : end - offset,
                        offset, run);

  default: {
    /* Not stored: the parent's, or zeros (any other choice the spec
     * allows for undefined and unmapped blocks would leak old data).
     */
    const bool backing = (e & STATE_MASK) == PAYLOAD_NOT_PRESENT &&
      v->has_parent;

    for (n = 1; n < MAP_MAX_BLOCKS && len < end - offset; ++n) {
      uint64_t s = payload_entry (v, block + n) & STATE_MASK;

      if (s == PAYLOAD_FULLY_PRESENT || s == PAYLOAD_PARTIALLY_PRESENT ||
          (s == PAYLOAD_NOT_PRESENT && v->has_parent) != backing)
        break;
      len += v->block_size;
    }
    *run = (struct image_run) {
      .kind = backing ? IMAGE_RUN_BACKING : IMAGE_RUN_ZERO,
      .hole = !backing,
      .length = len < end - offset ? len : end - offset,
    };
    return 0;
  }
  }
}

/* Data the log rewrites or extends (token: file offset and guest offset
 * of the run).
 */
static int
vhdx_read_decoded (struct image *img, const struct image_run *run,
                   void *buf, size_t count, uint64_t offset)
{
  struct vhdx *v = img->priv;

  return vhdx_read (img, v->log, buf, count,
                    run->token[0] + (offset - run->token[1]), "data");
}

const struct image_ops vhdx_ops = {
  .name = "vhdx",
  .probe = vhdx_probe,
  .open = vhdx_open,
  .map = vhdx_map,
  .read_decoded = vhdx_read_decoded,
  .close = vhdx_close,
};
