/* SPDX-License-Identifier: BSD-3-Clause */
/* VHDX log replay, in memory.
 *
 * The log is a ring of 4 KiB sectors holding entries: a header and
 * descriptors (a data descriptor writes one 4 KiB sector, whose first 8
 * and last 4 bytes it keeps itself; a zero descriptor zeroes a range),
 * then one data sector per data descriptor.  A writer updates metadata
 * through the log and applies it later; one that stopped in between
 * (a crash, a host that went away) leaves entries the rest of the file
 * does not reflect yet, and a reader must apply them first.
 *
 * We never write the image: the writes of the active sequence are kept
 * here, resolved into non-overlapping patches, and laid over every read
 * of the file, metadata and payload alike.
 *
 * Every entry is hostile.  Scanning checks an entry's sectors in order
 * and stops at the first bad one, and every sector inside the checked
 * part of an entry starts with a descriptor or data signature, so it
 * cannot start another candidate: the scan reads each sector of the log
 * a bounded number of times, whatever the entries claim.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "image.h"
#include "vhdx.h"

#define LOG_SECTOR      4096u
#define ENTRY_HEADER    64u
#define DESCRIPTOR      32u

#define SIG_ENTRY       0x65676f6cu     /* "loge" */
#define SIG_ZERO        0x6f72657au     /* "zero" */
#define SIG_DESC        0x63736564u     /* "desc" */
#define SIG_DATA        0x61746164u     /* "data" */

/* Writes kept from one active sequence.  A log of the largest size the
 * header allows holds at most 2^20 data sectors; only zero descriptors
 * could be more numerous, and no writer needs that many.
 */
#define MAX_WRITES      (UINT32_C (1) << 20)

#define NO_SOURCE       UINT64_MAX

/* One write of the log: data (one sector, from source) or zeros. */
struct write {
  uint64_t offset, length;      /* in the file */
  uint64_t source;              /* file offset of the data sector, or
                                   NO_SOURCE for zeros */
  uint8_t leading[8], trailing[4];
};

/* A resolved, non-overlapping piece of the file as the log leaves it. */
struct patch {
  uint64_t offset, length;
  uint32_t write;               /* index into writes */
};

struct vhdx_log {
  uint64_t physical_size, file_size;
  struct write *writes;
  size_t nwrites;
  struct patch *patches;        /* sorted by offset */
  size_t npatches;
};

/* A valid entry found in the log. */
struct entry {
  uint32_t pos, length, tail;   /* bytes, within the log */
  uint64_t seq;
  uint64_t flushed, last;       /* FlushedFileOffset, LastFileOffset */
};

struct scan {
  struct image *img;
  uint64_t log_offset;
  uint32_t length;
  const uint8_t *guid;
  uint8_t sector[LOG_SECTOR];
  /* Collecting the writes of the active sequence. */
  struct write *writes;
  size_t nwrites, allocated;
};

/* Report, set errno, evaluate to -1 (also usable as a statement). */
#define LOG_ERROR(s, err, fs, ...)                                      \
  ({ image_error ("%s: " fs, (s)->img->path, ##__VA_ARGS__);            \
     errno = (err); -1; })

static int
read_log_sector (struct scan *s, uint64_t pos, void *buf)
{
  return image_read_file (s->img, buf, LOG_SECTOR,
                          s->log_offset + pos % s->length, "log sector");
}

/* Record the write of a descriptor of the active sequence, after
 * checking where it goes: never the headers (which locate the log) nor
 * the log itself.
 */
static int
add_write (struct scan *s, const struct entry *e, const uint8_t *d,
           uint64_t source)
{
  struct write w = {
    .offset = load_le64 (d + 16),
    .length = source == NO_SOURCE ? load_le64 (d + 8) : LOG_SECTOR,
    .source = source,
  };

  if (w.length == 0)
    return 0;
  if (w.offset > INT64_MAX || w.length > INT64_MAX - w.offset)
    return LOG_ERROR (s, EINVAL, "log entry at log offset %" PRIu32
                      " writes past any possible file size (file offset %"
                      PRIu64 ")", e->pos, w.offset);
  if (w.offset < VHDX_HEADERS_END)
    return LOG_ERROR (s, EINVAL, "log entry at log offset %" PRIu32
                      " writes into the file's headers (file offset %"
                      PRIu64 ")", e->pos, w.offset);
  if (w.offset < s->log_offset + s->length &&
      s->log_offset < w.offset + w.length)
    return LOG_ERROR (s, EINVAL, "log entry at log offset %" PRIu32
                      " writes into the log itself (file offset %" PRIu64
                      ")", e->pos, w.offset);
  if (s->nwrites == MAX_WRITES)
    return LOG_ERROR (s, EINVAL, "the log's active sequence has more than %"
                      PRIu32 " writes", MAX_WRITES);
  if (source != NO_SOURCE) {
    memcpy (w.trailing, d + 4, 4);
    memcpy (w.leading, d + 8, 8);
  }
  if (s->nwrites == s->allocated) {
    size_t n = s->allocated ? 2 * s->allocated : 64;
    struct write *p = realloc (s->writes, n * sizeof *p);

    if (p == NULL)
      return LOG_ERROR (s, ENOMEM, "%m");
    s->writes = p;
    s->allocated = n;
  }
  s->writes[s->nwrites++] = w;
  return 0;
}

/* Check the entry at pos: 1 if it is a whole, valid entry of this log
 * (header, every descriptor, every data sector, checksum), 0 if not,
 * -1 on a read error.  With collect, also records its writes (the entry
 * is known to be valid by then).
 */
static int
check_entry (struct scan *s, uint32_t pos, struct entry *e, bool collect)
{
  static const uint8_t zeros[4];
  uint8_t *b = s->sector;
  uint32_t crc, checksum, ndesc, desc_sectors, ndata = 0, i;
  uint64_t desc_bytes, k;

  if (read_log_sector (s, pos, b) == -1)
    return -1;
  if (load_le32 (b) != SIG_ENTRY)
    return 0;
  checksum = load_le32 (b + 4);
  e->pos = pos;
  e->length = load_le32 (b + 8);
  e->tail = load_le32 (b + 12);
  e->seq = load_le64 (b + 16);
  ndesc = load_le32 (b + 24);
  e->flushed = load_le64 (b + 48);
  e->last = load_le64 (b + 56);
  if (e->length == 0 || e->length % LOG_SECTOR != 0 ||
      e->length > s->length || e->tail % LOG_SECTOR != 0 ||
      e->tail >= s->length || e->seq == 0 ||
      memcmp (b + 32, s->guid, VHDX_GUID_SIZE) != 0)
    return 0;
  desc_bytes = ENTRY_HEADER + (uint64_t) ndesc * DESCRIPTOR;
  if (desc_bytes > e->length)
    return 0;
  desc_sectors = (desc_bytes + LOG_SECTOR - 1) / LOG_SECTOR;

  crc = vhdx_crc32c (0, b, 4);
  crc = vhdx_crc32c (crc, zeros, 4);
  crc = vhdx_crc32c (crc, b + 8, LOG_SECTOR - 8);

  /* Descriptors, in the rest of the first sector and whole sectors
   * after it (desc_sectors in all).  k counts the entry's sectors read.
   */
  k = 1;
  for (i = 0; i < ndesc; ++i) {
    const uint32_t at = (ENTRY_HEADER + (uint64_t) i * DESCRIPTOR)
      % LOG_SECTOR;
    const uint8_t *d = b + at;
    uint32_t sig;

    if (at == 0) {
      if (read_log_sector (s, pos + k * LOG_SECTOR, b) == -1)
        return -1;
      crc = vhdx_crc32c (crc, b, LOG_SECTOR);
      k++;
    }
    sig = load_le32 (d);
    if (load_le64 (d + 24) != e->seq || load_le64 (d + 16) % LOG_SECTOR != 0)
      return 0;
    if (sig == SIG_ZERO) {
      if (load_le64 (d + 8) % LOG_SECTOR != 0)
        return 0;
      if (collect && add_write (s, e, d, NO_SOURCE) == -1)
        return -1;
    }
    else if (sig == SIG_DESC) {
      /* Its data sector: the ndata-th after the descriptor sectors. */
      uint64_t data_pos = (pos + ((uint64_t) desc_sectors + ndata)
                           * LOG_SECTOR) % s->length;

      if (collect && add_write (s, e, d, s->log_offset + data_pos) == -1)
        return -1;
      ndata++;
    }
    else
      return 0;
  }
  if ((uint64_t) desc_sectors + ndata != e->length / LOG_SECTOR)
    return 0;

  for (i = 0; i < ndata; ++i, ++k) {
    if (read_log_sector (s, pos + k * LOG_SECTOR, b) == -1)
      return -1;
    if (load_le32 (b) != SIG_DATA ||
        load_le32 (b + 4) != (uint32_t) (e->seq >> 32) ||
        load_le32 (b + LOG_SECTOR - 4) != (uint32_t) e->seq)
      return 0;
    crc = vhdx_crc32c (crc, b, LOG_SECTOR);
  }
  return crc == checksum;
}

/* Every valid entry of the log, by position. */
static int
find_entries (struct scan *s, struct entry **entries, size_t *n)
{
  size_t allocated = 0;

  *entries = NULL;
  *n = 0;
  for (uint64_t pos = 0; pos < s->length; pos += LOG_SECTOR) {
    struct entry e;
    int r = check_entry (s, pos, &e, false);

    if (r == -1)
      return -1;
    if (r == 0)
      continue;
    if (*n == allocated) {
      size_t want = allocated ? 2 * allocated : 16;
      struct entry *p = realloc (*entries, want * sizeof *p);

      if (p == NULL)
        return LOG_ERROR (s, ENOMEM, "%m");
      *entries = p;
      allocated = want;
    }
    (*entries)[(*n)++] = e;
  }
  return 0;
}

static const struct entry *
entry_at (const struct entry *entries, size_t n, uint32_t pos)
{
  size_t lo = 0, hi = n;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;

    if (entries[mid].pos < pos)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < n && entries[lo].pos == pos ? &entries[lo] : NULL;
}

/* The active sequence: from the tail named by the newest valid entry
 * (the one with the highest sequence number: a torn newer one fails its
 * checksum) to that entry, each entry right after the one before with
 * the next sequence number.  Entries before the tail were applied to the
 * file already and must not be applied again (the file may have changed
 * since).  A sequence that does not hold together is an error: replaying
 * part of it, or none, would serve a disk that never existed.
 */
static int
active_sequence (struct scan *s, const struct entry *entries, size_t n,
                 const struct entry ***seq, size_t *len)
{
  const struct entry *head = &entries[0], *cur;
  uint64_t total = 0;

  for (size_t i = 1; i < n; ++i)
    if (entries[i].seq > head->seq)
      head = &entries[i];

  *seq = malloc (n * sizeof **seq);
  if (*seq == NULL)
    return LOG_ERROR (s, ENOMEM, "%m");
  *len = 0;
  cur = entry_at (entries, n, head->tail);
  if (cur == NULL)
    return LOG_ERROR (s, EINVAL, "log is corrupt: its newest entry (sequence "
                      "number %" PRIu64 " at log offset %" PRIu32 ") starts "
                      "its sequence at log offset %" PRIu32 ", which holds "
                      "no valid entry", head->seq, head->pos, head->tail);
  for (;;) {
    total += cur->length;
    if (*len == n || total > s->length)
      return LOG_ERROR (s, EINVAL, "log is corrupt: the sequence from log "
                        "offset %" PRIu32 " overlaps itself", head->tail);
    (*seq)[(*len)++] = cur;
    if (cur == head)
      return 0;
    {
      const struct entry *next =
        entry_at (entries, n, (cur->pos + (uint64_t) cur->length) % s->length);

      if (next == NULL || next->seq != cur->seq + 1)
        return LOG_ERROR (s, EINVAL, "log is corrupt: the entry after the "
                          "one at log offset %" PRIu32 " (sequence number %"
                          PRIu64 ") is missing or out of sequence, before "
                          "the newest entry (sequence number %" PRIu64 ")",
                          cur->pos, cur->seq, head->seq);
      cur = next;
    }
  }
}

/* Resolving the writes: the last write of a byte wins.  A sweep over the
 * writes' ends in file order, with the writes that cover the current
 * position in a max-heap by index: its top is the newest of them.
 */

struct event {
  uint64_t pos;
  uint32_t write;
  bool start;
};

static int
compare_events (const void *a, const void *b)
{
  const struct event *x = a, *y = b;

  return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static void
heap_push (uint32_t *heap, size_t *n, uint32_t v)
{
  size_t i = (*n)++;

  while (i > 0 && heap[(i - 1) / 2] < v) {
    heap[i] = heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  heap[i] = v;
}

static void
heap_pop (uint32_t *heap, size_t *n)
{
  uint32_t v = heap[--*n];
  size_t i = 0;

  for (;;) {
    size_t c = 2 * i + 1;

    if (c >= *n)
      break;
    if (c + 1 < *n && heap[c + 1] > heap[c])
      c++;
    if (heap[c] <= v)
      break;
    heap[i] = heap[c];
    i = c;
  }
  heap[i] = v;
}

static void
add_patch (struct vhdx_log *log, const struct write *writes, uint32_t w,
           uint64_t start, uint64_t end)
{
  struct patch *last = log->npatches ? &log->patches[log->npatches - 1]
    : NULL;

  /* Pieces of one write, or zeros next to zeros, read in one step. */
  if (last && last->offset + last->length == start &&
      (last->write == w ||
       (writes[last->write].source == NO_SOURCE &&
        writes[w].source == NO_SOURCE))) {
    last->length = end - last->offset;
    return;
  }
  log->patches[log->npatches++] = (struct patch) {
    .offset = start, .length = end - start, .write = w,
  };
}

static int
resolve_writes (struct scan *s, struct vhdx_log *log)
{
  const size_t n = log->nwrites;
  struct event *ev = malloc (2 * n * sizeof *ev + 1);
  uint32_t *heap = malloc (n * sizeof *heap + 1);
  bool *ended = calloc (n + 1, sizeof *ended);
  size_t nheap = 0, i = 0;
  int r = -1;

  /* Each event splits at most one patch in two. */
  log->patches = malloc ((2 * n + 1) * sizeof *log->patches);
  if (ev == NULL || heap == NULL || ended == NULL || log->patches == NULL) {
    LOG_ERROR (s, ENOMEM, "%m");
    goto out;
  }
  for (size_t w = 0; w < n; ++w) {
    ev[2 * w] = (struct event) {
      .pos = log->writes[w].offset, .write = w, .start = true,
    };
    ev[2 * w + 1] = (struct event) {
      .pos = log->writes[w].offset + log->writes[w].length, .write = w,
    };
  }
  qsort (ev, 2 * n, sizeof *ev, compare_events);

  while (i < 2 * n) {
    const uint64_t pos = ev[i].pos;

    for (; i < 2 * n && ev[i].pos == pos; ++i) {
      if (ev[i].start)
        heap_push (heap, &nheap, ev[i].write);
      else
        ended[ev[i].write] = true;
    }
    while (nheap > 0 && ended[heap[0]])
      heap_pop (heap, &nheap);
    if (nheap > 0 && i < 2 * n)
      add_patch (log, log->writes, heap[0], pos, ev[i].pos);
  }
  r = 0;

 out:
  free (ev);
  free (heap);
  free (ended);
  return r;
}

int
vhdx_log_replay (struct image *img, uint64_t file_size, uint64_t log_offset,
                 uint32_t log_length, const uint8_t *guid,
                 struct vhdx_log **logp)
{
  struct scan *s = calloc (1, sizeof *s);
  struct vhdx_log *log = NULL;
  struct entry *entries = NULL;
  const struct entry **seq = NULL;
  size_t n, len;
  int r = -1;

  *logp = NULL;
  if (s == NULL) {
    image_error ("%s: %m", img->path);
    return -1;
  }
  *s = (struct scan) {
    .img = img, .log_offset = log_offset, .length = log_length,
    .guid = guid,
  };
  if (find_entries (s, &entries, &n) == -1)
    goto out;
  if (n == 0) {
    r = 0;
    goto out;
  }
  if (active_sequence (s, entries, n, &seq, &len) == -1)
    goto out;

  log = calloc (1, sizeof *log);
  if (log == NULL) {
    LOG_ERROR (s, ENOMEM, "%m");
    goto out;
  }
  log->physical_size = log->file_size = file_size;
  for (size_t i = 0; i < len; ++i) {
    struct entry e;

    /* The writer had made the file this long before it wrote the entry:
     * a shorter file lost data the log does not hold.
     */
    if (seq[i]->flushed > file_size) {
      LOG_ERROR (s, EINVAL, "log entry at log offset %" PRIu32 " was "
                 "written when the file had %" PRIu64 " bytes, but it has %"
                 PRIu64 " (truncated image?)", seq[i]->pos, seq[i]->flushed,
                 file_size);
      goto out;
    }
    if (seq[i]->last > INT64_MAX) {
      LOG_ERROR (s, EINVAL, "log entry at log offset %" PRIu32 " gives the "
                 "file a size past any possible (%" PRIu64 " bytes)",
                 seq[i]->pos, seq[i]->last);
      goto out;
    }
    if (seq[i]->last > log->file_size)
      log->file_size = seq[i]->last;
    switch (check_entry (s, seq[i]->pos, &e, true)) {
    case -1:
      goto out;
    case 0:
      LOG_ERROR (s, EIO, "log entry at log offset %" PRIu32 " changed "
                 "while it was read", seq[i]->pos);
      goto out;
    }
  }
  log->writes = s->writes;
  log->nwrites = s->nwrites;
  s->writes = NULL;
  for (size_t w = 0; w < log->nwrites; ++w) {
    uint64_t end = log->writes[w].offset + log->writes[w].length;

    if (end > log->file_size)
      log->file_size = end;
  }
  if (resolve_writes (s, log) == -1)
    goto out;
  *logp = log;
  log = NULL;
  r = 0;

 out:
  vhdx_log_free (log);
  free (s->writes);
  free (s);
  free (entries);
  free (seq);
  return r;
}

uint64_t
vhdx_log_file_size (const struct vhdx_log *log)
{
  return log->file_size;
}

/* Index of the first patch ending after offset. */
static size_t
first_patch (const struct vhdx_log *log, uint64_t offset)
{
  size_t lo = 0, hi = log->npatches;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const struct patch *p = &log->patches[mid];

    if (p->offset + p->length <= offset)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

bool
vhdx_log_writes (const struct vhdx_log *log, uint64_t offset,
                 uint64_t length)
{
  size_t i;

  if (log == NULL)
    return false;
  i = first_patch (log, offset);
  return i < log->npatches && log->patches[i].offset < offset + length;
}

int
vhdx_read (struct image *img, const struct vhdx_log *log, void *buf,
           size_t count, uint64_t offset, const char *what)
{
  uint64_t end, physical;
  uint8_t *out = buf;

  if (log == NULL)
    return image_read_file (img, buf, count, offset, what);

  if (offset > log->file_size || count > log->file_size - offset) {
    image_error ("%s: %s at offset %" PRIu64 " is past the end of the file "
                 "(truncated image?)", img->path, what, offset);
    errno = EIO;
    return -1;
  }
  end = offset + count;
  physical = offset < log->physical_size ? log->physical_size - offset : 0;
  if (physical > count)
    physical = count;
  if (physical > 0 && image_read_file (img, buf, physical, offset, what) == -1)
    return -1;
  memset (out + physical, 0, count - physical);

  for (size_t i = first_patch (log, offset);
       i < log->npatches && log->patches[i].offset < end; ++i) {
    const struct patch *p = &log->patches[i];
    const struct write *w = &log->writes[p->write];
    uint64_t a = p->offset > offset ? p->offset : offset;
    uint64_t b = p->offset + p->length < end ? p->offset + p->length : end;
    uint8_t sector[LOG_SECTOR];

    if (w->source == NO_SOURCE) {
      memset (out + (a - offset), 0, b - a);
      continue;
    }
    /* The data sector keeps the sequence number where the written
     * sector's first 8 and last 4 bytes go; the descriptor has those.
     */
    if (image_read_file (img, sector, LOG_SECTOR, w->source,
                         "log data sector") == -1)
      return -1;
    memcpy (sector, w->leading, 8);
    memcpy (sector + LOG_SECTOR - 4, w->trailing, 4);
    memcpy (out + (a - offset), sector + (a - w->offset), b - a);
  }
  return 0;
}

void
vhdx_log_free (struct vhdx_log *log)
{
  if (log == NULL)
    return;
  free (log->writes);
  free (log->patches);
  free (log);
}
