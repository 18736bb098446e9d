#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# mkmd.py OUT PAYLOAD [--name NAME]: OUT becomes one member of a two-disk
# md RAID1 array with a version 1.2 superblock, holding PAYLOAD (a
# filesystem image) as its data; the other member is missing, so the
# array assembles degraded (mdadm --assemble --run).  mdadm cannot
# create an array without the kernel's md driver; this writes what it
# would, from the superblock format in the kernel's
# include/uapi/linux/raid/md_p.h (struct mdp_superblock_1), with the
# checksum of drivers/md/md.c calc_sb_1_csum.
#
# Layout: superblock at 4 KiB (super_offset 8 sectors), data at 1 MiB
# (data_offset 2048 sectors), as mdadm lays out a v1.2 member.

import os
import struct
import sys
import time
import uuid

MAGIC = 0xa92b4efc
SECTOR = 512
SUPER_OFFSET = 8                # sectors: 4 KiB from the start (v1.2)
DATA_OFFSET = 2048              # sectors: 1 MiB
MAX_DEV = 128


def csum(sb):
    """calc_sb_1_csum: the sum of the little-endian 32-bit words of the
    superblock (256 bytes + 2 per device role) with sb_csum zero, the
    carry folded in once."""
    total = 0
    for (w,) in struct.iter_unpack("<I", sb[:len(sb) & ~3]):
        total += w
    if len(sb) & 3 == 2:
        total += struct.unpack_from("<H", sb, len(sb) - 2)[0]
    return ((total & 0xffffffff) + (total >> 32)) & 0xffffffff


def superblock(data_sectors, name):
    now = int(time.time())
    sb = bytearray(256 + 2 * MAX_DEV)
    struct.pack_into("<IIII", sb, 0, MAGIC, 1, 0, 0)    # magic, major, features
    sb[16:32] = uuid.uuid4().bytes                      # set_uuid
    sb[32:64] = name.encode()[:32].ljust(32, b"\0")     # set_name
    struct.pack_into("<Q", sb, 64, now)                 # ctime
    struct.pack_into("<IIQIII", sb, 72,
                     1,                                 # level: RAID1
                     0,                                 # layout
                     data_sectors,                      # size (array)
                     0,                                 # chunksize
                     2,                                 # raid_disks
                     0)                                 # bitmap_offset
    struct.pack_into("<QQQQ", sb, 128,
                     DATA_OFFSET, data_sectors, SUPER_OFFSET,
                     0)                                 # recovery_offset
    struct.pack_into("<II", sb, 160, 0, 0)              # dev_number 0
    sb[168:184] = uuid.uuid4().bytes                    # device_uuid
    struct.pack_into("<QQQ", sb, 192,
                     now,                               # utime
                     1,                                 # events
                     0xffffffffffffffff)                # resync_offset: clean
    struct.pack_into("<I", sb, 220, MAX_DEV)
    for i in range(MAX_DEV):                            # dev_roles
        struct.pack_into("<H", sb, 256 + 2 * i, 0xffff)
    struct.pack_into("<H", sb, 256, 0)                  # device 0: slot 0
    struct.pack_into("<I", sb, 216, csum(sb))
    return bytes(sb)


def main():
    args = sys.argv[1:]
    name = "qemount:0"
    if len(args) == 4 and args[2] == "--name":
        name = args[3]
        args = args[:2]
    if len(args) != 2:
        sys.exit("usage: mkmd.py OUT PAYLOAD [--name NAME]")
    out, payload = args
    size = os.path.getsize(payload)
    data_sectors = (size + SECTOR - 1) // SECTOR
    sb = superblock(data_sectors, name)
    assert csum(sb[:216] + b"\0\0\0\0" + sb[220:]) == \
        struct.unpack_from("<I", sb, 216)[0]
    with open(out, "wb") as f:
        f.truncate((DATA_OFFSET + data_sectors) * SECTOR)
        f.seek(SUPER_OFFSET * SECTOR)
        f.write(sb)
        f.seek(DATA_OFFSET * SECTOR)
        with open(payload, "rb") as p:
            while True:
                buf = p.read(1 << 20)
                if not buf:
                    break
                if buf.count(0) == len(buf):
                    f.seek(len(buf), os.SEEK_CUR)       # keep it sparse
                else:
                    f.write(buf)


if __name__ == "__main__":
    main()
