#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# UFS without the helper VM: qemount tells the variants Linux's ufs
# driver must be told apart (ufstype=) from the superblock, in qemount
# info; refuses --rw on UFS, and a UFS2 Linux cannot read, before it
# starts anything.
source ./tests/qemount-functions.sh
requires makefs
requires python3

mkdir -p "$tmp/t/d"
echo hello > "$tmp/t/a.txt"
head -c 50000 /dev/urandom > "$tmp/t/d/b.bin"
makefs -t ffs -o version=1 -s 8m "$tmp/u1.img" "$tmp/t" >/dev/null
makefs -t ffs -B be -o version=1 -s 8m "$tmp/u1be.img" "$tmp/t" >/dev/null
makefs -t ffs -o version=2 -s 8m "$tmp/u2.img" "$tmp/t" >/dev/null

# info_fs IMAGE WANT: qemount info's filesystem line says WANT.
info_fs ()
{
  qemount info "$1" > "$tmp/info" || fail "qemount info $1 failed"
  grep -qF "filesystem:       $2" "$tmp/info" ||
    { cat "$tmp/info" >&2; fail "$1: not '$2'"; }
}
# patch IMAGE OFFSET HEX: bytes at OFFSET.
patch ()
{
  python3 -c 'import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); f.write(bytes.fromhex(sys.argv[3]))' "$@"
}

# UFS1 with 4.4BSD's inode format, either byte order.
info_fs "$tmp/u1.img" "ufs (44bsd)"
info_fs "$tmp/u1be.img" "ufs (44bsd)"
qemount info --json "$tmp/u1.img" | grep -qF '"variant": "44bsd"' ||
  fail "info --json: no variant"
# Without it: Solaris's, SPARC (big-endian) or x86.
cp "$tmp/u1.img" "$tmp/sunx86.img"
patch "$tmp/sunx86.img" $((8192 + 1324)) 00000000
info_fs "$tmp/sunx86.img" "ufs (sunx86)"
cp "$tmp/u1be.img" "$tmp/sun.img"
patch "$tmp/sun.img" $((8192 + 1324)) 00000000
info_fs "$tmp/sun.img" "ufs (sun)"
# HP-UX's own magic.
cp "$tmp/u1be.img" "$tmp/hp.img"
patch "$tmp/hp.img" $((8192 + 1372)) 00095014
info_fs "$tmp/hp.img" "ufs (hp)"

# makefs's UFS2 has its superblock at 8 KiB, where Linux does not look.
info_fs "$tmp/u2.img" "ufs (Linux cannot mount it: its UFS2 superblock is at 8 KiB"
expect 12 "holds a UFS that Linux cannot mount: its UFS2 superblock is at 8 KiB" \
  qemount extract "$tmp/u2.img" -o "$tmp/u2.tar"
[ ! -e "$tmp/u2.tar" ] || fail "a refused extract left its output"
# newfs puts it at 64 KiB (a copy there is enough to be seen).
cp "$tmp/u2.img" "$tmp/u2-64k.img"
dd if="$tmp/u2.img" of="$tmp/u2-64k.img" bs=512 skip=16 seek=128 count=3 \
   conv=notrunc status=none
info_fs "$tmp/u2-64k.img" "ufs (ufs2)"

# --rw: refused before anything starts (no helper VM needed to say so).
mkdir "$tmp/mnt"
expect 12 "--rw: UFS is mounted read-only only" \
  qemount mount --rw "$tmp/u1.img" "$tmp/mnt"
expect 12 "--rw: UFS is mounted read-only only" \
  qemount mount --rw "$tmp/u2-64k.img" "$tmp/mnt"
assert_clean "$tmp/mnt"
