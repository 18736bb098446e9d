/* SPDX-License-Identifier: BSD-3-Clause */
/* EWF (Expert Witness Format: EnCase's E01, also written by FTK Imager,
 * ewfacquire, SMART and linen), read-only, through libewf.
 *
 * An image is one or more segment files, NAME.E01, NAME.E02 ...
 * (then .EAA ...), each starting with the "EVF" signature and its
 * segment number, and holding a run of the disk's chunks (32 KiB by
 * default, deflate-compressed or stored, each with an Adler-32) and the
 * tables that find them; the last one holds the MD5 (and SHA1) the
 * acquiring tool computed over the whole disk.  The user names the
 * first segment and libewf_glob finds the others by name; they must be
 * in the same directory (the backing= policy's rule: backing=yes lifts
 * it).
 *
 * libewf is not safe for concurrent use of one handle, and the plugin
 * reads from many threads at once, so we keep a small pool of handles
 * on the same segment files, opened as readers need them (see
 * docs/architecture.md for the measurements that chose it over one
 * handle behind a mutex).  Each handle has libewf's own chunk cache.
 *
 * Two things libewf does not tell the caller of a read: a chunk that
 * fails its checksum (or cannot be inflated, or whose segment file is
 * missing) reads as zeros and only lands in the handle's list of
 * checksum errors, so every read looks there afterwards and fails with
 * EIO if the list covers it; and missing segment files do not fail the
 * open, so open asks libewf whether the set is whole.
 *
 * EWF2 (Ex01) and the logical evidence files (L01, Lx01: files, not a
 * disk) are recognized and refused by name: this libewf does not read
 * the former, and the latter are not disk images.
 */

#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libewf.h>

#include "bytes.h"
#include "image.h"
#include "source.h"

static const uint8_t evf1[8] = { 'E', 'V', 'F', 0x09, 0x0d, 0x0a, 0xff, 0 };
static const uint8_t lvf1[8] = { 'L', 'V', 'F', 0x09, 0x0d, 0x0a, 0xff, 0 };
static const uint8_t evf2[8] = { 'E', 'V', 'F', '2', 0x0d, 0x0a, 0x81, 0 };
static const uint8_t lef2[8] = { 'L', 'E', 'F', '2', 0x0d, 0x0a, 0x81, 0 };

/* EWF1 file header: signature, 1, segment number (u16 LE), 0. */
#define FILE_HEADER_SIZE    13

/* Handles reading at once: nbdkit runs 16 threads by default, and more
 * handles than cores buy nothing while each costs its chunk cache, its
 * copy of the chunk tables and a descriptor per segment file.  libewf
 * can keep fewer files open (set_maximum_number_of_open_handles), but
 * 20140813 gets it wrong: opening fails when the limit is above the
 * number of files, and with a limit below it reads record false checksum
 * errors.  So every handle keeps all its files open, and the pool
 * shrinks for big sets, down to one handle, to stay within about
 * MAX_FILES descriptors.
 */
#define POOL_SIZE           4
#define MAX_FILES           512

enum slot_state { SLOT_EMPTY, SLOT_IDLE, SLOT_BUSY };

struct slot {
  enum slot_state state;
  libewf_handle_t *handle;
};

struct ewf {
  char **segments;              /* paths, checked against the policy */
  int n_segments;
  uint32_t bytes_per_sector;
  pthread_mutex_t lock;         /* for slots */
  pthread_cond_t slot_freed;
  unsigned pool_size;           /* slots used, <= POOL_SIZE */
  struct slot slots[POOL_SIZE];
  struct image_digest digests[2];
};

const char *
ewf_libewf_version (void)
{
  return libewf_get_version ();
}

/* libewf's message for e into buf, and e freed.  libewf_error_sprint
 * gives only the outermost message ("libewf_handle_open: unable to open
 * handle using a file IO pool."); the backtrace's first line is the
 * cause ("... no such file: x.E02.").
 */
static const char *
ewf_message (libewf_error_t *e, char *buf, size_t size)
{
  char *nl;

  if (e == NULL || libewf_error_backtrace_sprint (e, buf, size) < 1)
    snprintf (buf, size, "unknown libewf error");
  libewf_error_free (&e);
  nl = strchr (buf, '\n');
  if (nl)
    *nl = '\0';
  return buf;
}

#define OPEN_ERROR(...) (image_error (__VA_ARGS__), errno = EINVAL, -1)

static bool
ewf_probe (struct source *src, const uint8_t *buf, size_t len)
{
  return len >= 8 &&
    (memcmp (buf, evf1, 8) == 0 || memcmp (buf, lvf1, 8) == 0 ||
     memcmp (buf, evf2, 8) == 0 || memcmp (buf, lef2, 8) == 0);
}

static void
free_segments (struct ewf *e)
{
  for (int i = 0; i < e->n_segments; ++i)
    free (e->segments[i]);
  free (e->segments);
  e->segments = NULL;
  e->n_segments = 0;
}

/* The segment files of img into e->segments: libewf_glob's list, the
 * first being img itself and the others in its directory.  A file whose
 * name libewf_glob does not take (no .E01-like extension) is read alone.
 */
static int
find_segments (struct image *img, struct ewf *e,
               const struct image_options *opts, uint16_t segment)
{
  /* Segments are the image itself, not backing files: backing=no does
   * not turn them off, but they obey the same-directory rule.
   */
  struct image_options seg_opts = *opts;
  libewf_error_t *le = NULL;
  char **names = NULL;
  struct stat st, first;
  int n = 0;

  if (seg_opts.backing == BACKING_NO)
    seg_opts.backing = BACKING_SAME_DIR;
  if (libewf_glob (img->path, strlen (img->path), LIBEWF_FORMAT_UNKNOWN,
                   &names, &n, &le) != 1) {
    libewf_error_free (&le);
    names = NULL;
    n = 0;
  }
  if (n > 0 && (stat (names[0], &first) == -1 ||
                fstat (img->src->fd, &st) == -1 ||
                first.st_dev != st.st_dev || first.st_ino != st.st_ino)) {
    image_error ("%s: this is segment %" PRIu16 " of an EWF image: name "
                 "its first segment file, %s", img->path, segment, names[0]);
    errno = EINVAL;
    goto err;
  }
  e->segments = calloc (n > 0 ? n : 1, sizeof *e->segments);
  if (e->segments == NULL) {
    image_error ("%s: %m", img->path);
    goto err;
  }
  e->segments[0] = strdup (img->path);
  if (e->segments[0] == NULL) {
    image_error ("%s: %m", img->path);
    goto err;
  }
  e->n_segments = 1;
  for (int i = 1; i < n; ++i) {
    char *copy = strdup (names[i]);

    if (copy == NULL) {
      image_error ("%s: %m", img->path);
      goto err;
    }
    e->segments[i] = image_resolve_relative (img->src, basename (copy),
                                             "segment file", &seg_opts);
    free (copy);
    if (e->segments[i] == NULL)
      goto err;
    e->n_segments++;
  }
  if (names)
    libewf_glob_free (names, n, NULL);
  return 0;

 err:
  if (names)
    libewf_glob_free (names, n, NULL);
  return -1;
}

/* A new handle on the segment files; NULL after an error saying why. */
static libewf_handle_t *
open_handle (struct image *img, struct ewf *e)
{
  libewf_handle_t *h = NULL;
  libewf_error_t *le = NULL;
  char msg[1024];

  if (libewf_handle_initialize (&h, &le) != 1 ||
      libewf_handle_open (h, e->segments, e->n_segments, LIBEWF_OPEN_READ,
                          &le) != 1) {
    image_error ("%s: libewf cannot open the EWF image: %s", img->path,
                 ewf_message (le, msg, sizeof msg));
    if (h)
      libewf_handle_free (&h, NULL);
    return NULL;
  }
  return h;
}

static void
close_handle (libewf_handle_t *h)
{
  libewf_handle_close (h, NULL);
  libewf_handle_free (&h, NULL);
}

/* A handle for one read: an idle one, else a new one while the pool has
 * room, else wait for one.
 */
static struct slot *
get_slot (struct image *img, struct ewf *e)
{
  struct slot *s;

  pthread_mutex_lock (&e->lock);
  for (;;) {
    struct slot *empty = NULL;

    for (s = e->slots; s < e->slots + e->pool_size; ++s) {
      if (s->state == SLOT_IDLE)
        break;
      if (s->state == SLOT_EMPTY && empty == NULL)
        empty = s;
    }
    if (s < e->slots + e->pool_size) {
      s->state = SLOT_BUSY;
      pthread_mutex_unlock (&e->lock);
      return s;
    }
    if (empty) {
      empty->state = SLOT_BUSY;
      pthread_mutex_unlock (&e->lock);
      empty->handle = open_handle (img, e);
      if (empty->handle)
        return empty;
      pthread_mutex_lock (&e->lock);
      empty->state = SLOT_EMPTY;
      pthread_cond_signal (&e->slot_freed);
      pthread_mutex_unlock (&e->lock);
      errno = EIO;
      return NULL;
    }
    pthread_cond_wait (&e->slot_freed, &e->lock);
  }
}

static void
put_slot (struct ewf *e, struct slot *s)
{
  pthread_mutex_lock (&e->lock);
  s->state = SLOT_IDLE;
  pthread_cond_signal (&e->slot_freed);
  pthread_mutex_unlock (&e->lock);
}

/* libewf's names for the formats, as ewfacquire -f takes them. */
static const char *
format_name (uint8_t format)
{
  switch (format) {
  case LIBEWF_FORMAT_ENCASE1: return "encase1";
  case LIBEWF_FORMAT_ENCASE2: return "encase2";
  case LIBEWF_FORMAT_ENCASE3: return "encase3";
  case LIBEWF_FORMAT_ENCASE4: return "encase4";
  case LIBEWF_FORMAT_ENCASE5: return "encase5";
  case LIBEWF_FORMAT_ENCASE6: return "encase6";
  case LIBEWF_FORMAT_ENCASE7: return "encase7";
  case LIBEWF_FORMAT_SMART: return "smart";
  case LIBEWF_FORMAT_FTK_IMAGER: return "ftk";
  case LIBEWF_FORMAT_LINEN5: return "linen5";
  case LIBEWF_FORMAT_LINEN6: return "linen6";
  case LIBEWF_FORMAT_LINEN7: return "linen7";
  case LIBEWF_FORMAT_EWF: return "ewf";
  case LIBEWF_FORMAT_EWFX: return "ewfx";
  }
  return NULL;
}

/* The digests an image may hold, in the order --verify shows them. */
static const struct {
  const char *algorithm;
  size_t size;
  int (*get) (libewf_handle_t *, uint8_t *, size_t, libewf_error_t **);
} stored[] = {
  { "MD5", 16, libewf_handle_get_md5_hash },
  { "SHA1", 20, libewf_handle_get_sha1_hash },
};

/* A digest kept only as text among the hash values (ewfx's xhash
 * section): 1 and value if it is there and well-formed hex, else 0.
 */
static int
hash_value (libewf_handle_t *h, const char *algorithm, uint8_t *value,
            size_t size, libewf_error_t **le)
{
  char text[129];
  int r;

  r = libewf_handle_get_utf8_hash_value (h, (const uint8_t *) algorithm,
                                         strlen (algorithm),
                                         (uint8_t *) text, sizeof text, le);
  if (r != 1)
    return r;
  if (strlen (text) != 2 * size)
    return 0;
  for (size_t i = 0; i < size; ++i)
    if (sscanf (&text[2 * i], "%2hhx", &value[i]) != 1 ||
        !isxdigit ((unsigned char) text[2 * i]) ||
        !isxdigit ((unsigned char) text[2 * i + 1]))
      return 0;
  return 1;
}

/* Sizes and digests from the first handle, checked. */
static int
read_media (struct image *img, struct ewf *e, libewf_handle_t *h)
{
  libewf_error_t *le = NULL;
  size64_t media_size;
  size32_t chunk_size;
  uint8_t format;
  char msg[1024];
  int r;

  if (libewf_handle_get_media_size (h, &media_size, &le) != 1 ||
      libewf_handle_get_chunk_size (h, &chunk_size, &le) != 1 ||
      libewf_handle_get_bytes_per_sector (h, &e->bytes_per_sector,
                                          &le) != 1 ||
      libewf_handle_get_format (h, &format, &le) != 1)
    return OPEN_ERROR ("%s: libewf cannot read the EWF media values: %s",
                       img->path, ewf_message (le, msg, sizeof msg));
  r = libewf_handle_segment_files_corrupted (h, &le);
  if (r != 0)
    return OPEN_ERROR ("%s: the EWF segment files are incomplete or "
                       "damaged (%d found, %s to %s): is a segment file "
                       "missing?%s%s", img->path, e->n_segments,
                       e->segments[0], e->segments[e->n_segments - 1],
                       r == -1 ? " " : "",
                       r == -1 ? ewf_message (le, msg, sizeof msg) : "");
  if (media_size > INT64_MAX)
    return OPEN_ERROR ("%s: EWF media size %" PRIu64 " is too large",
                       img->path, (uint64_t) media_size);
  if (chunk_size == 0 || e->bytes_per_sector == 0)
    return OPEN_ERROR ("%s: EWF chunk size %" PRIu32 " or sector size %"
                       PRIu32 " is zero", img->path, (uint32_t) chunk_size,
                       e->bytes_per_sector);
  img->size = media_size;
  img->block_size = chunk_size;
  img->subformat = format_name (format);

  for (size_t i = 0; i < sizeof stored / sizeof stored[0]; ++i) {
    struct image_digest *d = &e->digests[img->n_digests];

    r = stored[i].get (h, d->value, stored[i].size, &le);
    if (r == 0)
      r = hash_value (h, stored[i].algorithm, d->value, stored[i].size, &le);
    if (r == -1)
      return OPEN_ERROR ("%s: libewf cannot read the stored %s: %s",
                         img->path, stored[i].algorithm,
                         ewf_message (le, msg, sizeof msg));
    if (r == 1) {
      d->algorithm = stored[i].algorithm;
      d->size = stored[i].size;
      img->n_digests++;
    }
  }
  img->digests = e->digests;
  return 0;
}

static struct image *
ewf_open (const char *path, struct source *src,
          const struct image_options *opts,
          unsigned depth)
{
  struct image *img = image_alloc (&ewf_ops, path, src, sizeof (struct ewf));
  uint8_t header[FILE_HEADER_SIZE];
  libewf_handle_t *h;
  struct ewf *e;

  if (img == NULL)
    return NULL;
  e = img->priv;
  pthread_mutex_init (&e->lock, NULL);
  pthread_cond_init (&e->slot_freed, NULL);

  if (image_read_file (img, header, sizeof header, 0,
                       "EWF file header") == -1)
    goto err;
  if (memcmp (header, lvf1, 8) == 0 || memcmp (header, lef2, 8) == 0) {
    image_error ("%s: an EWF logical evidence file (L01/Lx01): it holds "
                 "files, not a disk image, and is not supported", path);
    errno = EINVAL;
    goto err;
  }
  if (memcmp (header, evf2, 8) == 0) {
    image_error ("%s: an EWF2 (Ex01) image, which libewf %s does not read",
                 path, libewf_get_version ());
    errno = EINVAL;
    goto err;
  }
  /* libewf opens the segment files by name itself. */
  if (src->remote) {
    image_error ("%s: EWF images must be local files", path);
    errno = EPERM;
    goto err;
  }

  if (find_segments (img, e, opts, header[9] | header[10] << 8) == -1)
    goto err;
  e->pool_size = MAX_FILES / e->n_segments;
  if (e->pool_size > POOL_SIZE)
    e->pool_size = POOL_SIZE;
  if (e->pool_size == 0)
    e->pool_size = 1;
  h = open_handle (img, e);
  if (h == NULL) {
    errno = EINVAL;
    goto err;
  }
  e->slots[0].handle = h;
  e->slots[0].state = SLOT_IDLE;
  if (read_media (img, e, h) == -1)
    goto err;
  return img;

 err:
  return image_open_failed (img);
}

/* The whole disk is one decoded run: libewf finds the chunks. */
static int
ewf_map (struct image *img, struct image_map_state *state, uint64_t offset,
         uint64_t end, bool for_extents, struct image_run *run)
{
  run->kind = IMAGE_RUN_DECODED;
  run->length = end - offset;
  return 0;
}

/* Fails if libewf has recorded a checksum error (a corrupt chunk, or one
 * it could not read) in [offset, offset + count): it read zeros there.
 */
static int
check_checksum_errors (struct image *img, struct ewf *e,
                       libewf_handle_t *h, size_t count, uint64_t offset)
{
  libewf_error_t *le = NULL;
  uint32_t n;
  char msg[1024];

  if (libewf_handle_get_number_of_checksum_errors (h, &n, &le) != 1) {
    image_error ("%s: libewf: %s", img->path,
                 ewf_message (le, msg, sizeof msg));
    errno = EIO;
    return -1;
  }
  for (uint32_t i = 0; i < n; ++i) {
    uint64_t sector, sectors, start, len;

    if (libewf_handle_get_checksum_error (h, i, &sector, &sectors,
                                          &le) != 1) {
      image_error ("%s: libewf: %s", img->path,
                   ewf_message (le, msg, sizeof msg));
      errno = EIO;
      return -1;
    }
    start = sector * e->bytes_per_sector;
    len = sectors * e->bytes_per_sector;
    if (start < offset + count && offset < start + len) {
      image_error ("%s: the EWF chunk at offset %" PRIu64 " (%" PRIu64
                   " bytes) is corrupt: it fails its checksum or cannot "
                   "be read", img->path, start, len);
      errno = EIO;
      return -1;
    }
  }
  return 0;
}

static int
ewf_read_decoded (struct image *img, const struct image_run *run, void *buf,
                  size_t count, uint64_t offset)
{
  struct ewf *e = img->priv;
  struct slot *s = get_slot (img, e);
  libewf_error_t *le = NULL;
  char *p = buf, msg[1024];
  uint64_t at = offset;
  size_t left = count;
  int r = -1;

  if (s == NULL)
    return -1;
  while (left > 0) {
    ssize_t n = libewf_handle_read_random (s->handle, p, left, at, &le);

    if (n <= 0) {
      if (n == 0)
        image_error ("%s: libewf read nothing at offset %" PRIu64,
                     img->path, at);
      else
        image_error ("%s: reading at offset %" PRIu64 ": %s", img->path, at,
                     ewf_message (le, msg, sizeof msg));
      errno = EIO;
      goto out;
    }
    p += n;
    at += n;
    left -= n;
  }
  r = check_checksum_errors (img, e, s->handle, count, offset);
 out:
  put_slot (e, s);
  return r;
}

static void
ewf_close (struct image *img)
{
  struct ewf *e = img->priv;
  int saved = errno;

  for (size_t i = 0; i < POOL_SIZE; ++i)
    if (e->slots[i].handle)
      close_handle (e->slots[i].handle);
  free_segments (e);
  pthread_cond_destroy (&e->slot_freed);
  pthread_mutex_destroy (&e->lock);
  errno = saved;
}

const struct image_ops ewf_ops = {
  .name = "ewf",
  .probe = ewf_probe,
  .open = ewf_open,
  .map = ewf_map,
  .read_decoded = ewf_read_decoded,
  .close = ewf_close,
};
