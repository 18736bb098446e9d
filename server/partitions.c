/* SPDX-License-Identifier: BSD-3-Clause */
/* What a disk holds: its partition table, partitions and the filesystem
 * of each, found by libblkid.
 *
 * libblkid reads from a file descriptor, and the disk only exists as
 * decoded blocks of the image layer.  So we build a sparse memfd the
 * size of the disk holding just the areas the probes look at, and hand
 * that to libblkid:
 *   - the first 4 MiB of the disk (MBR, GPT header and its entries,
 *     whole-disk superblocks) and the last 1 MiB (GPT backup header, md
 *     and other end-of-device signatures);
 *   - the sector of every DOS extended boot record, found by following
 *     the chain of links from the extended partition (the EBRs may lie
 *     anywhere on the disk), so that logical partitions are seen;
 *   - the first and last 1 MiB of every partition, for its superblock,
 *     including the partitions of BSD disklabels (disklabel.c reads
 *     those from the image itself, wherever their slice is).
 * What this cannot see: a GPT whose entry array lies past the first
 * 4 MiB (the header says where; every tool we know writes it at LBA 2),
 * and signatures that live elsewhere inside a partition (none of the
 * filesystems libblkid probes keeps its primary superblock past 1 MiB).
 * All-zero areas are not written, so the memfd only takes memory for
 * what the image actually holds there.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <blkid.h>

#include "bytes.h"
#include "qemount.h"

#define HEAD_BYTES (4u << 20)
#define TAIL_BYTES (1u << 20)
#define PART_BYTES (1u << 20)
#define CHUNK (64u << 10)
#define MAX_EBRS 128
#define SECTOR 512

/* Names of common partition types, for people; the raw type is always
 * shown too.
 */
static const struct {
  const char *type;
  const char *name;
} type_names[] = {
  { "0x01", "FAT12" },
  { "0x04", "FAT16 <32M" },
  { "0x05", "Extended" },
  { "0x06", "FAT16" },
  { "0x07", "HPFS/NTFS/exFAT" },
  { "0x0b", "W95 FAT32" },
  { "0x0c", "W95 FAT32 (LBA)" },
  { "0x0e", "W95 FAT16 (LBA)" },
  { "0x0f", "W95 Extended (LBA)" },
  { "0x82", "Linux swap" },
  { "0x83", "Linux" },
  { "0x85", "Linux extended" },
  { "0x8e", "Linux LVM" },
  { "0xa5", "FreeBSD" },
  { "0xa6", "OpenBSD" },
  { "0xa9", "NetBSD" },
  { "0xee", "GPT protective" },
  { "0xef", "EFI (FAT)" },
  { "0xfd", "Linux raid autodetect" },
  { "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI System" },
  { "21686148-6449-6e6f-744e-656564454649", "BIOS boot" },
  { "0fc63daf-8483-4772-8e79-3d69d8477de4", "Linux filesystem" },
  { "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "Linux root (x86-64)" },
  { "933ac7e1-2eb4-4f13-b844-0e14e2aef915", "Linux home" },
  { "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "Linux swap" },
  { "e6d6d379-f507-44c2-a23c-238f2a3df928", "Linux LVM" },
  { "a19d880f-05fc-4d3b-a006-743f0f84911e", "Linux RAID" },
  { "bc13c2ff-59e6-4262-a352-b275fd6f7172", "Linux extended boot" },
  { "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7", "Microsoft basic data" },
  { "e3c9e316-0b5c-4db8-817d-f92df00215ae", "Microsoft reserved" },
  { "de94bba4-06d1-4d40-a16a-bfd50179d6ac", "Windows recovery" },
  { "48465300-0000-11aa-aa11-00306543ecac", "Apple HFS/HFS+" },
  { "7c3457ef-0000-11aa-aa11-00306543ecac", "Apple APFS" },
  { "516e7cb4-6ecf-11d6-8ff8-00022d09712b", "FreeBSD UFS" },
};

static const char *
type_name (const char *type)
{
  for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; ++i)
    if (strcasecmp (type, type_names[i].type) == 0)
      return type_names[i].name;
  return NULL;
}

static char *
dup_or_null (const char *s)
{
  if (s == NULL || *s == '\0')
    return NULL;
  return xstrdup (s);
}

/* Copy [offset, offset+len) of the disk into the memfd, clamped to the
 * disk, skipping all-zero chunks.
 */
static int
load (struct image *img, int memfd, uint64_t offset, uint64_t len)
{
  static const char zero[CHUNK];
  char buf[CHUNK];

  if (offset >= img->size)
    return 0;
  if (len > img->size - offset)
    len = img->size - offset;
  while (len > 0) {
    size_t n = len < CHUNK ? len : CHUNK;

    if (image_pread (img, buf, n, offset) == -1)
      return -1;
    if (memcmp (buf, zero, n) != 0 &&
        pwrite (memfd, buf, n, offset) != (ssize_t) n) {
      errorf ("writing the probe buffer: %m");
      return -1;
    }
    offset += n;
    len -= n;
  }
  return 0;
}

/* Follow the chain of extended boot records from the extended partition
 * at ext_start (bytes), loading each EBR sector.  The bounds (count, and
 * every EBR inside the extended partition) stop loops and garbage;
 * libblkid itself interprets the records.
 */
static int
load_ebr_chain (struct image *img, int memfd, uint64_t ext_start,
                uint64_t ext_size)
{
  uint64_t ebr = ext_start;
  uint8_t sector[SECTOR];

  for (unsigned n = 0; n < MAX_EBRS; ++n) {
    uint64_t next;

    if (ebr < ext_start || ebr + SECTOR > ext_start + ext_size ||
        ebr + SECTOR > img->size)
      break;
    if (image_pread (img, sector, SECTOR, ebr) == -1)
      return -1;
    if (sector[510] != 0x55 || sector[511] != 0xaa)
      break;
    if (pwrite (memfd, sector, SECTOR, ebr) != SECTOR) {
      errorf ("writing the probe buffer: %m");
      return -1;
    }
    /* Entry 1 links to the next EBR, relative to the extended
     * partition; a zero link ends the chain.
     */
    switch (sector[446 + 16 + 4]) {
    case 0x05: case 0x0f: case 0x85: break;
    default: return 0;
    }
    next = (uint64_t) load_le32 (&sector[446 + 16 + 8]) * SECTOR;
    if (next == 0)
      break;
    ebr = ext_start + next;
  }
  return 0;
}

/* The filesystem (or other signature) at [offset, offset+size) of the
 * memfd; an APFS container's volumes from img itself, since they lie
 * anywhere in it.
 */
static void
probe_filesystem (struct image *img, int memfd, uint64_t offset,
                  uint64_t size, struct filesystem *fs)
{
  blkid_probe pr = blkid_new_probe ();
  const char *v;

  memset (fs, 0, sizeof *fs);
  if (pr == NULL)
    return;
  if (blkid_probe_set_device (pr, memfd, offset, size) == 0) {
    blkid_probe_enable_partitions (pr, 0);
    blkid_probe_enable_superblocks (pr, 1);
    blkid_probe_set_superblocks_flags (pr, BLKID_SUBLKS_TYPE |
                                       BLKID_SUBLKS_LABEL |
                                       BLKID_SUBLKS_UUID |
                                       BLKID_SUBLKS_USAGE);
    if (blkid_do_safeprobe (pr) == 0) {
      if (blkid_probe_lookup_value (pr, "TYPE", &v, NULL) == 0)
        fs->type = dup_or_null (v);
      if (blkid_probe_lookup_value (pr, "USAGE", &v, NULL) == 0)
        fs->usage = dup_or_null (v);
      if (blkid_probe_lookup_value (pr, "LABEL", &v, NULL) == 0)
        fs->label = dup_or_null (v);
      if (blkid_probe_lookup_value (pr, "UUID", &v, NULL) == 0)
        fs->uuid = dup_or_null (v);
      if (fs->type && strcmp (fs->type, "ufs") == 0)
        fs->variant = ufs_variant (memfd, offset, size, &fs->no_variant);
      if (fs->type && strcmp (fs->type, "apfs") == 0)
        apfs_volumes (img, offset, size, fs);
    }
  }
  blkid_free_probe (pr);
}

/* Fill layout->table and ->partitions from the memfd.  Returns the
 * number of extended partitions seen, or -1.
 */
static int
probe_table (int memfd, struct disk_layout *layout)
{
  blkid_probe pr = blkid_new_probe ();
  blkid_partlist ls;
  blkid_parttable tab;
  int n, extended = 0;

  if (pr == NULL || blkid_probe_set_device (pr, memfd, 0, layout->size)) {
    errorf ("libblkid: cannot set up a probe: %m");
    blkid_free_probe (pr);
    return -1;
  }
  blkid_probe_enable_superblocks (pr, 0);
  blkid_probe_enable_partitions (pr, 1);
  blkid_probe_set_partitions_flags (pr, BLKID_PARTS_ENTRY_DETAILS);
  ls = blkid_probe_get_partitions (pr);
  tab = ls ? blkid_partlist_get_table (ls) : NULL;
  if (tab == NULL) {            /* no partition table */
    blkid_free_probe (pr);
    return 0;
  }
  layout->table = dup_or_null (blkid_parttable_get_type (tab));
  layout->table_id = dup_or_null (blkid_parttable_get_id (tab));

  n = blkid_partlist_numof_partitions (ls);
  layout->partitions = calloc (n > 0 ? n : 1, sizeof (struct partition));
  if (layout->partitions == NULL) {
    perror ("calloc");
    exit (EXIT_ERROR);
  }
  for (int i = 0; i < n; ++i) {
    blkid_partition par = blkid_partlist_get_partition (ls, i);
    struct partition *p = &layout->partitions[layout->n_partitions];
    char type[16];
    const char *ts;

    /* Only the disk's own table, numbered as fdisk and nbdkit's
     * partition filter do: partitions of nested tables (BSD labels and
     * the like) have no number there.
     */
    if (blkid_partition_get_table (par) != tab)
      continue;
    p->number = blkid_partition_get_partno (par);
    p->start = (uint64_t) blkid_partition_get_start (par) * SECTOR;
    p->size = (uint64_t) blkid_partition_get_size (par) * SECTOR;
    ts = blkid_partition_get_type_string (par);
    if (ts == NULL) {
      snprintf (type, sizeof type, "0x%02x",
                (unsigned) blkid_partition_get_type (par));
      ts = type;
    }
    p->type = dup_or_null (ts);
    p->type_name = type_name (ts);
    p->name = dup_or_null (blkid_partition_get_name (par));
    p->uuid = dup_or_null (blkid_partition_get_uuid (par));
    p->extended = blkid_partition_is_extended (par);
    p->logical = blkid_partition_is_logical (par);
    extended += p->extended;
    layout->n_partitions++;
  }
  blkid_free_probe (pr);
  return extended;
}

/* Add the partitions of the BSD disklabels in the disk's slices, each
 * after its slice.
 */
static int
add_disklabels (struct image *img, struct disk_layout *layout)
{
  struct partition *all = NULL;
  size_t n = 0;

  for (size_t i = 0; i < layout->n_partitions; ++i) {
    struct partition *slice = &layout->partitions[i];
    struct partition *bsd = NULL;
    size_t n_bsd = 0;

    if (is_bsd_slice (layout, slice)) {
      int r = read_disklabel (img, layout, slice, &bsd, &n_bsd);

      if (r == -1) {
        for (size_t j = 0; j < n; ++j)
          if (all[j].letter)
            free (all[j].type);
        free (all);
        return -1;
      }
      slice->disklabel = r == 1;
    }
    all = reallocarray (all, n + 1 + n_bsd, sizeof *all);
    if (all == NULL) {
      perror ("realloc");
      exit (EXIT_ERROR);
    }
    all[n++] = *slice;
    for (size_t j = 0; j < n_bsd; ++j)
      all[n++] = bsd[j];
    free (bsd);
  }
  free (layout->partitions);
  layout->partitions = all;
  layout->n_partitions = n;
  return 0;
}

static void
free_filesystem (struct filesystem *fs)
{
  free (fs->type);
  free (fs->usage);
  free (fs->label);
  free (fs->uuid);
  for (int i = 0; i < APFS_MAX_VOLUMES; ++i)
    free (fs->volumes[i].name);
}

static void
free_partitions (struct disk_layout *layout)
{
  for (size_t i = 0; i < layout->n_partitions; ++i) {
    struct partition *p = &layout->partitions[i];

    free (p->type);
    free (p->name);
    free (p->uuid);
    free_filesystem (&p->fs);
  }
  free (layout->partitions);
  free (layout->table);
  free (layout->table_id);
  layout->partitions = NULL;
  layout->n_partitions = 0;
  layout->table = layout->table_id = NULL;
}

void
free_disk_layout (struct disk_layout *layout)
{
  free_partitions (layout);
  free_filesystem (&layout->whole);
  memset (layout, 0, sizeof *layout);
}

int
probe_disk (struct image *img, struct disk_layout *layout)
{
  int memfd, extended;

  memset (layout, 0, sizeof *layout);
  layout->size = img->size;

  memfd = memfd_create ("qemount-probe", MFD_CLOEXEC);
  if (memfd == -1) {
    errorf ("memfd_create: %m");
    return -1;
  }
  if (ftruncate (memfd, img->size) == -1) {
    errorf ("sizing the probe buffer to %" PRIu64 " bytes: %m", img->size);
    goto err;
  }
  if (load (img, memfd, 0, HEAD_BYTES) == -1 ||
      (img->size > TAIL_BYTES &&
       load (img, memfd, img->size - TAIL_BYTES, TAIL_BYTES) == -1))
    goto err;

  extended = probe_table (memfd, layout);
  if (extended == -1)
    goto err;
  if (extended > 0) {           /* again, now with the logical partitions */
    for (size_t i = 0; i < layout->n_partitions; ++i)
      if (layout->partitions[i].extended &&
          load_ebr_chain (img, memfd, layout->partitions[i].start,
                          layout->partitions[i].size) == -1)
        goto err;
    free_partitions (layout);
    if (probe_table (memfd, layout) == -1)
      goto err;
  }
  if (layout->table && strcmp (layout->table, "dos") == 0 &&
      add_disklabels (img, layout) == -1)
    goto err;

  for (size_t i = 0; i < layout->n_partitions; ++i) {
    struct partition *p = &layout->partitions[i];

    if (p->extended || p->size == 0 || p->start >= img->size ||
        p->size > img->size - p->start)
      continue;                 /* a container, or outside the disk */
    if (load (img, memfd, p->start, PART_BYTES) == -1 ||
        (p->size > PART_BYTES &&
         load (img, memfd, p->start + p->size - PART_BYTES,
               PART_BYTES) == -1))
      goto err;
    probe_filesystem (img, memfd, p->start, p->size, &p->fs);
  }
  /* A filesystem on the whole disk, unless partitions were found: a
   * partitioned disk's first partition can look like one at offset 0 to
   * some probes, but not the other way round.  FAT-like boot sectors
   * (exFAT's, NTFS's) end in an MBR's 0x55AA, so a "dos" table without
   * partitions over a filesystem is that filesystem's boot sector.
   */
  if (layout->table == NULL || layout->n_partitions == 0) {
    probe_filesystem (img, memfd, 0, img->size, &layout->whole);
    if (layout->table && fs_is_mountable (&layout->whole)) {
      free (layout->table);
      free (layout->table_id);
      layout->table = layout->table_id = NULL;
    }
  }

  close (memfd);
  return 0;

 err:
  close (memfd);
  free_disk_layout (layout);
  return -1;
}

const struct partition *
find_partition (const struct disk_layout *layout, int number, char letter)
{
  for (size_t i = 0; i < layout->n_partitions; ++i)
    if (layout->partitions[i].number == number &&
        layout->partitions[i].letter == letter)
      return &layout->partitions[i];
  return NULL;
}

void
format_partition (char *buf, size_t len, int number, char letter)
{
  if (letter)
    snprintf (buf, len, "%d%c", number, letter);
  else
    snprintf (buf, len, "%d", number);
}

/* Something a kernel (or the helper VM) could mount as a filesystem:
 * not swap, not RAID members or encrypted containers.
 */
bool
fs_is_mountable (const struct filesystem *fs)
{
  return fs->type != NULL && fs->usage != NULL &&
    strcmp (fs->usage, "filesystem") == 0;
}

/* A container the helper VM opens (guests/linux/init), for people, or
 * NULL: an LVM physical volume, a member of an md RAID array, a LUKS
 * encrypted volume.
 */
const char *
fs_container (const struct filesystem *fs)
{
  if (fs->type == NULL)
    return NULL;
  if (strcmp (fs->type, "LVM2_member") == 0)
    return "an LVM physical volume";
  if (strcmp (fs->type, "linux_raid_member") == 0)
    return "an md RAID member";
  if (strcmp (fs->type, "crypto_LUKS") == 0)
    return "LUKS-encrypted";
  return NULL;
}

/* What to mount or extract: partition N (or disklabel partition Nx,
 * with letter x) if not 0, else the whole disk if it has no partition
 * table, else the only partition that holds a filesystem or a container
 * (a slice holding a disklabel is not one: its partitions are).  raw
 * (--raw): the disk, or the partition, itself, whatever it holds.
 * Fills *c; the messages name image.
 */
int
choose_filesystem (const char *image, const struct disk_layout *d,
                   int partition, char letter, const char *fstype,
                   bool raw, struct choice *c)
{
  const struct filesystem *fs;
  const struct partition *p = NULL;
  char where[64], name[16];

  memset (c, 0, sizeof *c);
  if (partition) {
    p = find_partition (d, partition, letter);
    if (p == NULL) {
      format_partition (name, sizeof name, partition, letter);
      if (d->table == NULL)
        errorf ("%s: there is no partition %s: the disk has no partition "
                "table", image, name);
      else {
        errorf ("%s: there is no partition %s%s; the %s partition table "
                "has:", image, name, letter == 'c' ? " (c is the raw "
                "partition: the whole slice is its number alone)" : "",
                d->table);
        print_partition_list (stderr, d);
      }
      return EXIT_NO_PARTITION;
    }
    if (p->extended) {
      errorf ("%s: partition %d is an extended partition: it holds the "
              "logical partitions (5 and up), not a filesystem",
              image, p->number);
      return EXIT_NO_FILESYSTEM;
    }
    if (p->disklabel && !raw) {
      errorf ("%s: partition %d holds a BSD disklabel: choose one of its "
              "partitions (--partition %da, ...)", image, p->number,
              p->number);
      return EXIT_NO_FILESYSTEM;
    }
    fs = &p->fs;
  }
  else if (raw || d->table == NULL)
    fs = &d->whole;
  else {
    size_t n = 0;

    for (size_t i = 0; i < d->n_partitions; ++i)
      if (!d->partitions[i].extended && !d->partitions[i].disklabel &&
          (fs_is_mountable (&d->partitions[i].fs) ||
           fs_container (&d->partitions[i].fs))) {
        p = &d->partitions[i];
        n++;
      }
    if (n != 1) {
      errorf ("%s: %s; choose one with --partition N:", image,
              n == 0 ? "none of its partitions holds a filesystem qemount "
              "recognizes" : "several partitions hold a filesystem");
      print_partition_list (stderr, d);
      return EXIT_NO_FILESYSTEM;
    }
    fs = &p->fs;
    format_partition (name, sizeof name, p->number, p->letter);
    debugf ("%s: partition %s holds the only filesystem (%s)", image,
            name, fs->type);
  }

  if (p) {
    c->partition = p->number;
    c->letter = p->letter;
    c->start = p->start;
    c->size = p->size;
  }
  c->fs = fs;
  if (raw)
    return EXIT_OK;
  c->container = fs_container (fs);
  c->fstype = fstype ? fstype : fs_is_mountable (fs) ? fs->type : NULL;
  if (c->partition) {
    format_partition (name, sizeof name, c->partition, c->letter);
    snprintf (where, sizeof where, "partition %s", name);
  }
  else
    snprintf (where, sizeof where, "the disk");
  if (c->fstype && strcmp (c->fstype, "ufs") == 0 && fs->variant)
    snprintf (c->fsopts, sizeof c->fsopts, "ufstype=%s", fs->variant);
  else if (c->fstype && strcmp (c->fstype, "ufs") == 0 && fs->no_variant) {
    errorf ("%s: %s holds a UFS that Linux cannot mount: %s", image, where,
            fs->no_variant);
    return EXIT_MOUNT_REFUSED;
  }
  if (c->fstype || c->container)
    return EXIT_OK;
  if (fs->type)
    errorf ("%s: %s holds %s, not a filesystem", image, where, fs->type);
  else
    errorf ("%s: %s holds no %sfilesystem that qemount recognizes "
            "(--fstype T tries one anyway)", image, where,
            d->table == NULL && !c->partition ? "partition table or " : "");
  return EXIT_NO_FILESYSTEM;
}

/* The partitions as a table for people (info, and error messages that
 * ask the user to choose).
 */
void
print_partition_list (FILE *fp, const struct disk_layout *layout)
{
  int type_width = 4;

  for (size_t i = 0; i < layout->n_partitions; ++i) {
    const struct partition *p = &layout->partitions[i];
    int w = (int) strlen (p->type_name ? p->type_name : p->type);

    if (w > type_width)
      type_width = w;
  }
  fprintf (fp, "  %3s  %10s  %10s  %-*s  %-10s  %s\n",
           "#", "START", "SIZE", type_width, "TYPE", "FILESYSTEM", "LABEL");
  for (size_t i = 0; i < layout->n_partitions; ++i) {
    const struct partition *p = &layout->partitions[i];
    char name[16], start[32], size[32];
    CLEANUP_FREE char *fs = NULL;

    format_partition (name, sizeof name, p->number, p->letter);
    format_size (start, sizeof start, p->start);
    format_size (size, sizeof size, p->size);
    fprintf (fp, "  %3s  %10s  %10s  %-*s  ", name, start, size,
             type_width, p->type_name ? p->type_name : p->type);
    if (p->fs.variant)
      fs = xasprintf ("%s (%s)", p->fs.type, p->fs.variant);
    else if (p->fs.n_volumes > 0) {
      CLEANUP_FREE char *vols = apfs_format_volumes (&p->fs);

      fs = xasprintf ("%s (volumes %s)", p->fs.type, vols);
    }
    else
      fs = xstrdup (p->fs.type ? p->fs.type : "-");
    if (p->fs.label)
      fprintf (fp, "%-10s  %s\n", fs, p->fs.label);
    else
      fprintf (fp, "%s\n", fs);
  }
}
