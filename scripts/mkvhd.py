#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Write VHD (Virtual PC, Hyper-V, Azure) images for tests, in the forms
qemu-img cannot write: other creators and geometries, other block sizes,
stored blocks out of order, Virtual PC's old 511-byte footer, clear bitmap
bits over stored data, and differencing disks with parent locators.

Usage:
  mkvhd.py [--fixed] [--creator APP] [--current-size N] [--chs C,H,S]
           [--block-size N] [--shuffle SEED] [--footer-511]
           [--clear-bits SEED]
           [--lower LOWER.raw --parent PARENT.vhd] [--parent-uuid UUID]
           [--locator KIND:PATH]... [--parent-name NAME]
           SRC.raw OUT.vhd

The disk OUT.vhd holds is SRC.raw, its size the current size (default:
SRC's size) and the geometry computed from it as the VHD specification
does (which rounds down), unless --chs says otherwise.  APP is the
creator application (4 bytes, backslash escapes allowed: 'wa\\0\\0').
A dynamic disk stores the blocks that are not all zeros, their bitmaps
all ones; --clear-bits clears some bits of stored sectors that hold data
(QEMU, and our decoder, read such a block's data anyway).

With --lower (the content of the parent, PARENT.vhd), OUT.vhd is a
differencing disk: sectors equal to LOWER's have a clear bit (and junk,
0xCC, in the block, which must not be read), blocks without a changed
sector are not stored.  --locator adds a parent locator: W2ru (a relative
Windows path, UTF-16LE), W2ku (an absolute one) or MacX (a file:// URL,
UTF-8), in the order given; --parent-name sets the header's parent name
(UTF-16BE); --parent-uuid replaces the parent's UUID (for hostile
images).

Layout (big-endian): fixed: the disk, then the footer.  Dynamic: footer
copy (512), dynamic header (1024) at 512, BAT at 1536 (u32 sector
offsets, 0xFFFFFFFF free, padded to a sector), parent locator data, the
stored blocks (bitmap padded to a sector, then the block), the footer.

Only the Python standard library is used.
"""

import argparse
import random
import struct
import sys
import uuid

SECTOR = 512
FREE = 0xFFFFFFFF
NAMESPACE = uuid.UUID("0b9f3c6e-2d47-4f1a-8e55-76686471656d")
CODES = {"W2ru": b"W2ru", "W2ku": b"W2ku", "MacX": b"MacX"}


def die(msg):
    print("mkvhd.py: " + msg, file=sys.stderr)
    sys.exit(1)


def round_up(n, m):
    return (n + m - 1) // m * m


def checksum(buf, field):
    b = bytearray(buf)
    b[field:field + 4] = bytes(4)
    return ~sum(b) & 0xFFFFFFFF


def geometry(size):
    """CHS of a disk of size bytes, as the VHD specification computes it."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def footer(a, size, disk_type, data_offset, image_uuid):
    f = bytearray(SECTOR)
    f[0:8] = b"conectix"
    struct.pack_into(">IIQI", f, 8, 2, 0x00010000, data_offset, 0)
    f[28:32] = a.creator
    struct.pack_into(">I", f, 32, 0x00060000)
    f[36:40] = b"Wi2k"
    c, h, s = a.chs or geometry(size)
    struct.pack_into(">QQHBBI", f, 40, size, size, c, h, s, disk_type)
    f[68:84] = image_uuid
    struct.pack_into(">I", f, 64, checksum(f, 64))
    return bytes(f)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fixed", action="store_true")
    p.add_argument("--creator", default="win ",
                   type=lambda s: s.encode().decode("unicode_escape")
                   .encode("latin-1"))
    p.add_argument("--current-size", type=int)
    p.add_argument("--chs", type=lambda s: tuple(int(x) for x in s.split(",")))
    p.add_argument("--block-size", type=lambda s: int(s, 0), default=2 << 20)
    p.add_argument("--shuffle", type=int)
    p.add_argument("--footer-511", action="store_true")
    p.add_argument("--clear-bits", type=int)
    p.add_argument("--lower")
    p.add_argument("--parent")
    p.add_argument("--parent-uuid")
    p.add_argument("--locator", action="append", default=[])
    p.add_argument("--parent-name")
    p.add_argument("src")
    p.add_argument("out")
    a = p.parse_args()
    if len(a.creator) != 4:
        die("the creator is 4 bytes")
    if bool(a.lower) != bool(a.parent):
        die("--lower and --parent go together")

    data = open(a.src, "rb").read()
    size = a.current_size if a.current_size is not None else len(data)
    data = data[:size] + bytes(max(0, size - len(data)))
    image_uuid = uuid.uuid5(NAMESPACE, a.out).bytes

    if a.fixed:
        f = footer(a, size, 2, 0xFFFFFFFFFFFFFFFF, image_uuid)
        with open(a.out, "wb") as out:
            out.write(data)
            out.write(f[:511] if a.footer_511 else f)
        return

    lower = open(a.lower, "rb").read() if a.lower else None
    bs = a.block_size
    spb = bs // SECTOR
    bitmap_size = round_up((spb + 7) // 8, SECTOR)
    entries = (size + bs - 1) // bs
    rng = random.Random(a.clear_bits)

    def sector(buf, i):
        s = buf[i * SECTOR:(i + 1) * SECTOR]
        return s + bytes(SECTOR - len(s))

    blocks = []                 # (index, bitmap, data)
    for b in range(entries):
        bits = bytearray(bitmap_size)
        body = bytearray()
        stored = False
        for k in range(spb):
            i = b * spb + k
            s = sector(data, i)
            if lower is not None:
                changed = s != sector(lower, i)
            else:
                changed = s.count(0) != SECTOR
            stored = stored or changed
            if lower is None or changed:
                bits[k // 8] |= 0x80 >> (k % 8)
                body += s
            else:
                body += b"\xcc" * SECTOR
        if not stored:
            continue
        if lower is None:
            bits = bytearray(b"\xff" * ((spb + 7) // 8)) + \
                bytes(bitmap_size - (spb + 7) // 8)
            if a.clear_bits is not None:
                for k in range(spb):
                    if sector(data, b * spb + k).count(0) != SECTOR and \
                       rng.random() < 0.3:
                        bits[k // 8] &= ~(0x80 >> (k % 8))
        blocks.append((b, bytes(bits), bytes(body)))
    if a.shuffle is not None:
        random.Random(a.shuffle).shuffle(blocks)

    bat_offset = 3 * SECTOR
    pos = bat_offset + round_up(4 * entries, SECTOR)
    locators = []
    for spec in a.locator:
        kind, _, path = spec.partition(":")
        if kind not in CODES:
            die("unknown locator kind %r" % kind)
        raw = path.encode("utf-8" if kind == "MacX" else "utf-16-le")
        space = round_up(len(raw), SECTOR)
        locators.append((CODES[kind], space // SECTOR, len(raw), pos, raw))
        pos += space

    bat = [FREE] * entries
    layout = []
    for b, bits, body in blocks:
        bat[b] = pos // SECTOR
        layout.append((pos, bits + body))
        pos += bitmap_size + bs

    h = bytearray(1024)
    h[0:8] = b"cxsparse"
    struct.pack_into(">QQIII", h, 8, 0xFFFFFFFFFFFFFFFF, bat_offset,
                     0x00010000, entries, bs)
    if lower is not None:
        parent = open(a.parent, "rb").read()
        pf = parent[-SECTOR:] if parent[-SECTOR:][:8] == b"conectix" \
            else parent[:SECTOR]
        puuid = uuid.UUID(a.parent_uuid).bytes if a.parent_uuid \
            else pf[68:84]
        h[40:56] = puuid
        name = (a.parent_name or "").encode("utf-16-be")[:512]
        h[64:64 + len(name)] = name
        for i, (code, space, length, offset, _) in enumerate(locators):
            struct.pack_into(">4sIIIQ", h, 576 + 24 * i, code, space, length,
                             0, offset)
    struct.pack_into(">I", h, 36, checksum(h, 36))

    kind = 4 if lower is not None else 3
    f = footer(a, size, kind, SECTOR, image_uuid)
    with open(a.out, "wb") as out:
        out.write(f)
        out.write(h)
        out.seek(bat_offset)
        out.write(struct.pack(">%dI" % entries, *bat))
        for _, _, _, offset, raw in locators:
            out.seek(offset)
            out.write(raw)
        for offset, stored in layout:
            out.seek(offset)
            out.write(stored)
        out.seek(pos)
        out.write(f)


if __name__ == "__main__":
    main()
