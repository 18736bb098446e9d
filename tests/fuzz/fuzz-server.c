/* SPDX-License-Identifier: BSD-3-Clause */
/* libFuzzer harness for the qemount command's own on-disk parsers: the
 * input, opened as a raw image, is read as a UFS (ufs_variant), as an
 * APFS container (apfs_volumes, then what info and --volume NAME do
 * with its volumes) and as an MBR slice of type 0xA5 covering the whole
 * input, and another where the MBR's first entry says (read_disklabel),
 * as qemount info reads a disk.
 *
 * Both formats checksum what they hold, which random mutations almost
 * never get right: the parsers would refuse nearly every input before
 * the structures behind the checksums.  So each input is parsed twice:
 * as it is, and with the checksums mended (every APFS block's, for the
 * block size it claims; the disklabel's), written here from the
 * layouts on their own.
 *
 * The server's messages live in the file with main()
 * (server/qemount.c): quiet stand-ins are defined here; its allocation
 * helpers are linked (server/xalloc.c).  The
 * same file is linked into tests/fuzz-server-replay, which make check
 * runs over the kept corpus and crashers.
 */

#include <config.h>

#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bytes.h"
#include "image.h"
#include "qemount.h"

void
errorf (const char *fs, ...)
{
}

void
warnf (const char *fs, ...)
{
}

void
debugf (const char *fs, ...)
{
}

static void
quiet (const char *msg)
{
}

/* APFS's Fletcher-64 (Apple File System Reference, "Checksum"). */
static uint64_t
fletcher64 (const uint8_t *p, size_t len)
{
  uint64_t s1 = 0, s2 = 0, c1;

  for (size_t i = 0; i + 4 <= len; i += 4) {
    s1 = (s1 + load_le32 (p + i)) % 0xffffffff;
    s2 = (s2 + s1) % 0xffffffff;
  }
  c1 = 0xffffffff - (s1 + s2) % 0xffffffff;
  return (0xffffffff - (s1 + c1) % 0xffffffff) << 32 | c1;
}

/* Mend the checksum of a BSD disklabel at data[at] (its 16-bit XOR,
 * over the entries it claims, is 0).
 */
static void
seal_label (uint8_t *data, size_t size, uint64_t at)
{
  uint8_t *l;
  uint64_t end;
  uint16_t sum = 0;

  if (at + 140 > size)
    return;
  l = data + at;
  end = 148 + 16 * (uint64_t) load_le16 (l + 138);
  if (at + end > size)
    return;
  for (uint64_t off = 0; off < end; off += 2)
    if (off != 136)
      sum ^= load_le16 (l + off);
  l[136] = sum;
  l[137] = sum >> 8;
}

/* Mend the checksums of data: the disklabels' wherever disklabel.c
 * looks (sector 1 of the slice, or offset 64), for the slices fuzz()
 * reads, then every APFS block's.
 */
static void
seal (uint8_t *data, size_t size)
{
  uint64_t mbr_start = size >= 512 ? load_le32 (data + 446 + 8) * 512ull : 0;
  uint32_t bs = size >= 40 ? load_le32 (data + 36) : 0;

  seal_label (data, size, 512);
  seal_label (data, size, 64);
  seal_label (data, size, mbr_start + 512);
  seal_label (data, size, mbr_start + 64);
  /* nx_block_size, if a power of two APFS allows. */
  if (bs < 4096 || bs > 65536 || (bs & (bs - 1)) != 0)
    bs = 4096;
  for (size_t b = 0; b + bs <= size; b += bs) {
    uint64_t c = fletcher64 (data + b + 8, bs - 8);

    for (int i = 0; i < 8; ++i)
      data[b + i] = c >> (8 * i);
  }
}

/* The volumes of the container at [0, size), as qemount info lists
 * them and --volume NAME looks one up.
 */
static void
fuzz_apfs (struct image *img)
{
  struct filesystem fs;
  char *list;

  memset (&fs, 0, sizeof fs);
  apfs_volumes (img, 0, img->size, &fs);
  list = apfs_format_volumes (&fs);
  free (list);
  apfs_find_volume (&fs, "Mac HD");
  for (int i = 0; i < APFS_MAX_VOLUMES; ++i) {
    char role[APFS_ROLE_LEN];

    apfs_role_name (fs.volumes[i].role, role);
    free (fs.volumes[i].name);
  }
}

/* A disk whose one MBR slice, FreeBSD's, is [start, start+size). */
static void
fuzz_disklabel (struct image *img, uint64_t start, uint64_t size)
{
  char table[] = "dos", type[] = "0xa5";
  struct partition slice = {
    .number = 1, .start = start, .size = size, .type = type,
  };
  struct disk_layout d = {
    .size = img->size, .table = table, .partitions = &slice,
    .n_partitions = 1,
  };
  struct partition *parts;
  size_t n_parts;

  if (!is_bsd_slice (&d, &slice) ||
      read_disklabel (img, &d, &slice, &parts, &n_parts) == -1)
    return;
  for (size_t i = 0; i < n_parts; ++i)
    free (parts[i].type);
  free (parts);
}

/* The parsers over the raw image of data: the slice is all of it, and
 * where the MBR's first entry says, if that is inside it (the offsets
 * of a label are read relative to the slice or to the disk).
 */
static void
fuzz (const uint8_t *data, size_t size)
{
  struct image_options opts = {
    .format = "raw", .backing = BACKING_NO, .readonly = true,
  };
  const char *why;
  char path[64];
  struct image *img;
  int fd;

  fd = memfd_create ("fuzz", MFD_CLOEXEC);
  if (fd == -1 || write (fd, data, size) != (ssize_t) size)
    abort ();
  snprintf (path, sizeof path, "/proc/self/fd/%d", fd);
  ufs_variant (fd, 0, size, &why);
  img = image_open (path, &opts);
  if (img != NULL) {
    fuzz_apfs (img);
    fuzz_disklabel (img, 0, size);
    if (size >= 512) {
      uint64_t start = (uint64_t) load_le32 (data + 446 + 8) * 512;
      uint64_t len = (uint64_t) load_le32 (data + 446 + 12) * 512;

      if (start > 0 && start <= size && len <= size - start)
        fuzz_disklabel (img, start, len);
    }
    image_close (img);
  }
  close (fd);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  uint8_t *sealed = malloc (size ? size : 1);

  if (sealed == NULL)
    abort ();
  image_set_message_handlers (quiet, quiet);
  fuzz (data, size);
  memcpy (sealed, data, size);
  seal (sealed, size);
  fuzz (sealed, size);
  free (sealed);
  return 0;
}
