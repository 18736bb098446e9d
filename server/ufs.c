/* SPDX-License-Identifier: BSD-3-Clause */
/* UFS (the BSDs' FFS, Solaris's UFS, HP-UX's HFS): which variant it is.
 *
 * libblkid says "ufs" and a VERSION of 1 or 2, but Linux's ufs driver
 * cannot find the variant out for itself: it must be told with
 * ufstype=, and without it reads every UFS as "old" (read-only, and
 * wrong for anything newer than 4.3BSD).  The variants differ in where
 * the superblock is and in fields of it:
 *   ufs2     UFS2 magic, superblock at 64 KiB (FreeBSD, NetBSD's FFSv2);
 *   44bsd    UFS1 with the 4.4BSD inode format (fs_old_inodefmt = 2):
 *            FreeBSD, NetBSD, OpenBSD, macOS before 10.3;
 *   hp       one of HP-UX's own magic numbers;
 *   sun, sunx86
 *            UFS1 without the 4.4BSD inode format: Solaris and SunOS,
 *            big-endian (SPARC) or little-endian (x86).
 * Linux picks the byte order itself; we only need it to tell Solaris's
 * two apart.  Pre-4.4BSD, NeXTSTEP and OpenSTEP disks (ufstype=old,
 * nextstep, openstep) look like Solaris's here and are not told apart.
 *
 * A UFS2 superblock at 8 KiB (where makefs writes it; the BSDs accept
 * it) Linux does not find: its ufs2 reads 64 KiB only, and 44bsd, which
 * reads 8 KiB, reads the inodes as UFS1's.  Such a filesystem gets no
 * variant, and qemount says why it cannot mount it.
 */

#include <config.h>

#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "qemount.h"

#define SB_UFS1 8192
#define SB_UFS2 65536
#define MAGIC_AT 1372           /* fs_magic, from the superblock's start */
#define INODEFMT_AT 1324        /* fs_old_inodefmt (4.4BSD's fs_inodefmt) */
#define INODEFMT_44BSD 2

#define UFS1_MAGIC 0x00011954
#define UFS2_MAGIC 0x19540119
/* HP-UX's: long file names, extended attributes, files over 4 GiB. */
#define HP_MAGIC_LFN 0x00095014
#define HP_MAGIC_FEA 0x00195612
#define HP_MAGIC_4GB 0x05231994

/* The magic of the superblock at sb[], as a little-endian or, failing
 * that, a big-endian number; *be says which.
 */
static uint32_t
magic (const uint8_t *sb, bool *be)
{
  static const uint32_t known[] = {
    UFS1_MAGIC, UFS2_MAGIC, HP_MAGIC_LFN, HP_MAGIC_FEA, HP_MAGIC_4GB,
  };

  for (int order = 0; order < 2; ++order) {
    uint32_t m = order ? load_be32 (sb + MAGIC_AT) : load_le32 (sb + MAGIC_AT);

    for (size_t i = 0; i < sizeof known / sizeof known[0]; ++i)
      if (m == known[i]) {
        *be = order;
        return m;
      }
  }
  return 0;
}

/* Read the superblock area at offset into sb; false if it is past the
 * end of the filesystem or cannot be read.
 */
static bool
read_sb (int fd, uint64_t start, uint64_t size, uint64_t offset,
         uint8_t sb[MAGIC_AT + 4])
{
  if (offset + MAGIC_AT + 4 > size)
    return false;
  return pread (fd, sb, MAGIC_AT + 4, start + offset) == MAGIC_AT + 4;
}

const char *
ufs_variant (int fd, uint64_t start, uint64_t size, const char **why)
{
  uint8_t sb[MAGIC_AT + 4];
  uint32_t m, fmt;
  bool be;

  if (read_sb (fd, start, size, SB_UFS2, sb) &&
      magic (sb, &be) == UFS2_MAGIC)
    return "ufs2";
  *why = "its superblock cannot be read";
  if (!read_sb (fd, start, size, SB_UFS1, sb))
    return NULL;
  switch ((m = magic (sb, &be))) {
  case UFS1_MAGIC:
    fmt = be ? load_be32 (sb + INODEFMT_AT) : load_le32 (sb + INODEFMT_AT);
    if (fmt == INODEFMT_44BSD)
      return "44bsd";
    return be ? "sun" : "sunx86";
  case HP_MAGIC_LFN: case HP_MAGIC_FEA: case HP_MAGIC_4GB:
    return "hp";
  default:
    *why = m == UFS2_MAGIC ?
      "its UFS2 superblock is at 8 KiB (where makefs writes it), and "
      "Linux's ufs driver looks for one at 64 KiB only" :
      "Linux's ufs driver has no variant (ufstype=) for its superblock";
    return NULL;
  }
}
