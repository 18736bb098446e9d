#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# qemount mount through the host kernel (nbdkit, nbdfuse, loop device):
# for raw, qcow2 and ploop images with DOS (logical partition) and GPT
# tables and a whole-disk filesystem, mount with the partition chosen
# automatically and with --partition N, compare every file with what went
# in, check qemount list, umount, and check that nothing is left.  And a
# dirty ext4 that cannot replay its journal read-only.
source ./tests/qemount-functions.sh
requires_root
requires nbdkit
make_images
convert_images mbr gpt whole
for fs in ext2 ext4 xfs btrfs; do
  grep -qw "$fs" /proc/filesystems || skip "the host kernel does not list $fs"
done

mnt="$tmp/mnt"
mkdir "$mnt"

# check_mount IMAGE FSTYPE [OPTIONS...]
check_mount ()
{
  local image=$1 fstype=$2 pids
  shift 2
  qemount mount "$image" "$mnt" "$@" ||
    fail "$(basename "$image") $*: mount failed"
  findmnt -n -o FSTYPE,OPTIONS "$mnt" > "$tmp/findmnt"
  grep -q "^$fstype .*\bro\b" "$tmp/findmnt" ||
    fail "$(basename "$image") $*: expected a read-only $fstype mount: $(cat "$tmp/findmnt")"
  manifest "$mnt" > "$tmp/got.manifest"
  diff -u "$tmp/tree.manifest" "$tmp/got.manifest" ||
    fail "$(basename "$image") $*: the files differ from what went in"

  pids=$(mount_pids "$mnt")
  [ "$(echo $pids | wc -w)" = 2 ] ||
    fail "$(basename "$image") $*: qemount list shows pids '$pids'"
  for pid in $pids; do
    grep -qE 'nbdkit|nbdfuse' "/proc/$pid/cmdline" ||
      fail "pid $pid from qemount list is not nbdkit or nbdfuse"
  done
  qemount list | grep -qF "$mnt  $image" ||
    fail "qemount list does not show $mnt: $(qemount list)"

  qemount umount "$mnt" || fail "$(basename "$image") $*: umount failed"
  assert_clean "$mnt" $pids
}

for ext in img qcow2 hdd; do
  check_mount "$tmp/mbr.$ext" ext4                    # the only filesystem: 5
  check_mount "$tmp/mbr.$ext" ext4 --partition 5
  check_mount "$tmp/gpt.$ext" ext2 --partition 1
  check_mount "$tmp/gpt.$ext" xfs --partition 2
  check_mount "$tmp/gpt.$ext" btrfs --partition 3 --via kernel
  check_mount "$tmp/whole.$ext" ext4                  # no table: the disk
done
# An ext4 left needing journal recovery cannot replay it on a read-only
# device: qemount mounts it without the replay, and says so.
if command -v debugfs >/dev/null; then
  truncate -s 32M "$tmp/dirty.img"
  mkfs.ext4 -q -F -d "$tmp/tree" "$tmp/dirty.img"
  debugfs -w -R "feature needs_recovery" "$tmp/dirty.img" >/dev/null 2>&1
  expect 0 "dirty.img: the filesystem was not cleanly unmounted; mounted it without replaying its journal (noload)" \
    qemount mount "$tmp/dirty.img" "$mnt"
  manifest "$mnt" | diff -u "$tmp/tree.manifest" - || fail "dirty ext4: the files differ"
  qemount umount "$mnt"
  assert_clean "$mnt"
fi
echo "PASS: raw, qcow2 and ploop; DOS, GPT and whole disk; ext2/4, xfs, btrfs"
