/* SPDX-License-Identifier: BSD-3-Clause */
/* The options qemount mount and extract share: the image and how to open
 * it, the filesystem in it, and what the helper VM needs to reach it.
 */

#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qemount.h"

void
disk_options_init (struct disk_options *d)
{
  memset (d, 0, sizeof *d);
  d->req.backing = BACKING_SAME_DIR;
  d->backing = "samedir";
  d->accel = "auto";
}

int
parse_disk_option (int c, const char *arg, struct disk_options *d)
{
  const char *msg;
  char *end;

  switch (c) {
  case 'p':
    errno = 0;
    d->partition = strtol (arg, &end, 10);
    if (errno || *end || end == arg || d->partition < 1 ||
        d->partition > 1024) {
      errorf ("--partition %s: must be a partition number from 1", arg);
      return -1;
    }
    return 1;
  case 't':
    d->fstype = arg;
    return 1;
  case OPT_DISK_ACCEL:
    if (strcmp (arg, "auto") && strcmp (arg, "kvm") && strcmp (arg, "tcg")) {
      errorf ("--accel %s: must be auto, kvm or tcg", arg);
      return -1;
    }
    d->accel = arg;
    return 1;
  case OPT_DISK_FORMAT:
    d->req.format = strcmp (arg, "auto") == 0 ? NULL : arg;
    return 1;
  case OPT_DISK_BACKING:
    if ((msg = parse_backing (arg, &d->req.backing)) != NULL) {
      errorf ("%s", msg);
      return -1;
    }
    d->backing = arg;
    return 1;
  case OPT_DISK_LV:
    if (!lv_name_ok (arg)) {
      errorf ("--lv %s: must be VG/LV, names of letters, digits and "
              "+ _ . -", arg);
      return -1;
    }
    d->lv = arg;
    return 1;
  case OPT_DISK_KEY_FILE:
    d->key_file = arg;
    return 1;
  default:
    return 0;
  }
}
