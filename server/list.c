/* SPDX-License-Identifier: BSD-3-Clause */
/* qemount list [--json]: what qemount has mounted for this user, with
 * the processes and devices under each mount; also the extracts running,
 * or killed before they could clean up.
 */

#include <config.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemount.h"

struct listing {
  bool json;
  size_t count;
};

/* "mounted", "stale: WHY" or "busy" (being set up or torn down). */
static const char *
status_of (struct mount_state *st, const char **why)
{
  const char *status;

  *why = NULL;
  if (state_lock (st, false) == -1)
    return "busy";
  status = state_is_stale (st, why) ? "stale" : "mounted";
  state_unlock (st);
  return status;
}

static void
print_json (const struct mount_state *st, const char *status,
            const char *why, bool first)
{
  const char letter[2] = { st->letter, '\0' };

  json_member (stdout, first ? "\n  {" : ",\n  {", "mountpoint",
               st->mountpoint);
  json_member (stdout, ", ", "image", st->image);
  json_member (stdout, ", ", "snapshot", st->snapshot);
  json_member (stdout, ",\n   ", "command", st->extract ? "extract" : "mount");
  json_member (stdout, ", ", "id", state_id (st));
  json_member (stdout, ", ", "status", status);
  json_member (stdout, ", ", "reason", why);
  printf (", \"raw\": %s, \"partition\": %d",
          st->raw ? "true" : "false", st->partition);
  json_member (stdout, ", ", "letter", st->letter ? letter : NULL);
  json_member (stdout, ", ", "fstype", st->fstype);
  printf (", \"readonly\": %s", st->readonly ? "true" : "false");
  json_member (stdout, ", ", "overlay", st->overlay);
  json_member (stdout, ",\n   ", "attach", attach_name (st->attach));
  json_member (stdout, ", ", "loop", st->loop);
  json_member (stdout, ", ", "nbd", st->nbd);
  printf (", \"nbdkit_pid\": %d, \"qemu_pid\": %d, \"sshfs_pid\": %d,\n"
          "   \"owner_pid\": %d, \"files\": [",
          (int) st->nbdkit_pid, (int) st->qemu_pid, (int) st->sshfs_pid,
          (int) st->owner_pid);
  for (size_t i = 0; i < st->n_files; ++i) {
    char *target = fuse_target (st, st->files[i].name);

    json_member (stdout, i ? ", {" : "{", "path", target);
    printf (", \"nbdfuse_pid\": %d}", (int) st->files[i].pid);
    free (target);
  }
  json_member (stdout, "],\n   ", "state_dir", st->dir);
  printf ("}");
}

static void
print_human (const struct mount_state *st, const char *status,
             const char *why)
{
  printf ("%s  %s", st->extract ? "(extract)" :
          st->mountpoint ? st->mountpoint : "(unknown)",
          st->image ? st->image : "(unknown image)");
  if (st->snapshot)
    printf (" snapshot %s", st->snapshot);
  if (st->partition) {
    char name[16];

    format_partition (name, sizeof name, st->partition, st->letter);
    printf (" partition %s", name);
  }
  if (st->fstype)
    printf (" (%s)", st->fstype);
  printf (", %s", st->readonly ? "read-only" : "read-write");
  if (st->overlay)
    printf (", overlay %s", st->overlay);
  printf ("\n    via %s", attach_name (st->attach));
  if (st->loop)
    printf (" on %s", st->loop);
  if (st->nbd)
    printf (" on %s", st->nbd);
  printf ("; nbdkit pid %d", (int) st->nbdkit_pid);
  if (st->qemu_pid)
    printf (", qemu pid %d", (int) st->qemu_pid);
  if (st->sshfs_pid)
    printf (", sshfs pid %d", (int) st->sshfs_pid);
  for (size_t i = 0; i < st->n_files; ++i)
    printf (", nbdfuse pid %d (%s)", (int) st->files[i].pid,
            st->files[i].name);
  printf ("; id %s", state_id (st));
  if (strcmp (status, "stale") == 0)
    printf ("\n    stale: %s (qemount umount %s cleans it up)", why,
            st->mountpoint ? st->mountpoint : state_id (st));
  else if (strcmp (status, "busy") == 0)
    printf ("\n    %s by pid %d",
            st->extract ? "extracting" : "being set up or torn down",
            (int) st->owner_pid);
  printf ("\n");
}

static int
list_one (struct mount_state *st, void *opaque)
{
  struct listing *l = opaque;
  const char *why, *status = status_of (st, &why);

  if (l->json)
    print_json (st, status, why, l->count == 0);
  else
    print_human (st, status, why);
  l->count++;
  return 0;
}

static void
list_usage (FILE *fp)
{
  fprintf (fp,
           "usage: qemount list [--json]\n"
           "\n"
           "Show what qemount has mounted for you: directory, image, how,\n"
           "and the pids of the processes serving it.\n");
}

int
list_main (int argc, char *argv[])
{
  static const struct option long_options[] = {
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct listing l = { .json = false };
  int c, r;

  while ((c = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
    switch (c) {
    case 'j': l.json = true; break;
    case 'h': list_usage (stdout); return EXIT_OK;
    default: list_usage (stderr); return EXIT_USAGE;
    }
  }
  if (!operands_ok ("list", argc - optind, argv + optind,
                    (const char *const []) { NULL })) {
    list_usage (stderr);
    return EXIT_USAGE;
  }

  if (l.json)
    printf ("[");
  r = state_foreach (list_one, &l);
  if (l.json)
    printf (l.count ? "\n]\n" : "]\n");
  if (fflush (stdout) == EOF)
    return EXIT_ERROR;
  return r == -1 ? EXIT_ERROR : EXIT_OK;
}
