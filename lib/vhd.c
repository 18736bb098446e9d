/* SPDX-License-Identifier: BSD-3-Clause */
/* VHD (Connectix / Microsoft Virtual PC, Hyper-V generation 1 disks,
 * Azure; QEMU calls it "vpc"), read-only.  All fields are big-endian.
 *
 * Every VHD ends in a 512-byte footer ("conectix"; Virtual PC before 2004
 * wrote 511 bytes): size, geometry, disk type, UUID, and a checksum, the
 * ones' complement of the sum of its bytes.  A fixed disk is the disk's
 * bytes followed by the footer.  A dynamic disk has a copy of the footer
 * at offset 0, a 1024-byte header ("cxsparse") where the footer says,
 * and a block allocation table (BAT) of u32 sector offsets, 0xFFFFFFFF
 * for a block not stored.  A stored block is a sector bitmap (a bit per
 * sector, most significant bit first, padded to whole sectors) followed
 * by the block's data.  A differencing disk is a dynamic one whose
 * sectors with a clear bit, and whose blocks not stored, are its
 * parent's; the header names the parent by UUID and by paths (parent
 * locators).
 *
 * Two readings differ between tools, and we follow QEMU 7.2 where it
 * reads an image at all, so that `qemu-img convert` is the reference:
 * - the size: see disk_size ();
 * - a dynamic (not differencing) disk's bitmap: the spec says a clear bit
 *   is a sector never written, which Windows reads as zeros; QEMU reads
 *   the stored block whatever the bitmap says, and so do we.  Writers
 *   that allocate a block fill it and set every bit, so the two agree on
 *   every image seen in practice.
 * QEMU does not follow parents; we do (find_parent ()).
 */

#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bytes.h"
#include "image.h"
#include "source.h"

#define FOOTER_SIZE         512
#define OLD_FOOTER_SIZE     511         /* Virtual PC before 2004 */
#define HEADER_SIZE         1024
#define SECTOR              512

#define TYPE_FIXED          2
#define TYPE_DYNAMIC        3
#define TYPE_DIFFERENCING   4

#define BAT_FREE            0xffffffffu

/* Bounds that keep a hostile header from making us allocate or compute
 * beyond reason: writers use 512 KiB or 2 MiB blocks, and a 2 TiB disk
 * needs a million BAT entries.
 */
#define MIN_BLOCK           512u
#define MAX_BLOCK           (256u << 20)
#define MAX_BAT_ENTRIES     (64u << 20)
#define MAX_LOCATOR         8192u       /* bytes: longer than PATH_MAX */

/* The largest geometry; QEMU takes the current size for it, whoever
 * made the image.
 */
#define MAX_CHS_SECTORS     (UINT64_C (65535) * 16 * 255)

/* Parent locator platform codes. */
#define LOCATOR_W2KU        0x57326b75u /* absolute Windows path, UTF-16LE */
#define LOCATOR_W2RU        0x57327275u /* relative Windows path, UTF-16LE */
#define LOCATOR_MACX        0x4d616358u /* file:// URL, UTF-8 */
#define LOCATORS            8

struct footer {
  uint64_t data_offset;         /* of the dynamic header */
  char creator[4];
  uint64_t current_size;
  uint64_t chs_sectors;
  uint32_t type;
  uint8_t uuid[16];
};

struct vhd {
  uint32_t type;
  uint8_t uuid[16];
  /* Dynamic and differencing disks. */
  uint32_t *bat;                /* sector offsets, host order */
  uint32_t bat_entries;
  unsigned block_bits;
  uint32_t bitmap_size;         /* bytes, whole sectors */
};

/* A region of the file that holds metadata, for the overlap checks. */
struct region {
  const char *what;
  uint64_t start, length;
};

#define OPEN_ERROR(...) (image_error (__VA_ARGS__), errno = EINVAL, -1)

static uint32_t
checksum (const uint8_t *buf, size_t len, size_t field)
{
  uint32_t sum = 0;

  for (size_t i = 0; i < len; ++i)
    if (i < field || i >= field + 4)
      sum += buf[i];
  return ~sum;
}

/* A footer (len 512 or 511 bytes) with its cookie and a right checksum. */
static bool
footer_valid (const uint8_t *buf, size_t len)
{
  return memcmp (buf, "conectix", 8) == 0 &&
    load_be32 (&buf[64]) == checksum (buf, len, 64);
}

static void
decode_footer (const uint8_t *buf, struct footer *f)
{
  f->data_offset = load_be64 (&buf[16]);
  memcpy (f->creator, &buf[28], 4);
  f->current_size = load_be64 (&buf[48]);
  f->chs_sectors = (uint64_t) load_be16 (&buf[56]) * buf[58] * buf[59];
  f->type = load_be32 (&buf[60]);
  memcpy (f->uuid, &buf[68], 16);
}

/* The lengths a footer at the end of the file may have. */
static const size_t footer_sizes[] = { FOOTER_SIZE, OLD_FOOTER_SIZE };

/* Whether the last len bytes of the file (FOOTER_SIZE bytes, the old
 * 511-byte footer padded with a zero, into buf) start like a footer.
 */
static bool
read_end (struct source *src, uint64_t file_size, size_t len, uint8_t *buf)
{
  memset (buf, 0, FOOTER_SIZE);
  return file_size >= len &&
    source_read (src, buf, len, file_size - len, NULL) == 0 &&
    memcmp (buf, "conectix", 8) == 0;
}

/* The footer at the end of the file into buf, if there is a valid one;
 * its length in *len.
 */
static bool
end_footer (struct source *src, uint64_t file_size, uint8_t *buf,
            size_t *len)
{
  for (size_t i = 0; i < 2; ++i)
    if (read_end (src, file_size, footer_sizes[i], buf) &&
        footer_valid (buf, footer_sizes[i])) {
      *len = footer_sizes[i];
      return true;
    }
  return false;
}

/* A dynamic or differencing disk starts with a copy of its footer; a
 * fixed one has it only at the end, where we look too (a bounded read),
 * taking a footer of the fixed type there for a fixed disk; open checks
 * its checksum, so that a damaged footer is reported, not served as
 * part of a raw disk.
 */
static bool
vhd_probe (struct source *src, const uint8_t *buf, size_t len)
{
  const uint64_t file_size = src->size;
  uint8_t footer[FOOTER_SIZE];

  if (len >= 8 && memcmp (buf, "conectix", 8) == 0)
    return true;
  for (size_t i = 0; i < 2; ++i)
    if (read_end (src, file_size, footer_sizes[i], footer) &&
        load_be32 (&footer[60]) == TYPE_FIXED)
      return true;
  return false;
}

/* The virtual size.  The footer has a current size and a CHS geometry,
 * and tools disagree on which is the disk's: Virtual PC uses the
 * geometry (which rounds the size down), Hyper-V, Azure, disk2vhd,
 * XenServer and VirtualBox the current size, as the spec says.  QEMU 7.2
 * takes the current size for the creators "win ", "qem2" (its own
 * force_size), "d2v ", "CTXS" and "tap\0", or when the geometry is the
 * largest, and the geometry for every other creator, which cuts the end
 * off images made by Azure ("wa\0\0") and VirtualBox ("vbox").  QEMU 10
 * takes the geometry only for "vpc " and "qemu" (whose own images
 * have both sizes equal); so do we: the same size as QEMU 7.2 for every
 * creator on its list, and for the others the size their makers meant.
 * A partial last sector is dropped, as QEMU does.
 */
static uint64_t
disk_size (const struct footer *f)
{
  bool chs = (memcmp (f->creator, "vpc ", 4) == 0 ||
              memcmp (f->creator, "qemu", 4) == 0) &&
    f->chs_sectors != MAX_CHS_SECTORS;

  return chs ? f->chs_sectors * SECTOR : f->current_size & ~UINT64_C (511);
}

/* The footer to use (see the top of the file) into *f. */
static int
read_footer (struct image *img, uint64_t file_size, struct footer *f,
             size_t *end_len)
{
  uint8_t head[FOOTER_SIZE], tail[FOOTER_SIZE];
  bool has_copy, has_end;
  struct footer copy;

  *end_len = 0;
  has_end = end_footer (img->src, file_size, tail, end_len);
  if (has_end) {
    decode_footer (tail, f);
    if (f->type == TYPE_FIXED)
      return 0;                 /* the disk's own bytes come first */
  }

  has_copy = file_size >= FOOTER_SIZE;
  if (has_copy &&
      image_read_file (img, head, FOOTER_SIZE, 0, "VHD footer copy") == -1)
    return -1;
  has_copy = has_copy && memcmp (head, "conectix", 8) == 0;
  if (!has_copy) {
    if (has_end)
      return OPEN_ERROR ("%s: VHD disk type %" PRIu32 " has no copy of "
                         "its footer at offset 0", img->path, f->type);
    for (size_t i = 0; i < 2; ++i)
      if (read_end (img->src, file_size, footer_sizes[i], tail))
        return OPEN_ERROR ("%s: VHD footer checksum is wrong (stored 0x%08"
                           PRIx32 ", computed 0x%08" PRIx32 ")", img->path,
                           load_be32 (&tail[64]),
                           checksum (tail, footer_sizes[i], 64));
    return OPEN_ERROR ("%s: not a VHD image (no footer)", img->path);
  }
  if (!footer_valid (head, FOOTER_SIZE))
    return OPEN_ERROR ("%s: the copy of the VHD footer at offset 0 has a "
                       "wrong checksum (stored 0x%08" PRIx32 ", computed "
                       "0x%08" PRIx32 ")", img->path, load_be32 (&head[64]),
                       checksum (head, FOOTER_SIZE, 64));
  decode_footer (head, &copy);
  if (!has_end) {
    if (copy.type == TYPE_FIXED)
      return OPEN_ERROR ("%s: fixed VHD without a valid footer at the end "
                         "of the file", img->path);
    image_warning ("%s: no valid VHD footer at the end of the file "
                   "(truncated image?); using its copy at offset 0",
                   img->path);
    *f = copy;
    return 0;
  }
  if (f->data_offset != copy.data_offset || f->type != copy.type ||
      f->current_size != copy.current_size ||
      f->chs_sectors != copy.chs_sectors ||
      memcmp (f->creator, copy.creator, 4) != 0 ||
      memcmp (f->uuid, copy.uuid, 16) != 0)
    return OPEN_ERROR ("%s: the VHD footer at the end of the file and its "
                       "copy at offset 0 disagree", img->path);
  return 0;
}

static bool
overlaps (uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
  return alen > 0 && blen > 0 && a < b + blen && b < a + alen;
}

static int
compare_u32 (const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;

  return x < y ? -1 : x > y;
}

/* Every stored block (bitmap and data) must be whole inside the file,
 * clear of the metadata and of every other block (a block shared by two
 * entries would make writes through one guest offset show at another).
 */
static int
check_bat (struct image *img, struct vhd *v, uint64_t data_end,
           const struct region *meta, size_t n_meta)
{
  const uint64_t stored = v->bitmap_size + (UINT64_C (1) << v->block_bits);
  uint32_t *sorted, n = 0, i;

  for (i = 0; i < v->bat_entries; ++i) {
    uint64_t start = (uint64_t) v->bat[i] * SECTOR;

    if (v->bat[i] == BAT_FREE)
      continue;
    if (start + stored > data_end)
      return OPEN_ERROR ("%s: BAT entry %" PRIu32 " points past the end of "
                         "the file (block at offset %" PRIu64 ", data ends "
                         "at %" PRIu64 ")", img->path, i, start, data_end);
    for (size_t m = 0; m < n_meta; ++m)
      if (overlaps (start, stored, meta[m].start, meta[m].length))
        return OPEN_ERROR ("%s: BAT entry %" PRIu32 " points into the %s "
                           "(offset %" PRIu64 ")", img->path, i,
                           meta[m].what, start);
    n++;
  }
  if (n < 2)
    return 0;

  sorted = malloc ((size_t) n * sizeof *sorted);
  if (sorted == NULL) {
    image_error ("%s: %m", img->path);
    return -1;
  }
  n = 0;
  for (i = 0; i < v->bat_entries; ++i)
    if (v->bat[i] != BAT_FREE)
      sorted[n++] = v->bat[i];
  qsort (sorted, n, sizeof *sorted, compare_u32);
  for (i = 1; i < n; ++i)
    if ((uint64_t) (sorted[i] - sorted[i - 1]) * SECTOR < stored) {
      uint64_t at = (uint64_t) sorted[i] * SECTOR;

      free (sorted);
      return OPEN_ERROR ("%s: two BAT entries map overlapping blocks "
                         "(offset %" PRIu64 ")", img->path, at);
    }
  free (sorted);
  return 0;
}

/* UTF-16 (len bytes) to UTF-8 in out (out_size bytes), up to the first
 * NUL; false if it is not valid UTF-16 or does not fit.
 */
static bool
utf16_to_utf8 (const uint8_t *in, size_t len, bool big_endian, char *out,
               size_t out_size)
{
  size_t o = 0;

  for (size_t i = 0; i + 1 < len; i += 2) {
    uint32_t c = big_endian ? load_be16 (&in[i])
      : (uint32_t) in[i] | (uint32_t) in[i + 1] << 8;

    if (c == 0)
      break;
    if (c >= 0xdc00 && c < 0xe000)
      return false;
    if (c >= 0xd800 && c < 0xdc00) {
      uint32_t lo;

      if (i + 3 >= len)
        return false;
      lo = big_endian ? load_be16 (&in[i + 2])
        : (uint32_t) in[i + 2] | (uint32_t) in[i + 3] << 8;
      if (lo < 0xdc00 || lo >= 0xe000)
        return false;
      c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
      i += 2;
    }
    if (o + 5 > out_size)
      return false;
    if (c < 0x80)
      out[o++] = c;
    else if (c < 0x800) {
      out[o++] = 0xc0 | c >> 6;
      out[o++] = 0x80 | (c & 0x3f);
    }
    else if (c < 0x10000) {
      out[o++] = 0xe0 | c >> 12;
      out[o++] = 0x80 | ((c >> 6) & 0x3f);
      out[o++] = 0x80 | (c & 0x3f);
    }
    else {
      out[o++] = 0xf0 | c >> 18;
      out[o++] = 0x80 | ((c >> 12) & 0x3f);
      out[o++] = 0x80 | ((c >> 6) & 0x3f);
      out[o++] = 0x80 | (c & 0x3f);
    }
  }
  if (o == 0 || o >= out_size)
    return false;
  out[o] = '\0';
  return true;
}

/* The last component of a Windows or POSIX path. */
static const char *
last_component (const char *path)
{
  const char *p = path + strlen (path);

  while (p > path && p[-1] != '\\' && p[-1] != '/')
    p--;
  return p;
}

/* A file:// URL (MacX locators) to the path it names, in place. */
static bool
url_to_path (char *url)
{
  char *p = url, *q;

  if (strncmp (p, "file://", 7) != 0)
    return false;
  p += 7;
  if (strncmp (p, "localhost/", 10) == 0)
    p += 9;
  if (*p != '/')
    return false;
  for (q = url; *p; ) {
    if (p[0] == '%' && isxdigit ((unsigned char) p[1]) &&
        isxdigit ((unsigned char) p[2])) {
      char hex[3] = { p[1], p[2], '\0' };

      *q = strtol (hex, NULL, 16);
      if (*q++ == '\0')
        return false;
      p += 3;
    }
    else
      *q++ = *p++;
  }
  *q = '\0';
  return true;
}

/* The names a differencing disk gives its parent, in the order we try
 * them: the relative Windows path, the file name of the absolute one
 * (a Windows path means nothing here, but the pair of files is often
 * copied together), the MacX path, and the file name in the header.
 * Names relative to the image's directory.
 */
#define MAX_CANDIDATES (LOCATORS + 1)

struct candidate {
  const char *how;
  char name[3 * MAX_LOCATOR / 2 + 1];
};

static int
parent_candidates (struct image *img, const uint8_t *header,
                   struct candidate *c, size_t *n)
{
  static const struct { uint32_t code; const char *how; } order[] = {
    { LOCATOR_W2RU, "W2ru" }, { LOCATOR_W2KU, "W2ku" },
    { LOCATOR_MACX, "MacX" },
  };
  uint8_t *data = NULL;

  *n = 0;
  for (size_t o = 0; o < sizeof order / sizeof order[0]; ++o) {
    for (size_t i = 0; i < LOCATORS; ++i) {
      const uint8_t *e = &header[576 + 24 * i];
      uint32_t len = load_be32 (&e[8]);
      uint64_t offset = load_be64 (&e[16]);
      struct candidate *k = &c[*n];
      bool ok;

      if (load_be32 (&e[0]) != order[o].code || len == 0)
        continue;
      /* check_locators made sure it is inside the file. */
      free (data);
      data = malloc (len);
      if (data == NULL) {
        image_error ("%s: %m", img->path);
        return -1;
      }
      if (image_read_file (img, data, len, offset, "parent locator") == -1) {
        free (data);
        return -1;
      }
      if (order[o].code == LOCATOR_MACX) {
        ok = len < sizeof k->name && memchr (data, 0, len) == NULL;
        if (ok) {
          memcpy (k->name, data, len);
          k->name[len] = '\0';
          ok = url_to_path (k->name);
        }
      }
      else
        ok = utf16_to_utf8 (data, len, false, k->name, sizeof k->name);
      if (!ok) {
        image_warning ("%s: parent locator %zu (%s) is not a valid path; "
                       "ignoring it", img->path, i, order[o].how);
        continue;
      }
      if (order[o].code == LOCATOR_W2KU)
        memmove (k->name, last_component (k->name),
                 strlen (last_component (k->name)) + 1);
      else if (order[o].code == LOCATOR_W2RU) {
        for (char *p = k->name; *p; ++p)
          if (*p == '\\')
            *p = '/';
        /* ".\base.vhd" (how Windows writes it) is "base.vhd". */
        while (strncmp (k->name, "./", 2) == 0 && k->name[2] != '\0')
          memmove (k->name, k->name + 2, strlen (k->name + 2) + 1);
      }
      k->how = order[o].how;
      ++*n;
    }
  }
  free (data);

  /* The parent's file name, UTF-16BE, in the header. */
  if (utf16_to_utf8 (&header[64], 512, true, c[*n].name,
                     sizeof c[*n].name)) {
    memmove (c[*n].name, last_component (c[*n].name),
             strlen (last_component (c[*n].name)) + 1);
    if (c[*n].name[0] != '\0') {
      c[*n].how = "parent name";
      ++*n;
    }
  }
  return 0;
}

/* Whether name (relative to dir unless absolute) exists. */
static bool
exists (const char *dir, const char *name)
{
  struct stat st;
  char *path;
  bool r;

  if (name[0] == '/')
    return stat (name, &st) == 0;
  if (asprintf (&path, "%s/%s", dir, name) == -1)
    return false;
  r = stat (path, &st) == 0;
  free (path);
  return r;
}

/* Open the parent of a differencing disk: the first name it gives that
 * exists (the backing policy decides whether it may be followed), which
 * must have the UUID the header names.
 */
static int
open_parent (struct image *img, const uint8_t *header,
             const struct image_options *opts, unsigned depth)
{
  struct candidate *c;
  char want[37], have[37], *copy = NULL, *dir;
  const uint8_t *parent_uuid = &header[40];
  const struct vhd *parent;
  size_t n, i;
  int r = -1;

  image_uuid_string (parent_uuid, false, want);
  c = calloc (MAX_CANDIDATES, sizeof *c);
  copy = strdup (img->path);
  if (c == NULL || copy == NULL) {
    image_error ("%s: %m", img->path);
    goto out;
  }
  if (parent_candidates (img, header, c, &n) == -1)
    goto out;
  if (opts->backing == BACKING_NO) {
    image_warning ("%s: parent %s%s%s{%s} is not followed (backing=no): "
                   "what this differencing disk does not store reads as "
                   "zeros", img->path, n ? "'" : "", n ? c[0].name : "",
                   n ? "' " : "", want);
    r = 0;
    goto out;
  }
  /* A remote directory cannot be looked in: the first relative name is
   * taken (the parent's own name comes last), else the first.
   */
  dir = dirname (copy);
  for (i = 0; i < n && !(img->src->remote ? c[i].name[0] != '/' :
                         exists (dir, c[i].name)); ++i)
    ;
  if (i == n && img->src->remote && n > 0)
    i = 0;
  if (i == n) {
    char tried[1024] = "";
    size_t len = 0;

    for (i = 0; i < n && len < sizeof tried; ++i)
      len += snprintf (tried + len, sizeof tried - len, "%s'%s' (%s)",
                       i ? ", " : "", c[i].name, c[i].how);
    image_error ("%s: parent {%s} of this differencing disk not found%s%s",
                 img->path, want, n ? "; it names " : " (it names none)",
                 tried);
    errno = ENOENT;
    goto out;
  }

  img->backing = image_open_relative (img->src, c[i].name, "vhd", opts,
                                      depth + 1);
  if (img->backing == NULL)
    goto out;
  parent = img->backing->priv;
  if (memcmp (parent->uuid, parent_uuid, 16) != 0) {
    image_uuid_string (parent->uuid, false, have);
    image_error ("%s: parent %s has the UUID {%s}, but this differencing "
                 "disk was made on {%s}", img->path, img->backing->path,
                 have, want);
    errno = EINVAL;
    goto out;
  }
  r = 0;

 out:
  free (c);
  free (copy);
  return r;
}

/* Parent locators are metadata: inside the file, in the list of regions
 * that blocks must keep clear of.
 */
static int
check_locators (struct image *img, const uint8_t *header, uint64_t data_end,
                struct region *meta, size_t *n_meta)
{
  for (size_t i = 0; i < LOCATORS; ++i) {
    const uint8_t *e = &header[576 + 24 * i];
    uint32_t len = load_be32 (&e[8]);
    uint64_t offset = load_be64 (&e[16]);

    if (load_be32 (&e[0]) == 0 || len == 0)
      continue;
    if (len > MAX_LOCATOR)
      return OPEN_ERROR ("%s: parent locator %zu is too long (%" PRIu32
                         " bytes)", img->path, i, len);
    if (offset > data_end || len > data_end - offset)
      return OPEN_ERROR ("%s: parent locator %zu lies past the end of the "
                         "file (offset %" PRIu64 ")", img->path, i, offset);
    meta[(*n_meta)++] = (struct region) { "parent locator", offset, len };
  }
  return 0;
}

/* The dynamic header, the BAT and, for a differencing disk, its parent. */
static int
read_dynamic (struct image *img, struct vhd *v, const struct footer *f,
              uint64_t file_size, size_t end_len,
              const struct image_options *opts, unsigned depth)
{
  const uint64_t data_end = file_size - end_len;
  uint8_t h[HEADER_SIZE];
  struct region meta[3 + LOCATORS];
  size_t n_meta = 0;
  uint64_t bat_offset, bat_bytes, needed;
  uint32_t block_size;

  if (f->data_offset < FOOTER_SIZE || f->data_offset > data_end ||
      data_end - f->data_offset < HEADER_SIZE)
    return OPEN_ERROR ("%s: VHD dynamic header offset %" PRIu64 " is "
                       "outside the file", img->path, f->data_offset);
  if (image_read_file (img, h, sizeof h, f->data_offset,
                       "VHD dynamic header") == -1)
    return -1;
  if (memcmp (h, "cxsparse", 8) != 0)
    return OPEN_ERROR ("%s: no VHD dynamic header at offset %" PRIu64,
                       img->path, f->data_offset);
  if (load_be32 (&h[36]) != checksum (h, sizeof h, 36))
    return OPEN_ERROR ("%s: VHD dynamic header checksum is wrong (stored "
                       "0x%08" PRIx32 ", computed 0x%08" PRIx32 ")",
                       img->path, load_be32 (&h[36]),
                       checksum (h, sizeof h, 36));
  if (load_be32 (&h[24]) >> 16 != 1)
    return OPEN_ERROR ("%s: VHD dynamic header version 0x%08" PRIx32
                       " is not supported", img->path, load_be32 (&h[24]));

  bat_offset = load_be64 (&h[16]);
  v->bat_entries = load_be32 (&h[28]);
  block_size = load_be32 (&h[32]);
  if (block_size < MIN_BLOCK || block_size > MAX_BLOCK ||
      (block_size & (block_size - 1)) != 0)
    return OPEN_ERROR ("%s: invalid block size %" PRIu32 " (must be a power "
                       "of two from %u bytes to %u MiB)", img->path,
                       block_size, MIN_BLOCK, MAX_BLOCK >> 20);
  v->block_bits = __builtin_ctz (block_size);
  /* A bit per sector, padded to whole sectors. */
  v->bitmap_size = ((block_size / SECTOR + 7) / 8 + SECTOR - 1)
    & ~(uint32_t) (SECTOR - 1);
  img->block_size = block_size;

  if (v->bat_entries > MAX_BAT_ENTRIES)
    return OPEN_ERROR ("%s: BAT of %" PRIu32 " entries is too large (limit "
                       "%u)", img->path, v->bat_entries, MAX_BAT_ENTRIES);
  needed = (img->size >> v->block_bits) +
    ((img->size & (block_size - 1)) != 0);
  if (needed > v->bat_entries)
    return OPEN_ERROR ("%s: disk size %" PRIu64 " needs %" PRIu64 " BAT "
                       "entries but the BAT has %" PRIu32, img->path,
                       img->size, needed, v->bat_entries);
  bat_bytes = (uint64_t) v->bat_entries * 4;
  if (bat_offset > data_end || bat_bytes > data_end - bat_offset)
    return OPEN_ERROR ("%s: BAT (offset %" PRIu64 ", %" PRIu32 " entries) "
                       "extends past the end of the file", img->path,
                       bat_offset, v->bat_entries);

  meta[n_meta++] = (struct region) { "footer copy", 0, FOOTER_SIZE };
  meta[n_meta++] = (struct region) { "dynamic header", f->data_offset,
                                     HEADER_SIZE };
  if (overlaps (bat_offset, bat_bytes, 0, FOOTER_SIZE) ||
      overlaps (bat_offset, bat_bytes, f->data_offset, HEADER_SIZE))
    return OPEN_ERROR ("%s: BAT (offset %" PRIu64 ") overlaps the footer "
                       "copy or the dynamic header", img->path, bat_offset);
  meta[n_meta++] = (struct region) { "BAT", bat_offset, bat_bytes };
  if (f->type == TYPE_DIFFERENCING &&
      check_locators (img, h, data_end, meta, &n_meta) == -1)
    return -1;

  v->bat = malloc (bat_bytes + 4);
  if (v->bat == NULL) {
    image_error ("%s: %m", img->path);
    return -1;
  }
  if (image_read_file (img, v->bat, bat_bytes, bat_offset, "BAT") == -1)
    return -1;
  for (uint32_t i = 0; i < v->bat_entries; ++i)
    v->bat[i] = be32toh (v->bat[i]);
  if (check_bat (img, v, data_end, meta, n_meta) == -1)
    return -1;

  if (f->type == TYPE_DIFFERENCING)
    return open_parent (img, h, opts, depth);
  return 0;
}

static int
vhd_parse (struct image *img, struct vhd *v,
           const struct image_options *opts, unsigned depth)
{
  struct footer f;
  uint64_t file_size;
  size_t end_len;

  file_size = img->src->size;
  if (read_footer (img, file_size, &f, &end_len) == -1)
    return -1;
  v->type = f.type;
  memcpy (v->uuid, f.uuid, 16);
  img->size = disk_size (&f);
  if (img->size > INT64_MAX)
    return OPEN_ERROR ("%s: virtual size %" PRIu64 " is too large",
                       img->path, img->size);

  switch (f.type) {
  case TYPE_FIXED:
    img->subformat = "fixed";
    /* The disk's bytes come first, the footer after them. */
    if (img->size > file_size - end_len)
      return OPEN_ERROR ("%s: fixed VHD of %" PRIu64 " bytes does not fit "
                         "the file before its footer (%" PRIu64 " bytes)",
                         img->path, img->size, file_size - end_len);
    img->block_size = 4096;
    return 0;
  case TYPE_DYNAMIC:
  case TYPE_DIFFERENCING:
    img->subformat = f.type == TYPE_DYNAMIC ? "dynamic" : "differencing";
    return read_dynamic (img, v, &f, file_size, end_len, opts, depth);
  default:
    return OPEN_ERROR ("%s: unknown VHD disk type %" PRIu32, img->path,
                       f.type);
  }
}

static struct image *
vhd_open (const char *path, struct source *src,
          const struct image_options *opts, unsigned depth)
{
  struct image *img = image_alloc (&vhd_ops, path, src, sizeof (struct vhd));

  if (img == NULL)
    return NULL;
  if (vhd_parse (img, img->priv, opts, depth) == -1)
    return image_open_failed (img);
  return img;
}

/* One sector of a block's bitmap (the bits of 4096 sectors), kept in the
 * map state across the calls of one request.
 */
struct bitmap_window {
  uint64_t key;                 /* 0: empty; else 1 + block << 32 | sector */
  uint8_t bits[SECTOR];
};
_Static_assert (sizeof (struct bitmap_window) <=
                sizeof (struct image_map_state),
                "the bitmap window must fit in the map state");

#define SECTORS_PER_BITMAP_SECTOR (SECTOR * 8)

static int
bit (const uint8_t *bits, uint64_t i)
{
  return bits[i / 8] >> (7 - i % 8) & 1;
}

/* In a differencing disk's stored block (bitmap at host), the run of
 * sectors with the bit of sector s, within its bitmap sector.
 */
static int
bitmap_run (struct image *img, struct bitmap_window *w, uint64_t block,
            uint64_t host, uint64_t s, bool *set, uint64_t *sectors)
{
  const uint64_t bitmap_sector = s / SECTORS_PER_BITMAP_SECTOR;
  const uint64_t key = 1 + (block << 32 | bitmap_sector);
  uint64_t i = s % SECTORS_PER_BITMAP_SECTOR, j;

  if (w->key != key) {
    w->key = 0;
    if (image_read_file (img, w->bits, SECTOR, host + bitmap_sector * SECTOR,
                         "sector bitmap") == -1)
      return -1;
    w->key = key;
  }
  *set = bit (w->bits, i);
  /* Whole bytes of the same bit at once. */
  for (j = i + 1; j < SECTORS_PER_BITMAP_SECTOR; ) {
    if (j % 8 == 0 && w->bits[j / 8] == (*set ? 0xff : 0x00))
      j += 8;
    else if (bit (w->bits, j) == *set)
      j++;
    else
      break;
  }
  *sectors = j - i;
  return 0;
}

/* A run of BAT_FREE entries joins up to this many blocks: the BAT is in
 * memory, but a map call must be bounded work.
 */
#define MAP_MAX_BLOCKS 65536

static int
vhd_map (struct image *img, struct image_map_state *state, uint64_t offset,
         uint64_t end, bool for_extents, struct image_run *run)
{
  const struct vhd *v = img->priv;
  const uint64_t block_size = UINT64_C (1) << v->block_bits;
  const uint64_t block = offset >> v->block_bits;
  const uint64_t within = offset & (block_size - 1);
  uint64_t host, len = block_size - within;

  if (v->type == TYPE_FIXED) {
    *run = (struct image_run) {
      .kind = IMAGE_RUN_DATA, .host = offset, .length = end - offset,
    };
    return 0;
  }

  /* open checked that the BAT covers the disk. */
  if (v->bat[block] == BAT_FREE) {
    for (uint32_t n = 1; n < MAP_MAX_BLOCKS && len < end - offset &&
           v->bat[block + n] == BAT_FREE; ++n)
      len += block_size;
    *run = (struct image_run) { .kind = IMAGE_RUN_BACKING, .length = len };
  }
  else {
    host = (uint64_t) v->bat[block] * SECTOR;
    *run = (struct image_run) {
      .kind = IMAGE_RUN_DATA, .host = host + v->bitmap_size + within,
      .length = len,
    };
    if (v->type == TYPE_DIFFERENCING) {
      bool set;
      uint64_t sectors;

      if (bitmap_run (img, (struct bitmap_window *) state->words, block,
                      host, within / SECTOR, &set, &sectors) == -1)
        return -1;
      if (!set)
        run->kind = IMAGE_RUN_BACKING;
      if (sectors * SECTOR - within % SECTOR < len)
        run->length = sectors * SECTOR - within % SECTOR;
    }
  }
  if (run->length > end - offset)
    run->length = end - offset;
  return 0;
}

static void
vhd_close (struct image *img)
{
  struct vhd *v = img->priv;

  free (v->bat);
}

const struct image_ops vhd_ops = {
  .name = "vhd",
  .probe = vhd_probe,
  .open = vhd_open,
  .map = vhd_map,
  .close = vhd_close,
};
