/* SPDX-License-Identifier: BSD-3-Clause */
/* VDI (VirtualBox), read-only.
 *
 * A 64-byte text banner, the signature 0xBEDA107F at 0x40, the header
 * version, then the header: version 1.x (what VirtualBox and QEMU write)
 * has its own size and the offsets of the block map and the data; the old
 * version 0.2 has neither, its map and data follow the header.  The block
 * map has one u32 per block: the index of the stored block in the data
 * area, 0xFFFFFFFF for a free block (zeros, or the parent's data in a
 * differencing image) or 0xFFFFFFFE for a zero block.  Each stored block
 * is "extra" bytes of private data followed by the block itself.
 *
 * A differencing image names its parent by UUID only (VirtualBox keeps
 * the file name in its own media registry): we look for the VDI file
 * whose creation UUID it is in the image's directory, and with
 * backing=yes also one directory up, where VirtualBox keeps the base
 * image of the differencing images in a VM's Snapshots/ directory.
 */

#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

#define VDI_SIGNATURE       0xbeda107fu
#define VDI_PREHEADER_SIZE  72          /* banner, signature, version */
#define VDI_V0_HEADER_SIZE  348
#define VDI_V1_HEADER_SIZE  384         /* 1.x without the LCHS geometry */
#define VDI_HEADER_READ     512

#define VDI_TYPE_NORMAL     1           /* dynamic */
#define VDI_TYPE_FIXED      2           /* static */
#define VDI_TYPE_UNDO       3
#define VDI_TYPE_DIFF       4

#define BLOCK_FREE          0xffffffffu
#define BLOCK_ZERO          0xfffffffeu

/* Bounds that keep a hostile header from making us allocate or compute
 * beyond reason: VirtualBox writes 1 MiB blocks and a map of a few
 * thousand entries.
 */
#define VDI_MIN_BLOCK       512u
#define VDI_MAX_BLOCK       (256u << 20)
#define VDI_MAX_BLOCKS      (64u << 20)

/* How many directory entries the search for a parent looks at. */
#define MAX_SCAN_ENTRIES    4096

/* The header fields of every version, in host byte order. */
struct vdi_header {
  unsigned major, minor;
  uint32_t header_size;         /* 1.x only */
  uint32_t type;
  uint64_t disk_size;
  uint32_t block_size, extra;
  uint32_t blocks, allocated;
  uint64_t map_offset, data_offset;
  uint8_t uuid[16], modify_uuid[16], parent_uuid[16];
  uint8_t parent_modify_uuid[16];       /* 1.x only, else zeros */
};

struct vdi {
  uint32_t *map;                /* host order */
  uint32_t blocks;
  unsigned block_bits;
  uint64_t data_offset;         /* of the first stored block's data */
  uint64_t stride;              /* bytes per stored block, extra included */
  uint8_t uuid[16], modify_uuid[16];
};

#define OPEN_ERROR(...) (image_error (__VA_ARGS__), errno = EINVAL, -1)

static const uint8_t null_uuid[16];

/* Decode the header in buf (len bytes from the start of a file) if it
 * is a VDI header of a version VirtualBox reads (0.2 and 1.x); no other
 * check.  Used for the image and for the candidates for its parent.
 */
static bool
decode_header (const uint8_t *buf, size_t len, struct vdi_header *h)
{
  uint32_t version;

  memset (h, 0, sizeof *h);
  if (len < VDI_PREHEADER_SIZE || load_le32 (&buf[0x40]) != VDI_SIGNATURE)
    return false;
  version = load_le32 (&buf[0x44]);
  h->major = version >> 16;
  h->minor = version & 0xffff;

  if (h->major == 0 && h->minor == 2) {
    if (len < VDI_PREHEADER_SIZE + VDI_V0_HEADER_SIZE)
      return false;
    h->type = load_le32 (&buf[0x48]);
    h->disk_size = load_le64 (&buf[0x160]);
    h->block_size = load_le32 (&buf[0x168]);
    h->blocks = load_le32 (&buf[0x16c]);
    h->allocated = load_le32 (&buf[0x170]);
    memcpy (h->uuid, &buf[0x174], 16);
    memcpy (h->modify_uuid, &buf[0x184], 16);
    memcpy (h->parent_uuid, &buf[0x194], 16);
    /* No offsets in the header: the map follows it, the data the map. */
    h->map_offset = VDI_PREHEADER_SIZE + VDI_V0_HEADER_SIZE;
    h->data_offset = h->map_offset + (uint64_t) h->blocks * 4;
    return true;
  }
  if (h->major == 1) {
    if (len < VDI_PREHEADER_SIZE + VDI_V1_HEADER_SIZE)
      return false;
    h->header_size = load_le32 (&buf[0x48]);
    h->type = load_le32 (&buf[0x4c]);
    h->map_offset = load_le32 (&buf[0x154]);
    h->data_offset = load_le32 (&buf[0x158]);
    h->disk_size = load_le64 (&buf[0x170]);
    h->block_size = load_le32 (&buf[0x178]);
    h->extra = load_le32 (&buf[0x17c]);
    h->blocks = load_le32 (&buf[0x180]);
    h->allocated = load_le32 (&buf[0x184]);
    memcpy (h->uuid, &buf[0x188], 16);
    memcpy (h->modify_uuid, &buf[0x198], 16);
    memcpy (h->parent_uuid, &buf[0x1a8], 16);
    memcpy (h->parent_modify_uuid, &buf[0x1b8], 16);
    return true;
  }
  return false;
}

static bool
vdi_probe (struct source *src, const uint8_t *buf, size_t len)
{
  return len >= 0x44 && load_le32 (&buf[0x40]) == VDI_SIGNATURE;
}

static bool
is_power_of_two (uint32_t x)
{
  return x != 0 && (x & (x - 1)) == 0;
}

/* Check every header field the reading depends on, against the rules
 * of the format and the file size.
 */
static int
check_header (struct image *img, const struct vdi_header *h,
              uint64_t file_size)
{
  uint64_t map_end;

  if (h->major == 1 && h->header_size < VDI_V1_HEADER_SIZE)
    return OPEN_ERROR ("%s: VDI header size %" PRIu32 " is too small (at "
                       "least %d bytes)", img->path, h->header_size,
                       VDI_V1_HEADER_SIZE);
  switch (h->type) {
  case VDI_TYPE_NORMAL:
    img->subformat = "dynamic";
    break;
  case VDI_TYPE_FIXED:
    img->subformat = "static";
    break;
  case VDI_TYPE_DIFF:
    img->subformat = "differencing";
    break;
  case VDI_TYPE_UNDO:
    return OPEN_ERROR ("%s: VDI undo images (type 3) are not supported",
                       img->path);
  default:
    return OPEN_ERROR ("%s: unknown VDI image type %" PRIu32, img->path,
                       h->type);
  }
  if (!is_power_of_two (h->block_size) || h->block_size < VDI_MIN_BLOCK ||
      h->block_size > VDI_MAX_BLOCK)
    return OPEN_ERROR ("%s: invalid block size %" PRIu32 " (must be a power "
                       "of two from %u bytes to %u MiB)", img->path,
                       h->block_size, VDI_MIN_BLOCK, VDI_MAX_BLOCK >> 20);
  if (h->extra != 0 &&
      (!is_power_of_two (h->extra) || h->extra > VDI_MAX_BLOCK))
    return OPEN_ERROR ("%s: invalid block extra data size %" PRIu32
                       " (must be 0 or a power of two up to %u MiB)",
                       img->path, h->extra, VDI_MAX_BLOCK >> 20);
  if (h->blocks == 0 || h->blocks > VDI_MAX_BLOCKS)
    return OPEN_ERROR ("%s: block map of %" PRIu32 " entries is empty or "
                       "too large (limit %u)", img->path, h->blocks,
                       VDI_MAX_BLOCKS);
  if (h->disk_size == 0 ||
      h->disk_size > (uint64_t) h->blocks * h->block_size)
    return OPEN_ERROR ("%s: disk size %" PRIu64 " does not fit the block map "
                       "(%" PRIu32 " blocks of %" PRIu32 " bytes)", img->path,
                       h->disk_size, h->blocks, h->block_size);
  if (h->allocated > h->blocks)
    return OPEN_ERROR ("%s: header says %" PRIu32 " blocks are allocated, "
                       "more than the %" PRIu32 " the disk has", img->path,
                       h->allocated, h->blocks);
  if (h->map_offset < VDI_PREHEADER_SIZE + VDI_V1_HEADER_SIZE &&
      h->major == 1)
    return OPEN_ERROR ("%s: block map offset %" PRIu64 " overlaps the "
                       "header", img->path, h->map_offset);
  map_end = h->map_offset + (uint64_t) h->blocks * 4;
  if (map_end > file_size)
    return OPEN_ERROR ("%s: block map of %" PRIu32 " entries at offset %"
                       PRIu64 " extends past the end of the file (truncated "
                       "image?)", img->path, h->blocks, h->map_offset);
  if (h->data_offset < map_end)
    return OPEN_ERROR ("%s: data offset %" PRIu64 " overlaps the block map "
                       "(which ends at %" PRIu64 ")", img->path,
                       h->data_offset, map_end);
  if (memcmp (h->uuid, null_uuid, 16) == 0)
    return OPEN_ERROR ("%s: the image's UUID is null", img->path);
  if (h->type == VDI_TYPE_DIFF && memcmp (h->parent_uuid, null_uuid, 16) == 0)
    return OPEN_ERROR ("%s: differencing image with a null parent UUID",
                       img->path);
  return 0;
}

static int
compare_u32 (const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;

  return x < y ? -1 : x > y;
}

/* Every stored block must be whole inside the file, and no two map
 * entries may name the same stored block (one guest block would change
 * with another).
 */
static int
check_map (struct image *img, struct vdi *v, uint64_t file_size)
{
  const uint64_t block_size = UINT64_C (1) << v->block_bits;
  uint32_t *sorted, n = 0, i;

  for (i = 0; i < v->blocks; ++i) {
    uint32_t e = v->map[i];

    if (e >= BLOCK_ZERO)
      continue;
    if (v->data_offset + e * v->stride + block_size > file_size)
      return OPEN_ERROR ("%s: block map entry %" PRIu32 " points past the "
                         "end of the file (stored block %" PRIu32 ")",
                         img->path, i, e);
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
  for (i = 0; i < v->blocks; ++i)
    if (v->map[i] < BLOCK_ZERO)
      sorted[n++] = v->map[i];
  qsort (sorted, n, sizeof *sorted, compare_u32);
  for (i = 1; i < n; ++i)
    if (sorted[i] == sorted[i - 1]) {
      uint32_t stored = sorted[i];

      free (sorted);
      return OPEN_ERROR ("%s: two block map entries point at the same "
                         "stored block %" PRIu32, img->path, stored);
    }
  free (sorted);
  return 0;
}

/* The creation UUID of the VDI file name in directory dir_fd, if it is a
 * regular file holding a VDI header; its device and inode in *st.
 */
static bool
candidate_uuid (int dir_fd, const char *name, uint8_t uuid[16],
                struct stat *st)
{
  uint8_t buf[VDI_HEADER_READ];
  struct vdi_header h;
  ssize_t len;
  int fd;

  /* O_NONBLOCK: a FIFO put there must not hang the search. */
  fd = openat (dir_fd, name, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd == -1)
    return false;
  if (fstat (fd, st) == -1 || !S_ISREG (st->st_mode)) {
    close (fd);
    return false;
  }
  len = pread (fd, buf, sizeof buf, 0);
  close (fd);
  if (len <= 0 || !decode_header (buf, len, &h))
    return false;
  memcpy (uuid, h.uuid, 16);
  return true;
}

/* Look in directory prefix ("" for the image's own, "../" for the one
 * above) of the image for VDI files with creation UUID uuid, other than
 * the image itself.  The first match goes into *found (malloc'd, a name
 * relative to the image's directory); a second distinct file is an
 * error, as VirtualBox would refuse two images with one UUID.
 */
static int
scan_dir (struct image *img, const char *prefix, const uint8_t uuid[16],
          char **found, struct stat *found_st, bool *truncated)
{
  struct stat self, st;
  char *copy, *path;
  unsigned seen = 0;
  struct dirent *d;
  DIR *dp;
  int r = 0;

  if (fstat (img->src->fd, &self) == -1)
    return 0;
  copy = strdup (img->path);
  if (copy == NULL || asprintf (&path, "%s/%s.", dirname (copy), prefix) == -1) {
    free (copy);
    image_error ("%s: %m", img->path);
    return -1;
  }
  free (copy);
  dp = opendir (path);
  free (path);
  if (dp == NULL)
    return 0;

  while ((d = readdir (dp)) != NULL) {
    uint8_t u[16];

    if (strcmp (d->d_name, ".") == 0 || strcmp (d->d_name, "..") == 0)
      continue;
    if (++seen > MAX_SCAN_ENTRIES) {
      *truncated = true;
      break;
    }
    if (!candidate_uuid (dirfd (dp), d->d_name, u, &st) ||
        memcmp (u, uuid, 16) != 0 ||
        (st.st_dev == self.st_dev && st.st_ino == self.st_ino))
      continue;
    if (*found != NULL) {
      if (st.st_dev == found_st->st_dev && st.st_ino == found_st->st_ino)
        continue;               /* a hard link to the same file */
      image_error ("%s: both %s and %s%s have the parent's UUID; remove "
                   "or move one of them", img->path, *found, prefix,
                   d->d_name);
      errno = EINVAL;
      r = -1;
      break;
    }
    if (asprintf (found, "%s%s", prefix, d->d_name) == -1) {
      *found = NULL;
      image_error ("%s: %m", img->path);
      r = -1;
      break;
    }
    *found_st = st;
  }
  closedir (dp);
  return r;
}

/* Find and open the parent of a differencing image (see the top of the
 * file), and check that it is the one the image was made on.
 */
static int
open_parent (struct image *img, const struct vdi_header *h,
             const struct image_options *opts, unsigned depth)
{
  char want[37], *name = NULL;
  struct stat st;
  bool truncated = false;
  const struct vdi *parent;

  image_uuid_string (h->parent_uuid, true, want);
  if (opts->backing == BACKING_NO) {
    image_warning ("%s: parent image {%s} is not looked for (backing=no): "
                   "blocks this image does not store read as zeros",
                   img->path, want);
    return 0;
  }
  if (img->src->remote) {
    image_error ("%s: this differencing image names its parent {%s} by "
                 "UUID, which is looked for in a local directory only: "
                 "copy the images, or use backing=no", img->path, want);
    errno = EPERM;
    return -1;
  }
  if (scan_dir (img, "", h->parent_uuid, &name, &st, &truncated) == -1 ||
      (opts->backing == BACKING_YES &&
       scan_dir (img, "../", h->parent_uuid, &name, &st, &truncated) == -1)) {
    free (name);
    return -1;
  }
  if (name == NULL) {
    image_error ("%s: parent image {%s} not found: no VDI file with that "
                 "UUID in the image's directory%s%s", img->path, want,
                 opts->backing == BACKING_YES ? " or the one above it"
                 : " (use backing=yes to also look one directory up, where "
                 "VirtualBox keeps the base of Snapshots/)",
                 truncated ? " (only the first 4096 entries of a directory "
                 "are looked at)" : "");
    errno = ENOENT;
    return -1;
  }

  img->backing = image_open_relative (img->src, name, "vdi", opts,
                                      depth + 1);
  if (img->backing == NULL) {
    free (name);
    return -1;
  }
  /* The file may have been replaced since it was looked at. */
  parent = img->backing->priv;
  if (memcmp (parent->uuid, h->parent_uuid, 16) != 0) {
    image_error ("%s: parent %s does not have the UUID {%s} any more",
                 img->path, name, want);
    free (name);
    errno = EINVAL;
    return -1;
  }
  if (memcmp (h->parent_modify_uuid, null_uuid, 16) != 0 &&
      memcmp (h->parent_modify_uuid, parent->modify_uuid, 16) != 0)
    image_warning ("%s: parent %s was changed after this differencing "
                   "image was made on it (its modification UUID differs); "
                   "reading it anyway", img->path, name);
  free (name);
  return 0;
}

static int
vdi_parse (struct image *img, struct vdi *v,
           const struct image_options *opts, unsigned depth)
{
  uint8_t buf[VDI_HEADER_READ];
  struct vdi_header h;
  uint64_t file_size;
  size_t len;

  file_size = img->src->size;
  len = file_size < sizeof buf ? file_size : sizeof buf;
  if (image_read_file (img, buf, len, 0, "VDI header") == -1)
    return -1;
  if (len < 0x48 || load_le32 (&buf[0x40]) != VDI_SIGNATURE)
    return OPEN_ERROR ("%s: not a VDI image (no VDI signature)", img->path);
  if (!decode_header (buf, len, &h)) {
    if (h.major == 1 || (h.major == 0 && h.minor == 2))
      return OPEN_ERROR ("%s: file is too short for a VDI header",
                         img->path);
    return OPEN_ERROR ("%s: VDI version %u.%u is not supported (VirtualBox "
                       "writes 1.1; versions 0.2 and 1.x are read)",
                       img->path, h.major, h.minor);
  }
  if (check_header (img, &h, file_size) == -1)
    return -1;

  v->blocks = h.blocks;
  v->block_bits = __builtin_ctz (h.block_size);
  v->stride = (uint64_t) h.extra + h.block_size;
  v->data_offset = h.data_offset + h.extra;
  memcpy (v->uuid, h.uuid, 16);
  memcpy (v->modify_uuid, h.modify_uuid, 16);
  /* QEMU serves whole sectors only; so do we. */
  img->size = h.disk_size & ~UINT64_C (511);
  img->block_size = h.block_size;

  v->map = malloc ((size_t) v->blocks * 4);
  if (v->map == NULL) {
    image_error ("%s: %m", img->path);
    return -1;
  }
  if (image_read_file (img, v->map, (size_t) v->blocks * 4, h.map_offset,
                       "block map") == -1)
    return -1;
  for (uint32_t i = 0; i < v->blocks; ++i)
    v->map[i] = le32toh (v->map[i]);
  if (check_map (img, v, file_size) == -1)
    return -1;

  if (h.type == VDI_TYPE_DIFF)
    return open_parent (img, &h, opts, depth);
  return 0;
}

static struct image *
vdi_open (const char *path, struct source *src,
          const struct image_options *opts, unsigned depth)
{
  struct image *img = image_alloc (&vdi_ops, path, src, sizeof (struct vdi));

  if (img == NULL)
    return NULL;
  if (vdi_parse (img, img->priv, opts, depth) == -1)
    return image_open_failed (img);
  return img;
}

/* A run joins following blocks of the same kind, data only while the
 * stored blocks follow each other in the file, up to this many: the map
 * is in memory, but a map call must be bounded work.
 */
#define MAP_MAX_BLOCKS 65536

static enum image_run_kind
entry_kind (uint32_t e)
{
  return e == BLOCK_FREE ? IMAGE_RUN_BACKING
    : e == BLOCK_ZERO ? IMAGE_RUN_ZERO : IMAGE_RUN_DATA;
}

static int
vdi_map (struct image *img, struct image_map_state *state, uint64_t offset,
         uint64_t end, bool for_extents, struct image_run *run)
{
  const struct vdi *v = img->priv;
  const uint64_t block_size = UINT64_C (1) << v->block_bits;
  const uint64_t block = offset >> v->block_bits;
  const uint64_t within = offset & (block_size - 1);
  const uint32_t e = v->map[block];
  const enum image_run_kind kind = entry_kind (e);
  uint64_t len = block_size - within;

  /* offset < end <= size <= blocks * block_size: every block looked at
   * is in the map.
   */
  for (uint32_t n = 1; n < MAP_MAX_BLOCKS && len < end - offset; ++n) {
    uint32_t next = v->map[block + n];

    if (entry_kind (next) != kind ||
        (kind == IMAGE_RUN_DATA &&
         (next != e + n || v->stride != block_size)))
      break;
    len += block_size;
  }
  *run = (struct image_run) {
    .kind = kind,
    .hole = kind == IMAGE_RUN_ZERO,
    .host = kind == IMAGE_RUN_DATA ? v->data_offset + e * v->stride + within
                                   : 0,
    .length = len < end - offset ? len : end - offset,
  };
  return 0;
}

static void
vdi_close (struct image *img)
{
  struct vdi *v = img->priv;

  free (v->map);
}

const struct image_ops vdi_ops = {
  .name = "vdi",
  .probe = vdi_probe,
  .open = vdi_open,
  .map = vdi_map,
  .close = vdi_close,
};
