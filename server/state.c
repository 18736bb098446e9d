/* SPDX-License-Identifier: BSD-3-Clause */
/* Per-mount state, so that umount and list work from another shell and
 * after the shell that mounted is gone.
 *
 * A private runtime directory (0700, owned by the user) holds one
 * directory per mount, "mount.XXXXXX", with the nbdkit socket, the pid
 * files and logs, the file nbdfuse serves the disk as (for a kernel
 * mount), and the "state" file:
 * key=value lines, rewritten (atomically) after every step of the set-up
 * so that whatever was started is on record before the next step runs.
 *
 * A "lock" file in each directory is flock()ed by the process setting
 * the mount up or tearing it down; the kernel drops the lock when that
 * process dies, which is how an interrupted set-up is told from one in
 * progress.
 */

#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "outfile.h"
#include "qemount.h"

#define STATE_PREFIX "mount."

char *
state_path (const struct mount_state *st, const char *name)
{
  return xasprintf ("%s/%s", st->dir, name);
}

/* The runtime directory: $QEMOUNT_RUNTIME_DIR if set, else /run/qemount
 * for root, $XDG_RUNTIME_DIR/qemount or /tmp/qemount-UID for others.  It
 * must be a directory of ours that nobody else may enter (anyone could
 * have created /tmp/qemount-UID first).  Returns NULL with errno ENOENT
 * if it does not exist and create is false, or NULL after a message.
 */
const char *
runtime_dir (bool create)
{
  static char path[PATH_MAX], resolved[PATH_MAX];
  const char *env = getenv ("QEMOUNT_RUNTIME_DIR");
  const char *xdg = getenv ("XDG_RUNTIME_DIR");
  struct stat st;

  if (env && *env)
    snprintf (path, sizeof path, "%s", env);
  else if (geteuid () == 0)
    snprintf (path, sizeof path, "/run/qemount");
  else if (xdg && *xdg == '/')
    snprintf (path, sizeof path, "%s/qemount", xdg);
  else
    snprintf (path, sizeof path, "/tmp/qemount-%u", (unsigned) geteuid ());

  if (create && mkdir (path, 0700) == -1 && errno != EEXIST) {
    errorf ("cannot create the runtime directory %s: %m", path);
    return NULL;
  }
  if (lstat (path, &st) == -1) {
    if (errno == ENOENT && !create)
      return NULL;
    errorf ("%s: %m", path);
    return NULL;
  }
  if (!S_ISDIR (st.st_mode) || st.st_uid != geteuid () ||
      (st.st_mode & 077) != 0) {
    errorf ("refusing to use %s: it is not a private directory owned by "
            "you (mode 0700)", path);
    errno = EPERM;
    return NULL;
  }
  /* Resolved, as the kernel names the files in it (a loop device's
   * backing file, a mount point), so that we recognize them.
   */
  if (realpath (path, resolved) == NULL) {
    errorf ("%s: %m", path);
    return NULL;
  }
  return resolved;
}

static int lock_state (struct mount_state *st, bool wait, bool create);

struct mount_state *
state_create (void)
{
  struct mount_state *st = calloc (1, sizeof *st);
  const char *run = runtime_dir (true);
  char *dir;

  if (st == NULL) {
    perror ("calloc");
    exit (EXIT_ERROR);
  }
  st->lock_fd = -1;
  st->owner_pid = getpid ();
  if (run == NULL)
    goto err;
  dir = xasprintf ("%s/" STATE_PREFIX "XXXXXX", run);
  if (mkdtemp (dir) == NULL) {
    errorf ("cannot create a state directory in %s: %m", run);
    free (dir);
    goto err;
  }
  st->dir = dir;
  if (lock_state (st, false, true) == -1) {
    errorf ("%s/" STATE_LOCK ": %m", dir);
    rmdir (dir);
    goto err;
  }
  return st;

 err:
  free (st);
  return NULL;
}

/* Only the creator makes the lock file: a reader must not bring it
 * back while teardown removes the directory.  The creator locks it under
 * another name and then renames it into place, so that no other qemount
 * can open and lock it in between and take a set-up that has just begun
 * for a stale one.
 */
static int
lock_state (struct mount_state *st, bool wait, bool create)
{
  char *path = state_path (st, STATE_LOCK);
  char *made = create ? xasprintf ("%s.new", path) : NULL;

  if (st->lock_fd == -1)
    st->lock_fd = open (made ? made : path, O_RDWR | O_CLOEXEC | O_NOFOLLOW |
                        (create ? O_CREAT | O_EXCL : 0), 0600);
  if (st->lock_fd >= 0 &&
      (flock (st->lock_fd, LOCK_EX | (wait ? 0 : LOCK_NB)) == -1 ||
       (made && rename (made, path) == -1))) {
    int saved = errno;

    close (st->lock_fd);
    st->lock_fd = -1;
    if (made)
      unlink (made);
    errno = saved;
  }
  free (path);
  free (made);
  return st->lock_fd == -1 ? -1 : 0;
}

/* Lock a state for setting up or tearing down.  Fails (errno
 * EWOULDBLOCK, or ENOENT while the directory is being created or
 * removed) if another process has it, unless wait.
 */
int
state_lock (struct mount_state *st, bool wait)
{
  return lock_state (st, wait, false);
}

void
state_unlock (struct mount_state *st)
{
  if (st->lock_fd >= 0)
    close (st->lock_fd);
  st->lock_fd = -1;
}

static void
put (FILE *fp, const char *key, const char *value)
{
  if (value)
    fprintf (fp, "%s=%s\n", key, value);
}

static void
put_pid (FILE *fp, const char *key, pid_t pid)
{
  if (pid > 0)
    fprintf (fp, "%s=%d\n", key, (int) pid);
}

const char *
attach_name (enum attach_method a)
{
  switch (a) {
  case ATTACH_NBDFUSE: return "nbdfuse";
  case ATTACH_NBD_CLIENT: return "nbd-client";
  case ATTACH_VM: return "vm";
  default: return "none";
  }
}

/* The record is made in memory and written as a new file that replaces
 * the state file, so a reader (or a crash) never sees half a record.
 */
int
state_save (const struct mount_state *st)
{
  char *path = state_path (st, STATE_FILE);
  char *record = NULL;
  size_t len = 0;
  struct outfile out;
  char partition[16];
  FILE *fp;
  int r = -1;

  fp = open_memstream (&record, &len);
  if (fp == NULL) {
    errorf ("%s: %m", path);
    goto out;
  }
  fprintf (fp, "version=1\n");
  put (fp, "phase", st->mounted ? "mounted" : "starting");
  put (fp, "command", st->extract ? "extract" : "mount");
  put_pid (fp, "owner", st->owner_pid);
  put (fp, "image", st->image);
  put (fp, "mountpoint", st->mountpoint);
  put (fp, "raw", st->raw ? "yes" : "no");
  put (fp, "format", st->format);
  put (fp, "snapshot", st->snapshot);
  format_partition (partition, sizeof partition, st->partition, st->letter);
  put (fp, "partition", partition);
  if (st->partition > 0) {
    fprintf (fp, "partition_start=%" PRIu64 "\n", st->part_start);
    fprintf (fp, "partition_size=%" PRIu64 "\n", st->part_size);
  }
  put (fp, "fstype", st->fstype);
  put (fp, "readonly", st->readonly ? "yes" : "no");
  put (fp, "overlay", st->overlay);
  put (fp, "attach", attach_name (st->attach));
  put_pid (fp, "nbdkit", st->nbdkit_pid);
  put_pid (fp, "qemu", st->qemu_pid);
  put_pid (fp, "sshfs", st->sshfs_pid);
  for (size_t i = 0; i < st->n_files; ++i)
    fprintf (fp, "nbdfuse.%s=%d\n", st->files[i].name,
             (int) st->files[i].pid);
  put (fp, "loop", st->loop);
  put (fp, "nbd", st->nbd);
  if (fclose (fp) == EOF) {
    errorf ("%s: %m", path);
    goto out;
  }
  if (outfile_create (&out, path, 0600) == -1)
    goto out;
  if (image_write_file (out.fd, record, len, 0) == -1)
    errorf ("%s: %m", path);
  else
    r = outfile_commit (&out, true);
  outfile_close (&out);

 out:
  free (record);
  free (path);
  return r;
}

static pid_t
parse_pid (const char *s)
{
  char *end;
  long v;

  errno = 0;
  v = strtol (s, &end, 10);
  if (errno || *end || v <= 0 || v > INT32_MAX)
    return 0;
  return v;
}

/* Load the state in dir.  A directory whose state file is missing (a
 * set-up killed before its first record) loads as an empty state, which
 * teardown simply removes.
 */
struct mount_state *
state_load (const char *dir)
{
  struct mount_state *st = calloc (1, sizeof *st);
  char *path, *line = NULL;
  size_t len = 0;
  ssize_t n;
  FILE *fp;

  if (st == NULL) {
    perror ("calloc");
    exit (EXIT_ERROR);
  }
  st->lock_fd = -1;
  st->dir = xstrdup (dir);
  path = state_path (st, STATE_FILE);
  fp = fopen (path, "re");
  free (path);
  if (fp == NULL)
    return st;

  while ((n = getline (&line, &len, fp)) != -1) {
    char *value = strchr (line, '=');
    char **field = NULL;

    if (n > 0 && line[n - 1] == '\n')
      line[n - 1] = '\0';
    if (value == NULL)
      continue;
    *value++ = '\0';
    if (strcmp (line, "phase") == 0)
      st->mounted = strcmp (value, "mounted") == 0;
    else if (strcmp (line, "command") == 0)
      st->extract = strcmp (value, "extract") == 0;
    else if (strcmp (line, "owner") == 0)
      st->owner_pid = parse_pid (value);
    else if (strcmp (line, "image") == 0) field = &st->image;
    else if (strcmp (line, "mountpoint") == 0) field = &st->mountpoint;
    else if (strcmp (line, "raw") == 0)
      st->raw = strcmp (value, "yes") == 0;
    else if (strcmp (line, "format") == 0) field = &st->format;
    else if (strcmp (line, "snapshot") == 0) field = &st->snapshot;
    else if (strcmp (line, "partition") == 0) {
      char *end;

      st->partition = strtol (value, &end, 10);
      st->letter = *end >= 'a' && *end <= 'z' ? *end : 0;
    }
    else if (strcmp (line, "partition_start") == 0)
      st->part_start = strtoull (value, NULL, 10);
    else if (strcmp (line, "partition_size") == 0)
      st->part_size = strtoull (value, NULL, 10);
    else if (strcmp (line, "fstype") == 0) field = &st->fstype;
    else if (strcmp (line, "readonly") == 0)
      st->readonly = strcmp (value, "yes") == 0;
    else if (strcmp (line, "overlay") == 0) field = &st->overlay;
    else if (strcmp (line, "attach") == 0)
      st->attach = strcmp (value, "nbdfuse") == 0 ? ATTACH_NBDFUSE :
        strcmp (value, "nbd-client") == 0 ? ATTACH_NBD_CLIENT :
        strcmp (value, "vm") == 0 ? ATTACH_VM : ATTACH_NONE;
    else if (strcmp (line, "nbdkit") == 0)
      st->nbdkit_pid = parse_pid (value);
    else if (strcmp (line, "qemu") == 0)
      st->qemu_pid = parse_pid (value);
    else if (strcmp (line, "sshfs") == 0)
      st->sshfs_pid = parse_pid (value);
    else if (strncmp (line, "nbdfuse.", 8) == 0 &&
             state_add_file (st, line + 8) == 0)
      st->files[st->n_files - 1].pid = parse_pid (value);
    else if (strcmp (line, "loop") == 0) field = &st->loop;
    else if (strcmp (line, "nbd") == 0) field = &st->nbd;
    if (field) {
      free (*field);
      *field = xstrdup (value);
    }
  }
  free (line);
  fclose (fp);
  return st;
}

/* Remove the state directory and the files in it.  Whatever is
 * mounted must be unmounted by now: a directory or a file something is
 * mounted on is left alone, and then so is the state directory.
 */
int
state_remove (struct mount_state *st)
{
  struct dirent *d;
  DIR *dir;
  int r = 0;

  dir = opendir (st->dir);
  if (dir == NULL) {
    errorf ("%s: %m", st->dir);
    state_unlock (st);
    return -1;
  }
  while ((d = readdir (dir)) != NULL) {
    char *path;

    if (strcmp (d->d_name, ".") == 0 || strcmp (d->d_name, "..") == 0 ||
        strcmp (d->d_name, STATE_LOCK) == 0)
      continue;
    path = state_path (st, d->d_name);
    if (is_mount_point (path, NULL, NULL) ||
        (unlink (path) == -1 && errno != ENOENT)) {
      errorf ("cannot remove %s%s", path,
              is_mount_point (path, NULL, NULL) ? ": still mounted" : "");
      r = -1;
    }
    free (path);
  }
  closedir (dir);
  if (r == 0) {
    char *lock = state_path (st, STATE_LOCK);

    unlink (lock);
    free (lock);
    if (rmdir (st->dir) == -1) {
      errorf ("cannot remove the state directory %s: %m", st->dir);
      r = -1;
    }
  }
  state_unlock (st);
  return r;
}

void
state_free (struct mount_state *st)
{
  if (st == NULL)
    return;
  state_unlock (st);
  free (st->dir);
  free (st->image);
  free (st->mountpoint);
  free (st->format);
  free (st->snapshot);
  free (st->fstype);
  free (st->overlay);
  free (st->loop);
  free (st->nbd);
  for (size_t i = 0; i < st->n_files; ++i)
    free (st->files[i].name);
  free (st);
}

int
state_foreach (int (*fn) (struct mount_state *st, void *opaque),
               void *opaque)
{
  const char *run = runtime_dir (false);
  struct dirent *d;
  DIR *dir;
  int r = 0;

  if (run == NULL)
    return errno == ENOENT ? 0 : -1;
  dir = opendir (run);
  if (dir == NULL) {
    errorf ("%s: %m", run);
    return -1;
  }
  while (r == 0 && (d = readdir (dir)) != NULL) {
    struct mount_state *st;
    char *path;

    if (strncmp (d->d_name, STATE_PREFIX, strlen (STATE_PREFIX)) != 0)
      continue;
    path = xasprintf ("%s/%s", run, d->d_name);
    st = state_load (path);
    free (path);
    r = fn (st, opaque);
    state_free (st);
  }
  closedir (dir);
  return r;
}

/* A name we accept for a file in DIR: stream names come from the image,
 * which may be hostile ("../../etc/passwd").
 */
bool
file_name_ok (const char *name)
{
  size_t len = strlen (name);

  if (len == 0 || len > 64 || name[0] == '.')
    return false;
  return strspn (name, "abcdefghijklmnopqrstuvwxyz"
                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == len;
}

/* Add a file to serve; returns -1 (no message) if the name is unsafe or
 * there are too many.
 */
int
state_add_file (struct mount_state *st, const char *name)
{
  if (!file_name_ok (name) || st->n_files == MAX_FILES)
    return -1;
  st->files[st->n_files].name = xstrdup (name);
  st->files[st->n_files].pid = 0;
  st->n_files++;
  return 0;
}

/* Where nbdfuse serves the file called name: DIR/name for --raw, in the
 * state directory otherwise.  nbdfuse has it in its argv, which tells
 * our nbdfuse from any other.
 */
char *
fuse_target (const struct mount_state *st, const char *name)
{
  if (st->raw && st->mountpoint)
    return xasprintf ("%s/%s", st->mountpoint, name);
  return state_path (st, name);
}

char *
fuse_pidfile (const struct mount_state *st, const char *name)
{
  return xasprintf ("%s/nbdfuse.%s.pid", st->dir, name);
}

char *
fuse_log (const struct mount_state *st, const char *name)
{
  return xasprintf ("%s/nbdfuse.%s.log", st->dir, name);
}

/* A mount one of whose processes is gone (nbdkit, nbdfuse, the helper
 * VM or sshfs killed, say) or whose set-up was interrupted.  The caller
 * holds the state's lock, so a set-up in progress is never taken for
 * stale.
 */
bool
state_is_stale (const struct mount_state *st, const char **why)
{
  char *sock = state_path (st, STATE_SOCKET);
  bool stale = true;

  *why = NULL;
  if (st->extract)              /* it removes its state when it ends */
    *why = "the qemount extract that ran it is gone";
  else if (!st->mounted)
    *why = "its set-up did not finish";
  else if (!proc_is (st->nbdkit_pid, "nbdkit", sock))
    *why = "nbdkit is not running";
  for (size_t i = 0; *why == NULL && i < st->n_files; ++i) {
    char *target = fuse_target (st, st->files[i].name);

    if (!proc_is (st->files[i].pid, "nbdfuse", target))
      *why = "nbdfuse is not running";
    free (target);
  }
  if (*why == NULL && st->attach == ATTACH_VM)
    *why = vm_broken (st);
  if (*why == NULL)
    stale = false;
  free (sock);
  return stale;
}

/* A state's id, which qemount list shows and qemount umount takes (for
 * one without a mount point, an extract's): its directory's name after
 * "mount.".
 */
const char *
state_id (const struct mount_state *st)
{
  const char *base = strrchr (st->dir, '/');

  base = base ? base + 1 : st->dir;
  if (strncmp (base, STATE_PREFIX, strlen (STATE_PREFIX)) == 0)
    base += strlen (STATE_PREFIX);
  return base;
}

/* path made absolute, resolved where possible.  A dead FUSE mount
 * point cannot be stat()ed, so when realpath fails we resolve the
 * parent and append the last component.
 */
char *
absolute_path (const char *path)
{
  char *real = realpath (path, NULL), *copy, *slash, *parent, *r;
  const char *base;

  if (real)
    return real;
  copy = xstrdup (path);
  while (strlen (copy) > 1 && copy[strlen (copy) - 1] == '/')
    copy[strlen (copy) - 1] = '\0';
  slash = strrchr (copy, '/');
  if (slash == NULL) {
    parent = realpath (".", NULL);
    base = copy;
  }
  else {
    *slash = '\0';
    parent = realpath (slash == copy ? "/" : copy, NULL);
    base = slash + 1;
  }
  if (parent == NULL) {
    free (copy);
    return xstrdup (path);
  }
  r = xasprintf ("%s%s%s", parent, strcmp (parent, "/") ? "/" : "", base);
  free (parent);
  free (copy);
  return r;
}
