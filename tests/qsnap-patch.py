#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Damage a qsnap file in one precise way, for the error tests:

  qsnap-patch.py FILE version N    set the header's version, and fix the
                                   header checksum so that the version
                                   check itself is what refuses the file
  qsnap-patch.py FILE flip OFFSET  invert one byte
  qsnap-patch.py FILE flip-index N invert byte N of the first stream's
                                   index

The header checksum is XXH64 (seed 0) of bytes 0..4087, stored at 4088;
it is computed with libxxhash itself.
"""

import ctypes
import struct
import sys


def xxh64(data):
    lib = ctypes.CDLL("libxxhash.so.0")
    lib.XXH64.restype = ctypes.c_uint64
    lib.XXH64.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
    return lib.XXH64(data, len(data), 0)


def main():
    path, what, value = sys.argv[1], sys.argv[2], int(sys.argv[3], 0)
    with open(path, "r+b") as f:
        if what == "version":
            header = bytearray(f.read(4096))
            struct.pack_into("<I", header, 8, value)
            struct.pack_into("<Q", header, 4088, xxh64(bytes(header[:4088])))
            f.seek(0)
            f.write(header)
        elif what == "flip":
            f.seek(value)
            byte = f.read(1)
            f.seek(value)
            f.write(bytes([byte[0] ^ 0xff]))
        elif what == "flip-index":
            f.seek(40)
            table, = struct.unpack("<Q", f.read(8))
            f.seek(table + 40)
            index, = struct.unpack("<Q", f.read(8))
            f.seek(index + value)
            byte = f.read(1)
            f.seek(index + value)
            f.write(bytes([byte[0] ^ 0xff]))
        else:
            sys.exit("qsnap-patch.py: unknown change " + what)


if __name__ == "__main__":
    main()
