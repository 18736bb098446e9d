# SPDX-License-Identifier: BSD-3-Clause
# APFS blocks for tests/test-qemount-apfs.sh and scripts/fuzz, from the
# layouts of Apple's "Apple File System Reference", for a container with
# 4 KiB blocks at the start of IMAGE:
#   apfs.py blocks IMAGE: the object map's block, its B-tree root's and
#     volume 0's superblock's, as the object map has it for its last
#     transaction (a one-node tree, as mkapfs makes)
#   apfs.py seal IMAGE BLOCK: mend BLOCK's checksum
#   apfs.py node IMAGE BLOCK root|node LEVEL TARGET: an object map node
#     at BLOCK with one entry, for volume 0's object: at LEVEL 0 mapping
#     it to block TARGET, above pointing at the child node TARGET
#   apfs.py compact IMAGE OUT: the container's blocks that qemount reads
#     (superblock, object map, its root and volume 0's superblock) as
#     blocks 0 to 3 of a 16 KiB container in OUT, a small fuzzing seed
#     (mkapfs makes nothing under 128 MiB, and puts them 80 MiB in)
import struct
import sys

BS = 4096


def fletcher64(data):
    s1 = s2 = 0
    for (w,) in struct.iter_unpack("<I", data):
        s1 = (s1 + w) % 0xFFFFFFFF
        s2 = (s2 + s1) % 0xFFFFFFFF
    c1 = 0xFFFFFFFF - (s1 + s2) % 0xFFFFFFFF
    c2 = 0xFFFFFFFF - (s1 + c1) % 0xFFFFFFFF
    return c2 << 32 | c1


def read(f, block):
    f.seek(block * BS)
    return bytearray(f.read(BS))


def write(f, block, data):
    struct.pack_into("<Q", data, 0, fletcher64(bytes(data[8:])))
    f.seek(block * BS)
    f.write(data)


def blocks(f):
    sb = read(f, 0)
    omap = struct.unpack_from("<Q", sb, 160)[0]
    root = struct.unpack_from("<Q", read(f, omap), 48)[0]
    node = read(f, root)
    toc_off, toc_len = struct.unpack_from("<HH", node, 40)
    k, v = struct.unpack_from("<HH", node, 56 + toc_off)
    vsb = struct.unpack_from("<Q", node, BS - 40 - v + 8)[0]
    return omap, root, vsb


def node(f, block, kind, level, target):
    oid = struct.unpack_from("<Q", read(f, 0), 184)[0]
    root = kind == "root"
    n = bytearray(BS)
    struct.pack_into("<QQII", n, 8, block, 1,
                     0x40000000 | (2 if root else 3), 0xB)
    flags = (1 if root else 0) | (2 if level == 0 else 0) | 4
    struct.pack_into("<HHIHH", n, 32, flags, level, 1, 0, 64)
    keys_at = 56 + 64
    vals_end = BS - (40 if root else 0)
    struct.pack_into("<HH", n, 56, 0, 16 if level == 0 else 8)
    struct.pack_into("<QQ", n, keys_at, oid, 1)
    if level == 0:
        struct.pack_into("<IIQ", n, vals_end - 16, 0, BS, target)
    else:
        struct.pack_into("<Q", n, vals_end - 8, target)
    if root:
        struct.pack_into("<IIIIIIQQ", n, vals_end, 0, BS, 16, 16, 16, 16,
                         1, 1)
    write(f, block, n)


def compact(f, out):
    omap, root, vsb = blocks(f)
    sb, om, vol = read(f, 0), read(f, omap), read(f, vsb)
    struct.pack_into("<Q", sb, 160, 1)
    struct.pack_into("<Q", om, 48, 2)
    with open(out, "w+b") as o:
        o.truncate(4 * BS)
        write(o, 0, sb)
        write(o, 1, om)
        write(o, 3, vol)
        node(o, 2, "root", 0, 3)


with open(sys.argv[2], "r+b") as f:
    if sys.argv[1] == "blocks":
        print(*blocks(f))
    elif sys.argv[1] == "seal":
        b = int(sys.argv[3])
        write(f, b, read(f, b))
    elif sys.argv[1] == "node":
        node(f, int(sys.argv[3]), sys.argv[4], int(sys.argv[5]),
             int(sys.argv[6]))
    elif sys.argv[1] == "compact":
        compact(f, sys.argv[3])
