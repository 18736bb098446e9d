/* SPDX-License-Identifier: BSD-3-Clause */
/* The helper VM's saved state: a guest booted up to the point where it
 * waits for its disk (guests/linux/init, qemount.mode=saved), which
 * vm.c restores instead of booting a kernel for every mount.
 *
 * One file per accelerator: a 4 KiB text header, then QEMU's migration
 * stream, which QEMU reads from our descriptor where the header ends
 * (-incoming fd:3; QEMU 7.2 has no file: URI).  The header says what
 * the state was made with: the QEMU binary, the machine and memory, the
 * guest's kernel and initrd, the accelerator and the host's CPU.  A
 * state made with anything else cannot be restored, so it is "stale";
 * it is "damaged" if it is short or its stream fails its checksum.
 * Either way vm.c boots the guest and saves it again.  The file is made
 * whole or not at all (lib/outfile.c), and only ever read afterwards:
 * every mount restores its own QEMU from it.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <xxhash.h>

#include "outfile.h"
#include "qemount.h"

#define HEADER_SIZE 4096
#define MAGIC "qemount-vm-state 1\n"
#define MIGRATE_TIMEOUT_MS 60000

/* The identity of the file at path for the key: device, inode, size
 * and mtime (build-guest replaces its files, never rewrites them), not
 * the path, which may be spelt in more than one way.  Hashing the kernel
 * and initrd (100 MiB) at every mount would cost more than the restore.
 */
static char *
file_identity (const char *path)
{
  struct stat s;

  if (stat (path, &s) == -1)
    return xasprintf ("missing (%s)", path);
  return xasprintf ("%llx:%llu %lld %lld.%09ld",
                    (unsigned long long) s.st_dev,
                    (unsigned long long) s.st_ino, (long long) s.st_size,
                    (long long) s.st_mtim.tv_sec, s.st_mtim.tv_nsec);
}

/* The file that PATH runs for name. */
static char *
find_program (const char *name)
{
  const char *path = getenv ("PATH");
  CLEANUP_FREE char *copy = xstrdup (path && *path ? path : "/usr/bin:/bin");
  char *save = NULL;

  for (char *dir = strtok_r (copy, ":", &save); dir;
       dir = strtok_r (NULL, ":", &save)) {
    char *p = xasprintf ("%s/%s", *dir ? dir : ".", name);

    if (access (p, X_OK) == 0)
      return p;
    free (p);
  }
  return xstrdup (name);
}

/* The host CPU: a KVM state needs the same one; recorded under TCG too. */
static char *
cpu_identity (void)
{
  FILE *fp = fopen ("/proc/cpuinfo", "re");
  char line[8192], model[256] = "unknown";
  XXH64_hash_t flags = 0;

  while (fp && fgets (line, sizeof line, fp)) {
    line[strcspn (line, "\n")] = '\0';
    if (strncmp (line, "model name", 10) == 0 && strchr (line, ':'))
      snprintf (model, sizeof model, "%s", strchr (line, ':') + 2);
    else if (strncmp (line, "flags", 5) == 0 && strchr (line, ':')) {
      flags = XXH64 (line, strlen (line), 0);
      break;                    /* the first CPU's */
    }
  }
  if (fp)
    fclose (fp);
  return xasprintf ("%s, flags %016llx", model, (unsigned long long) flags);
}

/* What a state must have been made with to be restored: one "name
 * value" line each.
 */
static char *
state_key (const char *accel, const char *machine)
{
  CLEANUP_FREE char *qemu_path = find_program (VM_QEMU);
  CLEANUP_FREE char *qemu = file_identity (qemu_path);
  CLEANUP_FREE char *kpath = xasprintf ("%s/vmlinux", guest_dir ());
  CLEANUP_FREE char *ipath = xasprintf ("%s/initrd", guest_dir ());
  CLEANUP_FREE char *kernel = file_identity (kpath);
  CLEANUP_FREE char *initrd = file_identity (ipath);
  CLEANUP_FREE char *cpu = cpu_identity ();

  return xasprintf (MAGIC "qemu %s\nmachine %s\nkernel %s\ninitrd %s\n"
                    "accel %s\ncpu %s\n", qemu, machine, kernel, initrd,
                    accel, cpu);
}

/* The state for accel: next to the guest's files when we may write
 * there (qemount guest build), else in the user's cache directory,
 * named after the guest directory it belongs to.
 */
char *
vm_state_path (const char *accel)
{
  const char *cache = getenv ("XDG_CACHE_HOME");
  const char *home = getenv ("HOME");
  CLEANUP_FREE char *base = NULL;

  if (access (guest_dir (), W_OK) == 0)
    return xasprintf ("%s/vm-state.%s", guest_dir (), accel);
  base = cache && *cache ? xstrdup (cache) :
    xasprintf ("%s/.cache", home && *home ? home : "/tmp");
  return xasprintf ("%s/qemount/vm-state/%016llx.%s", base,
                    (unsigned long long) XXH64 (guest_dir (),
                                                strlen (guest_dir ()), 0),
                    accel);
}

/* The stream's checksum: the file from HEADER_SIZE on. */
static int
stream_hash (int fd, uint64_t *len, XXH64_hash_t *hash)
{
  XXH3_state_t *x = XXH3_createState ();
  static char buf[1 << 20];
  off_t off = HEADER_SIZE;
  ssize_t n;

  if (x == NULL) {
    errorf ("out of memory");
    return -1;
  }
  XXH3_64bits_reset (x);
  while ((n = pread (fd, buf, sizeof buf, off)) > 0) {
    XXH3_64bits_update (x, buf, n);
    off += n;
  }
  *hash = XXH3_64bits_digest (x);
  *len = off - HEADER_SIZE;
  XXH3_freeState (x);
  return n == 0 ? 0 : -1;
}

/* The first line of key that the header lacks, by its name. */
static char *
stale_reason (const char *key, const char *header)
{
  for (const char *k = strchr (key, '\n'); k && k[1];
       k = strchr (k + 1, '\n')) {
    size_t len = strcspn (k + 1, "\n") + 2;    /* "\nname value\n" */

    if (memmem (header, strlen (header), k, len) == NULL)
      return xasprintf ("made with another %.*s",
                        (int) strcspn (k + 1, " \n"), k + 1);
  }
  return xstrdup ("made otherwise");
}

/* Open the state for accel and machine: a descriptor at its migration
 * stream, and in *append the kernel command line it was booted with
 * (the restoring QEMU must have the same).  -1 if it cannot be used:
 * *why says why (NULL: there is none).
 */
int
vm_state_open (const char *accel, const char *machine, char **append,
               char **why)
{
  CLEANUP_FREE char *path = vm_state_path (accel);
  CLEANUP_FREE char *key = state_key (accel, machine);
  char header[HEADER_SIZE + 1];
  unsigned long long want_len, want_hash;
  XXH64_hash_t hash;
  uint64_t len;
  const char *a, *s;
  int fd;

  *why = NULL;
  *append = NULL;
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1) {
    if (errno != ENOENT)
      *why = xasprintf ("%s: %m", path);
    return -1;
  }
  if (pread (fd, header, HEADER_SIZE, 0) != HEADER_SIZE) {
    *why = xasprintf ("%s is damaged: shorter than its header", path);
    goto bad;
  }
  header[HEADER_SIZE] = '\0';
  if (strncmp (header, key, strlen (key)) != 0) {
    CLEANUP_FREE char *r = strncmp (header, MAGIC, strlen (MAGIC)) == 0 ?
      stale_reason (key, header) : xstrdup ("not a saved state");

    *why = xasprintf ("%s is stale: %s", path, r);
    goto bad;
  }
  a = header + strlen (key);
  s = strstr (a, "\nstream ");
  if (strncmp (a, "append ", 7) != 0 || s == NULL ||
      sscanf (s, "\nstream %llu %llx", &want_len, &want_hash) != 2) {
    *why = xasprintf ("%s is damaged: its header is incomplete", path);
    goto bad;
  }
  if (stream_hash (fd, &len, &hash) == -1) {
    *why = xasprintf ("%s: %m", path);
    goto bad;
  }
  if (len != want_len || hash != want_hash) {
    *why = xasprintf ("%s is damaged: %s", path, len != want_len ?
                      "it is not as long as its header says" :
                      "its checksum does not match");
    goto bad;
  }
  *append = xasprintf ("%.*s", (int) (s - a - 7), a + 7);
  if (lseek (fd, HEADER_SIZE, SEEK_SET) == -1) {
    *why = xasprintf ("%s: %m", path);
    goto bad;
  }
  return fd;
 bad:
  free (*append);
  *append = NULL;
  close (fd);
  return -1;
}

/* A QMP conversation with QEMU on the socket at path: after the
 * greeting and qmp_capabilities, one command at a time, each answered
 * on one line ("return" or "error"); events in between are skipped.
 */
struct qmp {
  int fd;
  FILE *in;
};

static char *
qmp_reply (struct qmp *q)
{
  char *line = NULL;
  size_t n = 0;

  while (getline (&line, &n, q->in) > 0) {
    if (strncmp (line, "{\"return\"", 9) == 0 ||
        strncmp (line, "{\"error\"", 8) == 0)
      return line;
  }
  free (line);
  return NULL;
}

/* Send cmd, with fd passed alongside it if >= 0 (getfd); the reply, or
 * NULL after an error naming what.
 */
static char *
qmp_command (struct qmp *q, const char *cmd, int fd)
{
  struct iovec iov = { .iov_base = (void *) cmd, .iov_len = strlen (cmd) };
  union {
    char buf[CMSG_SPACE (sizeof (int))];
    struct cmsghdr align;
  } u;
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
  char *reply;

  if (fd >= 0) {
    struct cmsghdr *c;

    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    c = CMSG_FIRSTHDR (&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN (sizeof (int));
    memcpy (CMSG_DATA (c), &fd, sizeof (int));
  }
  if (sendmsg (q->fd, &msg, MSG_NOSIGNAL) != (ssize_t) iov.iov_len) {
    errorf ("QEMU's monitor: %m");
    return NULL;
  }
  reply = qmp_reply (q);
  if (reply == NULL)
    errorf ("QEMU's monitor closed");
  else if (strncmp (reply, "{\"error\"", 8) == 0) {
    reply[strcspn (reply, "\n")] = '\0';
    errorf ("QEMU's monitor refused %.*s: %s", (int) strcspn (cmd, ","),
            cmd, reply);
    free (reply);
    reply = NULL;
  }
  return reply;
}

static int
qmp_open (struct qmp *q, const char *path)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  char *r;

  q->in = NULL;
  if (strlen (path) >= sizeof addr.sun_path) {
    errorf ("%s: path too long for a socket", path);
    return -1;
  }
  strcpy (addr.sun_path, path);
  q->fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (q->fd == -1 ||
      connect (q->fd, (struct sockaddr *) &addr, sizeof addr) == -1 ||
      (q->in = fdopen (dup (q->fd), "r")) == NULL) {
    errorf ("%s: %m", path);
    return -1;
  }
  r = qmp_command (q, "{\"execute\":\"qmp_capabilities\"}\n", -1);
  free (r);
  return r ? 0 : -1;
}

static void
qmp_close (struct qmp *q)
{
  if (q->in)
    fclose (q->in);
  if (q->fd >= 0)
    close (q->fd);
}

/* Save the guest of the QEMU whose monitor is at qmp_path, booted with
 * append, as the state for accel and machine.  0, or -1 after an error.
 * The guest keeps running while QEMU copies it: it is idle, so that
 * ends at once, and the restored guest runs without a QMP "cont".
 */
int
vm_state_write (const char *accel, const char *machine, const char *append,
                const char *qmp_path)
{
  CLEANUP_FREE char *path = vm_state_path (accel);
  CLEANUP_FREE char *key = state_key (accel, machine);
  CLEANUP_FREE char *dir = xstrdup (path);
  char header[HEADER_SIZE];
  struct outfile out = { .fd = -1 };
  struct qmp q = { .fd = -1 };
  XXH64_hash_t hash;
  uint64_t len;
  long start = now_ms ();
  char *r;
  int ret = -1;

  *strrchr (dir, '/') = '\0';
  if (access (dir, F_OK) == -1) {
    const char *argv[] = { "mkdir", "-p", "-m", "700", dir, NULL };

    proc_run ((char **) argv);
  }
  if (strlen (key) + strlen (append) + 64 > HEADER_SIZE) {
    errorf ("the helper VM's state header would not fit in %d bytes",
            HEADER_SIZE);
    return -1;
  }
  if (outfile_create (&out, path, 0644) == -1)
    return -1;
  /* QEMU gets our descriptor, and the file offset with it. */
  if (lseek (out.fd, HEADER_SIZE, SEEK_SET) == -1) {
    errorf ("%s: %m", path);
    goto out;
  }
  if (qmp_open (&q, qmp_path) == -1)
    goto out;
  r = qmp_command (&q, "{\"execute\":\"getfd\",\"arguments\":"
                   "{\"fdname\":\"state\"}}\n", out.fd);
  if (r == NULL)
    goto out;
  free (r);
  r = qmp_command (&q, "{\"execute\":\"migrate\",\"arguments\":"
                   "{\"uri\":\"fd:state\"}}\n", -1);
  if (r == NULL)
    goto out;
  free (r);
  for (;;) {
    r = qmp_command (&q, "{\"execute\":\"query-migrate\"}\n", -1);
    if (r == NULL)
      goto out;
    if (strstr (r, "\"status\": \"completed\"")) {
      free (r);
      break;
    }
    if (strstr (r, "\"status\": \"failed\"")) {
      r[strcspn (r, "\n")] = '\0';
      errorf ("QEMU could not save the helper VM: %s", r);
      free (r);
      goto out;
    }
    free (r);
    if (now_ms () - start > MIGRATE_TIMEOUT_MS) {
      errorf ("QEMU did not save the helper VM in %d s",
              MIGRATE_TIMEOUT_MS / 1000);
      goto out;
    }
    sleep_ms (20);
  }
  if (stream_hash (out.fd, &len, &hash) == -1) {
    errorf ("%s: %m", path);
    goto out;
  }
  memset (header, '\n', sizeof header);
  memcpy (header, key, strlen (key));
  snprintf (header + strlen (key), sizeof header - strlen (key),
            "append %s\nstream %llu %016llx\n", append,
            (unsigned long long) len, (unsigned long long) hash);
  header[strlen (header)] = '\n';       /* padding, not a terminator */
  if (pwrite (out.fd, header, sizeof header, 0) != sizeof header) {
    errorf ("%s: %m", path);
    goto out;
  }
  if (outfile_commit (&out, true) == -1)
    goto out;
  debugf ("saved the helper VM in %s: %llu MiB in %ld ms", path,
          (unsigned long long) (len >> 20), now_ms () - start);
  ret = 0;
 out:
  qmp_close (&q);
  outfile_close (&out);
  return ret;
}
