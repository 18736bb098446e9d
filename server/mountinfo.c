/* SPDX-License-Identifier: BSD-3-Clause */
/* The mount table, from /proc/self/mountinfo: is a path a mount point,
 * and what is mounted there.
 */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemount.h"

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void
unescape (char *s)
{
  char *out = s;

  while (*s) {
    if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' &&
        s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
      *out++ = (s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0');
      s += 4;
    }
    else
      *out++ = *s++;
  }
  *out = '\0';
}

struct mount_entry {
  char *mountpoint, *fstype, *source;
};

/* Split one mountinfo line in place:
 *   ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
 */
static bool
parse_line (char *line, struct mount_entry *e)
{
  char *fields[6], *save = NULL, *tok;
  int n = 0;

  for (tok = strtok_r (line, " \n", &save); tok && n < 6;
       tok = strtok_r (NULL, " \n", &save))
    fields[n++] = tok;
  if (n < 6)
    return false;
  while (tok && strcmp (tok, "-") != 0)
    tok = strtok_r (NULL, " \n", &save);
  if (tok == NULL)
    return false;
  e->mountpoint = fields[4];
  e->fstype = strtok_r (NULL, " \n", &save);
  e->source = strtok_r (NULL, " \n", &save);
  if (e->fstype == NULL || e->source == NULL)
    return false;
  unescape (e->mountpoint);
  unescape (e->source);
  return true;
}

/* Calls fn for each mount, in mount order (later mounts stack on
 * earlier ones at the same point).
 */
static void
foreach_mount (void (*fn) (const struct mount_entry *e, void *opaque),
               void *opaque)
{
  FILE *fp = fopen ("/proc/self/mountinfo", "re");
  char *line = NULL;
  size_t len = 0;

  if (fp == NULL) {
    warnf ("/proc/self/mountinfo: %m");
    return;
  }
  while (getline (&line, &len, fp) != -1) {
    struct mount_entry e;

    if (parse_line (line, &e))
      fn (&e, opaque);
  }
  free (line);
  fclose (fp);
}

struct find {
  const char *path;
  bool found;
  char *source, *fstype;
};

static void
match_point (const struct mount_entry *e, void *opaque)
{
  struct find *f = opaque;

  if (strcmp (e->mountpoint, f->path) != 0)
    return;
  f->found = true;
  free (f->source);
  free (f->fstype);
  f->source = xstrdup (e->source);
  f->fstype = xstrdup (e->fstype);
}

/* True if something is mounted at path (absolute, resolved); the
 * topmost mount's source and type go to *source and *fstype if not NULL
 * (the caller frees them).
 */
bool
is_mount_point (const char *path, char **source, char **fstype)
{
  struct find f = { .path = path };

  foreach_mount (match_point, &f);
  if (source)
    *source = f.source;
  else
    free (f.source);
  if (fstype)
    *fstype = f.fstype;
  else
    free (f.fstype);
  return f.found;
}

static void
match_under (const struct mount_entry *e, void *opaque)
{
  struct find *f = opaque;
  size_t len = strlen (f->path);

  if (strncmp (e->mountpoint, f->path, len) == 0 &&
      (e->mountpoint[len] == '/' || e->mountpoint[len] == '\0'))
    f->found = true;
}

/* True if dir or anything below it is a mount point. */
bool
has_mount_under (const char *dir)
{
  struct find f = { .path = dir };

  foreach_mount (match_under, &f);
  return f.found;
}
