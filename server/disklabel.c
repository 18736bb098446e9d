/* SPDX-License-Identifier: BSD-3-Clause */
/* The partitions of a BSD disklabel inside an MBR slice (type 0xA5
 * FreeBSD, 0xA6 OpenBSD, 0xA9 NetBSD), named by slice and letter: "2a".
 *
 * libblkid finds these too, as a nested "bsd" table, but it drops the
 * unused entries and c without keeping their place, so its numbers say
 * nothing about the letters; and it only sees a label in the part of
 * the disk partitions.c loads for it.  So we read the label ourselves.
 *
 * The label is in sector 1 of the slice (offset 64 of sector 0 on some
 * old ports), little-endian as written on x86: the magic 0x82564557 at
 * its start and again at byte 132, the number of entries at 138, a
 * checksum (the XOR of its 16-bit words up to the last entry is 0), and
 * from byte 148 one 16-byte entry per partition: size and offset in
 * sectors, then the fstype at byte 12.  We take at most the 22 entries
 * that fit in the sector.  Entry 2 (c) is the raw partition, the whole
 * slice or disk by convention, and is never listed.
 *
 * Offsets: OpenBSD and NetBSD write them from the start of the disk.
 * FreeBSD reads them as relative to c's offset: old labels give c the
 * slice's start (so offsets are absolute), those of FreeBSD 10 and
 * later give c offset 0 (offsets are relative to the slice).  So for
 * 0xA5 we read them as absolute if c starts where the slice does and
 * as relative otherwise, absolute for the others; and where an entry
 * would then lie outside the slice but the other reading keeps it
 * inside, the other reading.  Entries that are the whole disk or
 * another partition of the disk's table (NetBSD's d; OpenBSD lists the
 * disk's FAT partitions as i, j...) are left out: they are listed
 * already.  Anything else outside the slice is skipped with a warning.
 */

#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bytes.h"
#include "qemount.h"

#define SECTOR 512
#define MAGIC 0x82564557
#define MAGIC2_AT 132
#define NPARTITIONS_AT 138
#define ENTRIES_AT 148
#define ENTRY_BYTES 16
#define MAX_ENTRIES ((SECTOR - ENTRIES_AT) / ENTRY_BYTES)  /* 22 */
#define RAW_PART 2

/* The fstypes every BSD numbers alike (they differ from 14 on). */
static const char *const fstype_names[] = {
  "unused", "swap", "Version 6", "Version 7", "System V", "4.1BSD",
  "Eighth Edition", "4.2BSD", "MSDOS", "4.4LFS", "unknown", "HPFS",
  "ISO9660", "boot",
};

bool
is_bsd_slice (const struct disk_layout *d, const struct partition *p)
{
  return d->table && strcmp (d->table, "dos") == 0 && !p->extended &&
    p->type && (strcasecmp (p->type, "0xa5") == 0 ||
                strcasecmp (p->type, "0xa6") == 0 ||
                strcasecmp (p->type, "0xa9") == 0);
}

/* Where the label is in the first 1 KiB of the slice, or NULL; says
 * why a label that is there is not used.
 */
static const uint8_t *
find_label (const char *image, int slice, const uint8_t buf[2 * SECTOR])
{
  static const unsigned at[] = { SECTOR, 64 };

  for (size_t i = 0; i < sizeof at / sizeof at[0]; ++i) {
    const uint8_t *l = buf + at[i];
    bool start = load_le32 (l) == MAGIC;
    bool end = load_le32 (l + MAGIC2_AT) == MAGIC;
    unsigned n;
    uint16_t sum = 0;

    if (!start && !end)
      continue;
    if (!start || !end) {
      warnf ("%s: slice %d: its disklabel has the magic number at its %s "
             "only: ignored", image, slice, start ? "start" : "end");
      return NULL;
    }
    n = load_le16 (l + NPARTITIONS_AT);
    if (n > MAX_ENTRIES) {
      warnf ("%s: slice %d: its disklabel claims %u partitions, more than "
             "fit in its sector (%d): ignored", image, slice, n, MAX_ENTRIES);
      return NULL;
    }
    for (unsigned off = 0; off < ENTRIES_AT + n * ENTRY_BYTES; off += 2)
      sum ^= load_le16 (l + off);
    if (sum != 0) {
      warnf ("%s: slice %d: its disklabel's checksum is wrong: ignored",
             image, slice);
      return NULL;
    }
    return l;
  }
  return NULL;
}

static bool
inside (uint64_t start, uint64_t size, uint64_t in_start, uint64_t in_size)
{
  return start >= in_start && size <= in_size &&
    start - in_start <= in_size - size;
}

/* An area listed already: the whole disk, or another partition of the
 * disk's table.  Not the slice: a partition a may take all of it.
 */
static bool
listed (const struct disk_layout *d, const struct partition *slice,
        uint64_t start, uint64_t size)
{
  if (start == 0 && size == d->size)
    return true;
  for (size_t i = 0; i < d->n_partitions; ++i)
    if (&d->partitions[i] != slice && d->partitions[i].start == start &&
        d->partitions[i].size == size)
      return true;
  return false;
}

int
read_disklabel (struct image *img, const struct disk_layout *d,
                const struct partition *slice, struct partition **parts,
                size_t *n_parts)
{
  uint8_t buf[2 * SECTOR];
  const uint8_t *l;
  unsigned n;
  bool relative;

  *parts = NULL;
  *n_parts = 0;
  if (slice->size < sizeof buf || !inside (slice->start, sizeof buf, 0,
                                           img->size))
    return 0;
  if (image_pread (img, buf, sizeof buf, slice->start) == -1)
    return -1;
  l = find_label (img->path, slice->number, buf);
  if (l == NULL)
    return 0;
  n = load_le16 (l + NPARTITIONS_AT);

  relative = strcasecmp (slice->type, "0xa5") == 0 &&
    (n <= RAW_PART ||
     (uint64_t) load_le32 (l + ENTRIES_AT + RAW_PART * ENTRY_BYTES + 4) *
     SECTOR != slice->start);

  *parts = calloc (n > 0 ? n : 1, sizeof **parts);
  if (*parts == NULL) {
    perror ("calloc");
    exit (EXIT_ERROR);
  }
  for (unsigned i = 0; i < n; ++i) {
    const uint8_t *e = l + ENTRIES_AT + i * ENTRY_BYTES;
    uint64_t size = (uint64_t) load_le32 (e) * SECTOR;
    uint64_t offset = (uint64_t) load_le32 (e + 4) * SECTOR;
    uint64_t start = relative ? slice->start + offset : offset;
    uint64_t other = relative ? offset : slice->start + offset;
    unsigned fstype = e[12];
    struct partition *p;

    if (i == RAW_PART || size == 0 || listed (d, slice, start, size) ||
        listed (d, slice, other, size))
      continue;
    if (!inside (start, size, slice->start, slice->size) &&
        inside (other, size, slice->start, slice->size)) {
      debugf ("%s: slice %d: disklabel partition %c read as %s the slice",
              img->path, slice->number, 'a' + i,
              relative ? "absolute, not relative to" : "relative to");
      start = other;
    }
    if (!inside (start, size, slice->start, slice->size)) {
      warnf ("%s: slice %d: disklabel partition %d%c (sectors %" PRIu64
             " to %" PRIu64 ") is outside the %s: skipped", img->path,
             slice->number, slice->number, 'a' + i, start / SECTOR,
             (start + size) / SECTOR - 1,
             inside (start, size, 0, img->size) ? "slice" : "disk");
      continue;
    }
    p = &(*parts)[(*n_parts)++];
    p->number = slice->number;
    p->letter = 'a' + i;
    p->start = start;
    p->size = size;
    p->type = xasprintf ("bsd:%u", fstype);
    if (fstype < sizeof fstype_names / sizeof fstype_names[0])
      p->type_name = fstype_names[fstype];
  }
  return 1;
}
