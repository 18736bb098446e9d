/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit qemount plugin: serves any image the image layer decodes
 * (image_formats in lib/image.c) as plain blocks, writable through a
 * copy-on-write overlay.
 *
 * Only nbdkit glue lives here; the decoders are in lib/.  The image is
 * opened once, before the first connection, and shared by all of them:
 * the decoders and the overlay are thread-safe, so the thread model is
 * PARALLEL.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "image.h"
#include "source.h"

static char *filename;
static const char *shown;       /* the image's name in messages: a URL
                                   without credentials; the top image's */
static char *format;
static char *overlay;
static char *snapshot;
static char *cache_dir;
static bool overlay_readonly;
static enum backing_policy backing = BACKING_SAME_DIR;
static struct source_settings remote;

/* One export per stream of the image (qsnap files may hold "disk",
 * "memory", ...; other formats have one, unnamed).  The first is the
 * default export.  Each holds the base image, or the overlay on it once
 * the export is writable (img->backing is then the base).  Connections
 * keep the pointer they got at open as their handle.
 */
struct export {
  char *name;
  struct image *img;
};
static struct export *exports;
static size_t n_exports;
static pthread_mutex_t exports_lock = PTHREAD_MUTEX_INITIALIZER;

/* NBD allows preferred block sizes from 512 bytes to 32 MiB, but
 * clients size their requests by it (nbdcopy does), and nbdkit gives
 * each request a buffer of its own: one of 32 MiB is a fresh mapping
 * faulted in for every read (glibc maps chunks that large), which made
 * sequential reads of VHDX images with 32 MiB blocks (Hyper-V's
 * default) three times slower than with 2 MiB.  2 MiB is qcow2's
 * largest cluster.
 */
#define PREFERRED_MIN 512
#define PREFERRED_MAX (2u << 20)

static void
report_error (const char *msg)
{
  nbdkit_error ("%s", msg);
}

/* nbdkit has no warning level; errors would be misleading, debug output
 * is hidden by default, so warnings go to stderr like nbdkit's own.
 */
static void
report_warning (const char *msg)
{
  fprintf (stderr, "nbdkit: qemount: warning: %s\n", msg);
}

static void
qemount_load (void)
{
  image_set_message_handlers (report_error, report_warning);
}

static void
qemount_unload (void)
{
  for (size_t i = 0; i < n_exports; ++i) {
    image_close (exports[i].img);
    free (exports[i].name);
  }
  free (exports);
  free (filename);
  free (format);
  free (overlay);
  free (snapshot);
  free (cache_dir);
}

/* file=+FILENAME: the image's location is the first line of FILENAME,
 * as nbdkit takes secret parameters, so that a URL with a password in
 * it stays out of the process list.  NULL after a message.
 */
static char *
read_location (const char *path)
{
  FILE *fp = fopen (path, "re");
  char *line = NULL;
  size_t len = 0;
  ssize_t n;
  int saved;
  bool failed;

  if (fp == NULL) {
    nbdkit_error ("file=+%s: %m", path);
    return NULL;
  }
  n = getline (&line, &len, fp);
  saved = errno;
  failed = n == -1 && ferror (fp);
  fclose (fp);
  if (failed) {
    errno = saved;
    nbdkit_error ("file=+%s: %m", path);
    free (line);
    return NULL;
  }
  while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
    line[--n] = '\0';
  if (n <= 0) {
    nbdkit_error ("file=+%s: empty: no image location in it", path);
    free (line);
    return NULL;
  }
  return line;
}

/* Parse one key=value from the command line. */
static int
qemount_config (const char *key, const char *value)
{
  if (strcmp (key, "file") == 0) {
    char *location = NULL;

    if (value[0] == '+' &&
        (value = location = read_location (value + 1)) == NULL)
      return -1;
    free (filename);
    /* A URL is not resolved here: nbdkit may chdir later, a URL does
     * not care.
     */
    if (source_is_url (value)) {
      filename = strdup (value);
      if (filename == NULL)
        nbdkit_error ("strdup: %m");
    }
    else
      filename = nbdkit_realpath (value);
    free (location);
    if (filename == NULL)
      return -1;
  }
  else if (strcmp (key, "format") == 0) {
    free (format);
    format = strdup (value);
    if (format == NULL) {
      nbdkit_error ("strdup: %m");
      return -1;
    }
  }
  else if (strcmp (key, "snapshot") == 0) {
    free (snapshot);
    snapshot = strdup (value);
    if (snapshot == NULL) {
      nbdkit_error ("strdup: %m");
      return -1;
    }
  }
  else if (strcmp (key, "cache") == 0) {
    int64_t bytes = nbdkit_parse_size (value);
    if (bytes == -1)
      return -1;
    image_set_cache_size (bytes);
  }
  else if (strcmp (key, "timeout") == 0 ||
           strcmp (key, "connections") == 0) {
    unsigned n;

    if (nbdkit_parse_unsigned (key, value, &n) == -1)
      return -1;
    if (n == 0) {
      nbdkit_error ("%s=0: must be at least 1", key);
      return -1;
    }
    if (key[0] == 't')
      remote.timeout = n;
    else
      remote.connections = n;
  }
  else if (strcmp (key, "cache-dir") == 0) {
    free (cache_dir);
    cache_dir = nbdkit_absolute_path (value);
    if (cache_dir == NULL)
      return -1;
  }
  else if (strcmp (key, "overlay") == 0) {
    free (overlay);
    overlay = nbdkit_absolute_path (value);
    if (overlay == NULL)
      return -1;
  }
  else if (strcmp (key, "overlay-readonly") == 0) {
    int r = nbdkit_parse_bool (value);
    if (r == -1)
      return -1;
    overlay_readonly = r;
  }
  else if (strcmp (key, "backing") == 0) {
    if (strcmp (value, "samedir") == 0)
      backing = BACKING_SAME_DIR;
    else if (strcmp (value, "yes") == 0)
      backing = BACKING_YES;
    else if (strcmp (value, "no") == 0)
      backing = BACKING_NO;
    else {
      nbdkit_error ("backing=%s: must be yes, no or samedir", value);
      return -1;
    }
  }
  else {
    nbdkit_error ("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

static int
qemount_config_complete (void)
{
  if (filename == NULL) {
    nbdkit_error ("you must supply the file=<IMAGE> parameter");
    return -1;
  }
  if (overlay_readonly && overlay == NULL) {
    nbdkit_error ("overlay-readonly=true needs overlay=<PATH>");
    return -1;
  }
  if (cache_dir && source_cache_dir_prepare (cache_dir) == -1)
    return -1;
  remote.cache_dir = cache_dir;
  source_configure (&remote);
  return 0;
}

#define qemount_config_help \
  "file=<IMAGE>      (required) Image file or block device, or the URL\n" \
  "                  of one: http://, https://, s3://, nbd://, nbds://,\n" \
  "                  nbd+unix://.  file=+FILENAME reads it from the\n" \
  "                  first line of FILENAME (./+NAME for a file whose\n" \
  "                  name begins with +).\n" \
  "format=auto|raw|qcow2|ploop|qsnap|vdi|vhd|vhdx|vmdk|dmg|ewf\n" \
  "                  Format (default: probed from the magic bytes).\n" \
  "backing=yes|no|samedir\n" \
  "                  Follow backing files / lower deltas anywhere, never,\n" \
  "                  or only in the image's directory (default).\n" \
  "snapshot=<NAME>   Serve this internal snapshot (qcow2: by id or\n" \
  "                  name), read-only unless overlay= is given.\n" \
  "overlay=<PATH>    Writes go to this copy-on-write overlay (created if\n" \
  "                  missing); without it a writable export gets a\n" \
  "                  temporary one, deleted on exit.  The image itself\n" \
  "                  is never written.\n" \
  "overlay-readonly=true\n" \
  "                  Read the image as changed by the overlay, which\n" \
  "                  must exist and is never written; writes then go\n" \
  "                  to a temporary overlay on top of it.\n" \
  "cache=<SIZE>      Cache of decompressed qsnap blocks, qcow2\n" \
  "                  clusters and blocks of remote images (default\n" \
  "                  256M, 0 disables it).\n" \
  "timeout=<SECONDS> Remote images: a request that makes no progress\n" \
  "                  for this long fails (default 30).\n" \
  "connections=<N>   Remote images: at most N requests at once per\n" \
  "                  file (default 4).\n" \
  "cache-dir=<DIR>   Remote images: keep fetched blocks in DIR, for\n" \
  "                  later runs (and other processes) to read there."

/* Open the image (every stream of it) before serving, so that a bad
 * image stops nbdkit at start-up with the reason instead of failing each
 * connection.
 */
static int
qemount_get_ready (void)
{
  struct image_options opts = {
    .format = format, .backing = backing, .readonly = true,
    .snapshot = snapshot,
  };
  struct image *first;
  char **names;
  size_t n;

  first = image_open (filename, &opts);
  if (first == NULL)
    return -1;
  shown = first->path;
  image_list_streams (first, &names, &n);
  exports = calloc (n ? n : 1, sizeof *exports);
  if (exports == NULL) {
    nbdkit_error ("calloc: %m");
    image_close (first);
    return -1;
  }
  n_exports = 1;
  exports[0].img = first;
  exports[0].name = strdup (n ? names[0] : "");
  if (exports[0].name == NULL) {
    nbdkit_error ("strdup: %m");
    return -1;
  }
  for (size_t i = 1; i < n; ++i) {
    opts.stream = names[i];
    n_exports++;                /* unload frees what was opened */
    exports[i].name = strdup (names[i]);
    exports[i].img = image_open (filename, &opts);
    if (exports[i].name == NULL || exports[i].img == NULL)
      return -1;
  }

  /* overlay= makes the default export writable (or, read-only, shows
   * what the overlay holds).
   */
  if (overlay) {
    struct image *top = overlay_open (first, overlay, overlay_readonly);
    if (top == NULL)
      return -1;
    exports[0].img = top;
  }
  nbdkit_debug ("%s: format %s, %" PRIu64 " bytes, block size %" PRIu32
                ", %zu export(s)", shown, first->ops->name, first->size,
                first->block_size, n_exports);
  return 0;
}

/* The streams, by name, for nbdinfo --list. */
static int
qemount_list_exports (int readonly, int is_tls,
                      struct nbdkit_exports *list)
{
  for (size_t i = 0; i < n_exports; ++i)
    if (nbdkit_add_export (list, exports[i].name, NULL) == -1)
      return -1;
  return 0;
}

/* The empty export name means the first stream ("disk" if there is one). */
static const char *
qemount_default_export (int readonly, int is_tls)
{
  return exports[0].name;
}

static void
qemount_dump_plugin (void)
{
  printf ("qemount_formats=");
  for (size_t i = 0; image_formats[i] != NULL; ++i)
    printf ("%s%s", i ? "," : "", image_formats[i]->name);
  printf ("\n");
  for (const struct image_library *lib = image_libraries (); lib->name;
       ++lib)
    printf ("qemount_%s_version=%s\n", lib->name, lib->version ());
}

/* The handle is the image this connection reads and writes.  The first
 * writable connection to an export without overlay= puts an ephemeral
 * overlay on it, which later connections to that export share; not on
 * a snapshot, which is served read-only (writes that would vanish at
 * exit are more likely a mistake than meant).
 */
static void *
qemount_open (int readonly)
{
  const char *name = nbdkit_export_name ();
  struct export *e = NULL;
  struct image *img;

  if (name == NULL || *name == '\0')
    e = &exports[0];
  for (size_t i = 0; e == NULL && i < n_exports; ++i)
    if (strcmp (exports[i].name, name) == 0)
      e = &exports[i];
  if (e == NULL) {
    nbdkit_error ("%s: no export (stream) called '%s'", shown, name);
    errno = ENOENT;
    return NULL;
  }

  pthread_mutex_lock (&exports_lock);
  if (!readonly && !image_writable (e->img) && snapshot == NULL) {
    struct image *ephemeral = overlay_open (e->img, NULL, false);
    if (ephemeral)
      e->img = ephemeral;
  }
  img = e->img;
  pthread_mutex_unlock (&exports_lock);
  if (!readonly && !image_writable (img) && snapshot == NULL)
    return NULL;                /* overlay_open reported why */
  return img;
}

static int64_t
qemount_get_size (void *handle)
{
  struct image *img = handle;

  return img->size;
}

static int
qemount_can_write (void *handle)
{
  return image_writable (handle);
}

static int
qemount_can_flush (void *handle)
{
  return image_writable (handle);
}

static int
qemount_can_trim (void *handle)
{
  return image_writable (handle);
}

static int
qemount_can_zero (void *handle)
{
  return image_writable (handle);
}

static int
qemount_can_fua (void *handle)
{
  return image_writable (handle) ? NBDKIT_FUA_EMULATE : NBDKIT_FUA_NONE;
}

/* Every connection shares one image, and a flush makes every completed
 * write durable, whichever connection made it.
 */
static int
qemount_can_multi_conn (void *handle)
{
  return 1;
}

static int
qemount_can_extents (void *handle)
{
  return 1;
}

/* Any byte range can be read; whole clusters are the efficient unit. */
static int
qemount_block_size (void *handle, uint32_t *minimum, uint32_t *preferred,
                    uint32_t *maximum)
{
  struct image *img = handle;
  uint32_t p = img->block_size;

  if (p < PREFERRED_MIN || (p & (p - 1)) != 0)
    p = PREFERRED_MIN;
  if (p > PREFERRED_MAX)
    p = PREFERRED_MAX;
  *minimum = 1;
  *preferred = p;
  *maximum = 0xffffffff;
  return 0;
}

static int
qemount_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
               uint32_t flags)
{
  return image_pread (handle, buf, count, offset);
}

static int
qemount_pwrite (void *handle, const void *buf, uint32_t count,
                uint64_t offset, uint32_t flags)
{
  return image_pwrite (handle, buf, count, offset);
}

static int
qemount_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return image_zero (handle, count, offset, false);
}

/* Trimmed whole blocks read back as zeros; the rest is left as it was
 * (trim is advisory).
 */
static int
qemount_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return image_zero (handle, count, offset, true);
}

static int
qemount_flush (void *handle, uint32_t flags)
{
  return image_flush (handle);
}

struct extents_request {
  struct nbdkit_extents *extents;
  bool req_one;
};

static int
add_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  struct extents_request *req = opaque;
  uint32_t type = 0;

  if (flags & IMAGE_EXTENT_HOLE)
    type |= NBDKIT_EXTENT_HOLE;
  if (flags & IMAGE_EXTENT_ZERO)
    type |= NBDKIT_EXTENT_ZERO;
  if (nbdkit_add_extent (req->extents, offset, length, type) == -1)
    return -1;
  return req->req_one;
}

/* Holes and zeros from the format's own map. */
static int
qemount_extents (void *handle, uint32_t count, uint64_t offset,
                 uint32_t flags, struct nbdkit_extents *extents)
{
  struct extents_request req = {
    .extents = extents, .req_one = flags & NBDKIT_FLAG_REQ_ONE,
  };

  return image_extents (handle, offset, count, add_extent, &req);
}

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static struct nbdkit_plugin plugin = {
  .name              = "qemount",
  .longname          = "qemount image decoder (raw, qcow2, ploop, qsnap, "
                       "vdi, vhd, vhdx, vmdk, dmg, ewf)",
  .version           = PACKAGE_VERSION,
  .load              = qemount_load,
  .unload            = qemount_unload,
  .config            = qemount_config,
  .config_complete   = qemount_config_complete,
  .config_help       = qemount_config_help,
  .magic_config_key  = "file",
  .get_ready         = qemount_get_ready,
  .dump_plugin       = qemount_dump_plugin,
  .list_exports      = qemount_list_exports,
  .default_export    = qemount_default_export,
  .open              = qemount_open,
  .get_size          = qemount_get_size,
  .can_write         = qemount_can_write,
  .can_flush         = qemount_can_flush,
  .can_trim          = qemount_can_trim,
  .can_zero          = qemount_can_zero,
  .can_fua           = qemount_can_fua,
  .can_multi_conn    = qemount_can_multi_conn,
  .can_extents       = qemount_can_extents,
  .block_size        = qemount_block_size,
  .pread             = qemount_pread,
  .pwrite            = qemount_pwrite,
  .zero              = qemount_zero,
  .trim              = qemount_trim,
  .flush             = qemount_flush,
  .extents           = qemount_extents,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN (plugin)
