#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Write an Apple UDIF disk image (.dmg) from a raw disk, for tests.

  mkdmg.py [--types zlib,bzip2,...] [--chunk-size N] [--partitions N]
           [--comments] [--ignore] [--trailing N] [--map OUT.map.json]
           SRC.raw OUT.dmg

The disk (a whole number of 512-byte sectors) is cut into --partitions
blkx partitions at chunk boundaries, each into chunks of --chunk-size
bytes.  A chunk of zeros is stored as a zero chunk (runs of them joined
into one, however long), or as an "ignore" chunk with --ignore (every
other one); the others are stored with the types of --types in turn: raw,
zlib, bzip2, lzma (xz), adc.  --comments puts a comment chunk (no
sectors) at the start and end of each partition, as hdiutil does;
--trailing appends N bytes after the koly trailer.  --map writes the
chunk map in the form of `qemu-img map --output=json` (zero chunks are
zero, the others data).  The output file is sparse where a raw chunk
holds zeros (in 4 KiB blocks).  Standard library only; ADC has no Python module, so it is
encoded here by a small greedy encoder.
"""

import argparse
import bz2
import json
import lzma
import plistlib
import struct
import sys
import zlib

SECTOR = 512
TYPES = {
    "zero": 0x00000000, "raw": 0x00000001, "ignore": 0x00000002,
    "adc": 0x80000004, "zlib": 0x80000005, "bzip2": 0x80000006,
    "lzfse": 0x80000007, "lzma": 0x80000008,
    "comment": 0x7ffffffe, "end": 0xffffffff,
}


def die(msg):
    print("mkdmg.py: " + msg, file=sys.stderr)
    sys.exit(1)


def adc_encode(data):
    """ADC: literal runs of 1-128 bytes (0x80 | n-1), copies of 3-18
    bytes from 1-1024 back in two bytes (00LLLLDD DDDDDDDD, length-3 and
    distance-1), copies of 4-67 bytes from 1-65536 back in three
    (01LLLLLL DDDDDDDD DDDDDDDD, length-4 and distance-1).  Greedy, with
    the last position of each 4-byte string as the only candidate."""
    out = bytearray()
    lit = bytearray()
    last = {}
    i, n = 0, len(data)

    def flush():
        for k in range(0, len(lit), 128):
            part = lit[k:k + 128]
            out.append(0x80 | (len(part) - 1))
            out.extend(part)
        lit.clear()

    while i < n:
        length = 0
        if i + 4 <= n:
            key = data[i:i + 4]
            j = last.get(key)
            last[key] = i
            if j is not None and i - j <= 65536:
                limit = min(67, n - i)
                length = 4
                while length < limit and data[j + length] == data[i + length]:
                    length += 1
                dist = i - j
        if length >= 4:
            flush()
            if length <= 18 and dist <= 1024:
                out.append((length - 3) << 2 | (dist - 1) >> 8)
                out.append((dist - 1) & 0xff)
            else:
                out.append(0x40 | (length - 4))
                out.append((dist - 1) >> 8)
                out.append((dist - 1) & 0xff)
            i += length
        else:
            lit.append(data[i])
            i += 1
    flush()
    return bytes(out)


def encode(kind, data):
    if kind == "raw":
        return data
    if kind == "zlib":
        return zlib.compress(data, 6)
    if kind == "bzip2":
        return bz2.compress(data, 9)
    if kind == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                             preset=2)
    if kind == "adc":
        return adc_encode(data)
    die("cannot encode chunk type " + kind)


def mish(first, sectors, partition, chunks):
    """A mish table: header, the chunks, the end marker."""
    head = struct.pack(">4sIQQQII", b"mish", 1, first, sectors, 0,
                       0x208, partition)
    head += bytes(24)
    checksum = struct.pack(">II", 2, 32) + bytes(128)
    entries = b"".join(struct.pack(">IIQQQQ", *c) for c in chunks)
    return head + checksum + struct.pack(">I", len(chunks)) + entries


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--types", default="zlib")
    p.add_argument("--chunk-size", type=int, default=1024 * 1024)
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--comments", action="store_true")
    p.add_argument("--ignore", action="store_true")
    p.add_argument("--trailing", type=int, default=0)
    p.add_argument("--map")
    p.add_argument("src")
    p.add_argument("out")
    args = p.parse_args()

    src = open(args.src, "rb").read()
    if len(src) % SECTOR:
        die("%s is not a whole number of sectors" % args.src)
    if args.chunk_size % SECTOR or args.chunk_size <= 0:
        die("--chunk-size must be a multiple of 512")
    types = args.types.split(",")
    for t in types:
        if t not in TYPES:
            die("unknown chunk type " + t)
    sectors = len(src) // SECTOR
    chunk_sectors = args.chunk_size // SECTOR
    n_chunks = max(1, -(-sectors // chunk_sectors))
    per_part = -(-n_chunks // args.partitions) * chunk_sectors

    out = open(args.out, "wb")
    out.truncate(0)
    pos = 0                     # in the data fork, which starts the file
    blkx = []
    qmap = []
    turn = zeros = 0
    for part, first in enumerate(range(0, max(sectors, 1), per_part)):
        count = min(per_part, sectors - first)
        chunks = []
        if args.comments:
            chunks.append((TYPES["comment"], 0x2b626567, 0, 0, pos, 0))
        s = 0
        while s < count:
            n = min(chunk_sectors, count - s)
            data = src[(first + s) * SECTOR:(first + s + n) * SECTOR]
            if data.count(0) == len(data):
                zeros += 1
                kind = "ignore" if args.ignore and zeros % 2 == 0 else "zero"
                # Join a run of zero chunks into one of the same type.
                if chunks and chunks[-1][0] == TYPES[kind] and \
                        chunks[-1][2] + chunks[-1][3] == s:
                    t, c, start, m, off, ln = chunks[-1]
                    chunks[-1] = (t, c, start, m + n, off, ln)
                else:
                    chunks.append((TYPES[kind], 0, s, n, pos, 0))
            else:
                kind = types[turn % len(types)]
                turn += 1
                stored = encode(kind, data)
                for k in range(0, len(stored), 4096):
                    block = stored[k:k + 4096]
                    if kind != "raw" or block.count(0) != len(block):
                        out.seek(pos + k)
                        out.write(block)
                chunks.append((TYPES[kind], 0, s, n, pos, len(stored)))
                pos += len(stored)
            data_chunk = kind not in ("zero", "ignore")
            start, length = (first + s) * SECTOR, n * SECTOR
            if qmap and qmap[-1]["data"] == data_chunk and \
                    qmap[-1]["start"] + qmap[-1]["length"] == start:
                qmap[-1]["length"] += length
            else:
                qmap.append({"start": start, "length": length, "depth": 0,
                             "present": data_chunk, "zero": not data_chunk,
                             "data": data_chunk})
            s += n
        if args.comments:
            chunks.append((TYPES["comment"], 0x2b656e64, count, 0, pos, 0))
        chunks.append((TYPES["end"], 0, count, 0, pos, 0))
        name = "disk image (Apple_HFS : %d)" % part
        blkx.append({"Attributes": "0x0050", "CFName": name,
                     "Data": mish(first, count, part, chunks),
                     "ID": str(part - 1), "Name": name})
        if count == sectors - first:
            break

    fork_length = pos
    plist = plistlib.dumps({"resource-fork": {"blkx": blkx}})
    out.seek(pos)
    out.write(plist)
    koly = struct.pack(">4sIIIQQQQQII16sII128sQQ120sII128sIQ12s",
                       b"koly", 4, 512, 1, 0, 0, fork_length, 0, 0, 1, 1,
                       bytes(range(16)), 2, 32, bytes(128),
                       pos, len(plist), bytes(120), 2, 32, bytes(128),
                       1, sectors, bytes(12))
    assert len(koly) == 512
    out.write(koly)
    out.write(b"\0" * args.trailing)
    out.close()
    if args.map:
        with open(args.map, "w") as f:
            json.dump(qmap, f)


if __name__ == "__main__":
    main()
