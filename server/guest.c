/* SPDX-License-Identifier: BSD-3-Clause */
/* The helper VM's files (guests/linux builds them): where they are, and
 * qemount guest build | info.  vm.c runs them.
 */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qemount.h"

#define BUILD_SCRIPT "guests/linux/build-guest"

/* $QEMOUNT_GUEST_DIR; else build/guest of the build tree this binary
 * lives in (server/qemount); else ~/.cache/qemount/guest.
 */
const char *
guest_dir (void)
{
  static char *dir;

  if (dir == NULL) {
    const char *home = getenv ("HOME");
    CLEANUP_FREE char *cache =
      xasprintf ("%s/.cache/qemount/guest", home && *home ? home : "/tmp");

    dir = find_ours ("QEMOUNT_GUEST_DIR", "build/guest", BUILD_SCRIPT,
                     X_OK, cache);
  }
  return dir;
}

/* The helper VM's kernel and initrd are there (qemount guest build). */
bool
guest_built (void)
{
  CLEANUP_FREE char *k = xasprintf ("%s/vmlinux", guest_dir ());
  CLEANUP_FREE char *i = xasprintf ("%s/initrd", guest_dir ());

  return access (k, R_OK) == 0 && access (i, R_OK) == 0;
}

/* The saved guest for accel (vm-state.c), if there is one: its size,
 * or why mounts cannot restore it.
 */
static void
print_saved (const char *accel)
{
  CLEANUP_FREE char *machine = vm_machine (accel);
  CLEANUP_FREE char *path = vm_state_path (accel);
  CLEANUP_FREE char *append = NULL, *why = NULL;
  int fd = vm_state_open (accel, machine, &append, &why);
  struct stat s;

  if (fd >= 0 && fstat (fd, &s) == 0)
    printf ("saved %s %s, %lld MiB\n", accel, path,
            (long long) s.st_size >> 20);
  else if (why)
    printf ("saved %s %s\n", accel, why);
  if (fd >= 0)
    close (fd);
}

/* qemount guest build | info */
int
guest_main (int argc, char *argv[])
{
  bool help;

  if (argc == 2 && strcmp (argv[1], "build") == 0) {
    CLEANUP_FREE char *script =
      find_ours (NULL, BUILD_SCRIPT, BUILD_SCRIPT, X_OK,
                 PKGLIBEXECDIR "/build-guest");
    const char *args[] = { script, guest_dir (), NULL };

    debugf ("%s %s", args[0], args[1]);
    if (proc_run ((char **) args) != 0)
      return EXIT_ERROR;        /* it said why */
    /* Every mount restores the guest saved here. */
    return vm_save (vm_auto_accel ()) == 0 ? EXIT_OK : EXIT_ERROR;
  }
  if (argc == 2 && strcmp (argv[1], "info") == 0) {
    CLEANUP_FREE char *path = xasprintf ("%s/info", guest_dir ());
    FILE *fp = fopen (path, "re");
    char line[4096];

    if (fp == NULL) {
      errorf ("no helper guest in %s (qemount guest build makes it)",
              guest_dir ());
      return EXIT_NEEDS_VM;
    }
    printf ("guest %s\n", guest_dir ());
    while (fgets (line, sizeof line, fp))
      fputs (line, stdout);
    fclose (fp);
    print_saved ("tcg");
    print_saved ("kvm");
    return EXIT_OK;
  }
  help = argc == 2 && strcmp (argv[1], "--help") == 0;
  if (argc == 2 && !help)
    errorf ("guest: unknown command '%s' (build or info)", argv[1]);
  else if (!help)
    operands_ok ("guest", argc - 1, argv + 1,
                 (const char *const []) { "build or info", NULL });
  fprintf (help ? stdout : stderr,
           "usage: qemount guest build | info\n"
           "\n"
           "build: fetch Debian's kernel package and build the helper VM\n"
           "       in %s, then boot and save it for mounts to restore\n"
           "info:  its kernel version, the filesystems it mounts and its\n"
           "       saved state\n",
           guest_dir ());
  return help ? EXIT_OK : EXIT_USAGE;
}
