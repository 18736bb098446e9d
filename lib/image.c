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
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#include "cache.h"
#include "decompress.h"
#include "image.h"
#include "ploop.h"
#include "source.h"
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
    { "libcurl", source_curl_version },
    { "libnbd", source_libnbd_version },
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
  return source_read (img->src, buf, count, offset, what);
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
image_alloc (const struct image_ops *ops, const char *path,
             struct source *src, size_t priv_size)
{
  struct image *img = calloc (1, sizeof *img);

  if (img == NULL || (img->path = strdup (path)) == NULL ||
      (priv_size > 0 && (img->priv = calloc (1, priv_size)) == NULL)) {
    image_error ("%s: %m", path);
    if (img)
      free (img->path);
    free (img);
    source_close (src);
    return NULL;
  }
  img->ops = ops;
  img->src = src;
  img->block_size = 512;
  return img;
}

struct image *
image_open_failed (struct image *img)
{
  int saved_errno = errno ? errno : EINVAL;

  image_close (img);
  errno = saved_errno;
  return NULL;
}

/* Opening.
 *
 * Chains are opened depth first on one thread (the plugin opens once at
 * start-up), so the files opened so far along the current chain are
 * simply a stack indexed by depth (of source_identity keys); a backing
 * file equal to any of them is a loop.  Entries stay after their open
 * returns (ploop deltas, opened one after the other, are checked against
 * those above) until the top image is open.
 */
static __thread char *open_stack[MAX_CHAIN_DEPTH + 1];

static void
clear_open_stack (void)
{
  for (unsigned i = 0; i <= MAX_CHAIN_DEPTH; ++i) {
    free (open_stack[i]);
    open_stack[i] = NULL;
  }
}

static const struct image_ops *
find_format (const char *path, struct source *src, const char *format)
{
  uint8_t buf[IMAGE_PROBE_SIZE];
  char known[256];
  size_t len, i, n;

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

  len = src->size < sizeof buf ? src->size : sizeof buf;
  if (source_read (src, buf, len, 0, "the header") == -1)
    return NULL;
  for (i = 0; image_formats[i] != NULL; ++i) {
    if (image_formats[i]->probe (src, buf, len))
      return image_formats[i];
    /* Not "not this format" but "could not look" (reported). */
    if (src->probe_failed) {
      errno = EIO;
      return NULL;
    }
  }
  abort ();                     /* raw matches anything */
}

static struct image *
open_at_depth (const char *path, const char *format,
               const struct image_options *opts, unsigned depth)
{
  const struct image_ops *ops;
  struct source *src;
  unsigned i;
  int saved;

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

  src = source_open (path);
  if (src == NULL)
    return NULL;
  free (open_stack[depth]);
  open_stack[depth] = source_identity (src);
  if (open_stack[depth] == NULL)
    goto err;
  for (i = 0; i < depth; ++i) {
    if (strcmp (open_stack[i], open_stack[depth]) == 0) {
      image_error ("%s: backing chain loop: this file is already in the "
                   "chain above it", src->name);
      errno = ELOOP;
      goto err;
    }
  }

  ops = find_format (src->name, src, format);
  if (ops == NULL)
    goto err;
  /* A snapshot is of the image named, not of its backing files. */
  if (depth == 0 && opts->snapshot != NULL && !ops->snapshots) {
    image_error ("%s: %s images have no internal snapshots", src->name,
                 ops->name);
    errno = ENXIO;
    goto err;
  }
  return ops->open (src->name, src, opts, depth);

 err:
  saved = errno;
  source_close (src);
  errno = saved;
  return NULL;
}

struct image *
image_open (const char *path, const struct image_options *opts)
{
  struct image *img = open_at_depth (path, opts->format, opts, 0);
  int saved = errno;

  clear_open_stack ();
  errno = saved;
  return img;
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
  return image_open_relative (parent->src, backing_name, format, opts,
                              depth);
}

/* The path of the local file name (relative to the directory of
 * parent, a local file, unless absolute) names, if the policy allows it
 * (same_dir: only a regular file in that directory).  NULL after
 * image_error().
 */
static char *
resolve_local (const struct source *parent, const char *name,
               const char *what, bool same_dir)
{
  char *parent_dir = NULL, *path = NULL, *real = NULL, *real_dir = NULL;
  char *allowed = NULL;

  if (name[0] != '/' || same_dir) {
    parent_dir = real_dirname (parent->location);
    if (parent_dir == NULL)
      goto out;
  }
  if (name[0] == '/')
    path = strdup (name);
  else if (asprintf (&path, "%s/%s", parent_dir, name) == -1)
    path = NULL;
  if (path == NULL) {
    image_error ("%s: %m", parent->name);
    goto out;
  }

  real = realpath (path, NULL);
  if (real == NULL) {
    image_error ("%s: %s '%s': %m", parent->name, what, name);
    goto out;
  }
  /* Kernel interfaces are never images, whatever the policy: a file
   * name must not turn a hostile image into a reader of /proc/self/...
   */
  if (strncmp (real, "/proc/", 6) == 0 || strncmp (real, "/sys/", 5) == 0) {
    image_error ("%s: %s '%s' resolves to %s, a kernel interface, "
                 "not an image", parent->name, what, name, real);
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
                   parent->name, what, name, parent_dir);
      errno = EPERM;
      goto out;
    }
    if (stat (real, &st) == -1 || !S_ISREG (st.st_mode)) {
      image_error ("%s: %s '%s' is not a regular file; use "
                   "backing=yes to follow it", parent->name, what, name);
      errno = EPERM;
      goto out;
    }
  }

  allowed = path;
  path = NULL;

 out:
  free (parent_dir);
  free (path);
  free (real);
  free (real_dir);
  return allowed;
}

/* The URL's directory: up to its path's last slash, without query or
 * fragment ("https://host/images/" for "https://host/images/a.qcow2").
 */
static char *
url_directory (const char *url)
{
  const char *authority = strstr (url, "://") + 3;
  const char *path = authority + strcspn (authority, "/?#");
  const char *end = url + strcspn (url, "?#"), *slash = NULL;
  char *dir;

  for (const char *p = path; p < end; ++p)
    if (*p == '/')
      slash = p;
  if (slash == NULL)
    return asprintf (&dir, "%.*s/", (int) (path - url), url) == -1 ?
      NULL : dir;
  return strndup (url, slash + 1 - url);
}

/* A file name in the same directory: no separator, no dot segment, and
 * in a URL nothing a server could decode into one.
 */
static bool
plain_name (const char *name, const char *forbidden)
{
  return name[0] != '\0' && name[strcspn (name, forbidden)] == '\0' &&
    strcmp (name, ".") != 0 && strcmp (name, "..") != 0;
}

/* dir followed by name, percent-encoded but for '/' and the characters
 * URLs carry as they are: a name can add no query, fragment or encoded
 * dot segment (nor a backslash a server might take for a separator).
 */
static char *
url_join (const char *dir, const char *name)
{
  static const char unreserved[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
  size_t n = strlen (dir);
  char *url = malloc (n + 3 * strlen (name) + 1), *p;

  if (url == NULL)
    return NULL;
  p = mempcpy (url, dir, n);
  for (const unsigned char *c = (const unsigned char *) name; *c; ++c)
    if (strchr (unreserved, *c) || *c == '/')
      *p++ = *c;
    else
      p += sprintf (p, "%%%02X", *c);
  *p = '\0';
  return url;
}

/* RFC 3986's remove_dot_segments on url's path, in place ("/a/b/../c"
 * is "/a/c"), so that the directory rule judges where a name leads.
 */
static void
remove_dot_segments (char *url)
{
  char *path = strstr (url, "://") + 3, *in, *out;

  path += strcspn (path, "/");
  for (in = out = path; *in == '/'; ) {
    char *seg = in + 1;
    size_t len = strcspn (seg, "/");

    in = seg + len;
    if (len == 1 && seg[0] == '.')
      continue;
    if (len == 2 && seg[0] == '.' && seg[1] == '.') {
      while (out > path && *--out != '/')
        ;
      continue;
    }
    *out++ = '/';
    memmove (out, seg, len);
    out += len;
  }
  *out = '\0';
}

/* The URL or path name (relative to the remote parent's URL directory)
 * stands for, by the same rule as for local files: under same_dir only
 * an object in that directory; never a local file or another server
 * unless the policy allows any.
 */
static char *
resolve_url (const struct source *parent, const char *name, const char *what,
             bool same_dir)
{
  char *dir = url_directory (parent->location), *url = NULL;
  size_t dir_len;

  if (dir == NULL) {
    image_error ("%s: %m", parent->name);
    return NULL;
  }
  dir_len = strlen (dir);
  if (source_is_url (name)) {
    if (same_dir && (strncmp (name, dir, dir_len) != 0 ||
                     !plain_name (name + dir_len, "/?#%\\")))
      goto outside;
    url = strdup (name);
  }
  else if (looks_like_protocol (name)) {
    image_error ("%s: %s '%s' is neither a relative name nor a URL "
                 "qemount reads", parent->name, what, name);
    errno = EPERM;
    goto out;
  }
  else if (name[0] == '/') {
    if (same_dir) {
      image_error ("%s: %s '%s' is a local path, and the image is "
                   "remote; use backing=yes to follow it",
                   parent->name, what, name);
      errno = EPERM;
      goto out;
    }
    free (dir);
    return resolve_local (parent, name, what, false);
  }
  else if (strncasecmp (parent->location, "nbd", 3) == 0) {
    image_error ("%s: %s '%s': an NBD export has no directory to look "
                 "for it in; use backing=no, or name it by URL",
                 parent->name, what, name);
    errno = EPERM;
    goto out;
  }
  else {
    url = url_join (dir, name);
    if (url == NULL)
      goto nomem;
    remove_dot_segments (url);
    if (same_dir && (strncmp (url, dir, dir_len) != 0 ||
                     !plain_name (url + dir_len, "/"))) {
      free (url);
      url = NULL;
      goto outside;
    }
  }
  if (url == NULL)
    goto nomem;
  goto out;

 nomem:
  image_error ("%s: %m", parent->name);
  goto out;

 outside:
  /* Shown from the name: without the URL's user and password. */
  free (dir);
  dir = url_directory (parent->name);
  image_error ("%s: %s '%s' is outside the image's URL directory %s; use "
               "backing=yes to follow it", parent->name, what, name,
               dir ? dir : "");
  errno = EPERM;
 out:
  free (dir);
  return url;
}

/* The path or URL of the file name (relative to parent's directory)
 * names, if the policy allows it; what says what it is, for messages.
 * NULL after image_error().
 */
static char *
resolve_relative (const struct source *parent, const char *name,
                  const char *what, bool same_dir)
{
  if (name[0] == '\0') {
    image_error ("%s: empty %s name", parent->name, what);
    errno = EINVAL;
    return NULL;
  }
  if (parent->remote)
    return resolve_url (parent, name, what, same_dir);
  /* A local overlay of a base on a server is common, but the server is
   * the image's choice, not the user's, so only under backing=yes.
   * QEMU's pseudo-protocols (nbd:unix:..., json:{...}) never.
   */
  if (source_is_url (name) && !same_dir) {
    char *url = strdup (name);

    if (url == NULL)
      image_error ("%s: %m", parent->name);
    return url;
  }
  if (looks_like_protocol (name)) {
    image_error ("%s: %s '%s' is not a local file; %s", parent->name, what,
                 name, source_is_url (name) ? "use backing=yes to follow it"
                 : "only local files and URLs under backing=yes are followed");
    errno = EPERM;
    return NULL;
  }
  return resolve_local (parent, name, what, same_dir);
}

struct image *
image_open_relative (const struct source *parent, const char *backing_name,
                     const char *format, const struct image_options *opts,
                     unsigned depth)
{
  struct image *backing = NULL;
  char *path;

  path = resolve_relative (parent, backing_name, "backing file",
                           opts->backing == BACKING_SAME_DIR);
  if (path != NULL)
    backing = open_at_depth (path, format, opts, depth);
  free (path);
  return backing;
}

char *
image_resolve_relative (const struct source *parent, const char *name,
                        const char *what, const struct image_options *opts)
{
  return resolve_relative (parent, name, what, opts->backing != BACKING_YES);
}

void
image_close (struct image *img)
{
  while (img != NULL) {
    struct image *backing = img->backing;

    if (img->ops && img->ops->close)
      img->ops->close (img);
    source_close (img->src);
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
    return source_read (r->file ? r->file : img->src, buf, r->length,
                        r->host, "data");
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
