#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Write ploop (OpenVZ / Parallels "WithoutFreeSpace") images for tests.

Usage:
  mkploop.py --version 1|2 --cluster BYTES [--dirty] [--shuffle SEED]
             [--lower LOWER.raw] SRC.raw OUT.hdd
  mkploop.py descriptor --out DIR/DiskDescriptor.xml --size-sectors N
             [--blocksize SECTORS] [--loop | --missing-parent]
             [--standalone] [--decl-padding N] [--comment N] [--bom]
             [--crlf] IMG1[:plain] IMG2 ...

Image layout (all little-endian):
  0   sig[16]   "WithoutFreeSpace" (v1) or "WithouFreSpacExt" (v2)
  16  u32       version/type = 2
  20  u32       heads = 16
  24  u32       cylinders
  28  u32       sectors per track = cluster size in 512-byte sectors
  32  u32       BAT entries
  36  v1: u32 disk sectors + u32 0; v2: u64 disk sectors
  44  u32       inuse (0, or 0x746F6E59 when the image is "dirty")
  48  u32       first_block_offset, in sectors (cluster aligned)
  52  u32       flags = 0
  56  u64       extension offset = 0
  64  u32[n]    BAT: 0 = hole; v1: data offset in sectors;
                v2: data offset in clusters

Only the Python standard library is used.
"""

import argparse
import os
import random
import struct
import sys
import uuid

SECTOR = 512
HEADER_SIZE = 64
HEADS = 16
SIG_V1 = b"WithoutFreeSpace"
SIG_V2 = b"WithouFreSpacExt"
INUSE_MAGIC = 0x746F6E59
NULL_GUID = "{00000000-0000-0000-0000-000000000000}"
GUID_NAMESPACE = uuid.UUID("5c7b8a42-3f0e-4d6a-9b1c-71656d6f756e")


def die(msg):
    print("mkploop.py: " + msg, file=sys.stderr)
    sys.exit(1)


def round_up(n, m):
    return (n + m - 1) // m * m


def parse_size(text):
    """Accept plain bytes or a K/M suffix (binary)."""
    t = text.strip().upper()
    mult = 1
    if t.endswith("K"):
        mult, t = 1024, t[:-1]
    elif t.endswith("M"):
        mult, t = 1024 * 1024, t[:-1]
    try:
        return int(t, 0) * mult
    except ValueError:
        raise argparse.ArgumentTypeError("bad size: %r" % text)


def read_cluster(f, size, index, cluster):
    """Cluster index of file f (total length size), zero padded to cluster."""
    off = index * cluster
    f.seek(off)
    n = min(cluster, size - off)
    data = f.read(n)
    if len(data) != n:
        die("short read from %s" % f.name)
    if n < cluster:
        data += bytes(cluster - n)
    return data


def write_image(args):
    version = args.version
    cluster = args.cluster
    if cluster < SECTOR or cluster & (cluster - 1):
        die("cluster size must be a power of two >= 512, got %d" % cluster)
    csec = cluster // SECTOR

    try:
        src_size = os.path.getsize(args.src)
    except OSError as e:
        die("%s: %s" % (args.src, e.strerror))
    if src_size % SECTOR:
        die("%s: size %d is not a multiple of 512" % (args.src, src_size))
    sectors = src_size // SECTOR
    if version == 1 and sectors > 0xFFFFFFFF:
        die("disk too big for a v1 image")

    lower = None
    if args.lower is not None:
        try:
            lsize = os.path.getsize(args.lower)
        except OSError as e:
            die("%s: %s" % (args.lower, e.strerror))
        if lsize != src_size:
            die("%s: size %d differs from %s (%d)"
                % (args.lower, lsize, args.src, src_size))
        lower = open(args.lower, "rb")

    nclusters = (src_size + cluster - 1) // cluster
    zero = bytes(cluster)

    # Which clusters are stored in this image?
    stored = []         # virtual cluster indices, in increasing order
    with open(args.src, "rb") as src:
        for i in range(nclusters):
            data = read_cluster(src, src_size, i, cluster)
            if lower is not None:
                keep = data != read_cluster(lower, src_size, i, cluster)
            else:
                keep = data != zero
            if keep:
                stored.append(i)
    if lower is not None:
        lower.close()

    bat_bytes = HEADER_SIZE + 4 * nclusters
    data_start = round_up(bat_bytes, cluster)      # bytes, cluster aligned
    first_block_sec = data_start // SECTOR
    if first_block_sec > 0xFFFFFFFF:
        die("BAT too big")

    # Placement: slot k of the data area holds virtual cluster order[k].
    order = list(stored)
    if args.shuffle is not None:
        random.Random(args.shuffle).shuffle(order)

    bat = [0] * nclusters
    for slot, vidx in enumerate(order):
        off = data_start + slot * cluster
        entry = off // SECTOR if version == 1 else off // cluster
        if entry > 0xFFFFFFFF:
            die("image too big for 32-bit BAT entries")
        bat[vidx] = entry

    cylinders = (sectors + HEADS * csec - 1) // (HEADS * csec)
    if version == 1:
        sig = SIG_V1
        size_field = struct.pack("<II", sectors, 0)
    else:
        sig = SIG_V2
        size_field = struct.pack("<Q", sectors)
    header = (sig
              + struct.pack("<IIIII", 2, HEADS, cylinders, csec, nclusters)
              + size_field
              + struct.pack("<III", INUSE_MAGIC if args.dirty else 0,
                            first_block_sec, 0)
              + struct.pack("<Q", 0))
    assert len(header) == HEADER_SIZE

    tmp = args.out + ".tmp"
    try:
        with open(args.src, "rb") as src, open(tmp, "wb") as out:
            out.write(header)
            out.write(struct.pack("<%dI" % nclusters, *bat))
            out.write(bytes(data_start - bat_bytes))
            for vidx in order:
                out.write(read_cluster(src, src_size, vidx, cluster))
        os.replace(tmp, args.out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ---------------------------------------------------------------- descriptor

def guid_for(name):
    return "{%s}" % uuid.uuid5(GUID_NAMESPACE, "qemount-ploop:" + name)


def write_descriptor(args):
    if args.size_sectors <= 0:
        die("--size-sectors must be positive")
    if not args.images:
        die("descriptor needs at least one image")
    deltas = []
    for spec in args.images:
        plain = False
        if spec.endswith(":plain"):
            spec, plain = spec[:-len(":plain")], True
        name = os.path.basename(spec)
        if not name:
            die("bad image name %r" % spec)
        deltas.append((name, plain, guid_for(name)))
    names = [d[0] for d in deltas]
    if len(set(names)) != len(names):
        die("image names must be distinct")

    n = args.size_sectors
    cylinders = (n + 16 * 63 - 1) // (16 * 63)
    # The forms XML allows that push the root element further in.
    lines = [
        "<?xml version='1.0' encoding='UTF-8'%s%s?>"
        % (' standalone="no"' if args.standalone else "",
           " " * args.decl_padding),
    ]
    if args.comment:
        lines.append("<!-- %s -->" % ("x" * args.comment))
    lines += [
        '<Parallels_disk_image Version="1.0">',
        "  <Disk_Parameters>",
        "    <Disk_size>%d</Disk_size>" % n,
        "    <Cylinders>%d</Cylinders>" % cylinders,
        "    <Heads>16</Heads>",
        "    <Sectors>63</Sectors>",
        "    <Padding>0</Padding>",
        "  </Disk_Parameters>",
        "  <StorageData>",
        "    <Storage>",
        "      <Start>0</Start>",
        "      <End>%d</End>" % n,
        "      <Blocksize>%d</Blocksize>" % args.blocksize,
    ]
    for name, plain, guid in deltas:
        lines += [
            "      <Image>",
            "        <GUID>%s</GUID>" % guid,
            "        <Type>%s</Type>" % ("Plain" if plain else "Compressed"),
            "        <File>%s</File>" % name,
            "      </Image>",
        ]
    lines += [
        "    </Storage>",
        "  </StorageData>",
        "  <Snapshots>",
        "    <TopGUID>%s</TopGUID>" % deltas[-1][2],
    ]
    parent = NULL_GUID
    if args.loop:
        parent = deltas[-1][2]          # base's parent is the top: a loop
    for i, (name, plain, guid) in enumerate(deltas):
        if args.missing_parent and i == len(deltas) - 1:
            # The top's parent is a GUID no image has.
            parent = guid_for("missing-parent-of:" + name)
        lines += [
            "    <Shot>",
            "      <GUID>%s</GUID>" % guid,
            "      <ParentGUID>%s</ParentGUID>" % parent,
            "    </Shot>",
        ]
        parent = guid
    lines += [
        "  </Snapshots>",
        "</Parallels_disk_image>",
        "",
    ]
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8-sig" if args.bom else "utf-8",
              newline="") as f:
        f.write(("\r\n" if args.crlf else "\n").join(lines))
    os.replace(tmp, args.out)


def main(argv):
    if argv and argv[0] == "descriptor":
        p = argparse.ArgumentParser(
            prog="mkploop.py descriptor",
            description="Write an OpenVZ DiskDescriptor.xml for a chain of "
                        "ploop deltas, lowest first, topmost last.")
        p.add_argument("--out", required=True,
                       help="output file (DIR/DiskDescriptor.xml)")
        p.add_argument("--size-sectors", type=int, required=True,
                       help="virtual disk size in 512-byte sectors")
        p.add_argument("--blocksize", type=int, default=2048,
                       help="cluster size in sectors (default 2048 = 1 MiB)")
        g = p.add_mutually_exclusive_group()
        g.add_argument("--loop", action="store_true",
                       help="malformed: the base's parent is the top image")
        g.add_argument("--missing-parent", action="store_true",
                       help="malformed: the top's parent GUID is not present")
        p.add_argument("--standalone", action="store_true",
                       help='standalone="no" in the XML declaration')
        p.add_argument("--decl-padding", type=int, default=0, metavar="N",
                       help="N spaces at the end of the XML declaration")
        p.add_argument("--comment", type=int, default=0, metavar="N",
                       help="a comment of N characters before the root")
        p.add_argument("--bom", action="store_true",
                       help="start with a UTF-8 byte order mark")
        p.add_argument("--crlf", action="store_true",
                       help="end lines with CR LF")
        p.add_argument("images", nargs="+", metavar="IMG[:plain]",
                       help="deltas, lowest first; ':plain' = raw delta")
        write_descriptor(p.parse_args(argv[1:]))
        return 0

    p = argparse.ArgumentParser(
        prog="mkploop.py",
        description="Write a ploop image (v1 or v2) from a raw file.",
        epilog="Use 'mkploop.py descriptor --help' for DiskDescriptor.xml.")
    p.add_argument("--version", type=int, choices=(1, 2), required=True)
    p.add_argument("--cluster", type=parse_size, required=True,
                   help="cluster size in bytes (power of two >= 512)")
    p.add_argument("--dirty", action="store_true",
                   help="set the in-use (not closed cleanly) mark")
    p.add_argument("--shuffle", type=int, metavar="SEED",
                   help="store data clusters in a seeded random order")
    p.add_argument("--lower", metavar="LOWER.raw",
                   help="write a delta: store only clusters differing "
                        "from LOWER.raw")
    p.add_argument("src", metavar="SRC.raw")
    p.add_argument("out", metavar="OUT.hdd")
    write_image(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
