/* SPDX-License-Identifier: BSD-3-Clause */
/* qsnap on-disk structures: encoding and checked decoding (qsnap.h),
 * and every rule a reader enforces before it trusts an index entry:
 * the decoder (qsnap.c) and "qemount snapshot verify" both call these,
 * so that a file one refuses the other cannot read.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "bytes.h"
#include "image.h"
#include "qsnap.h"
#include "source.h"

/* Store a string in a NUL-padded field of n bytes (already zeroed);
 * longer strings are cut (callers check lengths before encoding).
 */
static void
put_string (uint8_t *dst, const char *src, size_t n)
{
  memcpy (dst, src, strnlen (src, n));
}

/* Copy a NUL-padded field of size n into a NUL-terminated string. */
static void
get_string (char *dst, const uint8_t *src, size_t n)
{
  memcpy (dst, src, n);
  dst[n] = '\0';
}

uint64_t
qsnap_checksum (const void *data, size_t len)
{
  return XXH3_64bits (data, len);
}

uint64_t
qsnap_blocks (uint64_t size, uint32_t block_size)
{
  return size / block_size + (size % block_size != 0);
}

uint64_t
qsnap_pages (uint64_t size, uint32_t block_size)
{
  uint64_t blocks = qsnap_blocks (size, block_size);

  return blocks / QSNAP_ENTRIES_PER_PAGE +
    (blocks % QSNAP_ENTRIES_PER_PAGE != 0);
}

uint32_t
qsnap_max_stored (uint32_t block_size)
{
  return block_size + block_size / 8 + 64;
}

void
qsnap_encode_header (uint8_t *b, const struct qsnap_header *h)
{
  memset (b, 0, QSNAP_HEADER_SIZE);
  memcpy (&b[0], QSNAP_MAGIC, 8);
  store_le32 (&b[8], h->version);
  store_le32 (&b[12], h->incompat);
  store_le32 (&b[16], h->compat);
  store_le32 (&b[20], h->block_size);
  memcpy (&b[24], h->id, QSNAP_ID_SIZE);
  store_le64 (&b[40], h->stream_table);
  store_le32 (&b[48], h->n_streams);
  memcpy (&b[56], h->parent_id, QSNAP_ID_SIZE);
  store_le64 (&b[72], h->created);
  store_le64 (&b[80], h->input_bytes);
  put_string (&b[88], h->parent_path, QSNAP_PARENT_PATH_MAX);
  put_string (&b[600], h->codec, QSNAP_CODEC_MAX);
  store_le64 (&b[4088], XXH64 (b, 4088, 0));
}

const char *
qsnap_decode_header (const uint8_t *b, struct qsnap_header *h)
{
  if (memcmp (&b[0], QSNAP_MAGIC, 8) != 0)
    return "not a qsnap file (bad magic)";
  if (load_le64 (&b[4088]) != XXH64 (b, 4088, 0))
    return "header checksum mismatch (truncated or corrupt file)";
  h->version = load_le32 (&b[8]);
  h->incompat = load_le32 (&b[12]);
  h->compat = load_le32 (&b[16]);
  h->block_size = load_le32 (&b[20]);
  memcpy (h->id, &b[24], QSNAP_ID_SIZE);
  h->stream_table = load_le64 (&b[40]);
  h->n_streams = load_le32 (&b[48]);
  memcpy (h->parent_id, &b[56], QSNAP_ID_SIZE);
  h->created = load_le64 (&b[72]);
  h->input_bytes = load_le64 (&b[80]);
  get_string (h->parent_path, &b[88], QSNAP_PARENT_PATH_MAX);
  get_string (h->codec, &b[600], QSNAP_CODEC_MAX);

  if (h->version != QSNAP_VERSION)
    return "unsupported qsnap version (this reader knows version 1)";
  if (h->incompat & ~QSNAP_INCOMPAT_KNOWN)
    return "unknown incompatible feature bits";
  if (h->block_size < QSNAP_MIN_BLOCK || h->block_size > QSNAP_MAX_BLOCK ||
      (h->block_size & (h->block_size - 1)) != 0)
    return "invalid block size (must be a power of two, 4 KiB to 4 MiB)";
  if (h->n_streams == 0 || h->n_streams > QSNAP_MAX_STREAMS)
    return "invalid number of streams (1 to 64)";
  if (h->stream_table < QSNAP_HEADER_SIZE)
    return "stream table overlaps the header";
  if ((h->compat & QSNAP_COMPAT_PARENT) != (h->parent_path[0] != '\0'))
    return "parent flag and parent path disagree";
  return NULL;
}

void
qsnap_encode_stream (uint8_t *b, const struct qsnap_stream *s)
{
  memset (b, 0, QSNAP_STREAM_SIZE);
  put_string (&b[0], s->name, QSNAP_STREAM_NAME_MAX);
  store_le64 (&b[32], s->size);
  store_le64 (&b[40], s->index_offset);
  store_le64 (&b[48], s->index_pages);
  store_le64 (&b[56], XXH64 (b, 56, 0));
}

static bool
valid_name (const char *name)
{
  if (name[0] == '\0')
    return false;
  for (const char *p = name; *p; ++p)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
          (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
      return false;
  return true;
}

const char *
qsnap_decode_stream (const uint8_t *b, struct qsnap_stream *s)
{
  if (load_le64 (&b[56]) != XXH64 (b, 56, 0))
    return "stream table checksum mismatch";
  get_string (s->name, &b[0], QSNAP_STREAM_NAME_MAX);
  s->size = load_le64 (&b[32]);
  s->index_offset = load_le64 (&b[40]);
  s->index_pages = load_le64 (&b[48]);
  if (!valid_name (s->name))
    return "invalid stream name";
  return NULL;
}

void
qsnap_encode_page (uint8_t *b, const struct qsnap_entry *e)
{
  memset (b, 0, QSNAP_PAGE_SIZE);
  for (unsigned i = 0; i < QSNAP_ENTRIES_PER_PAGE; ++i) {
    uint8_t *p = &b[i * QSNAP_ENTRY_SIZE];

    store_le64 (&p[0], e[i].offset);
    store_le32 (&p[8], e[i].length);
    p[12] = e[i].kind;
    store_le64 (&p[16], e[i].checksum);
  }
  store_le64 (&b[4088], XXH64 (b, 4088, 0));
}

const char *
qsnap_decode_page (const uint8_t *b, uint64_t page, uint64_t blocks,
                   struct qsnap_entry *e)
{
  if (load_le64 (&b[4088]) != XXH64 (b, 4088, 0))
    return "index page checksum mismatch";
  for (unsigned i = 0; i < QSNAP_ENTRIES_PER_PAGE; ++i) {
    const uint8_t *p = &b[i * QSNAP_ENTRY_SIZE];

    e[i].offset = load_le64 (&p[0]);
    e[i].length = load_le32 (&p[8]);
    e[i].kind = p[12];
    e[i].checksum = load_le64 (&p[16]);
    if (e[i].kind > QSNAP_KIND_MAX)
      return "index entry of unknown kind";
    if (page * QSNAP_ENTRIES_PER_PAGE + i >= blocks &&
        (e[i].offset || e[i].length || e[i].kind || e[i].checksum))
      return "entry past the end of the stream is not zero";
  }
  return NULL;
}

const char *
qsnap_check_entry (const struct qsnap_header *h, const struct qsnap_entry *e)
{
  switch (e->kind) {
  case QSNAP_ZERO:
    return e->offset || e->length || e->checksum ?
      "zero block with stored bytes" : NULL;
  case QSNAP_PARENT:
    return h->compat & QSNAP_COMPAT_PARENT ? NULL :
      "refers to a parent, but the snapshot has none";
  case QSNAP_RAW:
    if (e->length != h->block_size)
      return "raw block of the wrong length";
    break;
  default:
    if (e->length == 0 || e->length > qsnap_max_stored (h->block_size))
      return "compressed length out of range";
  }
  /* The stream table lies inside the file (qsnap_read_tables), so this
   * also keeps the stored bytes inside it.
   */
  if (e->offset < QSNAP_HEADER_SIZE || e->offset > h->stream_table ||
      e->length > h->stream_table - e->offset)
    return "stored bytes lie outside the data area";
  return NULL;
}

int
qsnap_read_tables (struct source *src, struct qsnap_header *h,
                   struct qsnap_stream *streams)
{
  const char *path = src->name;
  const uint64_t file_size = src->size;
  uint8_t buf[QSNAP_HEADER_SIZE];
  uint8_t table[QSNAP_MAX_STREAMS * QSNAP_STREAM_SIZE];
  const char *why;
  size_t table_bytes;

  if (file_size < QSNAP_HEADER_SIZE) {
    image_error ("%s: file is too short for a qsnap header (truncated?)",
                 path);
    return -1;
  }
  if (source_read (src, buf, sizeof buf, 0, "qsnap header") == -1)
    return -1;
  why = qsnap_decode_header (buf, h);
  if (why) {
    image_error ("%s: %s", path, why);
    return -1;
  }
  table_bytes = (size_t) h->n_streams * QSNAP_STREAM_SIZE;
  if (h->stream_table > file_size ||
      table_bytes > file_size - h->stream_table) {
    image_error ("%s: stream table lies past the end of the file "
                 "(truncated?)", path);
    return -1;
  }
  if (source_read (src, table, table_bytes, h->stream_table,
                     "qsnap stream table") == -1)
    return -1;
  for (uint32_t i = 0; i < h->n_streams; ++i) {
    struct qsnap_stream *s = &streams[i];

    why = qsnap_decode_stream (&table[i * QSNAP_STREAM_SIZE], s);
    if (why) {
      image_error ("%s: stream %" PRIu32 ": %s", path, i, why);
      return -1;
    }
    for (uint32_t j = 0; j < i; ++j)
      if (strcmp (streams[j].name, s->name) == 0) {
        image_error ("%s: two streams are called '%s'", path, s->name);
        return -1;
      }
    /* The index must be exactly as long as the size says, and lie
     * between the header and the stream table.
     */
    if (s->size > (UINT64_C (1) << 62) ||
        s->index_pages != qsnap_pages (s->size, h->block_size) ||
        s->index_offset < QSNAP_HEADER_SIZE ||
        s->index_offset > h->stream_table ||
        s->index_pages > (h->stream_table - s->index_offset) /
        QSNAP_PAGE_SIZE) {
      image_error ("%s: stream '%s': index does not match its size or lies "
                   "outside the index area", path, s->name);
      return -1;
    }
  }
  return 0;
}
