/* qemount extract IMAGE [--partition N] [--path P]... -o FILE|-: a tar
 * of the filesystem, made by the helper VM (vm.c) from a read-only
 * mount.  The tar goes to FILE.tmp, renamed to FILE once the guest has
 * said that tar succeeded, so an interrupted extract leaves no
 * half-written FILE.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qemount.h"

#define MAX_PATHS 64

static void
extract_usage (FILE *fp)
{
  fprintf (fp,
"usage: qemount extract IMAGE [--partition N] [--fstype T] [--path P]...\n"
"                       [--accel auto|kvm|tcg] [--format FORMAT]\n"
"                       [--backing yes|no|samedir]\n"
"                       [--lv VG/LV] [--key-file FILE|-] -o FILE|-\n"
"\n"
"Write a tar of the filesystem in IMAGE (or of the paths P in it) to\n"
"FILE, or to standard output with -o -.  The helper VM mounts the\n"
"filesystem read-only; owners, modes, times, symlinks, hard links,\n"
"xattrs and ACLs are kept (unpack with tar --xattrs --acls).  --lv and\n"
"--key-file as for qemount mount.\n");
}

int
extract_main (int argc, char *argv[])
{
  enum { OPT_ACCEL = 256, OPT_FORMAT, OPT_BACKING, OPT_PATH, OPT_LV,
         OPT_KEY_FILE };
  static const struct option long_options[] = {
    { "partition", required_argument, NULL, 'p' },
    { "fstype", required_argument, NULL, 't' },
    { "path", required_argument, NULL, OPT_PATH },
    { "output", required_argument, NULL, 'o' },
    { "accel", required_argument, NULL, OPT_ACCEL },
    { "format", required_argument, NULL, OPT_FORMAT },
    { "backing", required_argument, NULL, OPT_BACKING },
    { "lv", required_argument, NULL, OPT_LV },
    { "key-file", required_argument, NULL, OPT_KEY_FILE },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct image_request req = { .backing = BACKING_SAME_DIR };
  struct vm_request r = { .accel = "auto", .uid = -1, .gid = -1 };
  struct disk_layout layout = { .size = 0 };
  struct mount_state *st = NULL;
  struct choice choice;
  struct secret key = { .len = 0 };
  const char *output = NULL, *backing = "samedir", *msg, *fstype = NULL;
  const char *key_file = NULL;
  char *paths[MAX_PATHS], *tmp = NULL, *end;
  size_t n_paths = 0;
  int c, partition = 0, status, out_fd = -1;
  struct image *img;

  while ((c = getopt_long (argc, argv, "p:t:o:h", long_options, NULL)) != -1) {
    switch (c) {
    case 'p':
      errno = 0;
      partition = strtol (optarg, &end, 10);
      if (errno || *end || end == optarg || partition < 1 || partition > 1024) {
        errorf ("--partition %s: must be a partition number from 1", optarg);
        return EXIT_USAGE;
      }
      break;
    case 't': fstype = optarg; break;
    case 'o': output = optarg; break;
    case OPT_PATH:
      if (n_paths == MAX_PATHS) {
        errorf ("at most %d --path", MAX_PATHS);
        return EXIT_USAGE;
      }
      if (*optarg == '\0') {
        errorf ("--path: empty");
        return EXIT_USAGE;
      }
      paths[n_paths++] = optarg;
      break;
    case OPT_ACCEL:
      if (strcmp (optarg, "auto") && strcmp (optarg, "kvm") &&
          strcmp (optarg, "tcg")) {
        errorf ("--accel %s: must be auto, kvm or tcg", optarg);
        return EXIT_USAGE;
      }
      r.accel = optarg;
      break;
    case OPT_FORMAT:
      req.format = strcmp (optarg, "auto") == 0 ? NULL : optarg;
      break;
    case OPT_BACKING:
      if ((msg = parse_backing (optarg, &req.backing)) != NULL) {
        errorf ("%s", msg);
        return EXIT_USAGE;
      }
      backing = optarg;
      break;
    case OPT_LV:
      if (!lv_name_ok (optarg)) {
        errorf ("--lv %s: must be VG/LV, names of letters, digits and "
                "+ _ . -", optarg);
        return EXIT_USAGE;
      }
      r.lv = optarg;
      break;
    case OPT_KEY_FILE: key_file = optarg; break;
    case 'h': extract_usage (stdout); return EXIT_OK;
    default: extract_usage (stderr); return EXIT_USAGE;
    }
  }
  if (optind != argc - 1 || output == NULL) {
    extract_usage (stderr);
    return EXIT_USAGE;
  }
  req.path = argv[optind];
  if (strcmp (output, "-") == 0 && isatty (STDOUT_FILENO)) {
    errorf ("-o -: standard output is a terminal; redirect it");
    return EXIT_USAGE;
  }
  catch_interrupts ();

  /* What to extract: as qemount mount chooses what to mount. */
  img = open_image (&req, &status);
  if (img == NULL)
    return status;
  if (probe_disk (img, &layout) == -1) {
    image_close (img);
    return EXIT_BAD_IMAGE;
  }
  image_close (img);
  status = choose_filesystem (req.path, &layout, partition, fstype, false,
                              &choice);
  if (status == EXIT_OK)
    status = secret_get (req.path, key_file, choice.fs->type &&
                         strcmp (choice.fs->type, "crypto_LUKS") == 0, &key);
  if (status != EXIT_OK)
    goto out;
  partition = choice.partition;
  fstype = choice.fstype;
  r.containers = choice.container != NULL;
  r.key = &key;

  if (strcmp (output, "-") == 0)
    out_fd = STDOUT_FILENO;
  else {
    tmp = xasprintf ("%s.tmp", output);
    out_fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out_fd == -1) {
      errorf ("%s: %m", tmp);
      status = EXIT_ERROR;
      goto out;
    }
  }

  st = state_create ();
  if (st == NULL) {
    status = EXIT_ERROR;
    goto out;
  }
  st->image = realpath (req.path, NULL);
  if (st->image == NULL)
    st->image = xstrdup (req.path);
  st->format = req.format ? xstrdup (req.format) : NULL;
  st->partition = partition;
  st->fstype = fstype ? xstrdup (fstype) : NULL;
  st->readonly = true;
  if (state_save (st) == -1) {
    status = EXIT_ERROR;
    goto out;
  }
  status = start_nbdkit (st, backing);
  if (status == EXIT_OK) {
    r.fstype = st->fstype;
    r.paths = paths;
    r.n_paths = n_paths;
    status = vm_extract (st, &r, out_fd,
                         isatty (STDERR_FILENO) && out_fd != STDOUT_FILENO);
  }
  if (status == EXIT_OK && out_fd != STDOUT_FILENO) {
    if (fsync (out_fd) == -1 || close (out_fd) == -1) {
      errorf ("%s: %m", tmp);
      status = EXIT_ERROR;
    }
    out_fd = -1;
    if (status == EXIT_OK && rename (tmp, output) == -1) {
      errorf ("%s: %m", output);
      status = EXIT_ERROR;
    }
  }
  if (status == EXIT_INTERRUPTED)
    errorf ("interrupted: stopping what was started");
  if (teardown (st) != EXIT_OK)
    errorf ("could not stop everything: see qemount list");

 out:
  if (out_fd >= 0 && out_fd != STDOUT_FILENO)
    close (out_fd);
  if (status != EXIT_OK && tmp)
    unlink (tmp);
  free (tmp);
  state_free (st);
  free_disk_layout (&layout);
  secret_free (&key);
  return status;
}
