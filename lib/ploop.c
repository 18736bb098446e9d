/* SPDX-License-Identifier: BSD-3-Clause */
/* ploop (OpenVZ/Virtuozzo; QEMU calls it "parallels"): a 64-byte header,
 * a block allocation table (BAT) of u32 entries, then data clusters.
 *
 * v1 ("WithoutFreeSpace") BAT entries are 512-byte sector offsets, v2
 * ("WithouFreSpacExt") entries are cluster indexes.  An entry of 0 is a
 * hole: zeros, or the lower delta's data in a snapshot chain.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "image.h"
#include "source.h"
#include "ploop.h"

#define PLOOP_HEADER_SIZE   64
#define PLOOP_SIG_V1        "WithoutFreeSpace"
#define PLOOP_SIG_V2        "WithouFreSpacExt"
#define PLOOP_TYPE          2
#define PLOOP_INUSE_MAGIC   0x746F6E59
#define SECTOR              512

/* Bounds that keep a hostile header from making us allocate or loop
 * without end: 64 MiB clusters and a 256 MiB BAT are far beyond any
 * real image.
 */
#define PLOOP_MAX_CLUSTER   (64u << 20)
#define PLOOP_MAX_BAT       (64u << 20)

struct ploop {
  uint32_t *bat;
  uint32_t bat_entries;
  uint32_t cluster;             /* bytes */
  uint32_t entry_unit;          /* bytes per BAT entry unit */
};

static bool
has_signature (const uint8_t *buf, size_t len)
{
  return len >= 16 &&
    (memcmp (buf, PLOOP_SIG_V1, 16) == 0 ||
     memcmp (buf, PLOOP_SIG_V2, 16) == 0);
}

static bool
ploop_probe (struct source *src, const uint8_t *buf, size_t len)
{
  return has_signature (buf, len) || ploop_descriptor_probe (src, buf, len);
}

static int
compare_u32 (const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;

  return x < y ? -1 : x > y;
}

/* Every allocated entry must point at a whole cluster after the BAT and
 * inside the file, and no two clusters may overlap (a duplicate mapping
 * would make writes through one guest offset show up at another).
 */
static int
check_bat (struct image *img, struct ploop *p, uint64_t data_start,
           uint64_t file_size)
{
  uint32_t *sorted, n = 0, i;
  uint32_t units_per_cluster = p->cluster / p->entry_unit;

  for (i = 0; i < p->bat_entries; ++i) {
    uint64_t offset = (uint64_t) p->bat[i] * p->entry_unit;

    if (p->bat[i] == 0)
      continue;
    if (offset < data_start) {
      image_error ("%s: BAT entry %" PRIu32 " points into the header or the "
                   "BAT (offset %" PRIu64 ")", img->path, i, offset);
      return -1;
    }
    if (offset + p->cluster > file_size) {
      image_error ("%s: BAT entry %" PRIu32 " points past the end of the "
                   "file (offset %" PRIu64 ", file size %" PRIu64 ")",
                   img->path, i, offset, file_size);
      return -1;
    }
    n++;
  }
  if (n < 2)
    return 0;

  sorted = malloc (n * sizeof *sorted);
  if (sorted == NULL) {
    image_error ("%s: %m", img->path);
    return -1;
  }
  n = 0;
  for (i = 0; i < p->bat_entries; ++i)
    if (p->bat[i] != 0)
      sorted[n++] = p->bat[i];
  qsort (sorted, n, sizeof *sorted, compare_u32);
  for (i = 1; i < n; ++i) {
    if (sorted[i] - sorted[i - 1] < units_per_cluster) {
      image_error ("%s: two BAT entries map overlapping clusters (offset %"
                   PRIu64 ")", img->path,
                   (uint64_t) sorted[i] * p->entry_unit);
      free (sorted);
      return -1;
    }
  }
  free (sorted);
  return 0;
}

static int
parse_header (struct image *img, struct ploop *p, uint64_t file_size)
{
  uint8_t h[PLOOP_HEADER_SIZE];
  bool v2;
  uint32_t type, cluster_sectors, first_block;
  uint64_t disk_sectors, bat_end, data_start;

  if (file_size < PLOOP_HEADER_SIZE) {
    image_error ("%s: file is too short for a ploop header", img->path);
    return -1;
  }
  if (image_read_file (img, h, sizeof h, 0, "ploop header") == -1)
    return -1;

  v2 = memcmp (h, PLOOP_SIG_V2, 16) == 0;
  img->version = v2 ? 2 : 1;
  type = load_le32 (&h[16]);
  cluster_sectors = load_le32 (&h[28]);
  p->bat_entries = load_le32 (&h[32]);
  disk_sectors = v2 ? load_le64 (&h[36]) : load_le32 (&h[36]);
  first_block = load_le32 (&h[48]);

  if (type != PLOOP_TYPE) {
    image_error ("%s: unsupported ploop header type %" PRIu32
                 " (expected %d)", img->path, type, PLOOP_TYPE);
    return -1;
  }
  if (cluster_sectors == 0 ||
      (cluster_sectors & (cluster_sectors - 1)) != 0 ||
      cluster_sectors > PLOOP_MAX_CLUSTER / SECTOR) {
    image_error ("%s: invalid cluster size of %" PRIu32 " sectors (must be "
                 "a non-zero power of two up to %u MiB)", img->path,
                 cluster_sectors, PLOOP_MAX_CLUSTER >> 20);
    return -1;
  }
  p->cluster = cluster_sectors * SECTOR;
  p->entry_unit = v2 ? p->cluster : SECTOR;

  if (p->bat_entries > PLOOP_MAX_BAT) {
    image_error ("%s: BAT of %" PRIu32 " entries is too large", img->path,
                 p->bat_entries);
    return -1;
  }
  if (disk_sectors > (uint64_t) p->bat_entries * cluster_sectors) {
    image_error ("%s: disk size of %" PRIu64 " sectors does not fit the BAT "
                 "(%" PRIu32 " clusters of %" PRIu32 " sectors)", img->path,
                 disk_sectors, p->bat_entries, cluster_sectors);
    return -1;
  }
  img->size = disk_sectors * SECTOR;
  img->block_size = p->cluster;

  bat_end = PLOOP_HEADER_SIZE + (uint64_t) p->bat_entries * 4;
  if (bat_end > file_size) {
    image_error ("%s: BAT of %" PRIu32 " entries extends past the end of the "
                 "file (truncated image?)", img->path, p->bat_entries);
    return -1;
  }
  data_start = (uint64_t) first_block * SECTOR;
  if (first_block == 0)
    data_start = bat_end;
  else if (data_start < bat_end) {
    image_error ("%s: first data block (sector %" PRIu32 ") overlaps the "
                 "BAT", img->path, first_block);
    return -1;
  }

  if (load_le32 (&h[44]) == PLOOP_INUSE_MAGIC) {
    img->dirty = true;
    image_warning ("%s: image is marked in use (not closed cleanly); "
                   "reading it anyway", img->path);
  }

  p->bat = malloc ((size_t) p->bat_entries * 4 + 1);
  if (p->bat == NULL) {
    image_error ("%s: %m", img->path);
    return -1;
  }
  if (image_read_file (img, p->bat, (size_t) p->bat_entries * 4,
                       PLOOP_HEADER_SIZE, "BAT") == -1)
    return -1;
  for (uint32_t i = 0; i < p->bat_entries; ++i)
    p->bat[i] = le32toh (p->bat[i]);

  return check_bat (img, p, data_start, file_size);
}

static void ploop_close (struct image *img);

static struct image *
ploop_open (const char *path, struct source *src,
            const struct image_options *opts, unsigned depth)
{
  uint8_t buf[IMAGE_PROBE_SIZE];
  struct image *img;
  struct ploop *p;
  size_t len = src->size < sizeof buf ? src->size : sizeof buf;

  /* As many bytes as probing reads, so that a forced format tells a
   * descriptor from a delta as probing does.
   */
  if (source_read (src, buf, len, 0, "the header") == -1) {
    source_close (src);
    return NULL;
  }
  if (len > 0 && !has_signature (buf, len) &&
      ploop_descriptor_starts_like (buf, len))
    return ploop_descriptor_open (path, src, opts, depth);

  img = image_alloc (&ploop_ops, path, src, sizeof *p);
  if (img == NULL)
    return NULL;
  p = img->priv;
  if (len < 16 || !has_signature (buf, len)) {
    image_error ("%s: not a ploop image (no ploop signature)", path);
    goto err;
  }
  if (parse_header (img, p, src->size) == -1)
    goto err;
  return img;

 err:
  return image_open_failed (img);
}

/* Host offset of the cluster holding offset, or 0 for a hole. */
static uint64_t
host_cluster (const struct ploop *p, uint64_t offset)
{
  return (uint64_t) p->bat[offset / p->cluster] * p->entry_unit;
}

/* A run joins following clusters while they are holes too, or stored
 * right after it (so a sequential read is one pread), up to this many:
 * the BAT is in memory, but a map call must be bounded work.
 */
#define MAP_MAX_CLUSTERS 65536

static int
ploop_map (struct image *img, struct image_map_state *state, uint64_t offset,
           uint64_t end, bool for_extents, struct image_run *run)
{
  const struct ploop *p = img->priv;
  const uint64_t host = host_cluster (p, offset);
  const uint64_t within = offset % p->cluster;
  uint64_t len = p->cluster - within;

  for (unsigned n = 1; n < MAP_MAX_CLUSTERS && len < end - offset; ++n) {
    uint64_t next = host_cluster (p, offset + len);

    if (host == 0 ? next != 0 : next != host + within + len)
      break;
    len += p->cluster;
  }
  *run = (struct image_run) {
    .kind = host == 0 ? IMAGE_RUN_BACKING : IMAGE_RUN_DATA,
    .host = host == 0 ? 0 : host + within,
    .length = len < end - offset ? len : end - offset,
  };
  return 0;
}

static void
ploop_close (struct image *img)
{
  struct ploop *p = img->priv;

  free (p->bat);
}

const struct image_ops ploop_ops = {
  .name = "ploop",
  .probe = ploop_probe,
  .open = ploop_open,
  .map = ploop_map,
  .close = ploop_close,
};
