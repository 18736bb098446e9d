#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# APFS without the helper VM: qemount info lists the volumes of a
# container from its superblock (the slots of nx_fs_oid[] in use, no
# further than nx_max_file_systems, however hostile the rest) with the
# names and roles read from their own superblocks through the object
# map, on the whole disk and in a GPT partition, in text and JSON;
# --volume NAME picks the volume of that name (qemount -v says which);
# a broken object map or volume superblock (wrong checksum, a loop, too
# deep, a block past the end, a name without its NUL) is a warning and
# the volume listed without its name; --volume of a volume the
# container lacks, an unknown name, a number past 99, a filesystem that
# is not APFS and --raw are refused before anything starts.  The blocks
# are found and rewritten by apfs.py, written from Apple's reference on
# its own.
source ./tests/qemount-functions.sh
requires mkapfs
requires sfdisk
requires mkfs.ext2
requires python3

truncate -s 128M "$tmp/apfs.img"
mkapfs -L "Mac HD" "$tmp/apfs.img" > /dev/null || fail "mkapfs failed"
apfs () { python3 "$top_srcdir/tests/apfs.py" "$@"; }

# info_fs IMAGE WANT: qemount info's filesystem line says WANT (its
# warnings in $tmp/warn).
info_fs ()
{
  qemount info "$1" > "$tmp/info" 2> "$tmp/warn" ||
    { cat "$tmp/warn" >&2; fail "qemount info $1 failed"; }
  grep -qF "filesystem:       $2" "$tmp/info" ||
    { cat "$tmp/info" "$tmp/warn" >&2; fail "$1: not '$2'"; }
}
# patch IMAGE OFFSET HEX: bytes at OFFSET.
patch ()
{
  python3 -c 'import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); f.write(bytes.fromhex(sys.argv[3]))' "$@"
}

# info_warns IMAGE WANT WARNING: as info_fs, and qemount warns so.
info_warns ()
{
  info_fs "$1" "$2"
  grep -qF "qemount: warning: $1: $3" "$tmp/warn" ||
    { cat "$tmp/warn" >&2; fail "$1: no warning '$3'"; }
}

info_fs "$tmp/apfs.img" 'apfs (volumes 0 "Mac HD"), uuid'
[ ! -s "$tmp/warn" ] || { cat "$tmp/warn" >&2; fail "warnings on a sound container"; }
qemount info --json "$tmp/apfs.img" |
  grep -qF '"volumes": [{"index": 0, "name": "Mac HD", "role": null}]}' ||
  fail "info --json: not volume 0 named Mac HD"

# Slots 3 and 99 in use, in a container with room for 4 volumes (mkapfs
# gives a 128 MiB one room for 1): only 3 is one of its volumes; its
# object is not in the object map, so it has no name.  Patched without
# mending block 0's checksum, no names are read.
cp "$tmp/apfs.img" "$tmp/more.img"
patch "$tmp/more.img" $((0xb4)) 04000000
patch "$tmp/more.img" $((0xb8 + 3 * 8)) 0504000000000000
patch "$tmp/more.img" $((0xb8 + 99 * 8)) 0604000000000000
info_warns "$tmp/more.img" "apfs (volumes 0, 3), uuid" \
  "APFS block 0 (the container superblock) has a wrong checksum: volume names not read"
apfs seal "$tmp/more.img" 0
info_warns "$tmp/more.img" 'apfs (volumes 0 "Mac HD", 3), uuid' \
  "APFS volume 3 (object 1029) is not in the container's object map"
# Room for 2^32 - 1: no further than the 100 slots there are.
patch "$tmp/more.img" $((0xb4)) ffffffff
apfs seal "$tmp/more.img" 0
info_fs "$tmp/more.img" 'apfs (volumes 0 "Mac HD", 3, 99), uuid'
qemount info --json "$tmp/more.img" 2> /dev/null | grep -qF '"volumes": [{"index": 0, "name": "Mac HD", "role": null}, {"index": 3, "name": null, "role": null}, {"index": 99, "name": null, "role": null}]}' ||
  fail "info --json: not volumes 0 (Mac HD), 3 and 99"

# A role, and a name in UTF-8 with a quote, in JSON.
read -r omap root vsb < <(apfs blocks "$tmp/apfs.img")
cp "$tmp/apfs.img" "$tmp/role.img"
patch "$tmp/role.img" $((vsb * 4096 + 964)) 4000
patch "$tmp/role.img" $((vsb * 4096 + 704)) "$(printf 'Donn\xc3\xa9es "1"\0' | od -An -tx1 | tr -d ' \n')"
apfs seal "$tmp/role.img" "$vsb"
qemount info --json "$tmp/role.img" |
  grep -qF '"volumes": [{"index": 0, "name": "Données \"1\"", "role": "data"}]}' ||
  fail "info --json: not volume 0, Données \"1\", role data"

# Hostile object maps and volume superblocks: a warning naming the
# block, the volume listed without its name, --volume NAME refused.
hostile ()
{
  cp "$tmp/apfs.img" "$tmp/bad.img"
  "$@"
}
hostile patch "$tmp/bad.img" $((omap * 4096 + 100)) ff
info_warns "$tmp/bad.img" "apfs (volumes 0), uuid" \
  "APFS block $omap (the container's object map) has a wrong checksum: volume names not read"
# The root points at a node (block 30000, free) that points at itself.
hostile apfs node "$tmp/bad.img" "$root" root 1 30000
apfs node "$tmp/bad.img" 30000 node 1 30000
info_warns "$tmp/bad.img" "apfs (volumes 0), uuid" \
  "APFS block 30000 (a node of the object map) is not at the level below its parent: volume names not read"
hostile apfs node "$tmp/bad.img" "$root" root 8 30000
info_warns "$tmp/bad.img" "apfs (volumes 0), uuid" \
  "APFS block $root (a node of the object map) is more than 7 levels above its leaves"
hostile apfs node "$tmp/bad.img" "$root" root 0 4294967295
info_warns "$tmp/bad.img" "apfs (volumes 0), uuid" \
  "APFS block 4294967295 (the superblock of volume 0) is outside the container"
hostile patch "$tmp/bad.img" $((vsb * 4096 + 704)) "$(printf '41%.0s' $(seq 256))"
apfs seal "$tmp/bad.img" "$vsb"
info_warns "$tmp/bad.img" "apfs (volumes 0), uuid" \
  "APFS volume 0: its name does not end within its 256 bytes: not read"
qemount info --json "$tmp/bad.img" 2> /dev/null |
  grep -qF '"volumes": [{"index": 0, "name": null, "role": null}]}' ||
  fail "info --json: volume 0 has a name it does not end"
mkdir "$tmp/mnt"
expect 8 "bad.img: --volume Mac HD: no such volume in the APFS container; it has: 0" \
  qemount mount "$tmp/bad.img" "$tmp/mnt" --volume "Mac HD"

# In a GPT partition of type Apple APFS.
in_gpt "$tmp/apfs.img" "$tmp/gpt.img" 7c3457ef-0000-11aa-aa11-00306543ecac
qemount info "$tmp/gpt.img" > "$tmp/info"
grep -qE '^ +1 .* Apple APFS +apfs \(volumes 0 "Mac HD"\)$' "$tmp/info" ||
  { cat "$tmp/info" >&2; fail "qemount info does not list the partition's volumes"; }

# --volume NAME is the volume's number for the guest: qemount -v says
# which, before it finds no helper VM to start.
mkdir "$tmp/noguest"
QEMOUNT_GUEST_DIR=$tmp/noguest \
  expect 13 "gpt.img: --volume Mac HD is volume 0" \
  qemount -v extract "$tmp/gpt.img" --volume "Mac HD" -o "$tmp/x.tar"
expect 8 "gpt.img: --volume 3: no such volume in the APFS container; it has: 0 \"Mac HD\"" \
  qemount mount "$tmp/gpt.img" "$tmp/mnt" --volume 3
expect 8 "--volume 1: no such volume in the APFS container; it has: 0 \"Mac HD\", 3, 99" \
  qemount extract "$tmp/more.img" --volume 1 -o "$tmp/x.tar"
expect 8 "gpt.img: --volume Data: no such volume in the APFS container; it has: 0 \"Mac HD\"" \
  qemount mount "$tmp/gpt.img" "$tmp/mnt" --volume Data
expect 8 "--volume mac hd: no such volume" \
  qemount mount "$tmp/gpt.img" "$tmp/mnt" --volume "mac hd"
expect 2 "--volume 100: must be an APFS volume's number, from 0 (the first) to 99, or its name" \
  qemount mount "$tmp/gpt.img" "$tmp/mnt" --volume 100
expect 2 "--volume : must be an APFS volume's number" \
  qemount mount "$tmp/gpt.img" "$tmp/mnt" --volume ""
expect 2 "--volume does not apply" \
  qemount mount "$tmp/gpt.img" "$tmp/mnt" --raw --volume 0
truncate -s 8M "$tmp/ext2.img"
mkfs.ext2 -q "$tmp/ext2.img"
expect 2 "--volume 0: the filesystem is ext2, not an APFS container" \
  qemount extract "$tmp/ext2.img" --volume 0 -o "$tmp/x.tar"
expect 2 "--volume Data: the filesystem is ext2, not an APFS container" \
  qemount extract "$tmp/ext2.img" --volume Data -o "$tmp/x.tar"
[ ! -e "$tmp/x.tar" ] || fail "a refused extract left its output behind"
rmdir "$tmp/mnt" || fail "a refused mount left something in DIR"
