/* SPDX-License-Identifier: BSD-3-Clause */
/* New files that appear under their name complete or not at all: the
 * outputs of qemount extract and qemount snapshot, overlays, the state
 * records of the qemount command.
 *
 * The file is written unnamed (O_TMPFILE) in the target's directory, or
 * where the filesystem has no unnamed files under PATH.tmp.XXXXXXXX
 * with X random, created exclusively.  Either way nothing that someone
 * else put in that directory is ever opened or followed: a symlink or a
 * file planted at a name we might use only makes us pick another name.
 * The new file has the mode asked for, less the umask (or as the
 * directory's default ACL says), and belongs to whoever runs us.
 */

#ifndef QEMOUNT_OUTFILE_H
#define QEMOUNT_OUTFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct outfile {
  char *path;                   /* the target, NULL when not open */
  char *tmp;                    /* the temporary name while it has one */
  size_t base;                  /* where the last component of both begins */
  int fd;                       /* the new file, read-write */
  int dirfd;                    /* the directory of both names */
};

/* Create the new file for path.  0, or -1 after image_error() with
 * nothing left behind.
 */
int outfile_create (struct outfile *f, const char *path, mode_t mode);

/* Make the file durable and give it its name: replacing whatever has
 * that name (rename) if replace, else failing with EEXIST if something
 * has (link).  f->fd stays open.  0, or -1 after image_error().
 */
int outfile_commit (struct outfile *f, bool replace);

/* Close f; a file not committed is removed.  A zeroed struct outfile, or
 * one closed already, may be closed again.
 */
void outfile_close (struct outfile *f);

#endif /* QEMOUNT_OUTFILE_H */
