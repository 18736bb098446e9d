/* SPDX-License-Identifier: BSD-3-Clause */
/* qsnap on-disk format (docs/qsnap.md): constants and the encoding of
 * its structures, shared by the reader (qsnap.c) and the writer
 * (qsnap-writer.c) so that both agree byte for byte, and the rules a
 * reader enforces, shared by the reader and "qemount snapshot verify"
 * so that both refuse the same files.
 */

#ifndef QEMOUNT_QSNAP_H
#define QEMOUNT_QSNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"

#define QSNAP_MAGIC            "QSNAP\0\r\n"
#define QSNAP_VERSION          1
#define QSNAP_HEADER_SIZE      4096
#define QSNAP_MIN_BLOCK        4096u
#define QSNAP_MAX_BLOCK        (4u << 20)
#define QSNAP_MAX_STREAMS      64
#define QSNAP_STREAM_NAME_MAX  32          /* bytes, NUL-padded */
#define QSNAP_STREAM_SIZE      64          /* bytes per stream table record */
#define QSNAP_PAGE_SIZE        4096
#define QSNAP_ENTRY_SIZE       24
#define QSNAP_ENTRIES_PER_PAGE 170
#define QSNAP_PARENT_PATH_MAX  512
#define QSNAP_CODEC_MAX        64
#define QSNAP_ID_SIZE          16

#define QSNAP_COMPAT_PARENT    1u          /* compatible feature bits */
#define QSNAP_COMPAT_KNOWN     QSNAP_COMPAT_PARENT
#define QSNAP_INCOMPAT_KNOWN   0u

enum qsnap_kind {
  QSNAP_ZERO = 0,
  QSNAP_RAW = 1,
  QSNAP_LZ4 = 2,
  QSNAP_ZSTD = 3,
  QSNAP_PARENT = 4,
};
#define QSNAP_KIND_MAX QSNAP_PARENT

struct qsnap_header {
  uint32_t version;
  uint32_t incompat, compat;
  uint32_t block_size;
  uint8_t id[QSNAP_ID_SIZE];
  uint64_t stream_table;
  uint32_t n_streams;
  uint8_t parent_id[QSNAP_ID_SIZE];
  uint64_t created;
  uint64_t input_bytes;
  char parent_path[QSNAP_PARENT_PATH_MAX + 1];
  char codec[QSNAP_CODEC_MAX + 1];
};

struct qsnap_stream {
  char name[QSNAP_STREAM_NAME_MAX + 1];
  uint64_t size;
  uint64_t index_offset;
  uint64_t index_pages;
};

struct qsnap_entry {
  uint64_t offset;
  uint32_t length;
  uint8_t kind;
  uint64_t checksum;
};

/* Encoders fill exactly QSNAP_HEADER_SIZE / QSNAP_STREAM_SIZE bytes,
 * checksum included.  The page encoder takes QSNAP_ENTRIES_PER_PAGE
 * entries and fills QSNAP_PAGE_SIZE bytes.
 */
void qsnap_encode_header (uint8_t *buf, const struct qsnap_header *h);
void qsnap_encode_stream (uint8_t *buf, const struct qsnap_stream *s);
void qsnap_encode_page (uint8_t *buf, const struct qsnap_entry *entries);

/* Decoders check the checksum and the rules that need nothing but the
 * bytes themselves; they return NULL on success or a message saying
 * which rule was broken.  A page is page number page of a stream of
 * blocks blocks: its entries past the last block must be zero.
 */
const char *qsnap_decode_header (const uint8_t *buf, struct qsnap_header *h);
const char *qsnap_decode_stream (const uint8_t *buf, struct qsnap_stream *s);
const char *qsnap_decode_page (const uint8_t *buf, uint64_t page,
                               uint64_t blocks, struct qsnap_entry *entries);

/* The rules of docs/qsnap.md, the one copy that both the decoder
 * (qsnap.c) and "qemount snapshot verify" apply.
 *
 * qsnap_read_tables reads the header and the stream table of the open
 * file src and checks them and every stream record against the file; it
 * reports a problem naming the file and returns -1.
 * streams has room for QSNAP_MAX_STREAMS records.
 *
 * qsnap_check_entry: why the entry of a block of a file with header h
 * breaks the rules, or NULL; it needs no I/O, so it is checked before
 * each block is read.  The stored bytes' checksum and decompression
 * (qsnap_checksum, decompress.h) are checked as they are read.
 */
struct source;
int qsnap_read_tables (struct source *src, struct qsnap_header *h,
                       struct qsnap_stream *streams);
const char *qsnap_check_entry (const struct qsnap_header *h,
                               const struct qsnap_entry *e);

/* Number of blocks and of index pages of a stream. */
uint64_t qsnap_blocks (uint64_t size, uint32_t block_size);
uint64_t qsnap_pages (uint64_t size, uint32_t block_size);

/* Largest stored length allowed for a compressed block. */
uint32_t qsnap_max_stored (uint32_t block_size);

/* Checksum of stored bytes (XXH3 64). */
uint64_t qsnap_checksum (const void *data, size_t len);

#endif /* QEMOUNT_QSNAP_H */
