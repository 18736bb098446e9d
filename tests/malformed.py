#!/usr/bin/python3
"""Write malformed images of every format, each breaking one rule.

  malformed.py OUTDIR

Writes OUTDIR/CASES: one line per image, tab-separated:
  file name, "open" or "read" (where the error must show), and the text
  the error message must contain.
Each image starts from a valid one (qcow2 and vdi from qemu-img, ploop
built here) and has one field changed, so that a decoder accepting it is
wrong about exactly that rule.
"""

import os
import struct
import subprocess
import sys

OUT = sys.argv[1]
CASES = []
CLUSTER = 65536


def case(name, data, when, message):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    CASES.append((name, when, message))


# qcow2 ----------------------------------------------------------------

def valid_qcow2(extra_opts="", compress=False):
    """A 4 MiB qcow2 with data in cluster 0; returns its bytes and layout."""
    raw = os.path.join(OUT, "src.raw")
    path = os.path.join(OUT, "valid.qcow2")
    with open(raw, "wb") as f:
        f.write(bytes(range(256)) * 256 + b"\0" * (4 * 1024 * 1024 - 65536))
    cmd = ["qemu-img", "convert", "-q", "-O", "qcow2", "-o",
           "cluster_size=%d%s" % (CLUSTER, extra_opts)]
    if compress:
        cmd.append("-c")
    subprocess.run(cmd + [raw, path], check=True)
    data = bytearray(open(path, "rb").read())
    os.unlink(raw)
    os.unlink(path)
    l1_offset = struct.unpack_from(">Q", data, 40)[0]
    l2_offset = struct.unpack_from(">Q", data, l1_offset)[0] & ((1 << 56) - 512)
    return data, l1_offset, l2_offset


def be32(data, off, v):
    struct.pack_into(">I", data, off, v)


def be64(data, off, v):
    struct.pack_into(">Q", data, off, v)


q, l1, l2 = valid_qcow2()
case("qcow2-truncated-header.qcow2", q[:60], "open", "truncated")
d = bytearray(q); be32(d, 20, 0)
case("qcow2-zero-cluster-bits.qcow2", d, "open", "cluster")
d = bytearray(q); be32(d, 20, 40)
case("qcow2-huge-cluster-bits.qcow2", d, "open", "cluster")
d = bytearray(q); be64(d, 24, 1 << 62)
case("qcow2-size-exceeds-l1.qcow2", d, "open", "L1")
d = bytearray(q); be32(d, 36, 0xffffffff); be64(d, 24, 1 << 62)
case("qcow2-huge-l1.qcow2", d, "open", "L1")
d = bytearray(q); be64(d, 40, 1 << 40)
case("qcow2-l1-past-eof.qcow2", d, "open", "L1")
d = bytearray(q); be64(d, l1, (1 << 63) | l1)
case("qcow2-l2-overlaps-l1.qcow2", d, "open", "L1")
d = bytearray(q); be64(d, l1, (1 << 63) | (1 << 40))
case("qcow2-l2-past-eof.qcow2", d, "open", "L1 table entry 0 points past the end")
# The 4 MiB disk needs one L1 entry; give it two pointing at one table.
d = bytearray(q); be32(d, 36, 2); be64(d, l1 + 8, struct.unpack_from(">Q", d, l1)[0])
case("qcow2-duplicate-l2.qcow2", d, "open", "same L2")
d = bytearray(q); be64(d, l2, (1 << 63) | (1 << 40))
case("qcow2-data-past-eof.qcow2", d, "read", "past the end")
d = bytearray(q); be32(d, 32, 1)
case("qcow2-encrypted.qcow2", d, "open", "encrypt")
d = bytearray(q); be64(d, 72, struct.unpack_from(">Q", d, 72)[0] | 4)
case("qcow2-external-data.qcow2", d, "open", "external data file")
d = bytearray(q); be64(d, 72, struct.unpack_from(">Q", d, 72)[0] | (1 << 20))
case("qcow2-unknown-incompat.qcow2", d, "open", "incompatible feature")
d = bytearray(q); be32(d, 4, 4)
case("qcow2-version-4.qcow2", d, "open", "version")

for codec in ("zlib", "zstd"):
    qc, l1c, l2c = valid_qcow2(",compression_type=" + codec, compress=True)
    entry = struct.unpack_from(">Q", qc, l2c)[0]
    x = 62 - (16 - 8)
    host = entry & ((1 << x) - 1)
    qc[host:host + 64] = b"\xff" * 64
    case("qcow2-bad-%s-cluster.qcow2" % codec, qc, "read", "compressed")


# ploop ----------------------------------------------------------------

def ploop(version=2, cluster_sectors=8, bat=None, disk_sectors=None,
          first_block=None, sig=None, type_=2, data_clusters=2):
    """A ploop image with data_clusters stored clusters, mapped in order."""
    cluster = max(cluster_sectors, 1) * 512
    n = 4 if bat is None else len(bat)
    bat_end = 64 + 4 * n
    data_start = (bat_end + cluster - 1) // cluster * cluster
    if bat is None:
        bat = [0] * n
        for i in range(data_clusters):
            off = data_start + i * cluster
            bat[i] = off // 512 if version == 1 else off // cluster
    if disk_sectors is None:
        disk_sectors = n * cluster_sectors
    if first_block is None:
        first_block = data_start // 512
    h = bytearray(64)
    h[0:16] = sig or (b"WithoutFreeSpace" if version == 1 else b"WithouFreSpacExt")
    struct.pack_into("<IIIII", h, 16, type_, 16, 1, cluster_sectors, len(bat))
    if version == 1:
        struct.pack_into("<II", h, 36, disk_sectors & 0xffffffff, 0)
    else:
        struct.pack_into("<Q", h, 36, disk_sectors)
    struct.pack_into("<II", h, 48, first_block, 0)
    body = h + struct.pack("<%dI" % len(bat), *bat)
    body += b"\0" * (data_start - len(body))
    body += b"\xab" * (cluster * data_clusters)
    return bytearray(body)


p = ploop()
case("ploop-truncated-header.hdd", p[:40], "open", "too short")
case("ploop-zero-cluster.hdd", ploop(cluster_sectors=0, bat=[0] * 4),
     "open", "cluster size")
case("ploop-odd-cluster.hdd", ploop(cluster_sectors=3, bat=[0] * 4),
     "open", "cluster size")
d = bytearray(p); struct.pack_into("<I", d, 32, 0x7fffffff)
case("ploop-huge-bat.hdd", d, "open", "BAT")
d = bytearray(p); struct.pack_into("<I", d, 32, 100000)
case("ploop-bat-past-eof.hdd", d, "open", "past the end")
d = bytearray(p); struct.pack_into("<Q", d, 36, 1 << 60)
case("ploop-size-exceeds-bat.hdd", d, "open", "does not fit the BAT")
d = bytearray(p); struct.pack_into("<I", d, 16, 3)
case("ploop-bad-type.hdd", d, "open", "type")
d = bytearray(p); struct.pack_into("<I", d, 64 + 4, 0x10000)
case("ploop-entry-past-eof.hdd", d, "open", "past the end of the file")
# v1 entries are sector offsets: sector 0 is the header itself.
d = ploop(version=1); struct.pack_into("<I", d, 64 + 8, 1)
case("ploop-entry-in-header.hdd", d, "open", "points into the header")
d = bytearray(p); struct.pack_into("<I", d, 64 + 4, struct.unpack_from("<I", d, 64)[0])
case("ploop-duplicate-entry.hdd", d, "open", "overlapping")
# v1 clusters that overlap without being equal.
d = ploop(version=1); struct.pack_into("<I", d, 64 + 4, struct.unpack_from("<I", d, 64)[0] + 1)
case("ploop-overlapping-entries.hdd", d, "open", "overlapping")
case("ploop-data-overlaps-bat.hdd", ploop(bat=[0] * 200, first_block=1), "open", "overlaps the BAT")


# DiskDescriptor.xml ---------------------------------------------------

NULL_GUID = "{00000000-0000-0000-0000-000000000000}"


def descriptor(images, shots, top):
    xml = ["<?xml version='1.0' encoding='UTF-8'?>",
           '<Parallels_disk_image Version="1.0">',
           "<StorageData><Storage><Start>0</Start><End>64</End>"]
    for guid, file in images:
        xml.append("<Image><GUID>%s</GUID><Type>Compressed</Type>"
                   "<File>%s</File></Image>" % (guid, file))
    xml.append("</Storage></StorageData><Snapshots>")
    if top:
        xml.append("<TopGUID>%s</TopGUID>" % top)
    for guid, parent in shots:
        xml.append("<Shot><GUID>%s</GUID><ParentGUID>%s</ParentGUID></Shot>"
                   % (guid, parent))
    xml.append("</Snapshots></Parallels_disk_image>")
    return "\n".join(xml).encode()


A, B = "{aaaaaaaa-0000-0000-0000-000000000001}", "{bbbbbbbb-0000-0000-0000-000000000002}"
case("delta.hdd", p, "none", "")
case("descriptor-loop.xml",
     descriptor([(A, "delta.hdd"), (B, "delta.hdd")], [(A, B), (B, A)], B),
     "open", "loops")
case("descriptor-missing-parent.xml",
     descriptor([(B, "delta.hdd")], [(B, A)], B), "open", "has no Image")
case("descriptor-escapes.xml",
     descriptor([(A, "../../../../../../../../../etc/passwd")], [(A, NULL_GUID)], A),
     "open", "outside the image's directory")
case("descriptor-same-file-twice.xml",
     descriptor([(A, "delta.hdd"), (B, "delta.hdd")], [(A, NULL_GUID), (B, A)], B),
     "open", "backing chain loop")
case("descriptor-broken.xml",
     b"<?xml version='1.0'?><Parallels_disk_image><StorageData>",
     "open", "invalid XML")
case("descriptor-no-storage.xml",
     b"<?xml version='1.0'?><Parallels_disk_image/>", "open", "no StorageData")

# vdi ------------------------------------------------------------------

def valid_vdi():
    """A 4 MiB dynamic VDI (1 MiB blocks) with blocks 0 and 2 stored."""
    raw = os.path.join(OUT, "src.raw")
    path = os.path.join(OUT, "valid.vdi")
    with open(raw, "wb") as f:
        f.write(bytes(range(256)) * 256 + bytes(2 * 1024 * 1024 - 65536) +
                b"\x5a" * 65536 + bytes(2 * 1024 * 1024 - 65536))
    subprocess.run(["qemu-img", "convert", "-q", "-O", "vdi", raw, path],
                   check=True)
    data = bytearray(open(path, "rb").read())
    os.unlink(raw)
    os.unlink(path)
    return data


def le32(data, off, v):
    struct.pack_into("<I", data, off, v)


def le64(data, off, v):
    struct.pack_into("<Q", data, off, v)


v = valid_vdi()
vmap = struct.unpack_from("<I", v, 0x154)[0]
case("vdi-truncated-header.vdi", v[:0x100], "open", "too short for a VDI header")
d = bytearray(v); le32(d, 0x44, 0x00020000)
case("vdi-version-2.0.vdi", d, "open", "VDI version 2.0 is not supported")
d = bytearray(v); le32(d, 0x4c, 7)
case("vdi-bad-type.vdi", d, "open", "unknown VDI image type 7")
d = bytearray(v); le32(d, 0x4c, 3)
case("vdi-undo.vdi", d, "open", "undo images")
d = bytearray(v); le32(d, 0x48, 0x100)
case("vdi-header-size.vdi", d, "open", "header size 256 is too small")
d = bytearray(v); le32(d, 0x178, 0)
case("vdi-zero-block-size.vdi", d, "open", "invalid block size 0")
d = bytearray(v); le32(d, 0x178, 3000)
case("vdi-odd-block-size.vdi", d, "open", "invalid block size 3000")
d = bytearray(v); le32(d, 0x17c, 100)
case("vdi-odd-extra.vdi", d, "open", "invalid block extra data size")
d = bytearray(v); le32(d, 0x180, 0xffffffff)
case("vdi-huge-map.vdi", d, "open", "too large")
d = bytearray(v); le64(d, 0x170, 1 << 60)
case("vdi-size-exceeds-map.vdi", d, "open", "does not fit the block map")
d = bytearray(v); le32(d, 0x184, 5)
case("vdi-allocated-lies.vdi", d, "open", "blocks are allocated")
d = bytearray(v); le32(d, 0x154, 1 << 31)
case("vdi-map-past-eof.vdi", d, "open", "extends past the end of the file")
d = bytearray(v); le32(d, 0x154, 0x100)
case("vdi-map-in-header.vdi", d, "open", "overlaps the header")
d = bytearray(v); le32(d, 0x158, vmap)
case("vdi-data-overlaps-map.vdi", d, "open", "overlaps the block map")
d = bytearray(v); le32(d, vmap, 100000)
case("vdi-entry-past-eof.vdi", d, "open", "block map entry 0 points past the end")
d = bytearray(v); le32(d, vmap + 4, struct.unpack_from("<I", d, vmap)[0])
case("vdi-duplicate-entry.vdi", d, "open", "point at the same stored block")
d = bytearray(v); d[0x188:0x198] = bytes(16)
case("vdi-null-uuid.vdi", d, "open", "UUID is null")
d = bytearray(v); le32(d, 0x4c, 4)
case("vdi-diff-null-parent.vdi", d, "open", "null parent UUID")
d = bytearray(v); le32(d, 0x4c, 4); d[0x1a8:0x1b8] = b"\x77" * 16
case("vdi-missing-parent.vdi", d, "open", "parent image {77777777-7777-7777-7777-777777777777} not found")
# Two differencing images, each the other's parent.
a = bytearray(v); le32(a, 0x4c, 4); a[0x188:0x198] = b"\xa1" * 16
b = bytearray(a); b[0x188:0x198] = b"\xb2" * 16
a[0x1a8:0x1b8] = b"\xb2" * 16
b[0x1a8:0x1b8] = b"\xa1" * 16
case("vdi-loop-a.vdi", a, "open", "backing chain loop")
case("vdi-loop-b.vdi", b, "none", "")


with open(os.path.join(OUT, "CASES"), "w") as f:
    for name, when, message in CASES:
        if when != "none":
            f.write("%s\t%s\t%s\n" % (name, when, message))
