/* SPDX-License-Identifier: BSD-3-Clause */
/* Preloaded by tests/test-qemount-tempfiles.sh: a filesystem without
 * unnamed files, where open(O_TMPFILE) fails with EOPNOTSUPP (as on
 * FUSE, NFS or vfat), so that lib/outfile.c takes its named fallback.
 * Each refusal is logged to $NO_TMPFILE_LOG, so the test knows the
 * fallback was taken (and that the program still calls openat(2), which
 * is all this replaces).
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int
refuse (void)
{
  const char *log = getenv ("NO_TMPFILE_LOG");
  FILE *fp = log ? fopen (log, "a") : NULL;

  if (fp) {
    fputs ("O_TMPFILE refused\n", fp);
    fclose (fp);
  }
  errno = EOPNOTSUPP;
  return -1;
}

int
openat (int dirfd, const char *path, int flags, ...)
{
  static int (*real) (int, const char *, int, ...);
  va_list args;
  mode_t mode;

  if ((flags & O_TMPFILE) == O_TMPFILE)
    return refuse ();
  va_start (args, flags);
  mode = (flags & O_CREAT) ? va_arg (args, mode_t) : 0;
  va_end (args);
  if (real == NULL)
    real = dlsym (RTLD_NEXT, "openat");
  return real (dirfd, path, flags, mode);
}
