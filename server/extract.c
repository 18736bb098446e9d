/* SPDX-License-Identifier: BSD-3-Clause */
/* qemount extract IMAGE [--partition N] [--path P]... -o FILE|-: a tar
 * of the filesystem, made by the helper VM (vm.c) from a read-only
 * mount.  The tar goes to a new file beside FILE (outfile.h), named FILE
 * once the guest has said that tar succeeded, so an interrupted extract
 * leaves no half-written FILE.
 */

#include <config.h>

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "outfile.h"
#include "qemount.h"

#define MAX_PATHS 64

static void
extract_usage (FILE *fp)
{
  fprintf (fp,
"usage: qemount extract IMAGE [--partition N] [--fstype T] [--path P]...\n"
"                       [--accel auto|kvm|tcg] [--format FORMAT]\n"
"                       [--backing yes|no|samedir] [--snapshot NAME]\n"
"                       [--lv VG/LV] [--key-file FILE|-] [--volume N|NAME]\n"
"                       [--cache-dir DIR] [--timeout S]\n"
"                       -o FILE|-\n"
"\n"
"Write a tar of the filesystem in IMAGE (or of the paths P in it) to\n"
"FILE, or to standard output with -o -.  The helper VM mounts the\n"
"filesystem read-only; owners, modes, times, symlinks, hard links,\n"
"xattrs and ACLs are kept (unpack with tar --xattrs --acls).  --lv,\n"
"--key-file, --volume and --snapshot as for qemount mount.\n");
}

/* Where the tar goes: made before the state, as a check. */
struct output {
  const char *path;             /* "-": standard output */
  struct outfile out;
  int fd;
};

static int
extract_before_state (void *opaque)
{
  struct output *o = opaque;

  if (strcmp (o->path, "-") == 0) {
    o->fd = STDOUT_FILENO;
    return EXIT_OK;
  }
  if (outfile_create (&o->out, o->path, 0666) == -1)
    return EXIT_ERROR;
  o->fd = o->out.fd;
  return EXIT_OK;
}

int
extract_main (int argc, char *argv[])
{
  enum { OPT_PATH = 256 };
  static const struct option long_options[] = {
    DISK_LONG_OPTIONS,
    { "path", required_argument, NULL, OPT_PATH },
    { "output", required_argument, NULL, 'o' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct disk_options d;
  struct vm_request r = { .uid = -1, .gid = -1 };
  struct output output = { .path = NULL, .out = { .path = NULL }, .fd = -1 };
  struct preparation prep = {
    .disk = &d, .before_state = extract_before_state, .opaque = &output,
  };
  struct mount_state *st;
  char *paths[MAX_PATHS];
  size_t n_paths = 0;
  int c, status;

  disk_options_init (&d);
  while ((c = getopt_long (argc, argv, "p:t:o:h", long_options, NULL)) != -1) {
    switch (parse_disk_option (c, optarg, &d)) {
    case 1: continue;
    case -1: return EXIT_USAGE;
    }
    switch (c) {
    case 'o': output.path = optarg; break;
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
    case 'h': extract_usage (stdout); return EXIT_OK;
    default: extract_usage (stderr); return EXIT_USAGE;
    }
  }
  if (!operands_ok ("extract", argc - optind, argv + optind,
                    (const char *const []) { "IMAGE", NULL })) {
    extract_usage (stderr);
    return EXIT_USAGE;
  }
  if (output.path == NULL) {
    errorf ("extract: missing -o FILE (or -o - for standard output)");
    extract_usage (stderr);
    return EXIT_USAGE;
  }
  disk_options_image (&d, argv[optind]);
  r.accel = d.accel;
  r.lv = d.lv;
  if (strcmp (output.path, "-") == 0 && isatty (STDOUT_FILENO)) {
    errorf ("-o -: standard output is a terminal; redirect it");
    return EXIT_USAGE;
  }
  catch_interrupts ();

  /* What to extract: as qemount mount chooses what to mount. */
  status = prepare (&prep);
  if (status != EXIT_OK)
    goto out;
  st = prep.st;
  r.containers = prep.choice.container != NULL;
  r.key = &prep.key;
  st->extract = true;
  st->readonly = true;
  status = state_save (st) == -1 ? EXIT_ERROR : start_nbdkit (st, &d);
  if (status == EXIT_OK) {
    r.fstype = st->fstype;
    r.fsopts = prep.choice.fsopts[0] ? prep.choice.fsopts : NULL;
    r.paths = paths;
    r.n_paths = n_paths;
    status = vm_extract (st, &r, output.fd,
                         isatty (STDERR_FILENO) && output.fd != STDOUT_FILENO);
  }
  if (status == EXIT_OK && output.out.path &&
      outfile_commit (&output.out, true) == -1)
    status = EXIT_ERROR;
  if (status == EXIT_INTERRUPTED)
    errorf ("interrupted: stopping what was started");
  if (teardown (st) != EXIT_OK)
    errorf ("could not stop everything: see qemount list");

 out:
  outfile_close (&output.out);
  preparation_free (&prep);
  /* The reader of -o - went away (extract -o - | head): what we started
   * is stopped; now end as any filter would, killed by SIGPIPE.
   */
  if (r.reader_gone) {
    signal (SIGPIPE, SIG_DFL);
    raise (SIGPIPE);
  }
  return status;
}
