/* SPDX-License-Identifier: BSD-3-Clause */
/* Multipart upload of a finished local file to S3 (s3-upload.h).
 *
 * The parts go PARALLEL at a time on one curl multi handle, each read
 * from the file with pread as libcurl sends it.  Queries are written in
 * Signature V4's canonical form (parameters sorted, each NAME=VALUE,
 * values percent-encoded): libcurl 7.88 signs the query as written, S3
 * checks the canonical one, and so the two agree.
 *
 * Messages name s3://BUCKET/KEY only, never the endpoint's URL with its
 * query (the upload ID) or anything of the keys.
 */

#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "image.h"
#include "s3-upload.h"
#include "source.h"

/* S3's rules: every part but the last at least 5 MiB, at most 10000
 * parts of at most 5 GiB.  8 MiB parts (the AWS CLI's choice) keep a
 * failed part cheap to resend and cover objects up to 78 GiB; larger
 * ones get larger parts.
 */
#define PART_SIZE (UINT64_C (8) << 20)
#define MAX_PARTS 10000
#define MAX_PART_SIZE (UINT64_C (5) << 30)
#define PARALLEL 4

/* S3's answers we read (an upload ID, an error) are short; the rest of
 * a longer one is dropped.
 */
#define MAX_BODY 4096
#define MAX_ETAG 128

struct request {
  CURL *curl;
  char error[CURL_ERROR_SIZE];
  char body[MAX_BODY + 1];
  size_t got;
  char etag[MAX_ETAG];
  unsigned part;                /* 1-based while sending one, else 0 */
  unsigned attempt;             /* retries of this part so far */
  int fd;                       /* the part's bytes: */
  uint64_t offset, left;
};

struct s3_upload {
  char *name;                   /* s3://BUCKET/KEY, for messages */
  struct source_s3 s3;
  struct curl_slist *headers;
  char *id;                     /* the upload ID, percent-encoded */
  uint64_t part_size;
  unsigned n_parts;
  char (*etags)[MAX_ETAG];      /* of each part sent */
  bool done;                    /* completed: nothing to abort */
};

static size_t
write_body (char *data, size_t size, size_t n, void *opaque)
{
  struct request *r = opaque;
  size_t len = size * n, room = MAX_BODY - r->got;

  memcpy (r->body + r->got, data, len < room ? len : room);
  r->got += len < room ? len : room;
  r->body[r->got] = '\0';
  return len;
}

/* A part's ETag; it goes into our XML, so only printable bytes that
 * need no escaping there are taken.
 */
static size_t
read_header (char *data, size_t size, size_t n, void *opaque)
{
  struct request *r = opaque;
  const char *value;
  size_t value_len;

  if (source_header_value (data, size * n, "etag", &value, &value_len)) {
    r->etag[0] = '\0';
    if (value_len < MAX_ETAG) {
      for (size_t i = 0; i < value_len; ++i)
        if (!isprint ((unsigned char) value[i]) || strchr ("<>&", value[i]))
          return size * n;
      memcpy (r->etag, value, value_len);
      r->etag[value_len] = '\0';
    }
  }
  return size * n;
}

static size_t
read_part (char *buf, size_t size, size_t n, void *opaque)
{
  struct request *r = opaque;
  size_t want = size * n;
  ssize_t got;

  if (want > r->left)
    want = r->left;
  if (want == 0)
    return 0;
  got = pread (r->fd, buf, want, r->offset);
  if (got <= 0)
    return CURL_READFUNC_ABORT;
  r->offset += got;
  r->left -= got;
  return got;
}

static int
new_request (struct s3_upload *u, struct request *r)
{
  *r = (struct request) { .fd = -1 };
  r->curl = curl_easy_init ();
  if (r->curl == NULL) {
    image_error ("%s: cannot make a curl handle", u->name);
    errno = ENOMEM;
    return -1;
  }
  source_curl_options (r->curl, r->error, &u->s3);
  curl_easy_setopt (r->curl, CURLOPT_HTTPHEADER, u->headers);
  curl_easy_setopt (r->curl, CURLOPT_WRITEFUNCTION, write_body);
  curl_easy_setopt (r->curl, CURLOPT_WRITEDATA, r);
  curl_easy_setopt (r->curl, CURLOPT_HEADERFUNCTION, read_header);
  curl_easy_setopt (r->curl, CURLOPT_HEADERDATA, r);
  curl_easy_setopt (r->curl, CURLOPT_PRIVATE, r);
  return 0;
}

/* Point r at the object's URL with the query, a printf format. */
static int __attribute__ ((format (printf, 3, 4)))
set_url (struct s3_upload *u, struct request *r, const char *fmt, ...)
{
  char *query = NULL, *url = NULL;
  va_list ap;
  int n;

  va_start (ap, fmt);
  n = vasprintf (&query, fmt, ap);
  va_end (ap);
  if (n == -1 || asprintf (&url, "%s?%s", u->s3.url, query) == -1) {
    image_error ("%s: %m", u->name);
    free (n == -1 ? NULL : query);
    return -1;
  }
  curl_easy_setopt (r->curl, CURLOPT_URL, url);
  free (query);
  free (url);
  r->got = 0;
  r->body[0] = '\0';
  r->etag[0] = '\0';
  r->error[0] = '\0';
  return 0;
}

/* Run the request set up on r, again after a transient failure. */
static CURLcode
perform (struct request *r)
{
  CURLcode rc;
  long status;

  for (unsigned attempt = 0;; ++attempt) {
    r->got = 0;
    r->body[0] = '\0';
    r->error[0] = '\0';
    rc = curl_easy_perform (r->curl);
    status = 0;
    curl_easy_getinfo (r->curl, CURLINFO_RESPONSE_CODE, &status);
    if (!source_curl_retry (rc, status, attempt))
      return rc;
  }
}

/* Whether r got the answer wanted (status 200, no S3 error in the body:
 * CompleteMultipartUpload can fail after its 200); else the message,
 * errno set.
 */
static bool
answered (struct s3_upload *u, struct request *r, CURLcode rc,
          const char *doing)
{
  long status = 0;
  char code[64];

  curl_easy_getinfo (r->curl, CURLINFO_RESPONSE_CODE, &status);
  if (rc != CURLE_OK) {
    image_error ("%s: %s failed: %s", u->name, doing,
                 r->error[0] ? r->error : curl_easy_strerror (rc));
    errno = EIO;
    return false;
  }
  source_s3_error_code (r->body, code, sizeof code);
  if (status == 200 && strstr (r->body, "<Error>") == NULL)
    return true;
  if (code[0])
    image_error ("%s: %s refused: %s (%ld)", u->name, doing, code, status);
  else
    image_error ("%s: %s refused: HTTP status %ld", u->name, doing, status);
  errno = status == 401 || status == 403 ? EACCES : EIO;
  return false;
}

static int
initiate (struct s3_upload *u, struct request *r)
{
  char *id;

  if (set_url (u, r, "%s", "uploads=") == -1)
    return -1;
  curl_easy_setopt (r->curl, CURLOPT_POST, 1L);
  curl_easy_setopt (r->curl, CURLOPT_POSTFIELDS, "");
  curl_easy_setopt (r->curl, CURLOPT_POSTFIELDSIZE, 0L);
  if (!answered (u, r, perform (r), "upload"))
    return -1;
  id = source_s3_xml_value (r->body, "UploadId");
  if (id == NULL || id[0] == '\0') {
    image_error ("%s: upload: the server's answer has no upload ID", u->name);
    free (id);
    errno = EIO;
    return -1;
  }
  u->id = source_s3_encode (id, "-._~");
  free (id);
  if (u->id == NULL) {
    image_error ("%s: %m", u->name);
    return -1;
  }
  return 0;
}

/* Set r up to send part number (1-based) of fd. */
static int
start_part (struct s3_upload *u, struct request *r, int fd, uint64_t size,
            unsigned part)
{
  if (set_url (u, r, "partNumber=%u&uploadId=%s", part, u->id) == -1)
    return -1;
  r->part = part;
  r->fd = fd;
  r->offset = (part - 1) * u->part_size;
  r->left = size - r->offset < u->part_size ? size - r->offset :
    u->part_size;
  curl_easy_setopt (r->curl, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt (r->curl, CURLOPT_READFUNCTION, read_part);
  curl_easy_setopt (r->curl, CURLOPT_READDATA, r);
  curl_easy_setopt (r->curl, CURLOPT_INFILESIZE_LARGE,
                    (curl_off_t) r->left);
  return 0;
}

/* Every part, PARALLEL at a time; stops at the first failure. */
static int
send_parts (struct s3_upload *u, int fd, uint64_t size,
            const volatile sig_atomic_t *cancel)
{
  struct request reqs[PARALLEL];
  unsigned made = 0, next = 1, active = 0;
  char doing[64];
  CURLM *m = curl_multi_init ();
  int r = -1;

  if (m == NULL) {
    image_error ("%s: cannot make a curl multi handle", u->name);
    errno = ENOMEM;
    return -1;
  }
  for (; made < PARALLEL; ++made)
    if (new_request (u, &reqs[made]) == -1)
      goto out;
  while (next <= u->n_parts || active > 0) {
    CURLMsg *msg;
    int running, left;

    for (unsigned i = 0; i < PARALLEL && next <= u->n_parts; ++i)
      if (reqs[i].part == 0) {
        reqs[i].attempt = 0;
        if (start_part (u, &reqs[i], fd, size, next++) == -1)
          goto out;
        curl_multi_add_handle (m, reqs[i].curl);
        active++;
      }
    if (cancel && *cancel) {
      image_error ("%s: interrupted", u->name);
      errno = EINTR;
      goto out;
    }
    if (curl_multi_perform (m, &running) != CURLM_OK) {
      image_error ("%s: upload failed: curl multi error", u->name);
      errno = EIO;
      goto out;
    }
    while ((msg = curl_multi_info_read (m, &left)) != NULL) {
      CURLcode rc = msg->data.result;
      struct request *req;
      long status = 0;
      unsigned part;

      if (msg->msg != CURLMSG_DONE)
        continue;
      curl_easy_getinfo (msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
      curl_easy_getinfo (req->curl, CURLINFO_RESPONSE_CODE, &status);
      curl_multi_remove_handle (m, req->curl);
      active--;
      part = req->part;
      req->part = 0;
      /* S3 answers 503 SlowDown to too many requests at once.  The
       * other parts wait out the backoff too: that is what it asks.
       */
      if ((rc != CURLE_OK || status != 200) &&
          source_curl_retry (rc, status, req->attempt++)) {
        if (start_part (u, req, fd, size, part) == -1)
          goto out;
        curl_multi_add_handle (m, req->curl);
        active++;
        continue;
      }
      snprintf (doing, sizeof doing, "upload of part %u", part);
      if (!answered (u, req, rc, doing))
        goto out;
      if (req->etag[0] == '\0') {
        image_error ("%s: %s: the server's answer has no usable ETag",
                     u->name, doing);
        errno = EIO;
        goto out;
      }
      strcpy (u->etags[part - 1], req->etag);
    }
    /* At least every 0.1 s, to see cancel soon. */
    if (active > 0)
      curl_multi_poll (m, NULL, 0, 100, NULL);
  }
  r = 0;
 out:
  for (unsigned i = 0; i < made; ++i) {
    if (reqs[i].part)
      curl_multi_remove_handle (m, reqs[i].curl);
    curl_easy_cleanup (reqs[i].curl);
  }
  curl_multi_cleanup (m);
  return r;
}

static int
complete (struct s3_upload *u, struct request *r)
{
  size_t cap = 128 + (size_t) u->n_parts * (64 + MAX_ETAG), len;
  char *xml = malloc (cap);
  int ret = -1;

  if (xml == NULL) {
    image_error ("%s: %m", u->name);
    return -1;
  }
  len = snprintf (xml, cap, "<CompleteMultipartUpload>");
  for (unsigned i = 0; i < u->n_parts; ++i)
    len += snprintf (xml + len, cap - len, "<Part><PartNumber>%u</PartNumber>"
                     "<ETag>%s</ETag></Part>", i + 1, u->etags[i]);
  len += snprintf (xml + len, cap - len, "</CompleteMultipartUpload>");
  if (set_url (u, r, "uploadId=%s", u->id) == 0) {
    curl_easy_setopt (r->curl, CURLOPT_UPLOAD, 0L);
    curl_easy_setopt (r->curl, CURLOPT_POST, 1L);
    curl_easy_setopt (r->curl, CURLOPT_POSTFIELDS, xml);
    curl_easy_setopt (r->curl, CURLOPT_POSTFIELDSIZE_LARGE,
                      (curl_off_t) len);
    if (answered (u, r, perform (r), "completing the upload"))
      ret = 0;
  }
  free (xml);
  return ret;
}

/* Drop the parts sent: S3 keeps (and bills) an upload never completed
 * nor aborted.  Runs after a failure was reported; says only if this
 * fails too.
 */
static void
abort_upload (struct s3_upload *u, struct request *r)
{
  long status = 0;
  CURLcode rc;

  if (set_url (u, r, "uploadId=%s", u->id) == -1)
    return;
  curl_easy_setopt (r->curl, CURLOPT_CUSTOMREQUEST, "DELETE");
  curl_easy_setopt (r->curl, CURLOPT_NOBODY, 1L);
  rc = perform (r);
  curl_easy_getinfo (r->curl, CURLINFO_RESPONSE_CODE, &status);
  if (rc != CURLE_OK || status < 200 || status > 299)
    image_error ("%s: the unfinished upload could not be aborted either: "
                 "its parts stay in the bucket until a lifecycle rule "
                 "or ListMultipartUploads and AbortMultipartUpload "
                 "remove them", u->name);
}

struct s3_upload *
s3_upload_start (const char *location)
{
  struct source where = { .location = (char *) location,
                          .name = (char *) location, .fd = -1 };
  struct s3_upload *u = calloc (1, sizeof *u);
  struct request r = { .curl = NULL };

  if (u == NULL || (u->name = strdup (location)) == NULL) {
    image_error ("%s: %m", location);
    free (u);
    return NULL;
  }
  if (source_curl_init (location) == -1 ||
      source_s3_resolve (&where, &u->s3) == -1)
    goto fail;
  /* S3 wants the payload's hash in a signed request: the parts are
   * not read twice to hash them (TLS protects them on the way).
   */
  if (u->s3.userpwd &&
      ((u->headers = curl_slist_append (NULL, "x-amz-content-sha256: "
                                        "UNSIGNED-PAYLOAD")) == NULL ||
       (u->s3.token && curl_slist_append (u->headers, u->s3.token) == NULL))) {
    image_error ("%s: %m", location);
    goto fail;
  }
  if (new_request (u, &r) == -1 || initiate (u, &r) == -1)
    goto fail;
  curl_easy_cleanup (r.curl);
  return u;

 fail:
  if (r.curl)
    curl_easy_cleanup (r.curl);
  s3_upload_free (u);
  return NULL;
}

int
s3_upload_send (struct s3_upload *u, int fd, uint64_t size,
                const volatile sig_atomic_t *cancel)
{
  struct request r;
  int ret;

  u->part_size = PART_SIZE;
  while (size > u->part_size * MAX_PARTS)
    u->part_size *= 2;
  if (u->part_size > MAX_PART_SIZE) {
    image_error ("%s: %" PRIu64 " bytes is more than an S3 object holds",
                 u->name, size);
    errno = EFBIG;
    return -1;
  }
  u->n_parts = size == 0 ? 1 : (size + u->part_size - 1) / u->part_size;
  u->etags = calloc (u->n_parts, sizeof *u->etags);
  if (u->etags == NULL) {
    image_error ("%s: %m", u->name);
    return -1;
  }
  if (send_parts (u, fd, size, cancel) == -1 || new_request (u, &r) == -1)
    return -1;
  ret = complete (u, &r);
  curl_easy_cleanup (r.curl);
  u->done = ret == 0;
  return ret;
}

void
s3_upload_free (struct s3_upload *u)
{
  struct request r;
  int saved = errno;

  if (u == NULL)
    return;
  if (u->id && !u->done && new_request (u, &r) == 0) {
    abort_upload (u, &r);
    curl_easy_cleanup (r.curl);
  }
  curl_slist_free_all (u->headers);
  source_s3_clear (&u->s3);
  free (u->etags);
  free (u->id);
  free (u->name);
  free (u);
  errno = saved;
}
