/* SPDX-License-Identifier: BSD-3-Clause */
/* The helper VM: a QEMU microvm running Debian's kernel (guests/linux)
 * reads the image from the mount's nbdkit over its private socket, as a
 * virtio disk, and mounts the filesystem with its own kernel.  The host
 * sees the files through sftp-server in the guest on a virtio-serial
 * port and sshfs -o passive on the host (qemount mount --via vm), or
 * receives a tar of them on another port (qemount extract).  The guest
 * has no network device; nothing listens on TCP.
 *
 * The guest reports on its serial console, which QEMU writes to the
 * state directory's console.log: "qemount-guest: init", "... ready
 * FSTYPE", "... error: WHY", "... tar ok".  We watch that file.
 *
 * Parts of the stack, each recorded in the state file (qemu=, sshfs=)
 * as soon as it runs, so that teardown (vm_teardown, called by umount.c)
 * and qemount list find them; QEMU also writes its own qemu.pid, for a
 * set-up killed before the record.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "qemount.h"

#define MACHINE "microvm,x-option-roms=off,isa-serial=on,rtc=on"
/* Part of a saved state's key: a change of the devices below (in
 * start_qemu) must change it too.
 */
#define DEVICES "virtio-blk,virtio-serial:sftp,tar,ctl"
#define GUEST_MEMORY "512"
/* LUKS2's argon2 may want up to 1 GiB to open a keyslot (cryptsetup's
 * default cost); QEMU only takes the memory the guest touches.
 */
#define GUEST_MEMORY_LUKS "1536"
#define KVM_WATCHDOG_MS 1800    /* a working KVM reaches init well before */
/* How long a read-write guest may take to unmount and power off. */
#define RW_POWEROFF_MS 60000
/* To init: ~1.5 s on an idle host, but over 15 s twice in a row on a
 * 2-core host running the test suite (two guests and the decoders'
 * tests at once).  A guest that has not got there by then is taken to
 * be stuck and started once more; stuck guests are rare since the
 * kernel is told the TSC rate (see spawn_qemu), slow hosts are not.
 */
#define TCG_BOOT_MS 60000
#define READY_TIMEOUT_MS 60000  /* mounting a large filesystem can take long */
/* From the start of QEMU to the restored guest's "resumed": well under
 * a second on an idle host; a guest that takes this long did not
 * resume, and is booted instead.
 */
#define RESTORE_MS 30000

#define STATE_QEMU_PID "qemu.pid"
#define STATE_CONSOLE "console.log"
#define STATE_SFTP_SOCKET "sftp.sock"
#define STATE_TAR_SOCKET "tar.sock"
#define STATE_CTL_SOCKET "ctl.sock"
#define QMP_SOCKET "qmp.sock"
#define VERDICT_FILE "kvm-verdict"

/* The first line of the console log starting with prefix, copied into
 * buf (without the prefix).  Kernel panics are reported as errors.  A
 * last line without its newline is still being written: QEMU writes
 * the console as the guest prints it, so it is not said yet (CI saw
 * "refused to moun" of a line the guest had half printed).
 */
static bool
console_find (const char *log, const char *prefix, char *buf, size_t len)
{
  FILE *fp = fopen (log, "re");
  char line[1024];
  bool found = false;

  if (fp == NULL)
    return false;
  while (!found && fgets (line, sizeof line, fp)) {
    char *p = strstr (line, prefix);

    if (p == NULL)
      continue;
    if (strchr (line, '\n') == NULL) {
      int c = getc (fp);

      if (c == EOF)
        break;
      ungetc (c, fp);
    }
    line[strcspn (line, "\r\n")] = '\0';
    snprintf (buf, len, "%s", p + strlen (prefix));
    found = true;
  }
  fclose (fp);
  return found;
}

/* KVM verdict for this host, remembered in the runtime directory. */
static char *
verdict_path (void)
{
  const char *run = runtime_dir (true);

  return run ? xasprintf ("%s/" VERDICT_FILE, run) : NULL;
}

static int
read_verdict (void)             /* 1 works, 0 hangs, -1 unknown */
{
  char *path = verdict_path ();
  char buf[16] = "";
  FILE *fp = path ? fopen (path, "re") : NULL;

  free (path);
  if (fp == NULL)
    return -1;
  if (fgets (buf, sizeof buf, fp) == NULL)
    buf[0] = '\0';
  fclose (fp);
  return strncmp (buf, "kvm", 3) == 0 ? 1 : strncmp (buf, "tcg", 3) == 0 ? 0
    : -1;
}

static void
write_verdict (bool works)
{
  char *path = verdict_path ();
  FILE *fp = path ? fopen (path, "we") : NULL;

  if (fp) {
    fputs (works ? "kvm\n" : "tcg\n", fp);
    fclose (fp);
  }
  free (path);
}

/* Hex, so that any path survives the kernel command line. */
static char *
hex_paths (char *const *paths, size_t n)
{
  size_t len = 1;
  char *s, *p;

  for (size_t i = 0; i < n; ++i)
    len += strlen (paths[i]) * 2 + 1;
  s = p = malloc (len);
  if (s == NULL) {
    perror ("malloc");
    exit (EXIT_ERROR);
  }
  for (size_t i = 0; i < n; ++i) {
    if (i)
      *p++ = ',';
    for (const unsigned char *c = (const unsigned char *) paths[i]; *c; ++c)
      p += sprintf (p, "%02x", *c);
  }
  *p = '\0';
  return s;
}

/* The host's TSC rate in kHz, or 0.  Under TCG the guest reads the
 * host's TSC, and the guest kernel calibrating it against the emulated
 * PIT fails often enough on a busy host that it then hangs at boot
 * (measured: 5 boots in 12); telling it the rate (tsc_early_khz) skips
 * that calibration.
 */
static unsigned long
host_tsc_khz (void)
{
#if defined (__x86_64__) || defined (__i386__)
  struct timespec t0, t1;
  unsigned long long c0, c1;
  double ns;

  clock_gettime (CLOCK_MONOTONIC_RAW, &t0);
  c0 = __builtin_ia32_rdtsc ();
  sleep_ms (20);
  clock_gettime (CLOCK_MONOTONIC_RAW, &t1);
  c1 = __builtin_ia32_rdtsc ();
  ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
  if (ns <= 0 || c1 <= c0)
    return 0;
  return (unsigned long) ((c1 - c0) / ns * 1e6 / 1000 + 0.5) * 1000;
#else
  return 0;
#endif
}

/* Containers (LVM, md, LUKS; guests/linux/init opens them): the guest
 * looks for them when the host saw one, and --lv names the logical
 * volume.
 */
static void
containers_append (const struct vm_request *r, char **args)
{
  char *a;

  if (!r->containers && !r->lv && !(r->key && r->key->len))
    return;
  a = xasprintf ("%s qemount.containers=1%s%s", *args,
                 r->lv ? " qemount.lv=" : "", r->lv ? r->lv : "");
  free (*args);
  *args = a;
}

/* Mount options the filesystem needs (UFS's ufstype=), for the guest's
 * mount: comma-separated words, which the command line keeps intact.
 */
static void
fsopts_append (const struct vm_request *r, char **append)
{
  char *a;

  if (r->fsopts == NULL)
    return;
  a = xasprintf ("%s qemount.fsopts=%s", *append, r->fsopts);
  free (*append);
  *append = a;
}

/* What the guest's init is to do for this mount: on its kernel command
 * line when it boots, on its control port when it is restored.  The
 * host's ps shows the command line; the passphrase never goes there
 * (key_pipe).
 */
static char *
guest_args (const struct vm_request *r)
{
  CLEANUP_FREE char *paths =
    r->n_paths ? hex_paths (r->paths, r->n_paths) : NULL;
  char *args = xasprintf ("qemount.mode=%s%s%s%s%s%s",
                          r->tar ? "tar" : "sftp",
                          r->fstype ? " qemount.fstype=" : "",
                          r->fstype ? r->fstype : "",
                          r->rw ? " qemount.rw=1" : "",
                          paths ? " qemount.paths=" : "",
                          paths ? paths : "");

  containers_append (r, &args);
  fsopts_append (r, &args);
  return args;
}

/* The kernel command line, less what the guest is to do. */
static char *
kernel_append (const char *accel)
{
  unsigned long khz = strcmp (accel, "tcg") == 0 ? host_tsc_khz () : 0;
  char tsc[48] = "";

  if (khz)
    snprintf (tsc, sizeof tsc, " tsc_early_khz=%lu", khz);
  return xasprintf ("console=ttyS0 quiet panic=-1%s", tsc);
}

/* The machine a saved state is made for, as its key records it: what
 * QEMU needs to be given the same to restore it.
 */
char *
vm_machine (const char *accel)
{
  return xasprintf ("%s -m %s%s %s", MACHINE, GUEST_MEMORY,
                    strcmp (accel, "kvm") == 0 ? " -cpu host" : "", DEVICES);
}

/* The LUKS passphrase reaches the guest as the fw_cfg file
 * opt/qemount.key, which QEMU reads once, at start, from its descriptor
 * 3: the read end of a pipe holding the passphrase, written and closed
 * before QEMU starts.  So it is on no command line (QEMU's argv shows
 * "file=/dev/fd/3"), in no file and in no environment; a pipe per start
 * (boot may start QEMU twice).  A virtio-serial port would also do, but
 * needs a conversation with a guest that is still booting; fw_cfg is
 * there before the guest runs.  Returns the read end (not 3), or -1.
 */
#define KEY_FW_CFG "opt/qemount.key"
static int
key_pipe (const struct secret *key)
{
  int p[2], fd;

  if (pipe2 (p, O_CLOEXEC) == -1) {
    errorf ("pipe: %m");
    return -1;
  }
  /* The pipe holds 64 KiB: more than MAX_KEY_BYTES, so this does not
   * block.
   */
  if (write (p[1], key->data, key->len) != (ssize_t) key->len) {
    errorf ("writing the passphrase to QEMU's pipe: %m");
    close (p[0]);
    close (p[1]);
    return -1;
  }
  close (p[1]);
  fd = p[0];
  if (fd == 3) {                /* proc_spawn_fd cannot dup2 3 onto 3 */
    fd = fcntl (p[0], F_DUPFD_CLOEXEC, 4);
    if (fd == -1)
      errorf ("fcntl: %m");
    close (p[0]);
  }
  return fd;
}

/* One start of QEMU: a mount's guest, booted or restored, or the guest
 * that vm_save saves.  All have the same devices, which a restore
 * requires: the disk, and the guest's ports (for sftp, tar and the
 * control line of a restored guest) on one virtio-serial device.
 */
struct qemu_start {
  const char *dir;              /* pid file, console, log and sockets */
  const char *accel;
  const char *append;           /* the kernel command line */
  const char *log;              /* QEMU's stderr */
  const char *drive;            /* -drive: the disk's backend */
  const char *memory;
  int fd3;                      /* descriptor 3, or -1 */
  bool key;                     /* fd3: the LUKS passphrase, for fw_cfg */
  bool incoming;                /* fd3: a saved state to restore */
  bool qmp;                     /* a monitor socket (vm_save) */
  bool die_with_us;
};

static pid_t
start_qemu (const struct qemu_start *q)
{
  static const char *const ports[] = { "sftp", "tar", "ctl" };
  CLEANUP_ARGV struct argv_builder argv = { NULL };

  argv_push (&argv, VM_QEMU);
  argv_push (&argv, "-M");
  argv_push (&argv, MACHINE);
  argv_push (&argv, "-accel");
  argv_push (&argv, q->accel);
  if (strcmp (q->accel, "kvm") == 0) {
    argv_push (&argv, "-cpu");
    argv_push (&argv, "host");
  }
  argv_push (&argv, "-m");
  argv_push (&argv, q->memory);
  argv_push (&argv, "-nodefaults");
  argv_push (&argv, "-no-user-config");
  argv_push (&argv, "-display");
  argv_push (&argv, "none");
  argv_push (&argv, "-no-reboot");
  argv_push (&argv, "-pidfile");
  argv_push_printf (&argv, "%s/" STATE_QEMU_PID, q->dir);
  argv_push (&argv, "-kernel");
  argv_push_printf (&argv, "%s/vmlinux", guest_dir ());
  argv_push (&argv, "-initrd");
  argv_push_printf (&argv, "%s/initrd", guest_dir ());
  argv_push (&argv, "-append");
  argv_push (&argv, q->append);
  argv_push (&argv, "-serial");
  argv_push_printf (&argv, "file:%s/" STATE_CONSOLE, q->dir);
  argv_push (&argv, "-drive");
  argv_push_printf (&argv, "%s,if=none,id=disk", q->drive);
  argv_push (&argv, "-device");
  argv_push (&argv, "virtio-blk-device,drive=disk");
  argv_push (&argv, "-device");
  argv_push (&argv, "virtio-serial-device");
  for (size_t i = 0; i < sizeof ports / sizeof ports[0]; ++i) {
    argv_push (&argv, "-chardev");
    argv_push_printf (&argv, "socket,id=%s,path=%s/%s.sock,server=on,"
                      "wait=off", ports[i], q->dir, ports[i]);
    argv_push (&argv, "-device");
    argv_push_printf (&argv, "virtserialport,chardev=%s,name=qemount.%s",
                      ports[i], ports[i]);
  }
  if (q->key) {
    argv_push (&argv, "-fw_cfg");
    argv_push (&argv, "name=" KEY_FW_CFG ",file=/dev/fd/3");
  }
  if (q->incoming) {
    argv_push (&argv, "-incoming");
    argv_push (&argv, "fd:3");
  }
  if (q->qmp) {
    argv_push (&argv, "-qmp");
    argv_push_printf (&argv, "unix:%s/" QMP_SOCKET ",server=on,wait=off",
                      q->dir);
  }
  return proc_spawn_io (argv.argv, &(struct spawn_io) {
      .in = -1, .out = -1, .fd3 = q->fd3, .log = q->log,
      .die_with_us = q->die_with_us });
}

/* Start a mount's QEMU with accel, recorded as st->qemu_pid: booting
 * the guest, or restoring it from state_fd (>= 0) with append, the
 * kernel command line the state was made with.  -1 if it could not
 * start.
 */
static int
spawn_qemu (struct mount_state *st, const struct vm_request *r,
            const char *accel, int state_fd, const char *append)
{
  CLEANUP_FREE char *console = state_path (st, STATE_CONSOLE);
  CLEANUP_FREE char *pidfile = state_path (st, STATE_QEMU_PID);
  CLEANUP_FREE char *log = state_path (st, "qemu.log");
  CLEANUP_FREE char *sock = state_path (st, STATE_SOCKET);
  CLEANUP_FREE char *boot_append = NULL, *args = NULL, *drive = NULL;
  bool luks = r->key && r->key->len;
  struct qemu_start q = {
    .dir = st->dir, .accel = accel, .log = log, .fd3 = state_fd,
    .memory = luks ? GUEST_MEMORY_LUKS : GUEST_MEMORY, .key = luks,
    .incoming = state_fd >= 0, .die_with_us = st->extract,
  };
  pid_t pid;

  if (state_fd < 0) {
    CLEANUP_FREE char *base = kernel_append (accel);

    args = guest_args (r);
    boot_append = xasprintf ("%s %s", base, args);
    append = boot_append;
  }
  q.append = append;
  q.drive = drive = xasprintf ("file=nbd:unix:%s,format=raw,cache=none%s",
                               sock, r->rw ? "" : ",readonly=on");
  unlink (console);
  unlink (pidfile);
  if (luks) {
    q.fd3 = key_pipe (r->key);
    if (q.fd3 == -1)
      return -1;
  }
  /* An extract's QEMU does not outlive it, even killed. */
  pid = start_qemu (&q);
  if (luks)
    close (q.fd3);
  if (pid == -1)
    return -1;
  st->qemu_pid = pid;
  return state_save (st);
}

/* nbdkit, which the guest needs for its disk, is not running. */
static bool
nbdkit_gone (const struct mount_state *st)
{
  CLEANUP_FREE char *sock = state_path (st, STATE_SOCKET);

  return !proc_is (st->nbdkit_pid, "nbdkit", sock);
}

/* nbdkit gone while the guest needs the disk: that is why the guest
 * failed (its own words, a mount refused or a tar cut short, are only
 * the echo), and it is said here, after nbdkit's last words if it left
 * any.  True if it is gone.
 */
static bool
report_dead_nbdkit (struct mount_state *st)
{
  CLEANUP_FREE char *log = state_path (st, STATE_NBDKIT_LOG);

  if (!nbdkit_gone (st))
    return false;
  proc_forward_log (log);
  errorf ("%s: nbdkit, which serves the image to the helper VM, died",
          st->image);
  return true;
}

struct console_wait {
  const char *console, *want;
  const char *failure;          /* the line that said the guest failed */
  char said[512];
};

/* The guest printed want (ready), or an error or a kernel panic. */
static enum wait_result
console_says (void *opaque)
{
  struct console_wait *c = opaque;
  static const char *const failures[] = {
    "qemount-guest: error: ", "Kernel panic",
  };

  if (console_find (c->console, c->want, c->said, sizeof c->said))
    return WAIT_READY;
  for (size_t i = 0; i < sizeof failures / sizeof failures[0]; ++i) {
    if (console_find (c->console, failures[i], c->said, sizeof c->said)) {
      c->failure = failures[i];
      return WAIT_EXITED;
    }
  }
  return WAIT_PENDING;
}

/* Wait for the guest to print want.  WAIT_EXITED: the guest failed (or
 * QEMU stopped); WAIT_FAILED: something it needs did (nbdkit died, or
 * waitpid).  Both are said, and so is a timeout unless quiet.
 */
static enum wait_result
wait_console (struct mount_state *st, const char *want, int timeout_ms,
              bool quiet)
{
  CLEANUP_FREE char *console = state_path (st, STATE_CONSOLE);
  struct console_wait c = { .console = console, .want = want };
  struct proc_wait w = {
    .child = st->qemu_pid, .timeout_ms = timeout_ms, .interruptible = true,
    .check = console_says, .opaque = &c,
  };
  enum wait_result r = proc_wait_for (&w);

  if (r == WAIT_READY || r == WAIT_INTERRUPTED)
    return r;
  if (r == WAIT_EXITED && c.failure == NULL)
    st->qemu_pid = 0;           /* reaped */
  if (report_dead_nbdkit (st))
    return WAIT_FAILED;
  if (r == WAIT_TIMEOUT) {
    if (!quiet)
      errorf ("%s: the helper VM did not get ready in %d s (see %s)",
              st->image, timeout_ms / 1000, console);
  }
  else if (c.failure && strcmp (c.failure, "Kernel panic") == 0)
    errorf ("%s: the helper VM's kernel panicked:%s", st->image, c.said);
  else if (c.failure)
    errorf ("%s: %s", st->image, c.said);
  else if (r == WAIT_EXITED) {
    CLEANUP_FREE char *log = state_path (st, "qemu.log");

    proc_forward_log (log);
    errorf ("%s: the helper VM stopped before it was ready", st->image);
  }
  return r;
}

/* The exit status for a guest that failed: the one it named ("exit N"
 * before an error that is the user's to fix: a wrong passphrase, no
 * such logical volume), else EXIT_MOUNT_REFUSED.
 */
static int
guest_exit_status (struct mount_state *st)
{
  char *console = state_path (st, STATE_CONSOLE);
  char buf[64];
  int status = EXIT_MOUNT_REFUSED;

  if (console_find (console, "qemount-guest: exit ", buf, sizeof buf)) {
    int n = atoi (buf);

    if (n == EXIT_NO_FILESYSTEM || n == EXIT_NO_KEY)
      status = n;
  }
  free (console);
  return status;
}

static void
kill_qemu (struct mount_state *st)
{
  int ws;

  if (st->qemu_pid <= 0)        /* reaped already */
    return;
  kill (st->qemu_pid, SIGKILL);
  waitpid (st->qemu_pid, &ws, 0);
  st->qemu_pid = 0;
}

/* A connection to QEMU's end of a guest port, or -1 (said unless
 * quiet).
 */
static int
connect_port (const struct mount_state *st, const char *name, bool quiet)
{
  char *sock = state_path (st, name);
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  int fd = -1;

  if (strlen (sock) >= sizeof addr.sun_path) {
    errorf ("%s: path too long for a socket", sock);
    goto out;
  }
  strcpy (addr.sun_path, sock);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || connect (fd, (struct sockaddr *) &addr, sizeof addr) == -1) {
    if (!quiet)
      errorf ("%s: connect: %m", sock);
    if (fd >= 0)
      close (fd);
    fd = -1;
  }
 out:
  free (sock);
  return fd;
}

/* The guest failed, or we gave up waiting (b): stop QEMU; the status to
 * exit with.
 */
static int
guest_failed (struct mount_state *st, enum wait_result b)
{
  kill_qemu (st);
  return b == WAIT_INTERRUPTED ? EXIT_INTERRUPTED :
    b == WAIT_FAILED ? EXIT_ERROR : guest_exit_status (st);
}

/* The guest has printed want, after it has been booted or restored:
 * EXIT_OK, else QEMU is stopped and the status is the one to exit with.
 */
static int
await_ready (struct mount_state *st, const char *want)
{
  enum wait_result b = wait_console (st, want, READY_TIMEOUT_MS, false);

  if (b == WAIT_READY)
    return EXIT_OK;
  return guest_failed (st, b);
}

/* The one line said when a saved state is there but cannot be used. */
static void
notice_booting (const char *why)
{
  warnf ("%s: booting the helper VM instead, and saving it again", why);
}

/* The accelerator a mount with --accel auto uses, once it knows. */
const char *
vm_auto_accel (void)
{
  return access ("/dev/kvm", R_OK | W_OK) == 0 && read_verdict () == 1 ?
    "kvm" : "tcg";
}

/* The accelerator to restore the guest with, or NULL to boot it: auto
 * boots until it knows whether KVM works here, and a guest opening LUKS
 * (more memory, and its key on fw_cfg from the start) always boots, as
 * does every guest with QEMOUNT_VM_STATE=off (to compare, or to rule
 * the saved state out).
 */
static const char *
restore_accel (const struct vm_request *r)
{
  const char *env = getenv ("QEMOUNT_VM_STATE");

  if ((r->key && r->key->len) || (env && strcmp (env, "off") == 0))
    return NULL;
  if (strcmp (r->accel, "auto") != 0)
    return r->accel;
  if (access ("/dev/kvm", R_OK | W_OK) != 0)
    return "tcg";
  switch (read_verdict ()) {
  case 1: return "kvm";
  case 0: return "tcg";
  default: return NULL;
  }
}

struct ctl_wait {
  const struct mount_state *st;
  int fd;
  char said[64];
  size_t len;
  bool closed;                  /* QEMU closed the port, or we failed */
};

/* The restored guest has said, on its control port, that it waits for
 * its line.  The port's socket appears when QEMU starts; what the guest
 * says before we connect waits for us in the guest.
 */
static enum wait_result
ctl_hello (void *opaque)
{
  struct ctl_wait *c = opaque;
  ssize_t n;

  if (c->fd == -1)
    c->fd = connect_port (c->st, STATE_CTL_SOCKET, true);
  if (c->fd == -1)
    return WAIT_PENDING;
  n = recv (c->fd, c->said + c->len, sizeof c->said - c->len, MSG_DONTWAIT);
  if (n > 0)
    c->len += n;
  if (memchr (c->said, '\n', c->len))
    return WAIT_READY;
  c->closed = n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR) ||
    c->len == sizeof c->said;
  return c->closed ? WAIT_EXITED : WAIT_PENDING;
}

/* The line a restored guest waits for: the host's clock, random bytes
 * for the guest's random state (both as guests/linux/resume.c takes
 * them) and what it is to do.
 */
static int
send_ctl_line (int fd, const struct vm_request *r)
{
  CLEANUP_FREE char *args = guest_args (r);
  CLEANUP_FREE char *line = NULL;
  unsigned char seed[32];
  char hex[sizeof seed * 2 + 1];
  struct timespec now;
  ssize_t len;

  if (getrandom (seed, sizeof seed, 0) != sizeof seed) {
    errorf ("getrandom: %m");
    return -1;
  }
  for (size_t i = 0; i < sizeof seed; ++i)
    sprintf (hex + 2 * i, "%02x", seed[i]);
  clock_gettime (CLOCK_REALTIME, &now);
  line = xasprintf ("%lld.%09ld %s %s\n", (long long) now.tv_sec,
                    now.tv_nsec, hex, args);
  len = strlen (line);
  return write (fd, line, len) == len ? 0 : -1;
}

/* Restore the guest from its saved state (vm-state.c) with accel, give
 * it this mount's line, and wait for want.  RESTORE_FAILED if there is
 * no usable state or the guest did not resume from it: said in one
 * line if the state was there, and QEMU is stopped; the caller boots
 * the guest instead.  Else like boot.
 */
#define RESTORE_FAILED (-1)
static int
restore (struct mount_state *st, const struct vm_request *r,
         const char *accel, const char *want)
{
  CLEANUP_FREE char *machine = vm_machine (accel);
  CLEANUP_FREE char *path = vm_state_path (accel);
  CLEANUP_FREE char *console = state_path (st, STATE_CONSOLE);
  CLEANUP_FREE char *append = NULL, *why = NULL;
  struct ctl_wait c = { .st = st, .fd = -1 };
  struct console_wait cw = {
    .console = console, .want = "qemount-guest: resumed",
  };
  struct proc_wait w = {
    .timeout_ms = RESTORE_MS, .interruptible = true,
    .check = ctl_hello, .opaque = &c,
  };
  long start = now_ms (), loaded = 0, started = 0;
  enum wait_result b;
  int fd;

  fd = vm_state_open (accel, machine, &append, &why);
  if (fd == -1) {
    if (why)
      notice_booting (why);
    else
      debugf ("no saved helper VM in %s: booting it", path);
    return RESTORE_FAILED;
  }
  if (spawn_qemu (st, r, accel, fd, append) == -1) {
    close (fd);
    return EXIT_ERROR;
  }
  close (fd);
  started = now_ms ();
  w.child = st->qemu_pid;
  b = proc_wait_for (&w);
  if (b == WAIT_READY) {
    loaded = now_ms ();
    if (send_ctl_line (c.fd, r) == -1) {
      c.closed = true;
      b = WAIT_EXITED;
    }
    else {
      w.check = console_says;
      w.opaque = &cw;
      b = proc_wait_for (&w);
    }
  }
  if (c.fd >= 0)
    close (c.fd);
  if (b == WAIT_READY) {
    debugf ("restored the helper VM from %s (%s) in %ld ms: checked in "
            "%ld, loaded in %ld, resumed in %ld", path, accel,
            now_ms () - start, started - start, loaded - started,
            now_ms () - loaded);
    return await_ready (st, want);
  }
  if (b == WAIT_EXITED && !c.closed && cw.failure == NULL)
    st->qemu_pid = 0;           /* reaped */
  kill_qemu (st);
  if (b == WAIT_INTERRUPTED)
    return EXIT_INTERRUPTED;
  if (report_dead_nbdkit (st))
    return EXIT_ERROR;
  why = xasprintf ("%s: the helper VM did not resume from it%s%s", path,
                   cw.failure ? ": " : "", cw.failure ? cw.said : "");
  notice_booting (why);
  return RESTORE_FAILED;
}

/* Start the guest: restored from its saved state if it can be, else
 * booted, KVM if asked for or known to work (auto tries it once with a
 * watchdog and remembers the verdict), else TCG.  On success QEMU
 * (st->qemu_pid) runs and the guest has printed want.  *save: the
 * accelerator to save the guest for again once this one is done with
 * (vm_save), or NULL.
 */
static int
boot (struct mount_state *st, const struct vm_request *r, const char *want,
      const char **save)
{
  const char *accel = restore_accel (r);
  bool try_kvm = false, probing = false;
  enum wait_result b;
  int status;

  *save = NULL;
  if (!guest_built ()) {
    errorf ("the helper VM is not built in %s: run qemount guest build "
            "(it downloads Debian's kernel package)", guest_dir ());
    return EXIT_NEEDS_VM;
  }
  if (accel) {
    status = restore (st, r, accel, want);
    if (status != RESTORE_FAILED)
      return status;
    *save = accel;
  }
  if (strcmp (r->accel, "kvm") == 0)
    try_kvm = true;
  else if (strcmp (r->accel, "auto") == 0 && access ("/dev/kvm", R_OK | W_OK) == 0) {
    int v = read_verdict ();

    try_kvm = v != 0;
    probing = v == -1;
  }

  if (try_kvm) {
    if (spawn_qemu (st, r, "kvm", -1, NULL) == -1)
      return EXIT_ERROR;
    b = wait_console (st, "qemount-guest: init",
                      strcmp (r->accel, "kvm") == 0 ? TCG_BOOT_MS :
                      KVM_WATCHDOG_MS, strcmp (r->accel, "kvm") != 0);
    if (b == WAIT_READY) {
      if (probing)
        write_verdict (true);
      debugf ("KVM works: the guest reached init");
      return await_ready (st, want);
    }
    kill_qemu (st);
    if (b == WAIT_INTERRUPTED)
      return EXIT_INTERRUPTED;
    if (b == WAIT_FAILED)
      return EXIT_ERROR;
    if (strcmp (r->accel, "kvm") == 0)
      return EXIT_NEEDS_VM;
    if (b == WAIT_TIMEOUT || probing) {
      warnf ("KVM does not boot the helper VM on this host; using TCG "
             "(remembered in %s/" VERDICT_FILE ")", runtime_dir (false));
      write_verdict (false);
    }
  }
  /* A guest that has not reached init in TCG_BOOT_MS is stuck in its
   * kernel: one more try.
   */
  for (int attempt = 1; ; ++attempt) {
    if (spawn_qemu (st, r, "tcg", -1, NULL) == -1)
      return EXIT_ERROR;
    b = wait_console (st, "qemount-guest: init", TCG_BOOT_MS,
                      attempt == 1);
    if (b != WAIT_TIMEOUT || attempt == 2)
      break;
    warnf ("the helper VM is stuck in its kernel; starting it again");
    kill_qemu (st);
  }
  if (b != WAIT_READY)
    return guest_failed (st, b);

  return await_ready (st, want);
}

/* sshfs -o passive speaks sftp on its stdin and stdout: the guest's
 * port, through QEMU's socket.  Returns its pid.
 */
static pid_t
spawn_sshfs (struct mount_state *st, const struct vm_request *r)
{
  CLEANUP_FREE char *log = state_path (st, "sshfs.log");
  CLEANUP_ARGV struct argv_builder argv = { NULL };
  int fd = connect_port (st, STATE_SFTP_SOCKET, false);
  pid_t pid;

  if (fd == -1)
    return -1;
  argv_push (&argv, "sshfs");
  argv_push (&argv, "-f");
  argv_push (&argv, "-o");
  /* max_read: SFTP reads of 64 KiB (sshfs's most; its default is
   * 32 KiB), half the requests sftp-server handles per MiB, and under
   * TCG every request costs the guest's emulated CPU.
   */
  argv_push_printf (&argv, "passive,uid=%ld,gid=%ld,max_read=65536,%s%s"
                    "default_permissions", r->uid, r->gid,
                    r->rw ? "rw," : "ro,",
                    geteuid () == 0 ? "allow_other," : "");
  argv_push (&argv, ":/mnt");
  argv_push (&argv, st->mountpoint);
  pid = proc_spawn_io (argv.argv, &(struct spawn_io) {
      .in = fd, .out = fd, .fd3 = -1, .log = log });
  close (fd);
  return pid;
}

/* sshfs has mounted the guest's files on the mount point. */
static enum wait_result
sshfs_mounted (void *opaque)
{
  const struct mount_state *st = opaque;
  char *fstype = NULL;
  bool m = is_mount_point (st->mountpoint, NULL, &fstype) && fstype &&
    strcmp (fstype, "fuse.sshfs") == 0;

  free (fstype);
  return m ? WAIT_READY : WAIT_PENDING;
}

/* qemount mount --via vm, once nbdkit runs: boot, then sshfs. */
int
vm_mount (struct mount_state *st, const struct vm_request *r)
{
  struct proc_wait w = {
    .timeout_ms = 20000, .interruptible = true, .check = sshfs_mounted,
    .opaque = st,
  };
  const char *save;
  int status;

  st->attach = ATTACH_VM;
  status = boot (st, r, "qemount-guest: ready", &save);
  if (status != EXIT_OK)
    return status;

  w.child = spawn_sshfs (st, r);
  if (w.child == -1)
    return EXIT_ERROR;
  st->sshfs_pid = w.child;
  if (state_save (st) == -1)
    return EXIT_ERROR;
  switch (proc_wait_for (&w)) {
  case WAIT_READY:
    if (save)
      vm_save (save);
    return EXIT_OK;
  case WAIT_EXITED: {
    CLEANUP_FREE char *log = state_path (st, "sshfs.log");

    proc_forward_log (log);
    errorf ("%s: sshfs could not mount the helper VM's files on %s",
            st->image, st->mountpoint);
    return EXIT_ERROR;
  }
  case WAIT_INTERRUPTED:
    return EXIT_INTERRUPTED;
  case WAIT_TIMEOUT:
    errorf ("%s: sshfs did not mount in 20 s", st->image);
    return EXIT_ERROR;
  default:                      /* said */
    return EXIT_ERROR;
  }
}

/* Part of teardown (umount.c): the sshfs mount, sshfs, QEMU.  Nothing to
 * do for a mount that is not a VM mount.
 */
int
vm_teardown (struct mount_state *st)
{
  char *qpid = state_path (st, STATE_QEMU_PID);
  pid_t sshfs = st->sshfs_pid;
  pid_t qemu = st->qemu_pid ? st->qemu_pid : proc_read_pidfile (qpid);
  int status = EXIT_OK;

  if (st->mountpoint && sshfs > 0) {
    char *fstype = NULL;

    if (is_mount_point (st->mountpoint, NULL, &fstype) && fstype &&
        strcmp (fstype, "fuse.sshfs") == 0) {
      const char *argv[] = { "fusermount3", "-u", st->mountpoint, NULL };

      debugf ("unmounting %s", st->mountpoint);
      if (proc_run ((char **) argv) != 0) {
        report_busy (st->mountpoint);
        status = EXIT_BUSY;
      }
    }
    free (fstype);
  }
  if (status == EXIT_OK && sshfs > 0 &&
      proc_stop (sshfs, "sshfs", st->mountpoint, 2000) == -1)
    status = EXIT_ERROR;
  /* Read-write: the guest unmounts its filesystem and powers off once
   * sftp-server sees the end of its port; killing QEMU sooner would lose
   * what the guest has not written back yet, so that is an error, not a
   * quiet success.  A guest on a loaded host under TCG can take a while.
   * (Without sshfs nothing was written: a failed mount stops at once.)
   */
  if (status == EXIT_OK && qemu > 0 && !st->readonly && sshfs > 0 &&
      !proc_wait (qemu, VM_QEMU, qpid, RW_POWEROFF_MS)) {
    errorf ("%s: the helper VM did not finish writing back and power off "
            "within %d s: stopping it; writes since the last sync may be "
            "lost", st->mountpoint ? st->mountpoint : st->image,
            RW_POWEROFF_MS / 1000);
    status = EXIT_ERROR;
    proc_stop (qemu, VM_QEMU, qpid, 0);
  }
  else if (status == EXIT_OK && qemu > 0 &&
           proc_stop (qemu, VM_QEMU, qpid, 0) == -1)
    status = EXIT_ERROR;
  free (qpid);
  return status;
}

/* Why a VM mount is broken: its QEMU or its sshfs is not running (the
 * sshfs mount is gone with it, or answers "Transport endpoint is not
 * connected"); NULL if both run.  Both are named when both are gone:
 * either one dying soon takes the other with it.
 */
const char *
vm_broken (const struct mount_state *st)
{
  char *qpid = state_path (st, STATE_QEMU_PID);
  bool qemu = proc_is (st->qemu_pid, VM_QEMU, qpid);
  bool sshfs = st->mountpoint == NULL ||
    proc_is (st->sshfs_pid, "sshfs", st->mountpoint);

  free (qpid);
  if (!qemu && !sshfs)
    return "the helper VM (QEMU) and sshfs are not running";
  if (!qemu)
    return "the helper VM (QEMU) is not running";
  if (!sshfs)
    return "sshfs is not running";
  return NULL;
}

/* qemount extract: a tar of the guest's mount, from the tar port through
 * QEMU's socket, copied to out_fd.  The guest waits for our "g" before
 * it sends (QEMU drops what a port sends with no one connected), says
 * "tar ok N" on its console after N bytes, and waits for our "a" before
 * powering off (QEMU may drop what we have not read when it exits).
 */
int
vm_extract (struct mount_state *st, struct vm_request *r, int out_fd,
            bool progress)
{
  char *console = state_path (st, STATE_CONSOLE);
  char buf[65536], msg[512];
  uint64_t total = 0, expected = 0;
  bool have_count = false, acked = false, eof = false;
  long last = 0, acked_at = 0;
  const char *save;
  int fd = -1, status, ws;

  r->tar = true;
  st->attach = ATTACH_VM;
  status = boot (st, r, "qemount-guest: ready", &save);
  if (status != EXIT_OK)
    goto out;
  fd = connect_port (st, STATE_TAR_SOCKET, false);
  if (fd == -1 || write (fd, "g", 1) != 1) {
    status = EXIT_ERROR;
    goto out;
  }

  for (;;) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    ssize_t n = 0;

    if (waitpid (st->qemu_pid, &ws, WNOHANG) == st->qemu_pid) {
      st->qemu_pid = 0;
      break;
    }
    if (!eof && poll (&p, 1, 100) > 0) {
      n = read (fd, buf, sizeof buf);
      if (n == 0)
        eof = true;
      else if (n < 0 && errno != EINTR && errno != EAGAIN)
        eof = true;
    }
    else if (eof)
      sleep_ms (50);
    for (ssize_t done = 0, w; n > 0 && done < n; done += w) {
      w = write (out_fd, buf + done, n - done);
      if (w == -1 && errno == EPIPE) {
        r->reader_gone = true;  /* the caller's to handle: not an error */
        status = EXIT_ERROR;
        goto out;
      }
      if (w <= 0) {
        errorf ("writing the tar: %m");
        status = EXIT_ERROR;
        goto out;
      }
    }
    if (n > 0)
      total += n;
    if (interrupted) {
      status = EXIT_INTERRUPTED;
      goto out;
    }
    if (!have_count &&
        console_find (console, "qemount-guest: tar ok ", msg, sizeof msg)) {
      expected = strtoull (msg, NULL, 10);
      have_count = true;
    }
    if (have_count && !acked && total >= expected) {
      if (write (fd, "a", 1) != 1) {
        errorf ("the helper VM's tar port: %m");
        status = EXIT_ERROR;
        goto out;
      }
      acked = true;
      acked_at = now_ms ();
    }
    if (acked && now_ms () - acked_at > 10000)
      break;                    /* it got what it wanted; stop it */
    if (!have_count &&
        console_find (console, "qemount-guest: error: ", msg, sizeof msg))
      break;
    if (progress && now_ms () - last > 500) {
      char size[32];

      format_size (size, sizeof size, total);
      fprintf (stderr, "\rqemount: extract: %s   ", size);
      last = now_ms ();
    }
  }
  if (progress)
    fputc ('\n', stderr);
  if (acked && total == expected)
    status = EXIT_OK;
  else if (report_dead_nbdkit (st))
    status = EXIT_ERROR;
  else {
    if (console_find (console, "qemount-guest: error: ", msg, sizeof msg))
      errorf ("%s: %s", st->image, msg);
    else if (have_count)
      errorf ("%s: the tar is %llu bytes, but %llu arrived", st->image,
              (unsigned long long) expected, (unsigned long long) total);
    else
      errorf ("%s: the helper VM stopped before the tar was complete (see "
              "%s)", st->image, console);
    status = EXIT_ERROR;
  }
 out:
  if (st->qemu_pid > 0)     /* failed, or acknowledged and slow to go */
    kill_qemu (st);
  if (fd >= 0)
    close (fd);
  free (console);
  if (status == EXIT_OK && save)
    vm_save (save);
  return status;
}

/* Boot a guest to be saved (guests/linux/init, qemount.mode=saved) with
 * accel, and save it once it waits for its disk (vm-state.c).  Its disk
 * has no backend yet: a restored guest gets the mount's.  0, or -1 after
 * an error; the saving QEMU is gone either way.
 */
int
vm_save (const char *accel)
{
  static const char *const files[] = {
    STATE_QEMU_PID, STATE_CONSOLE, "qemu.log", STATE_SFTP_SOCKET,
    STATE_TAR_SOCKET, STATE_CTL_SOCKET, QMP_SOCKET,
  };
  const char *run = runtime_dir (true);
  CLEANUP_FREE char *dir = run ? xasprintf ("%s/save.XXXXXX", run) : NULL;
  CLEANUP_FREE char *base = kernel_append (accel);
  CLEANUP_FREE char *append = xasprintf ("%s qemount.mode=saved", base);
  CLEANUP_FREE char *machine = vm_machine (accel);
  CLEANUP_FREE char *console = NULL, *log = NULL, *qmp = NULL;
  struct console_wait c = { .want = "qemount-guest: saved" };
  struct proc_wait w = {
    .timeout_ms = TCG_BOOT_MS, .interruptible = true, .check = console_says,
    .opaque = &c,
  };
  enum wait_result b;
  int ret = -1, ws;

  if (dir == NULL || mkdtemp (dir) == NULL) {
    errorf ("cannot make a directory for the helper VM to be saved in %s: "
            "%m", run ? run : "the runtime directory");
    return -1;
  }
  c.console = console = xasprintf ("%s/" STATE_CONSOLE, dir);
  log = xasprintf ("%s/qemu.log", dir);
  qmp = xasprintf ("%s/" QMP_SOCKET, dir);
  w.child = start_qemu (&(struct qemu_start) {
      .dir = dir, .accel = accel, .append = append, .log = log,
      .drive = "driver=null-co,readonly=on", .memory = GUEST_MEMORY,
      .fd3 = -1, .qmp = true, .die_with_us = true });
  if (w.child == -1)
    goto out;
  b = proc_wait_for (&w);
  if (b == WAIT_READY)
    ret = vm_state_write (accel, machine, append, qmp);
  else if (b != WAIT_INTERRUPTED) {
    if (b == WAIT_EXITED && c.failure == NULL)
      proc_forward_log (log);
    errorf ("the helper VM to be saved %s",
            c.failure ? c.said : "did not get ready");
  }
  if (b != WAIT_EXITED || c.failure) {
    kill (w.child, SIGKILL);
    waitpid (w.child, &ws, 0);
  }
 out:
  for (size_t i = 0; i < sizeof files / sizeof files[0]; ++i) {
    CLEANUP_FREE char *p = xasprintf ("%s/%s", dir, files[i]);

    unlink (p);
  }
  rmdir (dir);
  return ret;
}
