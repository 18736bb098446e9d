/* SPDX-License-Identifier: BSD-3-Clause */
/* Output helpers: sizes for people, strings for JSON, and image
 * locations without the secrets a URL may hold.
 */

#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemount.h"
#include "source.h"

/* "64 MiB", "1.5 GiB", "512 B": binary units, one decimal when not
 * exact.
 */
void
format_size (char *buf, size_t len, uint64_t bytes)
{
  static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB",
                                       "PiB", "EiB" };
  unsigned u = 0;
  uint64_t scale = 1;

  while (u < 6 && bytes / scale >= 1024) {
    scale *= 1024;
    ++u;
  }
  if (bytes % scale == 0)
    snprintf (buf, len, "%" PRIu64 " %s", bytes / scale, units[u]);
  else
    snprintf (buf, len, "%.1f %s", (double) bytes / scale, units[u]);
}

/* A JSON string: quotes, backslashes and control characters escaped.
 * Bytes >= 0x80 pass through; paths and labels are UTF-8 in practice,
 * and a JSON parser that meets invalid UTF-8 says so rather than
 * misreading it.
 */
void
json_string (FILE *fp, const char *s)
{
  fputc ('"', fp);
  for (const unsigned char *p = (const unsigned char *) s; *p; ++p) {
    switch (*p) {
    case '"': fputs ("\\\"", fp); break;
    case '\\': fputs ("\\\\", fp); break;
    case '\n': fputs ("\\n", fp); break;
    case '\t': fputs ("\\t", fp); break;
    default:
      if (*p < 0x20)
        fprintf (fp, "\\u%04x", *p);
      else
        fputc (*p, fp);
    }
  }
  fputc ('"', fp);
}

void
json_string_or_null (FILE *fp, const char *s)
{
  if (s)
    json_string (fp, s);
  else
    fputs ("null", fp);
}

/* sep "key": "value" (or null), for the members of an object. */
void
json_member (FILE *fp, const char *sep, const char *key, const char *value)
{
  fputs (sep, fp);
  json_string (fp, key);
  fputs (": ", fp);
  json_string_or_null (fp, value);
}

/* An image operand, whose URL may have a user, a password or an HTTP
 * query in it: then it is copied, and overwritten in our argv (as curl
 * does with -u) by what messages call it, so that the process list
 * shows no more of it than they do however long we run.  The display
 * name is a part of the URL, so it fits.  Returns the whole location,
 * which lives as long as argv does (kept here, so that it is not a
 * leak).
 */
const char *
hide_url_secrets (char *operand)
{
  static char **kept;
  static size_t n_kept;
  char *name, *url, **more;
  size_t len;

  if (!source_hides (operand))
    return operand;
  name = source_display_name (operand);
  more = realloc (kept, (n_kept + 1) * sizeof *kept);
  if (more)
    kept = more;
  url = strdup (operand);
  if (name == NULL || more == NULL || url == NULL) {
    perror ("malloc");
    exit (EXIT_ERROR);
  }
  kept[n_kept++] = url;
  len = strlen (name);
  memcpy (operand, name, len);
  memset (operand + len, '\0', strlen (operand + len));
  free (name);
  return url;
}
