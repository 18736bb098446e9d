#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Load: N connections at once doing random reads and writes for a
bounded time, checked against a model.

  load-check.py URI INITIAL SECONDS CONNECTIONS

The first half of the disk is split into one private region per
connection: every read there must match that connection's model
exactly.  In the second half all connections write whole 4 KiB blocks,
each filled with one byte value; a read there may race a write, so each
byte must be the block's original value or one some connection wrote to
it; once all connections are done, every shared block must be uniformly
one of the values written to it (or untouched).  Exits non-zero with the
first mismatch; a hang is caught by the caller's timeout.
"""

import random
import sys
import threading
import time

import nbd

BLOCK = 4096


def main():
    uri, initial, seconds, conns = (sys.argv[1], sys.argv[2],
                                    float(sys.argv[3]), int(sys.argv[4]))
    base = open(initial, "rb").read()
    size = len(base) // BLOCK * BLOCK
    half = size // 2 // BLOCK * BLOCK
    region = half // conns // BLOCK * BLOCK
    shared_blocks = (size - half) // BLOCK
    written = [set() for _ in range(shared_blocks)]     # values per block
    lock = threading.Lock()
    errors = []
    ops = [0] * conns
    deadline = time.monotonic() + seconds

    def worker(n):
        rng = random.Random(n)
        h = nbd.NBD()
        h.connect_uri(uri)
        start = n * region
        model = bytearray(base[start:start + region])
        while time.monotonic() < deadline and not errors:
            op = rng.random()
            if op < 0.3:                       # private write, any alignment
                length = rng.randint(1, 20000)
                off = rng.randint(0, region - length)
                data = bytes([rng.randint(0, 255)]) * length
                h.pwrite(data, start + off)
                model[off:off + length] = data
            elif op < 0.55:                    # private read
                length = rng.randint(1, 70000)
                off = rng.randint(0, region - length)
                if h.pread(length, start + off) != model[off:off + length]:
                    errors.append("conn %d: private read at %d differs"
                                  % (n, start + off))
            elif op < 0.75:                    # shared write, whole blocks
                b = rng.randrange(shared_blocks)
                value = rng.randint(1, 255)
                with lock:
                    written[b].add(value)
                h.pwrite(bytes([value]) * BLOCK, half + b * BLOCK)
            elif op < 0.97:                    # shared read
                b = rng.randrange(shared_blocks)
                got = h.pread(BLOCK, half + b * BLOCK)
                orig = base[half + b * BLOCK:half + (b + 1) * BLOCK]
                with lock:
                    allowed = set(written[b])
                for i in range(0, BLOCK, 512):
                    if got[i] != orig[i] and got[i] not in allowed:
                        errors.append("conn %d: shared block %d holds a value "
                                      "nobody wrote" % (n, b))
                        break
            else:
                h.flush()
            ops[n] += 1
        # Final check of this connection's region.
        got = h.pread(region, start)
        if got != model:
            errors.append("conn %d: private region differs at the end" % n)
        h.shutdown()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit("FAIL: " + errors[0])

    h = nbd.NBD()
    h.connect_uri(uri)
    for b in range(shared_blocks):
        got = h.pread(BLOCK, half + b * BLOCK)
        orig = base[half + b * BLOCK:half + (b + 1) * BLOCK]
        if not written[b]:
            ok = got == orig
        else:
            ok = got[0] in written[b] and got == bytes([got[0]]) * BLOCK
        if not ok:
            sys.exit("FAIL: shared block %d is not one value that was written "
                     "to it" % b)
    print("%d operations on %d connections, no mismatch" % (sum(ops), conns))


if __name__ == "__main__":
    main()
