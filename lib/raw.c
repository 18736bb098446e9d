/* raw: the file (or block device) is the disk.  Matches anything, so it
 * is probed last.
 */

#include <config.h>

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"

static bool
raw_probe (int fd, const uint8_t *buf, size_t len)
{
  return true;
}

static struct image *
raw_open (const char *path, int fd, const struct image_options *opts,
          unsigned depth)
{
  struct image *img = image_alloc (&raw_ops, path, fd, 0);

  if (img == NULL)
    return NULL;
  if (image_file_size (fd, path, &img->size) == -1) {
    image_close (img);
    return NULL;
  }
  img->block_size = 4096;
  return img;
}

static int
raw_pread (struct image *img, void *buf, size_t count, uint64_t offset)
{
  return image_read_file (img, buf, count, offset, "data");
}

/* Holes of sparse files, from SEEK_DATA/SEEK_HOLE.  Only the return
 * value of lseek is used, never the file position, so concurrent calls
 * cannot disturb each other or the preads.
 */
static int
raw_extents (struct image *img, uint64_t offset, uint64_t length,
             image_extent_fn fn, void *opaque)
{
  const uint64_t end = offset + length;
  struct stat st;

  if (fstat (img->fd, &st) == -1 || !S_ISREG (st.st_mode))
    return fn (opaque, offset, length, 0) == -1 ? -1 : 0;

  while (offset < end) {
    off_t data = lseek (img->fd, offset, SEEK_DATA);
    uint64_t next;
    uint32_t flags;
    int r;

    if (data == -1 && errno != ENXIO) /* no SEEK_DATA here: all data */
      return fn (opaque, offset, end - offset, 0) == -1 ? -1 : 0;
    if (data == -1 || (uint64_t) data > offset) {
      next = data == -1 ? end : (uint64_t) data;
      flags = IMAGE_EXTENT_HOLE | IMAGE_EXTENT_ZERO;
    }
    else {
      off_t hole = lseek (img->fd, offset, SEEK_HOLE);
      next = hole == -1 ? end : (uint64_t) hole;
      flags = 0;
    }
    if (next > end)
      next = end;
    if (next <= offset)         /* file changed under us: stop here */
      next = end;
    r = fn (opaque, offset, next - offset, flags);
    if (r != 0)
      return r == -1 ? -1 : 0;
    offset = next;
  }
  return 0;
}

const struct image_ops raw_ops = {
  .name = "raw",
  .probe = raw_probe,
  .open = raw_open,
  .pread = raw_pread,
  .extents = raw_extents,
};
