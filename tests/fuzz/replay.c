/* SPDX-License-Identifier: BSD-3-Clause */
/* Runs a libFuzzer harness over the files named on the command line,
 * without libFuzzer (gcc has none): make check replays the kept corpus
 * and crashers this way.  A crash or a sanitizer report is the failure.
 */

#include <config.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
main (int argc, char *argv[])
{
  for (int i = 1; i < argc; ++i) {
    FILE *fp = fopen (argv[i], "rb");
    uint8_t *data = NULL;
    size_t size = 0, cap = 0, n;

    if (fp == NULL) {
      perror (argv[i]);
      return EXIT_FAILURE;
    }
    do {
      if (size == cap) {
        cap = cap ? 2 * cap : 65536;
        data = realloc (data, cap);
        if (data == NULL) {
          perror ("realloc");
          return EXIT_FAILURE;
        }
      }
      n = fread (data + size, 1, cap - size, fp);
      size += n;
    } while (n > 0);
    if (ferror (fp)) {
      perror (argv[i]);
      return EXIT_FAILURE;
    }
    fclose (fp);
    LLVMFuzzerTestOneInput (data, size);
    free (data);
  }
  return EXIT_SUCCESS;
}
