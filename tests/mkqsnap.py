#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""An independent writer of qsnap files, written from docs/qsnap.md alone
(it shares no code with lib/), so that the reader is tested against the
spec and not against our own writer; it can also break one rule on
purpose.

  mkqsnap.py OUT --stream NAME=RAW [--stream NAME=RAW ...]
             [--block-size N] [--codec raw|lz4|zstd|mixed]
             [--parent PARENT.qsnap --parent-raw NAME=RAW ...]
             [--break RULE]

--codec mixed cycles raw, lz4 and zstd over the data blocks.  Zero
blocks are stored as nothing, identical blocks once.  With --parent,
blocks equal to the parent's (--parent-raw gives its content per stream)
become "parent" entries.  --break RULE damages the result so that it
breaks exactly that rule of the spec (--list-breaks names them all);
checksums are recomputed unless the rule is the checksum.  Breaks of an
index entry change one entry of the last stream (the one that is not the
default export when there are several), so a reader has to read every
stream to see them.
"""

import argparse
import os
import struct
import sys
import time

import lz4.block
import xxhash
import zstandard

HEADER = 4096
PAGE = 4096
PER_PAGE = 170
ZERO, RAW, LZ4, ZSTD, PARENT = range(5)

BREAKS = {
    "flip-data": "a byte of the first stored block",
    "flip-index": "a byte of the last index page",
    "version": "the header's version is 2",
    "truncate": "the file cut in half",
    "offset-past-end": "block 0 stored in the stream table",
    "parent-id": "the parent's file id (needs --parent)",
    "magic": "the header's magic",
    "incompat": "an unknown incompatible feature bit",
    "block-size": "a block size that is not a power of two",
    "no-streams": "a header with no streams",
    "parent-flag": "the parent flag set without a parent path",
    "table-in-header": "the stream table offset inside the header",
    "table-past-end": "the stream table offset past the end of the file",
    "stream-checksum": "a byte of the last stream's record",
    "stream-name": "a stream name with a character outside [A-Za-z0-9._-]",
    "duplicate-stream": "the last stream named like the first",
    "index-size": "one index page more than the stream's size needs",
    "index-in-header": "the last stream's index offset inside the header",
    "unknown-kind": "an entry of kind 5",
    "past-end": "a stored entry after the last block of the stream",
    "zero-with-bytes": "a zero entry carrying stored bytes",
    "raw-length": "a raw entry one byte short of the block size",
    "compressed-length": "a compressed entry of length 0",
    "parent-no-parent": "a parent entry in a snapshot without a parent",
    "offset-in-header": "stored bytes inside the header",
    "not-decompressible": "raw bytes (checksum intact) called zstd",
    "borrowed-bytes": "an entry pointing at an earlier block's stored bytes"
                      " with its own checksum",
}


def xxh64(b):
    return xxhash.xxh64_intdigest(b, seed=0)


def xxh3(b):
    return xxhash.xxh3_64_intdigest(b)


def read_id(path):
    with open(path, "rb") as f:
        h = f.read(HEADER)
    return h[24:40]


def main():
    p = argparse.ArgumentParser()
    if sys.argv[1:] == ["--list-breaks"]:
        print("\n".join(BREAKS))
        return
    p.add_argument("out")
    p.add_argument("--stream", action="append", required=True)
    p.add_argument("--block-size", type=int, default=65536)
    p.add_argument("--codec", default="mixed")
    p.add_argument("--parent")
    p.add_argument("--parent-raw", action="append", default=[])
    p.add_argument("--break", dest="brk", choices=BREAKS)
    a = p.parse_args()
    bs = a.block_size
    streams = [s.split("=", 1) for s in a.stream]
    parent_raw = dict(s.split("=", 1) for s in a.parent_raw)

    data = bytearray(b"\0" * HEADER)
    stored = {}                       # block contents -> (offset, len, kind, sum)
    cycle = [RAW, LZ4, ZSTD]
    n_data = 0
    indexes = []
    for name, raw in streams:
        content = open(raw, "rb").read()
        parent_content = (open(parent_raw[name], "rb").read()
                          if name in parent_raw else None)
        entries = []
        for off in range(0, len(content), bs):
            block = content[off:off + bs]
            block += b"\0" * (bs - len(block))
            if parent_content is not None:
                pb = parent_content[off:off + bs]
                pb += b"\0" * (bs - len(pb))
                if pb == block:
                    entries.append((0, 0, PARENT, 0))
                    continue
            if block.count(0) == bs:
                entries.append((0, 0, ZERO, 0))
                continue
            if block not in stored:
                kind = {"raw": RAW, "lz4": LZ4, "zstd": ZSTD}.get(
                    a.codec, cycle[n_data % 3])
                n_data += 1
                if kind == LZ4:
                    payload = lz4.block.compress(block, store_size=False)
                elif kind == ZSTD:
                    payload = zstandard.ZstdCompressor(level=3).compress(block)
                else:
                    payload = bytes(block)
                if kind != RAW and len(payload) > bs + bs // 8 + 64:
                    kind, payload = RAW, bytes(block)
                stored[bytes(block)] = (len(data), len(payload), kind,
                                        xxh3(payload))
                data += payload
            entries.append(stored[bytes(block)])
        indexes.append((name, len(content), entries))

    # Breaks of one entry of the last stream.
    entries = indexes[-1][2]
    data_entries = [e for e in entries if e[2] in (RAW, LZ4, ZSTD)]
    if a.brk == "zero-with-bytes":
        off, length, _, sum_ = data_entries[0]
        entries[entries.index((0, 0, ZERO, 0))] = (off, length, ZERO, sum_)
    elif a.brk == "borrowed-bytes":
        first = data_entries[0]
        later = [e for e in data_entries if e[2] == first[2] and e[0] != first[0]]
        if not later:
            sys.exit("borrowed-bytes: no second stored block of one codec")
        i = len(entries) - 1 - entries[::-1].index(later[-1])
        entries[i] = (first[0], first[1], first[2], later[-1][3])
    elif a.brk == "past-end":
        if len(entries) % PER_PAGE == 0:
            sys.exit("past-end: the last index page is full")
        entries.append(data_entries[0])
    elif a.brk in ("unknown-kind", "raw-length", "compressed-length",
                   "parent-no-parent", "offset-in-header",
                   "not-decompressible"):
        i = entries.index(data_entries[0])
        off, length, kind, sum_ = entries[i]
        if a.brk == "unknown-kind":
            kind = 5
        elif a.brk == "raw-length":
            kind, length = RAW, bs - 1
        elif a.brk == "compressed-length":
            kind, length = LZ4, 0
        elif a.brk == "parent-no-parent":
            off, length, kind, sum_ = 0, 0, PARENT, 0
        elif a.brk == "offset-in-header":
            off = HEADER - 8
        else:
            raw = [e for e in data_entries if e[2] == RAW]
            if not raw:
                sys.exit("not-decompressible: no raw block")
            off, length, kind, sum_ = raw[0][0], raw[0][1], ZSTD, raw[0][3]
        entries[i] = (off, length, kind, sum_)

    # Index pages, then the stream table.
    table = b""
    for k, (name, size, entries) in enumerate(indexes):
        while len(data) % PAGE:
            data += b"\0"
        first = len(data)
        pages = (len(entries) + PER_PAGE - 1) // PER_PAGE
        for pg in range(pages):
            page = bytearray(PAGE)
            for i, e in enumerate(entries[pg * PER_PAGE:(pg + 1) * PER_PAGE]):
                struct.pack_into("<QIB3xQ", page, i * 24, *e)
            struct.pack_into("<Q", page, 4088, xxh64(bytes(page[:4088])))
            data += page
        last = k == len(indexes) - 1
        if last and a.brk == "stream-name":
            name = name[:-1] + "/"
        elif last and a.brk == "duplicate-stream":
            if k == 0:
                sys.exit("duplicate-stream: needs two streams")
            name = indexes[0][0]
        if last and a.brk == "index-size":
            pages += 1
        elif last and a.brk == "index-in-header":
            first = HEADER - PAGE // 2
        rec = bytearray(64)
        rec[0:len(name)] = name.encode()
        struct.pack_into("<QQQ", rec, 32, size, first, pages)
        struct.pack_into("<Q", rec, 56, xxh64(bytes(rec[:56])))
        if last and a.brk == "stream-checksum":
            rec[40] ^= 0x10
        table += rec
    table_offset = len(data)
    data += table

    h = bytearray(HEADER)
    h[0:8] = b"QSNAP\0\r\n"
    compat = 1 if a.parent else 0
    struct.pack_into("<IIII", h, 8, 1, 0, compat, bs)
    h[24:40] = os.urandom(16)
    struct.pack_into("<QI", h, 40, table_offset, len(streams))
    if a.parent:
        h[56:72] = read_id(a.parent)
        rel = os.path.relpath(a.parent, os.path.dirname(os.path.abspath(a.out)))
        h[88:88 + len(rel)] = rel.encode()
    struct.pack_into("<QQ", h, 72, int(time.time()),
                     sum(s for _, s, _ in indexes))
    h[600:606] = b"mkqsnap"[:6]
    if a.brk == "version":
        struct.pack_into("<I", h, 8, 2)
    if a.brk == "parent-id":
        h[56] ^= 0xff
    if a.brk == "magic":
        h[0:8] = b"QSNAP\0\n\n"
    elif a.brk == "incompat":
        struct.pack_into("<I", h, 12, 1 << 7)
    elif a.brk == "block-size":
        struct.pack_into("<I", h, 20, bs + 512)
    elif a.brk == "no-streams":
        struct.pack_into("<I", h, 48, 0)
    elif a.brk == "parent-flag":
        struct.pack_into("<I", h, 16, compat | 1)
        h[88:600] = bytes(512)
    elif a.brk == "table-in-header":
        struct.pack_into("<Q", h, 40, HEADER - 64)
    elif a.brk == "table-past-end":
        struct.pack_into("<Q", h, 40, table_offset + PAGE * 16)
    struct.pack_into("<Q", h, 4088, xxh64(bytes(h[:4088])))
    data[0:HEADER] = h

    first_stored = min((e[0] for _, _, es in indexes for e in es
                        if e[2] in (RAW, LZ4, ZSTD)), default=None)
    if a.brk == "flip-data":
        data[first_stored + 10] ^= 0x55
    elif a.brk == "flip-index":
        data[table_offset - PAGE + 5] ^= 0x01       # the last index page
    elif a.brk == "truncate":
        data = data[:len(data) // 2]
    elif a.brk == "offset-past-end":
        # Point block 0 of the first stream at the stream table, with a
        # page checksum that still verifies: only the bounds check stops it.
        first = struct.unpack_from("<Q", table, 40)[0]
        page = bytearray(data[first:first + PAGE])
        struct.pack_into("<QIB3xQ", page, 0, table_offset - 8, 64, LZ4, 0)
        struct.pack_into("<Q", page, 4088, xxh64(bytes(page[:4088])))
        data[first:first + PAGE] = page

    with open(a.out, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()
