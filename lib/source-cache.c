/* SPDX-License-Identifier: BSD-3-Clause */
/* The persistent cache of remote blocks (cache-dir=): a block fetched
 * once is kept in a file, so that the next process reading the same
 * object reads it there instead of fetching it again.
 *
 * An object's blocks live in DIR/ID/, ID the SHA-256 of what pins the
 * object's content at open (its URL without user, password or query,
 * its ETag or Last-Modified, its size): a replaced object has another
 * ID and never meets the old blocks.  Credentials never go into ID or
 * into the files, which hold only the block and its header.
 *
 * Each block is one file, KEY (the block's number, in hex): a header
 * (magic, number, size, a 128-bit XXH3 checksum of those and the data)
 * then the data.  It is written to a temporary file in the same
 * directory and renamed into place, so that a reader (in this process
 * or another one filling the same cache) opens either nothing or a
 * whole file, never one being written; two writers of a block each
 * rename a whole copy.  No flock: nothing waits for anyone, and a
 * process killed halfway leaves only a temporary file, which the next
 * open of the object removes once it is ten minutes old.  Nothing is
 * fsync'd: after a crash a block may be torn or empty, and the checksum
 * (checked on every read) turns that, like any corruption, into a miss:
 * the block is fetched again and rewritten, never served.
 *
 * There is no size bound: the cache grows by every block read of every
 * version of every object until the user deletes files, which is safe
 * at any time, even while it is in use (a missing block is a miss).
 */

#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nettle/sha2.h>
#include <xxhash.h>

#include "bytes.h"
#include "image.h"
#include "source.h"

#define MAGIC "qemount block 1\n"

struct header {
  char magic[16];
  uint64_t key;                 /* little-endian, as size */
  uint32_t size;
  uint32_t zero;
  uint64_t sum[2];              /* XXH3 128 of the header before it and
                                   the data */
};

struct source_cache {
  char *dir;                    /* DIR/ID */
};

/* Writing the cache is an optimisation: a failure is said once per
 * process (a full disk would say it for every block) and reads go on.
 */
static void
write_failed (const char *dir, const char *doing)
{
  static atomic_bool said;

  if (!atomic_exchange (&said, true))
    image_warning ("cache directory %s: %s: %m (blocks are not kept)", dir,
                   doing);
}

int
source_cache_dir_prepare (const char *dir)
{
  struct stat st;

  if (mkdir (dir, 0700) == -1 && errno != EEXIST) {
    image_error ("cache directory %s: %m", dir);
    return -1;
  }
  if (stat (dir, &st) == -1) {
    image_error ("cache directory %s: %m", dir);
    return -1;
  }
  if (!S_ISDIR (st.st_mode)) {
    image_error ("cache directory %s: not a directory", dir);
    return -1;
  }
  if (access (dir, W_OK | X_OK) == -1) {
    image_error ("cache directory %s: cannot write in it: %m", dir);
    return -1;
  }
  return 0;
}

/* A block's temporary file is renamed within milliseconds; one this old
 * was left by a process killed while writing it.
 */
#define STALE_TMP_SECONDS 600

/* Remove what killed writers left in the object's directory (a cache
 * error is never the reader's: failures here are ignored).
 */
static void
remove_stale_tmp (const char *objdir)
{
  DIR *d = opendir (objdir);
  struct dirent *e;
  struct stat st;
  time_t now = time (NULL);

  if (d == NULL)
    return;
  while ((e = readdir (d)) != NULL) {
    if (strncmp (e->d_name, ".tmp-", 5) == 0 &&
        fstatat (dirfd (d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISREG (st.st_mode) && now - st.st_mtime > STALE_TMP_SECONDS)
      unlinkat (dirfd (d), e->d_name, 0);
  }
  closedir (d);
}

struct source_cache *
source_cache_open (const char *dir, const char *pinned, uint64_t size)
{
  uint8_t digest[SHA256_DIGEST_SIZE];
  char id[2 * SHA256_DIGEST_SIZE + 1], sizes[32];
  struct sha256_ctx sha;
  struct source_cache *c = calloc (1, sizeof *c);

  if (c == NULL)
    return NULL;
  snprintf (sizes, sizeof sizes, "\n%" PRIu64, size);
  sha256_init (&sha);
  sha256_update (&sha, strlen (pinned), (const uint8_t *) pinned);
  sha256_update (&sha, strlen (sizes), (const uint8_t *) sizes);
  sha256_digest (&sha, sizeof digest, digest);
  for (size_t i = 0; i < sizeof digest; ++i)
    snprintf (&id[2 * i], 3, "%02x", digest[i]);
  if (asprintf (&c->dir, "%s/%s", dir, id) == -1) {
    free (c);
    return NULL;
  }
  if (mkdir (c->dir, 0700) == -1 && errno != EEXIST) {
    write_failed (c->dir, "creating it");
    source_cache_close (c);
    return NULL;
  }
  remove_stale_tmp (c->dir);
  return c;
}

void
source_cache_close (struct source_cache *c)
{
  if (c == NULL)
    return;
  free (c->dir);
  free (c);
}

/* The file of block key, malloc'd, or NULL. */
static char *
block_path (const struct source_cache *c, uint64_t key)
{
  char *path;

  return asprintf (&path, "%s/%016" PRIx64, c->dir, key) == -1 ? NULL : path;
}

/* Of the header before the sum and the data, without allocating: the
 * header's hash seeds the data's.
 */
static void
checksum (struct header *h, const void *data, uint32_t size)
{
  XXH64_hash_t seed = XXH3_64bits (h, offsetof (struct header, sum));
  XXH128_hash_t sum = XXH3_128bits_withSeed (data, size, seed);

  h->sum[0] = htole64 (sum.low64);
  h->sum[1] = htole64 (sum.high64);
}

static void
make_header (struct header *h, uint64_t key, const void *data, uint32_t size)
{
  memset (h, 0, sizeof *h);
  memcpy (h->magic, MAGIC, sizeof h->magic);
  h->key = htole64 (key);
  h->size = htole32 (size);
  checksum (h, data, size);
}

bool
source_cache_has (const struct source_cache *c, uint64_t key)
{
  char *path = block_path (c, key);
  bool r = path && access (path, F_OK) == 0;

  free (path);
  return r;
}

bool
source_cache_get (const struct source_cache *c, uint64_t key, void *buf,
                  uint32_t size)
{
  char *path = block_path (c, key);
  struct header h, want;
  struct stat st;
  bool ok;
  int fd;

  fd = path ? open (path, O_RDONLY | O_CLOEXEC) : -1;
  free (path);
  if (fd == -1)
    return false;
  ok = fstat (fd, &st) == 0 && st.st_size == (off_t) (sizeof h + size) &&
    pread (fd, &h, sizeof h, 0) == sizeof h &&
    pread (fd, buf, size, sizeof h) == size;
  close (fd);
  if (!ok)
    return false;
  /* Torn, corrupt, or another block's: fetched again. */
  make_header (&want, key, buf, size);
  return memcmp (&h, &want, sizeof h) == 0;
}

static bool
write_all (int fd, const void *data, size_t len)
{
  const char *p = data;

  while (len > 0) {
    ssize_t r = write (fd, p, len);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0) {
      if (r == 0)
        errno = EIO;
      return false;
    }
    p += r;
    len -= r;
  }
  return true;
}

void
source_cache_put (const struct source_cache *c, uint64_t key,
                  const void *data, uint32_t size)
{
  char *path = block_path (c, key), *tmp = NULL;
  struct header h;
  bool ok;
  int fd;

  if (path == NULL || asprintf (&tmp, "%s/.tmp-XXXXXX", c->dir) == -1) {
    free (path);
    return;
  }
  fd = mkostemp (tmp, O_CLOEXEC);
  if (fd == -1) {
    write_failed (c->dir, "writing a block");
    goto out;
  }
  make_header (&h, key, data, size);
  ok = write_all (fd, &h, sizeof h) && write_all (fd, data, size);
  if (close (fd) == -1)
    ok = false;
  if (!ok || rename (tmp, path) == -1) {
    write_failed (c->dir, "writing a block");
    unlink (tmp);
  }
 out:
  free (path);
  free (tmp);
}
