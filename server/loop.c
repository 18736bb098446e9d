/* SPDX-License-Identifier: BSD-3-Clause */
/* Loop devices, set up with the kernel's ioctls (LOOP_CONFIGURE, Linux
 * 5.8 and later).
 *
 * Devices are created with autoclear: the kernel detaches one by itself
 * when its last user goes away.  The caller keeps the device open until
 * the filesystem is mounted on it, so a set-up that dies before that
 * leaves no loop device behind, and after umount the device goes away
 * with the mount.  Teardown still detaches explicitly, and by backing
 * file, whatever is left.
 */

#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/loop.h>

#include "qemount.h"

/* Attach file to a free loop device.  Returns the device's name and sets
 * *fd to it, opened; closing *fd before something else holds the device
 * detaches it.
 */
char *
loop_attach (const char *file, bool readonly, int *fd)
{
  int mode = readonly ? O_RDONLY : O_RDWR;
  int ctl = -1, backing = -1, dev = -1;
  char *name = NULL;

  ctl = open ("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl == -1) {
    errorf ("/dev/loop-control: %m");
    goto out;
  }
  backing = open (file, mode | O_CLOEXEC);
  if (backing == -1) {
    errorf ("%s: %m", file);
    goto out;
  }

  /* Another process may take the free device between the two ioctls;
   * then we ask again.
   */
  for (int tries = 0; tries < 16; ++tries) {
    struct loop_config config = {
      .fd = backing,
      .info.lo_flags = LO_FLAGS_AUTOCLEAR |
        (readonly ? LO_FLAGS_READ_ONLY : 0),
    };
    int n = ioctl (ctl, LOOP_CTL_GET_FREE);

    if (n == -1) {
      errorf ("no free loop device: %m");
      goto out;
    }
    free (name);
    name = xasprintf ("/dev/loop%d", n);
    dev = open (name, mode | O_CLOEXEC);
    if (dev == -1) {
      errorf ("%s: %m", name);
      goto out;
    }
    strncpy ((char *) config.info.lo_file_name, file, LO_NAME_SIZE - 1);
    if (ioctl (dev, LOOP_CONFIGURE, &config) == 0) {
      debugf ("%s: attached to %s", name, file);
      *fd = dev;
      close (ctl);
      close (backing);
      return name;
    }
    if (errno != EBUSY) {
      errorf ("%s: cannot attach %s: %m", name, file);
      goto out;
    }
    close (dev);
    dev = -1;
  }
  errorf ("no free loop device (all taken while trying)");

 out:
  if (dev >= 0)
    close (dev);
  if (backing >= 0)
    close (backing);
  if (ctl >= 0)
    close (ctl);
  free (name);
  return NULL;
}

/* The backing file of a loop device ("loop3"), or NULL if unbound. */
static char *
backing_file (const char *sysname)
{
  char path[128], *line = NULL;
  size_t len = 0;
  ssize_t n;
  FILE *fp;

  snprintf (path, sizeof path, "/sys/block/%s/loop/backing_file", sysname);
  fp = fopen (path, "re");
  if (fp == NULL)
    return NULL;
  n = getline (&line, &len, fp);
  fclose (fp);
  if (n <= 0) {
    free (line);
    return NULL;
  }
  if (line[n - 1] == '\n')
    line[n - 1] = '\0';
  return line;
}

/* Detach device; a device already detached is fine.  Waits (up to 5
 * seconds) until the kernel has let go of the backing file, so that the
 * file system holding it can be unmounted next.
 */
int
loop_detach (const char *device)
{
  const char *sysname = strrchr (device, '/');
  char *backing;
  int fd;

  sysname = sysname ? sysname + 1 : device;
  fd = open (device, O_RDONLY | O_CLOEXEC);
  if (fd == -1) {
    if (errno == ENOENT || errno == ENXIO)
      return 0;
    errorf ("%s: %m", device);
    return -1;
  }
  if (ioctl (fd, LOOP_CLR_FD) == -1 && errno != ENXIO) {
    errorf ("%s: cannot detach: %m", device);
    close (fd);
    return -1;
  }
  close (fd);
  for (int waited = 0; waited < 5000; waited += 10) {
    backing = backing_file (sysname);
    if (backing == NULL)
      return 0;
    free (backing);
    sleep_ms (10);
  }
  errorf ("%s: still attached 5 seconds after detaching it", device);
  return -1;
}

/* Detach every loop device whose backing file lies under dir. */
int
loop_detach_backed_under (const char *dir)
{
  size_t dlen = strlen (dir);
  struct dirent *d;
  DIR *sys;
  int r = 0;

  sys = opendir ("/sys/block");
  if (sys == NULL)
    return 0;
  while ((d = readdir (sys)) != NULL) {
    char *backing, device[300];

    if (strncmp (d->d_name, "loop", 4) != 0)
      continue;
    backing = backing_file (d->d_name);
    if (backing && strncmp (backing, dir, dlen) == 0 &&
        backing[dlen] == '/') {
      snprintf (device, sizeof device, "/dev/%s", d->d_name);
      debugf ("%s: detaching (backed by %s)", device, backing);
      if (loop_detach (device) == -1)
        r = -1;
    }
    free (backing);
  }
  closedir (sys);
  return r;
}
