/* SPDX-License-Identifier: BSD-3-Clause */
/* S3 objects as HTTP(S) ones: s3://BUCKET/KEY becomes the object's URL
 * at the endpoint, with the credentials libcurl signs its requests with
 * (AWS Signature Version 4), found where the AWS tools look for them.
 * lib/source-http.c then reads it like any other URL.
 *
 * Messages name s3://BUCKET/KEY only; the secret is cleared from memory
 * when the source closes.
 */

#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "image.h"
#include "source.h"

static const char *
env (const char *name)
{
  const char *v = getenv (name);

  return v && *v ? v : NULL;
}

/* A malloc'd string, or NULL. */
static char * __attribute__ ((format (printf, 1, 2)))
alloc_printf (const char *fmt, ...)
{
  va_list ap;
  char *s;
  int n;

  va_start (ap, fmt);
  n = vasprintf (&s, fmt, ap);
  va_end (ap);
  return n == -1 ? NULL : s;
}

/* len bytes of s, all letters, digits or in allowed; not none. */
static bool
only (const char *s, size_t len, const char *allowed)
{
  for (size_t i = 0; i < len; ++i)
    if (!isalnum ((unsigned char) s[i]) && strchr (allowed, s[i]) == NULL)
      return false;
  return len > 0;
}

/* Path-style addressing (ENDPOINT/BUCKET/KEY) when asked for, and where
 * a bucket cannot be a host name: an endpoint that is an IP address or
 * localhost, a bucket name with a dot (the endpoint's certificate would
 * not match BUCKET.HOST).  Otherwise virtual-host style, the only one
 * newer AWS buckets take.
 */
static bool
path_style (const char *host, size_t host_len, const char *bucket)
{
  const char *force = env ("AWS_S3_FORCE_PATH_STYLE");

  if (force && (strcasecmp (force, "true") == 0 || strcmp (force, "1") == 0))
    return true;
  return host[0] == '[' || strspn (host, "0123456789.") == host_len ||
    (host_len == 9 && strncasecmp (host, "localhost", 9) == 0) ||
    strchr (bucket, '.') != NULL;
}

char *
source_s3_encode (const char *s, const char *keep)
{
  char *enc = malloc (3 * strlen (s) + 1), *p = enc;

  if (enc == NULL)
    return NULL;
  for (const unsigned char *c = (const unsigned char *) s; *c; ++c)
    if (isalnum (*c) || strchr (keep, *c))
      *p++ = *c;
    else
      p += sprintf (p, "%%%02X", *c);
  *p = '\0';
  return enc;
}

/* The object's URL: the endpoint from AWS_ENDPOINT_URL_S3 or
 * AWS_ENDPOINT_URL (its path, a gateway's prefix, kept), else AWS's for
 * the region.
 */
static char *
object_url (const struct source *s, const char *bucket, const char *key,
            const char *region)
{
  const char *endpoint = env ("AWS_ENDPOINT_URL_S3");
  const char *host, *prefix;
  char *aws = NULL, *path = NULL, *url = NULL;
  size_t authority_len, host_len, prefix_len;

  if (endpoint == NULL)
    endpoint = env ("AWS_ENDPOINT_URL");
  if (endpoint == NULL) {
    if ((aws = alloc_printf ("https://s3.%s.amazonaws.com", region)) == NULL)
      goto nomem;
    endpoint = aws;
  }
  if (strncasecmp (endpoint, "http://", 7) != 0 &&
      strncasecmp (endpoint, "https://", 8) != 0) {
    image_error ("%s: the S3 endpoint %s is not an http:// or https:// "
                 "URL", s->name, endpoint);
    errno = EINVAL;
    goto out;
  }
  host = strstr (endpoint, "://") + 3;
  authority_len = strcspn (host, "/?#");
  host_len = host[0] == '[' ? strcspn (host, "]/?#") + 1 :
    strcspn (host, ":/?#");
  prefix = host + authority_len;
  prefix_len = strcspn (prefix, "?#");
  while (prefix_len > 0 && prefix[prefix_len - 1] == '/')
    prefix_len--;
  /* The key kept as written (a key is written percent-encoded where it
   * needs to be, and relative names are joined so), any other byte a
   * URL cannot carry encoded.
   */
  path = source_s3_encode (key, "-._~/%");
  if (path == NULL)
    goto nomem;
  if (path_style (host, host_len, bucket))
    url = alloc_printf ("%.*s%.*s/%s/%s", (int) (host - endpoint), endpoint,
                  (int) (authority_len + prefix_len), host, bucket, path);
  else
    url = alloc_printf ("%.*s%s.%.*s/%s", (int) (host - endpoint), endpoint,
                  bucket, (int) (authority_len + prefix_len), host, path);
  if (url != NULL)
    goto out;

 nomem:
  image_error ("%s: %m", s->name);
 out:
  free (path);
  free (aws);
  return url;
}

/* s with blanks at both ends cut off, in place. */
static char *
trim (char *s)
{
  char *end;

  s += strspn (s, " \t");
  end = s + strlen (s);
  while (end > s && isspace ((unsigned char) end[-1]))
    end--;
  *end = '\0';
  return s;
}

static void
clear_free (char *secret)
{
  if (secret) {
    explicit_bzero (secret, strlen (secret));
    free (secret);
  }
}

/* The profile's keys from the shared credentials file (a small INI
 * file: "[profile]" sections of "name = value" lines).  0 (with *id
 * NULL if the file or profile is not there and nobody asked for that
 * profile), or -1 after image_error.
 */
static int
read_credentials_file (const struct source *s, char **id, char **secret,
                       char **token)
{
  const char *file = env ("AWS_SHARED_CREDENTIALS_FILE");
  const char *profile = env ("AWS_PROFILE"), *home = env ("HOME");
  char *path = NULL, *line = NULL;
  size_t size = 0;
  bool in_profile = false, found = false;
  FILE *fp;
  int r = -1;

  if (file == NULL && home != NULL &&
      (path = alloc_printf ("%s/.aws/credentials", home)) == NULL) {
    image_error ("%s: %m", s->name);
    return -1;
  }
  if (file == NULL)
    file = path;
  fp = file ? fopen (file, "r") : NULL;
  if (fp == NULL) {
    free (path);
    if (profile == NULL || file == NULL)
      return 0;
    image_error ("%s: AWS profile %s: cannot read %s: %m", s->name,
                 profile, file);
    return -1;
  }
  while (getline (&line, &size, fp) != -1) {
    char *l = trim (line), *eq, *name, **to;

    if (l[0] == '[') {
      char *end = strchr (l, ']');

      if (end)
        *end = '\0';
      in_profile = strcmp (trim (l + 1), profile ? profile : "default") == 0;
      found |= in_profile;
      continue;
    }
    eq = strchr (l, '=');
    if (!in_profile || eq == NULL || l[0] == '#' || l[0] == ';')
      continue;
    *eq = '\0';
    name = trim (l);
    to = strcmp (name, "aws_access_key_id") == 0 ? id :
      strcmp (name, "aws_secret_access_key") == 0 ? secret :
      strcmp (name, "aws_session_token") == 0 ? token : NULL;
    if (to == NULL)
      continue;
    clear_free (*to);
    if ((*to = strdup (trim (eq + 1))) == NULL) {
      image_error ("%s: %m", s->name);
      goto out;
    }
  }
  if (profile && !found)
    image_error ("%s: AWS profile %s is not in %s", s->name, profile, file);
  else if (found && (*id == NULL) != (*secret == NULL))
    image_error ("%s: AWS profile %s in %s has only half a key (both "
                 "aws_access_key_id and aws_secret_access_key are needed)",
                 s->name, profile ? profile : "default", file);
  else
    r = 0;
 out:
  if (line)
    explicit_bzero (line, size);
  free (line);
  fclose (fp);
  free (path);
  if (r == -1)
    errno = EINVAL;
  return r;
}

char *
source_s3_xml_value (const char *body, const char *tag)
{
  char open[64], close[64];
  const char *start, *end;

  snprintf (open, sizeof open, "<%s>", tag);
  snprintf (close, sizeof close, "</%s>", tag);
  start = strstr (body, open);
  end = start ? strstr (start, close) : NULL;
  return end ? strndup (start + strlen (open),
                        end - start - strlen (open)) : NULL;
}

void
source_s3_error_code (const char *body, char *code, size_t size)
{
  char *value = source_s3_xml_value (body, "Code");
  size_t len = value ? strlen (value) : 0;

  code[0] = '\0';
  /* A word, or nothing: the body is the server's, not ours to print. */
  if (value && len < size &&
      strspn (value, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
              "0123456789.") == len)
    memcpy (code, value, len + 1);
  free (value);
}

void
source_s3_clear (struct source_s3 *r)
{
  free (r->url);
  free (r->sigv4);
  clear_free (r->userpwd);
  clear_free (r->token);
  memset (r, 0, sizeof *r);
}

int
source_s3_resolve (const struct source *s, struct source_s3 *r)
{
  const char *bucket = s->location + 5, *key = strchr (bucket, '/');
  const char *region = env ("AWS_REGION");
  char *id = NULL, *secret = NULL, *token = NULL, *name = NULL;

  if (region == NULL)
    region = env ("AWS_DEFAULT_REGION");
  if (region == NULL)
    region = "us-east-1";
  /* The bucket goes into a host name, the region there and into
   * libcurl's signing parameters: neither may carry anything else.
   */
  if (key == NULL || key[1] == '\0' ||
      !only (bucket, key - bucket, ".-_") ||
      strpbrk (key, "?#") != NULL) {
    image_error ("%s: not an S3 object: s3://BUCKET/KEY, with '?' and "
                 "'#' in the key written %%3F and %%23", s->name);
    errno = EINVAL;
    return -1;
  }
  if (!only (region, strlen (region), "-")) {
    image_error ("%s: '%s' is not an AWS region", s->name, region);
    errno = EINVAL;
    return -1;
  }
  name = strndup (bucket, key - bucket);
  if (name == NULL) {
    image_error ("%s: %m", s->name);
    return -1;
  }
  r->url = object_url (s, name, key + 1, region);
  free (name);
  if (r->url == NULL)
    goto fail;

  if (env ("AWS_ACCESS_KEY_ID") && env ("AWS_SECRET_ACCESS_KEY")) {
    id = strdup (env ("AWS_ACCESS_KEY_ID"));
    secret = strdup (env ("AWS_SECRET_ACCESS_KEY"));
    if (env ("AWS_SESSION_TOKEN"))
      token = strdup (env ("AWS_SESSION_TOKEN"));
    if (id == NULL || secret == NULL ||
        (env ("AWS_SESSION_TOKEN") && token == NULL)) {
      image_error ("%s: %m", s->name);
      goto fail;
    }
  }
  else if (read_credentials_file (s, &id, &secret, &token) == -1)
    goto fail;
  /* No key anywhere: anonymous requests, for public buckets. */
  if (id && secret &&
      ((r->userpwd = alloc_printf ("%s:%s", id, secret)) == NULL ||
       (r->sigv4 = alloc_printf ("aws:amz:%s:s3", region)) == NULL ||
       (token && (r->token = alloc_printf ("x-amz-security-token: %s",
                                           token)) == NULL))) {
    image_error ("%s: %m", s->name);
    goto fail;
  }
  free (id);
  clear_free (secret);
  clear_free (token);
  return 0;

 fail:
  free (id);
  clear_free (secret);
  clear_free (token);
  source_s3_clear (r);
  return -1;
}
