/* SPDX-License-Identifier: BSD-3-Clause */
/* qemount info IMAGE [--json]: the image's format, chain, partitions and
 * filesystems, straight from the image layer (no server needed).
 */

#include <config.h>

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qemount.h"

static void
info_usage (FILE *fp)
{
  fprintf (fp,
           "usage: qemount info IMAGE [--json] [--format FORMAT]"
           " [--backing yes|no|samedir]\n"
           "                    [--snapshot NAME]\n"
           "\n"
           "Show the image's format, version, virtual size, cluster size,\n"
           "allocated bytes, streams, internal snapshots, backing chain,\n"
           "dirty flag, partitions and the filesystem in each (of the\n"
           "snapshot NAME with --snapshot).  --json prints the same as one\n"
           "JSON object.\n");
}

struct layer_info {
  const struct image *img;
  uint64_t allocated;
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
            const struct snapshots *snaps, const struct disk_layout *d)
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
  json_member (fp, "\n  ],\n  ", "partition_table", d->table);
  json_member (fp, ",\n  ", "partition_table_id", d->table_id);
  fputs (",\n  \"filesystem\": ", fp);
  json_filesystem (fp, &d->whole);

  fputs (",\n  \"partitions\": [", fp);
  for (size_t i = 0; i < d->n_partitions; ++i) {
    const struct partition *p = &d->partitions[i];

    fprintf (fp, "%s    {\"number\": %d, \"start\": %" PRIu64
             ", \"size\": %" PRIu64,
             i ? ",\n" : "\n", p->number, p->start, p->size);
    json_member (fp, ", ", "type", p->type);
    json_member (fp, ", ", "type_name", p->type_name);
    json_member (fp, ", ", "name", p->name);
    json_member (fp, ", ", "uuid", p->uuid);
    fprintf (fp, ", \"extended\": %s, \"logical\": %s",
             p->extended ? "true" : "false", p->logical ? "true" : "false");
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
             const struct snapshots *snaps, const struct disk_layout *d)
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
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct disk_options d;
  struct layer_info layers[MAX_CHAIN_DEPTH + 1];
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
    case 'h': info_usage (stdout); return EXIT_OK;
    default: info_usage (stderr); return EXIT_USAGE;
    }
  }
  if (!operands_ok ("info", argc - optind, argv + optind,
                    (const char *const []) { "IMAGE", NULL })) {
    info_usage (stderr);
    return EXIT_USAGE;
  }
  d.req.path = argv[optind];

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
  if (probe_disk (img, &layout) == -1) {
    image_close (img);
    return EXIT_BAD_IMAGE;
  }

  image_list_streams (img, &streams, &n_streams);
  image_list_snapshots (img, &snaps.list, &snaps.n, &snaps.served);
  if (json)
    print_json (stdout, d.req.path, layers, n_layers, streams, n_streams,
                &snaps, &layout);
  else
    print_human (stdout, d.req.path, layers, n_layers, streams, n_streams,
                 &snaps, &layout);

  free_disk_layout (&layout);
  image_close (img);
  if (fflush (stdout) == EOF) {
    errorf ("writing the output: %m");
    return EXIT_ERROR;
  }
  return EXIT_OK;
}
