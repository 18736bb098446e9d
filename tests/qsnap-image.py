#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Make a disk image that exercises the qsnap writer:

  qsnap-image.py OUTPUT [--mib N] [--tail BYTES] [--seed S]

N MiB in 1 MiB regions cycling through random data, zeros, a copy of
the first region, text, and a region made of 4 KiB pieces (random, zero,
a repeated piece); then BYTES of random data, so that the size is not a
multiple of any block size.  Copies are aligned, so they are duplicate
blocks at every block size from 4 KiB to 1 MiB.
"""

import argparse
import random

MIB = 1 << 20
PIECE = 4096


def main():
    p = argparse.ArgumentParser()
    p.add_argument("output")
    p.add_argument("--mib", type=int, default=12)
    p.add_argument("--tail", type=int, default=12345)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    rng = random.Random(args.seed)
    words = [bytes(rng.choice(b"etaoinshrdlu") for _ in range(rng.randint(2, 9)))
             for _ in range(500)]
    first = rng.randbytes(MIB)
    piece = rng.randbytes(PIECE)
    with open(args.output, "wb") as f:
        for i in range(args.mib):
            kind = i % 5
            if i == 0:
                region = first
            elif kind == 0:
                region = rng.randbytes(MIB)
            elif kind == 1:
                region = bytes(MIB)
            elif kind == 2:
                region = first
            elif kind == 3:
                text = b" ".join(rng.choice(words) for _ in range(MIB // 4))
                region = text[:MIB]
            else:
                region = b"".join(
                    rng.choice([rng.randbytes(PIECE), bytes(PIECE), piece])
                    for _ in range(MIB // PIECE))
            f.write(region)
        f.write(rng.randbytes(args.tail))


if __name__ == "__main__":
    main()
