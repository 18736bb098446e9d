/* SPDX-License-Identifier: BSD-3-Clause */
/* The options qemount mount and extract share: the image and how to open
 * it (info takes those too), the filesystem in it, and what the helper
 * VM needs to reach it; and the preparation both make with them.
 */

#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemount.h"
#include "source.h"

void
disk_options_init (struct disk_options *d)
{
  memset (d, 0, sizeof *d);
  d->req.backing = BACKING_SAME_DIR;
  d->backing = "samedir";
  d->accel = "auto";
  d->volume = -1;
}

/* The IMAGE operand: messages call it what argv shows after this. */
void
disk_options_image (struct disk_options *d, char *operand)
{
  d->req.path = hide_url_secrets (operand);
  d->name = operand;
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
    /* "2a": partition a of the BSD disklabel in slice 2. */
    d->letter = *end >= 'a' && *end <= 'z' ? *end++ : 0;
    if (errno || *end || end == arg || d->partition < 1 ||
        d->partition > 1024) {
      errorf ("--partition %s: must be a partition number from 1, or a "
              "number and a letter for a BSD disklabel's (2a)", arg);
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
  case OPT_DISK_SNAPSHOT:
    /* The state file has one value a line. */
    if (strchr (arg, '\n')) {
      errorf ("--snapshot: names with a newline are not supported");
      return -1;
    }
    d->req.snapshot = arg;
    return 1;
  case OPT_DISK_CACHE_DIR: {
    /* Absolute: nbdkit runs elsewhere.  Checked when the image opens.
     * Kept here, as long as the option it comes from.
     */
    static char *cache_dir;

    free (cache_dir);
    d->req.cache_dir = cache_dir = absolute_path (arg);
    return 1;
  }
  case OPT_DISK_TIMEOUT: {
    unsigned long seconds;

    errno = 0;
    seconds = strtoul (arg, &end, 10);
    if (errno || *end || end == arg || *arg < '1' || *arg > '9' ||
        seconds > 86400) {
      errorf ("--timeout %s: must be a number of seconds, from 1 to 86400",
              arg);
      return -1;
    }
    d->req.timeout = seconds;
    return 1;
  }
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
  case OPT_DISK_VOLUME:
    /* A name, unless it is all digits: choose_volume looks it up. */
    if (*arg && strspn (arg, "0123456789") < strlen (arg)) {
      d->volume_name = arg;
      d->volume = -1;
      return 1;
    }
    d->volume_name = NULL;
    errno = 0;
    d->volume = strtol (arg, &end, 10);
    if (errno || *end || end == arg || d->volume >= APFS_MAX_VOLUMES) {
      errorf ("--volume %s: must be an APFS volume's number, from 0 (the "
              "first) to 99, or its name", arg);
      return -1;
    }
    return 1;
  default:
    return 0;
  }
}

/* --volume N or NAME: the module's vol=N, for an APFS container only,
 * and a volume it lists (apfs.c) when libblkid found it and its
 * superblock was read: the module's own error for an empty slot reads
 * "likely corruption".  A name is looked up among those read on the
 * host: the module takes numbers only.
 */
static int
choose_volume (const char *image, int volume, const char *name, bool raw,
               struct choice *c)
{
  CLEANUP_FREE char *vols = NULL;
  CLEANUP_FREE char *arg = name ? xstrdup (name) : xasprintf ("%d", volume);

  if (raw) {
    errorf ("--raw exports the disk itself: --volume does not apply");
    return EXIT_USAGE;
  }
  if (c->fstype == NULL || strcmp (c->fstype, "apfs") != 0) {
    errorf ("%s: --volume %s: the filesystem is %s, not an APFS container",
            image, arg, c->fstype ? c->fstype : "not known");
    return EXIT_USAGE;
  }
  if (c->fs->type && strcmp (c->fs->type, "apfs") == 0 &&
      c->fs->n_volumes >= 0) {
    vols = apfs_format_volumes (c->fs);
    if (name)
      volume = apfs_find_volume (c->fs, name);
    if (volume == -1 || !c->fs->volumes[volume].used) {
      errorf ("%s: --volume %s: no such volume in the APFS container; it "
              "has: %s", image, arg, c->fs->n_volumes ? vols : "none");
      return EXIT_NO_FILESYSTEM;
    }
  }
  else if (name) {
    errorf ("%s: --volume %s: the APFS container's volume names cannot be "
            "read on the host: give the volume's number", image, name);
    return EXIT_NO_FILESYSTEM;
  }
  if (name)
    debugf ("%s: --volume %s is volume %d", image, name, volume);
  snprintf (c->fsopts, sizeof c->fsopts, "vol=%d", volume);
  return EXIT_OK;
}

int
prepare (struct preparation *p)
{
  const struct disk_options *d = p->disk;
  const struct filesystem *fs;
  struct image *img;
  char *image;
  int status;

  img = open_image (&d->req, &status);
  if (img == NULL)
    return status;
  if (probe_disk (img, &p->layout) == -1) {
    image_close (img);
    return EXIT_BAD_IMAGE;
  }
  if (p->opened)
    p->opened (img, p->opaque);
  image_close (img);
  status = choose_filesystem (d->name, &p->layout, d->partition,
                              d->letter, d->fstype, p->raw, &p->choice);
  if (status == EXIT_OK && (d->volume >= 0 || d->volume_name))
    status = choose_volume (d->name, d->volume, d->volume_name, p->raw,
                            &p->choice);
  if (status == EXIT_OK && p->chosen)
    status = p->chosen (&p->choice, p->opaque);
  /* Asked for before anything starts: the prompt is not a timeout. */
  fs = p->choice.fs;
  if (status == EXIT_OK && !p->raw)
    status = secret_get (d->name, d->key_file, fs && fs->type &&
                         strcmp (fs->type, "crypto_LUKS") == 0, &p->key);
  if (status == EXIT_OK && p->before_state)
    status = p->before_state (p->opaque);
  if (status != EXIT_OK)
    return status;

  /* Recorded by absolute path, or the URL as messages show it; nbdkit
   * gets a URL with secrets from a file (start_nbdkit).
   */
  image = source_is_url (d->req.path) ? xstrdup (d->name) :
    realpath (d->req.path, NULL);
  if (image == NULL) {
    errorf ("%s: %m", d->name);
    return EXIT_NO_IMAGE;
  }
  if (interrupted) {
    errorf ("interrupted");
    free (image);
    return EXIT_INTERRUPTED;
  }
  p->st = state_create ();
  if (p->st == NULL) {
    free (image);
    return EXIT_ERROR;
  }
  p->st->image = image;
  p->st->format = d->req.format ? xstrdup (d->req.format) : NULL;
  p->st->snapshot = d->req.snapshot ? xstrdup (d->req.snapshot) : NULL;
  p->st->partition = p->choice.partition;
  p->st->letter = p->choice.letter;
  p->st->part_start = p->choice.start;
  p->st->part_size = p->choice.size;
  p->st->fstype = p->choice.fstype ? xstrdup (p->choice.fstype) : NULL;
  return EXIT_OK;
}

void
preparation_free (struct preparation *p)
{
  state_free (p->st);
  p->st = NULL;
  free_disk_layout (&p->layout);
  secret_free (&p->key);
}
