/* SPDX-License-Identifier: BSD-3-Clause */
/* The VMDK text descriptor: "key=value" lines (CID, parentCID,
 * createType, parentFileNameHint; the rest, like the ddb.* disk data
 * base, is not needed to read the disk) and extent lines:
 *
 *   ACCESS SECTORS TYPE ["FILE" [OFFSET]]
 *
 * ACCESS is RW, RDONLY or NOACCESS; TYPE SPARSE, FLAT, ZERO or VMFS
 * (a flat extent on VMFS).  '#' starts a comment line.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "vmdk.h"

#define PARSE_ERROR(...) (image_error (__VA_ARGS__), errno = EINVAL, -1)

/* The createType values VMware documents, as static strings. */
static const char *const create_types[] = {
  "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
  "twoGbMaxExtentFlat", "streamOptimized", "vmfs", "vmfsSparse",
  "vmfsThin", "vmfsRaw", "vmfsRDM", "vmfsPassthroughRawDeviceMap",
  "vmfsPreallocated", "vmfsEagerZeroedThick", "seSparse", "fullDevice",
  "partitionedDevice", "custom",
};

static bool
is_space (char c)
{
  return c == ' ' || c == '\t';
}

static char *
skip_space (char *p)
{
  while (is_space (*p))
    p++;
  return p;
}

/* A decimal number of sectors at *p, advancing *p. */
static bool
parse_sectors (char **p, uint64_t *v)
{
  char *s = *p;

  *v = 0;
  if (*s < '0' || *s > '9')
    return false;
  for (; *s >= '0' && *s <= '9'; ++s) {
    /* The byte count, sectors * 512, must fit in an off_t. */
    if (*v > ((uint64_t) INT64_MAX / 512 - (*s - '0')) / 10)
      return false;
    *v = *v * 10 + (*s - '0');
  }
  *p = s;
  return true;
}

static int
parse_extent (const char *path, unsigned line, char *p,
              struct vmdk_descriptor_extent *e)
{
  char *type, *name;
  size_t n;

  e->noaccess = strncmp (p, "NOACCESS", 8) == 0;
  p += strcspn (p, " \t");
  p = skip_space (p);
  if (!parse_sectors (&p, &e->sectors) || !is_space (*p))
    return PARSE_ERROR ("%s: descriptor line %u: the extent's size is not "
                        "a number of sectors", path, line);
  type = skip_space (p);
  n = strcspn (type, " \t");
  p = type + n;
  if (n == 6 && strncmp (type, "SPARSE", 6) == 0)
    e->type = VMDK_EXTENT_SPARSE;
  else if ((n == 4 && strncmp (type, "FLAT", 4) == 0) ||
           (n == 4 && strncmp (type, "VMFS", 4) == 0))
    e->type = VMDK_EXTENT_FLAT;
  else if (n == 4 && strncmp (type, "ZERO", 4) == 0)
    e->type = VMDK_EXTENT_ZERO;
  else if ((n == 10 && strncmp (type, "VMFSSPARSE", 10) == 0) ||
           (n == 8 && strncmp (type, "SESPARSE", 8) == 0))
    return PARSE_ERROR ("%s: descriptor line %u: %.*s extents (ESXi's "
                        "snapshot formats) are not supported", path, line,
                        (int) n, type);
  else
    return PARSE_ERROR ("%s: descriptor line %u: unknown extent type "
                        "'%.*s'", path, line, (int) (n > 32 ? 32 : n), type);

  p = skip_space (p);
  if (e->type == VMDK_EXTENT_ZERO) {
    if (*p != '\0')
      return PARSE_ERROR ("%s: descriptor line %u: a ZERO extent has no "
                          "file", path, line);
    return 0;
  }
  if (*p != '"' || (name = p + 1, (p = strchr (name, '"')) == NULL))
    return PARSE_ERROR ("%s: descriptor line %u: the extent's file name is "
                        "missing or not quoted", path, line);
  *p++ = '\0';
  p = skip_space (p);
  if (*p != '\0') {
    if (e->type != VMDK_EXTENT_FLAT || !parse_sectors (&p, &e->offset) ||
        *skip_space (p) != '\0')
      return PARSE_ERROR ("%s: descriptor line %u: unexpected text after "
                          "the extent's file name", path, line);
  }
  if (e->noaccess)
    return 0;
  e->file = strdup (name);
  if (e->file == NULL) {
    image_error ("%s: %m", path);
    return -1;
  }
  return 0;
}

/* A value, its quotes removed (ends at the line's end, trailing spaces
 * dropped).
 */
static char *
unquote (char *v)
{
  size_t n = strlen (v);

  while (n > 0 && is_space (v[n - 1]))
    v[--n] = '\0';
  if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
    v[n - 1] = '\0';
    return v + 1;
  }
  return v;
}

static int
parse_cid (const char *path, unsigned line, const char *key, const char *v,
           uint32_t *cid)
{
  char *end;
  unsigned long x;

  errno = 0;
  x = strtoul (v, &end, 16);
  if (*v == '\0' || *end != '\0' || errno != 0 || x > UINT32_MAX ||
      *v == '-' || *v == '+')
    return PARSE_ERROR ("%s: descriptor line %u: %s is not a 32-bit "
                        "hexadecimal number", path, line, key);
  *cid = x;
  return 0;
}

static int
parse_setting (const char *path, unsigned line, char *p,
               struct vmdk_descriptor *d)
{
  char *eq = strchr (p, '='), *key_end, *v;

  if (eq == NULL)
    return 0;                   /* not a setting: ignored, as VMware does */
  key_end = eq;
  while (key_end > p && is_space (key_end[-1]))
    key_end--;
  *key_end = '\0';
  v = unquote (skip_space (eq + 1));

  if (strcmp (p, "CID") == 0) {
    d->has_cid = true;
    return parse_cid (path, line, "CID", v, &d->cid);
  }
  if (strcmp (p, "parentCID") == 0) {
    d->has_parent_cid = true;
    return parse_cid (path, line, "parentCID", v, &d->parent_cid);
  }
  if (strcmp (p, "createType") == 0) {
    d->create_type = NULL;
    for (size_t i = 0; i < sizeof create_types / sizeof create_types[0]; ++i)
      if (strcmp (v, create_types[i]) == 0)
        d->create_type = create_types[i];
    return 0;
  }
  if (strcmp (p, "parentFileNameHint") == 0 && *v != '\0') {
    free (d->parent_hint);
    d->parent_hint = strdup (v);
    if (d->parent_hint == NULL) {
      image_error ("%s: %m", path);
      return -1;
    }
  }
  return 0;
}

static bool
is_extent_line (const char *p)
{
  return (strncmp (p, "RW", 2) == 0 && is_space (p[2])) ||
    (strncmp (p, "RDONLY", 6) == 0 && is_space (p[6])) ||
    (strncmp (p, "NOACCESS", 8) == 0 && is_space (p[8]));
}

static int
parse_lines (const char *path, char *text, bool with_extents,
             struct vmdk_descriptor *d)
{
  unsigned line = 0;
  char *next;

  for (char *p = text; p != NULL; p = next) {
    size_t n;

    line++;
    next = strchr (p, '\n');
    if (next != NULL)
      *next++ = '\0';
    n = strlen (p);
    if (n > 0 && p[n - 1] == '\r')
      p[n - 1] = '\0';
    p = skip_space (p);
    if (*p == '\0' || *p == '#')
      continue;

    if (!is_extent_line (p)) {
      if (parse_setting (path, line, p, d) == -1)
        return -1;
      continue;
    }
    if (!with_extents)
      continue;
    if (d->n_extents == VMDK_MAX_EXTENTS)
      return PARSE_ERROR ("%s: more than %u extents", path,
                          VMDK_MAX_EXTENTS);
    if (d->n_extents % 64 == 0) {
      struct vmdk_descriptor_extent *e =
        realloc (d->extents, (d->n_extents + 64) * sizeof *e);

      if (e == NULL) {
        image_error ("%s: %m", path);
        return -1;
      }
      d->extents = e;
    }
    memset (&d->extents[d->n_extents], 0, sizeof d->extents[0]);
    if (parse_extent (path, line, p, &d->extents[d->n_extents++]) == -1)
      return -1;
  }
  if (with_extents && d->n_extents == 0)
    return PARSE_ERROR ("%s: the descriptor lists no extents", path);
  return 0;
}

int
vmdk_parse_descriptor (const char *path, const char *text, size_t len,
                       bool with_extents, struct vmdk_descriptor *d)
{
  char *copy;
  int r;

  memset (d, 0, sizeof *d);
  d->parent_cid = VMDK_NO_PARENT_CID;
  copy = strndup (text, len);
  if (copy == NULL) {
    image_error ("%s: %m", path);
    return -1;
  }
  r = parse_lines (path, copy, with_extents, d);
  free (copy);
  if (r == -1)
    vmdk_descriptor_free (d);
  return r;
}

void
vmdk_descriptor_free (struct vmdk_descriptor *d)
{
  for (size_t i = 0; i < d->n_extents; ++i)
    free (d->extents[i].file);
  free (d->extents);
  free (d->parent_hint);
  d->extents = NULL;
  d->n_extents = 0;
  d->parent_hint = NULL;
}
