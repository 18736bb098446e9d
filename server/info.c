/* SPDX-License-Identifier: BSD-3-Clause */
/* qemount info IMAGE [--json] [--verify]: the image's format, chain,
 * partitions and filesystems, straight from the image layer (no server
 * needed); with --verify, the whole disk read and checked against the
 * hashes the image stores.
 */

#include <config.h>

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nettle/nettle-meta.h>

#include "qemount.h"

static void
info_usage (FILE *fp)
{
  fprintf (fp,
           "usage: qemount info IMAGE [--json] [--verify] [--format FORMAT]"
           " [--backing yes|no|samedir]\n"
           "                    [--snapshot NAME] [--cache-dir DIR] [--timeout S]\n"
           "\n"
           "Show the image's format, version, virtual size, cluster size,\n"
           "allocated bytes, streams, internal snapshots, backing chain,\n"
           "dirty flag, partitions and the filesystem in each (of the\n"
           "snapshot NAME with --snapshot).  --json prints the same as one\n"
           "JSON object.  --verify reads the whole disk first and compares\n"
           "it with the hashes the image stores (EWF: MD5, SHA1); a mismatch\n"
           "or an unreadable area is an error (exit status 6).\n");
}

struct layer_info {
  const struct image *img;
  uint64_t allocated;
  /* --verify, for a layer that stores digests: computed[i] is the hash
   * of its disk with img->digests[i]'s algorithm (they matched).
   */
  bool verified;
  uint8_t (*computed)[64];
};

/* The internal snapshots of the image file. */
struct snapshots {
  const struct image_snapshot *list;
  size_t n;
  long served;                  /* index, -1: the active state */
};

/* A snapshot's date, UTC, in ISO 8601 (json) or as qemu-img shows it. */
static void
format_date (char *buf, size_t len, uint32_t date, bool json)
{
  const time_t t = date;
  struct tm tm;

  gmtime_r (&t, &tm);
  strftime (buf, len, json ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%d %H:%M:%S",
            &tm);
}

/* --verify: how many bytes were read, from the top. */
struct verify_info {
  bool requested;
  uint64_t bytes;
};

/* The hash functions of the algorithms images store. */
static const struct nettle_hash *
hash_function (const char *algorithm)
{
  if (strcmp (algorithm, "MD5") == 0)
    return &nettle_md5;
  if (strcmp (algorithm, "SHA1") == 0)
    return &nettle_sha1;
  return NULL;
}

static void
hex (const uint8_t *bytes, size_t n, char *out)
{
  for (size_t i = 0; i < n; ++i)
    sprintf (out + 2 * i, "%02x", bytes[i]);
}

/* Read the whole disk of l->img (its layer and those below), hashing it
 * with each digest the layer stores, and compare.  Returns an exit
 * status: the image layer has reported a read error, and a mismatch is
 * reported here, both as a corrupt image.
 */
static int
verify_layer (struct layer_info *l)
{
  enum { BUF = 4 << 20 };
  struct image *img = (struct image *) l->img;
  const size_t n = img->n_digests;
  const struct nettle_hash **fn = calloc (n + 1, sizeof *fn);
  void **ctx = calloc (n + 1, sizeof *ctx);
  uint8_t *buf = malloc (BUF);
  int status = EXIT_ERROR;

  l->computed = calloc (n + 1, sizeof *l->computed);
  if (fn == NULL || ctx == NULL || buf == NULL || l->computed == NULL) {
    errorf ("%m");
    goto out;
  }
  for (size_t i = 0; i < n; ++i) {
    fn[i] = hash_function (img->digests[i].algorithm);
    if (fn[i] == NULL || fn[i]->digest_size != img->digests[i].size) {
      errorf ("%s: cannot verify a %s hash", img->path,
              img->digests[i].algorithm);
      goto out;
    }
    ctx[i] = malloc (fn[i]->context_size);
    if (ctx[i] == NULL) {
      errorf ("%m");
      goto out;
    }
    fn[i]->init (ctx[i]);
  }

  for (uint64_t offset = 0; offset < img->size; offset += BUF) {
    size_t len = img->size - offset < BUF ? img->size - offset : BUF;

    if (image_pread (img, buf, len, offset) == -1) {
      status = EXIT_BAD_IMAGE;
      goto out;
    }
    for (size_t i = 0; i < n; ++i)
      fn[i]->update (ctx[i], len, buf);
  }

  for (size_t i = 0; i < n; ++i) {
    const struct image_digest *d = &img->digests[i];

    fn[i]->digest (ctx[i], d->size, l->computed[i]);
    if (memcmp (l->computed[i], d->value, d->size) != 0) {
      char want[129], got[129];

      hex (d->value, d->size, want);
      hex (l->computed[i], d->size, got);
      errorf ("%s: the image is corrupt: the %s hash stored in it is %s, "
              "the disk's is %s", img->path, d->algorithm, want, got);
      status = EXIT_BAD_IMAGE;
      goto out;
    }
  }
  l->verified = n > 0;
  status = EXIT_OK;

 out:
  for (size_t i = 0; ctx && i < n; ++i)
    free (ctx[i]);
  free (ctx);
  free (fn);
  free (buf);
  return status;
}

/* --verify: every layer that stores digests, or the top if none does;
 * so an image without any is still read end to end.
 */
static int
verify (struct layer_info *layers, size_t n_layers, struct verify_info *v)
{
  bool any = false;
  int status;

  for (size_t i = 0; i < n_layers; ++i)
    if (layers[i].img->n_digests > 0) {
      any = true;
      status = verify_layer (&layers[i]);
      if (status != EXIT_OK)
        return status;
    }
  if (!any && (status = verify_layer (&layers[0])) != EXIT_OK)
    return status;
  v->bytes = layers[0].img->size;
  return EXIT_OK;
}

static void
json_verify (FILE *fp, const struct layer_info *layers, size_t n_layers,
             const struct verify_info *v)
{
  bool first = true;

  fprintf (fp, ",\n  \"verify\": {\"read_bytes\": %" PRIu64
           ", \"hashes\": [", v->bytes);
  for (size_t i = 0; i < n_layers; ++i) {
    const struct image *img = layers[i].img;

    for (size_t j = 0; layers[i].verified && j < img->n_digests; ++j) {
      char value[129];

      hex (layers[i].computed[j], img->digests[j].size, value);
      json_member (fp, first ? "\n    {" : ",\n    {", "path", img->path);
      json_member (fp, ", ", "algorithm", img->digests[j].algorithm);
      json_member (fp, ", ", "value", value);
      fputs (", \"matches\": true}", fp);
      first = false;
    }
  }
  fputs (first ? "]}" : "\n  ]}", fp);
}

static void
print_verify (FILE *fp, const struct layer_info *layers, size_t n_layers,
              const struct verify_info *v)
{
  bool any = false;
  char size[32];

  for (size_t i = 0; i < n_layers; ++i) {
    const struct image *img = layers[i].img;

    if (!layers[i].verified)
      continue;
    fprintf (fp, "%-17s ", "verify:");
    if (i > 0)
      fprintf (fp, "%s: ", img->path);
    for (size_t j = 0; j < img->n_digests; ++j) {
      char value[129];

      hex (layers[i].computed[j], img->digests[j].size, value);
      fprintf (fp, "%s%s matches (%s)", j ? ", " : "",
               img->digests[j].algorithm, value);
    }
    fputc ('\n', fp);
    any = true;
  }
  if (!any) {
    format_size (size, sizeof size, v->bytes);
    fprintf (fp, "%-17s no stored hash (%s images have none); "
             "all %s read without error\n", "verify:",
             layers[0].img->ops->name, size);
  }
}

static void
json_filesystem (FILE *fp, const struct filesystem *fs)
{
  if (fs->type == NULL) {
    fputs ("null", fp);
    return;
  }
  json_member (fp, "{", "type", fs->type);
  json_member (fp, ", ", "usage", fs->usage);
  json_member (fp, ", ", "label", fs->label);
  json_member (fp, ", ", "uuid", fs->uuid);
  if (fs->variant)
    json_member (fp, ", ", "variant", fs->variant);
  if (fs->n_volumes > 0) {
    const char *sep = "";

    fputs (", \"volumes\": [", fp);
    for (int i = 0; i < APFS_MAX_VOLUMES; ++i) {
      const struct apfs_volume *v = &fs->volumes[i];
      char role[APFS_ROLE_LEN];

      if (!v->used)
        continue;
      fprintf (fp, "%s{\"index\": %d", sep, i);
      json_member (fp, ", ", "name", v->name);
      json_member (fp, ", ", "role",
                   v->name ? apfs_role_name (v->role, role) : NULL);
      fputs ("}", fp);
      sep = ", ";
    }
    fputs ("]", fp);
  }
  fputs ("}", fp);
}

static void
json_layer (FILE *fp, const struct layer_info *l, const char *indent)
{
  const struct image *img = l->img;

  json_member (fp, indent, "format", img->ops->name);
  fprintf (fp, ",\n%s", indent);
  json_member (fp, "", "subformat", img->subformat);
  fprintf (fp, ",\n%s\"version\": ", indent);
  if (img->version)
    fprintf (fp, "%" PRIu32, img->version);
  else
    fputs ("null", fp);
  fprintf (fp, ",\n%s\"virtual_size\": %" PRIu64, indent, img->size);
  fprintf (fp, ",\n%s\"block_size\": %" PRIu32, indent, img->block_size);
  fprintf (fp, ",\n%s\"allocated_bytes\": %" PRIu64, indent, l->allocated);
  fprintf (fp, ",\n%s\"dirty\": %s", indent, img->dirty ? "true" : "false");
}

static void
print_json (FILE *fp, const char *path, const struct layer_info *layers,
            size_t n_layers, char **streams, size_t n_streams,
            const struct snapshots *snaps, const struct disk_layout *d,
            const struct verify_info *v)
{
  json_member (fp, "{\n  ", "image", path);
  fputs (",\n", fp);
  json_layer (fp, &layers[0], "  ");

  fputs (",\n  \"streams\": [", fp);
  for (size_t i = 0; i < n_streams; ++i) {
    fputs (i ? ", " : "", fp);
    json_string (fp, streams[i]);
  }
  fputs ("],\n  \"snapshots\": [", fp);
  for (size_t i = 0; i < snaps->n; ++i) {
    const struct image_snapshot *s = &snaps->list[i];
    char date[32];

    format_date (date, sizeof date, s->date, true);
    json_member (fp, i ? ",\n    {" : "\n    {", "id", s->id);
    json_member (fp, ", ", "name", s->name);
    fprintf (fp, ", \"virtual_size\": %" PRIu64, s->size);
    json_member (fp, ", ", "date", date);
    fprintf (fp, ", \"vm_state_size\": %" PRIu64 ", \"served\": %s}",
             s->vm_state_size, (long) i == snaps->served ? "true" : "false");
  }
  fputs (snaps->n ? "\n  ],\n  \"chain\": [" : "],\n  \"chain\": [", fp);
  for (size_t i = 0; i < n_layers; ++i) {
    fputs (i ? ",\n    {\n" : "\n    {\n", fp);
    json_member (fp, "      ", "path", layers[i].img->path);
    fputs (",\n", fp);
    json_layer (fp, &layers[i], "      ");
    fputs ("\n    }", fp);
  }
  fputs ("\n  ]", fp);
  if (v->requested)
    json_verify (fp, layers, n_layers, v);
  json_member (fp, ",\n  ", "partition_table", d->table);
  json_member (fp, ",\n  ", "partition_table_id", d->table_id);
  fputs (",\n  \"filesystem\": ", fp);
  json_filesystem (fp, &d->whole);

  fputs (",\n  \"partitions\": [", fp);
  for (size_t i = 0; i < d->n_partitions; ++i) {
    const struct partition *p = &d->partitions[i];
    const char letter[2] = { p->letter, '\0' };

    fprintf (fp, "%s    {\"number\": %d, \"start\": %" PRIu64
             ", \"size\": %" PRIu64,
             i ? ",\n" : "\n", p->number, p->start, p->size);
    json_member (fp, ", ", "letter", p->letter ? letter : NULL);
    json_member (fp, ", ", "type", p->type);
    json_member (fp, ", ", "type_name", p->type_name);
    json_member (fp, ", ", "name", p->name);
    json_member (fp, ", ", "uuid", p->uuid);
    fprintf (fp, ", \"extended\": %s, \"logical\": %s, \"disklabel\": %s",
             p->extended ? "true" : "false", p->logical ? "true" : "false",
             p->disklabel ? "true" : "false");
    fputs (",\n     \"filesystem\": ", fp);
    json_filesystem (fp, &p->fs);
    fputs ("}", fp);
  }
  fputs (d->n_partitions ? "\n  ]\n}\n" : "]\n}\n", fp);
}

#define FIELD "%-17s "

static void
print_size_field (FILE *fp, const char *label, uint64_t bytes)
{
  char h[32];

  format_size (h, sizeof h, bytes);
  if (bytes < 1024)
    fprintf (fp, FIELD "%s\n", label, h);
  else
    fprintf (fp, FIELD "%s (%" PRIu64 " bytes)\n", label, h, bytes);
}

static void
print_filesystem (FILE *fp, const struct filesystem *fs)
{
  if (fs->type == NULL) {
    fprintf (fp, FIELD "none recognized\n", "filesystem:");
    return;
  }
  fprintf (fp, FIELD "%s", "filesystem:", fs->type);
  if (fs->variant)
    fprintf (fp, " (%s)", fs->variant);
  else if (fs->no_variant)
    fprintf (fp, " (Linux cannot mount it: %s)", fs->no_variant);
  if (fs->n_volumes > 0) {
    CLEANUP_FREE char *vols = apfs_format_volumes (fs);

    fprintf (fp, " (volumes %s)", vols);
  }
  if (fs->usage && strcmp (fs->usage, "filesystem") != 0)
    fprintf (fp, " (%s, not a filesystem)", fs->usage);
  if (fs->label)
    fprintf (fp, ", label \"%s\"", fs->label);
  if (fs->uuid)
    fprintf (fp, ", uuid %s", fs->uuid);
  fputc ('\n', fp);
}

/* The snapshot table, as qemu-img info shows it. */
static void
print_snapshots (FILE *fp, const struct snapshots *snaps)
{
  int id_width = 2, name_width = 4;

  fprintf (fp, FIELD "%zu%s\n", "snapshots:", snaps->n,
           snaps->served == -1 ? " (the active state is shown here)" : "");
  for (size_t i = 0; i < snaps->n; ++i) {
    int id_len = strlen (snaps->list[i].id);
    int name_len = strlen (snaps->list[i].name);

    if (id_len > id_width)
      id_width = id_len < 16 ? id_len : 16;
    if (name_len > name_width)
      name_width = name_len < 32 ? name_len : 32;
  }
  fprintf (fp, "  %-*s  %-*s  %12s  %12s  %s\n", id_width, "ID",
           name_width, "NAME", "VIRTUAL SIZE", "VM STATE", "DATE (UTC)");
  for (size_t i = 0; i < snaps->n; ++i) {
    const struct image_snapshot *s = &snaps->list[i];
    char size[32], vm[32], date[32];

    format_size (size, sizeof size, s->size);
    format_size (vm, sizeof vm, s->vm_state_size);
    format_date (date, sizeof date, s->date, false);
    fprintf (fp, "  %-*s  %-*s  %12s  %12s  %s%s\n", id_width, s->id,
             name_width, s->name, size, vm, date,
             (long) i == snaps->served ? "  (shown here)" : "");
  }
}

static void
print_human (FILE *fp, const char *path, const struct layer_info *layers,
             size_t n_layers, char **streams, size_t n_streams,
             const struct snapshots *snaps, const struct disk_layout *d,
             const struct verify_info *v)
{
  const struct image *img = layers[0].img;
  bool clusters = img->ops != &raw_ops;

  fprintf (fp, FIELD "%s\n", "image:", path);
  fprintf (fp, FIELD "%s", "format:", img->ops->name);
  if (img->subformat)
    fprintf (fp, " %s", img->subformat);
  if (img->version)
    fprintf (fp, " (version %" PRIu32 ")", img->version);
  fputc ('\n', fp);
  print_size_field (fp, "virtual size:", img->size);
  print_size_field (fp, clusters ? "cluster size:" : "block size:",
                    img->block_size);
  print_size_field (fp, "allocated:", layers[0].allocated);
  fprintf (fp, FIELD "%s\n", "dirty:",
           img->dirty ? "yes (not closed cleanly by its last writer)" : "no");

  if (n_streams) {
    fprintf (fp, FIELD, "streams:");
    for (size_t i = 0; i < n_streams; ++i)
      fprintf (fp, "%s%s%s", i ? ", " : "", streams[i],
               i ? "" : " (shown here)");
    fputc ('\n', fp);
  }
  if (snaps->n)
    print_snapshots (fp, snaps);
  if (n_layers == 1)
    fprintf (fp, FIELD "1 image\n", "chain:");
  else
    fprintf (fp, FIELD "%zu images, top first\n", "chain:", n_layers);
  for (size_t i = 0; i < n_layers; ++i) {
    const struct image *l = layers[i].img;
    char alloc[32];

    format_size (alloc, sizeof alloc, layers[i].allocated);
    fprintf (fp, "  %zu. %s  (%s", i + 1, l->path, l->ops->name);
    if (l->subformat)
      fprintf (fp, " %s", l->subformat);
    if (l->version)
      fprintf (fp, " v%" PRIu32, l->version);
    fprintf (fp, ", %s allocated%s)\n", alloc, l->dirty ? ", dirty" : "");
  }
  if (v->requested)
    print_verify (fp, layers, n_layers, v);

  if (d->table == NULL) {
    fprintf (fp, FIELD "none\n", "partition table:");
    print_filesystem (fp, &d->whole);
    return;
  }
  fprintf (fp, FIELD "%s", "partition table:", d->table);
  if (d->table_id)
    fprintf (fp, " (id %s)", d->table_id);
  fprintf (fp, ", %zu partition%s\n", d->n_partitions,
           d->n_partitions == 1 ? "" : "s");
  if (d->n_partitions)
    print_partition_list (fp, d);
}

int
info_main (int argc, char *argv[])
{
  static const struct option long_options[] = {
    IMAGE_LONG_OPTIONS,
    { "json", no_argument, NULL, 'j' },
    { "verify", no_argument, NULL, 'V' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct disk_options d;
  struct layer_info layers[MAX_CHAIN_DEPTH + 1] = { { 0 } };
  struct verify_info verified = { .requested = false };
  struct disk_layout layout;
  struct image *img;
  size_t n_layers = 0, n_streams;
  char **streams;
  struct snapshots snaps;
  bool json = false;
  int c, status;

  disk_options_init (&d);
  while ((c = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
    switch (parse_disk_option (c, optarg, &d)) {
    case 1: continue;
    case -1: return EXIT_USAGE;
    }
    switch (c) {
    case 'j': json = true; break;
    case 'V': verified.requested = true; break;
    case 'h': info_usage (stdout); return EXIT_OK;
    default: info_usage (stderr); return EXIT_USAGE;
    }
  }
  if (!operands_ok ("info", argc - optind, argv + optind,
                    (const char *const []) { "IMAGE", NULL })) {
    info_usage (stderr);
    return EXIT_USAGE;
  }
  disk_options_image (&d, argv[optind]);

  img = open_image (&d.req, &status);
  if (img == NULL)
    return status;

  for (const struct image *l = img; l && n_layers <= MAX_CHAIN_DEPTH;
       l = l->backing) {
    layers[n_layers].img = l;
    if (image_allocated_bytes ((struct image *) l,
                               &layers[n_layers].allocated) == -1) {
      image_close (img);
      return EXIT_BAD_IMAGE;
    }
    n_layers++;
  }
  if (verified.requested &&
      (status = verify (layers, n_layers, &verified)) != EXIT_OK)
    goto out;
  status = EXIT_BAD_IMAGE;
  if (probe_disk (img, &layout) == -1)
    goto out;

  image_list_streams (img, &streams, &n_streams);
  image_list_snapshots (img, &snaps.list, &snaps.n, &snaps.served);
  if (json)
    print_json (stdout, d.name, layers, n_layers, streams, n_streams,
                &snaps, &layout, &verified);
  else
    print_human (stdout, d.name, layers, n_layers, streams, n_streams,
                 &snaps, &layout, &verified);

  free_disk_layout (&layout);
  status = EXIT_OK;
  if (fflush (stdout) == EOF) {
    errorf ("writing the output: %m");
    status = EXIT_ERROR;
  }
 out:
  for (size_t i = 0; i < n_layers; ++i)
    free (layers[i].computed);
  image_close (img);
  return status;
}
