/* SPDX-License-Identifier: BSD-3-Clause */
/* qemount-read: decode an image with the image layer alone, no server.
 *
 *   qemount-read [-f FORMAT] [-b yes|no|samedir] [-s SNAPSHOT] [-c BYTES]
 *                [-m] IMAGE
 *
 * Writes the disk contents to stdout, or with -m its extents as
 * "offset length flags" lines; -c sets the size of the block cache
 * (as cache=).  Tests use it to run the decoders
 * directly, e.g. under the sanitizers or with malformed images.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image.h"

#define CHUNK (1u << 20)

static int
print_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  uint64_t *next = opaque;

  printf ("%" PRIu64 " %" PRIu64 " %" PRIu32 "\n", offset, length, flags);
  *next = offset + length;
  return 0;
}

static int
dump_map (struct image *img)
{
  uint64_t offset = 0;

  while (offset < img->size) {
    uint64_t next = offset;

    if (image_extents (img, offset, img->size - offset, print_extent,
                       &next) == -1)
      return -1;
    if (next <= offset) {
      fprintf (stderr, "qemount-read: no progress in extents at %" PRIu64
               "\n", offset);
      return -1;
    }
    offset = next;
  }
  return 0;
}

static int
dump_data (struct image *img)
{
  char *buf = malloc (CHUNK);

  if (buf == NULL)
    return -1;
  for (uint64_t offset = 0; offset < img->size; offset += CHUNK) {
    size_t n = img->size - offset < CHUNK ? img->size - offset : CHUNK;

    if (image_pread (img, buf, n, offset) == -1 ||
        fwrite (buf, 1, n, stdout) != n) {
      free (buf);
      return -1;
    }
  }
  free (buf);
  return 0;
}

int
main (int argc, char *argv[])
{
  struct image_options opts = { .backing = BACKING_SAME_DIR,
                                .readonly = true };
  bool map = false;
  struct image *img;
  int c, r;

  while ((c = getopt (argc, argv, "f:b:s:c:m")) != -1) {
    switch (c) {
    case 'f': opts.format = optarg; break;
    case 'b':
      opts.backing = strcmp (optarg, "yes") == 0 ? BACKING_YES :
        strcmp (optarg, "no") == 0 ? BACKING_NO : BACKING_SAME_DIR;
      break;
    case 's': opts.snapshot = optarg; break;
    case 'c': image_set_cache_size (strtoull (optarg, NULL, 0)); break;
    case 'm': map = true; break;
    default: goto usage;
    }
  }
  if (optind != argc - 1)
    goto usage;

  img = image_open (argv[optind], &opts);
  if (img == NULL)
    exit (EXIT_FAILURE);
  r = map ? dump_map (img) : dump_data (img);
  image_close (img);
  if (r == -1 || fflush (stdout) == EOF)
    exit (EXIT_FAILURE);
  exit (EXIT_SUCCESS);

 usage:
  fprintf (stderr, "usage: qemount-read [-f FORMAT] [-b yes|no|samedir] "
           "[-s SNAPSHOT] [-c BYTES] [-m] IMAGE\n");
  exit (2);
}
