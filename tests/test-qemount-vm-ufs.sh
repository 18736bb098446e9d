#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# UFS through the helper VM, mounted with the ufstype= qemount read from
# the superblock: a UFS1 (44bsd) from makefs on the whole disk (extract),
# in a GPT partition of type freebsd-ufs (mount --via vm) and as
# partition a of a BSD disklabel in an MBR slice (extract --partition
# 2a), every file compared with the tree that went in.
source ./tests/qemount-functions.sh
source ./tests/vm-functions.sh
requires_guest
requires makefs
requires sfdisk
requires python3

vm_tree "$tmp/tree"
vm_manifest "$tmp/tree" > "$tmp/tree.manifest"
why=$(vm_make_fs ufs1 "$tmp/tree" "$tmp/ufs1.img") || skip "$why"

qemount extract "$tmp/ufs1.img" -o "$tmp/ufs1.tar" || fail "extract failed"
vm_unpack "$tmp/ufs1.tar" "$tmp/x" || fail "the tar does not unpack"
vm_manifest "$tmp/x" > "$tmp/got.manifest"
diff -u "$tmp/tree.manifest" "$tmp/got.manifest" ||
  fail "extract: the files differ from what went in"

# The same filesystem as partition 1 of a GPT disk.
size=$(stat -c %s "$tmp/ufs1.img")
truncate -s $((size + 2 * 1048576)) "$tmp/gpt.img"
echo "start=2048, size=$((size / 512)), type=516e7cb4-6ecf-11d6-8ff8-00022d09712b" |
  sfdisk -q -X gpt "$tmp/gpt.img" >/dev/null
dd if="$tmp/ufs1.img" of="$tmp/gpt.img" bs=1M seek=1 conv=notrunc status=none
qemount info "$tmp/gpt.img" | grep -q "FreeBSD UFS  ufs (44bsd)" ||
  fail "qemount info does not show the UFS partition"
mkdir "$tmp/mnt"
qemount mount --via vm "$tmp/gpt.img" "$tmp/mnt" || fail "mount failed"
vm_manifest "$tmp/mnt" > "$tmp/got.manifest"
diff -u "$tmp/tree.manifest" "$tmp/got.manifest" ||
  fail "mount: the files differ from what went in"
pids=$(pgrep -f -- "$QEMOUNT_RUNTIME_DIR" | tr '\n' ' ')
qemount umount "$tmp/mnt" || fail "umount failed"
vm_assert_clean "$tmp/mnt" $pids

# The same filesystem as partition a of the disklabel in MBR slice 2,
# with FreeBSD's offsets (relative to the slice).
python3 "$top_srcdir/scripts/mkdisklabel.py" --slice 2 --relative \
  "$tmp/bsd.img" a="$tmp/ufs1.img"
qemount info "$tmp/bsd.img" | grep -qE '^ +2a .* 4\.2BSD +ufs \(44bsd\)$' ||
  fail "qemount info does not show disklabel partition 2a"
qemount extract "$tmp/bsd.img" --partition 2a -o "$tmp/bsd.tar" ||
  fail "extract --partition 2a failed"
vm_unpack "$tmp/bsd.tar" "$tmp/bsd" || fail "the tar of 2a does not unpack"
vm_manifest "$tmp/bsd" > "$tmp/got.manifest"
diff -u "$tmp/tree.manifest" "$tmp/got.manifest" ||
  fail "extract --partition 2a: the files differ from what went in"
vm_assert_clean
