/* SPDX-License-Identifier: BSD-3-Clause */
/* nbd-randread: random 4 KiB reads against an NBD export for a fixed
 * time, keeping a queue of requests in flight; prints reads per second.
 * Built and run by scripts/bench (it is a measuring tool, not a test).
 *
 *   nbd-randread URI SECONDS [QUEUE_DEPTH]
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <libnbd.h>

#define BLOCK 4096

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *nbd;
  int64_t size, blocks;
  double seconds, start, end;
  int depth, in_flight = 0;
  uint64_t done = 0;
  unsigned seed = 1;
  char *buf;

  if (argc < 3) {
    fprintf (stderr, "usage: nbd-randread URI SECONDS [QUEUE_DEPTH]\n");
    exit (2);
  }
  seconds = atof (argv[2]);
  depth = argc > 3 ? atoi (argv[3]) : 32;
  nbd = nbd_create ();
  if (nbd == NULL || nbd_connect_uri (nbd, argv[1]) == -1 ||
      (size = nbd_get_size (nbd)) < BLOCK) {
    fprintf (stderr, "nbd-randread: %s\n", nbd_get_error ());
    exit (1);
  }
  blocks = size / BLOCK;
  buf = malloc ((size_t) depth * BLOCK);
  if (buf == NULL)
    exit (1);

  start = now ();
  end = start + seconds;
  /* The data read is never looked at, so requests may share buffers. */
  while (now () < end || in_flight > 0) {
    while (in_flight < depth && now () < end) {
      uint64_t block = ((uint64_t) rand_r (&seed) << 31 | rand_r (&seed))
        % blocks;
      if (nbd_aio_pread (nbd, buf + (size_t) (in_flight % depth) * BLOCK,
                         BLOCK, block * BLOCK, NBD_NULL_COMPLETION, 0) == -1) {
        fprintf (stderr, "nbd-randread: %s\n", nbd_get_error ());
        exit (1);
      }
      in_flight++;
    }
    if (nbd_poll (nbd, -1) == -1) {
      fprintf (stderr, "nbd-randread: %s\n", nbd_get_error ());
      exit (1);
    }
    /* Retire what finished; an error here is a failed read. */
    for (int64_t cookie; (cookie = nbd_aio_peek_command_completed (nbd)) > 0; ) {
      if (nbd_aio_command_completed (nbd, cookie) == -1) {
        fprintf (stderr, "nbd-randread: %s\n", nbd_get_error ());
        exit (1);
      }
      in_flight--;
      done++;
    }
  }
  printf ("%.0f\n", done / (now () - start));
  nbd_shutdown (nbd, 0);
  nbd_close (nbd);
  free (buf);
  return 0;
}
