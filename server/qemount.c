/* SPDX-License-Identifier: BSD-3-Clause */
/* qemount: get at the data inside a disk image.
 *
 *   qemount [-v] info IMAGE [--json]
 *   qemount [-v] mount IMAGE DIR [options]
 *   qemount [-v] umount DIR|ID
 *   qemount [-v] list [--json]
 *
 * This file holds only the dispatch to the subcommands and the message
 * helpers they share.
 */

#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemount.h"
#include "snapshot.h"

bool verbose;

static void
vmessage (const char *level, const char *fs, va_list args)
{
  fprintf (stderr, "qemount: %s", level);
  vfprintf (stderr, fs, args);
  fputc ('\n', stderr);
}

void
errorf (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  vmessage ("error: ", fs, args);
  va_end (args);
}

void
warnf (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  vmessage ("warning: ", fs, args);
  va_end (args);
}

void
debugf (const char *fs, ...)
{
  va_list args;

  if (!verbose)
    return;
  va_start (args, fs);
  vmessage ("", fs, args);
  va_end (args);
}

bool
operands_ok (const char *command, int n, char *const args[],
             const char *const names[])
{
  int want = 0;
  char *missing;

  while (names[want])
    ++want;
  if (n > want) {
    errorf ("%s: unexpected argument '%s'", command, args[want]);
    return false;
  }
  if (n == want)
    return true;
  missing = xstrdup (names[n]);
  for (int i = n + 1; i < want; ++i) {
    char *m = xasprintf ("%s and %s", missing, names[i]);

    free (missing);
    missing = m;
  }
  errorf ("%s: missing %s", command, missing);
  free (missing);
  return false;
}

static const struct {
  const char *name;
  int (*main) (int argc, char *argv[]);
  const char *summary;
} commands[] = {
  { "info", info_main, "show an image's format, chain, partitions and filesystems" },
  { "mount", mount_main, "mount a filesystem from an image, or export the disk" },
  { "umount", umount_main, "undo a qemount mount and stop what it started" },
  { "list", list_main, "show what qemount has mounted" },
  { "extract", extract_main, "write a tar of a filesystem in an image (helper VM)" },
  { "guest", guest_main, "build the helper VM, or show what it mounts" },
  { "snapshot", snapshot_main, "create, commit, inspect and verify qsnap snapshots" },
};

static void
usage (FILE *fp)
{
  fprintf (fp,
           "usage: qemount [-v|--verbose] COMMAND [ARGS...]\n"
           "       qemount --help | --version | COMMAND --help\n"
           "\n"
           "Commands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; ++i)
    fprintf (fp, "  %-8s %s\n", commands[i].name, commands[i].summary);
  fprintf (fp, "\nSee qemount(1) for the options and the exit statuses.\n");
}

int
main (int argc, char *argv[])
{
  int i = 1;

  /* The image layer's default handlers print "qemount: error: ..."
   * like errorf(), so its messages need no routing.
   */
  for (; i < argc && argv[i][0] == '-'; ++i) {
    if (strcmp (argv[i], "-v") == 0 || strcmp (argv[i], "--verbose") == 0)
      verbose = true;
    else if (strcmp (argv[i], "--help") == 0 || strcmp (argv[i], "-h") == 0) {
      usage (stdout);
      return EXIT_OK;
    }
    else if (strcmp (argv[i], "--version") == 0 ||
             strcmp (argv[i], "-V") == 0) {
      printf ("%s %s\n", PACKAGE_NAME, PACKAGE_VERSION);
      return EXIT_OK;
    }
    else {
      errorf ("unknown option '%s' (see qemount --help)", argv[i]);
      return EXIT_USAGE;
    }
  }
  if (i == argc) {
    errorf ("missing COMMAND");
    usage (stderr);
    return EXIT_USAGE;
  }

  for (size_t c = 0; c < sizeof commands / sizeof commands[0]; ++c)
    if (strcmp (argv[i], commands[c].name) == 0)
      return commands[c].main (argc - i, &argv[i]);
  errorf ("unknown command '%s' (see qemount --help)", argv[i]);
  return EXIT_USAGE;
}
