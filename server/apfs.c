/* SPDX-License-Identifier: BSD-3-Clause */
/* APFS: which volumes a container holds.
 *
 * libblkid says "apfs" for the container superblock (NXSB) in block 0.
 * The helper guest's apfs module (linux-apfs-rw, which build-guest
 * builds) mounts one volume of the container, chosen by its slot in the
 * superblock's nx_fs_oid[] (vol=N); a slot without a volume is 0.  The
 * copy in block 0 is the one written when the container was last
 * unmounted cleanly: newer checkpoints, which the module reads, may
 * differ from it after a crash.  Volume names are in each volume's own
 * superblock, reached through the container's object map B-tree: not
 * read here.
 */

#include <config.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "qemount.h"

#define MAGIC_AT 32             /* nx_magic, "NXSB" */
#define MAX_FS_AT 0xb4          /* nx_max_file_systems */
#define FS_OIDS_AT 0xb8         /* nx_fs_oid[APFS_MAX_VOLUMES] */
#define SB_BYTES (FS_OIDS_AT + APFS_MAX_VOLUMES * 8)

int
apfs_volumes (int fd, uint64_t start, uint64_t size,
              bool volumes[APFS_MAX_VOLUMES])
{
  uint8_t sb[SB_BYTES];
  uint32_t max;
  int n = 0;

  memset (volumes, 0, APFS_MAX_VOLUMES * sizeof volumes[0]);
  if (size < SB_BYTES || pread (fd, sb, SB_BYTES, start) != SB_BYTES ||
      memcmp (sb + MAGIC_AT, "NXSB", 4) != 0)
    return -1;
  /* The slots past the container's own maximum are not its volumes,
   * whatever they hold.
   */
  max = load_le32 (sb + MAX_FS_AT);
  for (uint32_t i = 0; i < APFS_MAX_VOLUMES && i < max; ++i)
    if (load_le64 (sb + FS_OIDS_AT + i * 8) != 0) {
      volumes[i] = true;
      n++;
    }
  return n;
}

void
apfs_format_volumes (const struct filesystem *fs,
                     char buf[APFS_VOLUMES_LEN])
{
  size_t used = 0;

  buf[0] = '\0';
  for (int i = 0; i < APFS_MAX_VOLUMES; ++i)
    if (fs->volumes[i])
      used += snprintf (buf + used, APFS_VOLUMES_LEN - used, "%s%d",
                        used ? " " : "", i);
}
