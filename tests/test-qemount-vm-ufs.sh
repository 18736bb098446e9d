#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# UFS through the helper VM, mounted with the ufstype= qemount read from
# the superblock: UFS1 (44bsd) and UFS2 (ufs2) from makefs (UFS2's
# superblock moved to 64 KiB, where the BSDs' newfs puts it:
# scripts/ufs2-sb64k.py), each on the whole disk (extract), in a GPT
# partition of type freebsd-ufs (mount --via vm) and as partition a of
# a BSD disklabel in an MBR slice (extract --partition 2a), every file
# compared with the tree that went in.
source ./tests/qemount-functions.sh
source ./tests/vm-functions.sh
requires_guest
requires makefs
requires sfdisk
requires python3

vm_tree "$tmp/tree"
vm_manifest "$tmp/tree" > "$tmp/tree.manifest"
mkdir "$tmp/mnt"

check_ufs ()                    # check_ufs MAKER UFSTYPE
{
  local fs=$1 type=$2 why
  why=$(vm_make_fs "$fs" "$tmp/tree" "$tmp/$fs.img") || skip "$why"

  qemount extract "$tmp/$fs.img" -o "$tmp/$fs.tar" || fail "$fs: extract failed"
  vm_unpack "$tmp/$fs.tar" "$tmp/$fs.x" || fail "$fs: the tar does not unpack"
  vm_manifest "$tmp/$fs.x" > "$tmp/got.manifest"
  diff -u "$tmp/tree.manifest" "$tmp/got.manifest" ||
    fail "$fs: extract: the files differ from what went in"

  # The same filesystem as partition 1 of a GPT disk.
  in_gpt "$tmp/$fs.img" "$tmp/$fs.gpt.img" 516e7cb4-6ecf-11d6-8ff8-00022d09712b
  qemount info "$tmp/$fs.gpt.img" | grep -q "FreeBSD UFS  ufs ($type)" ||
    fail "$fs: qemount info does not show the UFS partition"
  qemount mount --via vm "$tmp/$fs.gpt.img" "$tmp/mnt" || fail "$fs: mount failed"
  vm_manifest "$tmp/mnt" > "$tmp/got.manifest"
  diff -u "$tmp/tree.manifest" "$tmp/got.manifest" ||
    fail "$fs: mount: the files differ from what went in"
  pids=$(pgrep -f -- "$QEMOUNT_RUNTIME_DIR" | tr '\n' ' ')
  qemount umount "$tmp/mnt" || fail "$fs: umount failed"
  vm_assert_clean "$tmp/mnt" $pids

  # The same filesystem as partition a of the disklabel in MBR slice 2,
  # with FreeBSD's offsets (relative to the slice).
  python3 "$top_srcdir/scripts/mkdisklabel.py" --slice 2 --relative \
    "$tmp/$fs.bsd.img" a="$tmp/$fs.img"
  qemount info "$tmp/$fs.bsd.img" | grep -qE "^ +2a .* 4\\.2BSD +ufs \\($type\\)\$" ||
    fail "$fs: qemount info does not show disklabel partition 2a"
  qemount extract "$tmp/$fs.bsd.img" --partition 2a -o "$tmp/$fs.bsd.tar" ||
    fail "$fs: extract --partition 2a failed"
  vm_unpack "$tmp/$fs.bsd.tar" "$tmp/$fs.bsd" || fail "$fs: the tar of 2a does not unpack"
  vm_manifest "$tmp/$fs.bsd" > "$tmp/got.manifest"
  diff -u "$tmp/tree.manifest" "$tmp/got.manifest" ||
    fail "$fs: extract --partition 2a: the files differ from what went in"
}

check_ufs ufs1 44bsd
check_ufs ufs2 ufs2
vm_assert_clean
echo "PASS: UFS1 and UFS2, bare, GPT and disklabel 2a, every file compared"
