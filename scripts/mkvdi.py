#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Write VDI (VirtualBox) images for tests, in the forms qemu-img cannot
write: header version 0.2, 1.1 with VirtualBox's longer header and 1 MiB
aligned tables, block extra data, other block sizes, stored blocks out of
order, zero blocks, and differencing images.

Usage:
  mkvdi.py [--version 1.1|0.2] [--header-size N] [--align N]
           [--block-size N] [--extra N] [--static] [--zero-blocks]
           [--shuffle SEED] [--lower LOWER.raw --parent PARENT.vdi]
           [--stale-parent] [--parent-uuid UUID] [--uuid UUID]
           SRC.raw OUT.vdi

The disk OUT.vdi holds is SRC.raw.  Without --lower, all-zero blocks
are left free (0xFFFFFFFF), or with --zero-blocks marked zero
(0xFFFFFFFE).  With --lower (the content of the parent image
PARENT.vdi), OUT.vdi is a differencing image over PARENT.vdi: blocks
equal to LOWER are free (read from the parent), other all-zero blocks
are zero blocks, the rest are stored.  --stale-parent records a
parent modification UUID other than the parent's.  --uuid and
--parent-uuid set those UUIDs (for hostile images), else the image's
is derived from OUT's name and the parent's read from PARENT.vdi.

Layout (little-endian): 64-byte text banner, u32 signature 0xBEDA107F
at 0x40, u32 version (major << 16 | minor) at 0x44, then the header:
  1.x: u32 header size, u32 type (1 dynamic, 2 static, 4 differencing),
       u32 flags, comment[256], u32 block map offset, u32 data offset,
       geometry (4 x u32), u32 unused, u64 disk size, u32 block size,
       u32 block extra size, u32 blocks, u32 blocks allocated,
       UUIDs: image, modification, parent, parent's modification,
       [1.1 with header size 400: LCHS geometry (4 x u32)]
  0.2: u32 type, u32 flags, comment[256], geometry (4 x u32),
       u64 disk size, u32 block size, u32 blocks, u32 blocks allocated,
       UUIDs: image, modification, parent; the block map follows the
       header (at 0x1A4) and the data follows the map.
Each stored block is the extra data (here 0xEE bytes) and then the block.

Only the Python standard library is used.
"""

import argparse
import random
import struct
import sys
import uuid

SIGNATURE = 0xBEDA107F
FREE, ZERO = 0xFFFFFFFF, 0xFFFFFFFE
NAMESPACE = uuid.UUID("3f0c1d52-6a5e-4c1b-9f1e-76646971656d")


def die(msg):
    print("mkvdi.py: " + msg, file=sys.stderr)
    sys.exit(1)


def round_up(n, m):
    return (n + m - 1) // m * m


def header_uuids(path):
    """(image UUID, modification UUID) of the VDI file path."""
    with open(path, "rb") as f:
        h = f.read(512)
    if struct.unpack_from("<I", h, 0x40)[0] != SIGNATURE:
        die("%s is not a VDI image" % path)
    if struct.unpack_from("<I", h, 0x44)[0] >> 16 == 0:
        return h[0x174:0x184], h[0x184:0x194]
    return h[0x188:0x198], h[0x198:0x1A8]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--version", choices=["1.1", "0.2"], default="1.1")
    p.add_argument("--header-size", type=lambda s: int(s, 0), default=0x190)
    p.add_argument("--align", type=lambda s: int(s, 0), default=512)
    p.add_argument("--block-size", type=lambda s: int(s, 0), default=1 << 20)
    p.add_argument("--extra", type=lambda s: int(s, 0), default=0)
    p.add_argument("--static", action="store_true")
    p.add_argument("--zero-blocks", action="store_true")
    p.add_argument("--shuffle", type=int)
    p.add_argument("--lower")
    p.add_argument("--parent")
    p.add_argument("--stale-parent", action="store_true")
    p.add_argument("--uuid")
    p.add_argument("--parent-uuid")
    p.add_argument("src")
    p.add_argument("out")
    a = p.parse_args()
    if bool(a.lower) != bool(a.parent) and not a.parent_uuid:
        die("--lower and --parent go together")
    v0 = a.version == "0.2"
    if v0 and (a.extra or a.lower):
        die("version 0.2 has no extra data and no parent modification UUID")

    data = open(a.src, "rb").read()
    lower = open(a.lower, "rb").read() if a.lower else None
    bs = a.block_size
    size = len(data)
    blocks = (size + bs - 1) // bs

    def block(buf, i):
        b = buf[i * bs:(i + 1) * bs]
        return b + bytes(bs - len(b))

    entries, stored = [], []
    for i in range(blocks):
        b = block(data, i)
        if lower is not None and b == block(lower, i):
            entries.append(FREE)
        elif not a.static and b.count(0) == bs:
            entries.append(ZERO if a.zero_blocks or lower is not None
                           else FREE)
        else:
            entries.append(len(stored))
            stored.append(i)
    if a.shuffle is not None:
        order = list(range(len(stored)))
        random.Random(a.shuffle).shuffle(order)
        for slot, k in enumerate(order):
            entries[stored[k]] = slot
        stored = [stored[k] for k in order]

    image_uuid = (uuid.UUID(a.uuid).bytes_le if a.uuid
                  else uuid.uuid5(NAMESPACE, a.out).bytes_le)
    modify_uuid = uuid.uuid5(NAMESPACE, a.out + "/modified").bytes_le
    parent_uuid = parent_modify = bytes(16)
    if a.parent:
        parent_uuid, parent_modify = header_uuids(a.parent)
    if a.parent_uuid:
        parent_uuid = uuid.UUID(a.parent_uuid).bytes_le
    if a.stale_parent:
        parent_modify = uuid.uuid5(NAMESPACE, "stale").bytes_le
    kind = 4 if (a.parent or a.parent_uuid) else 2 if a.static else 1

    h = bytearray(512)
    if v0:
        banner = b"<<< innotek VirtualBox Disk Image >>>\n"
        map_off = 0x1A4
        data_off = map_off + 4 * blocks
        struct.pack_into("<II", h, 0x40, SIGNATURE, 0x00000002)
        struct.pack_into("<II", h, 0x48, kind, 0)
        struct.pack_into("<IIII", h, 0x150, 0, 0, 0, 512)
        struct.pack_into("<QIII", h, 0x160, size, bs, blocks, len(stored))
        h[0x174:0x184] = image_uuid
        h[0x184:0x194] = modify_uuid
        h[0x194:0x1A4] = parent_uuid
    else:
        banner = b"<<< Oracle VM VirtualBox Disk Image >>>\n"
        map_off = round_up(0x48 + a.header_size, a.align)
        data_off = round_up(map_off + 4 * blocks, a.align)
        struct.pack_into("<II", h, 0x40, SIGNATURE, 0x00010001)
        struct.pack_into("<III", h, 0x48, a.header_size, kind, 0)
        struct.pack_into("<II", h, 0x154, map_off, data_off)
        struct.pack_into("<IIIII", h, 0x15C, 0, 0, 0, 512, 0)
        struct.pack_into("<QIIII", h, 0x170, size, bs, a.extra, blocks,
                         len(stored))
        h[0x188:0x198] = image_uuid
        h[0x198:0x1A8] = modify_uuid
        h[0x1A8:0x1B8] = parent_uuid
        h[0x1B8:0x1C8] = parent_modify
        if a.header_size >= 0x190:
            struct.pack_into("<IIII", h, 0x1C8, 0, 0, 0, 512)
    h[0:len(banner)] = banner
    header = bytes(h[:0x48 + (0x15C if v0 else a.header_size)])

    with open(a.out, "wb") as f:
        f.write(header)
        f.seek(map_off)
        f.write(struct.pack("<%dI" % blocks, *entries))
        f.seek(data_off)
        for i in stored:
            f.write(b"\xee" * a.extra)
            f.write(block(data, i))
        f.truncate(data_off + len(stored) * (a.extra + bs))


if __name__ == "__main__":
    main()
