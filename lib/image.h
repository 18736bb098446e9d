/* SPDX-License-Identifier: BSD-3-Clause */
/* qemount image layer: one decoder per format behind one small vtable.
 *
 * Nothing in lib/ knows about nbdkit or processes.  Errors are reported
 * once, where the cause is known, through image_error() and the caller
 * sees -1 (or NULL) with errno set.
 *
 * Every decoder must be safe for concurrent image_pread / image_extents
 * calls from many threads on the same struct image (the plugin runs with
 * the PARALLEL thread model and shares one open image between all
 * connections).
 */

#ifndef QEMOUNT_IMAGE_H
#define QEMOUNT_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* How far backing files / lower deltas may be followed. */
enum backing_policy {
  BACKING_SAME_DIR,     /* default: only files in the image's own directory
                           (for a URL: the same URL directory) */
  BACKING_YES,          /* any local file; from a remote image, any URL
                           or local file */
  BACKING_NO,           /* never: unallocated areas read as zeros */
};

struct image_options {
  const char *format;           /* NULL or "auto": probe; else forced */
  enum backing_policy backing;
  bool readonly;                /* must be true: decoders are read-only */
  const char *stream;           /* qsnap: stream to serve (NULL: "disk",
                                   else the first) */
  const char *snapshot;         /* internal snapshot of the top image to
                                   serve, by id or name (NULL: its active
                                   state); one it lacks, or a format
                                   without them, fails with ENXIO */
};

/* Extent flags, same meaning and values as NBD's base:allocation. */
#define IMAGE_EXTENT_HOLE     1u  /* no storage in this layer */
#define IMAGE_EXTENT_ZERO     2u  /* reads as zeros */
/* Only between a decoder and image.c: this range is not stored in this
 * layer; its contents come from the backing image (or zeros if none).
 * image_extents() resolves it, callers never see it.
 */
#define IMAGE_EXTENT_BACKING  4u

/* Called for consecutive, non-overlapping ranges in increasing order.
 * Returns 0 to go on, 1 to stop early (enough was reported), -1 on error.
 */
typedef int (*image_extent_fn) (void *opaque, uint64_t offset,
                                uint64_t length, uint32_t flags);

struct image;
struct source;

/* How many of a file's first bytes probing reads. */
#define IMAGE_PROBE_SIZE 4096

/* How one run of the disk is stored in one layer (see image_ops.map). */
enum image_run_kind {
  IMAGE_RUN_DATA,       /* stored as is at file offset host */
  IMAGE_RUN_ZERO,       /* reads as zeros */
  IMAGE_RUN_BACKING,    /* not in this layer: the backing image, or zeros */
  IMAGE_RUN_DECODED,    /* the format decodes it: ops->read_decoded */
};

struct image_run {
  enum image_run_kind kind;
  bool hole;            /* IMAGE_RUN_ZERO with nothing stored behind it */
  uint64_t length;      /* bytes, > 0 */
  uint64_t host;        /* IMAGE_RUN_DATA: file offset of the first byte */
  struct source *file;  /* IMAGE_RUN_DATA: the file holding it (a VMDK
                           extent file), open as long as the image;
                           NULL: img->src */
  uint64_t token[3];    /* IMAGE_RUN_DECODED: what read_decoded needs */
};

/* Scratch space a decoder's map may keep across the calls of one read
 * or extents request (qcow2 keeps a copy of an L2 slice there); zeroed
 * before the first call.
 */
struct image_map_state {
  uint64_t words[528];
};

struct image_ops {
  const char *name;             /* "raw", "qcow2", "ploop" */
  bool snapshots;               /* has internal snapshots: open serves
                                   opts->snapshot at depth 0 */

  /* True if the file is this format, judged by its first bytes, buf
   * (len < IMAGE_PROBE_SIZE only for short files).  A format whose
   * signature is not at a fixed place (a ploop DiskDescriptor.xml) or
   * not at the start (a fixed VHD's footer at the end) may read more of
   * src, within a bound of its own; the others must not look at anything
   * past len.
   */
  bool (*probe) (struct source *src, const uint8_t *buf, size_t len);

  /* Open path (already opened read-only as src, a local file or a URL,
   * path its name for messages; the decoder owns src from here, even on
   * failure).  Returns a struct image allocated by image_alloc(), or
   * NULL after image_error().
   */
  struct image *(*open) (const char *path, struct source *src,
                         const struct image_options *opts, unsigned depth);

  /* The run of one kind that starts at offset (< end <= size): at least
   * one byte, at most up to end, as long as the decoder can tell with
   * bounded work (callers come back for the rest).  image.c reads and
   * reports extents from it.  for_extents: the caller needs zeros and
   * holes told apart from data (a read only needs to know where the
   * bytes are, so raw can skip SEEK_DATA).  Bad metadata fails here,
   * reported with the offset.
   */
  int (*map) (struct image *img, struct image_map_state *state,
              uint64_t offset, uint64_t end, bool for_extents,
              struct image_run *run);

  /* Fill buf with count bytes at offset from an IMAGE_RUN_DECODED run
   * that map returned for offset (count <= run->length).
   */
  int (*read_decoded) (struct image *img, const struct image_run *run,
                       void *buf, size_t count, uint64_t offset);

  /* Free the format's private state (not the backing, not img itself). */
  void (*close) (struct image *img);

  /* Writes, only for writable layers (the overlay); NULL elsewhere.
   * zero makes the range read as zeros; with trim it is a discard
   * instead, which may leave parts it cannot drop as they were.  flush
   * makes every write that completed before it durable.
   */
  int (*pwrite) (struct image *img, const void *buf, size_t count,
                 uint64_t offset);
  int (*zero) (struct image *img, size_t count, uint64_t offset, bool trim);
  int (*flush) (struct image *img);
};

/* A digest of the whole disk stored in the image by the tool that made
 * it (EWF's MD5 and SHA1), for qemount info --verify.
 */
struct image_digest {
  const char *algorithm;        /* "MD5", "SHA1" */
  size_t size;                  /* bytes of value used */
  uint8_t value[64];
};

struct image {
  const struct image_ops *ops;
  char *path;                   /* for messages: as given, a URL without
                                   credentials (src->name) */
  struct source *src;           /* where the layer's bytes are (an
                                   overlay: its own file) */
  uint64_t size;                /* virtual size in bytes */
  uint32_t block_size;          /* natural granularity (cluster size) */
  bool dirty;                   /* left open/in use by its last writer */
  uint32_t version;             /* of the format (qcow2 2/3, ploop 1/2), 0 if none */
  const char *subformat;        /* the variant, in the words of the format's
                                   own tools ("dynamic", "streamOptimized"),
                                   a static string; NULL if it has none */
  const struct image_digest *digests;   /* of this layer's disk, owned */
  size_t n_digests;             /* by the decoder; 0 if it stores none */
  struct image *backing;        /* lower layer or NULL */
  void *priv;                   /* the format's state */
};

extern const struct image_ops raw_ops, qcow2_ops, ploop_ops, qsnap_ops;
extern const struct image_ops vdi_ops;
extern const struct image_ops vhd_ops;
extern const struct image_ops vhdx_ops;
extern const struct image_ops dmg_ops;
extern const struct image_ops vmdk_ops;
extern const struct image_ops ewf_ops;
const char *ewf_libewf_version (void);

/* All formats, probe order; raw is last and matches anything. */
extern const struct image_ops *const image_formats[];

/* Open path with opts; depth is 0 for the top image and counts chain
 * levels for backing files (loops and over-long chains are refused).
 */
struct image *image_open (const char *path, const struct image_options *opts);
struct image *image_open_backing (const struct image *parent,
                                  const char *backing_name,
                                  const char *format,
                                  const struct image_options *opts,
                                  unsigned depth);
/* Same, for a file named relative to the directory of parent (a local
 * file or a URL) by something that is not an image (a ploop
 * DiskDescriptor.xml).
 */
struct image *image_open_relative (const struct source *parent,
                                   const char *name, const char *format,
                                   const struct image_options *opts,
                                   unsigned depth);
/* The path or URL of a file that is part of an image but not an image
 * itself (a VMDK extent, an EWF segment), named relative to parent's
 * directory (parent: a local file or URL): allowed by the same rule as a
 * backing file (under the same-dir and no policies: in that directory,
 * a regular file; for a URL, in the same URL directory).  what names it
 * in messages ("extent file").  malloc'd, or NULL after image_error().
 */
char *image_resolve_relative (const struct source *parent,
                              const char *name,
                              const char *what,
                              const struct image_options *opts);
void image_close (struct image *img);

/* For decoders: allocate the common part (takes ownership of src) and
 * priv_size zeroed bytes of the format's state at img->priv, which
 * image_close frees after ops->close.
 */
struct image *image_alloc (const struct image_ops *ops, const char *path,
                           struct source *src, size_t priv_size);

/* For decoders: the end of an open that failed.  Closes img and returns
 * NULL with errno as the failing step left it, or EINVAL where it left
 * none (a rule of the format was broken).
 */
struct image *image_open_failed (struct image *img);

int image_pread (struct image *img, void *buf, size_t count, uint64_t offset);
int image_pwrite (struct image *img, const void *buf, size_t count,
                  uint64_t offset);
int image_zero (struct image *img, size_t count, uint64_t offset, bool trim);
int image_flush (struct image *img);
bool image_writable (const struct image *img);

/* A copy-on-write overlay on base, at 4 KiB granularity (lib/overlay.c).
 * path names a persistent overlay, created if missing and refused if it
 * was made for another base; NULL makes an ephemeral one, deleted on
 * close.  readonly opens an existing overlay to read base as changed by
 * it, never writing the file.  On success the overlay owns base (closing
 * it closes base); on failure base stays the caller's.
 */
struct image *overlay_open (struct image *base, const char *path,
                            bool readonly);
int image_extents (struct image *img, uint64_t offset, uint64_t length,
                   image_extent_fn fn, void *opaque);
/* The same for img's own layer: ranges it does not store are reported
 * as IMAGE_EXTENT_BACKING, not resolved.
 */
int image_layer_extents (struct image *img, uint64_t offset,
                         uint64_t length, image_extent_fn fn, void *opaque);

/* Call fn for the extents of the whole disk, in order, however many
 * requests that takes (layer_only: img's own layer, IMAGE_EXTENT_BACKING
 * not resolved); fn returns 0 to go on, -1 to fail.  A request that
 * makes no progress is an error.
 */
int image_walk_extents (struct image *img, bool layer_only,
                        image_extent_fn fn, void *opaque);

/* Bytes stored in this layer alone (not its backing): data and
 * allocated zero clusters, for "qemount info".
 */
int image_allocated_bytes (struct image *img, uint64_t *bytes);

/* For decoders: read an area not stored in img from its backing image,
 * zeros where there is none or past the backing's end.
 */
int image_read_backing (struct image *img, void *buf, size_t count,
                        uint64_t offset);

/* For decoders: source_read of exactly count bytes from img->src.  A
 * short read (truncated file) is an error naming the file.
 */
int image_read_file (struct image *img, void *buf, size_t count,
                     uint64_t offset, const char *what);

/* Size in bytes of the cache of decoded blocks that compressed formats
 * (qsnap, qcow2's compressed clusters) share; call before opening them.
 * 0 disables it.
 */
#define IMAGE_DEFAULT_CACHE_SIZE (256u << 20)
void image_set_cache_size (uint64_t bytes);

/* For decoders: that cache (lib/cache.h), created on first use; NULL
 * after image_error.
 */
struct block_cache;
struct block_cache *image_block_cache (void);

/* Names of the streams an image file holds (qsnap: "disk", "memory",
 * ...), the one img serves first, owned by img; *n = 0 for formats
 * without named streams.
 */
int image_list_streams (struct image *img, char ***names, size_t *n);

/* An internal snapshot (qcow2), as qemu-img snapshot -l lists it. */
struct image_snapshot {
  char *id, *name;              /* UTF-8 without control characters */
  uint64_t size;                /* virtual size */
  uint32_t date;                /* when it was taken: seconds since the
                                   epoch */
  uint64_t vm_state_size;       /* bytes of saved VM state, 0 if none */
};

/* The internal snapshots of the image file img is opened from, oldest
 * first, owned by img; *served is the index of the one img serves, -1
 * for the active state.  *n = 0 for formats without snapshots.
 */
void image_list_snapshots (struct image *img,
                           const struct image_snapshot **snapshots,
                           size_t *n, long *served);

/* pwrite(2) of exactly count bytes (retrying short writes); -1 with
 * errno set and no message: the caller knows what it was writing.
 */
int image_write_file (int fd, const void *buf, size_t count,
                      uint64_t offset);

/* open(2) of a file that is to be read as an image: a regular file or
 * a block device, else refused (errno EINVAL).  The descriptor is
 * close-on-exec.  -1 after image_error().
 */
int image_open_file (const char *path, int flags);

/* For messages: uuid as 36 characters and a NUL.  guid: the first three
 * fields are stored little-endian (Microsoft GUIDs, VirtualBox UUIDs),
 * and are shown as those tools show them; else the bytes in order.
 */
void image_uuid_string (const uint8_t uuid[16], bool guid, char str[37]);

/* Size of the open file (regular file or block device). */
int image_file_size (int fd, const char *path, uint64_t *size);

#define MAX_CHAIN_DEPTH 64

/* The libraries the decoders use, for --dump-plugin; ends with a NULL name. */
struct image_library {
  const char *name;
  const char *(*version) (void);
};
const struct image_library *image_libraries (void);

/* Error and warning reporting.  The default handler prints to stderr;
 * the plugin routes errors to nbdkit_error.
 */
void image_error (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));
void image_warning (const char *fs, ...)
  __attribute__ ((format (printf, 1, 2)));
void image_set_message_handlers (void (*error) (const char *msg),
                                 void (*warning) (const char *msg));

#endif /* QEMOUNT_IMAGE_H */
