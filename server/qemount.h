/* SPDX-License-Identifier: BSD-3-Clause */
/* qemount command: what the subcommands share.
 *
 * One file per concern: qemount.c (dispatch, messages), xalloc.c
 * (allocation that cannot fail), info.c, mount.c, umount.c (teardown),
 * list.c, extract.c, snapshot.c (the subcommands),
 * open.c (opening an image with the right exit status), disk-options.c
 * (the options mount and extract share, and their preparation),
 * partitions.c (libblkid), disklabel.c (BSD disklabels), ufs.c (UFS
 * variants), apfs.c (APFS volumes), state.c (per-mount state), proc.c (child
 * processes, and where our files are), loop.c, mountinfo.c, attach.c
 * (nbdkit and the host attach step), output.c (sizes, JSON strings, URLs
 * without their secrets), guest.c (the helper VM's files, qemount guest),
 * vm.c (running the helper VM), secret.c (LUKS passphrases).
 */

#ifndef QEMOUNT_SERVER_H
#define QEMOUNT_SERVER_H

#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#include "image.h"

/* Exit statuses: one per failure class, documented in qemount(1). */
enum {
  EXIT_OK = 0,
  EXIT_ERROR = 1,               /* a system call or helper program failed */
  EXIT_USAGE = 2,               /* bad command line */
  EXIT_NO_IMAGE = 3,            /* IMAGE (or a file of its chain) is missing */
  EXIT_UNREADABLE = 4,          /* IMAGE exists but may not be read */
  EXIT_UNKNOWN_FORMAT = 5,      /* a format qemount does not decode */
  EXIT_BAD_IMAGE = 6,           /* the decoder refused the image */
  EXIT_NO_PARTITION = 7,        /* --partition N: no such partition */
  EXIT_NO_FILESYSTEM = 8,       /* nothing (or nothing unique) to mount */
  EXIT_NOT_DIRECTORY = 9,       /* DIR is missing or not a directory */
  EXIT_DIR_NOT_EMPTY = 10,
  EXIT_DIR_MOUNTED = 11,        /* DIR is a mount point, or qemount's */
  EXIT_MOUNT_REFUSED = 12,      /* the kernel refused the filesystem */
  EXIT_NEEDS_VM = 13,           /* only the helper VM could do it (not yet) */
  EXIT_NEEDS_ROOT = 14,         /* --via kernel without root */
  EXIT_NOT_MOUNTED = 15,        /* umount: DIR is not a qemount mount */
  EXIT_BUSY = 16,               /* DIR is in use, or being set up */
  EXIT_NO_KEY = 17,             /* LUKS: no passphrase, or a wrong one */
  EXIT_NO_SNAPSHOT = 18,        /* --snapshot NAME: no such snapshot */
  EXIT_INTERRUPTED = 130,       /* SIGINT/SIGTERM/SIGHUP during mount */
};

/* Messages go to stderr as "qemount: error: ..." (once, where the cause
 * is known) and "qemount: warning: ..."; debugf() only with -v.
 */
void errorf (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));
void warnf (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));
void debugf (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));
extern bool verbose;

/* Usage errors: false, after saying which operand (what follows a
 * command's options: args, n of them) is missing or which argument is
 * one too many, unless there are exactly the NULL-terminated names.
 */
bool operands_ok (const char *command, int n, char *const args[],
                  const char *const names[]);

/* Allocation that exits on failure. */
char *xstrdup (const char *s);
char *xasprintf (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));
char *xvasprintf (const char *fs, va_list args)
  __attribute__ ((format (printf, 1, 0)));

/* A string freed when its variable goes out of scope. */
static inline void
free_ptr (void *p)
{
  free (*(void **) p);
}
#define CLEANUP_FREE __attribute__ ((cleanup (free_ptr)))

/* A command line built an argument at a time (each copied), always
 * NULL-terminated; CLEANUP_ARGV frees it.
 */
struct argv_builder {
  char **argv;
  size_t n, cap;
};
void argv_push (struct argv_builder *a, const char *arg);
void argv_push_printf (struct argv_builder *a, const char *fs, ...)
  __attribute__ ((format (printf, 2, 3)));
void argv_free (struct argv_builder *a);
#define CLEANUP_ARGV __attribute__ ((cleanup (argv_free)))

/* Subcommands: each parses its own arguments (argv[0] is the command
 * name) and returns an exit status.
 */
int info_main (int argc, char *argv[]);
int mount_main (int argc, char *argv[]);
int umount_main (int argc, char *argv[]);
int list_main (int argc, char *argv[]);
int extract_main (int argc, char *argv[]);

/* open.c: the image, with the exit status of the failure class. */
struct image_request {
  const char *path;
  const char *format;           /* NULL: probe */
  enum backing_policy backing;
  const char *overlay;          /* NULL, or read as changed by this one */
  const char *snapshot;         /* NULL: the active state */
  const char *cache_dir;        /* --cache-dir, absolute; NULL: none */
  unsigned timeout;             /* --timeout, seconds; 0: the default */
};
bool format_is_known (const char *format);

/* disk-options.c: the options qemount mount and extract share. */
struct disk_options {
  struct image_request req;     /* --format, --backing, --snapshot,
                                   --cache-dir (and the path) */
  const char *name;             /* the image in messages and records */
  const char *backing;          /* --backing as given, for nbdkit */
  int partition;                /* --partition N; 0: chosen */
  char letter;                  /* --partition Na: a disklabel's, or 0 */
  const char *fstype;           /* --fstype T */
  const char *accel;            /* --accel, for the helper VM */
  const char *lv, *key_file;    /* --lv VG/LV, --key-file FILE|- */
  int volume;                   /* --volume N of an APFS container, or -1 */
  const char *volume_name;      /* --volume NAME, or NULL */
};
enum {
  OPT_DISK_ACCEL = 0x300, OPT_DISK_FORMAT, OPT_DISK_BACKING, OPT_DISK_LV,
  OPT_DISK_KEY_FILE, OPT_DISK_SNAPSHOT, OPT_DISK_CACHE_DIR, OPT_DISK_VOLUME,
  OPT_DISK_TIMEOUT,
};
/* How to open the image: qemount info takes these too. */
#define IMAGE_LONG_OPTIONS                                        \
  { "format", required_argument, NULL, OPT_DISK_FORMAT },         \
  { "backing", required_argument, NULL, OPT_DISK_BACKING },      \
  { "snapshot", required_argument, NULL, OPT_DISK_SNAPSHOT },     \
  { "cache-dir", required_argument, NULL, OPT_DISK_CACHE_DIR },   \
  { "timeout", required_argument, NULL, OPT_DISK_TIMEOUT }
#define DISK_LONG_OPTIONS                                         \
  IMAGE_LONG_OPTIONS,                                             \
  { "partition", required_argument, NULL, 'p' },                  \
  { "fstype", required_argument, NULL, 't' },                     \
  { "accel", required_argument, NULL, OPT_DISK_ACCEL },           \
  { "lv", required_argument, NULL, OPT_DISK_LV },                 \
  { "key-file", required_argument, NULL, OPT_DISK_KEY_FILE },     \
  { "volume", required_argument, NULL, OPT_DISK_VOLUME }
void disk_options_init (struct disk_options *d);
void disk_options_image (struct disk_options *d, char *operand);
/* 1: c is one of them, taken; 0: it is not; -1: a bad value (said). */
int parse_disk_option (int c, const char *arg, struct disk_options *d);
const char *parse_backing (const char *value, enum backing_policy *policy);
struct image *open_image (const struct image_request *req, int *status);

/* partitions.c: what the disk holds, found by libblkid. */
#define APFS_MAX_VOLUMES 100    /* nx_fs_oid[] of a container */
struct apfs_volume {
  bool used;                    /* its slot holds a volume */
  char *name;                   /* from its superblock, or NULL (apfs.c) */
  uint16_t role;                /* apfs_role, when name is set */
};
struct filesystem {
  char *type;                   /* blkid TYPE ("ext4"), NULL if unknown */
  char *usage;                  /* "filesystem", "raid", "crypto", "other" */
  char *label, *uuid;
  /* UFS: the variant Linux's ufs driver must be told (ufstype=), or
   * NULL and why it cannot read it (ufs.c).
   */
  const char *variant, *no_variant;
  /* APFS: the volumes the container lists (apfs.c), by number. */
  int n_volumes;                /* -1: its superblock cannot be read */
  struct apfs_volume volumes[APFS_MAX_VOLUMES];
};

struct partition {
  int number;                   /* as nbdkit's partition filter counts;
                                   a disklabel partition's: its slice's */
  char letter;                  /* a disklabel partition's, or 0 */
  uint64_t start, size;         /* bytes */
  char *type;                   /* "0x83" (dos) or the GPT type GUID */
  const char *type_name;        /* "Linux filesystem", or NULL */
  char *name, *uuid;            /* GPT name and partition UUID, or NULL */
  bool extended;                /* a DOS extended partition (container) */
  bool logical;
  bool disklabel;               /* a slice holding a BSD disklabel */
  struct filesystem fs;
};

struct disk_layout {
  uint64_t size;
  char *table;                  /* "dos", "gpt" or NULL */
  char *table_id;
  struct filesystem whole;      /* a filesystem on the whole disk */
  struct partition *partitions;
  size_t n_partitions;
};

int probe_disk (struct image *img, struct disk_layout *layout);
void free_disk_layout (struct disk_layout *layout);
const struct partition *find_partition (const struct disk_layout *layout,
                                        int number, char letter);
/* "2a" for a disklabel partition, "2" for others. */
void format_partition (char *buf, size_t len, int number, char letter);
bool fs_is_mountable (const struct filesystem *fs);
const char *fs_container (const struct filesystem *fs);
struct choice {
  int partition;                /* 0: the whole disk */
  char letter;                  /* of a disklabel partition, or 0 */
  uint64_t start, size;         /* the partition's, in bytes */
  const struct filesystem *fs;  /* what libblkid found there */
  const char *fstype;           /* to mount; NULL: the guest finds it */
  const char *container;        /* fs_container (fs), or NULL */
  char fsopts[32];              /* mount options it needs ("ufstype=ufs2",
                                   APFS's "vol=2"), or "" */
};
int choose_filesystem (const char *image, const struct disk_layout *d,
                       int partition, char letter, const char *fstype,
                       bool raw, struct choice *c);
void print_partition_list (FILE *fp, const struct disk_layout *layout);

/* disklabel.c: the partitions of a BSD disklabel in an MBR slice, in
 * *parts (malloc()ed, like their type); 1 if the slice holds a label,
 * 0 if not, -1 if it could not be read (said).
 */
bool is_bsd_slice (const struct disk_layout *d, const struct partition *p);
int read_disklabel (struct image *img, const struct disk_layout *d,
                    const struct partition *slice, struct partition **parts,
                    size_t *n_parts);

/* ufs.c: which UFS the filesystem at [start, start+size) of fd is. */
const char *ufs_variant (int fd, uint64_t start, uint64_t size,
                         const char **why);

/* apfs.c: the volumes of the APFS container at [start, start+size) of
 * img into fs->n_volumes (-1 if its superblock cannot be read) and
 * fs->volumes, with their names where the container lets us read them
 * (else a warning).
 */
void apfs_volumes (struct image *img, uint64_t start, uint64_t size,
                   struct filesystem *fs);
/* "0 \"Data\", 3": fs's volumes, named when known (malloc()ed). */
char *apfs_format_volumes (const struct filesystem *fs);
/* The volume of fs called name, or -1. */
int apfs_find_volume (const struct filesystem *fs, const char *name);
/* "data" for APFS_VOL_ROLE_DATA, "0x1c0" (in buf) for one we do not
 * know, NULL for none.
 */
#define APFS_ROLE_LEN 8
const char *apfs_role_name (uint16_t role, char buf[APFS_ROLE_LEN]);

/* output.c: sizes for people ("64 MiB"), strings for JSON, image
 * locations without a URL's secrets (in argv too). */
const char *hide_url_secrets (char *operand);
void format_size (char *buf, size_t len, uint64_t bytes);
void json_string (FILE *fp, const char *s);
void json_string_or_null (FILE *fp, const char *s);
void json_member (FILE *fp, const char *sep, const char *key,
                  const char *value);

/* state.c: per-mount state in a private runtime directory. */
enum attach_method {
  ATTACH_NONE, ATTACH_NBDFUSE, ATTACH_NBD_CLIENT,
  ATTACH_VM,                    /* the helper VM, and sshfs for a mount */
};

/* A file nbdfuse serves, mounted over an empty regular file ("naked"
 * mount): DIR/NAME for --raw (NAME is "disk", or each stream of a
 * qsnap), the state directory's "disk" for a kernel mount.
 */
#define MAX_FILES 8
struct fuse_file {
  char *name;
  pid_t pid;                    /* nbdfuse serving it, 0 if not known */
};

struct mount_state {
  char *dir;                    /* this mount's state directory */
  int lock_fd;                  /* flock()ed while set up or torn down */
  bool raw;                     /* --raw: DIR/disk, no kernel mount */
  char *image, *mountpoint, *format, *fstype, *overlay;
  char *snapshot;               /* internal snapshot served, or NULL */
  int partition;                /* 0: the whole disk */
  char letter;                  /* of a disklabel partition, or 0 */
  /* Where libblkid found the partition: nbdkit serves exactly that
   * (its offset filter), so the two cannot disagree on where it is.
   */
  uint64_t part_start, part_size;
  bool readonly;
  bool mounted;                 /* set up completely (phase=mounted) */
  enum attach_method attach;
  bool extract;                 /* qemount extract's, not a mount */
  pid_t owner_pid;              /* the qemount process that set it up */
  pid_t nbdkit_pid;
  pid_t qemu_pid, sshfs_pid;    /* ATTACH_VM: the helper VM, sshfs */
  struct fuse_file files[MAX_FILES];
  size_t n_files;
  char *loop, *nbd;             /* /dev/loopN, /dev/nbdN */
};

/* Paths inside a state directory. */
#define STATE_FILE "state"
#define STATE_LOCK "lock"
#define STATE_SOCKET "nbdkit.sock"
#define STATE_NBDKIT_PID "nbdkit.pid"
#define STATE_NBDKIT_LOG "nbdkit.log"
#define STATE_DISK "disk"
#define STATE_LOCATION "location"   /* a URL with secrets, for nbdkit */

char *state_path (const struct mount_state *st, const char *name);
const char *runtime_dir (bool create);
struct mount_state *state_create (void);
int state_save (const struct mount_state *st);
struct mount_state *state_load (const char *dir);
int state_lock (struct mount_state *st, bool wait);
void state_unlock (struct mount_state *st);
int state_remove (struct mount_state *st);
void state_free (struct mount_state *st);
/* Calls fn for each state directory; fn returns 0 to go on. */
int state_foreach (int (*fn) (struct mount_state *st, void *opaque),
                   void *opaque);
const char *attach_name (enum attach_method a);
char *fuse_target (const struct mount_state *st, const char *name);
char *fuse_pidfile (const struct mount_state *st, const char *name);
char *fuse_log (const struct mount_state *st, const char *name);
bool file_name_ok (const char *name);
int state_add_file (struct mount_state *st, const char *name);
bool state_is_stale (const struct mount_state *st, const char **why);
const char *state_id (const struct mount_state *st);

/* DIR made absolute even if it cannot be resolved (a dead FUSE mount
 * cannot be stat()ed).
 */
char *absolute_path (const char *path);

/* proc.c: child processes. */
extern volatile sig_atomic_t interrupted;
void catch_interrupts (void);
pid_t proc_spawn (char *const argv[], const char *log_path);
/* A child's descriptors: in and out (-1: /dev/null, or out to log),
 * stderr to log (NULL: ours), fd3 as its descriptor 3 (-1: none).
 * die_with_us: it is killed when we exit, however we exit.
 */
struct spawn_io {
  int in, out, fd3;
  const char *log;
  bool die_with_us;
};
pid_t proc_spawn_io (char *const argv[], const struct spawn_io *io);
char *find_ours (const char *env, const char *name, const char *witness,
                 int mode, const char *installed);
int proc_run (char *const argv[]);
int proc_wait_child (pid_t pid, int *wstatus);
/* How a wait for a process to get ready ended.  WAIT_FAILED: it said it
 * failed, and that has been said.
 */
enum wait_result {
  WAIT_PENDING,                 /* not yet: only from a check */
  WAIT_READY, WAIT_EXITED, WAIT_FAILED, WAIT_TIMEOUT, WAIT_INTERRUPTED,
};
struct proc_wait {
  pid_t child;                  /* ours, or 0 */
  int timeout_ms;               /* negative: none */
  bool interruptible;
  enum wait_result (*check) (void *opaque);  /* NULL: the child's exit */
  void *opaque;
  int wstatus;                  /* the child's, after WAIT_EXITED */
};
enum wait_result proc_wait_for (struct proc_wait *w);
enum wait_result proc_wait_pidfile (const char *pidfile, pid_t child,
                                    int timeout_ms, bool interruptible,
                                    pid_t *pid);
pid_t proc_read_pidfile (const char *path);
bool proc_is (pid_t pid, const char *program, const char *marker);
bool proc_wait (pid_t pid, const char *program, const char *marker,
                int ms);
int proc_stop (pid_t pid, const char *program, const char *marker,
               int grace_ms);
void proc_forward_log (const char *log_path);
void sleep_ms (int ms);
long now_ms (void);              /* a monotonic clock */

/* loop.c: loop devices. */
char *loop_attach (const char *file, bool readonly, int *fd);
int loop_detach (const char *device);
int loop_detach_backed_under (const char *dir);

/* mountinfo.c: the mount table. */
bool is_mount_point (const char *path, char **source, char **fstype);
bool has_mount_under (const char *dir);

/* attach.c: nbdkit and the host attach step. */
int start_nbdkit (struct mount_state *st, const struct disk_options *d);
int start_nbdfuse (struct mount_state *st, size_t i, const char *export,
                   char *const *fuse_options);
int attach_kernel (struct mount_state *st, char **device, int *hold_fd);
bool nbd_module_present (void);

/* umount.c: tear a mount down, in order; tolerant of parts already gone. */
int teardown (struct mount_state *st);
int clean_stale_states (void);
void report_busy (const char *dir);

/* secret.c: a LUKS passphrase, and the other options for containers
 * the helper VM opens (LVM, md, LUKS).
 */
#define MAX_KEY_BYTES 32768
struct secret {
  char *data;                   /* locked in memory, wiped when freed */
  size_t len;                   /* 0: none */
};
int secret_get (const char *image, const char *key_file, bool needed,
                struct secret *s);
void secret_free (struct secret *s);
bool lv_name_ok (const char *lv);

/* disk-options.c: what mount and extract do before they start anything,
 * in this order: open the image and see what it holds (then opened, if
 * not NULL, may look at the image), choose the filesystem (chosen
 * checks the choice), get the LUKS passphrase (not for raw), run
 * before_state (the command's last checks), and create the state, with
 * the image, format, partition and filesystem recorded (not saved).  A
 * hook's status other than EXIT_OK ends it with that status.
 */
struct preparation {
  const struct disk_options *disk;
  bool raw;                     /* --raw: the disk itself, no passphrase */
  void (*opened) (struct image *img, void *opaque);
  int (*chosen) (const struct choice *c, void *opaque);
  int (*before_state) (void *opaque);
  void *opaque;
  struct disk_layout layout;    /* found */
  struct choice choice;         /* points into layout */
  struct secret key;
  struct mount_state *st;
};
int prepare (struct preparation *p);
void preparation_free (struct preparation *p);   /* and p->st */

/* guest.c: the helper VM's files. */
const char *guest_dir (void);
bool guest_built (void);
int guest_main (int argc, char *argv[]);

/* vm.c: the helper VM (guests/linux), once nbdkit serves the disk. */
struct vm_request {
  const char *accel;            /* "auto", "kvm" or "tcg" */
  const char *fstype;           /* NULL: the guest tries its filesystems */
  const char *fsopts;           /* mount options it needs, or NULL */
  bool rw;
  long uid, gid;                /* owner of every file in the sshfs mount */
  char *const *paths;           /* extract: paths in the filesystem */
  size_t n_paths;
  bool tar;                     /* set by vm_extract */
  bool reader_gone;             /* set by vm_extract: EPIPE on out_fd */
  bool containers;              /* the disk holds LVM, md or LUKS */
  const char *lv;               /* --lv VG/LV, or NULL */
  const struct secret *key;     /* LUKS passphrase, or NULL */
};
int vm_mount (struct mount_state *st, const struct vm_request *r);
int vm_extract (struct mount_state *st, struct vm_request *r, int out_fd,
                bool progress);
int vm_teardown (struct mount_state *st);
const char *vm_broken (const struct mount_state *st);
int vm_save (const char *accel);
char *vm_machine (const char *accel);
const char *vm_auto_accel (void);

/* vm-state.c: the helper VM's saved state, which vm.c restores. */
#define VM_QEMU "qemu-system-x86_64"
char *vm_state_path (const char *accel);
int vm_state_open (const char *accel, const char *machine, char **append,
                   char **why);
int vm_state_write (const char *accel, const char *machine,
                    const char *append, const char *qmp_path);

#endif /* QEMOUNT_SERVER_H */
