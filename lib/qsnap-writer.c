/* SPDX-License-Identifier: BSD-3-Clause */
/* Writing qsnap files (qsnap-writer.h, docs/qsnap.md).
 *
 * One thread (the caller's) reads the inputs and writes the file, both
 * in block order; --jobs worker threads compress.  Blocks travel through
 * a ring of slots: the caller fills the next free slot, decides at once
 * whether the block is zero, unchanged from the parent or a duplicate of
 * one already seen (those need no compression), and queues the rest for
 * the workers.  The ring bounds memory to a few blocks per worker
 * whatever the input size; what grows with the input is the index (24
 * bytes per block) and the dedup table (one entry per distinct block).
 *
 * Duplicates are found by the XXH3-128 hash of the block's contents,
 * decided in block order when a block is read, so the block it repeats
 * is always written before it and no work is spent compressing it twice.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lz4.h>
#include <xxhash.h>
#include <zstd.h>

#include "outfile.h"
#include "qsnap-writer.h"
#include "s3-upload.h"
#include "source.h"

#define WRITE_BUFFER (1u << 20)

/* The dedup table: open addressing on the contents hash.  An entry is
 * inserted when its block is read and filled in when it is written.
 */
struct dedup_entry {
  XXH128_hash_t hash;
  uint64_t offset;
  uint64_t checksum;
  uint32_t length;
  uint8_t kind;
  bool used;
};

struct dedup {
  struct dedup_entry *table;
  size_t capacity, count;       /* capacity: a power of two */
};

/* What a slot holds, decided when its block is read. */
enum slot_state { SLOT_FREE, SLOT_QUEUED, SLOT_WORKING, SLOT_DONE };
enum slot_use { USE_ZERO, USE_PARENT, USE_DUPLICATE, USE_NEW };

struct slot {
  enum slot_state state;
  enum slot_use use;
  XXH128_hash_t hash;
  uint8_t *data;                /* the block, block_size bytes */
  uint8_t *packed;              /* compressed, < block_size bytes */
  uint32_t length;              /* stored length */
  uint8_t kind;                 /* stored kind */
  uint64_t checksum;            /* of the stored bytes */
  uint32_t bytes;               /* of the input (less at its end) */
};

struct writer {
  const struct qsnap_write_options *opts;
  const char *output;
  uint32_t bs;
  int level;

  /* The ring, shared with the workers under lock. */
  pthread_mutex_t lock;
  pthread_cond_t queued, done;
  struct slot *slots;
  size_t n_slots;
  uint64_t read_seq, write_seq, take_seq;
  bool stop;
  bool failed;                  /* a worker could not compress */

  struct dedup dedup;

  /* The output. */
  struct outfile out;
  struct s3_upload *upload;     /* output in S3: sent when complete */
  uint64_t offset;              /* where the next stored bytes go */
  uint8_t *wbuf;
  size_t wbuf_used;

  /* The index of the stream being written, then of all streams. */
  struct qsnap_entry page[QSNAP_ENTRIES_PER_PAGE];
  size_t page_used;
  uint8_t *index;
  uint64_t index_pages, index_capacity;

  uint64_t done_bytes, total_bytes;
  struct qsnap_write_stats *stats;
};

/* Dedup table. */

static struct dedup_entry *
dedup_find (struct dedup *d, XXH128_hash_t hash)
{
  size_t mask = d->capacity - 1;

  for (size_t i = hash.low64 & mask;; i = (i + 1) & mask) {
    struct dedup_entry *e = &d->table[i];
    if (!e->used || XXH128_isEqual (e->hash, hash))
      return e;
  }
}

/* The entry for hash: existing, or new and unused (the caller marks it
 * used).  NULL when the table cannot grow.
 */
static struct dedup_entry *
dedup_slot (struct dedup *d, XXH128_hash_t hash)
{
  if (d->count + 1 > d->capacity / 2) {
    struct dedup bigger = { .capacity = d->capacity ? d->capacity * 2 : 4096 };

    bigger.table = calloc (bigger.capacity, sizeof *bigger.table);
    if (bigger.table == NULL)
      return NULL;
    for (size_t i = 0; i < d->capacity; ++i)
      if (d->table[i].used)
        *dedup_find (&bigger, d->table[i].hash) = d->table[i];
    bigger.count = d->count;
    free (d->table);
    *d = bigger;
  }
  return dedup_find (d, hash);
}

/* Compression, on the workers. */

/* Compress s->data into s->packed, or keep it raw when no codec makes
 * it smaller.  spare is a second buffer of the same size for --codec
 * auto; the smaller result ends up in s->packed.
 */
static void
pack_block (struct writer *w, struct slot *s, ZSTD_CCtx *zstd,
            uint8_t **spare)
{
  const enum qsnap_codec codec = w->opts->codec;
  const uint32_t bs = w->bs;
  size_t zlen = 0;
  int llen = 0;

  s->kind = QSNAP_RAW;
  s->length = bs;
  if (codec != QSNAP_CODEC_LZ4) {
    zlen = ZSTD_compress2 (zstd, s->packed, bs - 1, s->data, bs);
    if (ZSTD_isError (zlen))    /* mostly: it did not fit */
      zlen = 0;
    if (zlen > 0) {
      s->kind = QSNAP_ZSTD;
      s->length = zlen;
    }
  }
  if (codec != QSNAP_CODEC_ZSTD) {
    uint8_t *dst = codec == QSNAP_CODEC_AUTO ? *spare : s->packed;

    llen = LZ4_compress_default ((const char *) s->data, (char *) dst,
                                 bs, bs - 1);
    /* Equal sizes: LZ4, which decompresses faster. */
    if (llen > 0 && (uint32_t) llen <= s->length) {
      s->kind = QSNAP_LZ4;
      s->length = llen;
      if (dst != s->packed) {
        *spare = s->packed;
        s->packed = dst;
      }
    }
  }
  s->checksum = qsnap_checksum (s->kind == QSNAP_RAW ? s->data : s->packed,
                                s->length);
}

static void *
worker (void *arg)
{
  struct writer *w = arg;
  ZSTD_CCtx *zstd = ZSTD_createCCtx ();
  uint8_t *spare = malloc (w->bs);

  if (zstd == NULL || spare == NULL ||
      ZSTD_isError (ZSTD_CCtx_setParameter (zstd, ZSTD_c_compressionLevel,
                                            w->level)) ||
      ZSTD_isError (ZSTD_CCtx_setParameter (zstd, ZSTD_c_checksumFlag, 0))) {
    pthread_mutex_lock (&w->lock);
    w->failed = true;
    pthread_cond_broadcast (&w->done);
    pthread_mutex_unlock (&w->lock);
    goto out;
  }

  pthread_mutex_lock (&w->lock);
  for (;;) {
    struct slot *s = NULL;

    while (!w->stop && w->take_seq < w->read_seq) {
      struct slot *t = &w->slots[w->take_seq++ % w->n_slots];
      if (t->state == SLOT_QUEUED) {
        s = t;
        break;
      }
    }
    if (s == NULL) {
      if (w->stop)
        break;
      pthread_cond_wait (&w->queued, &w->lock);
      continue;
    }
    s->state = SLOT_WORKING;
    pthread_mutex_unlock (&w->lock);
    pack_block (w, s, zstd, &spare);
    pthread_mutex_lock (&w->lock);
    s->state = SLOT_DONE;
    pthread_cond_broadcast (&w->done);
  }
  pthread_mutex_unlock (&w->lock);
 out:
  ZSTD_freeCCtx (zstd);
  free (spare);
  return NULL;
}

/* The output file. */

static int
write_at (struct writer *w, const void *buf, size_t count, uint64_t offset)
{
  if (image_write_file (w->out.fd, buf, count, offset) == -1) {
    image_error ("%s: writing: %m", w->output);
    return -1;
  }
  return 0;
}

static int
flush_buffer (struct writer *w)
{
  uint64_t at = w->offset - w->wbuf_used;

  if (w->wbuf_used > 0 && write_at (w, w->wbuf, w->wbuf_used, at) == -1)
    return -1;
  w->wbuf_used = 0;
  return 0;
}

/* Append stored bytes to the data area; returns their offset. */
static int
append (struct writer *w, const void *buf, size_t count, uint64_t *offset)
{
  *offset = w->offset;
  if (w->wbuf_used + count > WRITE_BUFFER && flush_buffer (w) == -1)
    return -1;
  if (count >= WRITE_BUFFER) {
    if (write_at (w, buf, count, w->offset) == -1)
      return -1;
  }
  else {
    memcpy (w->wbuf + w->wbuf_used, buf, count);
    w->wbuf_used += count;
  }
  w->offset += count;
  return 0;
}

/* The index. */

/* Encode the page being filled (the rest of its entries zero). */
static int
end_page (struct writer *w)
{
  if (w->page_used == 0)
    return 0;
  if (w->index_pages == w->index_capacity) {
    uint64_t cap = w->index_capacity ? w->index_capacity * 2 : 16;
    uint8_t *p = realloc (w->index, cap * QSNAP_PAGE_SIZE);

    if (p == NULL) {
      image_error ("%s: %m", w->output);
      return -1;
    }
    w->index = p;
    w->index_capacity = cap;
  }
  memset (&w->page[w->page_used], 0,
          (QSNAP_ENTRIES_PER_PAGE - w->page_used) * sizeof w->page[0]);
  qsnap_encode_page (&w->index[w->index_pages++ * QSNAP_PAGE_SIZE], w->page);
  w->page_used = 0;
  return 0;
}

/* The caller's thread: reading, classifying, writing. */

/* What is known of a run of extents: [start, end) all has (or all lacks)
 * the flag in mask.
 */
struct run {
  uint32_t mask;
  uint64_t start, end;
  int has;                      /* -1 while unknown */
};

static int
extend_run (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  struct run *run = opaque;
  int has = (flags & run->mask) != 0;

  if (run->has == -1) {
    run->start = offset;
    run->has = has;
  }
  else if (has != run->has || offset != run->end)
    return 1;
  run->end = offset + length;
  return 0;
}

/* Whether all of [offset, offset + length) has the run's flag, from
 * img's extents (layer_only: its own layer, not resolved through its
 * backing).  1 yes, 0 no, -1 error.
 */
static int
run_covers (struct image *img, bool layer_only, struct run *run,
            uint64_t offset, uint64_t length)
{
  if (run->has == -1 || offset < run->start || offset >= run->end) {
    int r;

    run->has = -1;
    r = layer_only ?
      image_layer_extents (img, offset, img->size - offset, extend_run, run) :
      image_extents (img, offset, img->size - offset, extend_run, run);
    if (r == -1)
      return -1;
    if (run->has == -1 || run->start != offset || run->end <= offset) {
      image_error ("%s: extents made no progress at offset %" PRIu64,
                   img->path, offset);
      return -1;
    }
  }
  return run->has && offset + length <= run->end;
}

static bool
all_zero (const uint8_t *p, size_t n)
{
  return p[0] == 0 && memcmp (p, p + 1, n - 1) == 0;
}

/* Wait for the oldest slot, append its block to the file and the index,
 * and free the slot.
 */
static int
write_next (struct writer *w)
{
  struct slot *s = &w->slots[w->write_seq % w->n_slots];
  struct qsnap_entry e = { 0 };
  struct dedup_entry *d;

  pthread_mutex_lock (&w->lock);
  while (s->state != SLOT_DONE && !w->failed)
    pthread_cond_wait (&w->done, &w->lock);
  pthread_mutex_unlock (&w->lock);
  if (w->failed) {
    image_error ("%s: cannot set up a compressor (out of memory?)",
                 w->output);
    return -1;
  }

  switch (s->use) {
  case USE_ZERO:
    e.kind = QSNAP_ZERO;
    break;
  case USE_PARENT:
    e.kind = QSNAP_PARENT;
    break;
  case USE_DUPLICATE:
    d = dedup_find (&w->dedup, s->hash);
    e.offset = d->offset;
    e.length = d->length;
    e.kind = d->kind;
    e.checksum = d->checksum;
    w->stats->dedup_blocks++;
    break;
  case USE_NEW:
    if (append (w, s->kind == QSNAP_RAW ? s->data : s->packed, s->length,
                &e.offset) == -1)
      return -1;
    e.length = s->length;
    e.kind = s->kind;
    e.checksum = s->checksum;
    d = dedup_find (&w->dedup, s->hash);
    d->offset = e.offset;
    d->length = e.length;
    d->kind = e.kind;
    d->checksum = e.checksum;
    break;
  }
  w->page[w->page_used++] = e;
  w->stats->blocks[e.kind]++;
  if (w->page_used == QSNAP_ENTRIES_PER_PAGE && end_page (w) == -1)
    return -1;

  pthread_mutex_lock (&w->lock);
  s->state = SLOT_FREE;
  pthread_mutex_unlock (&w->lock);
  w->write_seq++;
  w->done_bytes += s->bytes;
  if (w->opts->progress)
    w->opts->progress (w->opts->progress_opaque, w->done_bytes,
                       w->total_bytes);
  return 0;
}

/* Read block i of an input into the next slot and decide what it needs. */
static int
read_next (struct writer *w, const struct qsnap_input *in, uint64_t block,
           struct run *zeros)
{
  struct slot *s = &w->slots[w->read_seq % w->n_slots];
  uint64_t offset = block * w->bs;
  size_t n = in->size - offset < w->bs ? in->size - offset : w->bs;
  int r;

  s->use = USE_NEW;
  s->bytes = n;
  if (in->changed) {
    r = in->changed (in->changed_opaque, offset, n);
    if (r == -1)
      return -1;
    if (r == 0)
      s->use = USE_PARENT;
  }
  if (s->use == USE_NEW) {
    r = run_covers (in->img, false, zeros, offset, n);
    if (r == -1)
      return -1;
    if (r == 1)
      s->use = USE_ZERO;
  }
  if (s->use == USE_NEW) {
    if (image_pread (in->img, s->data, n, offset) == -1)
      return -1;
    memset (s->data + n, 0, w->bs - n);
    if (all_zero (s->data, w->bs))
      s->use = USE_ZERO;
  }
  if (s->use == USE_NEW) {
    struct dedup_entry *d;

    s->hash = XXH3_128bits (s->data, w->bs);
    d = dedup_slot (&w->dedup, s->hash);
    if (d == NULL) {
      image_error ("%s: %m", w->output);
      return -1;
    }
    if (d->used)
      s->use = USE_DUPLICATE;
    else {
      d->used = true;
      d->hash = s->hash;
      w->dedup.count++;
    }
  }

  pthread_mutex_lock (&w->lock);
  s->state = s->use == USE_NEW ? SLOT_QUEUED : SLOT_DONE;
  w->read_seq++;
  if (s->use == USE_NEW)
    pthread_cond_signal (&w->queued);
  pthread_mutex_unlock (&w->lock);
  return 0;
}

static int
write_stream (struct writer *w, const struct qsnap_input *in)
{
  uint64_t blocks = qsnap_blocks (in->size, w->bs);
  struct run zeros = { .mask = IMAGE_EXTENT_ZERO, .has = -1 };

  for (uint64_t b = 0; b < blocks; ++b) {
    if (w->opts->cancel && *w->opts->cancel) {
      image_error ("%s: interrupted", w->output);
      errno = EINTR;
      return -1;
    }
    if (w->read_seq - w->write_seq == w->n_slots && write_next (w) == -1)
      return -1;
    if (read_next (w, in, b, &zeros) == -1)
      return -1;
  }
  while (w->write_seq < w->read_seq)
    if (write_next (w) == -1)
      return -1;
  return end_page (w);
}

/* Options and inputs. */

static const char *
codec_name (enum qsnap_codec codec)
{
  return codec == QSNAP_CODEC_LZ4 ? "lz4" :
    codec == QSNAP_CODEC_ZSTD ? "zstd" : "auto";
}

/* Check a stream name by encoding and decoding its record. */
static int
check_inputs (const char *output, const struct qsnap_input *inputs,
              size_t n)
{
  if (n == 0 || n > QSNAP_MAX_STREAMS) {
    image_error ("%s: a snapshot holds 1 to %d streams", output,
                 QSNAP_MAX_STREAMS);
    return -1;
  }
  for (size_t i = 0; i < n; ++i) {
    struct qsnap_stream s = { .size = 0 };
    uint8_t rec[QSNAP_STREAM_SIZE];

    if (strlen (inputs[i].name) > QSNAP_STREAM_NAME_MAX) {
      image_error ("%s: stream name '%s' is longer than %d bytes", output,
                   inputs[i].name, QSNAP_STREAM_NAME_MAX);
      return -1;
    }
    strcpy (s.name, inputs[i].name);
    qsnap_encode_stream (rec, &s);
    if (qsnap_decode_stream (rec, &s) != NULL) {
      image_error ("%s: invalid stream name '%s' (letters, digits, '.', "
                   "'_' and '-' only)", output, inputs[i].name);
      return -1;
    }
    for (size_t j = 0; j < i; ++j)
      if (strcmp (inputs[i].name, inputs[j].name) == 0) {
        image_error ("%s: two streams are called '%s'", output,
                     inputs[i].name);
        return -1;
      }
    if (inputs[i].size > (UINT64_C (1) << 62)) {
      image_error ("%s: stream '%s' is too large", output, inputs[i].name);
      return -1;
    }
  }
  return 0;
}

/* Refuse to replace a file the snapshot is made from. */
static int
check_not_input (const char *output, const struct qsnap_input *inputs,
                 size_t n, const char *parent)
{
  struct stat out, st;

  /* An object is the same by its name. */
  if (source_is_s3 (output)) {
    if (parent && strcmp (parent, output) == 0)
      goto same;
    for (size_t i = 0; i < n; ++i)
      for (struct image *img = inputs[i].img; img; img = img->backing)
        if (strcmp (img->path, output) == 0)
          goto same;
    return 0;
  }
  if (stat (output, &out) == -1)
    return 0;
  if (parent && stat (parent, &st) == 0 &&
      st.st_dev == out.st_dev && st.st_ino == out.st_ino)
    goto same;
  for (size_t i = 0; i < n; ++i)
    for (struct image *img = inputs[i].img; img; img = img->backing)
      if (stat (img->path, &st) == 0 &&
          st.st_dev == out.st_dev && st.st_ino == out.st_ino)
        goto same;
  return 0;
 same:
  image_error ("%s: the output is one of the files it is made from", output);
  errno = EINVAL;
  return -1;
}

/* Path of t relative to the directory d: both absolute, resolved. */
static char *
relative_to (const char *d, const char *t)
{
  char *result;
  size_t common = 0, len;

  /* Longest common prefix of whole components. */
  for (size_t i = 0;; ++i) {
    if ((d[i] == '\0' || d[i] == '/') && (t[i] == '/' || t[i] == '\0'))
      common = i;
    if (d[i] == '\0' || t[i] == '\0' || d[i] != t[i])
      break;
  }
  len = strlen (t) + 1;
  for (const char *p = d + common; *p; ++p)
    if (*p == '/')
      len += 3;
  result = malloc (len);
  if (result == NULL)
    return NULL;
  result[0] = '\0';
  for (const char *p = d + common; *p; ++p)
    if (*p == '/')
      strcat (result, "../");
  strcat (result, t + common + (t[common] == '/'));
  return result;
}

/* Path of target relative to the directory of from, both resolved;
 * for an object in S3, its key relative to the "directory" of from's
 * key in the same bucket, as the reader resolves it (image.c).
 */
static char *
relative_path (const char *target, const char *from)
{
  char *copy = strdup (from), *t = NULL, *d = NULL, *result = NULL;

  if (copy == NULL)
    goto out;
  if (source_is_s3 (from)) {
    t = strdup (target);
    d = strndup (from, strrchr (from, '/') - from);
  }
  else {
    t = realpath (target, NULL);
    d = realpath (dirname (copy), NULL);
  }
  if (t && d)
    result = relative_to (d, t);
 out:
  free (copy);
  free (t);
  free (d);
  return result;
}

/* Whether a thin snapshot at output can name parent relative to it:
 * both local files, or both objects in one bucket.
 */
static bool
same_place (const char *parent, const char *output)
{
  size_t bucket = strcspn (output + 5, "/") + 1;

  if (!source_is_s3 (output))
    return !source_is_url (parent);
  return source_is_s3 (parent) && strncmp (parent + 5, output + 5, bucket) == 0;
}

/* A thin snapshot's parent: its header says the block size and its id;
 * opening each stream checks that the parent has it.
 */
static int
read_parent (const char *output, const char *parent,
             const struct qsnap_input *inputs, size_t n,
             struct qsnap_header *h, char *rel)
{
  struct image_options io = { .format = "qsnap",
                              .backing = BACKING_SAME_DIR,
                              .readonly = true };
  uint8_t buf[QSNAP_HEADER_SIZE];
  struct image *img;
  const char *why;
  char *path;

  for (size_t i = 0; i < n; ++i) {
    io.stream = inputs[i].name;
    img = image_open (parent, &io);
    if (img == NULL)
      return -1;
    if (i == 0 &&
        image_read_file (img, buf, sizeof buf, 0, "qsnap header") == -1) {
      image_close (img);
      return -1;
    }
    image_close (img);
  }
  why = qsnap_decode_header (buf, h);
  if (why) {
    image_error ("%s: %s", parent, why);
    return -1;
  }
  if (!same_place (parent, output)) {
    image_error ("%s: a thin snapshot's parent must be where it is (a "
                 "local file, or in the same S3 bucket), not %s", output,
                 parent);
    errno = EINVAL;
    return -1;
  }
  path = relative_path (parent, output);
  if (path == NULL) {
    image_error ("%s: cannot name the parent %s relative to it: %m",
                 output, parent);
    return -1;
  }
  if (strlen (path) > QSNAP_PARENT_PATH_MAX) {
    image_error ("%s: the parent's path relative to it is longer than %d "
                 "bytes", output, QSNAP_PARENT_PATH_MAX);
    free (path);
    return -1;
  }
  strcpy (rel, path);
  free (path);
  return 0;
}

/* Everything after the data: index, stream table, header last. */
static int
finish_file (struct writer *w, const struct qsnap_input *inputs, size_t n,
             struct qsnap_header *h, const uint64_t *first_page)
{
  uint8_t table[QSNAP_MAX_STREAMS * QSNAP_STREAM_SIZE];
  uint8_t header[QSNAP_HEADER_SIZE];
  uint64_t index_start;

  if (flush_buffer (w) == -1)
    return -1;
  index_start = w->offset;
  if (write_at (w, w->index, w->index_pages * QSNAP_PAGE_SIZE,
                index_start) == -1)
    return -1;
  for (size_t i = 0; i < n; ++i) {
    struct qsnap_stream s = {
      .size = inputs[i].size,
      .index_offset = index_start + first_page[i] * QSNAP_PAGE_SIZE,
      .index_pages = qsnap_pages (inputs[i].size, w->bs),
    };
    strcpy (s.name, inputs[i].name);
    qsnap_encode_stream (&table[i * QSNAP_STREAM_SIZE], &s);
  }
  h->stream_table = index_start + w->index_pages * QSNAP_PAGE_SIZE;
  if (write_at (w, table, n * QSNAP_STREAM_SIZE, h->stream_table) == -1)
    return -1;
  qsnap_encode_header (header, h);
  if (write_at (w, header, sizeof header, 0) == -1)
    return -1;
  w->stats->file_bytes = h->stream_table + n * QSNAP_STREAM_SIZE;
  if (w->upload)
    return s3_upload_send (w->upload, w->out.fd, w->stats->file_bytes,
                           w->opts->cancel);
  return outfile_commit (&w->out, true);
}

/* The file the snapshot is built in.  For S3, a private temporary one
 * in $TMPDIR, sent when complete: the index and the header are written
 * last but go first, so the file cannot be streamed.  The upload
 * starts first: wrong keys are found before the work.
 */
static int
create_output (struct writer *w)
{
  const char *dir = getenv ("TMPDIR");
  char *path;
  int r;

  /* Mode 0666: the umask decides, as for any new file. */
  if (!source_is_s3 (w->output))
    return outfile_create (&w->out, w->output, 0666);
  w->upload = s3_upload_start (w->output);
  if (w->upload == NULL)
    return -1;
  if (asprintf (&path, "%s/qemount-snapshot", dir && *dir ? dir : "/tmp")
      == -1) {
    image_error ("%s: %m", w->output);
    return -1;
  }
  r = outfile_create (&w->out, path, 0600);
  free (path);
  return r;
}

static unsigned
default_jobs (void)
{
  long n = sysconf (_SC_NPROCESSORS_ONLN);

  return n < 1 ? 1 : n > 64 ? 64 : n;
}

int
qsnap_create (const char *output, const struct qsnap_input *inputs,
              size_t n_inputs, const struct qsnap_write_options *opts,
              struct qsnap_write_stats *stats)
{
  struct qsnap_write_stats unused;
  struct writer w = {
    .opts = opts, .output = output,
    .stats = stats ? stats : &unused,
  };
  struct qsnap_header h = { .version = QSNAP_VERSION };
  uint64_t first_page[QSNAP_MAX_STREAMS];
  unsigned jobs = opts->jobs ? opts->jobs : default_jobs ();
  pthread_t *threads = NULL;
  unsigned started = 0;
  int r = -1;

  memset (w.stats, 0, sizeof *w.stats);
  pthread_mutex_init (&w.lock, NULL);
  pthread_cond_init (&w.queued, NULL);
  pthread_cond_init (&w.done, NULL);

  if (check_inputs (output, inputs, n_inputs) == -1 ||
      check_not_input (output, inputs, n_inputs, opts->parent) == -1)
    goto out;
  w.bs = opts->block_size;
  if (opts->parent) {
    struct qsnap_header ph;

    if (read_parent (output, opts->parent, inputs, n_inputs, &ph,
                     h.parent_path) == -1)
      goto out;
    if (w.bs != 0 && w.bs != ph.block_size) {
      image_error ("%s: a thin snapshot has its parent's block size (%"
                   PRIu32 " bytes)", output, ph.block_size);
      goto out;
    }
    w.bs = ph.block_size;
    h.compat |= QSNAP_COMPAT_PARENT;
    memcpy (h.parent_id, ph.id, QSNAP_ID_SIZE);
  }
  if (w.bs == 0)
    w.bs = opts->codec == QSNAP_CODEC_LZ4 ?
      QSNAP_DEFAULT_BLOCK_LZ4 : QSNAP_DEFAULT_BLOCK;
  if (w.bs < QSNAP_MIN_BLOCK || w.bs > QSNAP_MAX_BLOCK ||
      (w.bs & (w.bs - 1)) != 0) {
    image_error ("%s: block size %" PRIu32 " is not a power of two from "
                 "4 KiB to 4 MiB", output, w.bs);
    goto out;
  }
  w.level = opts->level ? opts->level : QSNAP_DEFAULT_LEVEL;
  if (w.level < ZSTD_minCLevel () || w.level > ZSTD_maxCLevel ()) {
    image_error ("%s: zstd level %d is out of range (%d to %d)", output,
                 w.level, ZSTD_minCLevel (), ZSTD_maxCLevel ());
    goto out;
  }
  for (size_t i = 0; i < n_inputs; ++i) {
    if (inputs[i].img == NULL && inputs[i].changed == NULL) {
      image_error ("%s: stream '%s' has no contents", output,
                   inputs[i].name);
      goto out;
    }
    w.total_bytes += inputs[i].size;
  }

  h.block_size = w.bs;
  h.n_streams = n_inputs;
  h.created = time (NULL);
  h.input_bytes = w.total_bytes;
  if (opts->codec == QSNAP_CODEC_LZ4)
    snprintf (h.codec, sizeof h.codec, "lz4");
  else
    snprintf (h.codec, sizeof h.codec, "%s-%d", codec_name (opts->codec),
              w.level);
  if (getrandom (h.id, sizeof h.id, 0) != sizeof h.id) {
    image_error ("%s: getrandom: %m", output);
    goto out;
  }

  w.n_slots = 4 * jobs;
  w.slots = calloc (w.n_slots, sizeof *w.slots);
  w.wbuf = malloc (WRITE_BUFFER);
  threads = calloc (jobs, sizeof *threads);
  if (w.slots == NULL || w.wbuf == NULL || threads == NULL)
    goto nomem;
  for (size_t i = 0; i < w.n_slots; ++i) {
    w.slots[i].data = malloc (w.bs);
    w.slots[i].packed = malloc (w.bs);
    if (w.slots[i].data == NULL || w.slots[i].packed == NULL)
      goto nomem;
  }
  if (create_output (&w) == -1)
    goto out;
  w.offset = QSNAP_HEADER_SIZE;

  for (; started < jobs; ++started) {
    int e = pthread_create (&threads[started], NULL, worker, &w);
    if (e != 0) {
      errno = e;
      image_error ("%s: cannot start a compression thread: %m", output);
      goto out;
    }
  }
  for (size_t i = 0; i < n_inputs; ++i) {
    first_page[i] = w.index_pages;
    if (write_stream (&w, &inputs[i]) == -1)
      goto out;
  }
  w.stats->input_bytes = w.total_bytes;
  r = finish_file (&w, inputs, n_inputs, &h, first_page);
  goto out;

 nomem:
  image_error ("%s: %m", output);
 out:
  pthread_mutex_lock (&w.lock);
  w.stop = true;
  pthread_cond_broadcast (&w.queued);
  pthread_mutex_unlock (&w.lock);
  for (unsigned i = 0; i < started; ++i)
    pthread_join (threads[i], NULL);
  s3_upload_free (w.upload);
  outfile_close (&w.out);
  if (w.slots)
    for (size_t i = 0; i < w.n_slots; ++i) {
      free (w.slots[i].data);
      free (w.slots[i].packed);
    }
  free (w.slots);
  free (w.wbuf);
  free (w.index);
  free (w.dedup.table);
  free (threads);
  pthread_cond_destroy (&w.queued);
  pthread_cond_destroy (&w.done);
  pthread_mutex_destroy (&w.lock);
  if (r == -1 && errno == 0)
    errno = EIO;
  return r;
}

/* Commit. */

/* Thin commit: a block changed if any part of it is in the overlay's own
 * layer, i.e. not all of it reads through to the base.
 */
struct overlay_changes {
  struct image *overlay;
  struct run run;
};

static int
changed_in_overlay (void *opaque, uint64_t offset, uint64_t length)
{
  struct overlay_changes *c = opaque;
  int r = run_covers (c->overlay, true, &c->run, offset, length);

  return r == -1 ? -1 : !r;
}

static int
never_changed (void *opaque, uint64_t offset, uint64_t length)
{
  return 0;
}

int
qsnap_commit (const char *base, const char *overlay, const char *output,
              bool thin, const struct qsnap_write_options *opts,
              struct qsnap_write_stats *stats)
{
  struct image_options io = { .backing = BACKING_SAME_DIR,
                              .readonly = true };
  struct qsnap_input inputs[QSNAP_MAX_STREAMS];
  struct image *others[QSNAP_MAX_STREAMS] = { NULL };
  struct overlay_changes changes = {
    .run = { .mask = IMAGE_EXTENT_BACKING, .has = -1 },
  };
  struct qsnap_write_options o = *opts;
  struct image *img, *top;
  char **names;
  size_t n;
  int r = -1;

  img = image_open (base, &io);
  if (img == NULL)
    return -1;
  if (thin && img->ops != &qsnap_ops) {
    image_error ("%s: --thin needs a qsnap base (this is %s); commit "
                 "without --thin for a full snapshot", base, img->ops->name);
    image_close (img);
    return -1;
  }
  image_list_streams (img, &names, &n);
  if (n > QSNAP_MAX_STREAMS) {
    image_error ("%s: too many streams", base);
    image_close (img);
    return -1;
  }
  top = overlay_open (img, overlay, true);
  if (top == NULL) {
    image_close (img);
    return -1;
  }
  changes.overlay = top;
  inputs[0] = (struct qsnap_input) {
    .name = n > 0 ? names[0] : "disk", .img = top, .size = top->size,
    .changed = thin ? changed_in_overlay : NULL,
    .changed_opaque = &changes,
  };
  /* The base's other streams, as they are. */
  for (size_t i = 1; i < n; ++i) {
    io.stream = names[i];
    others[i] = image_open (base, &io);
    if (others[i] == NULL)
      goto out;
    inputs[i] = (struct qsnap_input) {
      .name = names[i], .img = thin ? NULL : others[i],
      .size = others[i]->size, .changed = thin ? never_changed : NULL,
    };
  }
  if (thin)
    o.parent = base;
  r = qsnap_create (output, inputs, n > 0 ? n : 1, &o, stats);
 out:
  for (size_t i = 1; i < n; ++i)
    image_close (others[i]);
  image_close (top);
  return r;
}
