#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Several connections writing and flushing at once, then a restart.

  multiconn-client.py write URI MODEL SEED CONNECTIONS
      CONNECTIONS connections at once, each in its own area of the disk
      (areas are 4 MiB, shifted by half a map page so that neighbours
      share overlay map pages), write and zero random ranges of any
      size and alignment, flush now and then, flush at the end and
      disconnect.  MODEL (the whole disk as it must read) is updated
      and saved once every connection's last flush has returned.
  multiconn-client.py check URI MODEL
      Reads the whole disk and compares it with MODEL in 4 KiB blocks;
      says how many differ and where the first one is.
"""

import os
import random
import sys
import threading

import nbd

BLOCK = 4096
AREA = 4 << 20
SHIFT = 2 << 20


def write_mode(uri, model_path, seed, conns):
    model = bytearray(open(model_path, "rb").read())
    errors = []

    def worker(n):
        rng = random.Random(seed * 1000 + n)
        start = SHIFT + n * AREA
        h = nbd.NBD()
        h.connect_uri(uri)
        try:
            for _ in range(rng.randint(60, 120)):
                op = rng.random()
                length = rng.choice([1, 512, 4096, 8192, 65536,
                                     rng.randint(1, 200000)])
                off = start + rng.randint(0, AREA - length)
                if rng.random() < 0.5:
                    off = off // BLOCK * BLOCK
                if op < 0.6:
                    data = bytes([rng.randint(1, 255)]) * length
                    h.pwrite(data, off)
                    model[off:off + length] = data
                elif op < 0.9:
                    h.zero(length, off)
                    model[off:off + length] = bytes(length)
                else:
                    h.flush()
            h.flush()
            h.shutdown()
        except nbd.Error as e:
            errors.append("connection %d: %s" % (n, e))

    threads = [threading.Thread(target=worker, args=(n,))
               for n in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit("FAIL: " + errors[0])
    with open(model_path + ".tmp", "wb") as f:
        f.write(model)
    os.rename(model_path + ".tmp", model_path)


def check_mode(uri, model_path):
    model = open(model_path, "rb").read()
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    if size != len(model):
        sys.exit("FAIL: the disk is %d bytes, the model %d" % (size, len(model)))
    disk = b"".join(h.pread(min(1 << 20, size - o), o)
                    for o in range(0, size, 1 << 20))
    bad = [o for o in range(0, size, BLOCK)
           if disk[o:o + BLOCK] != model[o:o + BLOCK]]
    if bad:
        sys.exit("FAIL: %d blocks of 4 KiB differ from what was flushed, "
                 "the first at byte %d" % (len(bad), bad[0]))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write_mode(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        check_mode(sys.argv[2], sys.argv[3])
