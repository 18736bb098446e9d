#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Write an empty overlay as qemount 0.1 made them (no feature bits, the
16-sample fingerprint), for the compatibility test.

  old-overlay.py BASE-RAW FORMAT BASE-PATH OUTPUT

BASE-RAW holds the disk's bytes; FORMAT and BASE-PATH only go into the
header's message fields.  The layout follows lib/overlay.c: a 4 KiB
header, one 4 KiB map page per 4 MiB of disk, then the data slots.
"""

import struct
import sys

import xxhash

BLOCK = 4096


def sparse_fingerprint(disk):
    h = xxhash.xxh64(seed=0)
    h.update(struct.pack("<Q", len(disk)))
    for i in range(16):
        offset = 0 if i == 0 else len(disk) // 16 * i
        n = 65536 if i == 0 else BLOCK
        if offset >= len(disk):
            break
        h.update(disk[offset:offset + n])
    return h.intdigest()


def main():
    base, fmt, path, out = sys.argv[1:5]
    disk = open(base, "rb").read()
    blocks = (len(disk) + BLOCK - 1) // BLOCK
    pages = (blocks + 1023) // 1024
    map_offset, data_offset = BLOCK, BLOCK + pages * BLOCK
    h = bytearray(BLOCK)
    h[0:8] = b"QMOUNTOV"
    struct.pack_into("<IIQQQQ", h, 8, 1, BLOCK, len(disk), map_offset,
                     data_offset, sparse_fingerprint(disk))
    h[48:48 + len(fmt)] = fmt.encode()
    h[64:64 + len(path)] = path.encode()
    struct.pack_into("<Q", h, BLOCK - 8, xxhash.xxh64(bytes(h[:BLOCK - 8])).intdigest())
    with open(out, "wb") as f:
        f.write(h)
        f.truncate(data_offset)


if __name__ == "__main__":
    main()
