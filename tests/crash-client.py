#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Crash-consistency client for the overlay.

  crash-client.py write URI STATE SEED
      Writes (any size and alignment, each a run of one byte value) and
      flushes until the server dies.  Before sending a write it is
      appended to STATE.journal; when a flush returns, the journal is
      applied to STATE.model (saved atomically) and emptied.  So at any
      moment STATE.model is what must be on disk, and the journal lists
      the writes that may or may not be.
  crash-client.py check URI STATE
      Reads the whole disk: every byte must equal the model, or, where a
      journalled write covered it, that write's value.
"""

import os
import random
import struct
import sys

import nbd


def load_journal(path):
    writes = []
    try:
        data = open(path, "rb").read()
    except FileNotFoundError:
        return writes
    for i in range(0, len(data) - len(data) % 17, 17):
        writes.append(struct.unpack_from("<QQB", data, i))
    return writes


def save_model(state, model):
    with open(state + ".model.tmp", "wb") as f:
        f.write(model)
    os.rename(state + ".model.tmp", state + ".model")


def write_mode(uri, state, seed):
    rng = random.Random(seed)
    model = bytearray(open(state + ".model", "rb").read())
    size = len(model)
    h = nbd.NBD()
    journal = open(state + ".journal", "ab", buffering=0)
    pending = []
    try:
        h.connect_uri(uri)
        while True:
            if pending and rng.random() < 0.15:
                h.flush()
                for off, length, value in pending:
                    model[off:off + length] = bytes([value]) * length
                save_model(state, model)
                journal.truncate(0)
                journal.seek(0)
                pending = []
                continue
            length = rng.choice([1, 100, 4096, 5000, 65536, rng.randint(1, 40000)])
            off = rng.randint(0, size - length)
            if rng.random() < 0.4:
                off = off // 4096 * 4096
            value = rng.randint(1, 255)
            journal.write(struct.pack("<QQB", off, length, value))
            pending.append((off, length, value))
            h.pwrite(bytes([value]) * length, off)
    except nbd.Error:
        return          # the server was killed: expected


def check_mode(uri, state):
    model = open(state + ".model", "rb").read()
    writes = load_journal(state + ".journal")
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    disk = b"".join(h.pread(min(1 << 20, size - o), o)
                    for o in range(0, size, 1 << 20))
    # Candidate values of the bytes a journalled write may have changed.
    allowed = {}
    for off, length, value in writes:
        for i in range(off, off + length):
            allowed.setdefault(i, {model[i]}).add(value)
    if disk == model:
        return
    for i in range(size):
        if disk[i] != model[i] and disk[i] not in allowed.get(i, ()):
            sys.exit("FAIL: byte %d is %d; flushed state says %d%s"
                     % (i, disk[i], model[i],
                        ", or one of %s" % sorted(allowed[i]) if i in allowed else ""))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write_mode(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        check_mode(sys.argv[2], sys.argv[3])
