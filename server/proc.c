/* SPDX-License-Identifier: BSD-3-Clause */
/* Child processes: starting them detached from our terminal, waiting for
 * them to be ready, and stopping recorded ones safely.
 *
 * A recorded pid may have been reused by an unrelated process since it
 * was written down, so we only ever signal a pid after checking that
 * /proc/PID/cmdline is still that program with an argument only our
 * instance has (its socket or mount point).  Nothing is killed by name.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "qemount.h"

volatile sig_atomic_t interrupted;

static void
on_interrupt (int sig)
{
  interrupted = sig;
}

/* SIGINT, SIGTERM and SIGHUP only set a flag: the set-up checks it
 * between steps and tears down what it started.  SIGPIPE is ignored: a
 * reader that goes away (qemount extract -o - | head) is a write that
 * fails with EPIPE, handled where it happens, not a death that leaves
 * the helper VM running.
 */
void
catch_interrupts (void)
{
  struct sigaction sa = { .sa_handler = on_interrupt };

  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGHUP, &sa, NULL);
  signal (SIGPIPE, SIG_IGN);
}

void
sleep_ms (int ms)
{
  struct timespec ts = { .tv_sec = ms / 1000,
                         .tv_nsec = (ms % 1000) * 1000000L };

  nanosleep (&ts, NULL);        /* an interrupt cuts it short: fine */
}

/* Room for arg and the NULL after it. */
static void
argv_append (struct argv_builder *a, char *arg)
{
  if (a->n + 2 > a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 16;
    char **p = realloc (a->argv, cap * sizeof *p);

    if (p == NULL) {
      perror ("realloc");
      exit (EXIT_ERROR);
    }
    a->argv = p;
    a->cap = cap;
  }
  a->argv[a->n++] = arg;
  a->argv[a->n] = NULL;
}

void
argv_push (struct argv_builder *a, const char *arg)
{
  argv_append (a, xstrdup (arg));
}

void
argv_push_printf (struct argv_builder *a, const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  argv_append (a, xvasprintf (fs, args));
  va_end (args);
}

void
argv_free (struct argv_builder *a)
{
  for (size_t i = 0; i < a->n; ++i)
    free (a->argv[i]);
  free (a->argv);
  a->argv = NULL;
  a->n = a->cap = 0;
}

static void
debug_argv (char *const argv[])
{
  char line[1024];
  size_t len = 0;

  if (!verbose)
    return;
  line[0] = '\0';
  for (size_t i = 0; argv[i] && len < sizeof line; ++i)
    len += snprintf (line + len, sizeof line - len, "%s%s",
                     i ? " " : "", argv[i]);
  debugf ("running: %s", line);
}

/* Start argv (argv[0] found in $PATH) in a session of its own, so that
 * Ctrl-C in our terminal and the terminal going away reach only us:
 * we decide what to tear down.  stdin is /dev/null; stdout and stderr go
 * to log_path, or stdout to /dev/null and stderr to ours if NULL.
 */
pid_t
proc_spawn (char *const argv[], const char *log_path)
{
  return proc_spawn_io (argv, &(struct spawn_io) {
      .in = -1, .out = -1, .fd3 = -1, .log = log_path });
}

/* path opened on descriptor target. */
static bool
open_as (int target, const char *path, int flags)
{
  int fd = open (path, flags, 0600);

  if (fd == -1)
    return false;
  if (fd != target) {
    if (dup2 (fd, target) == -1)
      return false;
    close (fd);
  }
  return true;
}

/* fd (ours, unless -1) on descriptor target, else path. */
static bool
fd_or_open_as (int target, int fd, const char *path, int flags)
{
  if (fd >= 0)
    return dup2 (fd, target) != -1;
  return open_as (target, path, flags);
}

/* In the child of proc_spawn_io: returns only if it cannot run argv,
 * with errno set.
 */
static void
exec_child (char *const argv[], const struct spawn_io *io, pid_t parent)
{
  static const int defaults[] = { SIGINT, SIGTERM, SIGHUP, SIGPIPE };
  const int log_flags = O_WRONLY | O_CREAT | O_APPEND;
  sigset_t none;

  setsid ();
  for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; ++i)
    signal (defaults[i], SIG_DFL);
  sigemptyset (&none);
  sigprocmask (SIG_SETMASK, &none, NULL);
  /* If we died before the prctl, the child was already reparented. */
  if (parent &&
      (prctl (PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid () != parent)) {
    errno = ESRCH;
    return;
  }
  if ((io->fd3 >= 0 && dup2 (io->fd3, 3) == -1) ||
      !fd_or_open_as (0, io->in, "/dev/null", O_RDONLY))
    return;
  if (io->out >= 0 || io->log == NULL) {
    if (!fd_or_open_as (1, io->out, "/dev/null", O_WRONLY) ||
        (io->log && !open_as (2, io->log, log_flags)))
      return;
  }
  else if (!open_as (1, io->log, log_flags) || dup2 (1, 2) == -1)
    return;
  execvp (argv[0], argv);
}

/* Start argv as proc_spawn does, with the descriptors io chooses.  fd3
 * must not be 3 itself (dup2 onto itself would keep its close-on-exec).
 */
pid_t
proc_spawn_io (char *const argv[], const struct spawn_io *io)
{
  pid_t parent = getpid (), pid;
  int report[2], err;
  ssize_t n;

  debug_argv (argv);
  /* The child writes why it could not run argv to this pipe, which a
   * successful exec closes.
   */
  if (pipe2 (report, O_CLOEXEC) == -1) {
    errorf ("pipe: %m");
    return -1;
  }
  pid = fork ();
  if (pid == 0) {
    close (report[0]);
    exec_child (argv, io, io->die_with_us ? parent : 0);
    err = errno;
    while (write (report[1], &err, sizeof err) == -1 && errno == EINTR)
      ;
    _exit (127);
  }
  close (report[1]);
  if (pid == -1) {
    errorf ("fork: %m");
    close (report[0]);
    return -1;
  }
  while ((n = read (report[0], &err, sizeof err)) == -1 && errno == EINTR)
    ;
  close (report[0]);
  if (n == sizeof err) {
    int ws;

    proc_wait_child (pid, &ws);
    errno = err;
    errorf ("cannot run %s: %m", argv[0]);
    return -1;
  }
  return pid;
}

/* Wait for our child pid to exit; returns its wait status. */
int
proc_wait_child (pid_t pid, int *wstatus)
{
  while (waitpid (pid, wstatus, 0) == -1) {
    if (errno != EINTR) {
      errorf ("waitpid: %m");
      return -1;
    }
  }
  return 0;
}

/* Run argv to completion, its messages to our stderr.  Returns its exit
 * status, or -1 if it could not run or was killed by a signal.
 */
int
proc_run (char *const argv[])
{
  pid_t pid = proc_spawn (argv, NULL);
  int ws;

  if (pid == -1 || proc_wait_child (pid, &ws) == -1)
    return -1;
  if (WIFEXITED (ws))
    return WEXITSTATUS (ws);
  errorf ("%s was killed by signal %d", argv[0], WTERMSIG (ws));
  return -1;
}

/* The pid in a pid file, or 0 if there is none (yet).  nbdkit writes
 * "PID\n" and nbdfuse "PID" in one write each, after creating the file,
 * so we may see it empty but not half written.
 */
pid_t
proc_read_pidfile (const char *path)
{
  char buf[32], *end;
  ssize_t n;
  long v;
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  if (fd == -1)
    return 0;
  n = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  v = strtol (buf, &end, 10);
  if (v <= 0 || v > INT32_MAX || (*end != '\0' && strcmp (end, "\n") != 0))
    return 0;
  return v;
}

long
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

/* Wait until w->check says ready (or failed), our child w->child (if
 * > 0) exits (its status in w->wstatus), the time is up, or (if
 * w->interruptible) we are interrupted, whichever comes first.
 */
enum wait_result
proc_wait_for (struct proc_wait *w)
{
  long deadline = now_ms () + w->timeout_ms;

  for (;;) {
    enum wait_result r = w->check ? w->check (w->opaque) : WAIT_PENDING;

    if (r != WAIT_PENDING)
      return r;
    if (w->child > 0) {
      pid_t c = waitpid (w->child, &w->wstatus, WNOHANG);

      if (c == w->child)
        return WAIT_EXITED;
      if (c == -1 && errno != EINTR) {
        errorf ("waitpid: %m");
        return WAIT_FAILED;
      }
    }
    if (interrupted && w->interruptible)
      return WAIT_INTERRUPTED;
    if (w->timeout_ms >= 0 && now_ms () >= deadline)
      return WAIT_TIMEOUT;
    sleep_ms (10);
  }
}

struct pidfile_wait {
  const char *path;
  pid_t *pid;
};

static enum wait_result
pidfile_written (void *opaque)
{
  struct pidfile_wait *p = opaque;

  *p->pid = proc_read_pidfile (p->path);
  return *p->pid > 0 ? WAIT_READY : WAIT_PENDING;
}

/* Wait until pidfile names a process.  child, if > 0, is ours: if it
 * exits first, it failed to start.  Sets *pid when ready.  An interrupt
 * ends the wait only if interruptible; a negative timeout_ms is none.
 */
enum wait_result
proc_wait_pidfile (const char *pidfile, pid_t child, int timeout_ms,
                   bool interruptible, pid_t *pid)
{
  struct pidfile_wait p = { .path = pidfile, .pid = pid };

  return proc_wait_for (&(struct proc_wait) {
      .child = child, .timeout_ms = timeout_ms,
      .interruptible = interruptible, .check = pidfile_written,
      .opaque = &p });
}

/* True if pid runs program (the last component of its argv[0]) with
 * marker as one of its arguments (if marker is not NULL).  Zombies and
 * kernel threads have an empty cmdline and never match.
 */
bool
proc_is (pid_t pid, const char *program, const char *marker)
{
  char path[64], buf[8192];
  const char *argv0, *base;
  bool found = marker == NULL;
  ssize_t n;
  int fd;

  if (pid <= 0)
    return false;
  snprintf (path, sizeof path, "/proc/%d/cmdline", (int) pid);
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return false;
  n = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (n <= 0)
    return false;
  buf[n] = '\0';

  argv0 = buf;
  base = strrchr (argv0, '/');
  base = base ? base + 1 : argv0;
  if (strcmp (base, program) != 0)
    return false;
  for (const char *a = argv0 + strlen (argv0) + 1; !found && a < buf + n;
       a += strlen (a) + 1)
    found = strcmp (a, marker) == 0;
  return found;
}

/* Whether pid still runs.  A child of ours that has not been reaped is
 * ours for certain (it may be a wrapper script with another name);
 * anything else must pass proc_is().
 */
static bool
running (pid_t pid, const char *program, const char *marker)
{
  int ws;
  pid_t r = pid > 0 ? waitpid (pid, &ws, WNOHANG) : -1;

  if (r == pid)
    return false;               /* our child, exited: reaped now */
  if (r == 0)
    return true;                /* our child, running */
  return proc_is (pid, program, marker);
}

/* Wait up to ms for a recorded process to exit by itself: true if it
 * has (or was not running).
 */
bool
proc_wait (pid_t pid, const char *program, const char *marker, int ms)
{
  for (int waited = 0; ; waited += 10) {
    if (!running (pid, program, marker))
      return true;
    if (waited >= ms)
      return false;
    sleep_ms (10);
  }
}

/* Stop a recorded process if it still is ours: give it grace_ms to exit
 * by itself (nbdfuse does once its file is unmounted), then SIGTERM, then
 * SIGKILL after 5 more seconds.
 */
int
proc_stop (pid_t pid, const char *program, const char *marker, int grace_ms)
{
  if (proc_wait (pid, program, marker, grace_ms))
    return 0;
  debugf ("stopping %s (pid %d)", program, (int) pid);
  kill (pid, SIGTERM);
  for (int waited = 0; waited < 7000; waited += 10) {
    if (!running (pid, program, marker))
      return 0;
    if (waited == 5000) {
      warnf ("%s (pid %d) did not stop within 5 seconds: killing it",
             program, (int) pid);
      kill (pid, SIGKILL);
    }
    sleep_ms (10);
  }
  errorf ("%s (pid %d) does not stop", program, (int) pid);
  return -1;
}

/* Copy a helper's log to our stderr: its own words say why it failed. */
void
proc_forward_log (const char *log_path)
{
  char buf[4096];
  ssize_t n;
  int fd = open (log_path, O_RDONLY | O_CLOEXEC);

  if (fd == -1)
    return;
  fflush (stderr);
  while ((n = read (fd, buf, sizeof buf)) > 0)
    if (write (STDERR_FILENO, buf, n) != n)
      break;
  close (fd);
}

/* The directory holding this binary, or NULL: run from the build tree,
 * it is server/, next to the plugin and the guest builder.
 */
static const char *
proc_self_dir (void)
{
  static char dir[PATH_MAX];
  ssize_t n = readlink ("/proc/self/exe", dir, sizeof dir - 1);
  char *slash;

  if (n <= 0)
    return NULL;
  dir[n] = '\0';
  slash = strrchr (dir, '/');
  if (slash == NULL)
    return NULL;
  *slash = '\0';
  return dir;
}

/* Where a file of ours is: $env (if env is not NULL and it is set);
 * else name in the build tree this binary runs from (as server/qemount),
 * if witness is there (access mode); else installed.
 */
char *
find_ours (const char *env, const char *name, const char *witness,
           int mode, const char *installed)
{
  const char *value = env ? getenv (env) : NULL;
  const char *dir = proc_self_dir ();

  if (value && *value)
    return xstrdup (value);
  if (dir) {
    CLEANUP_FREE char *w = xasprintf ("%s/../%s", dir, witness);

    if (access (w, mode) == 0)
      return xasprintf ("%s/../%s", dir, name);
  }
  return xstrdup (installed);
}
