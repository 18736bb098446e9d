#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Write a disk image with an MBR slice holding a BSD disklabel, the way
the BSDs' own tools lay one out (no tool in Debian writes one).

    mkdisklabel.py OUT [--type a5|a6|a9] [--slice N] [--start S]
                   [--relative] L=FILE...

The slice (MBR entry N, 1-4, default 1; type 0xA5 FreeBSD, 0xA6 OpenBSD,
0xA9 NetBSD) starts at sector S (default 2048, 1 MiB) and holds the
label in its sector 1 (the label's own byte order is little-endian, as
on x86).  Each L=FILE puts FILE's contents in partition L (a, b, d..p;
c is the raw partition, the whole slice): the first starts 16 sectors
into the slice, after the boot area (bsdlabel's default), the others on
64 KiB boundaries.  Offsets are from the start of the disk, as OpenBSD,
NetBSD and FreeBSD before 10 write them; --relative writes them from
the start of the slice, c's offset 0, as FreeBSD 10 and later do.
"""
import argparse
import os
import struct
import sys

SECTOR = 512
MAGIC = 0x82564557
LABEL_SIZE = 148 + 16 * 16      # header and 16 partitions
FS_BSDFFS = 7


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--type", default="a5", choices=["a5", "a6", "a9"])
    ap.add_argument("--slice", type=int, default=1, choices=[1, 2, 3, 4])
    ap.add_argument("--start", type=int, default=2048)
    ap.add_argument("--relative", action="store_true")
    ap.add_argument("parts", nargs="+", metavar="L=FILE")
    a = ap.parse_args()

    parts = {}
    for spec in a.parts:
        letter, _, path = spec.partition("=")
        if len(letter) != 1 or not "a" <= letter <= "p" or letter == "c":
            sys.exit(f"{spec}: the partition must be a letter a..p, not c")
        parts[ord(letter) - ord("a")] = path

    start = a.start
    base = start if a.relative else 0
    entries = [(0, 0, 0, 0)] * 16
    at = start + 16
    for i in sorted(parts):
        size = (os.path.getsize(parts[i]) + SECTOR - 1) // SECTOR
        entries[i] = (size, at - base, 2048, FS_BSDFFS)
        at = (at + size + 127) // 128 * 128
    slice_size = at - start
    entries[2] = (slice_size, start - base, 0, 0)      # c: the slice
    n = max(parts) + 1 if max(parts) > 2 else 3

    label = bytearray(LABEL_SIZE)
    struct.pack_into("<IHH16s16s", label, 0, MAGIC, 4, 0, b"qemount",
                     b"test")
    struct.pack_into("<6I", label, 40, SECTOR, 63, 255, 1 + slice_size // (63 * 255),
                     63 * 255, slice_size)
    struct.pack_into("<I", label, 132, MAGIC)
    struct.pack_into("<HII", label, 138, n, 8192, 0)
    for i in range(16):
        size, offset, fsize, fstype = entries[i]
        struct.pack_into("<IIIBBH", label, 148 + 16 * i, size, offset, fsize,
                         fstype, 8 if fstype else 0, 0)
    # The checksum: XOR of the 16-bit words of the label up to the end of
    # its last partition, the checksum itself counted as 0.
    check = 0
    for off in range(0, 148 + 16 * n, 2):
        check ^= struct.unpack_from("<H", label, off)[0]
    struct.pack_into("<H", label, 136, check)

    mbr = bytearray(SECTOR)
    struct.pack_into("<B3sB3sII", mbr, 446 + 16 * (a.slice - 1), 0x80,
                     b"\xfe\xff\xff", int(a.type, 16), b"\xfe\xff\xff",
                     start, slice_size)
    mbr[510:512] = b"\x55\xaa"

    with open(a.out, "wb") as f:
        f.write(mbr)
        f.seek((start + 1) * SECTOR)
        f.write(label)
        for i, path in parts.items():
            f.seek((entries[i][1] + base) * SECTOR)
            with open(path, "rb") as p:
                f.write(p.read())
        f.truncate((start + slice_size + 2048) * SECTOR)


main()
