#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Check an NBD export against the raw file it should equal, with libnbd.

  nbd-check.py reads URI EXPECTED [--count N] [--seed S] [--conns C]
      random unaligned reads (1 byte .. 300 KiB, some crossing the end of
      clusters) on C concurrent connections, each compared with EXPECTED.
  nbd-check.py extents URI EXPECTED [--qemu-map JSON]
      every extent of base:allocation: the extents cover the disk without
      gaps, every range reported as zero is zero in EXPECTED, and with
      --qemu-map (qemu-img map --output=json of the same image) the zero
      flag agrees with QEMU's at every byte.
Exit status 0 when everything matched; the first mismatch is printed.
"""

import argparse
import json
import mmap
import os
import random
import sys
import threading

import nbd

STATE_HOLE = 1
STATE_ZERO = 2


def connect(uri, meta=False):
    h = nbd.NBD()
    if meta:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(uri)
    return h


def open_expected(path):
    """The expected content, mapped rather than read: the large test
    images are sparse files of several GiB."""
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)


def check_reads(args):
    expected = open_expected(args.expected)
    size = len(expected)
    errors = []

    def worker(n):
        rng = random.Random(args.seed * 1000 + n)
        h = connect(args.uri)
        if h.get_size() != size:
            errors.append("size %d, expected %d" % (h.get_size(), size))
            return
        for _ in range(args.count):
            length = rng.choice([1, 511, 513, 4095, 4097, 65537,
                                 rng.randint(1, 300 * 1024)])
            length = min(length, size)
            if rng.random() < 0.1:
                offset = size - length       # the very end of the disk
            else:
                offset = rng.randint(0, size - length)
            got = h.pread(length, offset)
            if got != expected[offset:offset + length]:
                errors.append("read of %d bytes at offset %d differs"
                              % (length, offset))
                return
        h.shutdown()

    threads = [threading.Thread(target=worker, args=(n,))
               for n in range(args.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit("FAIL: %s: %s" % (args.expected, errors[0]))
    print("%s: %d random reads on %d connections matched"
          % (args.expected, args.count * args.conns, args.conns))


def fetch_extents(h, size):
    extents = []
    offset = 0
    while offset < size:
        got = []

        def cb(metacontext, off, entries, err):
            if metacontext == nbd.CONTEXT_BASE_ALLOCATION:
                got.extend(entries)
            return 0

        h.block_status(min(size - offset, 1 << 31), offset, cb)
        if not got:
            sys.exit("FAIL: no extents at offset %d" % offset)
        for i in range(0, len(got), 2):
            length, flags = got[i], got[i + 1]
            length = min(length, size - offset)
            extents.append((offset, length, flags))
            offset += length
            if offset >= size:
                break
    return extents


def zero_in_file(f, offset, length):
    """Whether length bytes at offset of file f are zeros, reading only
    what is not a hole."""
    end = offset + length
    while offset < end:
        try:
            offset = os.lseek(f.fileno(), offset, os.SEEK_DATA)
        except OSError:
            return True                 # only a hole up to the end
        if offset >= end:
            return True
        hole = min(os.lseek(f.fileno(), offset, os.SEEK_HOLE), end)
        f.seek(offset)
        while offset < hole:
            chunk = f.read(min(hole - offset, 1 << 20))
            if not chunk or chunk.count(0) != len(chunk):
                return False
            offset += len(chunk)
    return True


def qemu_zero_map(path):
    """(start, length, zero) from qemu-img map, zero None where qemu's
    answer comes from below the format: "data" and "zero" together mean
    allocated data that the host file reads as zeros (a hole or an
    unwritten extent under the cluster), which depends on how the image
    file was written, not on its map.  The format's own zeros (unallocated
    or zero-flagged clusters) are "data": false."""
    with open(path) as f:
        return [(e["start"], e["length"],
                 None if e["zero"] and e["data"] else e["zero"])
                for e in json.load(f)]


def check_extents(args):
    h = connect(args.uri, meta=True)
    size = h.get_size()
    extents = fetch_extents(h, size)

    with open(args.expected, "rb") as f:
        for offset, length, flags in extents:
            if flags & STATE_ZERO and not zero_in_file(f, offset, length):
                sys.exit("FAIL: extent at %d (+%d) is reported as "
                         "zero but holds data" % (offset, length))

    if args.qemu_map:
        # Sweep both lists over every boundary of either.
        ours = [(o, l, bool(fl & STATE_ZERO)) for o, l, fl in extents]
        theirs = qemu_zero_map(args.qemu_map)
        i = j = 0
        pos = 0
        while pos < size and i < len(ours) and j < len(theirs):
            o_end = ours[i][0] + ours[i][1]
            t_end = theirs[j][0] + theirs[j][1]
            if theirs[j][2] is not None and ours[i][2] != theirs[j][2]:
                sys.exit("FAIL: at offset %d we say zero=%s, qemu-img map "
                         "says zero=%s" % (pos, ours[i][2], theirs[j][2]))
            pos = min(o_end, t_end)
            if o_end == pos:
                i += 1
            if t_end == pos:
                j += 1
        if pos < size:
            sys.exit("FAIL: extents stop at %d of %d" % (pos, size))

    zero = sum(l for o, l, fl in extents if fl & STATE_ZERO)
    print("%s: %d extents, %d of %d bytes zero, all consistent%s"
          % (args.expected, len(extents), zero, size,
             " with qemu-img map" if args.qemu_map else ""))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("reads")
    r.add_argument("uri")
    r.add_argument("expected")
    r.add_argument("--count", type=int, default=200)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--conns", type=int, default=4)
    e = sub.add_parser("extents")
    e.add_argument("uri")
    e.add_argument("expected")
    e.add_argument("--qemu-map")
    args = p.parse_args()
    if args.mode == "reads":
        check_reads(args)
    else:
        check_extents(args)


if __name__ == "__main__":
    main()
