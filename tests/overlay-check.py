#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Random writes, zeroes, trims and flushes through a writable NBD export,
mirrored on an in-memory model of the disk; then the whole disk is read
back and compared with the model.

  overlay-check.py URI INITIAL MODEL_OUT [--count N] [--seed S]

INITIAL is what the disk holds before (the base image's raw content, or a
previous run's model); the final model is written to MODEL_OUT so that a
later server on the same overlay can be checked against it.
"""

import argparse
import random
import sys

import nbd

BLOCK = 4096   # the overlay's granularity: a trim drops whole blocks only


def main():
    p = argparse.ArgumentParser()
    p.add_argument("uri")
    p.add_argument("initial")
    p.add_argument("model_out")
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    model = bytearray(open(args.initial, "rb").read())
    size = len(model)
    rng = random.Random(args.seed)
    h = nbd.NBD()
    h.connect_uri(args.uri)
    if h.get_size() != size:
        sys.exit("FAIL: size %d, expected %d" % (h.get_size(), size))
    if h.is_read_only():
        sys.exit("FAIL: export is read-only")

    for i in range(args.count):
        op = rng.choice(["write"] * 6 + ["zero", "trim", "flush", "fua"])
        length = min(size, rng.choice([1, 17, 512, 4095, 4096, 4097, 8192,
                                       65536, rng.randint(1, 200000)]))
        offset = rng.randint(0, size - length)
        if rng.random() < 0.3:
            offset = offset // BLOCK * BLOCK   # aligned now and then
            length = min(length, size - offset)
        if op in ("write", "fua"):
            data = bytes(rng.getrandbits(8) for _ in range(min(length, 64)))
            data = (data * (length // len(data) + 1))[:length]
            h.pwrite(data, offset, nbd.CMD_FLAG_FUA if op == "fua" else 0)
            model[offset:offset + length] = data
        elif op == "zero":
            h.zero(length, offset)
            model[offset:offset + length] = bytes(length)
        elif op == "trim":
            h.trim(length, offset)
            first = (offset + BLOCK - 1) // BLOCK
            last = (offset + length) // BLOCK          # exclusive
            for b in range(first, last):
                if (b + 1) * BLOCK <= size:
                    model[b * BLOCK:(b + 1) * BLOCK] = bytes(BLOCK)
        else:
            h.flush()
        if i % 50 == 0:                                # spot checks
            got = h.pread(length, offset)
            if got != model[offset:offset + length]:
                sys.exit("FAIL: after op %d (%s), read at %d differs"
                         % (i, op, offset))
    h.flush()

    got = bytearray()
    for offset in range(0, size, 1 << 20):
        got += h.pread(min(1 << 20, size - offset), offset)
    if got != model:
        first = next(i for i in range(size) if got[i] != model[i])
        sys.exit("FAIL: disk differs from the model at byte %d" % first)
    h.shutdown()
    with open(args.model_out, "wb") as f:
        f.write(model)
    print("%d operations on %d bytes matched the model" % (args.count, size))


if __name__ == "__main__":
    main()
