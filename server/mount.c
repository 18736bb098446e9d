/* SPDX-License-Identifier: BSD-3-Clause */
/* qemount mount IMAGE DIR: check everything that can be checked before
 * starting anything (image, DIR, partition, filesystem, path), then build
 * the stack (attach.c) step by step, recording each part in the state
 * file, and mount.  On any failure or interrupt, teardown (umount.c)
 * removes whatever was started.
 */

#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qemount.h"

enum via { VIA_AUTO, VIA_KERNEL, VIA_VM };

struct mount_options {
  const char *image, *dir;
  struct disk_options disk;     /* shared with qemount extract */
  enum via via;
  bool rw, raw, foreground;
  bool use_vm;                  /* decided by check_via */
  const char *overlay;
  const char *container;        /* what the disk holds, for messages */
  const char *fsopts;           /* options the filesystem needs, or NULL */
  const struct secret *key;     /* the LUKS passphrase */
  char *real_dir;               /* DIR resolved, once checked */
  int dir_lock;                 /* DIR flock()ed, or -1 */
  long uid, gid;                /* -1: not given */
  /* --raw: the files in DIR, one per stream of the image (named exports
   * of the plugin), else just "disk" (its default export).
   */
  char *files[MAX_FILES];
  size_t n_files;
  bool named_exports;
};

static void
mount_usage (FILE *fp)
{
  fprintf (fp,
"usage: qemount mount IMAGE DIR [--partition N] [--via kernel|vm|auto]\n"
"                     [--accel auto|kvm|tcg]\n"
"                     [--rw] [--overlay PATH] [--fstype T]\n"
"                     [--uid U --gid G] [--foreground]\n"
"                     [--format FORMAT] [--backing yes|no|samedir]\n"
"                     [--snapshot NAME] [--lv VG/LV] [--key-file FILE|-]\n"
"                     [--volume N|NAME] [--cache-dir DIR] [--timeout S]\n"
"       qemount mount IMAGE DIR --raw [--partition N] [--rw]\n"
"                     [--overlay PATH] [--uid U --gid G] [--foreground]\n"
"                     [--snapshot NAME] [--cache-dir DIR] [--timeout S]\n"
"\n"
"Mount the filesystem in the disk image IMAGE on DIR, read-only\n"
"unless --rw (writes go to a copy-on-write overlay, never to IMAGE; it\n"
"is thrown away at umount unless --overlay PATH keeps it; without --rw,\n"
"--overlay PATH shows IMAGE as changed by that overlay).  Without\n"
"--partition: the whole disk if it holds a filesystem, else the only\n"
"partition with one.  --raw exposes the disk (or partition) as the file\n"
"DIR/disk instead, without root.  --via vm mounts it in the helper VM\n"
"(qemount guest build), without root; --via auto (the default) does so\n"
"when the host kernel cannot.  LVM, md RAID1 and LUKS containers are\n"
"opened in the helper VM: --lv chooses a logical volume, --key-file\n"
"gives the LUKS passphrase (else it is asked for on the terminal).\n"
"--volume N|NAME mounts that volume of an APFS container (default 0).\n"
"--snapshot mounts a qcow2 internal snapshot instead of the image's\n"
"current state; with --rw, only with --overlay PATH.\n");
}

/* A user or group: a number, or a name. */
static long
parse_id (const char *s, bool group)
{
  char *end;
  long v;

  errno = 0;
  v = strtol (s, &end, 10);
  if (errno == 0 && *s && *end == '\0' && v >= 0 && v < UINT32_MAX)
    return v;
  if (group) {
    struct group *g = getgrnam (s);
    return g ? (long) g->gr_gid : -1;
  }
  struct passwd *p = getpwnam (s);
  return p ? (long) p->pw_uid : -1;
}

static int
parse_options (int argc, char *argv[], struct mount_options *o)
{
  enum { OPT_VIA = 256, OPT_RW, OPT_OVERLAY, OPT_UID, OPT_GID, OPT_RAW };
  static const struct option long_options[] = {
    DISK_LONG_OPTIONS,
    { "via", required_argument, NULL, OPT_VIA },
    { "rw", no_argument, NULL, OPT_RW },
    { "overlay", required_argument, NULL, OPT_OVERLAY },
    { "uid", required_argument, NULL, OPT_UID },
    { "gid", required_argument, NULL, OPT_GID },
    { "foreground", no_argument, NULL, 'f' },
    { "raw", no_argument, NULL, OPT_RAW },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  bool via_given = false;
  int c;

  memset (o, 0, sizeof *o);
  disk_options_init (&o->disk);
  o->uid = o->gid = -1;
  o->dir_lock = -1;

  while ((c = getopt_long (argc, argv, "p:t:fh", long_options, NULL)) != -1) {
    switch (parse_disk_option (c, optarg, &o->disk)) {
    case 1: continue;
    case -1: return EXIT_USAGE;
    }
    switch (c) {
    case OPT_VIA:
      via_given = true;
      if (strcmp (optarg, "auto") == 0) o->via = VIA_AUTO;
      else if (strcmp (optarg, "kernel") == 0) o->via = VIA_KERNEL;
      else if (strcmp (optarg, "vm") == 0) o->via = VIA_VM;
      else {
        errorf ("--via %s: must be kernel, vm or auto", optarg);
        return EXIT_USAGE;
      }
      break;
    case OPT_RW: o->rw = true; break;
    case OPT_OVERLAY: o->overlay = optarg; break;
    case OPT_UID:
    case OPT_GID:
      if ((c == OPT_UID ? (o->uid = parse_id (optarg, false)) :
           (o->gid = parse_id (optarg, true))) == -1) {
        errorf ("--%s %s: no such %s", c == OPT_UID ? "uid" : "gid",
                optarg, c == OPT_UID ? "user" : "group");
        return EXIT_USAGE;
      }
      break;
    case 'f': o->foreground = true; break;
    case OPT_RAW: o->raw = true; break;
    case 'h': mount_usage (stdout); return -1;
    default: mount_usage (stderr); return EXIT_USAGE;
    }
  }
  if (!operands_ok ("mount", argc - optind, argv + optind,
                    (const char *const []) { "IMAGE", "DIR", NULL })) {
    mount_usage (stderr);
    return EXIT_USAGE;
  }
  disk_options_image (&o->disk, argv[optind]);
  o->image = o->disk.name;
  o->dir = argv[optind + 1];

  /* What is on the disk is looked for in the image as the overlay has
   * changed it; a read-only mount needs the overlay to exist.
   */
  if (o->overlay && (!o->rw || access (o->overlay, F_OK) == 0))
    o->disk.req.overlay = o->overlay;
  if (o->raw &&
      (o->disk.fstype || via_given || o->disk.lv || o->disk.key_file)) {
    errorf ("--raw exports the disk itself: --%s does not apply",
            o->disk.fstype ? "fstype" : via_given ? "via" :
            o->disk.lv ? "lv" : "key-file");
    return EXIT_USAGE;
  }
  /* The plugin serves a snapshot read-only without overlay=: writes
   * to a snapshot that vanish at umount are more likely a mistake.
   */
  if (o->rw && o->disk.req.snapshot && o->overlay == NULL) {
    errorf ("--rw with --snapshot needs --overlay PATH: a snapshot is "
            "served read-only");
    return EXIT_USAGE;
  }
  if ((o->uid == -1) != (o->gid == -1)) {
    errorf ("--uid and --gid go together");
    return EXIT_USAGE;
  }
  /* The state file has one value a line. */
  if (strchr (o->disk.req.path, '\n') || strchr (o->dir, '\n') ||
      (o->overlay && strchr (o->overlay, '\n'))) {
    errorf ("file names with a newline are not supported");
    return EXIT_USAGE;
  }
  return EXIT_OK;
}

/* A qemount state with DIR as its mount point: a mount (or a --raw
 * export, which leaves DIR itself unmounted) there, or one being set up
 * or torn down.
 */
struct claim {
  const char *dir, *real;
  int status;
};

static int
find_claim (struct mount_state *st, void *opaque)
{
  struct claim *c = opaque;

  if (st->mountpoint == NULL || strcmp (st->mountpoint, c->real) != 0)
    return 0;
  if (state_lock (st, false) == -1) {
    errorf ("%s: qemount (pid %d) is setting up or tearing down a mount "
            "there right now", c->dir, (int) st->owner_pid);
    c->status = EXIT_BUSY;
  }
  else {
    errorf ("%s: already a qemount mount point (of %s; qemount umount %s "
            "first)", c->dir, st->image ? st->image : "an image", c->dir);
    c->status = EXIT_DIR_MOUNTED;
  }
  return 1;
}

/* DIR must be an empty directory that nothing is mounted on.  It is
 * locked (flock on the directory itself, *lock_fd) before it is checked,
 * and stays locked until the mount is complete or undone: a second
 * qemount mount on DIR, by any user, either finds the lock or comes
 * after the first one is done and finds its mount.  A directory that
 * cannot be locked (NFS without a lock service) goes unguarded.
 */
static int
check_dir (const char *dir, char **real, int *lock_fd)
{
  struct claim c = { .dir = dir, .status = EXIT_OK };
  struct stat st;
  struct dirent *d;
  DIR *dp;

  *real = realpath (dir, NULL);
  if (*real == NULL || stat (*real, &st) == -1) {
    errorf ("%s: %m", dir);
    return errno == ENOENT || errno == ENOTDIR ? EXIT_NOT_DIRECTORY :
      EXIT_ERROR;
  }
  if (!S_ISDIR (st.st_mode)) {
    errorf ("%s: not a directory", dir);
    return EXIT_NOT_DIRECTORY;
  }
  *lock_fd = open (*real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (*lock_fd == -1) {
    errorf ("%s: %m", dir);
    return EXIT_ERROR;
  }
  if (flock (*lock_fd, LOCK_EX | LOCK_NB) == -1) {
    if (errno == EWOULDBLOCK) {
      errorf ("%s: another qemount is mounting there right now", dir);
      return EXIT_BUSY;
    }
    debugf ("%s: cannot lock it (%m): not guarded against a second mount",
            dir);
  }
  c.real = *real;
  state_foreach (find_claim, &c);
  if (c.status != EXIT_OK)
    return c.status;
  if (is_mount_point (*real, NULL, NULL)) {
    errorf ("%s: already a mount point", dir);
    return EXIT_DIR_MOUNTED;
  }
  dp = opendir (*real);
  if (dp == NULL) {
    errorf ("%s: %m", dir);
    return EXIT_ERROR;
  }
  while ((d = readdir (dp)) != NULL)
    if (strcmp (d->d_name, ".") != 0 && strcmp (d->d_name, "..") != 0)
      break;
  closedir (dp);
  if (d != NULL) {
    errorf ("%s: not empty", dir);
    return EXIT_DIR_NOT_EMPTY;
  }
  return EXIT_OK;
}

/* The kernel's name for a filesystem libblkid named. */
static const char *
kernel_fstype (const char *fstype)
{
  if (strcmp (fstype, "ntfs") == 0)
    return "ntfs3";
  return fstype;
}

/* Listed in /proc/filesystems (built in, or its module loaded). */
static bool
kernel_knows (const char *fstype)
{
  FILE *fp = fopen ("/proc/filesystems", "re");
  char line[256];
  bool found = false;

  if (fp == NULL)
    return false;
  while (!found && fgets (line, sizeof line, fp)) {
    char *name = strrchr (line, '\t');

    name = name ? name + 1 : line;
    name[strcspn (name, "\n")] = '\0';
    found = strcmp (name, fstype) == 0;
  }
  fclose (fp);
  return found;
}

/* --via: can the host kernel do it, else the helper VM?  Sets
 * o->use_vm.
 */
static int
check_via (struct mount_options *o, const char *fstype)
{
  const char *kfs = fstype ? kernel_fstype (fstype) : NULL;

  /* Containers: this host may have no device-mapper or md (and the
   * helper VM keeps their drivers off the host anyway), so they imply
   * --via vm.
   */
  if (o->via == VIA_KERNEL && o->container) {
    errorf ("%s: the disk is %s, which qemount opens in the helper VM "
            "only: use --via vm (or auto)", o->image, o->container);
    return EXIT_USAGE;
  }
  if (o->via == VIA_KERNEL && (o->disk.lv || o->disk.key_file)) {
    errorf ("--%s: LVM, md and LUKS are opened in the helper VM only: "
            "use --via vm (or auto)", o->disk.lv ? "lv" : "key-file");
    return EXIT_USAGE;
  }
  if (o->container || o->disk.lv || o->disk.key_file) {
    if (o->via == VIA_AUTO)
      debugf ("%s: %s: using the helper VM", o->image,
              o->container ? o->container : "--lv or --key-file");
    o->via = VIA_VM;
  }
  o->use_vm = o->via == VIA_VM ||
    (o->via == VIA_AUTO && guest_built () &&
     (geteuid () != 0 || !kernel_knows (kfs)));
  if (o->via == VIA_VM && !guest_built ()) {
    errorf ("--via vm: the helper VM is not built in %s (qemount guest "
            "build makes it)", guest_dir ());
    return EXIT_NEEDS_VM;
  }
  if (o->use_vm) {
    if (o->uid == -1) {
      o->uid = getuid ();
      o->gid = getgid ();
    }
    return EXIT_OK;
  }

  if (o->via == VIA_KERNEL) {
    if (geteuid () != 0) {
      errorf ("--via kernel: mounting through the host kernel needs root "
              "(--raw works without)");
      return EXIT_NEEDS_ROOT;
    }
    return EXIT_OK;             /* the kernel may load a module for it */
  }
  if (!kernel_knows (kfs)) {
    errorf ("%s: the filesystem is %s, which the host kernel does not "
            "mount (it is not in /proc/filesystems): that needs the helper "
            "VM, which is not built (qemount guest build)", o->image, fstype);
    return EXIT_NEEDS_VM;
  }
  if (geteuid () != 0) {
    errorf ("mounting through the host kernel needs root; without root "
            "that needs the helper VM, which is not built (qemount guest "
            "build; --raw works without root)");
    return EXIT_NEEDS_VM;
  }
  return EXIT_OK;
}

/* Filesystems without owners of their own take them as options. */
static bool
takes_uid (const char *fstype)
{
  static const char *const names[] = {
    "vfat", "msdos", "exfat", "ntfs", "ntfs3", "iso9660", "udf", "hfs",
    "hfsplus", NULL,
  };

  for (size_t i = 0; names[i]; ++i)
    if (strcmp (fstype, names[i]) == 0)
      return true;
  return false;
}

/* For a read-only mount, the option that skips the journal replay a
 * filesystem not cleanly unmounted would otherwise need (and cannot do
 * on a read-only device).
 */
static const char *
no_replay_option (const char *fstype)
{
  if (strcmp (fstype, "ext3") == 0 || strcmp (fstype, "ext4") == 0)
    return "noload";
  if (strcmp (fstype, "xfs") == 0)
    return "norecovery";
  if (strcmp (fstype, "btrfs") == 0)
    return "rescue=nologreplay";
  return NULL;
}

/* Foreign filesystems are mounted nosuid and nodev: a crafted image must
 * not give anyone a setuid binary or a device node.
 */
static int
kernel_mount (const struct mount_options *o, const struct mount_state *st,
              const char *device)
{
  const char *kfs = kernel_fstype (st->fstype);
  unsigned long flags = MS_NOSUID | MS_NODEV | (st->readonly ? MS_RDONLY : 0);
  char data[128] = "";
  const char *skip;
  int r;

  if (o->uid != -1) {
    if (takes_uid (kfs))
      snprintf (data, sizeof data, "uid=%ld,gid=%ld", o->uid, o->gid);
    else
      warnf ("--uid/--gid ignored: %s keeps owners of its own", st->fstype);
  }
  if (o->fsopts)                /* uid= and ufstype= never go together */
    snprintf (data, sizeof data, "%s", o->fsopts);
  debugf ("mount -t %s -o %s%s %s %s", kfs, st->readonly ? "ro" : "rw",
          data, device, st->mountpoint);
  r = mount (device, st->mountpoint, kfs, flags, data);
  if (r == -1 && errno == EROFS && st->readonly &&
      (skip = no_replay_option (kfs)) != NULL) {
    r = mount (device, st->mountpoint, kfs, flags, skip);
    if (r == 0)
      warnf ("%s: the filesystem was not cleanly unmounted; mounted it "
             "without replaying its journal (%s), so recent changes may "
             "be missing", o->image, skip);
    else
      errno = EROFS;
  }
  if (r == -1) {
    char where[32] = "", name[16];

    if (st->partition) {
      format_partition (name, sizeof name, st->partition, st->letter);
      snprintf (where, sizeof where, " of partition %s", name);
    }
    if (errno == ENODEV)
      errorf ("%s: the host kernel does not know the %s filesystem",
              o->image, kfs);
    else
      errorf ("%s: the kernel refused to mount the %s filesystem%s: %m "
              "(see dmesg)", o->image, kfs, where);
    return EXIT_MOUNT_REFUSED;
  }
  return EXIT_OK;
}

/* --raw: DIR/disk, or with --partition DIR/disk for the partition;
 * an image with several streams (qsnap: disk, memory...) gets one file
 * per stream, unless a name is not one we would create in DIR.
 */
static void
raw_files (struct mount_options *o, struct image *img)
{
  char **names;
  size_t n = 0;

  if (o->disk.partition == 0)
    image_list_streams (img, &names, &n);
  for (size_t i = 0; i < n; ++i) {
    if (o->n_files == MAX_FILES || !file_name_ok (names[i])) {
      warnf ("%s: not exporting the stream '%s' (too many, or not a name "
             "for a file)", o->image, names[i]);
      continue;
    }
    o->files[o->n_files++] = xstrdup (names[i]);
    o->named_exports = true;
  }
  if (o->n_files == 0)
    o->files[o->n_files++] = xstrdup (STATE_DISK);
}

/* Until Ctrl-C (or SIGTERM/SIGHUP), or until someone runs qemount umount
 * from another shell.
 */
static int
foreground (struct mount_state *st)
{
  fprintf (stderr, "qemount: %s mounted on %s; press Ctrl-C to unmount\n",
           st->image, st->mountpoint);
  while (!interrupted) {
    sleep_ms (200);
    if (access (st->dir, F_OK) == -1)
      return EXIT_OK;
  }
  if (state_lock (st, true) == -1 || access (st->dir, F_OK) == -1)
    return EXIT_OK;             /* torn down meanwhile */
  return teardown (st);
}

/* Build the stack; returns an exit status. */
static int
build (const struct mount_options *o, struct mount_state *st)
{
  char *device = NULL;
  int hold_fd = -1, status;

  status = start_nbdkit (st, &o->disk);
  if (status != EXIT_OK)
    return status;
  if (interrupted)
    return EXIT_INTERRUPTED;

  if (o->use_vm) {
    struct vm_request r = {
      .accel = o->disk.accel, .fstype = st->fstype, .fsopts = o->fsopts,
      .rw = !st->readonly,
      .uid = o->uid, .gid = o->gid,
      .containers = o->container != NULL, .lv = o->disk.lv, .key = o->key,
    };

    return vm_mount (st, &r);
  }

  if (o->raw) {
    char uid[32], gid[32], *fuse_options[4] = { NULL };

    /* The owner to show, and (root only: others need user_allow_other
     * in /etc/fuse.conf) letting that user in.
     */
    if (o->uid != -1) {
      snprintf (uid, sizeof uid, "uid=%ld", o->uid);
      snprintf (gid, sizeof gid, "gid=%ld", o->gid);
      fuse_options[0] = uid;
      fuse_options[1] = gid;
      if (geteuid () == 0)
        fuse_options[2] = (char *) "allow_other";
    }
    for (size_t i = 0; i < st->n_files && status == EXIT_OK; ++i) {
      status = start_nbdfuse (st, i,
                              o->named_exports ? st->files[i].name : "",
                              fuse_options);
      if (interrupted)
        status = EXIT_INTERRUPTED;
    }
    return status;
  }

  status = attach_kernel (st, &device, &hold_fd);
  if (status == EXIT_OK)
    status = kernel_mount (o, st, device);
  if (hold_fd >= 0)
    close (hold_fd);            /* the mount holds the loop device now */
  free (device);
  return status;
}

/* --raw: what to export, while the image is open. */
static void
mount_opened (struct image *img, void *opaque)
{
  struct mount_options *o = opaque;

  if (o->raw)
    raw_files (o, img);
}

static int
mount_chosen (const struct choice *c, void *opaque)
{
  struct mount_options *o = opaque;

  o->container = c->container;
  o->fsopts = c->fsopts[0] ? c->fsopts : NULL;
  /* Linux's UFS write support is experimental and off in Debian's
   * kernels (the helper VM's among them): said now, not as a mount the
   * guest refuses after booting.
   */
  if (o->rw && !o->raw && c->fstype && strcmp (c->fstype, "ufs") == 0) {
    errorf ("%s: --rw: UFS is mounted read-only only (Linux's UFS write "
            "support is experimental, and Debian's kernels, the helper "
            "VM's among them, are built without it)", o->image);
    return EXIT_MOUNT_REFUSED;
  }
  return o->raw ? EXIT_OK : check_via (o, c->fstype);
}

/* DIR last: it stays locked from here on. */
static int
mount_before_state (void *opaque)
{
  struct mount_options *o = opaque;

  clean_stale_states ();        /* may free DIR of a broken mount */
  return check_dir (o->dir, &o->real_dir, &o->dir_lock);
}

int
mount_main (int argc, char *argv[])
{
  struct mount_options o;
  struct preparation prep = {
    .opened = mount_opened, .chosen = mount_chosen,
    .before_state = mount_before_state, .opaque = &o,
  };
  struct mount_state *st;
  int status;

  status = parse_options (argc, argv, &o);
  if (status != EXIT_OK)
    return status == -1 ? EXIT_OK : status;
  catch_interrupts ();

  /* Everything that can be checked before anything is started. */
  prep.disk = &o.disk;
  prep.raw = o.raw;
  status = prepare (&prep);
  if (status != EXIT_OK)
    goto out;
  st = prep.st;
  o.key = &prep.key;
  st->mountpoint = o.real_dir;
  o.real_dir = NULL;
  st->raw = o.raw;
  st->readonly = !o.rw;
  for (size_t i = 0; i < o.n_files; ++i)
    state_add_file (st, o.files[i]);   /* checked by raw_files */
  if (o.overlay)
    st->overlay = absolute_path (o.overlay);
  else if (o.rw)
    st->overlay = xstrdup ("ephemeral");
  if (state_save (st) == -1) {
    status = EXIT_ERROR;
    goto fail;
  }

  status = build (&o, st);
  if (status == EXIT_OK && interrupted)
    status = EXIT_INTERRUPTED;
  if (status != EXIT_OK)
    goto fail;

  st->mounted = true;
  if (state_save (st) == -1) {
    status = EXIT_ERROR;
    goto fail;
  }
  debugf ("%s mounted on %s (state in %s)", st->image, st->mountpoint,
          st->dir);
  state_unlock (st);
  close (o.dir_lock);
  o.dir_lock = -1;
  if (o.foreground)
    status = foreground (st);
  goto out;

 fail:
  if (status == EXIT_INTERRUPTED)
    errorf ("interrupted: stopping what was started");
  if (teardown (st) != EXIT_OK)
    errorf ("could not tear down everything: see qemount list; "
            "qemount umount %s cleans up the rest", st->mountpoint);

 out:
  if (o.dir_lock >= 0)
    close (o.dir_lock);
  preparation_free (&prep);
  for (size_t i = 0; i < o.n_files; ++i)
    free (o.files[i]);
  free (o.real_dir);
  return status;
}
