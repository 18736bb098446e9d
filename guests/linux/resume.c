/* SPDX-License-Identifier: BSD-3-Clause */
/* qemount-resume SECONDS.NANOSECONDS SEED: run by the helper guest's
 * init once it is restored from a saved state (server/vm-state.c).  Its
 * clock then says the time of the save, and its random state is the
 * saved one, which every guest restored from that state shares: set the
 * clock to the host's, credit the host's random bytes (SEED, in hex)
 * to the kernel and make it reseed from them at once, rather than at
 * its next periodic reseed.  Busybox has no way to do either.
 */

#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_SEED 256            /* bytes */

static int
set_clock (const char *arg)
{
  struct timespec ts;
  char *end;

  errno = 0;
  ts.tv_sec = strtoll (arg, &end, 10);
  ts.tv_nsec = *end == '.' ? strtol (end + 1, &end, 10) : 0;
  if (errno || *end || ts.tv_nsec < 0 || ts.tv_nsec >= 1000000000) {
    fprintf (stderr, "qemount-resume: %s: not SECONDS.NANOSECONDS\n", arg);
    return -1;
  }
  if (clock_settime (CLOCK_REALTIME, &ts) == -1) {
    perror ("qemount-resume: clock_settime");
    return -1;
  }
  return 0;
}

static int
reseed (const char *hex)
{
  struct {
    struct rand_pool_info info;
    unsigned char bytes[MAX_SEED];
  } seed;
  size_t n = strlen (hex) / 2;
  int fd, r = -1;

  if (n == 0 || n > MAX_SEED || strlen (hex) % 2) {
    fprintf (stderr, "qemount-resume: the seed is not 1 to %d bytes in hex\n",
             MAX_SEED);
    return -1;
  }
  for (size_t i = 0; i < n; ++i) {
    if (sscanf (hex + 2 * i, "%2hhx", &seed.bytes[i]) != 1) {
      fprintf (stderr, "qemount-resume: the seed is not hex\n");
      return -1;
    }
  }
  seed.info.entropy_count = n * 8;
  seed.info.buf_size = n;
  fd = open ("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd == -1)
    perror ("qemount-resume: /dev/urandom");
  else if (ioctl (fd, RNDADDENTROPY, &seed.info) == -1)
    perror ("qemount-resume: RNDADDENTROPY");
  else if (ioctl (fd, RNDRESEEDCRNG) == -1)
    perror ("qemount-resume: RNDRESEEDCRNG");
  else
    r = 0;
  if (fd >= 0)
    close (fd);
  return r;
}

int
main (int argc, char *argv[])
{
  if (argc != 3) {
    fprintf (stderr, "usage: qemount-resume SECONDS.NANOSECONDS SEED\n");
    return 2;
  }
  return set_clock (argv[1]) == 0 && reseed (argv[2]) == 0 ? 0 : 1;
}
