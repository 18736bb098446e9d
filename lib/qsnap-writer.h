/* SPDX-License-Identifier: BSD-3-Clause */
/* Writing qsnap files (docs/qsnap.md): a new snapshot from any images the
 * image layer opens, and base + overlay committed into a new snapshot.
 *
 * The file appears under its name complete or not at all: it is built
 * in an unnamed (or, where the filesystem cannot, a .tmp.XXXXXX)
 * temporary file in the output's directory, synced, then renamed into
 * place.  Errors are reported once through image_error().
 */

#ifndef QEMOUNT_QSNAP_WRITER_H
#define QEMOUNT_QSNAP_WRITER_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "image.h"
#include "qsnap.h"

/* Defaults chosen with scripts/bench --sweep (docs/benchmarks.md has the
 * figures): on an ext4 of text, 1 MiB blocks at zstd level 3 are 0.86x
 * the size of qemu-img's zstd qcow2 in 0.7x its time; no smaller block
 * size reaches 0.9x at a level that is still faster than qemu-img.
 */
#define QSNAP_DEFAULT_BLOCK (1u << 20)
#define QSNAP_DEFAULT_LEVEL 3
/* LZ4 finds matches at most 64 KiB back, so blocks beyond that gain it
 * nothing in size (1 GiB of mixed data: 256 KiB blocks 0.03% larger
 * than 1 MiB ones), while a block as big as the usual NBD request
 * (nbdcopy and QEMU ask for 256 KiB) is read straight into the
 * request's buffer.
 */
#define QSNAP_DEFAULT_BLOCK_LZ4 (256u << 10)

enum qsnap_codec {
  QSNAP_CODEC_ZSTD,
  QSNAP_CODEC_LZ4,
  QSNAP_CODEC_AUTO,             /* both, keep the smaller */
};

/* Thin snapshots: is the block at [offset, offset + length) of this
 * stream different from the parent's?  1 yes (stored), 0 no (kind
 * PARENT), -1 after image_error.
 */
typedef int (*qsnap_changed_fn) (void *opaque, uint64_t offset,
                                 uint64_t length);

struct qsnap_input {
  const char *name;             /* stream name: [A-Za-z0-9._-], < 32 bytes */
  struct image *img;            /* the contents; NULL if changed says never */
  uint64_t size;                /* of the stream (img->size if img) */
  qsnap_changed_fn changed;     /* NULL: every block is stored */
  void *changed_opaque;
};

struct qsnap_write_options {
  uint32_t block_size;          /* 0: QSNAP_DEFAULT_BLOCK(_LZ4) */
  enum qsnap_codec codec;
  int level;                    /* zstd level; 0: QSNAP_DEFAULT_LEVEL */
  unsigned jobs;                /* compression threads; 0: one per CPU */
  const char *parent;           /* thin: the parent qsnap file, or NULL */
  /* Called after each block, from the calling thread. */
  void (*progress) (void *opaque, uint64_t done, uint64_t total);
  void *progress_opaque;
  /* Set (e.g. by a signal handler) to stop: the call fails with EINTR. */
  const volatile sig_atomic_t *cancel;
};

struct qsnap_write_stats {
  uint64_t input_bytes;         /* sum of the streams' sizes */
  uint64_t file_bytes;          /* size of the file written */
  uint64_t blocks[QSNAP_KIND_MAX + 1];   /* index entries by kind */
  uint64_t dedup_blocks;        /* entries sharing an earlier block's bytes */
};

/* Write output from the inputs.  With opts->parent, the block size must
 * be the parent's and each input's stream must exist in the parent.
 */
int qsnap_create (const char *output, const struct qsnap_input *inputs,
                  size_t n_inputs, const struct qsnap_write_options *opts,
                  struct qsnap_write_stats *stats);

/* Write output from base with the overlay's changes on its disk stream
 * ("disk", else its only stream).  thin: only the blocks the overlay
 * changed are stored, the rest (and every block of the other streams)
 * refer to base, which must be a qsnap file; otherwise every stream is
 * copied in full.
 */
int qsnap_commit (const char *base, const char *overlay, const char *output,
                  bool thin, const struct qsnap_write_options *opts,
                  struct qsnap_write_stats *stats);

#endif /* QEMOUNT_QSNAP_WRITER_H */
