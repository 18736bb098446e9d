/* SPDX-License-Identifier: BSD-3-Clause */
/* Allocation that cannot fail: out of memory is not worth a distinct
 * path in a command like this.  Apart from qemount.c so that the fuzz
 * harness of the command's parsers (tests/fuzz/fuzz-server.c) links
 * the same functions.
 */

#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemount.h"

char *
xstrdup (const char *s)
{
  char *r = strdup (s);

  if (r == NULL) {
    perror ("strdup");
    exit (EXIT_ERROR);
  }
  return r;
}

char *
xvasprintf (const char *fs, va_list args)
{
  char *r;

  if (vasprintf (&r, fs, args) == -1) {
    perror ("asprintf");
    exit (EXIT_ERROR);
  }
  return r;
}

char *
xasprintf (const char *fs, ...)
{
  va_list args;
  char *r;

  va_start (args, fs);
  r = xvasprintf (fs, args);
  va_end (args);
  return r;
}
