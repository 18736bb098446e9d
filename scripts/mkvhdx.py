#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Write VHDX images for tests, independently of the decoder and of QEMU.

Usage:
  mkvhdx.py [--block-size BYTES] [--sector 512|4096] [--fixed]
            [--shuffle SEED] [--zero-states LIST] [--equal-headers]
            [--bad-region-table-1] [--log simple|wrap]
            [--parent PARENT.vhdx --parent-raw PARENT.raw
             [--relative-path PATH] [--linkage GUID]]
            [--map OUT.map.json] SRC.raw OUT.vhdx
  mkvhdx.py map IMAGE.vhdx

The first form makes OUT.vhdx whose disk is SRC.raw (its size must be a
multiple of the logical sector).  Blocks of zeros are not stored: they
take the states of --zero-states in turn (default 0, "not present"; also
1 undefined, 2 zero, 3 unmapped); --fixed stores every block, in order.

--parent makes a differencing image over PARENT.vhdx, whose disk is
PARENT.raw: blocks equal to the parent's are not present, blocks whose
every sector differs are fully present, blocks of zeros over data are
in the zero state, and the rest are partially present, with a sector
bitmap saying which sectors are here (the others hold 0xcc, which must
never be read).  The parent locator names PARENT.vhdx by its base name
(or --relative-path, with Windows backslashes) and its data write GUID
(or --linkage).

--log leaves part of the image in a log its writer "did not apply": the
file holds stale bytes (BAT entries missing, a wrong virtual size, garbage
in stored data) and log entries whose replay gives SRC.raw.  "simple":
three entries from the start of the log, each naming the first as the
tail (QEMU replays it too).  "wrap": the entries wrap around the end of
the log, an older entry with the previous sequence number lies before
the tail (it must not be replayed), a newer torn entry and an entry of
another log follow.  The older header does not name the log.

map prints what the BAT of IMAGE (not differencing, no log) says, in the
JSON form of "qemu-img map": stored blocks are data, the rest zero.
--map writes the same for the image being made (as its log leaves it).

Every number is little-endian.  CRC-32C from python3-crc32c.
"""

import argparse
import json
import os
import random
import struct
import sys
import uuid

import crc32c

MiB = 1 << 20
KiB = 1 << 10
LOG_SECTOR = 4096

NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED, FULLY, PARTIALLY = 0, 1, 2, 3, 6, 7
SB_PRESENT = 6

BAT_GUID = uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08")
METADATA_GUID = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
FILE_PARAMETERS = uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b")
VIRTUAL_SIZE = uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8")
PAGE83 = uuid.UUID("beca12ab-b2e6-4523-93ef-c309e000c746")
LOGICAL_SECTOR = uuid.UUID("8141bf1d-a96f-4709-ba47-f233a8faab5f")
PHYSICAL_SECTOR = uuid.UUID("cda348c7-445d-4471-9cc9-e9885251c556")
PARENT_LOCATOR = uuid.UUID("a8d35f2d-b30b-454d-abf7-d3d84834ab0c")
VHDX_LOCATOR_TYPE = uuid.UUID("b04aefb7-d19e-4a81-b789-25b8e9445913")


def die(msg):
    print("mkvhdx.py: " + msg, file=sys.stderr)
    sys.exit(1)


def round_up(n, m):
    return (n + m - 1) // m * m


def checksum(buf):
    """CRC-32C of a structure, its checksum field (bytes 4-8) as zero."""
    return crc32c.crc32c(bytes(buf[:4]) + b"\0" * 4 + bytes(buf[8:]))


def set_checksum(buf):
    struct.pack_into("<I", buf, 4, checksum(buf))


class Image:
    """The whole file in a sparse bytearray-like dict of 4 KiB sectors."""

    def __init__(self):
        self.size = 0
        self.chunks = {}

    def write(self, offset, data):
        self.size = max(self.size, offset + len(data))
        pos = 0
        while pos < len(data):
            sec, within = divmod(offset + pos, LOG_SECTOR)
            n = min(LOG_SECTOR - within, len(data) - pos)
            cur = bytearray(self.chunks.get(sec, bytes(LOG_SECTOR)))
            cur[within:within + n] = data[pos:pos + n]
            if cur == bytes(LOG_SECTOR):
                self.chunks.pop(sec, None)
            else:
                self.chunks[sec] = bytes(cur)
            pos += n

    def read(self, offset, length):
        out = bytearray()
        while length > 0:
            sec, within = divmod(offset, LOG_SECTOR)
            n = min(LOG_SECTOR - within, length)
            out += self.chunks.get(sec, bytes(LOG_SECTOR))[within:within + n]
            offset += n
            length -= n
        return bytes(out)

    def save(self, path, size):
        with open(path, "wb") as f:
            for sec in sorted(self.chunks):
                f.seek(sec * LOG_SECTOR)
                f.write(self.chunks[sec])
            f.truncate(size)


def geometry(size, block, sector, differencing):
    chunk_ratio = (1 << 23) * sector // block
    blocks = (size + block - 1) // block
    chunks = (blocks + chunk_ratio - 1) // chunk_ratio
    if differencing:
        entries = chunks * (chunk_ratio + 1)
    else:
        entries = blocks + (blocks - 1) // chunk_ratio if blocks else 0
    return chunk_ratio, blocks, chunks, entries


def bat_index(b, chunk_ratio):
    return b + b // chunk_ratio


def header(seq, rng, log_guid, log_offset, log_length, data_write_guid):
    h = bytearray(LOG_SECTOR)
    struct.pack_into("<4sIQ", h, 0, b"head", 0, seq)
    h[16:32] = uuid.UUID(int=rng.getrandbits(128)).bytes_le
    h[32:48] = data_write_guid
    h[48:64] = log_guid
    struct.pack_into("<HHIQ", h, 64, 0, 1, log_length, log_offset)
    set_checksum(h)
    return h


def region_table(regions):
    t = bytearray(64 * KiB)
    struct.pack_into("<4sIII", t, 0, b"regi", 0, len(regions), 0)
    for i, (guid, off, length) in enumerate(regions):
        struct.pack_into("<16sQII", t, 16 + 32 * i, guid.bytes_le, off,
                         length, 1)
    set_checksum(t)
    return t


def utf16(s):
    return s.encode("utf-16-le")


def parent_locator(entries):
    keys = b""
    head = bytearray(20 + 12 * len(entries))
    head[0:16] = VHDX_LOCATOR_TYPE.bytes_le
    struct.pack_into("<HH", head, 16, 0, len(entries))
    data_off = len(head)
    for i, (k, v) in enumerate(entries):
        kb, vb = utf16(k), utf16(v)
        struct.pack_into("<IIHH", head, 20 + 12 * i, data_off + len(keys),
                         data_off + len(keys) + len(kb), len(kb), len(vb))
        keys += kb + vb
    return bytes(head) + keys


def metadata(items):
    """The metadata region: table, then items from 64 KiB."""
    region = bytearray(MiB)
    struct.pack_into("<8sHH", region, 0, b"metadata", 0, len(items))
    off = 64 * KiB
    for i, (guid, data, flags) in enumerate(items):
        struct.pack_into("<16sIII", region, 32 + 32 * i, guid.bytes_le, off,
                         len(data), flags)
        region[off:off + len(data)] = data
        off += round_up(len(data), 8)
    return region


def read_current_header(img):
    best = None
    for off in (64 * KiB, 128 * KiB):
        h = img[off:off + LOG_SECTOR]
        if h[:4] == b"head" and struct.unpack_from("<I", h, 4)[0] == checksum(h):
            seq = struct.unpack_from("<Q", h, 8)[0]
            if best is None or seq > best[0]:
                best = (seq, h)
    if best is None:
        die("no valid header")
    return best[1]


def parse(path):
    """(virtual size, block size, sector, has_parent, BAT entries) of a
    VHDX image, from its current header and first region table."""
    with open(path, "rb") as f:
        img = f.read(4 * MiB)
        h = read_current_header(img)
        if h[48:64] != bytes(16):
            die("%s: has a log; its map would need it replayed" % path)
        t = img[192 * KiB:256 * KiB]
        n = struct.unpack_from("<I", t, 8)[0]
        regions = {}
        for i in range(n):
            g, off, length, _ = struct.unpack_from("<16sQII", t, 16 + 32 * i)
            regions[uuid.UUID(bytes_le=g)] = (off, length)
        md_off = regions[METADATA_GUID][0]
        f.seek(md_off)
        md = f.read(MiB)
        items = {}
        for i in range(struct.unpack_from("<H", md, 10)[0]):
            g, off, length, flags = struct.unpack_from("<16sIII", md, 32 + 32 * i)
            items[uuid.UUID(bytes_le=g)] = md[off:off + length]
        block, flags = struct.unpack("<II", items[FILE_PARAMETERS])
        size = struct.unpack("<Q", items[VIRTUAL_SIZE])[0]
        sector = struct.unpack("<I", items[LOGICAL_SECTOR])[0]
        cr, blocks, chunks, entries = geometry(size, block, sector, flags & 2)
        f.seek(regions[BAT_GUID][0])
        bat = struct.unpack("<%dQ" % entries, f.read(8 * entries))
    return size, block, sector, bool(flags & 2), bat


def qemu_map(size, block, sector, bat):
    cr = (1 << 23) * sector // block
    out = []
    for b in range((size + block - 1) // block):
        state = bat[bat_index(b, cr)] & 7
        start, length = b * block, min(block, size - b * block)
        data = state in (FULLY, PARTIALLY)
        if out and out[-1]["data"] == data and \
                out[-1]["start"] + out[-1]["length"] == start:
            out[-1]["length"] += length
        else:
            out.append({"start": start, "length": length, "depth": 0,
                        "present": data, "zero": not data, "data": data})
    return out


def make(args):
    rng = random.Random(args.seed)
    block, sector = args.block_size, args.sector
    if block < MiB or block > 256 * MiB or block & (block - 1):
        die("block size must be a power of two from 1 MiB to 256 MiB")
    src = open(args.src, "rb").read()
    size = len(src)
    if size % sector:
        die("%s: size %d is not a multiple of the %d-byte sector"
            % (args.src, size, sector))
    differencing = args.parent is not None
    parent = b""
    if differencing:
        parent = open(args.parent_raw, "rb").read()
    cr, blocks, chunks, entries = geometry(size, block, sector, differencing)
    spb = block // sector

    log_offset, log_length = MiB, MiB
    bat_offset = 2 * MiB
    bat_length = round_up(max(entries * 8, 1), MiB)
    md_offset = bat_offset + bat_length
    data_start = md_offset + MiB

    bat = [0] * entries
    blobs = []              # (bat index, payload bytes or SB bytes)
    zero_states = [int(s) for s in args.zero_states.split(",")]
    zi = 0
    bitmaps = {}
    for b in range(blocks):
        data = src[b * block:(b + 1) * block].ljust(block, b"\0")
        idx = bat_index(b, cr)
        if not differencing:
            if data.count(0) == block and not args.fixed:
                bat[idx] = zero_states[zi % len(zero_states)]
                zi += 1
            else:
                bat[idx] = FULLY
                blobs.append((idx, data))
            continue
        pdata = parent[b * block:(b + 1) * block].ljust(block, b"\0")
        present = [data[s * sector:(s + 1) * sector] !=
                   pdata[s * sector:(s + 1) * sector] for s in range(spb)]
        if not any(present):
            bat[idx] = NOT_PRESENT
        elif data.count(0) == block:
            bat[idx] = ZERO
        elif all(present):
            bat[idx] = FULLY
            blobs.append((idx, data))
        else:
            bat[idx] = PARTIALLY
            stored = bytearray(data)
            for s in range(spb):
                if not present[s]:
                    stored[s * sector:(s + 1) * sector] = b"\xcc" * sector
            blobs.append((idx, bytes(stored)))
            c = b // cr
            bm = bitmaps.setdefault(c, bytearray(MiB))
            first = (b % cr) * spb
            for s in range(spb):
                if present[s]:
                    bm[(first + s) // 8] |= 1 << ((first + s) % 8)
    for c, bm in sorted(bitmaps.items()):
        idx = c * (cr + 1) + cr
        bat[idx] = SB_PRESENT
        blobs.append((idx, bytes(bm)))

    order = list(range(len(blobs)))
    if args.shuffle is not None:
        random.Random(args.shuffle).shuffle(order)
    img = Image()
    pos = data_start
    for i in order:
        idx, data = blobs[i]
        bat[idx] |= pos
        img.write(pos, data)
        pos += round_up(len(data), MiB)
    file_size = max(pos, data_start)

    # Metadata.
    flags = (1 if args.fixed else 0) | (2 if differencing else 0)
    items = [
        (FILE_PARAMETERS, struct.pack("<II", block, flags), 4),
        (VIRTUAL_SIZE, struct.pack("<Q", size), 6),
        (PAGE83, uuid.UUID(int=rng.getrandbits(128)).bytes_le, 6),
        (LOGICAL_SECTOR, struct.pack("<I", sector), 6),
        (PHYSICAL_SECTOR, struct.pack("<I", args.physical_sector), 6),
    ]
    if differencing:
        with open(args.parent, "rb") as f:
            ph = read_current_header(f.read(192 * KiB))
        linkage = args.linkage or \
            "{%s}" % uuid.UUID(bytes_le=bytes(ph[32:48]))
        entries_kv = [("parent_linkage", linkage)]
        rel = args.relative_path
        if rel is None:
            rel = ".\\" + os.path.basename(args.parent)
        if rel:
            entries_kv.append(("relative_path", rel))
        entries_kv.append(("absolute_win32_path",
                           "C:\\VMs\\" + os.path.basename(args.parent)))
        items.append((PARENT_LOCATOR, parent_locator(entries_kv), 6))
    md = metadata(items)
    img.write(md_offset, md)
    bat_bytes = struct.pack("<%dQ" % entries, *bat)
    img.write(bat_offset, bat_bytes)

    regions = [(BAT_GUID, bat_offset, bat_length),
               (METADATA_GUID, md_offset, MiB)]
    rt = region_table(regions)
    rt1 = bytearray(rt)
    if args.bad_region_table_1:
        rt1[100] ^= 0xff          # checksum no longer matches
    img.write(192 * KiB, rt1)
    img.write(256 * KiB, rt)

    ident = bytearray(64 * KiB)
    ident[0:8] = b"vhdxfile"
    ident[8:8 + 2 * len("mkvhdx.py")] = utf16("mkvhdx.py")
    img.write(0, ident)

    data_write_guid = uuid.UUID(int=rng.getrandbits(128)).bytes_le
    log_guid = bytes(16)
    if args.log:
        log_guid = uuid.UUID(int=rng.getrandbits(128)).bytes_le
        make_log(args.log, img, rng, log_guid, log_offset, log_length,
                 bat_offset, md_offset, file_size, blobs, bat, block, cr)
    seq = 1000 + rng.randrange(1000)
    # The older header never names the log: a reader that took it would
    # miss the log's writes.
    h_old = header(seq, rng, bytes(16), log_offset, log_length,
                   data_write_guid)
    h_new = header(seq + (0 if args.equal_headers else 1), rng, log_guid,
                   log_offset, log_length, data_write_guid)
    if args.equal_headers:
        h_old = h_new
    # Alternate which copy is current.
    if seq % 2:
        img.write(64 * KiB, h_old)
        img.write(128 * KiB, h_new)
    else:
        img.write(64 * KiB, h_new)
        img.write(128 * KiB, h_old)
    img.save(args.out, file_size)
    if args.map:
        with open(args.map, "w") as f:
            json.dump(qemu_map(size, block, sector, bat), f)


def log_entry(seq, tail, log_guid, file_size, descriptors):
    """One log entry: descriptors are ("data", offset, 4096 bytes) or
    ("zero", offset, length).  Returns the entry's sectors."""
    ndesc = len(descriptors)
    desc_sectors = (64 + 32 * ndesc + LOG_SECTOR - 1) // LOG_SECTOR
    data = [d for d in descriptors if d[0] == "data"]
    length = (desc_sectors + len(data)) * LOG_SECTOR
    e = bytearray(desc_sectors * LOG_SECTOR)
    struct.pack_into("<4sIIIQII16sQQ", e, 0, b"loge", 0, length, tail, seq,
                     ndesc, 0, log_guid, file_size, file_size)
    sectors = []
    for i, d in enumerate(descriptors):
        at = 64 + 32 * i
        if d[0] == "zero":
            struct.pack_into("<4sIQQQ", e, at, b"zero", 0, d[2], d[1], seq)
        else:
            payload = d[2]
            e[at:at + 4] = b"desc"
            e[at + 4:at + 8] = payload[4092:4096]
            e[at + 8:at + 16] = payload[0:8]
            struct.pack_into("<QQ", e, at + 16, d[1], seq)
            s = bytearray(payload)
            struct.pack_into("<4sI", s, 0, b"data", seq >> 32)
            struct.pack_into("<I", s, 4092, seq & 0xffffffff)
            sectors.append(bytes(s))
    whole = bytes(e) + b"".join(sectors)
    whole = bytearray(whole)
    set_checksum(whole)
    return [bytes(whole[i:i + LOG_SECTOR])
            for i in range(0, len(whole), LOG_SECTOR)]


def find_zero_run(img, blobs, bat, cr, block, n):
    """A sector-aligned run of n zero sectors inside a stored payload
    block, preceded and followed by stored sectors."""
    for idx, data in blobs:
        if idx % (cr + 1) == cr or bat[idx] & 7 != FULLY:
            continue
        off = bat[idx] & ~(MiB - 1)
        for s in range(1, block // LOG_SECTOR - n):
            if all(data[(s + k) * LOG_SECTOR:(s + k + 1) * LOG_SECTOR] ==
                   bytes(LOG_SECTOR) for k in range(n)):
                return off + s * LOG_SECTOR
    die("no run of %d zero sectors in a stored block for the log" % n)


def stored_sectors(blobs, bat, cr, count, avoid):
    """File offsets of count stored, non-zero payload sectors."""
    out = []
    for idx, data in blobs:
        if idx % (cr + 1) == cr or bat[idx] & 7 != FULLY:
            continue
        off = bat[idx] & ~(MiB - 1)
        for s in range(0, len(data) // LOG_SECTOR, 7):
            o = off + s * LOG_SECTOR
            if data[s * LOG_SECTOR:(s + 1) * LOG_SECTOR] != bytes(LOG_SECTOR) \
                    and all(abs(o - a) >= 4 * LOG_SECTOR for a in avoid + out):
                out.append(o)
                if len(out) == count:
                    return out
    die("not enough stored sectors for the log")


def make_log(mode, img, rng, log_guid, log_offset, log_length, bat_offset,
             md_offset, file_size, blobs, bat, block, cr):
    """Turn part of the finished image into stale bytes plus log entries
    that put them right."""
    garbage = bytes(rng.randrange(256) for _ in range(LOG_SECTOR))
    final = {}              # file offset -> the 4 KiB the log must leave

    # The first BAT sector, with the stored entries it holds dropped.
    bat_sector = img.read(bat_offset, LOG_SECTOR)
    stale_bat = bytearray(bat_sector)
    for i in range(0, LOG_SECTOR, 8):
        if struct.unpack_from("<Q", stale_bat, i)[0] & 7 == FULLY:
            struct.pack_into("<Q", stale_bat, i, NOT_PRESENT)
    # The metadata items sector: a virtual size one block short.
    md_sector = img.read(md_offset + 64 * KiB, LOG_SECTOR)
    stale_md = bytearray(md_sector)
    vs = struct.unpack_from("<Q", stale_md, 8)[0]
    struct.pack_into("<Q", stale_md, 8, vs - block if vs > block else vs // 2)
    zero_at = find_zero_run(img, blobs, bat, cr, block, 3)
    p2, p3, p4 = stored_sectors(blobs, bat, cr, 3, [zero_at])

    for off in (bat_offset, md_offset + 64 * KiB, zero_at, zero_at + 4096,
                zero_at + 8192, p2, p4):
        final[off] = img.read(off, LOG_SECTOR)
    # Stale file: what the writer had not applied yet.
    img.write(bat_offset, stale_bat)
    img.write(md_offset + 64 * KiB, stale_md)
    img.write(zero_at, garbage * 3)
    img.write(p2, garbage)
    img.write(p4, garbage)

    # E2: the BAT, and garbage over a zero run that E3 zeroes again.
    e2 = [("data", bat_offset, bat_sector),
          ("data", zero_at + 4096, garbage)]
    # E3: the metadata, and the zeros (after E2's garbage: order matters).
    e3 = [("data", md_offset + 64 * KiB, md_sector),
          ("zero", zero_at, 3 * LOG_SECTOR)]
    # E4: garbage then the right data for p2 (the later write wins), p4.
    e4 = [("data", p2, garbage), ("data", p2, final[p2]),
          ("data", p4, final[p4])]
    sectors = log_length // LOG_SECTOR
    ring = [bytes(LOG_SECTOR)] * sectors

    def put(pos, secs):
        for i, s in enumerate(secs):
            ring[(pos + i) % sectors] = s
        return (pos + len(secs)) % sectors

    if mode == "simple":
        tail = 0
        pos = put(0, log_entry(11, 0, log_guid, file_size, e2))
        pos = put(pos, log_entry(12, 0, log_guid, file_size, e3))
        put(pos, log_entry(13, 0, log_guid, file_size, e4))
    else:
        # E1 (sequence 10) precedes the tail: already applied, and the
        # file changed since; replaying it would put garbage in p3.
        pos = put(sectors - 6, log_entry(10, (sectors - 6) * LOG_SECTOR,
                                         log_guid, file_size,
                                         [("data", p3, garbage)]))
        tail = pos * LOG_SECTOR
        pos = put(pos, log_entry(11, tail, log_guid, file_size, e2))
        pos = put(pos, log_entry(12, tail, log_guid, file_size, e3))
        pos = put(pos, log_entry(13, tail, log_guid, file_size, e4))
        if pos > sectors - 6:
            die("log entries overlap")
        # A torn newer entry: its data sector never made it.
        torn = log_entry(14, tail, log_guid, file_size,
                         [("data", p3, garbage)])
        torn[1] = bytes(LOG_SECTOR)
        pos = put(pos, torn)
        # An entry of another log (an older LogGuid).
        other = uuid.UUID(int=rng.getrandbits(128)).bytes_le
        put(pos + 10, log_entry(99, (pos + 10) * LOG_SECTOR, other,
                                file_size, [("data", p3, garbage)]))
    img.write(log_offset, b"".join(ring))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "map":
        if len(sys.argv) != 3:
            die("usage: mkvhdx.py map IMAGE")
        size, block, sector, differencing, bat = parse(sys.argv[2])
        if differencing:
            die("%s: differencing image: its map needs the parent's" %
                sys.argv[2])
        json.dump(qemu_map(size, block, sector, bat), sys.stdout)
        print()
        return
    p = argparse.ArgumentParser()
    p.add_argument("--block-size", type=int, default=2 * MiB)
    p.add_argument("--sector", type=int, choices=(512, 4096), default=512)
    p.add_argument("--physical-sector", type=int, choices=(512, 4096),
                   default=4096)
    p.add_argument("--fixed", action="store_true")
    p.add_argument("--shuffle", type=int)
    p.add_argument("--zero-states", default="0")
    p.add_argument("--equal-headers", action="store_true")
    p.add_argument("--bad-region-table-1", action="store_true")
    p.add_argument("--log", choices=("simple", "wrap"))
    p.add_argument("--parent")
    p.add_argument("--parent-raw")
    p.add_argument("--relative-path")
    p.add_argument("--linkage")
    p.add_argument("--map")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("src")
    p.add_argument("out")
    args = p.parse_args()
    if (args.parent is None) != (args.parent_raw is None):
        die("--parent and --parent-raw go together")
    make(args)


if __name__ == "__main__":
    main()
