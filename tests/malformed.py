#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Write malformed images of every format, each breaking one rule.

  malformed.py OUTDIR

Writes OUTDIR/CASES: one line per image, tab-separated:
  file name, "open" or "read" (where the error must show), and the text
  the error message must contain.
Each image starts from a valid one (qcow2, vdi and vhd from qemu-img,
ploop built here, VHDX from scripts/mkvhdx.py, DMG from tables built
here with scripts/mkdmg.py's) and has one field changed, so that a decoder accepting it is
wrong about exactly that rule.
"""

import bz2
import lzma
import os
import plistlib
import struct
import subprocess
import sys
import zlib

OUT = sys.argv[1]
CASES = []
CLUSTER = 65536


def case(name, data, when, message):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    CASES.append((name, when, message))


# qcow2 ----------------------------------------------------------------

def valid_qcow2(extra_opts="", compress=False, snapshot=False):
    """A 4 MiB qcow2 with data in cluster 0 (and an internal snapshot of
    it, "s1"); returns its bytes and layout."""
    raw = os.path.join(OUT, "src.raw")
    path = os.path.join(OUT, "valid.qcow2")
    with open(raw, "wb") as f:
        f.write(bytes(range(256)) * 256 + b"\0" * (4 * 1024 * 1024 - 65536))
    cmd = ["qemu-img", "convert", "-q", "-O", "qcow2", "-o",
           "cluster_size=%d%s" % (CLUSTER, extra_opts)]
    if compress:
        cmd.append("-c")
    subprocess.run(cmd + [raw, path], check=True)
    if snapshot:
        subprocess.run(["qemu-img", "snapshot", "-c", "s1", path], check=True)
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

# The snapshot table: header nb_snapshots at 60, its offset at 64; an
# entry is l1_table_offset, l1_size, id and name sizes, dates, VM state
# size, extra data size (40 bytes), then the extra data (QEMU 7.2 writes
# 24 bytes: large VM state size, disk size, icount), the id and the name.
qs, _, _ = valid_qcow2(snapshot=True)
st = struct.unpack_from(">Q", qs, 64)[0]
extra = struct.unpack_from(">I", qs, st + 36)[0]
name_at = st + 40 + extra + struct.unpack_from(">H", qs, st + 12)[0]
d = bytearray(qs); be64(d, 64, 1 << 40)
case("qcow2-snapshot-table-past-eof.qcow2", d, "open",
     "snapshot table (offset 1099511627776, 1 entries) extends past the end")
d = bytearray(qs); be64(d, 64, 0)
case("qcow2-snapshot-table-in-header.qcow2", d, "open",
     "snapshot table overlaps the header")
d = bytearray(qs); be32(d, 60, 0xffffffff)
case("qcow2-huge-nb-snapshots.qcow2", d, "open", "snapshots are too many")
d = bytearray(qs); be32(d, 60, 65536)
case("qcow2-nb-snapshots-past-eof.qcow2", d, "open",
     "65536 entries) extends past the end")
d = bytearray(qs); be64(d, st, 1 << 40)
case("qcow2-snapshot-l1-past-eof.qcow2", d, "open",
     "snapshot 's1': L1 table (offset 1099511627776")
d = bytearray(qs); be64(d, st, 0)
case("qcow2-snapshot-l1-in-header.qcow2", d, "open",
     "snapshot 's1': L1 table overlaps the header")
d = bytearray(qs); be64(d, st + 40 + 8, 1 << 50)
case("qcow2-snapshot-size-exceeds-l1.qcow2", d, "open",
     "snapshot 's1': virtual size 1125899906842624 needs")
d = bytearray(qs); be32(d, st + 36, 1 << 20)
case("qcow2-snapshot-huge-extra.qcow2", d, "open", "bytes of extra data")
d = bytearray(qs); d[name_at + 1] = 0
case("qcow2-snapshot-name-nul.qcow2", d, "open",
     "its name is not UTF-8 text")
d = bytearray(qs); d[name_at] = 0xc0
case("qcow2-snapshot-name-not-utf8.qcow2", d, "open",
     "its name is not UTF-8 text")
d = bytearray(qs); d[name_at] = 0x1b
case("qcow2-snapshot-name-escape.qcow2", d, "open",
     "its name is not UTF-8 text")


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


# vhd ------------------------------------------------------------------

def valid_vhd(fixed=False):
    """A 4 MiB VHD made by qemu-img: dynamic (2 MiB blocks, both stored)
    or fixed."""
    raw = os.path.join(OUT, "src.raw")
    path = os.path.join(OUT, "valid.vhd")
    with open(raw, "wb") as f:
        f.write((bytes(range(256)) * 8 + bytes(2048)) * 1024)
    subprocess.run(["qemu-img", "convert", "-q", "-O", "vpc", "-o",
                    "force_size=on,subformat=" + ("fixed" if fixed
                                                  else "dynamic"),
                    raw, path], check=True)
    data = bytearray(open(path, "rb").read())
    os.unlink(raw)
    os.unlink(path)
    return data


def vhd_sum(buf, field):
    b = bytearray(buf)
    b[field:field + 4] = bytes(4)
    return ~sum(b) & 0xffffffff


def vhd_fix(d, copy=True, end=True, header=True):
    """Recompute the checksums of d's footers and dynamic header."""
    if copy and d[:8] == b"conectix":
        be32(d, 64, vhd_sum(d[:512], 64))
    if end:
        n = len(d) - 512
        be32(d, n + 64, vhd_sum(d[n:], 64))
    if header and d[512:520] == b"cxsparse":
        be32(d, 512 + 36, vhd_sum(d[512:1536], 36))
    return d


def vhd_footers(d, off, fmt, v):
    """Set a field in both footers."""
    for base in (0, len(d) - 512):
        struct.pack_into(fmt, d, base + off, v)


h = valid_vhd()
bat = struct.unpack_from(">Q", h, 512 + 16)[0]
block0 = struct.unpack_from(">I", h, bat)[0]
d = bytearray(h); d[64] ^= 1
case("vhd-copy-checksum.vhd", d, "open", "footer at offset 0 has a wrong checksum")
fx = valid_vhd(fixed=True)
d = bytearray(fx); d[-512 + 64] ^= 1
case("vhd-footer-checksum.vhd", d, "open", "VHD footer checksum is wrong")
d = bytearray(fx); be64(d, len(d) - 512 + 48, 1 << 40); vhd_fix(d)
case("vhd-fixed-too-large.vhd", d, "open", "does not fit the file before its footer")
d = bytearray(h); vhd_footers(d, 60, ">I", 7); vhd_fix(d)
case("vhd-bad-type.vhd", d, "open", "unknown VHD disk type 7")
d = bytearray(h); be64(d, len(d) - 512 + 48, 8 << 20); vhd_fix(d)
case("vhd-copies-disagree.vhd", d, "open", "its copy at offset 0 disagree")
d = bytearray(h); d[512 + 36] ^= 1
case("vhd-header-checksum.vhd", d, "open", "dynamic header checksum is wrong")
d = bytearray(h); vhd_footers(d, 16, ">Q", 1 << 40); vhd_fix(d)
case("vhd-header-past-eof.vhd", d, "open", "dynamic header offset 1099511627776 is outside the file")
d = bytearray(h); d[512:520] = b"cxspars_"; vhd_fix(d)
case("vhd-no-header.vhd", d, "open", "no VHD dynamic header")
d = bytearray(h); be32(d, 512 + 24, 0x00020000); vhd_fix(d)
case("vhd-header-version.vhd", d, "open", "dynamic header version 0x00020000")
d = bytearray(h); be32(d, 512 + 32, 0); vhd_fix(d)
case("vhd-zero-block-size.vhd", d, "open", "invalid block size 0")
d = bytearray(h); be32(d, 512 + 32, 3000); vhd_fix(d)
case("vhd-odd-block-size.vhd", d, "open", "invalid block size 3000")
d = bytearray(h); be32(d, 512 + 28, 0xffffffff); vhd_fix(d)
case("vhd-huge-bat.vhd", d, "open", "too large")
d = bytearray(h); be32(d, 512 + 28, 1); vhd_fix(d)
case("vhd-bat-too-small.vhd", d, "open", "needs 2 BAT entries but the BAT has 1")
d = bytearray(h); vhd_footers(d, 48, ">Q", 1 << 50); vhd_fix(d)
case("vhd-size-exceeds-bat.vhd", d, "open", "BAT entries but the BAT has 2")
d = bytearray(h); be64(d, 512 + 16, 1 << 40); vhd_fix(d)
case("vhd-bat-past-eof.vhd", d, "open", "extends past the end of the file")
d = bytearray(h); be64(d, 512 + 16, 1024); vhd_fix(d)
case("vhd-bat-in-header.vhd", d, "open", "overlaps the footer copy or the dynamic header")
d = bytearray(h); be32(d, bat, 0x7fffffff)
case("vhd-entry-past-eof.vhd", d, "open", "BAT entry 0 points past the end")
d = bytearray(h); be32(d, bat, bat // 512)
case("vhd-entry-in-bat.vhd", d, "open", "BAT entry 0 points into the BAT")
d = bytearray(h); be32(d, bat, 1)
case("vhd-entry-in-header.vhd", d, "open", "BAT entry 0 points into the dynamic header")
d = bytearray(h); be32(d, bat + 4, block0)
case("vhd-duplicate-entry.vhd", d, "open", "two BAT entries map overlapping blocks")
d = bytearray(h); be32(d, bat + 4, block0 + 1)
case("vhd-overlapping-entries.vhd", d, "open", "two BAT entries map overlapping blocks")


def vhd_diff(d, parent_uuid, locator=None, where=bat + 256):
    """d made a differencing disk on parent_uuid, naming locator (W2ru)."""
    vhd_footers(d, 60, ">I", 4)
    d[512 + 40:512 + 56] = parent_uuid
    if locator is not None:
        raw = locator.encode("utf-16-le")
        d[where:where + len(raw)] = raw
        struct.pack_into(">4sIIIQ", d, 512 + 576, b"W2ru", 1, len(raw), 0,
                         where)
    return vhd_fix(d)


d = vhd_diff(bytearray(h), b"\x99" * 16, ".\\vhd-gone.vhd")
case("vhd-missing-parent.vhd", d, "open", "parent {99999999-9999-9999-9999-999999999999} of this differencing disk not found")
d = vhd_diff(bytearray(h), b"\x99" * 16, ".\\x.vhd", where=1 << 40)
case("vhd-locator-past-eof.vhd", d, "open", "parent locator 0 lies past the end of the file")
d = vhd_diff(bytearray(h), b"\x99" * 16, ".\\x.vhd", where=block0 * 512 + 1024)
case("vhd-locator-in-block.vhd", d, "open", "BAT entry 0 points into the parent locator")
# Two differencing disks, each the other's parent.
a = bytearray(h); vhd_footers(a, 68, "16s", b"\xa1" * 16)
b = bytearray(h); vhd_footers(b, 68, "16s", b"\xb2" * 16)
a = vhd_diff(a, b"\xb2" * 16, "vhd-loop-b.vhd")
b = vhd_diff(b, b"\xa1" * 16, "vhd-loop-a.vhd")
case("vhd-loop-a.vhd", a, "open", "backing chain loop")
case("vhd-loop-b.vhd", b, "none", "")


# VHDX -----------------------------------------------------------------

def load_script(name):
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                        "scripts", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mkvhdx = load_script("mkvhdx")
MiB = 1 << 20


def vhdx(name, src=None, *options):
    """An image written by scripts/mkvhdx.py (1 MiB blocks): BAT at 2 MiB,
    metadata at 3 MiB, data from 4 MiB; by default a 4 MiB disk with two
    stored blocks."""
    raw = os.path.join(OUT, "vhdx-src.raw")
    with open(raw, "wb") as f:
        f.write(src if src is not None else
                b"\xab" * MiB + bytes(range(256)) * 4096 + bytes(2 * MiB))
    path = os.path.join(OUT, name)
    subprocess.run([sys.executable, mkvhdx.__file__, "--block-size",
                    str(MiB)] + list(options) + [raw, path], check=True)
    os.unlink(raw)
    data = bytearray(open(path, "rb").read())
    os.unlink(path)
    return data


def vhdx_headers(d, change):
    for off in (64 * 1024, 128 * 1024):
        h = d[off:off + 4096]
        change(h)
        mkvhdx.set_checksum(h)
        d[off:off + 4096] = h


def vhdx_region_tables(d, change):
    for off in (192 * 1024, 256 * 1024):
        t = d[off:off + 65536]
        change(t)
        mkvhdx.set_checksum(t)
        d[off:off + 65536] = t


BAT, MD = 2 * MiB, 3 * MiB
# Metadata items, from 64 KiB into the region, 8-byte aligned: file
# parameters, virtual size, page 83 data, logical sector size, physical
# sector size, parent locator.
ITEMS = MD + 65536
LOCATOR = ITEMS + 48

v = vhdx("v.vhdx")
case("vhdx-truncated.vhdx", v[:300 * 1024], "open", "too short")
d = bytearray(v); d[64 * 1024 + 100] ^= 1; d[128 * 1024 + 100] ^= 1
case("vhdx-bad-headers.vhdx", d, "open", "neither VHDX header is valid")
d = bytearray(v); vhdx_headers(d, lambda h: struct.pack_into("<H", h, 66, 2))
case("vhdx-version-2.vhdx", d, "open", "VHDX version 2")
d = bytearray(v); vhdx_headers(d, lambda h: struct.pack_into("<Q", h, 72, MiB + 4096))
case("vhdx-log-unaligned.vhdx", d, "open", "not aligned to 1 MiB")
d = bytearray(v); d[192 * 1024 + 100] ^= 1; d[256 * 1024 + 100] ^= 1
case("vhdx-bad-region-tables.vhdx", d, "open", "neither copy of the region table")
def unknown_region(t):
    struct.pack_into("<I", t, 8, 3)
    struct.pack_into("<16sQII", t, 16 + 64, b"\x42" * 16, len(v), MiB, 1)
d = bytearray(v) + bytes(MiB); vhdx_region_tables(d, unknown_region)
case("vhdx-unknown-required-region.vhdx", d, "open", "unknown required region")
d = bytearray(v); vhdx_region_tables(d, lambda t: struct.pack_into("<Q", t, 16 + 32 + 16, BAT))
case("vhdx-regions-overlap.vhdx", d, "open", "overlap")
d = bytearray(v); vhdx_region_tables(d, lambda t: struct.pack_into("<Q", t, 16 + 16, 1 << 40))
case("vhdx-region-past-eof.vhdx", d, "open", "extends past the end of the file")
d = bytearray(v); vhdx_region_tables(d, lambda t: struct.pack_into("<I", t, 8, 5000))
case("vhdx-too-many-regions.vhdx", d, "open", "at most 2047")
d = bytearray(v); d[MD:MD + 8] = b"metadatb"
case("vhdx-bad-metadata-signature.vhdx", d, "open", "metadata table")
# The BAT of a 64 TiB disk does not fit a 1 MiB region (CVE-2014-0148).
d = bytearray(v); struct.pack_into("<Q", d, ITEMS + 8, 64 << 40)
case("vhdx-bat-too-small.vhdx", d, "open", "the BAT needs")
d = bytearray(v); struct.pack_into("<Q", d, ITEMS + 8, (64 << 40) + 512)
case("vhdx-huge-size.vhdx", d, "open", "invalid virtual disk size")
d = bytearray(v); struct.pack_into("<Q", d, ITEMS + 8, 4 * MiB + 100)
case("vhdx-size-not-sectors.vhdx", d, "open", "invalid virtual disk size")
d = bytearray(v); struct.pack_into("<I", d, ITEMS, 0)
case("vhdx-zero-block-size.vhdx", d, "open", "invalid block size")
d = bytearray(v); struct.pack_into("<I", d, ITEMS, 3 * MiB)
case("vhdx-odd-block-size.vhdx", d, "open", "invalid block size")
d = bytearray(v); struct.pack_into("<I", d, ITEMS + 32, 1000)
case("vhdx-bad-sector-size.vhdx", d, "open", "invalid logical sector size")
d = bytearray(v); struct.pack_into("<I", d, MD + 32 + 32 + 20, 4)
case("vhdx-short-item.vhdx", d, "open", "'virtual disk size' has 4 bytes")
d = bytearray(v); struct.pack_into("<I", d, MD + 32 + 32 + 16, 2 * MiB)
case("vhdx-item-outside.vhdx", d, "open", "is not inside the metadata region")
d = bytearray(v); d[MD + 32 + 32:MD + 32 + 48] = b"\x42" * 16
struct.pack_into("<I", d, MD + 32 + 32 + 24, 0)
case("vhdx-no-virtual-size.vhdx", d, "open", "has no 'virtual disk size' item")
d = bytearray(v); d[MD + 32 + 64:MD + 32 + 80] = b"\x42" * 16
case("vhdx-unknown-required-item.vhdx", d, "open", "unknown required metadata item")
d = bytearray(v); d[MD + 32 + 32:MD + 32 + 48] = d[MD + 32:MD + 48]
case("vhdx-item-twice.vhdx", d, "open", "appears twice")
d = bytearray(v); struct.pack_into("<Q", d, BAT, (1 << 40) | 6)
case("vhdx-bat-past-eof.vhdx", d, "open", "BAT entry 0 points past the end of the file")
d = bytearray(v); struct.pack_into("<Q", d, BAT, MD | 6)
case("vhdx-bat-into-metadata.vhdx", d, "open", "BAT entry 0 points into the metadata region")
d = bytearray(v); struct.pack_into("<Q", d, BAT, 6)
case("vhdx-bat-into-headers.vhdx", d, "open", "points into the header section")
d = bytearray(v); struct.pack_into("<Q", d, BAT + 8, struct.unpack_from("<Q", d, BAT)[0])
case("vhdx-bat-duplicate.vhdx", d, "open", "BAT entries 0 and 1 map overlapping blocks")
d = bytearray(v); struct.pack_into("<Q", d, BAT + 16, 4)
case("vhdx-bat-reserved-state.vhdx", d, "open", "reserved state 4")
d = bytearray(v); struct.pack_into("<Q", d, BAT, struct.unpack_from("<Q", d, BAT)[0] | 7)
case("vhdx-partial-not-differencing.vhdx", d, "open", "only differencing images allow")

# Differencing images: the parent is vhdx-parent.vhdx in the same
# directory.  Disk of 4 MiB: the child stores half of block 0 (partially
# present, sector bitmap), and block 1.
parent_src = b"\x11" * (4 * MiB)
child_src = b"\x11" * (MiB // 2) + b"\x22" * (MiB // 2) + b"\x33" * MiB + b"\x11" * (2 * MiB)
p = vhdx("vhdx-parent.vhdx", parent_src)
case("vhdx-parent.vhdx", p, "none", "")
praw = os.path.join(OUT, "vhdx-parent.raw")
with open(praw, "wb") as f:
    f.write(parent_src)
def child(name, *options):
    return vhdx(name, child_src, "--parent", os.path.join(OUT, "vhdx-parent.vhdx"),
                "--parent-raw", praw, *options)
c = child("c.vhdx")
case("vhdx-child-ok.vhdx", c, "none", "")
case("vhdx-parent-linkage.vhdx",
     child("x.vhdx", "--linkage", "{01234567-89ab-cdef-0123-456789abcdef}"),
     "open", "is not the image this one was made from")
case("vhdx-parent-bad-linkage.vhdx", child("x.vhdx", "--linkage", "{0123}"),
     "open", "parent_linkage is not a GUID")
case("vhdx-parent-missing.vhdx", child("x.vhdx", "--relative-path", "gone.vhdx"),
     "open", "backing file 'gone.vhdx'")
case("vhdx-parent-escapes.vhdx",
     child("x.vhdx", "--relative-path", "..\\..\\..\\..\\..\\..\\etc\\passwd"),
     "open", "outside the image's directory")
case("vhdx-parent-no-relative-path.vhdx", child("x.vhdx", "--relative-path", ""),
     "open", "has no relative_path (its absolute_win32_path 'C:\\VMs\\vhdx-parent.vhdx'")
case("vhdx-parent-loop.vhdx",
     child("x.vhdx", "--relative-path", "vhdx-parent-loop.vhdx"),
     "open", "backing chain loop")
d = bytearray(c); d[MD + 32 + 5 * 32:MD + 32 + 5 * 32 + 16] = b"\x42" * 16
struct.pack_into("<I", d, MD + 32 + 5 * 32 + 24, 0)
case("vhdx-parent-no-locator.vhdx", d, "open", "without a parent locator")
d = bytearray(c); d[LOCATOR:LOCATOR + 4] = b"\x42" * 4
case("vhdx-parent-locator-type.vhdx", d, "open", "unknown parent locator type")
d = bytearray(c); struct.pack_into("<H", d, LOCATOR + 18, 60000)
case("vhdx-parent-locator-count.vhdx", d, "open", "entries do not fit")
# The sector bitmap entry of chunk 0 is after 4096 payload entries.
SB0 = BAT + 8 * 4096
d = bytearray(c); struct.pack_into("<Q", d, SB0, 0)
case("vhdx-partial-no-bitmap.vhdx", d, "open", "has no sector bitmap")
d = bytearray(c); struct.pack_into("<Q", d, SB0, (1 << 40) | 6)
case("vhdx-bitmap-past-eof.vhdx", d, "open", "BAT entry 4096 points past the end")
d = bytearray(c); struct.pack_into("<Q", d, SB0, struct.unpack_from("<Q", d, BAT)[0] & ~7 | 6)
case("vhdx-bitmap-overlaps-block.vhdx", d, "open", "map overlapping blocks")

# Logs.  The "wrap" log's active sequence starts at the entry at log
# sector 252 (sequence 11); a torn one before it leaves no tail to
# start from, which must be refused, not ignored.
LOG = MiB
logged = bytearray(bytes(range(1, 256)) * (3 * MiB // 255 + 1))[:3 * MiB]
logged[MiB // 2:MiB // 2 + 32768] = bytes(32768)    # for a zero descriptor
lw = vhdx("lw.vhdx", bytes(logged) + bytes(MiB), "--log", "wrap")
case("vhdx-log-ok.vhdx", lw, "none", "")
d = bytearray(lw); d[LOG + 252 * 4096 + 200] ^= 1
case("vhdx-log-no-tail.vhdx", d, "open", "which holds no valid entry")
d = bytearray(lw); d[LOG + 255 * 4096 + 200] ^= 1
case("vhdx-log-broken.vhdx", d, "open", "missing or out of sequence")
def entry_at(d, sector, seq, tail, descriptors, flushed=None):
    secs = mkvhdx.log_entry(seq, tail, bytes(d[64 * 1024 + 48:64 * 1024 + 64])
                            if d[64 * 1024 + 48:64 * 1024 + 64] != bytes(16)
                            else bytes(d[128 * 1024 + 48:128 * 1024 + 64]),
                            flushed if flushed is not None else len(d), descriptors)
    for i, s in enumerate(secs):
        d[LOG + (sector + i) * 4096:LOG + (sector + i + 1) * 4096] = s
d = bytearray(lw); entry_at(d, 100, 50, 100 * 4096, [("data", 64 * 1024, bytes(4096))])
case("vhdx-log-into-headers.vhdx", d, "open", "writes into the file's headers")
d = bytearray(lw); entry_at(d, 100, 50, 100 * 4096, [("zero", LOG, 4096)])
case("vhdx-log-into-log.vhdx", d, "open", "writes into the log itself")
d = bytearray(lw); entry_at(d, 100, 50, 100 * 4096, [("zero", 8 * MiB, 4096)], 1 << 40)
case("vhdx-log-truncated.vhdx", d, "open", "(truncated image?)")
d = bytearray(lw); entry_at(d, 100, 50, 100 * 4096, [("zero", (1 << 63) - 4096, 1 << 20)])
case("vhdx-log-huge-write.vhdx", d, "open", "writes past any possible file size")


# DMG ------------------------------------------------------------------

mkdmg = load_script("mkdmg")
ZLIB, RAW, ZERO, ADC = 0x80000005, 1, 0, 0x80000004
DMG_DATA = bytes(range(256)) * 32 + b"dmg " * 2048          # 16 KiB


def dmg(parts=None, fork=None, koly=None, plist=None):
    """A UDIF file: the data fork, the plist of parts, the koly trailer.
    parts: (first sector, sectors, [(type, start, count, offset, length)]);
    the default is a zlib chunk and a zero chunk in partition 0, a raw
    chunk in partition 1, 64 sectors in all.  koly: {offset: (fmt, v)}."""
    z = zlib.compress(DMG_DATA[:8192])
    if fork is None:
        fork = z + DMG_DATA
    if parts is None:
        parts = [(0, 32, [(ZLIB, 0, 16, 0, len(z)), (ZERO, 16, 16, 0, 0)]),
                 (32, 32, [(RAW, 0, 32, len(z), 16384)])]
    if plist is None:
        blkx = []
        for i, (first, n, chunks) in enumerate(parts):
            entries = [(t, 0, st, c, off, ln) for t, st, c, off, ln in chunks]
            entries.append((0xffffffff, 0, n, 0, 0, 0))
            blkx.append({"Name": "part %d" % i,
                         "Data": mkdmg.mish(first, n, i, entries)})
        plist = plistlib.dumps({"resource-fork": {"blkx": blkx}})
    k = bytearray(512)
    struct.pack_into(">4sIII", k, 0, b"koly", 4, 512, 1)
    struct.pack_into(">QQ", k, 24, 0, len(fork))
    struct.pack_into(">I", k, 60, 1)
    struct.pack_into(">QQ", k, 216, len(fork), len(plist))
    struct.pack_into(">Q", k, 492, sum(n for _, n, _ in parts))
    for off, (fmt, v) in (koly or {}).items():
        struct.pack_into(fmt, k, off, v)
    return fork + plist + bytes(k)


def dmg_chunk(chunk, **change):
    """The default parts with partition 0's first chunk changed."""
    parts = [(0, 32, [chunk, (ZERO, 16, 16, 0, 0)]),
             (32, 32, [(RAW, 0, 32, len(zlib.compress(DMG_DATA[:8192])), 16384)])]
    return dmg(parts, **change)


z8k = zlib.compress(DMG_DATA[:8192])
case("dmg-valid.dmg", dmg(), "none", "")
case("dmg-koly-sectors.dmg", dmg(koly={492: (">Q", 100)}), "open",
     "the koly trailer says the disk has 100")
case("dmg-segments.dmg", dmg(koly={60: (">I", 3)}), "open", "multi-segment")
case("dmg-fork-past-eof.dmg", dmg(koly={32: (">Q", 1 << 40)}), "open",
     "the data fork (offset 0, 1099511627776 bytes) is not inside the file")
case("dmg-plist-past-eof.dmg", dmg(koly={216: (">Q", 1 << 40)}), "open",
     "the XML property list (offset 1099511627776")
case("dmg-huge-plist.dmg", dmg(koly={224: (">Q", 1 << 40)}), "open",
     "XML property list of 1099511627776 bytes is too large")
case("dmg-no-plist.dmg", dmg(koly={224: (">Q", 0)}), "open",
     "without an XML property list")
case("dmg-bad-xml.dmg", dmg(plist=b"<plist><dict><key>resource-fork</dict>"),
     "open", "invalid XML property list")
case("dmg-no-blkx.dmg", dmg(plist=plistlib.dumps({"resource-fork": {}})),
     "open", "no resource-fork/blkx array")
case("dmg-no-mish.dmg", dmg(plist=plistlib.dumps(
    {"resource-fork": {"blkx": [{"Data": b"hsim" * 60}]}})), "open",
     "blkx partition 0 has no mish table")
good = plistlib.dumps({"resource-fork": {"blkx": [{"Data": b"mish"}]}})
case("dmg-not-base64.dmg", dmg(plist=good.replace(b"bWlzaA==", b"bWl*aA==")),
     "open", "Data is not base64")
m = bytearray(mkdmg.mish(0, 64, 0, [(RAW, 0, 0, 64, 0, 32768)]))
struct.pack_into(">I", m, 4, 2)
case("dmg-mish-version.dmg", dmg(plist=plistlib.dumps(
    {"resource-fork": {"blkx": [{"Data": bytes(m)}]}})), "open",
     "mish table version 2")
struct.pack_into(">I", m, 4, 1)
struct.pack_into(">I", m, 200, 1000)
case("dmg-mish-count.dmg", dmg(plist=plistlib.dumps(
    {"resource-fork": {"blkx": [{"Data": bytes(m)}]}})), "open",
     "lists 1000 chunks but its mish table holds 1")
case("dmg-partition-huge.dmg",
     dmg([(1 << 62, 32, [(RAW, 0, 32, 0, 16384)])]), "open",
     "is beyond any disk size")
case("dmg-gap.dmg", dmg([(0, 32, [(ZLIB, 0, 16, 0, len(z8k)), (ZERO, 16, 16, 0, 0)]),
                         (40, 32, [(RAW, 0, 32, len(z8k), 16384)])]), "open",
     "sectors 32 to 39 are in no chunk")
case("dmg-overlap.dmg", dmg([(0, 32, [(ZLIB, 0, 16, 0, len(z8k)), (ZERO, 16, 16, 0, 0)]),
                             (16, 32, [(RAW, 0, 32, len(z8k), 16384)])]), "open",
     "overlaps another chunk at sector 16")
case("dmg-chunk-outside-partition.dmg",
     dmg_chunk((ZLIB, 0, 1 << 62, 0, len(z8k))), "open",
     "is outside its partition of 32 sectors")
case("dmg-chunk-past-eof.dmg", dmg_chunk((ZLIB, 0, 16, 1 << 40, len(z8k))),
     "open", "zlib chunk 0 of partition 0 (offset 1099511627776, ")
case("dmg-chunk-offset-overflow.dmg",
     dmg_chunk((ZLIB, 0, 16, (1 << 64) - 16, 100)), "open",
     "is outside the data fork")
case("dmg-huge-chunk.dmg", dmg([(0, 1 << 20, [(ZLIB, 0, 1 << 20, 0, len(z8k))])]),
     "open", "decodes to 536870912 bytes (limit 256 MiB)")
case("dmg-unknown-type.dmg", dmg_chunk((0x80000009, 0, 16, 0, len(z8k))),
     "open", "has unknown type 0x80000009")
case("dmg-raw-size.dmg", dmg([(0, 64, [(RAW, 0, 64, 0, 1000)])]), "open",
     "raw chunk 0 of partition 0 stores 1000 bytes for 64 sectors")
case("dmg-stored-zero.dmg", dmg_chunk((ZLIB, 0, 16, 0, 0)), "open",
     "impossible stored size of 0 bytes")
case("dmg-lzfse.dmg", dmg_chunk((0x80000007, 0, 16, 0, len(z8k))), "read",
     "chunk 0 of partition 0 (disk offset 0) is LZFSE-compressed")
d = bytearray(dmg()); d[10] ^= 0xff
case("dmg-zlib-corrupt.dmg", d, "read",
     "cannot decode zlib chunk 0 of partition 0")
# Stored data decoding to one sector fewer, or one more, than said.
for name, n in (("short", 15), ("long", 17)):
    zz = zlib.compress(DMG_DATA[:n * 512])
    case("dmg-zlib-%s.dmg" % name,
         dmg([(0, 16, [(ZLIB, 0, 16, 0, len(zz))])], fork=zz), "read",
         "not exactly the 8192 bytes of its 16 sectors")
for name, stored in (
        # A copy from before the start of the output.
        ("adc-before-start", bytes([0x80 | 3]) + b"abcd" + bytes([0x40 | 60, 0, 9])),
        # A literal run longer than the input left.
        ("adc-truncated", bytes([0xff]) + b"x" * 20),
        # Codes after the output is full.
        ("adc-too-long", (bytes([0xff]) + bytes(128)) * 64 + bytes([0x80, 1]))):
    case("dmg-%s.dmg" % name,
         dmg([(0, 16, [(ADC, 0, 16, 0, len(stored))])], fork=stored), "read",
         "cannot decode ADC chunk 0 of partition 0")
for name, t, stored in (("bzip2", 0x80000006, bz2.compress(DMG_DATA[:8192])),
                        ("lzma", 0x80000008, lzma.compress(DMG_DATA[:8192]))):
    d = bytearray(stored); d[len(d) // 2] ^= 0x55
    case("dmg-%s-corrupt.dmg" % name,
         dmg([(0, 16, [(t, 0, 16, 0, len(d))])], fork=bytes(d)), "read",
         "cannot decode %s chunk 0 of partition 0" % name.replace("lzma", "LZMA"))



# vmdk ------------------------------------------------------------------
import zlib

def valid_vmdk(subformat):
    """A 4 MiB VMDK (qemu-img) with data in grain 0; its bytes and the
    sectors of its grain directory, first grain table and grain 0."""
    raw = os.path.join(OUT, "vmdk-src.raw")
    path = os.path.join(OUT, "vmdk-valid.vmdk")
    with open(raw, "wb") as f:
        f.write(bytes(range(256)) * 256 + b"\0" * (4 * MiB - 65536))
    subprocess.run(["qemu-img", "convert", "-q", "-O", "vmdk", "-o",
                    "subformat=" + subformat, raw, path], check=True)
    data = bytearray(open(path, "rb").read())
    os.unlink(raw)
    os.unlink(path)
    gd = struct.unpack_from("<Q", data, 56)[0]
    gt = struct.unpack_from("<I", data, gd * 512)[0]
    grain = struct.unpack_from("<I", data, gt * 512)[0]
    return data, gd, gt, grain


def vmdk_descriptor(d, text):
    """Replace the embedded descriptor (at sector 1, 20 sectors)."""
    d[512:512 + 20 * 512] = text.encode().ljust(20 * 512, b"\0")


def vmdk_text(cid="11111111", parent_cid="ffffffff", hint=None):
    t = ("# Disk DescriptorFile\nversion=1\nCID=%s\nparentCID=%s\n"
         "createType=\"monolithicSparse\"\n" % (cid, parent_cid))
    if hint:
        t += "parentFileNameHint=\"%s\"\n" % hint
    return t + "\n# Extent description\nRW 8192 SPARSE \"x.vmdk\"\n"


m, gd, gt, grain = valid_vmdk("monolithicSparse")
case("vmdk-truncated-header.vmdk", m[:100], "open", "too short for a VMDK sparse extent header")
d = bytearray(m); le32(d, 4, 4)
case("vmdk-version-4.vmdk", d, "open", "version 4 is not supported")
d = bytearray(m); le64(d, 20, 0)
case("vmdk-zero-grain-size.vmdk", d, "open", "grain size of 0 sectors")
d = bytearray(m); le64(d, 20, 1 << 40)
case("vmdk-huge-grain-size.vmdk", d, "open", "grain size of 1099511627776 sectors")
d = bytearray(m); le64(d, 20, 96)
case("vmdk-odd-grain-size.vmdk", d, "open", "is not a power of two")
d = bytearray(m); le64(d, 12, 1 << 62)
case("vmdk-huge-capacity.vmdk", d, "open", "is zero or too large")
d = bytearray(m); le64(d, 12, 1 << 50)
case("vmdk-capacity-past-gd.vmdk", d, "open", "grain directory of 17179869184 entries")
d = bytearray(m); le32(d, 44, 4096)
case("vmdk-huge-grain-table.vmdk", d, "open", "4096 entries per grain table")
d = bytearray(m); le64(d, 56, 1 << 30)
case("vmdk-gd-past-eof.vmdk", d, "open", "is outside the file")
d = bytearray(m); le32(d, gd * 512, 0x7fffffff)
case("vmdk-gt-past-eof.vmdk", d, "open", "grain directory entry 0 points past the end of the file")
d = bytearray(m); le32(d, gd * 512, gd)
case("vmdk-gt-into-gd.vmdk", d, "open", "grain directory entry 0 points into the header or the grain directory")
d = bytearray(m); le32(d, gt * 512, 0x7fffff00)
case("vmdk-grain-past-eof.vmdk", d, "open", "grain 0 points past the end of the file")
d = bytearray(m); le32(d, gt * 512, gd)
case("vmdk-grain-into-gd.vmdk", d, "open", "grain 0 points into the header or the grain directory")
d = bytearray(m); vmdk_descriptor(d, vmdk_text(hint="vmdk-parent-loop.vmdk"))
case("vmdk-parent-loop.vmdk", d, "open", "backing chain loop")
d = bytearray(m); vmdk_descriptor(d, vmdk_text(hint="/etc/passwd"))
case("vmdk-parent-absolute.vmdk", d, "open", "outside the image's directory")
d = bytearray(m); vmdk_descriptor(d, vmdk_text(cid="1234"))
case("vmdk-parent.vmdk", d, "none", "")
d = bytearray(m); vmdk_descriptor(d, vmdk_text(parent_cid="00004321", hint="vmdk-parent.vmdk"))
case("vmdk-cid-mismatch.vmdk", d, "open", "its parent %s/vmdk-parent.vmdk has content ID (CID) 00001234, but it was made on a parent with CID 00004321" % OUT)
d = bytearray(m); vmdk_descriptor(d, vmdk_text(cid="zz"))
case("vmdk-bad-cid.vmdk", d, "open", "CID is not a 32-bit hexadecimal number")


case("vmdk-not-kdmv.bin", b"x" * 1024, "none", "")


def vmdk_desc_file(name, extents):
    case(name, ("# Disk DescriptorFile\nversion=1\nCID=11111111\n"
                "parentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n"
                + extents).encode(), "open", "")


for name, extent, message in (
        ("vmdk-extent-dotdot.vmdk", 'RW 8 FLAT "../../../../../../../../etc/passwd" 0',
         "extent file '../../../../../../../../etc/passwd' is outside the image's directory"),
        ("vmdk-extent-absolute.vmdk", 'RW 8 FLAT "/etc/passwd" 0',
         "extent file '/etc/passwd' is outside the image's directory"),
        ("vmdk-extent-proc.vmdk", 'RW 8 FLAT "/proc/self/environ" 0', "kernel interface"),
        ("vmdk-sesparse.vmdk", 'RW 8192 SESPARSE "vmdk-parent.vmdk"',
         "SESPARSE extents (ESXi's snapshot formats) are not supported"),
        ("vmdk-vmfssparse.vmdk", 'RW 8192 VMFSSPARSE "vmdk-parent.vmdk"',
         "VMFSSPARSE extents (ESXi's snapshot formats) are not supported"),
        ("vmdk-unknown-extent.vmdk", 'RW 8192 VMFSRDM "vmdk-parent.vmdk"',
         "unknown extent type 'VMFSRDM'"),
        ("vmdk-flat-past-eof.vmdk", 'RW 100000 FLAT "vmdk-parent.vmdk" 0',
         "is past the end of its file"),
        ("vmdk-sparse-too-small.vmdk", 'RW 100000 SPARSE "vmdk-parent.vmdk"',
         "but its file vmdk-parent.vmdk holds only 8192"),
        ("vmdk-sparse-not-kdmv.vmdk", 'RW 8 SPARSE "vmdk-not-kdmv.bin"',
         "not a VMDK sparse extent (no KDMV magic)"),
        ("vmdk-no-extents.vmdk", '', "the descriptor lists no extents"),
        ("vmdk-bad-extent-size.vmdk", 'RW lots FLAT "vmdk-parent.vmdk" 0',
         "the extent's size is not a number of sectors")):
    vmdk_desc_file(name, extent + "\n")
    CASES[-1] = (name, "open", message)

s, sgd, sgt, sgrain = valid_vmdk("streamOptimized")
def stream_grain(d, data, lba=0):
    struct.pack_into("<QI", d, sgrain * 512, lba, len(data))
    d[sgrain * 512 + 12:sgrain * 512 + 12 + len(data)] = data
d = bytearray(s); stream_grain(d, zlib.compress(b"\1" * (65536 + 512)))
case("vmdk-grain-inflates-too-far.vmdk", d, "read", "compressed grain 0 (at sector %d) does not inflate to the grain size of 65536 bytes" % sgrain)
d = bytearray(s); stream_grain(d, zlib.compress(b"\1" * 1000))
case("vmdk-grain-inflates-short.vmdk", d, "read", "does not inflate to the grain size")
d = bytearray(s); stream_grain(d, zlib.compress(b"\1" * 65536), lba=128)
case("vmdk-grain-wrong-lba.vmdk", d, "read", "its marker says it is the grain at sector 128")
d = bytearray(s); struct.pack_into("<QI", d, sgrain * 512, 0, 1 << 30)
case("vmdk-grain-huge-size.vmdk", d, "read", "compressed size 1073741824 is zero, too large")
d = bytearray(s); le64(d, 56, (1 << 64) - 1)
case("vmdk-no-footer.vmdk", d, "open", "but there is no footer")

with open(os.path.join(OUT, "CASES"), "w") as f:
    for name, when, message in CASES:
        if when != "none":
            f.write("%s\t%s\t%s\n" % (name, when, message))
