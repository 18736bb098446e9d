/* SPDX-License-Identifier: BSD-3-Clause */
/* Byte sources: where an image file's bytes come from.  A local file (a
 * path), an object on an HTTP(S) server or in S3, an NBD export;
 * decoders read through source_read and never know which.
 *
 * A local file is read with pread(2) on its descriptor, nothing in
 * between.  Remote sources read whole blocks of SOURCE_BLOCK bytes
 * through the block cache (image_block_cache), so that the small reads
 * of metadata turn into few requests, fetch several blocks per request
 * for a sequential reader, and run one request per concurrent reader on
 * a pool of connections.
 */

#ifndef QEMOUNT_SOURCE_H
#define QEMOUNT_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Remote sources fetch and cache this much around each read. */
#define SOURCE_BLOCK (256u << 10)

struct source;

struct source_ops {
  const char *kind;             /* "file", "http", "nbd" */
  /* Fill buf with exactly count bytes at offset (inside the object);
   * 0, or -1 after image_error naming the source, errno set (EIO).
   */
  int (*fetch) (struct source *s, void *buf, size_t count, uint64_t offset);
  void (*close) (struct source *s);
};

struct source {
  const struct source_ops *ops;
  char *location;               /* as opened (a path or the whole URL):
                                   relative names resolve against it */
  char *name;                   /* for messages: the path, or the URL
                                   without user, password or query */
  int fd;                       /* a local file's descriptor, else -1 */
  bool remote;                  /* not a local file */
  uint64_t size;                /* bytes */
  uint64_t owner;               /* remote: block cache key space */
  char *pinned;                 /* remote: what pins the content at open
                                   (the URL without user, password or
                                   query, and the ETag or Last-Modified),
                                   set by the kind; NULL: nothing does,
                                   and no block is kept in cache-dir= */
  struct source_cache *disk;    /* its blocks in cache-dir=, or NULL */
  bool probe_failed;            /* a remote read for probing (what NULL)
                                   failed: the probe's "no" means nothing */
  _Atomic uint64_t seq_end;     /* remote: where the last read ended */
  _Atomic unsigned streak;      /* remote: reads in a row that started
                                   there (readahead) */
  void *priv;                   /* the kind's state */
};

/* Settings of remote sources, set once before opening any. */
struct source_settings {
  unsigned timeout;             /* seconds without progress before a
                                   request fails; 0: the default */
  unsigned connections;         /* per source, 0: the default */
  const char *cache_dir;        /* keep fetched blocks there (an existing
                                   directory), NULL: do not */
};
#define SOURCE_DEFAULT_TIMEOUT 30
#define SOURCE_DEFAULT_CONNECTIONS 4
void source_configure (const struct source_settings *settings);
const struct source_settings *source_settings (void);

/* url as messages (and the persistent cache) show it: no user or
 * password, and for HTTP no query.  malloc'd, or NULL.
 */
char *source_display_name (const char *url);

/* Whether location is a URL its display name shows only part of (a
 * user, a password, a query): then the location is a secret.
 */
bool source_hides (const char *location);

/* Whether location is a URL of a remote source (http://, https://,
 * s3://, nbd://, nbds://, nbd+unix://) rather than a path.
 */
bool source_is_url (const char *location);
/* Whether location is an s3:// URL. */
bool source_is_s3 (const char *location);

/* Open location read-only: a local file (a regular file or block
 * device, as image_open_file) or a URL.  NULL after image_error, errno
 * set (ENOENT for a local file or remote object that is not there).
 */
struct source *source_open (const char *location);

/* A source on an open local file descriptor (which it then owns). */
struct source *source_from_fd (int fd, const char *path);

void source_close (struct source *s);

/* Read exactly count bytes at offset.  A read past the end is an error
 * naming the source and what ("L2 table"); what NULL: no message for
 * that (probing).  0, or -1 with errno set.
 */
int source_read (struct source *s, void *buf, size_t count, uint64_t offset,
                 const char *what);

/* The same key for the same file or object, to find loops in chains:
 * device and inode of a local file, the URL of a remote one.  malloc'd,
 * NULL after image_error.
 */
char *source_identity (const struct source *s);

/* For the remote kinds (lib/source-http.c, lib/source-nbd.c): open url
 * into s (location, name set; fill size, ops, priv); 0, or -1 after
 * image_error.
 */
int source_http_open (struct source *s);
int source_nbd_open (struct source *s);
const char *source_curl_version (void);

/* How the requests for an s3:// location go out (lib/source-s3.c,
 * used by lib/source-http.c).
 */
struct source_s3 {
  char *url;                    /* the object's http(s):// URL */
  char *userpwd;                /* "KEY:SECRET" to sign with; NULL:
                                   anonymous requests */
  char *sigv4;                  /* libcurl's CURLOPT_AWS_SIGV4 */
  char *token;                  /* "x-amz-security-token: ...", or NULL */
};
/* Fill r (zeroed) for s; 0, or -1 after image_error. */
int source_s3_resolve (const struct source *s, struct source_s3 *r);
/* Free r's strings, the secrets cleared first. */
void source_s3_clear (struct source_s3 *r);
/* s percent-encoded but for letters, digits and the bytes in keep,
 * malloc'd; NULL if out of memory.
 */
char *source_s3_encode (const char *s, const char *keep);
/* The text between <tag> and </tag> in an S3 answer's XML body,
 * malloc'd; NULL if there is none.
 */
char *source_s3_xml_value (const char *body, const char *tag);
/* S3's error code in the XML body (a string) of an error response
 * ("<Code>NoSuchKey</Code>") into code, "" if there is none.
 */
void source_s3_error_code (const char *body, char *code, size_t size);

/* Whether a transient failure is worth its attempt-th retry (from 0);
 * if so, after waiting the backoff for it.
 */
bool source_backoff (unsigned attempt);

/* libcurl, for lib/source-http.c and lib/s3-upload.c: initialize it
 * once (0, or -1 after image_error naming name); set up a new easy
 * handle (a CURL *) as every request of ours is, error messages into
 * error (CURL_ERROR_SIZE bytes), signed with s3's keys if it has any.
 */
int source_curl_init (const char *name);
/* Whether a request that ended with rc (a CURLcode) and HTTP status
 * (0 if none) failed in a way worth trying again, for its attempt-th
 * retry (from 0); if so, after waiting the backoff for it
 * (source_backoff).
 */
bool source_curl_retry (int rc, long status, unsigned attempt);
/* Whether the header line (len bytes, as libcurl hands it over) is the
 * header name; its value then at *value, *value_len bytes, without the
 * spaces around it and the line's end.
 */
bool source_header_value (const char *line, size_t len, const char *name,
                          const char **value, size_t *value_len);
void source_curl_options (void *curl, char *error,
                          const struct source_s3 *s3);
const char *source_libnbd_version (void);

/* The persistent cache of remote blocks (lib/source-cache.c), for the
 * object pinned (struct source) of size bytes, in directory dir.  NULL:
 * none (out of memory, or dir is unusable: said once).
 */
struct source_cache;
/* Make dir if missing (mode 0700: it holds blocks of images), and check
 * it is a directory we can write in; 0, or -1 after image_error.
 */
int source_cache_dir_prepare (const char *dir);
struct source_cache *source_cache_open (const char *dir, const char *pinned,
                                        uint64_t size);
void source_cache_close (struct source_cache *c);
/* Whether block key (of SOURCE_BLOCK bytes from key * SOURCE_BLOCK) has
 * a file: it is probably there.
 */
bool source_cache_has (const struct source_cache *c, uint64_t key);
/* Fill buf with block key of size bytes if it is there, whole and its
 * checksum right; false otherwise (buf then holds anything).
 */
bool source_cache_get (const struct source_cache *c, uint64_t key,
                       void *buf, uint32_t size);
/* Keep a copy of block key; a failure is said once and ignored. */
void source_cache_put (const struct source_cache *c, uint64_t key,
                       const void *data, uint32_t size);

/* A pool of per-request handles (a curl easy handle, an NBD
 * connection), at most max of them, made on demand: each concurrent
 * request takes one, so parallel reads are parallel requests.
 */
struct source_pool;
struct source_pool *source_pool_create (unsigned max,
                                        void *(*make) (void *opaque),
                                        void (*destroy) (void *handle),
                                        void *opaque);
/* A handle, waiting for one to be free; NULL if make failed. */
void *source_pool_get (struct source_pool *p);
void source_pool_put (struct source_pool *p, void *handle);
/* Give back a handle that is of no more use (its connection died). */
void source_pool_discard (struct source_pool *p, void *handle);
void source_pool_destroy (struct source_pool *p);

#endif /* QEMOUNT_SOURCE_H */
