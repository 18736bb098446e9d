/* SPDX-License-Identifier: BSD-3-Clause */
/* New files written whole, then named (outfile.h). */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "image.h"
#include "outfile.h"

/* Each taken name costs someone a file in our directory; after this
 * many the directory is being filled on purpose.
 */
#define NAME_TRIES 100

static const char *
tmp_name (const struct outfile *f)
{
  return f->tmp + f->base;
}

/* Link the unnamed file as name in its directory. */
static int
link_unnamed (const struct outfile *f, const char *name)
{
  char proc[64];

  /* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc link does not. */
  if (linkat (f->fd, "", f->dirfd, name, AT_EMPTY_PATH) == 0)
    return 0;
  if (errno == EEXIST)
    return -1;
  snprintf (proc, sizeof proc, "/proc/self/fd/%d", f->fd);
  return linkat (AT_FDCWD, proc, f->dirfd, name, AT_SYMLINK_FOLLOW);
}

/* A temporary name for f: PATH.tmp.XXXXXXXX, X random, so that nobody
 * can have a file waiting there.  The name is taken exclusively: by
 * linking the unnamed file f->fd if there is one, else by creating the
 * file with mode.  A name taken already (file or symlink, which O_EXCL
 * never follows) only makes us draw another.
 */
static int
take_name (struct outfile *f, mode_t mode)
{
  for (unsigned tries = 0; tries < NAME_TRIES; ++tries) {
    uint32_t rnd;
    int r;

    if (getrandom (&rnd, sizeof rnd, 0) != sizeof rnd)
      rnd = (uint32_t) time (NULL) ^ (uint32_t) getpid () ^ tries;
    free (f->tmp);
    if (asprintf (&f->tmp, "%s.tmp.%08" PRIx32, f->path, rnd) == -1) {
      f->tmp = NULL;
      image_error ("%s: %m", f->path);
      return -1;
    }
    if (f->fd >= 0)
      r = link_unnamed (f, tmp_name (f));
    else {
      f->fd = openat (f->dirfd, tmp_name (f),
                      O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                      mode);
      r = f->fd;
    }
    if (r >= 0)
      return 0;
    if (errno != EEXIST) {
      image_error ("%s: cannot create %s: %m", f->path, f->tmp);
      goto err;
    }
  }
  image_error ("%s: cannot find a free temporary name", f->path);
 err:
  free (f->tmp);
  f->tmp = NULL;
  return -1;
}

int
outfile_create (struct outfile *f, const char *path, mode_t mode)
{
  const char *slash = strrchr (path, '/');
  char *dir;

  *f = (struct outfile) { .fd = -1, .dirfd = -1 };
  f->base = slash ? slash + 1 - path : 0;
  if (path[f->base] == '\0') {
    image_error ("%s: names a directory, not a file", path);
    errno = EISDIR;
    return -1;
  }
  f->path = strdup (path);
  dir = slash == NULL ? strdup (".") :
    strndup (path, slash == path ? 1 : slash - path);
  if (f->path == NULL || dir == NULL) {
    image_error ("%s: %m", path);
    free (dir);
    goto err;
  }
  f->dirfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free (dir);
  if (f->dirfd == -1) {
    image_error ("%s: cannot open its directory: %m", path);
    goto err;
  }

  /* Unnamed where the filesystem has them: then not even SIGKILL can
   * leave a temporary file behind.
   */
  f->fd = openat (f->dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
  if (f->fd == -1 && take_name (f, mode) == -1)
    goto err;
  return 0;

 err:
  outfile_close (f);
  return -1;
}

/* Durable, then under its name, then the name durable. */
int
outfile_commit (struct outfile *f, bool replace)
{
  const char *name = f->path + f->base;

  if (fsync (f->fd) == -1) {
    image_error ("%s: fsync: %m", f->path);
    return -1;
  }
  if (replace) {
    /* rename replaces; an unnamed file needs a name to be renamed. */
    if (f->tmp == NULL && take_name (f, 0) == -1)
      return -1;
    if (renameat (f->dirfd, tmp_name (f), f->dirfd, name) == -1) {
      image_error ("%s: cannot rename %s into place: %m", f->path, f->tmp);
      return -1;
    }
  }
  else if (f->tmp) {
    if (linkat (f->dirfd, tmp_name (f), f->dirfd, name, 0) == -1) {
      image_error ("%s: %m", f->path);
      return -1;
    }
    unlinkat (f->dirfd, tmp_name (f), 0);
  }
  else if (link_unnamed (f, name) == -1) {
    image_error ("%s: %m", f->path);
    return -1;
  }
  free (f->tmp);
  f->tmp = NULL;
  if (fsync (f->dirfd) == -1) {
    image_error ("%s: fsync of its directory: %m", f->path);
    return -1;
  }
  return 0;
}

void
outfile_close (struct outfile *f)
{
  if (f->path == NULL)
    return;
  if (f->tmp)
    unlinkat (f->dirfd, tmp_name (f), 0);
  if (f->fd >= 0)
    close (f->fd);
  if (f->dirfd >= 0)
    close (f->dirfd);
  free (f->tmp);
  free (f->path);
  *f = (struct outfile) { .fd = -1, .dirfd = -1 };
}
