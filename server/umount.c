/* SPDX-License-Identifier: BSD-3-Clause */
/* qemount umount DIR|ID, and the teardown it shares with a failed or
 * interrupted mount or extract and with the cleaning of stale states.
 *
 * Teardown goes from the top of the stack down: the filesystem at DIR,
 * loop devices, nbd-client, the files nbdfuse serves and nbdfuse, nbdkit,
 * the state directory.  Each step first looks whether its part is still there, so
 * a half-built stack (an interrupted mount) or a half-dead one (nbdkit
 * killed) is torn down the same way.  A busy DIR stops it before
 * anything under the mount is touched.
 */

#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qemount.h"

/* s quoted for a shell: in single quotes, each ' as '\''. */
static char *
shell_quote (const char *s)
{
  char *q = malloc (strlen (s) * 4 + 3), *p = q;

  if (q == NULL) {
    perror ("malloc");
    exit (EXIT_ERROR);
  }
  *p++ = '\'';
  for (; *s; ++s) {
    if (*s == '\'') {
      memcpy (p, "'\\''", 4);
      p += 4;
    }
    else
      *p++ = *s;
  }
  *p++ = '\'';
  *p = '\0';
  return q;
}

/* DIR is in use: the error, with the command that shows by whom, ready
 * to paste.
 */
void
report_busy (const char *dir)
{
  char *quoted = shell_quote (dir);

  errorf ("%s: busy: a process is using it (see fuser -vm %s)", dir,
          quoted);
  free (quoted);
}

static int
fuse_unmount (const char *path)
{
  const char *argv[] = { "fusermount3", "-u", path, NULL };
  char *fstype = NULL;
  bool mounted = is_mount_point (path, NULL, &fstype);
  bool fuse = mounted && fstype && strncmp (fstype, "fuse", 4) == 0;

  free (fstype);
  if (!mounted)
    return EXIT_OK;
  if (!fuse) {
    errorf ("%s: something other than nbdfuse is mounted there; "
            "leaving it alone", path);
    return EXIT_BUSY;
  }
  debugf ("unmounting %s", path);
  if (proc_run ((char **) argv) != 0) {
    errorf ("%s: could not unmount the disk file (is it open?)", path);
    return EXIT_BUSY;
  }
  return EXIT_OK;
}

/* The filesystem at DIR, if it is the one we mounted there. */
static int
kernel_unmount (const struct mount_state *st)
{
  char *source = NULL;

  if (st->mountpoint == NULL ||
      !is_mount_point (st->mountpoint, &source, NULL))
    return EXIT_OK;
  if (source == NULL ||
      !((st->loop && strcmp (source, st->loop) == 0) ||
        (st->nbd && strcmp (source, st->nbd) == 0))) {
    warnf ("%s: %s is mounted there, not qemount's device; leaving it",
           st->mountpoint, source ? source : "something else");
    free (source);
    return EXIT_OK;
  }
  free (source);
  debugf ("unmounting %s", st->mountpoint);
  if (umount2 (st->mountpoint, UMOUNT_NOFOLLOW) == -1) {
    if (errno == EBUSY) {
      report_busy (st->mountpoint);
      return EXIT_BUSY;
    }
    errorf ("%s: umount: %m", st->mountpoint);
    return EXIT_ERROR;
  }
  return EXIT_OK;
}

/* Only a device that still has a client is disconnected; there is no
 * more we can tell about whose it is.
 */
static void
nbd_disconnect (const char *device)
{
  const char *argv[] = { "nbd-client", "-d", device, NULL };
  const char *name = strrchr (device, '/');
  char pid[80];

  snprintf (pid, sizeof pid, "/sys/block/%s/pid", name ? name + 1 : device);
  if (access (pid, F_OK) == 0)
    proc_run ((char **) argv);
}

/* Unmount each file nbdfuse serves and stop its nbdfuse.  Files we
 * created in DIR (--raw) are removed too, leaving DIR as it was; the
 * state directory's go with it.
 */
static int
stop_fuse_files (struct mount_state *st)
{
  for (size_t i = 0; i < st->n_files; ++i) {
    struct fuse_file *f = &st->files[i];
    char *target = fuse_target (st, f->name);
    int status = fuse_unmount (target);

    if (status == EXIT_OK && f->pid == 0) {
      /* A set-up killed before it recorded the pid left the pid file. */
      char *pidfile = fuse_pidfile (st, f->name);

      f->pid = proc_read_pidfile (pidfile);
      free (pidfile);
    }
    if (status == EXIT_OK && proc_stop (f->pid, "nbdfuse", target, 2000) == -1)
      status = EXIT_ERROR;
    if (status == EXIT_OK && st->raw) {
      struct stat sb;

      if (lstat (target, &sb) == 0 && S_ISREG (sb.st_mode) &&
          sb.st_size == 0)
        unlink (target);
    }
    free (target);
    if (status != EXIT_OK)
      return status;
  }
  return EXIT_OK;
}

int
teardown (struct mount_state *st)
{
  char *sock = state_path (st, STATE_SOCKET);
  int status = EXIT_OK;

  status = vm_teardown (st);
  if (status == EXIT_OK && !st->raw)
    status = kernel_unmount (st);
  if (status != EXIT_OK)
    goto out;

  /* By backing file, not by the recorded name: an autoclear device may
   * have gone with the mount and its number been reused by someone else.
   */
  if (loop_detach_backed_under (st->dir) == -1) {
    status = EXIT_ERROR;
    goto out;
  }
  if (st->nbd)
    nbd_disconnect (st->nbd);
  status = stop_fuse_files (st);
  if (status != EXIT_OK)
    goto out;

  if (st->nbdkit_pid == 0) {
    char *pidfile = state_path (st, STATE_NBDKIT_PID);

    st->nbdkit_pid = proc_read_pidfile (pidfile);
    free (pidfile);
  }
  if (proc_stop (st->nbdkit_pid, "nbdkit", sock, 0) == -1) {
    status = EXIT_ERROR;
    goto out;
  }
  if (state_remove (st) == -1)
    status = EXIT_ERROR;

 out:
  free (sock);
  return status;
}

static int
clean_if_stale (struct mount_state *st, void *opaque)
{
  const char *why;

  if (state_lock (st, false) == -1)
    return 0;                   /* being set up or torn down right now */
  if (state_is_stale (st, &why)) {
    if (st->extract)
      warnf ("cleaning up after the extract of %s: %s",
             st->image ? st->image : "(unknown image)", why);
    else
      warnf ("cleaning up after the broken mount of %s on %s: %s",
             st->image ? st->image : "(unknown image)",
             st->mountpoint ? st->mountpoint : "(unknown directory)", why);
    teardown (st);
  }
  state_unlock (st);
  return 0;
}

int
clean_stale_states (void)
{
  return state_foreach (clean_if_stale, NULL);
}

struct find_dir {
  const char *dir;              /* DIR made absolute, */
  const char *id;               /* or else a state's id */
  int status;
  bool found;
};

static int
umount_if_dir (struct mount_state *st, void *opaque)
{
  struct find_dir *f = opaque;

  if (f->id ? strcmp (state_id (st), f->id) != 0 :
      st->mountpoint == NULL || strcmp (st->mountpoint, f->dir) != 0)
    return 0;
  f->found = true;
  if (state_lock (st, false) == -1) {
    if (st->extract)
      errorf ("%s: qemount extract (pid %d) is still running",
              f->id, (int) st->owner_pid);
    else
      errorf ("%s: qemount (pid %d) is setting it up or tearing it down "
              "right now; try again", f->id ? f->id : f->dir,
              (int) st->owner_pid);
    f->status = EXIT_BUSY;
    return 1;
  }
  f->status = teardown (st);
  return 1;
}

static void
umount_usage (FILE *fp)
{
  fprintf (fp,
           "usage: qemount umount DIR|ID\n"
           "\n"
           "Unmount what qemount mounted on DIR and stop the processes and\n"
           "devices under it.  A mount whose nbdkit died is cleaned up too.\n"
           "ID (as qemount list shows it) names a mount, or an extract that\n"
           "was killed, by its state instead.\n");
}

int
umount_main (int argc, char *argv[])
{
  static const struct option long_options[] = {
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct find_dir f = { .status = EXIT_OK };
  char *dir;
  int c;

  while ((c = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
    switch (c) {
    case 'h': umount_usage (stdout); return EXIT_OK;
    default: umount_usage (stderr); return EXIT_USAGE;
    }
  }
  if (!operands_ok ("umount", argc - optind, argv + optind,
                    (const char *const []) { "DIR", NULL })) {
    umount_usage (stderr);
    return EXIT_USAGE;
  }

  dir = absolute_path (argv[optind]);
  f.dir = dir;
  if (state_foreach (umount_if_dir, &f) == -1 && !f.found) {
    free (dir);
    return EXIT_ERROR;
  }
  if (!f.found && strchr (argv[optind], '/') == NULL) {
    f.id = argv[optind];
    state_foreach (umount_if_dir, &f);
  }
  if (!f.found) {
    errorf ("%s: not mounted by qemount%s", argv[optind],
            is_mount_point (dir, NULL, NULL) ?
            " (something else is mounted there)" : "");
    f.status = EXIT_NOT_MOUNTED;
  }
  free (dir);
  return f.status;
}
