#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Write malformed qcow2 and ploop images, each breaking one rule.

  malformed.py OUTDIR

Writes OUTDIR/CASES: one line per image, tab-separated:
  file name, "open" or "read" (where the error must show), and the text
  the error message must contain.
Each image starts from a valid one (qcow2 from qemu-img, ploop built
here) and has one field changed, so that a decoder accepting it is
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

with open(os.path.join(OUT, "CASES"), "w") as f:
    for name, when, message in CASES:
        if when != "none":
            f.write("%s\t%s\t%s\n" % (name, when, message))
