/* SPDX-License-Identifier: BSD-3-Clause */
/* HTTP(S) byte sources through libcurl: one HEAD at open for the size,
 * the final URL (redirects are followed once, there) and the object's
 * version (ETag, Last-Modified); then range GETs of that version only,
 * one per concurrent reader on a pool of keep-alive connections.
 *
 * A replaced object must fail reads, not mix two versions: every GET is
 * conditional (If-Match on a strong ETag, else If-Unmodified-Since) and
 * the ETag of every answer is checked too, for servers that ignore the
 * condition.
 *
 * An s3:// object is read the same way at the URL lib/source-s3.c makes
 * of it, each request signed by libcurl (AWS Signature Version 4).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "image.h"
#include "source.h"

#define MAX_ETAG 256

struct http {
  char *url;                    /* after redirects: what GETs fetch */
  char etag[MAX_ETAG];          /* strong ETag at open, "" if none */
  curl_off_t mtime;             /* Last-Modified at open, -1 if none */
  struct curl_slist *headers;   /* sent with every request: S3's, then
                                   If-Match once the ETag is known */
  struct source_s3 s3;          /* an s3:// object's URL and keys */
  struct source_pool *pool;     /* of struct conn */
};

/* One connection: a curl easy handle (it keeps its connection alive
 * between requests) and its error text.
 */
struct conn {
  CURL *curl;
  char error[CURL_ERROR_SIZE];
};

/* What one request receives. */
struct transfer {
  struct conn *conn;
  char *buf;                    /* NULL: no body wanted (HEAD) */
  size_t count, got;
  bool overflow;                /* the server sent more than asked */
  char etag[MAX_ETAG];          /* of the (last) response, "" if none */
  curl_off_t total;             /* the object's size in Content-Range,
                                   -1 if none */
  char code[64];                /* S3's error code, "" if none */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_code;

static void
init_curl (void)
{
  curl_init_code = curl_global_init (CURL_GLOBAL_DEFAULT);
}

int
source_curl_init (const char *name)
{
  pthread_once (&curl_once, init_curl);
  if (curl_init_code != CURLE_OK) {
    image_error ("%s: cannot initialize libcurl: %s", name,
                 curl_easy_strerror (curl_init_code));
    errno = EIO;
    return -1;
  }
  return 0;
}

void
source_curl_options (void *curl, char *error, const struct source_s3 *s3)
{
  const struct source_settings *set = source_settings ();
  CURL *c = curl;

  curl_easy_setopt (c, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt (c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt (c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt (c, CURLOPT_USERAGENT, PACKAGE_NAME "/" PACKAGE_VERSION);
  /* User and password from ~/.netrc, never from the command line. */
  curl_easy_setopt (c, CURLOPT_NETRC, (long) CURL_NETRC_OPTIONAL);
  curl_easy_setopt (c, CURLOPT_TCP_KEEPALIVE, 1L);
  /* "No progress for timeout seconds" rather than a bound on the whole
   * request: a large read on a slow link is not a stuck one.
   */
  curl_easy_setopt (c, CURLOPT_CONNECTTIMEOUT, (long) set->timeout);
  curl_easy_setopt (c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt (c, CURLOPT_LOW_SPEED_TIME, (long) set->timeout);
  if (s3->userpwd) {
    curl_easy_setopt (c, CURLOPT_AWS_SIGV4, s3->sigv4);
    curl_easy_setopt (c, CURLOPT_USERPWD, s3->userpwd);
  }
}

const char *
source_curl_version (void)
{
  return curl_version_info (CURLVERSION_NOW)->version;
}

static size_t
write_body (char *data, size_t size, size_t n, void *opaque)
{
  struct transfer *t = opaque;

  n *= size;
  if (t->buf == NULL || n > t->count - t->got) {
    t->overflow = true;
    return 0;                   /* stops the transfer */
  }
  memcpy (t->buf + t->got, data, n);
  t->got += n;
  return n;
}

static size_t
read_header (char *data, size_t size, size_t n, void *opaque)
{
  struct transfer *t = opaque;
  size_t len = size * n, value_len;
  const char *value;

  /* A new response (after a redirect, or a retry) starts afresh. */
  if (len >= 5 && strncmp (data, "HTTP/", 5) == 0) {
    t->etag[0] = '\0';
    t->total = -1;
  }
  /* "bytes FIRST-LAST/SIZE", or "bytes * /SIZE" for a range past it */
  else if (len > 14 && strncasecmp (data, "content-range:", 14) == 0) {
    const char *slash = memchr (data, '/', len);
    char *end;
    long long total;

    if (slash && slash[1] >= '0' && slash[1] <= '9') {
      errno = 0;
      total = strtoll (slash + 1, &end, 10);
      if (errno == 0 && (*end == '\r' || *end == '\n'))
        t->total = total;
    }
  }
  else if (source_header_value (data, len, "etag", &value, &value_len) &&
           value_len < MAX_ETAG) {
    memcpy (t->etag, value, value_len);
    t->etag[value_len] = '\0';
  }
  return size * n;
}

static void *
make_conn (void *opaque)
{
  const struct http *h = opaque;
  struct conn *conn = calloc (1, sizeof *conn);
  CURL *c;

  if (conn == NULL || (conn->curl = c = curl_easy_init ()) == NULL) {
    free (conn);
    return NULL;
  }
  source_curl_options (c, conn->error, &h->s3);
  curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, write_body);
  curl_easy_setopt (c, CURLOPT_HEADERFUNCTION, read_header);
  return conn;
}

static void
destroy_conn (void *handle)
{
  struct conn *conn = handle;

  curl_easy_cleanup (conn->curl);
  free (conn);
}

bool
source_header_value (const char *line, size_t len, const char *name,
                     const char **value, size_t *value_len)
{
  size_t n = strlen (name), v;

  if (len <= n || strncasecmp (line, name, n) != 0 || line[n] != ':')
    return false;
  for (v = n + 1; v < len && (line[v] == ' ' || line[v] == '\t'); ++v)
    ;
  while (len > v && strchr (" \t\r\n", line[len - 1]))
    len--;
  *value = line + v;
  *value_len = len - v;
  return true;
}

/* Append header to *list; false if out of memory (*list unchanged). */
static bool
add_header (struct curl_slist **list, const char *header)
{
  struct curl_slist *l = curl_slist_append (*list, header);

  if (l != NULL)
    *list = l;
  return l != NULL;
}

bool
source_curl_retry (int rc, long status, unsigned attempt)
{
  bool transient;

  switch (rc) {
  case CURLE_OK:
    transient = status >= 500 && status != 501 && status != 505;
    break;
  case CURLE_COULDNT_CONNECT:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
    transient = true;
    break;
  default:
    transient = false;
  }
  return transient && source_backoff (attempt);
}

/* Run the request set up on t->conn, again after a transient failure.
 * The HTTP status in *status (0 if there was no answer).
 */
static CURLcode
perform (struct transfer *t, long *status)
{
  CURLcode rc;

  curl_easy_setopt (t->conn->curl, CURLOPT_WRITEDATA, t);
  curl_easy_setopt (t->conn->curl, CURLOPT_HEADERDATA, t);
  for (unsigned attempt = 0; ; ++attempt) {
    t->got = 0;
    t->overflow = false;
    t->etag[0] = '\0';
    t->total = -1;
    t->conn->error[0] = '\0';
    *status = 0;
    rc = curl_easy_perform (t->conn->curl);
    curl_easy_getinfo (t->conn->curl, CURLINFO_RESPONSE_CODE, status);
    if (!source_curl_retry (rc, *status, attempt))
      return rc;
  }
}

/* The message for a request that got no usable answer. */
static void
report_failure (struct source *s, const struct transfer *t, CURLcode rc,
                long status, const char *doing)
{
  if (rc == CURLE_OPERATION_TIMEDOUT)
    image_error ("%s: %s: timed out (no progress for %u s): %s", s->name,
                 doing, source_settings ()->timeout, t->conn->error);
  else if (rc != CURLE_OK)
    image_error ("%s: %s: %s", s->name, doing,
                 t->conn->error[0] ? t->conn->error :
                 curl_easy_strerror (rc));
  else if (t->code[0])
    image_error ("%s: %s: HTTP status %ld (%s)", s->name, doing, status,
                 t->code);
  else
    image_error ("%s: %s: HTTP status %ld", s->name, doing, status);
  errno = rc == CURLE_OK && (status == 404 || status == 410) ? ENOENT :
    rc == CURLE_OK && (status == 401 || status == 403) ? EACCES : EIO;
}

static int
http_fetch (struct source *s, void *buf, size_t count, uint64_t offset)
{
  struct http *h = s->priv;
  struct transfer t = { .buf = buf, .count = count };
  char range[64], doing[96];
  long status, unmet = 0;
  CURLcode rc;
  CURL *c;
  int r = -1;

  t.conn = source_pool_get (h->pool);
  if (t.conn == NULL) {
    image_error ("%s: cannot make a curl handle", s->name);
    errno = ENOMEM;
    return -1;
  }
  c = t.conn->curl;
  snprintf (range, sizeof range, "%" PRIu64 "-%" PRIu64,
            offset, offset + count - 1);
  snprintf (doing, sizeof doing, "reading %zu bytes at offset %" PRIu64,
            count, offset);
  curl_easy_setopt (c, CURLOPT_URL, h->url);
  curl_easy_setopt (c, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt (c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt (c, CURLOPT_RANGE, range);
  curl_easy_setopt (c, CURLOPT_HTTPHEADER, h->headers);
  if (h->etag[0] == '\0' && h->mtime >= 0) {
    curl_easy_setopt (c, CURLOPT_TIMECONDITION,
                      (long) CURL_TIMECOND_IFUNMODSINCE);
    curl_easy_setopt (c, CURLOPT_TIMEVALUE_LARGE, h->mtime);
  }

  rc = perform (&t, &status);
  curl_easy_getinfo (c, CURLINFO_CONDITION_UNMET, &unmet);
  if ((rc == CURLE_OK || rc == CURLE_WRITE_ERROR) &&
      (status == 412 || unmet ||
       (h->etag[0] && t.etag[0] && strcmp (h->etag, t.etag) != 0))) {
    image_error ("%s: the object changed after it was opened (ETag %s, "
                 "now %s): not reading a mix of two versions", s->name,
                 h->etag[0] ? h->etag : "none",
                 t.etag[0] ? t.etag : "unknown");
    errno = EIO;
  }
  else if (rc == CURLE_WRITE_ERROR && t.overflow && status == 200) {
    image_error ("%s: the server ignores range requests (HTTP 200 with the "
                 "whole object): qemount reads only the parts it needs",
                 s->name);
    errno = EIO;
  }
  else if (rc == CURLE_WRITE_ERROR && t.overflow) {
    image_error ("%s: %s: the server sent more than asked", s->name, doing);
    errno = EIO;
  }
  else if (rc != CURLE_OK || status != 206)
    report_failure (s, &t, rc, status, doing);
  else if (t.got != count) {
    image_error ("%s: %s: the answer holds only %zu bytes", s->name, doing,
                 t.got);
    errno = EIO;
  }
  else
    r = 0;
  source_pool_put (h->pool, t.conn);
  return r;
}

static void
http_close (struct source *s)
{
  struct http *h = s->priv;

  if (h == NULL)
    return;
  source_pool_destroy (h->pool);
  curl_slist_free_all (h->headers);
  source_s3_clear (&h->s3);
  free (h->url);
  free (h);
}

static const struct source_ops http_ops = {
  .kind = "http",
  .fetch = http_fetch,
  .close = http_close,
};

/* s->pinned: the final URL and the version every GET asks for, if
 * there is one.
 */
static int
pin (struct source *s, const struct http *h)
{
  char *url;
  int r = 0;

  if (h->etag[0] == '\0' && h->mtime < 0)
    return 0;
  url = source_display_name (h->url);
  if (url == NULL)
    r = -1;
  else if (h->etag[0])
    r = asprintf (&s->pinned, "%s\nETag: %s", url, h->etag);
  else
    r = asprintf (&s->pinned, "%s\nLast-Modified: %" CURL_FORMAT_CURL_OFF_T,
                  url, h->mtime);
  free (url);
  if (r == -1) {
    s->pinned = NULL;
    image_error ("%s: %m", s->name);
    return -1;
  }
  return 0;
}

/* The HEAD request: size, final URL, version.  An S3 server that
 * refuses the HEAD (a 4xx) says why only in the body of a GET, and a
 * bucket policy may allow GET but not HEAD: for S3 a GET of the first
 * byte follows then, the size in its Content-Range.
 */
static int
http_head (struct source *s, struct http *h, struct conn *conn)
{
  char body[4096];
  struct transfer t = { .conn = conn };
  CURL *c = conn->curl;
  curl_off_t length = -1;
  char *url = NULL, *header;
  long status;
  CURLcode rc;

  curl_easy_setopt (c, CURLOPT_URL, h->url);
  curl_easy_setopt (c, CURLOPT_HTTPHEADER, h->headers);
  curl_easy_setopt (c, CURLOPT_NOBODY, 1L);
  curl_easy_setopt (c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt (c, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt (c, CURLOPT_FILETIME, 1L);
  rc = perform (&t, &status);
  if (h->s3.url && rc == CURLE_OK && status >= 400 && status <= 499) {
    t.buf = body;
    t.count = sizeof body - 1;
    curl_easy_setopt (c, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt (c, CURLOPT_RANGE, "0-0");
    rc = perform (&t, &status);
    curl_easy_setopt (c, CURLOPT_RANGE, NULL);
    /* More than the byte asked for: stopped, the headers say enough. */
    if (rc == CURLE_WRITE_ERROR && t.overflow && status == 206)
      rc = CURLE_OK;
    else if (status >= 400) {
      t.buf[t.got] = '\0';
      source_s3_error_code (t.buf, t.code, sizeof t.code);
    }
    length = t.total;
  }
  else
    curl_easy_getinfo (c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
  if (rc != CURLE_OK || status < 200 || status > 299) {
    report_failure (s, &t, rc, status, "opening");
    return -1;
  }
  curl_easy_getinfo (c, CURLINFO_EFFECTIVE_URL, &url);
  curl_easy_getinfo (c, CURLINFO_FILETIME_T, &h->mtime);
  curl_easy_setopt (c, CURLOPT_FILETIME, 0L);
  if (length < 0) {
    image_error ("%s: the server does not tell the object's size", s->name);
    errno = EIO;
    return -1;
  }
  s->size = length;
  if (url && strcmp (url, h->url) != 0) {
    free (h->url);
    if ((h->url = strdup (url)) == NULL)
      goto nomem;
  }
  /* A weak ETag (W/"...") never matches in If-Match: pin by date then. */
  if (t.etag[0] == '"') {
    strcpy (h->etag, t.etag);
    if (asprintf (&header, "If-Match: %s", h->etag) == -1)
      header = NULL;
    if (header == NULL || !add_header (&h->headers, header)) {
      free (header);
      goto nomem;
    }
    free (header);
  }
  return pin (s, h);

 nomem:
  image_error ("%s: %m", s->name);
  return -1;
}

int
source_http_open (struct source *s)
{
  struct http *h;
  struct conn *conn;

  if (source_curl_init (s->name) == -1)
    return -1;
  s->priv = h = calloc (1, sizeof *h);
  if (h == NULL) {
    image_error ("%s: %m", s->name);
    return -1;
  }
  s->ops = &http_ops;
  if (source_is_s3 (s->location) &&
      source_s3_resolve (s, &h->s3) == -1)
    return -1;
  /* S3 wants the payload's hash in a signed request; libcurl 7.88
   * sends none (later versions send this one): a GET has no payload.
   */
  if (h->s3.userpwd &&
      (!add_header (&h->headers, "x-amz-content-sha256: UNSIGNED-PAYLOAD") ||
       (h->s3.token && !add_header (&h->headers, h->s3.token))))
    goto nomem;
  h->url = strdup (h->s3.url ? h->s3.url : s->location);
  h->pool = source_pool_create (source_settings ()->connections,
                                make_conn, destroy_conn, h);
  if (h->url == NULL || h->pool == NULL)
    goto nomem;
  conn = source_pool_get (h->pool);
  if (conn == NULL) {
    image_error ("%s: cannot make a curl handle", s->name);
    errno = ENOMEM;
    return -1;
  }
  if (http_head (s, h, conn) == -1) {
    source_pool_discard (h->pool, conn);
    return -1;
  }
  curl_easy_setopt (conn->curl, CURLOPT_NOBODY, 0L);
  source_pool_put (h->pool, conn);  /* and its open connection */
  return 0;

 nomem:
  image_error ("%s: %m", s->name);
  return -1;
}
