/* SPDX-License-Identifier: BSD-3-Clause */
/* qemount snapshot: create, commit, info and verify (qemount-snapshot(1)).
 *
 * create and commit are thin wrappers around lib/qsnap-writer.c that add
 * a progress bar, a one-line summary and cleanup on SIGINT/SIGTERM.
 * info and verify parse the file themselves with the qsnap-format.c
 * decoders, trusting no byte of it: every checksum is checked and every
 * offset is checked against the file before it is used.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "decompress.h"
#include "image.h"
#include "qemount.h"
#include "qsnap.h"
#include "qsnap-writer.h"
#include "snapshot.h"
#include "source.h"

static const char *const kind_names[QSNAP_KIND_MAX + 1] = {
  "zero", "raw", "lz4", "zstd", "parent",
};

/* Usage. */

static const char usage_create[] =
  "usage: qemount snapshot create INPUT OUTPUT.qsnap [--codec zstd|lz4|auto]\n"
  "         [--level N] [--jobs N] [--block-size SIZE] [--stream NAME=FILE ...]\n";
static const char usage_commit[] =
  "usage: qemount snapshot commit --base BASE --overlay OVL --output NEW.qsnap\n"
  "         [--thin] [--codec zstd|lz4|auto] [--level N] [--jobs N]\n"
  "         [--block-size SIZE]\n";
static const char usage_info[] =
  "usage: qemount snapshot info FILE.qsnap [--json]\n";
static const char usage_verify[] =
  "usage: qemount snapshot verify FILE.qsnap\n";

static const char help_codec[] =
  "  --codec zstd|lz4|auto   compressor (default zstd; auto keeps the smaller)\n"
  "  --level N               zstd level (default 3)\n"
  "  --jobs N                compression threads (default: one per CPU)\n"
  "  --block-size SIZE       4K to 4M, a power of two (default 1M, lz4 256K)\n";

static int
usage_error (const char *usage, const char *fs, ...)
  __attribute__ ((format (printf, 2, 3)));

static int
usage_error (const char *usage, const char *fs, ...)
{
  va_list args;

  if (fs) {
    fputs ("qemount: snapshot: ", stderr);
    va_start (args, fs);
    vfprintf (stderr, fs, args);
    va_end (args);
    fputc ('\n', stderr);
  }
  fputs (usage, stderr);
  return EXIT_USAGE;
}

/* Options shared by create and commit. */

enum { OPT_CODEC = 256, OPT_LEVEL, OPT_JOBS, OPT_BLOCK_SIZE, OPT_STREAM,
       OPT_BASE, OPT_OVERLAY, OPT_OUTPUT, OPT_THIN, OPT_JSON };

/* "64K", "1M", "65536": bytes, or false if not a size. */
static bool
parse_size (const char *s, uint64_t *bytes)
{
  char *end;
  unsigned long long v;
  unsigned shift = 0;

  errno = 0;
  v = strtoull (s, &end, 10);
  if (errno || end == s || s[0] == '-')
    return false;
  switch (*end) {
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  }
  if (*end == 'i' && shift)
    end++;
  if (*end == 'B' || *end == 'b')
    end++;
  if (*end != '\0' || v > (UINT64_MAX >> shift))
    return false;
  *bytes = (uint64_t) v << shift;
  return true;
}

static bool
parse_int (const char *s, long min, long max, long *v)
{
  char *end;

  errno = 0;
  *v = strtol (s, &end, 10);
  return errno == 0 && end != s && *end == '\0' && *v >= min && *v <= max;
}

/* One option of the codec group into opts; 0 done, else an exit status. */
static int
codec_option (int c, const char *arg, struct qsnap_write_options *opts,
              const char *usage)
{
  uint64_t size;
  long v;

  switch (c) {
  case OPT_CODEC:
    if (strcmp (arg, "zstd") == 0)
      opts->codec = QSNAP_CODEC_ZSTD;
    else if (strcmp (arg, "lz4") == 0)
      opts->codec = QSNAP_CODEC_LZ4;
    else if (strcmp (arg, "auto") == 0)
      opts->codec = QSNAP_CODEC_AUTO;
    else
      return usage_error (usage, "--codec must be zstd, lz4 or auto");
    return 0;
  case OPT_LEVEL:
    /* The library checks the range zstd supports. */
    if (!parse_int (arg, -1000000, 1000, &v) || v == 0)
      return usage_error (usage, "--level must be a zstd level, e.g. 3");
    opts->level = v;
    return 0;
  case OPT_JOBS:
    if (!parse_int (arg, 1, 256, &v))
      return usage_error (usage, "--jobs must be 1 to 256");
    opts->jobs = v;
    return 0;
  case OPT_BLOCK_SIZE:
    if (!parse_size (arg, &size) || size < QSNAP_MIN_BLOCK ||
        size > QSNAP_MAX_BLOCK || (size & (size - 1)) != 0)
      return usage_error (usage, "--block-size must be a power of two from "
                          "4K to 4M");
    opts->block_size = size;
    return 0;
  }
  return usage_error (usage, NULL);
}

#define CODEC_LONG_OPTIONS \
  { "codec", required_argument, NULL, OPT_CODEC }, \
  { "level", required_argument, NULL, OPT_LEVEL }, \
  { "jobs", required_argument, NULL, OPT_JOBS }, \
  { "block-size", required_argument, NULL, OPT_BLOCK_SIZE }, \
  { "help", no_argument, NULL, 'h' }

/* Progress, summary and signals for create and commit. */

struct progress {
  bool shown;                   /* stderr is a terminal */
  struct timespec start, last;
};

static double
seconds_since (const struct timespec *t)
{
  struct timespec now;

  clock_gettime (CLOCK_MONOTONIC, &now);
  return (now.tv_sec - t->tv_sec) + (now.tv_nsec - t->tv_nsec) / 1e9;
}

static void
show_progress (void *opaque, uint64_t done, uint64_t total)
{
  struct progress *p = opaque;
  const int width = 40;
  double fraction = total ? (double) done / total : 1;
  char bar[64];

  if (!p->shown || (seconds_since (&p->last) < 0.1 && done < total))
    return;
  clock_gettime (CLOCK_MONOTONIC, &p->last);
  for (int i = 0; i < width; ++i)
    bar[i] = i < fraction * width ? '#' : '.';
  bar[width] = '\0';
  fprintf (stderr, "\r[%s] %3.0f%% %6.1f MiB/s", bar, fraction * 100,
           done / 1048576.0 / (seconds_since (&p->start) + 1e-9));
}

static void
end_progress (struct progress *p)
{
  if (p->shown)
    fputs ("\r\033[K", stderr);
}

/* "disk.qcow2 -> base.qsnap: 1 GiB in, 312.4 MiB out, ratio 3.28:1, 4.2 s" */
static void
print_summary (const char *input, const char *output,
               const struct qsnap_write_stats *st, const struct progress *p)
{
  char in[32], out[32];

  format_size (in, sizeof in, st->input_bytes);
  format_size (out, sizeof out, st->file_bytes);
  printf ("%s -> %s: %s in, %s out, ratio %.2f:1, %.1f s\n", input, output,
          in, out, st->file_bytes ? (double) st->input_bytes / st->file_bytes
          : 0.0, seconds_since (&p->start));
}

static volatile sig_atomic_t snapshot_signal;

static void
on_signal (int sig)
{
  snapshot_signal = sig;
}

struct saved_signals {
  struct sigaction intr, term;
};

static void
catch_signals (struct saved_signals *saved)
{
  struct sigaction sa = { .sa_handler = on_signal };

  sigemptyset (&sa.sa_mask);
  snapshot_signal = 0;
  sigaction (SIGINT, &sa, &saved->intr);
  sigaction (SIGTERM, &sa, &saved->term);
}

/* Restore the handlers; after an interruption (the writer has removed
 * its file by now) die of the same signal, as the shell expects.
 */
static void
release_signals (const struct saved_signals *saved)
{
  sigaction (SIGINT, &saved->intr, NULL);
  sigaction (SIGTERM, &saved->term, NULL);
  if (snapshot_signal) {
    signal (snapshot_signal, SIG_DFL);
    raise (snapshot_signal);
  }
}

static void
start_progress (struct progress *p, struct qsnap_write_options *opts)
{
  p->shown = isatty (STDERR_FILENO);
  clock_gettime (CLOCK_MONOTONIC, &p->start);
  p->last = p->start;
  opts->progress = show_progress;
  opts->progress_opaque = p;
  opts->cancel = &snapshot_signal;
}

/* create */

static int
snapshot_create (int argc, char *argv[])
{
  static const struct option long_options[] = {
    CODEC_LONG_OPTIONS,
    { "stream", required_argument, NULL, OPT_STREAM },
    { NULL },
  };
  struct image_options io = { .backing = BACKING_SAME_DIR,
                              .readonly = true };
  struct qsnap_write_options opts = { .codec = QSNAP_CODEC_ZSTD };
  struct qsnap_input inputs[QSNAP_MAX_STREAMS];
  char *stream_args[QSNAP_MAX_STREAMS];
  size_t n_streams = 0, n = 0;
  struct qsnap_write_stats stats;
  struct saved_signals saved;
  struct progress progress;
  bool caught = false;
  int c, r, status = EXIT_ERROR;

  while ((c = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
    if (c == 'h') {
      printf ("%sCreate a qsnap snapshot of INPUT (any format qemount "
              "reads) as stream \"disk\",\nand of each FILE as stream "
              "NAME.\n%s  --stream NAME=FILE      another stream, e.g. "
              "memory=mem.raw\n", usage_create, help_codec);
      return EXIT_OK;
    }
    if (c == OPT_STREAM) {
      if (n_streams == QSNAP_MAX_STREAMS - 1)
        return usage_error (usage_create, "too many --stream options");
      if (strchr (optarg, '=') == NULL || optarg[0] == '=')
        return usage_error (usage_create, "--stream takes NAME=FILE");
      stream_args[n_streams++] = optarg;
      continue;
    }
    if ((r = codec_option (c, optarg, &opts, usage_create)) != 0)
      return r;
  }
  if (argc - optind != 2)
    return usage_error (usage_create, "create takes INPUT and OUTPUT");

  inputs[n++] = (struct qsnap_input) { .name = "disk" };
  inputs[0].img = image_open (hide_url_secrets (argv[optind]), &io);
  if (inputs[0].img == NULL)
    return EXIT_ERROR;
  for (size_t i = 0; i < n_streams; ++i) {
    char *eq = strchr (stream_args[i], '=');

    *eq = '\0';
    inputs[n] = (struct qsnap_input) { .name = stream_args[i] };
    inputs[n].img = image_open (hide_url_secrets (eq + 1), &io);
    if (inputs[n].img == NULL)
      goto out;
    n++;
  }
  for (size_t i = 0; i < n; ++i)
    inputs[i].size = inputs[i].img->size;

  start_progress (&progress, &opts);
  catch_signals (&saved);
  caught = true;
  r = qsnap_create (argv[optind + 1], inputs, n, &opts, &stats);
  end_progress (&progress);
  if (r == 0) {
    print_summary (argv[optind], argv[optind + 1], &stats, &progress);
    status = EXIT_OK;
  }
 out:
  for (size_t i = 0; i < n; ++i)
    image_close (inputs[i].img);
  if (caught)
    release_signals (&saved);
  return status;
}

/* commit */

static int
snapshot_commit (int argc, char *argv[])
{
  static const struct option long_options[] = {
    CODEC_LONG_OPTIONS,
    { "base", required_argument, NULL, OPT_BASE },
    { "overlay", required_argument, NULL, OPT_OVERLAY },
    { "output", required_argument, NULL, OPT_OUTPUT },
    { "thin", no_argument, NULL, OPT_THIN },
    { NULL },
  };
  struct qsnap_write_options opts = { .codec = QSNAP_CODEC_ZSTD };
  const char *base = NULL, *overlay = NULL, *output = NULL;
  struct qsnap_write_stats stats;
  struct saved_signals saved;
  struct progress progress;
  bool thin = false;
  int c, r;

  while ((c = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
    switch (c) {
    case 'h':
      printf ("%sWrite BASE with the changes in the overlay OVL as a new "
              "snapshot: in full, or\nwith --thin only the changed blocks, "
              "the rest read from BASE (a qsnap file).\n%s", usage_commit,
              help_codec);
      return EXIT_OK;
    case OPT_BASE: base = hide_url_secrets (optarg); break;
    case OPT_OVERLAY: overlay = optarg; break;
    case OPT_OUTPUT: output = optarg; break;
    case OPT_THIN: thin = true; break;
    default:
      if ((r = codec_option (c, optarg, &opts, usage_commit)) != 0)
        return r;
    }
  }
  if (optind != argc)
    return usage_error (usage_commit, "unexpected argument '%s'",
                        argv[optind]);
  if (!base || !overlay || !output)
    return usage_error (usage_commit, "--base, --overlay and --output are "
                        "required");

  start_progress (&progress, &opts);
  catch_signals (&saved);
  r = qsnap_commit (base, overlay, output, thin, &opts, &stats);
  end_progress (&progress);
  if (r == 0)
    print_summary (overlay, output, &stats, &progress);
  release_signals (&saved);
  return r == 0 ? EXIT_OK : EXIT_ERROR;
}

/* Reading a file for info and verify. */

struct snapfile {
  const char *path;             /* the location, secrets and all */
  const char *name;             /* the location in messages and output */
  struct source *src;
  uint64_t size;
  struct qsnap_header h;
  struct qsnap_stream streams[QSNAP_MAX_STREAMS];
};

static int
read_exact (const struct snapfile *f, void *buf, size_t count,
            uint64_t offset, const char *what)
{
  if (offset > f->size || count > f->size - offset) {
    image_error ("%s: %s at offset %" PRIu64 " lies past the end of the "
                 "file (truncated?)", f->name, what, offset);
    return -1;
  }
  return source_read (f->src, buf, count, offset, what);
}

/* Header and stream table, each field checked against the file by the
 * rules the decoder applies (qsnap-format.c).
 */
static int
open_snapfile (struct snapfile *f, char *operand)
{
  f->path = hide_url_secrets (operand);
  f->name = operand;
  f->src = source_open (f->path);
  if (f->src == NULL)
    return -1;
  f->size = f->src->size;
  if (qsnap_read_tables (f->src, &f->h, f->streams) == -1) {
    source_close (f->src);
    return -1;
  }
  return 0;
}

/* Call fn for each block of each stream with its checked entry; a page
 * or entry that breaks the rules is reported and counted in *bad (and
 * fn not called for it).  -1 only for errors that stop the walk.
 */
typedef int (*entry_fn) (void *opaque, const struct snapfile *f,
                         const struct qsnap_stream *s, uint64_t block,
                         const struct qsnap_entry *e);

static int
walk_entries (const struct snapfile *f, entry_fn fn, void *opaque,
              uint64_t *bad)
{
  uint8_t page[QSNAP_PAGE_SIZE];
  struct qsnap_entry entries[QSNAP_ENTRIES_PER_PAGE];

  for (uint32_t i = 0; i < f->h.n_streams; ++i) {
    const struct qsnap_stream *s = &f->streams[i];
    uint64_t blocks = qsnap_blocks (s->size, f->h.block_size);

    for (uint64_t p = 0; p < s->index_pages; ++p) {
      const char *why;

      if (read_exact (f, page, sizeof page,
                      s->index_offset + p * QSNAP_PAGE_SIZE,
                      "index page") == -1)
        return -1;
      why = qsnap_decode_page (page, p, blocks, entries);
      if (why) {
        image_error ("%s: stream '%s' index page %" PRIu64 ": %s", f->name,
                     s->name, p, why);
        (*bad)++;
        continue;
      }
      for (unsigned k = 0; k < QSNAP_ENTRIES_PER_PAGE; ++k) {
        uint64_t block = p * QSNAP_ENTRIES_PER_PAGE + k;

        if (block >= blocks)
          break;
        why = qsnap_check_entry (&f->h, &entries[k]);
        if (why) {
          image_error ("%s: stream '%s' block %" PRIu64 ": %s", f->name,
                       s->name, block, why);
          (*bad)++;
          continue;
        }
        if (fn (opaque, f, s, block, &entries[k]) == -1)
          return -1;
      }
    }
  }
  return 0;
}

/* info */

struct extent {
  uint64_t offset, length;
};

struct info {
  uint64_t blocks[QSNAP_KIND_MAX + 1];
  uint64_t stream_blocks[QSNAP_MAX_STREAMS][QSNAP_KIND_MAX + 1];
  uint32_t stream;              /* index into the above */
  struct extent *stored;        /* every data entry's bytes */
  size_t n_stored, cap_stored;
};

static int
count_entry (void *opaque, const struct snapfile *f,
             const struct qsnap_stream *s, uint64_t block,
             const struct qsnap_entry *e)
{
  struct info *in = opaque;

  in->stream = s - f->streams;
  in->blocks[e->kind]++;
  in->stream_blocks[in->stream][e->kind]++;
  if (e->kind == QSNAP_ZERO || e->kind == QSNAP_PARENT)
    return 0;
  if (in->n_stored == in->cap_stored) {
    size_t cap = in->cap_stored ? in->cap_stored * 2 : 1024;
    struct extent *p = realloc (in->stored, cap * sizeof *p);

    if (p == NULL) {
      image_error ("%s: %m", f->name);
      return -1;
    }
    in->stored = p;
    in->cap_stored = cap;
  }
  in->stored[in->n_stored++] = (struct extent) { e->offset, e->length };
  return 0;
}

static int
compare_extents (const void *a, const void *b)
{
  const struct extent *x = a, *y = b;

  if (x->offset != y->offset)
    return x->offset < y->offset ? -1 : 1;
  return x->length < y->length ? -1 : x->length > y->length;
}

static void
hex_id (char *buf, const uint8_t *id)
{
  for (int i = 0; i < QSNAP_ID_SIZE; ++i)
    sprintf (&buf[2 * i], "%02x", id[i]);
}

static void
json_kinds (const uint64_t *blocks)
{
  printf ("{");
  for (int k = 0; k <= QSNAP_KIND_MAX; ++k)
    printf ("%s\"%s\": %" PRIu64, k ? ", " : "", kind_names[k], blocks[k]);
  printf ("}");
}

static void
text_kinds (const uint64_t *blocks)
{
  uint64_t total = 0;

  for (int k = 0; k <= QSNAP_KIND_MAX; ++k)
    total += blocks[k];
  printf ("%" PRIu64 " blocks (", total);
  for (int k = 0; k <= QSNAP_KIND_MAX; ++k)
    printf ("%s%" PRIu64 " %s", k ? ", " : "", blocks[k], kind_names[k]);
  printf (")");
}

static int
snapshot_info (int argc, char *argv[])
{
  static const struct option long_options[] = {
    { "json", no_argument, NULL, OPT_JSON },
    { "help", no_argument, NULL, 'h' },
    { NULL },
  };
  struct snapfile f;
  struct info in = { .stored = NULL };
  uint64_t bad = 0, data_blocks, data_bytes = 0, stored_bytes = 0;
  size_t distinct = 0;
  char id[2 * QSNAP_ID_SIZE + 1], parent_id[2 * QSNAP_ID_SIZE + 1];
  char size[32], created[64];
  bool json = false;
  double ratio;
  time_t t;
  int c;

  while ((c = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
    if (c == 'h') {
      printf ("%sDescribe a qsnap file: format, streams, blocks by kind, "
              "sizes, deduplication,\nparent.  --json for scripts.\n",
              usage_info);
      return EXIT_OK;
    }
    if (c != OPT_JSON)
      return usage_error (usage_info, NULL);
    json = true;
  }
  if (argc - optind != 1)
    return usage_error (usage_info, "info takes one FILE");
  if (open_snapfile (&f, argv[optind]) == -1)
    return EXIT_ERROR;
  if (walk_entries (&f, count_entry, &in, &bad) == -1 || bad > 0) {
    if (bad > 0)
      image_error ("%s: the index is damaged; run 'qemount snapshot verify'",
                   f.name);
    free (in.stored);
    source_close (f.src);
    return EXIT_ERROR;
  }
  source_close (f.src);

  /* Entries sharing stored bytes are deduplicated blocks. */
  if (in.n_stored > 0)
    qsort (in.stored, in.n_stored, sizeof *in.stored, compare_extents);
  for (size_t i = 0; i < in.n_stored; ++i) {
    data_bytes += in.stored[i].length;
    if (i == 0 || compare_extents (&in.stored[i], &in.stored[i - 1]) != 0) {
      distinct++;
      stored_bytes += in.stored[i].length;
    }
  }
  free (in.stored);
  data_blocks = in.n_stored;
  ratio = f.size ? (double) f.h.input_bytes / f.size : 0;
  hex_id (id, f.h.id);
  hex_id (parent_id, f.h.parent_id);

  if (json) {
    printf ("{\n  \"file\": ");
    json_string (stdout, f.name);
    printf (",\n  \"version\": %" PRIu32 ",\n  \"block_size\": %" PRIu32
            ",\n  \"codec\": ", f.h.version, f.h.block_size);
    json_string (stdout, f.h.codec);
    printf (",\n  \"file_id\": \"%s\",\n  \"created\": %" PRIu64
            ",\n  \"streams\": [", id, f.h.created);
    for (uint32_t i = 0; i < f.h.n_streams; ++i) {
      printf ("%s\n    {\"name\": ", i ? "," : "");
      json_string (stdout, f.streams[i].name);
      printf (", \"size\": %" PRIu64 ", \"blocks\": ", f.streams[i].size);
      json_kinds (in.stream_blocks[i]);
      printf ("}");
    }
    printf ("\n  ],\n  \"blocks\": ");
    json_kinds (in.blocks);
    printf (",\n  \"data_blocks\": %" PRIu64 ",\n  \"stored_blocks\": %zu"
            ",\n  \"dedup_blocks\": %" PRIu64 ",\n  \"dedup_saved_bytes\": %"
            PRIu64 ",\n  \"input_bytes\": %" PRIu64 ",\n  \"stored_bytes\": %"
            PRIu64 ",\n  \"file_bytes\": %" PRIu64 ",\n  \"ratio\": %.4f"
            ",\n  \"parent\": ", data_blocks, distinct,
            data_blocks - distinct, data_bytes - stored_bytes,
            f.h.input_bytes, stored_bytes, f.size, ratio);
    if (f.h.compat & QSNAP_COMPAT_PARENT) {
      printf ("{\"path\": ");
      json_string (stdout, f.h.parent_path);
      printf (", \"id\": \"%s\"}", parent_id);
    }
    else
      printf ("null");
    printf ("\n}\n");
    return EXIT_OK;
  }

  t = f.h.created;
  if (strftime (created, sizeof created, "%Y-%m-%d %H:%M:%S UTC",
                gmtime (&t)) == 0)
    strcpy (created, "?");
  printf ("file:        %s\nformat:      qsnap version %" PRIu32
          "\nblock size:  %" PRIu32 " bytes\ncodec:       %s\n"
          "file id:     %s\ncreated:     %s\n", f.name, f.h.version,
          f.h.block_size, f.h.codec, id, created);
  for (uint32_t i = 0; i < f.h.n_streams; ++i) {
    format_size (size, sizeof size, f.streams[i].size);
    printf ("stream:      %s, %s (%" PRIu64 " bytes), ", f.streams[i].name,
            size, f.streams[i].size);
    text_kinds (in.stream_blocks[i]);
    printf ("\n");
  }
  printf ("blocks:      ");
  text_kinds (in.blocks);
  format_size (size, sizeof size, stored_bytes);
  printf ("\nstored:      %zu blocks, %s (%" PRIu64 " bytes)\n", distinct,
          size, stored_bytes);
  format_size (size, sizeof size, data_bytes - stored_bytes);
  printf ("dedup:       %" PRIu64 " blocks share stored bytes, saving %s\n",
          data_blocks - distinct, size);
  format_size (size, sizeof size, f.h.input_bytes);
  printf ("size:        %s in, ", size);
  format_size (size, sizeof size, f.size);
  printf ("%s file, ratio %.2f:1\n", size, ratio);
  if (f.h.compat & QSNAP_COMPAT_PARENT)
    printf ("parent:      %s (id %s)\n", f.h.parent_path, parent_id);
  else
    printf ("parent:      none\n");
  return EXIT_OK;
}

/* verify */

struct verify {
  uint8_t *stored, *block;
  uint64_t checked, bad;
};

static int
verify_entry (void *opaque, const struct snapfile *f,
              const struct qsnap_stream *s, uint64_t block,
              const struct qsnap_entry *e)
{
  struct verify *v = opaque;
  const char *why = NULL;
  int r;

  if (e->kind == QSNAP_ZERO || e->kind == QSNAP_PARENT)
    return 0;
  v->checked++;
  if (read_exact (f, v->stored, e->length, e->offset, "stored block") == -1)
    return -1;
  if (qsnap_checksum (v->stored, e->length) != e->checksum)
    why = "checksum mismatch, the stored data is corrupt";
  else if (e->kind != QSNAP_RAW) {
    r = e->kind == QSNAP_LZ4 ?
      decompress_lz4 (v->stored, e->length, v->block, f->h.block_size) :
      decompress_zstd (v->stored, e->length, v->block, f->h.block_size);
    if (r == -1)
      why = e->kind == QSNAP_LZ4 ? "does not decompress (lz4)" :
        "does not decompress (zstd)";
  }
  if (why) {
    image_error ("%s: stream '%s' block %" PRIu64 " (offset %" PRIu64
                 "): %s", f->name, s->name, block, e->offset, why);
    v->bad++;
  }
  return 0;
}

/* A thin snapshot's parent must open and carry the recorded id: the
 * reader checks both (and the rest of the chain).
 */
static int
verify_parent (const struct snapfile *f)
{
  struct image_options io = { .format = "qsnap",
                              .backing = BACKING_SAME_DIR,
                              .readonly = true };
  struct image *img;

  if (!(f->h.compat & QSNAP_COMPAT_PARENT))
    return 0;
  img = image_open (f->path, &io);
  if (img == NULL)
    return -1;
  image_close (img);
  return 0;
}

static int
snapshot_verify (int argc, char *argv[])
{
  static const struct option long_options[] = {
    { "help", no_argument, NULL, 'h' },
    { NULL },
  };
  struct verify v = { .stored = NULL };
  struct snapfile f;
  int c, r;

  while ((c = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
    if (c == 'h') {
      printf ("%sRead every stored block of a qsnap file and check its "
              "checksum and its\ndecompression; name each bad block.  "
              "Exit status 0 only if all are good.\n", usage_verify);
      return EXIT_OK;
    }
    return usage_error (usage_verify, NULL);
  }
  if (argc - optind != 1)
    return usage_error (usage_verify, "verify takes one FILE");
  if (open_snapfile (&f, argv[optind]) == -1)
    return EXIT_ERROR;
  v.stored = malloc (qsnap_max_stored (f.h.block_size));
  v.block = malloc (f.h.block_size);
  if (v.stored == NULL || v.block == NULL) {
    image_error ("%s: %m", f.name);
    r = -1;
  }
  else
    r = walk_entries (&f, verify_entry, &v, &v.bad);
  if (r == 0 && verify_parent (&f) == -1)
    v.bad++;
  source_close (f.src);
  free (v.stored);
  free (v.block);
  if (r == -1)
    return EXIT_ERROR;
  if (v.bad > 0) {
    printf ("%s: %" PRIu64 " problems found (%" PRIu64 " stored blocks "
            "read)\n", f.name, v.bad, v.checked);
    return EXIT_ERROR;
  }
  printf ("%s: all %" PRIu64 " stored blocks are good\n", f.name, v.checked);
  return EXIT_OK;
}

/* Dispatch. */

int
snapshot_main (int argc, char *argv[])
{
  static const struct {
    const char *name;
    int (*main) (int, char **);
  } commands[] = {
    { "create", snapshot_create },
    { "commit", snapshot_commit },
    { "info", snapshot_info },
    { "verify", snapshot_verify },
  };
  const char *usage =
    "usage: qemount snapshot create|commit|info|verify ... (--help for each)\n";

  if (argc < 2)
    return usage_error (usage, "a subcommand is required");
  if (strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0) {
    printf ("%s%s%s%s", usage_create, usage_commit, usage_info,
            usage_verify);
    return EXIT_OK;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; ++i)
    if (strcmp (argv[1], commands[i].name) == 0) {
      optind = 0;               /* glibc: start afresh on the new argv */
      return commands[i].main (argc - 1, argv + 1);
    }
  return usage_error (usage, "unknown subcommand '%s'", argv[1]);
}
