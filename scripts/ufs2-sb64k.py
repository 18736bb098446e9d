#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Move the superblock of a UFS2 image made by makefs to 64 KiB.

Debian's makefs writes a UFS2 filesystem with its superblock at 8 KiB
(fs_sblockloc 8192), which the BSDs accept but Linux's ufstype=ufs2 does
not look at: it reads 64 KiB only, where FreeBSD's newfs and NetBSD's
newfs put it.  This gives the test suite UFS2 images laid out the way
the BSDs' own newfs lays them out as far as a reader can tell, from a
maker Debian has: the filesystem is makefs's, only the superblock moves.

The 8 KiB at 64 KiB must be free for that: this is so when cylinder
group 0's inode table covers it with inodes nobody uses (makefs -o
density=4096 on a small image makes the table 2 MiB long), which is
checked: the range must lie inside the table and be all zeros (unused
UFS2 inodes, mode 0).  The old copy at 8 KiB is cleared, as on a disk
from the BSDs.

usage: ufs2-sb64k.py IMAGE
"""

import struct
import sys

OLD, NEW, SBSIZE = 8192, 65536, 8192
FS_UFS2_MAGIC = 0x19540119
# Offsets in struct fs (FreeBSD's sys/ufs/ffs/fs.h).
FS_IBLKNO, FS_DBLKNO, FS_FSIZE = 16, 20, 52
FS_SBLOCKLOC, FS_MAGIC = 1000, 1372


def main(path):
    with open(path, "r+b") as f:
        f.seek(OLD)
        sb = bytearray(f.read(SBSIZE))
        if len(sb) < SBSIZE or struct.unpack_from("<i", sb, FS_MAGIC)[0] != FS_UFS2_MAGIC:
            sys.exit("%s: no little-endian UFS2 superblock at 8 KiB" % path)
        if struct.unpack_from("<q", sb, FS_SBLOCKLOC)[0] != OLD:
            sys.exit("%s: fs_sblockloc is not 8192" % path)
        iblkno, dblkno = struct.unpack_from("<ii", sb, FS_IBLKNO)
        fsize = struct.unpack_from("<i", sb, FS_FSIZE)[0]
        if not iblkno * fsize <= NEW and NEW + SBSIZE <= dblkno * fsize:
            sys.exit("%s: 64 KiB is outside cylinder group 0's inode table "
                     "(%d-%d): make it with more inodes (makefs -o density=)"
                     % (path, iblkno * fsize, dblkno * fsize))
        f.seek(NEW)
        if f.read(SBSIZE) != bytes(SBSIZE):
            sys.exit("%s: the inodes at 64 KiB are in use" % path)
        struct.pack_into("<q", sb, FS_SBLOCKLOC, NEW)
        f.seek(NEW)
        f.write(sb)
        f.seek(OLD)
        f.write(bytes(SBSIZE))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: ufs2-sb64k.py IMAGE")
    main(sys.argv[1])
