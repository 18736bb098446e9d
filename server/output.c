/* SPDX-License-Identifier: BSD-3-Clause */
/* Output helpers: sizes for people, strings for JSON. */

#include <config.h>

#include <inttypes.h>
#include <stdio.h>

#include "qemount.h"

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
