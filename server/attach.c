/* SPDX-License-Identifier: BSD-3-Clause */
/* The stack under a mount: nbdkit serving the image (or one partition of
 * it, where libblkid found it, through nbdkit's offset filter) on a
 * private Unix socket, and
 * the step that makes it a block device for the host kernel:
 *   - nbd-client on /dev/nbdN where the nbd module is there;
 *   - otherwise nbdfuse exposing the disk as a file, on a loop device.
 * nbdfuse alone is also the --raw export.
 *
 * Every process and device is written to the state file as soon as it
 * exists, before the next step, so that teardown finds it whatever
 * happens next.  Functions return an exit status.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "outfile.h"
#include "qemount.h"
#include "source.h"

#define PLUGIN_IN_TREE "plugins/qemount/.libs/nbdkit-qemount-plugin.so"
#define READY_TIMEOUT_MS 30000

/* $QEMOUNT_PLUGIN; else the plugin of the build tree this binary lives
 * in (server/qemount next to plugins/qemount/.libs/); else nbdkit finds
 * the installed one by its name.
 */
static char *
plugin_path (void)
{
  return find_ours ("QEMOUNT_PLUGIN", PLUGIN_IN_TREE, PLUGIN_IN_TREE, R_OK,
                    "qemount");
}

/* A URL with secrets goes to nbdkit as file=+PATH, PATH a file of the
 * state directory only we may read: in its argv it would stay in the
 * process list as long as the mount.  NULL after a message.
 */
static char *
location_file (const struct mount_state *st, const char *url)
{
  char *path = state_path (st, STATE_LOCATION);
  char *line = xasprintf ("%s\n", url);
  struct outfile out;
  int r = -1;

  if (outfile_create (&out, path, 0600) == 0) {
    if (image_write_file (out.fd, line, strlen (line), 0) == -1)
      errorf ("%s: %m", path);
    else
      r = outfile_commit (&out, false);
    outfile_close (&out);
  }
  explicit_bzero (line, strlen (line));
  free (line);
  if (r == -1) {
    free (path);
    return NULL;
  }
  return path;
}

/* An extract's nbdkit stays our child and exits with us: on record at
 * once, ready when it has written its pid file.
 */
static int
wait_child_nbdkit (struct mount_state *st, pid_t pid, const char *pidfile,
                   const char *log)
{
  pid_t ready;

  st->nbdkit_pid = pid;
  if (state_save (st) == -1)
    return EXIT_ERROR;
  switch (proc_wait_pidfile (pidfile, pid, -1, true, &ready)) {
  case WAIT_READY:
    debugf ("nbdkit is running (pid %d)", (int) pid);
    return EXIT_OK;
  case WAIT_EXITED:
    proc_forward_log (log);
    errorf ("nbdkit could not serve %s", st->image);
    st->nbdkit_pid = 0;
    return EXIT_ERROR;
  case WAIT_INTERRUPTED:
    return EXIT_INTERRUPTED;
  default:                      /* no timeout: waitpid failed, said */
    return EXIT_ERROR;
  }
}

/* nbdkit forks into the background once the image is open and the
 * socket listens: its first process exiting with 0 means ready (the pid
 * file follows), anything else is an error nbdkit has explained in its
 * log.  An extract's nbdkit instead stays in the foreground as our child
 * and exits when we do, however we end (--exit-with-parent): a killed
 * extract leaves no server behind.
 */
int
start_nbdkit (struct mount_state *st, const struct disk_options *d)
{
  CLEANUP_FREE char *sock = state_path (st, STATE_SOCKET);
  CLEANUP_FREE char *pidfile = state_path (st, STATE_NBDKIT_PID);
  CLEANUP_FREE char *log = state_path (st, STATE_NBDKIT_LOG);
  CLEANUP_FREE char *plugin = plugin_path ();
  CLEANUP_FREE char *location = NULL;
  CLEANUP_ARGV struct argv_builder argv = { NULL };
  struct proc_wait first = { .timeout_ms = -1, .interruptible = true };
  enum wait_result r;
  pid_t pid;

  argv_push (&argv, "nbdkit");
  if (st->extract)
    argv_push (&argv, "--exit-with-parent");    /* implies -f */
  argv_push (&argv, "-U");
  argv_push (&argv, sock);
  argv_push (&argv, "-P");
  argv_push (&argv, pidfile);
  if (st->readonly)
    argv_push (&argv, "-r");
  if (st->partition > 0)
    argv_push (&argv, "--filter=offset");
  argv_push (&argv, plugin);
  if (source_hides (d->req.path)) {
    location = location_file (st, d->req.path);
    if (location == NULL)
      return EXIT_ERROR;
    argv_push_printf (&argv, "file=+%s", location);
  }
  else
    argv_push_printf (&argv, "file=%s", st->image);
  if (st->format)
    argv_push_printf (&argv, "format=%s", st->format);
  argv_push_printf (&argv, "backing=%s", d->backing);
  if (st->snapshot)
    argv_push_printf (&argv, "snapshot=%s", st->snapshot);
  if (st->overlay && strcmp (st->overlay, "ephemeral") != 0) {
    argv_push_printf (&argv, "overlay=%s", st->overlay);
    if (st->readonly)
      argv_push (&argv, "overlay-readonly=true");
  }
  if (d->req.cache_dir)
    argv_push_printf (&argv, "cache-dir=%s", d->req.cache_dir);
  if (d->req.timeout)
    argv_push_printf (&argv, "timeout=%u", d->req.timeout);
  if (st->partition > 0) {
    argv_push_printf (&argv, "offset=%" PRIu64, st->part_start);
    argv_push_printf (&argv, "range=%" PRIu64, st->part_size);
  }

  pid = proc_spawn (argv.argv, log);
  if (pid == -1)
    return EXIT_ERROR;
  if (st->extract)
    return wait_child_nbdkit (st, pid, pidfile, log);

  /* Interrupted, the first process is told to stop, and still waited
   * for: it may have started the background one.
   */
  first.child = pid;
  r = proc_wait_for (&first);
  if (r == WAIT_INTERRUPTED) {
    kill (pid, SIGTERM);
    first.interruptible = false;
    r = proc_wait_for (&first);
  }
  if (r != WAIT_EXITED)
    return EXIT_ERROR;          /* waitpid failed: said */
  if (!WIFEXITED (first.wstatus) || WEXITSTATUS (first.wstatus) != 0) {
    if (interrupted)
      return EXIT_INTERRUPTED;
    proc_forward_log (log);
    errorf ("nbdkit could not serve %s", st->image);
    return EXIT_ERROR;
  }

  /* The background nbdkit exists now: wait for its pid even if we are
   * interrupted meanwhile, or teardown could not stop it.
   */
  if (proc_wait_pidfile (pidfile, 0, READY_TIMEOUT_MS, false,
                         &st->nbdkit_pid) != WAIT_READY) {
    errorf ("nbdkit did not write its pid file %s", pidfile);
    return EXIT_ERROR;
  }
  debugf ("nbdkit is running (pid %d)", (int) st->nbdkit_pid);
  if (state_save (st) == -1)
    return EXIT_ERROR;
  return interrupted ? EXIT_INTERRUPTED : EXIT_OK;
}

/* An NBD URI for export on our socket, percent-encoded. */
static char *
nbd_uri (const char *sock, const char *export)
{
  static const char safe[] = "abcdefghijklmnopqrstuvwxyz"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/";
  size_t len = 64 + 3 * (strlen (sock) + strlen (export));
  char *uri = malloc (len), *p;

  if (uri == NULL) {
    perror ("malloc");
    exit (EXIT_ERROR);
  }
  p = uri + sprintf (uri, "nbd+unix:///");
  for (const char *s = export; *s; ++s)
    p += sprintf (p, strchr (safe, *s) && *s != '/' ? "%c" : "%%%02X",
                  (unsigned char) *s);
  p += sprintf (p, "?socket=");
  for (const char *s = sock; *s; ++s)
    p += sprintf (p, strchr (safe, *s) ? "%c" : "%%%02X",
                  (unsigned char) *s);
  return uri;
}

/* nbdfuse serves export (the image's default, or a stream) as the file
 * st->files[i], mounted over an empty regular file we create, and stays
 * in the foreground (in its own session); it writes its pid file once
 * the file is there.  fuse_options is NULL or a NULL-terminated list of
 * FUSE options.  The name is on record before the file exists, so
 * teardown removes it whatever happens.
 */
int
start_nbdfuse (struct mount_state *st, size_t i, const char *export,
               char *const *fuse_options)
{
  struct fuse_file *f = &st->files[i];
  CLEANUP_FREE char *sock = state_path (st, STATE_SOCKET);
  CLEANUP_FREE char *target = fuse_target (st, f->name);
  CLEANUP_FREE char *pidfile = fuse_pidfile (st, f->name);
  CLEANUP_FREE char *log = fuse_log (st, f->name);
  CLEANUP_FREE char *uri = nbd_uri (sock, export);
  CLEANUP_ARGV struct argv_builder argv = { NULL };
  pid_t pid, ready;
  int fd;

  st->attach = ATTACH_NBDFUSE;
  if (state_save (st) == -1)
    return EXIT_ERROR;
  fd = open (target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd == -1) {
    errorf ("%s: %m", target);
    return EXIT_ERROR;
  }
  close (fd);

  argv_push (&argv, "nbdfuse");
  if (st->readonly)
    argv_push (&argv, "-r");
  argv_push (&argv, "-P");
  argv_push (&argv, pidfile);
  /* One -o each: nbdfuse 1.14 drops all but the first of a list. */
  for (size_t j = 0; fuse_options && fuse_options[j]; ++j) {
    argv_push (&argv, "-o");
    argv_push (&argv, fuse_options[j]);
  }
  argv_push (&argv, target);
  argv_push (&argv, uri);

  pid = proc_spawn (argv.argv, log);
  if (pid == -1)
    return EXIT_ERROR;
  f->pid = pid;
  if (state_save (st) == -1)
    return EXIT_ERROR;

  switch (proc_wait_pidfile (pidfile, pid, READY_TIMEOUT_MS, true, &ready)) {
  case WAIT_READY:
    debugf ("nbdfuse is serving %s (pid %d)", target, (int) pid);
    return EXIT_OK;
  case WAIT_EXITED:
    proc_forward_log (log);
    errorf ("nbdfuse could not serve the disk as %s", target);
    f->pid = 0;
    return EXIT_ERROR;
  case WAIT_INTERRUPTED:
    return EXIT_INTERRUPTED;
  case WAIT_TIMEOUT:
    errorf ("nbdfuse did not get ready within %d seconds",
            READY_TIMEOUT_MS / 1000);
    return EXIT_ERROR;
  default:                      /* said */
    return EXIT_ERROR;
  }
}

bool
nbd_module_present (void)
{
  const char *force = getenv ("QEMOUNT_ATTACH");

  if (force && strcmp (force, "nbdfuse") == 0)
    return false;
  return access ("/dev/nbd0", F_OK) == 0 &&
    access ("/sys/block/nbd0", F_OK) == 0;
}

/* A /dev/nbdN no client is connected to. */
static char *
free_nbd_device (void)
{
  for (int i = 0; i < 1024; ++i) {
    char sys[64], pid[80];

    snprintf (sys, sizeof sys, "/sys/block/nbd%d", i);
    if (access (sys, F_OK) == -1)
      break;
    snprintf (pid, sizeof pid, "%s/pid", sys);
    if (access (pid, F_OK) == 0)
      continue;
    return xasprintf ("/dev/nbd%d", i);
  }
  return NULL;
}

static int
attach_nbd_client (struct mount_state *st, char **device)
{
  CLEANUP_FREE char *sock = state_path (st, STATE_SOCKET);
  CLEANUP_ARGV struct argv_builder argv = { NULL };

  st->nbd = free_nbd_device ();
  if (st->nbd == NULL) {
    errorf ("no free /dev/nbdN device");
    return EXIT_ERROR;
  }
  st->attach = ATTACH_NBD_CLIENT;
  if (state_save (st) == -1)
    return EXIT_ERROR;
  argv_push (&argv, "nbd-client");
  argv_push (&argv, "-unix");
  argv_push (&argv, sock);
  argv_push (&argv, st->nbd);
  if (st->readonly)
    argv_push (&argv, "-readonly");
  if (proc_run (argv.argv) != 0) {
    errorf ("nbd-client could not connect %s", st->nbd);
    return EXIT_ERROR;
  }
  *device = xstrdup (st->nbd);
  return interrupted ? EXIT_INTERRUPTED : EXIT_OK;
}

/* nbdfuse makes the disk a file in the state directory; a loop device
 * makes the file a block device.  *hold_fd keeps the (autoclear) loop
 * device until the filesystem is mounted on it.
 */
static int
attach_nbdfuse_loop (struct mount_state *st, char **device, int *hold_fd)
{
  char *target;
  int status;

  if (state_add_file (st, STATE_DISK) == -1)
    return EXIT_ERROR;
  status = start_nbdfuse (st, st->n_files - 1, "", NULL);
  if (status != EXIT_OK)
    return status;
  if (interrupted)
    return EXIT_INTERRUPTED;
  target = fuse_target (st, STATE_DISK);
  st->loop = loop_attach (target, st->readonly, hold_fd);
  free (target);
  if (st->loop == NULL || state_save (st) == -1)
    return EXIT_ERROR;
  *device = xstrdup (st->loop);
  return interrupted ? EXIT_INTERRUPTED : EXIT_OK;
}

int
attach_kernel (struct mount_state *st, char **device, int *hold_fd)
{
  *hold_fd = -1;
  if (nbd_module_present ())
    return attach_nbd_client (st, device);
  return attach_nbdfuse_loop (st, device, hold_fd);
}
