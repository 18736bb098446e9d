#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# mkluks.py IMAGE OFFSET SECTOR_SIZE PAYLOAD < VOLUME_KEY_HEX: encrypt
# PAYLOAD into IMAGE from byte OFFSET on, as dm-crypt's aes-xts-plain64
# does (the LUKS2 default): each SECTOR_SIZE sector with AES-XTS under
# the volume key, the tweak being the sector's number from the start of
# the data segment, 64-bit little-endian, counted in SECTOR_SIZE units
# (cryptsetup sets dm-crypt's iv_large_sectors for LUKS2 sectors larger
# than 512 bytes).  The volume key (hex, as cryptsetup luksDump --dump-volume-key
# prints it, spaces allowed) comes on standard input, never on the
# command line.  The host cannot open LUKS without device-mapper, so the
# test images are encrypted here.  Checks itself by decrypting the
# first sector back.

import os
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def xts(key, number, data, encrypt):
    c = Cipher(algorithms.AES(key), modes.XTS(number.to_bytes(16, "little")))
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(data) + op.finalize()


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: mkluks.py IMAGE OFFSET SECTOR_SIZE PAYLOAD < KEYHEX")
    image, offset, sector, payload = sys.argv[1:]
    offset, sector = int(offset), int(sector)
    key = bytes.fromhex("".join(sys.stdin.read().split()))
    if len(key) not in (32, 64):
        sys.exit("mkluks.py: the volume key is %d bytes, not an XTS key"
                 % len(key))
    size = os.path.getsize(payload)
    if size % sector:
        sys.exit("mkluks.py: the payload is not a whole number of sectors")
    with open(payload, "rb") as p, open(image, "r+b") as f:
        f.seek(offset)
        n = 0
        while True:
            buf = p.read(sector * 256)
            if not buf:
                break
            out = bytearray()
            for i in range(0, len(buf), sector):
                out += xts(key, n, buf[i:i + sector], True)
                n += 1
            f.write(out)
        # Decrypt the first sector back: the same bytes as the payload's.
        f.seek(offset)
        p.seek(0)
        if xts(key, 0, f.read(sector), False) != p.read(sector):
            sys.exit("mkluks.py: the first sector does not decrypt back")


if __name__ == "__main__":
    main()
