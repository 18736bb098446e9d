/* SPDX-License-Identifier: BSD-3-Clause */
/* raw: the file (or block device) is the disk.  Matches anything, so it
 * is probed last.
 */

#include <config.h>

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"
#include "source.h"

static bool
raw_probe (struct source *src, const uint8_t *buf, size_t len)
{
  return true;
}

static struct image *
raw_open (const char *path, struct source *src,
          const struct image_options *opts, unsigned depth)
{
  struct image *img = image_alloc (&raw_ops, path, src, 0);

  if (img == NULL)
    return NULL;
  img->size = src->size;
  img->block_size = 4096;
  return img;
}

/* The whole rest of the request is data, as the file holds it.  For
 * extents, the holes of a sparse file, from SEEK_DATA/SEEK_HOLE; only the
 * return value of lseek is used, never the file position, so concurrent
 * calls cannot disturb each other or the preads.
 */
static int
raw_map (struct image *img, struct image_map_state *state, uint64_t offset,
         uint64_t end, bool for_extents, struct image_run *run)
{
  struct stat st;
  off_t data, hole;
  uint64_t next;

  *run = (struct image_run) {
    .kind = IMAGE_RUN_DATA, .host = offset, .length = end - offset,
  };
  if (!for_extents || img->src->remote || fstat (img->src->fd, &st) == -1 ||
      !S_ISREG (st.st_mode))
    return 0;

  data = lseek (img->src->fd, offset, SEEK_DATA);
  if (data == -1 && errno != ENXIO) /* no SEEK_DATA here: all data */
    return 0;
  if (data == -1 || (uint64_t) data > offset) {
    next = data == -1 ? end : (uint64_t) data;
    run->kind = IMAGE_RUN_ZERO;
    run->hole = true;
  }
  else {
    hole = lseek (img->src->fd, offset, SEEK_HOLE);
    next = hole == -1 ? end : (uint64_t) hole;
  }
  if (next > offset && next < end)  /* else the file changed under us */
    run->length = next - offset;
  return 0;
}

const struct image_ops raw_ops = {
  .name = "raw",
  .probe = raw_probe,
  .open = raw_open,
  .map = raw_map,
};
