/* SPDX-License-Identifier: BSD-3-Clause */
/* qemount image layer: probing, opening chains, and the generic parts of
 * reads and extents that every format shares.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#include "cache.h"
#include "decompress.h"
#include "image.h"
#include "ploop.h"
#include "vhdx.h"

const struct image_ops *const image_formats[] = {
  &qcow2_ops,
  &ploop_ops,
  &qsnap_ops,
  &vhdx_ops,
  &ewf_ops,
  &vdi_ops,
  &vmdk_ops,
  &dmg_ops,                     /* its trailer is at the end, like vhd's */
  &vhd_ops,                     /* after those with a magic at offset 0 */
  &raw_ops,                     /* last: it matches anything */
  NULL
};

const struct image_library *
image_libraries (void)
{
  static const struct image_library libraries[] = {
    { "libxml2", ploop_descriptor_xml_version },
    { "zstd", decompress_zstd_version },
    { "libdeflate", decompress_deflate_version },
    { "lz4", decompress_lz4_version },
    { "bzip2", decompress_bzip2_version },
    { "xz", decompress_xz_version },
    { "isal", vhdx_isal_version },
    { "libewf", ewf_libewf_version },
    { NULL, NULL },
  };

  return libraries;
}

/* The cache of decoded blocks that every compressed format shares. */

static uint64_t cache_size = IMAGE_DEFAULT_CACHE_SIZE;
static struct block_cache *block_cache;
static pthread_mutex_t block_cache_lock = PTHREAD_MUTEX_INITIALIZER;

void
image_set_cache_size (uint64_t bytes)
{
  cache_size = bytes;
}

/* Created by the first decoder that asks, so the size set by the
 * plugin's configuration applies.
 */
struct block_cache *
image_block_cache (void)
{
  pthread_mutex_lock (&block_cache_lock);
  if (block_cache == NULL)
    block_cache = cache_create (cache_size);
  pthread_mutex_unlock (&block_cache_lock);
  return block_cache;
}

static void __attribute__ ((destructor))
free_block_cache (void)
{
  cache_destroy (block_cache);
  block_cache = NULL;
}

/* Messages. */

static void
default_error (const char *msg)
{
  fprintf (stderr, "qemount: error: %s\n", msg);
}

static void
default_warning (const char *msg)
{
  fprintf (stderr, "qemount: warning: %s\n", msg);
}

static void (*error_handler) (const char *) = default_error;
static void (*warning_handler) (const char *) = default_warning;

void
image_set_message_handlers (void (*error) (const char *msg),
                            void (*warning) (const char *msg))
{
  error_handler = error ? error : default_error;
  warning_handler = warning ? warning : default_warning;
}

/* Format the message and hand it to handler, keeping errno intact so
 * that callers can report first and return -1 afterwards.
 */
static void
emit (void (*handler) (const char *), const char *fs, va_list args)
{
  int saved_errno = errno;
  char msg[1024];

  vsnprintf (msg, sizeof msg, fs, args);
  handler (msg);
  errno = saved_errno;
}

void
image_error (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  emit (error_handler, fs, args);
  va_end (args);
}

void
image_warning (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  emit (warning_handler, fs, args);
  va_end (args);
}

void
image_uuid_string (const uint8_t uuid[16], bool guid, char str[37])
{
  /* Byte order of the text, by position in the stored bytes. */
  static const uint8_t in_order[16] = {
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };
  static const uint8_t guid_order[16] = {
    3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
  const uint8_t *order = guid ? guid_order : in_order;
  char *p = str;

  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      *p++ = '-';
    p += sprintf (p, "%02x", uuid[order[i]]);
  }
}

/* Files. */

/* O_NONBLOCK: a FIFO's open would wait for a writer, and its reads for
 * data, for ever; so it is opened at once, refused with the rest of
 * what is not an image, and the flag is dropped again for the reads.
 */
int
image_open_file (const char *path, int flags)
{
  struct stat st;
  int fd, fl, saved;

  fd = open (path, flags | O_NONBLOCK | O_CLOEXEC);
  if (fd == -1) {
    image_error ("%s: %m", path);
    return -1;
  }
  if (fstat (fd, &st) == -1) {
    image_error ("%s: fstat: %m", path);
    goto err;
  }
  if (!S_ISREG (st.st_mode) && !S_ISBLK (st.st_mode)) {
    image_error ("%s: not a regular file or block device", path);
    errno = EINVAL;
    goto err;
  }
  fl = fcntl (fd, F_GETFL);
  if (fl == -1 || fcntl (fd, F_SETFL, fl & ~O_NONBLOCK) == -1) {
    image_error ("%s: fcntl: %m", path);
    goto err;
  }
  return fd;

 err:
  saved = errno;
  close (fd);
  errno = saved;
  return -1;
}

int
image_file_size (int fd, const char *path, uint64_t *size)
{
  struct stat st;

  if (fstat (fd, &st) == -1) {
    image_error ("%s: fstat: %m", path);
    return -1;
  }
  if (S_ISBLK (st.st_mode)) {
    if (ioctl (fd, BLKGETSIZE64, size) == -1) {
      image_error ("%s: cannot get the size of the block device: %m", path);
      return -1;
    }
    return 0;
  }
  if (!S_ISREG (st.st_mode)) {
    image_error ("%s: not a regular file or block device", path);
    errno = EINVAL;
    return -1;
  }
  *size = st.st_size;
  return 0;
}

int
image_read_file (struct image *img, void *buf, size_t count,
                 uint64_t offset, const char *what)
{
  return image_read_fd (img->fd, img->path, buf, count, offset, what);
}

int
image_read_fd (int fd, const char *path, void *buf, size_t count,
               uint64_t offset, const char *what)
{
  char *p = buf;

  if (offset > INT64_MAX || count > INT64_MAX - offset) {
    image_error ("%s: %s at offset %" PRIu64 " is out of range",
                 path, what, offset);
    errno = EIO;
    return -1;
  }
  while (count > 0) {
    ssize_t r = pread (fd, p, count, offset);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      image_error ("%s: reading %s at offset %" PRIu64 ": %m",
                   path, what, offset);
      return -1;
    }
    if (r == 0) {
      image_error ("%s: %s at offset %" PRIu64 " is past the end of the "
                   "file (truncated image?)", path, what, offset);
      errno = EIO;
      return -1;
    }
    p += r;
    count -= r;
    offset += r;
  }
  return 0;
}

int
image_write_file (int fd, const void *buf, size_t count, uint64_t offset)
{
  const char *p = buf;

  while (count > 0) {
    ssize_t r = pwrite (fd, p, count, offset);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += r;
    count -= r;
    offset += r;
  }
  return 0;
}

struct image *
image_alloc (const struct image_ops *ops, const char *path, int fd,
             size_t priv_size)
{
  struct image *img = calloc (1, sizeof *img);

  if (img == NULL || (img->path = strdup (path)) == NULL ||
      (priv_size > 0 && (img->priv = calloc (1, priv_size)) == NULL)) {
    image_error ("%s: %m", path);
    if (img)
      free (img->path);
    free (img);
    if (fd >= 0)
      close (fd);
    return NULL;
  }
  img->ops = ops;
  img->fd = fd;
  img->block_size = 512;
  return img;
}

/* Opening.
 *
 * Chains are opened depth first on one thread (the plugin opens once at
 * start-up), so the files opened so far along the current chain are
 * simply a stack indexed by depth; a backing file equal to any of them
 * is a loop.
 */
static __thread struct { dev_t dev; ino_t ino; } open_stack[MAX_CHAIN_DEPTH + 1];

static const struct image_ops *
find_format (const char *path, int fd, const char *format)
{
  uint8_t buf[IMAGE_PROBE_SIZE];
  char known[256];
  ssize_t len;
  size_t i, n;

  if (format != NULL && strcmp (format, "auto") != 0) {
    for (i = 0; image_formats[i] != NULL; ++i)
      if (strcmp (image_formats[i]->name, format) == 0)
        return image_formats[i];
    /* Names other tools use for the same formats. */
    if (strcmp (format, "parallels") == 0)
      return &ploop_ops;
    if (strcmp (format, "vpc") == 0)
      return &vhd_ops;
    for (i = 0, n = 0; image_formats[i] != NULL && n < sizeof known; ++i)
      n += snprintf (known + n, sizeof known - n, "%s%s",
                     i ? ", " : "", image_formats[i]->name);
    image_error ("%s: unknown format '%s' (known: %s)", path, format, known);
    errno = EINVAL;
    return NULL;
  }

  do
    len = pread (fd, buf, sizeof buf, 0);
  while (len == -1 && errno == EINTR);
  if (len == -1) {
    image_error ("%s: reading the header: %m", path);
    return NULL;
  }
  for (i = 0; image_formats[i] != NULL; ++i)
    if (image_formats[i]->probe (fd, buf, len))
      return image_formats[i];
  abort ();                     /* raw matches anything */
}

static struct image *
open_at_depth (const char *path, const char *format,
               const struct image_options *opts, unsigned depth)
{
  const struct image_ops *ops;
  struct stat st;
  unsigned i;
  int fd;

  if (!opts->readonly) {
    image_error ("%s: writing is not supported: the image layer is "
                 "read-only (open it read-only, e.g. nbdkit -r)", path);
    errno = EROFS;
    return NULL;
  }
  if (depth > MAX_CHAIN_DEPTH) {
    image_error ("%s: backing chain is longer than %d images",
                 path, MAX_CHAIN_DEPTH);
    errno = ELOOP;
    return NULL;
  }

  fd = image_open_file (path, O_RDONLY);
  if (fd == -1)
    return NULL;
  if (fstat (fd, &st) == -1) {
    image_error ("%s: fstat: %m", path);
    goto err;
  }
  for (i = 0; i < depth; ++i) {
    if (open_stack[i].dev == st.st_dev && open_stack[i].ino == st.st_ino) {
      image_error ("%s: backing chain loop: this file is already in the "
                   "chain above it", path);
      errno = ELOOP;
      goto err;
    }
  }
  open_stack[depth].dev = st.st_dev;
  open_stack[depth].ino = st.st_ino;

  ops = find_format (path, fd, format);
  if (ops == NULL)
    goto err;
  /* A snapshot is of the image named, not of its backing files. */
  if (depth == 0 && opts->snapshot != NULL && !ops->snapshots) {
    image_error ("%s: %s images have no internal snapshots", path,
                 ops->name);
    errno = ENXIO;
    goto err;
  }
  return ops->open (path, fd, opts, depth);

 err:
  close (fd);
  return NULL;
}

struct image *
image_open (const char *path, const struct image_options *opts)
{
  return open_at_depth (path, opts->format, opts, 0);
}

/* Backing names that are not plain local paths (QEMU accepts
 * "nbd:...", "json:{...}", "https://..." and more) are never followed.
 */
static bool
looks_like_protocol (const char *name)
{
  size_t prefix = strcspn (name, ":/");

  return name[prefix] == ':';
}

/* The directory holding path, resolved, or NULL after an error. */
static char *
real_dirname (const char *path)
{
  char *copy = strdup (path);
  char *dir;

  if (copy == NULL) {
    image_error ("%s: %m", path);
    return NULL;
  }
  dir = realpath (dirname (copy), NULL);
  if (dir == NULL)
    image_error ("%s: cannot resolve its directory: %m", path);
  free (copy);
  return dir;
}

struct image *
image_open_backing (const struct image *parent, const char *backing_name,
                    const char *format, const struct image_options *opts,
                    unsigned depth)
{
  return image_open_relative (parent->path, backing_name, format, opts,
                              depth);
}

/* The path of the file name (relative to parent_path's directory)
 * names, if the policy allows it (same_dir: only a regular file in that
 * directory); what says what it is, for messages.  NULL after
 * image_error().
 */
static char *
resolve_relative (const char *parent_path, const char *name,
                  const char *what, bool same_dir)
{
  char *parent_dir = NULL, *path = NULL, *real = NULL, *real_dir = NULL;
  char *allowed = NULL;

  if (name[0] == '\0') {
    image_error ("%s: empty %s name", parent_path, what);
    errno = EINVAL;
    return NULL;
  }
  if (looks_like_protocol (name)) {
    image_error ("%s: %s '%s' is not a local file; only local "
                 "files are followed", parent_path, what, name);
    errno = EPERM;
    return NULL;
  }

  parent_dir = real_dirname (parent_path);
  if (parent_dir == NULL)
    goto out;
  if (name[0] == '/')
    path = strdup (name);
  else if (asprintf (&path, "%s/%s", parent_dir, name) == -1)
    path = NULL;
  if (path == NULL) {
    image_error ("%s: %m", parent_path);
    goto out;
  }

  real = realpath (path, NULL);
  if (real == NULL) {
    image_error ("%s: %s '%s': %m", parent_path, what, name);
    goto out;
  }
  /* Kernel interfaces are never images, whatever the policy: a file
   * name must not turn a hostile image into a reader of /proc/self/...
   */
  if (strncmp (real, "/proc/", 6) == 0 || strncmp (real, "/sys/", 5) == 0) {
    image_error ("%s: %s '%s' resolves to %s, a kernel interface, "
                 "not an image", parent_path, what, name, real);
    errno = EPERM;
    goto out;
  }

  if (same_dir) {
    struct stat st;

    real_dir = real_dirname (real);
    if (real_dir == NULL)
      goto out;
    if (strcmp (real_dir, parent_dir) != 0) {
      image_error ("%s: %s '%s' is outside the image's directory "
                   "%s; use backing=yes to follow it",
                   parent_path, what, name, parent_dir);
      errno = EPERM;
      goto out;
    }
    if (stat (real, &st) == -1 || !S_ISREG (st.st_mode)) {
      image_error ("%s: %s '%s' is not a regular file; use "
                   "backing=yes to follow it", parent_path, what, name);
      errno = EPERM;
      goto out;
    }
  }

  allowed = path;
  path = NULL;

 out:
  free (parent_dir);
  free (real);
  free (real_dir);
  return allowed;
}

struct image *
image_open_relative (const char *parent_path, const char *backing_name,
                     const char *format, const struct image_options *opts,
                     unsigned depth)
{
  struct image *backing = NULL;
  char *path;

  path = resolve_relative (parent_path, backing_name, "backing file",
                           opts->backing == BACKING_SAME_DIR);
  if (path != NULL)
    backing = open_at_depth (path, format, opts, depth);
  free (path);
  return backing;
}

char *
image_resolve_relative (const char *parent_path, const char *name,
                        const char *what, const struct image_options *opts)
{
  return resolve_relative (parent_path, name, what,
                           opts->backing != BACKING_YES);
}

void
image_close (struct image *img)
{
  while (img != NULL) {
    struct image *backing = img->backing;

    if (img->ops && img->ops->close)
      img->ops->close (img);
    if (img->fd >= 0)
      close (img->fd);
    free (img->priv);
    free (img->path);
    free (img);
    img = backing;
  }
}

/* Reading. */

/* The next run of img's own layer at offset (< end), checked: a decoder
 * that makes no progress or overshoots would make the loops below spin
 * or overrun.
 */
static int
next_run (struct image *img, struct image_map_state *state, uint64_t offset,
          uint64_t end, bool for_extents, struct image_run *run)
{
  if (img->ops->map (img, state, offset, end, for_extents, run) == -1)
    return -1;
  if (run->length == 0 || run->length > end - offset) {
    image_error ("%s: internal error: the %s map returned a run of %" PRIu64
                 " bytes at offset %" PRIu64, img->path, img->ops->name,
                 run->length, offset);
    errno = EIO;
    return -1;
  }
  return 0;
}

/* Whether run r, which follows run p on the disk, is read in the same
 * step: data stored right after p's in the same file, or more zeros or
 * backing.
 */
static bool
runs_merge (const struct image_run *p, const struct image_run *r)
{
  if (p->kind != r->kind)
    return false;
  switch (r->kind) {
  case IMAGE_RUN_DATA:
    return p->file == r->file && p->host + p->length == r->host;
  case IMAGE_RUN_ZERO:
  case IMAGE_RUN_BACKING:
    return true;
  case IMAGE_RUN_DECODED:
    break;
  }
  return false;
}

/* Fill buf (r->length bytes at offset) as run r says. */
static int
read_run (struct image *img, const struct image_run *r, char *buf,
          uint64_t offset)
{
  switch (r->kind) {
  case IMAGE_RUN_DATA:
    if (r->file != NULL)
      return image_read_fd (r->file->fd, r->file->path, buf, r->length,
                            r->host, "data");
    return image_read_file (img, buf, r->length, r->host, "data");
  case IMAGE_RUN_ZERO:
    memset (buf, 0, r->length);
    return 0;
  case IMAGE_RUN_BACKING:
    return image_read_backing (img, buf, r->length, offset);
  case IMAGE_RUN_DECODED:
    return img->ops->read_decoded (img, r, buf, r->length, offset);
  }
  abort ();
}

/* Runs are merged while one operation can serve them, so an image laid
 * out in order is read with one pread, however many clusters it spans.
 */
static int
read_layer (struct image *img, void *buf, size_t count, uint64_t offset)
{
  const uint64_t end = offset + count;
  struct image_map_state state;
  struct image_run pending = { .length = 0 };
  uint64_t pending_offset = offset;
  char *out = buf, *pending_buf = buf;

  memset (&state, 0, sizeof state);
  while (offset < end) {
    struct image_run r;

    if (next_run (img, &state, offset, end, false, &r) == -1)
      return -1;
    if (pending.length > 0 && runs_merge (&pending, &r))
      pending.length += r.length;
    else {
      if (pending.length > 0 &&
          read_run (img, &pending, pending_buf, pending_offset) == -1)
        return -1;
      pending = r;
      pending_offset = offset;
      pending_buf = out;
    }
    offset += r.length;
    out += r.length;
  }
  return read_run (img, &pending, pending_buf, pending_offset);
}


int
image_pread (struct image *img, void *buf, size_t count, uint64_t offset)
{
  if (offset > img->size || count > img->size - offset) {
    image_error ("%s: read of %zu bytes at offset %" PRIu64
                 " is beyond the end of the disk (%" PRIu64 " bytes)",
                 img->path, count, offset, img->size);
    errno = EINVAL;
    return -1;
  }
  if (count == 0)
    return 0;
  return read_layer (img, buf, count, offset);
}

/* Checks shared by the write calls: a writable layer, inside the disk. */
static int
check_write (struct image *img, size_t count, uint64_t offset)
{
  if (!image_writable (img)) {
    image_error ("%s: the image is read-only (writes go to an overlay)",
                 img->path);
    errno = EROFS;
    return -1;
  }
  if (offset > img->size || count > img->size - offset) {
    image_error ("%s: write of %zu bytes at offset %" PRIu64
                 " is beyond the end of the disk (%" PRIu64 " bytes)",
                 img->path, count, offset, img->size);
    errno = ENOSPC;
    return -1;
  }
  return 0;
}

bool
image_writable (const struct image *img)
{
  return img->ops->pwrite != NULL;
}

int
image_pwrite (struct image *img, const void *buf, size_t count,
              uint64_t offset)
{
  if (check_write (img, count, offset) == -1)
    return -1;
  return count == 0 ? 0 : img->ops->pwrite (img, buf, count, offset);
}

int
image_zero (struct image *img, size_t count, uint64_t offset, bool trim)
{
  if (check_write (img, count, offset) == -1)
    return -1;
  return count == 0 ? 0 : img->ops->zero (img, count, offset, trim);
}

int
image_flush (struct image *img)
{
  if (check_write (img, 0, 0) == -1)
    return -1;
  return img->ops->flush (img);
}

int
image_read_backing (struct image *img, void *buf, size_t count,
                    uint64_t offset)
{
  struct image *backing = img->backing;
  size_t n = 0;

  if (backing != NULL && offset < backing->size) {
    n = count;
    if (n > backing->size - offset)
      n = backing->size - offset;
    if (image_pread (backing, buf, n, offset) == -1)
      return -1;
  }
  memset ((char *) buf + n, 0, count - n);
  return 0;
}

/* Extents.
 *
 * Decoders report their own layer only; ranges marked
 * IMAGE_EXTENT_BACKING are resolved here against the backing image.
 * Because any layer may report fewer extents than asked, we track how
 * far the caller has been told, and stop as soon as a lower layer stops
 * short: extents must stay contiguous.
 */
struct extents_ctx {
  struct image *img;
  image_extent_fn fn;
  void *opaque;
  uint64_t reached;             /* caller has been told up to here */
};

static int extents_layer (struct image *img, uint64_t offset,
                          uint64_t length, image_extent_fn fn, void *opaque,
                          uint64_t *reached);

static int
resolve_extent (void *opaque, uint64_t offset, uint64_t length,
                uint32_t flags)
{
  struct extents_ctx *ctx = opaque;
  struct image *backing = ctx->img->backing;
  uint64_t end = offset + length;
  int r;

  if (!(flags & IMAGE_EXTENT_BACKING)) {
    r = ctx->fn (ctx->opaque, offset, length, flags);
    if (r == 0)
      ctx->reached = end;
    return r;
  }

  if (backing != NULL && offset < backing->size) {
    uint64_t n = length;

    if (n > backing->size - offset)
      n = backing->size - offset;
    r = extents_layer (backing, offset, n, ctx->fn, ctx->opaque,
                       &ctx->reached);
    if (r != 0 || ctx->reached < offset + n)
      return r == -1 ? -1 : 1;
    offset += n;
  }
  if (offset < end) {
    r = ctx->fn (ctx->opaque, offset, end - offset,
                 IMAGE_EXTENT_HOLE | IMAGE_EXTENT_ZERO);
    if (r == 0)
      ctx->reached = end;
    return r;
  }
  return 0;
}

static int
extents_layer (struct image *img, uint64_t offset, uint64_t length,
               image_extent_fn fn, void *opaque, uint64_t *reached)
{
  struct extents_ctx ctx = {
    .img = img, .fn = fn, .opaque = opaque, .reached = *reached,
  };
  int r;

  r = image_layer_extents (img, offset, length, resolve_extent, &ctx);
  *reached = ctx.reached;
  return r == -1 ? -1 : 0;
}

/* image_walk_extents: how far fn has been told, for the progress check. */
struct walk {
  image_extent_fn fn;
  void *opaque;
  uint64_t reached;
};

static int
walk_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  struct walk *w = opaque;
  int r = w->fn (w->opaque, offset, length, flags);

  if (r == 0)
    w->reached = offset + length;
  return r;
}

int
image_walk_extents (struct image *img, bool layer_only, image_extent_fn fn,
                    void *opaque)
{
  struct walk w = { .fn = fn, .opaque = opaque };

  while (w.reached < img->size) {
    uint64_t before = w.reached;
    int r = layer_only ?
      image_layer_extents (img, before, img->size - before, walk_extent, &w) :
      image_extents (img, before, img->size - before, walk_extent, &w);

    if (r == -1)
      return -1;
    if (w.reached <= before) {
      image_error ("%s: extents made no progress at offset %" PRIu64,
                   img->path, before);
      errno = EIO;
      return -1;
    }
  }
  return 0;
}

static int
count_allocated (void *opaque, uint64_t offset, uint64_t length,
                 uint32_t flags)
{
  uint64_t *allocated = opaque;

  if (!(flags & (IMAGE_EXTENT_HOLE | IMAGE_EXTENT_BACKING)))
    *allocated += length;
  return 0;
}

int
image_allocated_bytes (struct image *img, uint64_t *bytes)
{
  *bytes = 0;
  return image_walk_extents (img, true, count_allocated, bytes);
}

/* The extent flags of a run of one layer. */
static uint32_t
run_flags (const struct image_run *r)
{
  switch (r->kind) {
  case IMAGE_RUN_ZERO:
    return IMAGE_EXTENT_ZERO | (r->hole ? IMAGE_EXTENT_HOLE : 0);
  case IMAGE_RUN_BACKING:
    return IMAGE_EXTENT_BACKING;
  case IMAGE_RUN_DATA:
  case IMAGE_RUN_DECODED:
    break;
  }
  return 0;
}

/* One extents request does at most this many map calls (each of bounded
 * work): callers accept fewer extents than they asked for and come back
 * for more, and a request must not turn into a scan of a huge image.
 */
#define EXTENTS_MAX_RUNS 1024

int
image_layer_extents (struct image *img, uint64_t offset, uint64_t length,
                     image_extent_fn fn, void *opaque)
{
  const uint64_t end = offset + length;
  struct image_map_state state;
  uint64_t start = offset, len = 0;
  uint32_t flags = 0;
  unsigned runs = 0;
  int r;

  memset (&state, 0, sizeof state);
  while (offset < end && runs++ < EXTENTS_MAX_RUNS) {
    struct image_run run;
    uint32_t f;

    if (next_run (img, &state, offset, end, true, &run) == -1)
      return -1;
    f = run_flags (&run);
    if (len > 0 && f != flags) {
      r = fn (opaque, start, len, flags);
      if (r != 0)
        return r == -1 ? -1 : 0;
      start = offset;
      len = 0;
    }
    flags = f;
    len += run.length;
    offset += run.length;
  }
  r = fn (opaque, start, len, flags);
  return r == -1 ? -1 : 0;
}

int
image_extents (struct image *img, uint64_t offset, uint64_t length,
               image_extent_fn fn, void *opaque)
{
  uint64_t reached = offset;

  if (offset > img->size || length > img->size - offset) {
    image_error ("%s: extents request at offset %" PRIu64
                 " is beyond the end of the disk", img->path, offset);
    errno = EINVAL;
    return -1;
  }
  if (length == 0)
    return 0;
  return extents_layer (img, offset, length, fn, opaque, &reached);
}
