/* SPDX-License-Identifier: BSD-3-Clause */
/* libFuzzer harness: open the input as an image of one format (FORMAT,
 * set at build time: qcow2, ploop, qsnap, or auto to fuzz probing too),
 * walk all its extents and read it all, as nbdkit would serve it; the
 * same for its first internal snapshot, if it has any.
 *
 * The input is put in a memfd and opened by its /proc path, so the
 * decoders run exactly as in production (pread on an fd).  Backing files
 * are not followed: only the decoder under test sees hostile bytes.
 */

#include <config.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "image.h"

/* Reading a huge virtual disk end to end would only fuzz memset. */
#define READ_LIMIT (64u << 20)

static void
quiet (const char *msg)
{
}

static int
count_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  uint64_t *next = opaque;

  *next = offset + length;
  return 0;
}

/* Serve img as nbdkit would: every extent, then the data. */
static void
serve (struct image *img)
{
  for (uint64_t offset = 0; offset < img->size; ) {
    uint64_t next = offset;
    if (image_extents (img, offset, img->size - offset, count_extent,
                       &next) == -1 || next <= offset)
      break;
    offset = next;
  }

  static char buf[1 << 20];
  uint64_t limit = img->size < READ_LIMIT ? img->size : READ_LIMIT;
  for (uint64_t offset = 0; offset < limit; offset += sizeof buf) {
    size_t n = limit - offset < sizeof buf ? limit - offset : sizeof buf;
    image_pread (img, buf, n, offset);
  }
  /* And the end of the disk, where size arithmetic goes wrong. */
  if (img->size > limit)
    image_pread (img, buf, 4096 < img->size ? 4096 : img->size,
                 img->size - (4096 < img->size ? 4096 : img->size));
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct image_options opts = {
    .format = FORMAT, .backing = BACKING_NO, .readonly = true,
  };
  const struct image_snapshot *snapshots;
  size_t n_snapshots;
  long served;
  char path[64];
  struct image *img;
  int fd;

  image_set_message_handlers (quiet, quiet);
  fd = memfd_create ("fuzz", MFD_CLOEXEC);
  if (fd == -1 || write (fd, data, size) != (ssize_t) size)
    abort ();
  snprintf (path, sizeof path, "/proc/self/fd/%d", fd);
  img = image_open (path, &opts);
  if (img != NULL) {
    serve (img);
    image_list_snapshots (img, &snapshots, &n_snapshots, &served);
    if (n_snapshots > 0) {
      struct image *snap;

      opts.snapshot = snapshots[0].id;
      snap = image_open (path, &opts);
      if (snap != NULL) {
        serve (snap);
        image_close (snap);
      }
    }
    image_close (img);
  }
  close (fd);
  return 0;
}
