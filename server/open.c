/* SPDX-License-Identifier: BSD-3-Clause */
/* Opening an image for the command: the image layer decodes it, and we
 * choose the exit status of the failure class (missing, unreadable,
 * unknown format, refused).
 *
 * The image layer matches any file as raw, so an image in a format it
 * does not decode (QED...) would be served as a meaningless raw
 * disk.  Unless the user forced a format, we look for the magic of the
 * common ones and say what the file is instead.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qemount.h"
#include "source.h"

bool
format_is_known (const char *format)
{
  if (strcmp (format, "auto") == 0 || strcmp (format, "parallels") == 0 ||
      strcmp (format, "vpc") == 0)
    return true;
  for (size_t i = 0; image_formats[i] != NULL; ++i)
    if (strcmp (image_formats[i]->name, format) == 0)
      return true;
  return false;
}

/* "raw, qcow2, ploop", from the image layer's list. */
static const char *
known_formats (void)
{
  static char list[128];
  size_t len = 0;

  for (size_t i = 0; image_formats[i] != NULL && len < sizeof list; ++i)
    len += snprintf (list + len, sizeof list - len, "%s%s",
                     i ? ", " : "", image_formats[i]->name);
  return list;
}

/* Returns NULL if value is valid, else the error message. */
const char *
parse_backing (const char *value, enum backing_policy *policy)
{
  if (strcmp (value, "samedir") == 0)
    *policy = BACKING_SAME_DIR;
  else if (strcmp (value, "yes") == 0)
    *policy = BACKING_YES;
  else if (strcmp (value, "no") == 0)
    *policy = BACKING_NO;
  else
    return "--backing must be yes, no or samedir";
  return NULL;
}

/* Formats we recognize but do not decode. */
static const struct {
  size_t offset;
  const char *magic;
  size_t len;
  const char *name;
} foreign[] = {
  { 0, "QED\0", 4, "a QED image" },
  { 0, "encrcdsa", 8, "an encrypted DMG (decrypt it first)" },
  { 0, "\xfd" "7zXZ\0", 6, "xz-compressed (decompress it first)" },
  { 0, "\x1f\x8b", 2, "gzip-compressed (decompress it first)" },
  { 0, "\x28\xb5\x2f\xfd", 4, "zstd-compressed (decompress it first)" },
};

static const char *
foreign_format (struct image *img)
{
  uint8_t buf[512];
  size_t len = img->size < sizeof buf ? img->size : sizeof buf;

  if (image_pread (img, buf, len, 0) == -1)
    return NULL;
  for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; ++i)
    if (foreign[i].offset + foreign[i].len <= len &&
        memcmp (buf + foreign[i].offset, foreign[i].magic,
                foreign[i].len) == 0)
      return foreign[i].name;
  return NULL;
}

struct image *
open_image (const struct image_request *req, int *status)
{
  struct image_options opts = {
    .format = req->format, .backing = req->backing, .readonly = true,
    .snapshot = req->snapshot,
  };
  struct image *img;
  const char *what;
  int fd;

  if (req->format && !format_is_known (req->format)) {
    errorf ("unknown format '%s' (qemount decodes %s)", req->format,
            known_formats ());
    *status = EXIT_UNKNOWN_FORMAT;
    return NULL;
  }

  if (req->cache_dir && source_cache_dir_prepare (req->cache_dir) == -1) {
    *status = EXIT_ERROR;
    return NULL;
  }
  source_configure (&(struct source_settings) {
      .cache_dir = req->cache_dir, .timeout = req->timeout });

  /* The two commonest mistakes get their own status; the image layer
   * reports everything else.  What is not an image file (a directory,
   * a FIFO, a character device) it refuses as a bad image.  A URL is
   * looked at once, by the image layer.
   */
  if (!source_is_url (req->path)) {
    fd = image_open_file (req->path, O_RDONLY);
    if (fd == -1) {
      *status = errno == ENOENT || errno == ENOTDIR ? EXIT_NO_IMAGE :
        errno == EACCES || errno == EPERM ? EXIT_UNREADABLE :
        errno == EINVAL ? EXIT_BAD_IMAGE : EXIT_ERROR;
      return NULL;
    }
    close (fd);
  }

  img = image_open (req->path, &opts);
  if (img == NULL) {
    /* A file further down the chain may be missing or unreadable; a
     * server that does not answer says nothing about the image.
     */
    *status = req->snapshot && errno == ENXIO ? EXIT_NO_SNAPSHOT :
      errno == ENOENT ? EXIT_NO_IMAGE :
      errno == EACCES ? EXIT_UNREADABLE :
      errno == EIO && source_is_url (req->path) ? EXIT_ERROR : EXIT_BAD_IMAGE;
    return NULL;
  }

  if (img->ops == &raw_ops && req->format == NULL &&
      (what = foreign_format (img)) != NULL) {
    errorf ("%s: unknown format: the file is %s, which qemount does not "
            "decode (it decodes %s; --format raw reads it as a raw disk "
            "anyway)", img->path, what, known_formats ());
    image_close (img);
    *status = EXIT_UNKNOWN_FORMAT;
    return NULL;
  }
  if (req->overlay) {
    struct image *top = overlay_open (img, req->overlay, true);
    if (top == NULL) {
      /* The image is fine; an overlay of another image is a mistake of
       * the command line, as nbdkit refusing it used to say.
       */
      image_close (img);
      *status = errno == ENOENT ? EXIT_NO_IMAGE :
        errno == EACCES ? EXIT_UNREADABLE : EXIT_ERROR;
      return NULL;
    }
    img = top;
  }
  *status = EXIT_OK;
  return img;
}
