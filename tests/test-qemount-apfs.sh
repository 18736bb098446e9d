#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# APFS without the helper VM: qemount info lists the volumes of a
# container from its superblock (the slots of nx_fs_oid[] in use, no
# further than nx_max_file_systems, however hostile the rest), on the
# whole disk and in a GPT partition, in text and JSON; --volume of a
# volume the container lacks, a name, a number past 99, a filesystem
# that is not APFS and --raw are refused before anything starts.
source ./tests/qemount-functions.sh
requires mkapfs
requires sfdisk
requires mkfs.ext2
requires python3

truncate -s 128M "$tmp/apfs.img"
mkapfs "$tmp/apfs.img" > /dev/null || fail "mkapfs failed"

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

info_fs "$tmp/apfs.img" "apfs (volumes 0), uuid"
qemount info --json "$tmp/apfs.img" | grep -qF '"volumes": [0]}' ||
  fail "info --json: no volumes"

# Slots 3 and 99 in use, in a container with room for 4 volumes (mkapfs
# gives a 128 MiB one room for 1): only 3 is one of its volumes.
cp "$tmp/apfs.img" "$tmp/more.img"
patch "$tmp/more.img" $((0xb4)) 04000000
patch "$tmp/more.img" $((0xb8 + 3 * 8)) 0504000000000000
patch "$tmp/more.img" $((0xb8 + 99 * 8)) 0604000000000000
info_fs "$tmp/more.img" "apfs (volumes 0 3), uuid"
# Room for 2^32 - 1: no further than the 100 slots there are.
patch "$tmp/more.img" $((0xb4)) ffffffff
info_fs "$tmp/more.img" "apfs (volumes 0 3 99), uuid"
qemount info --json "$tmp/more.img" | grep -qF '"volumes": [0, 3, 99]}' ||
  fail "info --json: not volumes 0, 3 and 99"

# In a GPT partition of type Apple APFS.
truncate -s $((130 * 1048576)) "$tmp/gpt.img"
echo "start=2048, size=$((128 * 2048)), type=7c3457ef-0000-11aa-aa11-00306543ecac" |
  sfdisk -q -X gpt "$tmp/gpt.img" > /dev/null
dd if="$tmp/apfs.img" of="$tmp/gpt.img" bs=1M seek=1 conv=notrunc status=none
qemount info "$tmp/gpt.img" > "$tmp/info"
grep -qE '^ +1 .* Apple APFS +apfs \(volumes 0\)$' "$tmp/info" ||
  { cat "$tmp/info" >&2; fail "qemount info does not list the partition's volumes"; }

mkdir "$tmp/mnt"
expect 8 "gpt.img: --volume 3: no such volume in the APFS container; it has: 0" \
  qemount mount "$tmp/gpt.img" "$tmp/mnt" --volume 3
expect 8 "--volume 1: no such volume in the APFS container; it has: 0 3 99" \
  qemount extract "$tmp/more.img" --volume 1 -o "$tmp/x.tar"
expect 2 "--volume Data: must be an APFS volume's number, from 0 (the first) to 99" \
  qemount mount "$tmp/gpt.img" "$tmp/mnt" --volume Data
expect 2 "--volume 100: must be an APFS volume's number" \
  qemount mount "$tmp/gpt.img" "$tmp/mnt" --volume 100
expect 2 "--volume does not apply" \
  qemount mount "$tmp/gpt.img" "$tmp/mnt" --raw --volume 0
truncate -s 8M "$tmp/ext2.img"
mkfs.ext2 -q "$tmp/ext2.img"
expect 2 "--volume 0: the filesystem is ext2, not an APFS container" \
  qemount extract "$tmp/ext2.img" --volume 0 -o "$tmp/x.tar"
[ ! -e "$tmp/x.tar" ] || fail "a refused extract left its output behind"
rmdir "$tmp/mnt" || fail "a refused mount left something in DIR"
