#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# qemount mount and umount on bad input and failures: each case has its
# own exit status and a one-line message naming the cause, and leaves
# nothing behind (no nbdkit, nbdfuse, loop device, mount or state).
# Also: a killed nbdkit is cleaned up by the next umount or mount.
source ./tests/qemount-functions.sh
setup_mount_test

# fails STATUS MESSAGE ARGS...: qemount ARGS fails so, and leaves nothing.
fails ()
{
  local status=$1 msg=$2
  shift 2
  expect "$status" "$msg" qemount "$@"
  [ "$(wc -l < "$tmp/err")" -le 1 ] || [ "$status" = 7 ] || [ "$status" = 8 ] ||
    fail "qemount $*: more than one line of messages: $(cat "$tmp/err")"
  assert_clean
  [ -z "$(ls -A "$mnt")" ] || fail "qemount $*: $mnt is not empty any more"
}

# The image: missing, unreadable, unknown format, malformed.
fails 3 "$tmp/missing.img: No such file or directory" mount "$tmp/missing.img" "$mnt"
if command -v setpriv >/dev/null && id nobody >/dev/null 2>&1; then
  requires_nobody
  cp "$tmp/mbr.img" "$tmp/secret.img"
  chmod 600 "$tmp/secret.img"
  mkdir -m 0777 "$tmp/nmnt"
  expect 4 "$tmp/secret.img: Permission denied" \
    as_nobody "$QEMOUNT" mount "$tmp/secret.img" "$tmp/nmnt"
  assert_clean "$tmp/nmnt"
  [ ! -e "$tmp/run-nobody" ] || fail "a runtime directory was made for nothing"
else
  echo "SKIP (one case): no setpriv or no user nobody to be a user who cannot read"
fi
printf 'QED\0' > "$tmp/fake.qed"
truncate -s 1M "$tmp/fake.qed"
fails 5 "fake.qed: unknown format: the file is a QED image" mount "$tmp/fake.qed" "$mnt"
printf 'encrcdsa\0\0\0\2' > "$tmp/secret.dmg"
truncate -s 1M "$tmp/secret.dmg"
fails 5 "secret.dmg: unknown format: the file is an encrypted DMG" mount "$tmp/secret.dmg" "$mnt"
fails 5 "unknown format 'qed'" mount --format qed "$tmp/mbr.img" "$mnt"
printf 'QFI\373\0\0\0\3' > "$tmp/bad.qcow2"
truncate -s 64K "$tmp/bad.qcow2"
fails 6 "bad.qcow2" mount "$tmp/bad.qcow2" "$mnt"

# Partitions and filesystems.
fails 7 "there is no partition 9; the dos partition table has:" mount "$tmp/mbr.img" "$mnt" --partition 9
fails 7 "there is no partition 1: the disk has no partition table" mount "$tmp/whole.img" "$mnt" --partition 1
fails 8 "partition 1 holds swap, not a filesystem" mount "$tmp/mbr.img" "$mnt" --partition 1
fails 8 "partition 2 is an extended partition" mount "$tmp/mbr.img" "$mnt" --partition 2
truncate -s 8M "$tmp/zeros.img"
fails 8 "the disk holds no partition table or filesystem" mount "$tmp/zeros.img" "$mnt"
# Two filesystems: the error lists the partitions to choose from.
cp "$tmp/mbr.img" "$tmp/two.img"
truncate -s 4M "$tmp/swap2.fs"
mkfs.ext2 -q -F "$tmp/swap2.fs"
put_fs "$tmp/two.img" 1 "$tmp/swap2.fs"
fails 8 "several partitions hold a filesystem; choose one with --partition N" mount "$tmp/two.img" "$mnt"
grep -q "^ *5 .*ext4 *logical$" "$tmp/err" || fail "no partition list: $(cat "$tmp/err")"

# DIR.
fails 9 "$tmp/nodir: No such file or directory" mount "$tmp/mbr.img" "$tmp/nodir"
fails 9 "$tmp/mbr.img: not a directory" mount "$tmp/whole.img" "$tmp/mbr.img"
touch "$mnt/file"
expect 10 "$mnt: not empty" qemount mount "$tmp/mbr.img" "$mnt"
rm "$mnt/file"
mkdir "$tmp/other"
mount --bind "$tmp/other" "$mnt"
expect 11 "$mnt: already a mount point" qemount mount "$tmp/mbr.img" "$mnt"
umount "$mnt"
assert_clean "$mnt"

# One mount on a DIR at a time.  While one is being set up (its nbdkit
# held back until we let it go), a second is refused...
mkdir "$tmp/hold"
cat > "$tmp/hold/nbdkit" <<EOF
#!/bin/sh
touch "$tmp/held"
while [ ! -e "$tmp/go" ] && [ -d "$tmp" ]; do sleep 0.05; done
PATH="$PATH" exec nbdkit "\$@"
EOF
chmod +x "$tmp/hold/nbdkit"
PATH="$tmp/hold:$PATH" qemount mount "$tmp/mbr.img" "$mnt" & first=$!
for i in $(seq 200); do [ -e "$tmp/held" ] && break; sleep 0.05; done
[ -e "$tmp/held" ] || fail "the first mount did not get to nbdkit"
expect 16 "$mnt: another qemount is mounting there right now" \
  qemount mount "$tmp/whole.img" "$mnt"
touch "$tmp/go"
wait $first || fail "the first mount failed"
[ "$(grep -c " $mnt " /proc/self/mountinfo)" = 1 ] ||
  fail "not exactly one mount on $mnt: $(grep " $mnt " /proc/self/mountinfo)"
# ... and so is one on its finished mount, or on a --raw export (DIR
# itself is not a mount point then).
expect 11 "$mnt: already a qemount mount point (of $tmp/mbr.img; qemount umount $mnt first)" \
  qemount mount "$tmp/whole.img" "$mnt"
qemount umount "$mnt"
assert_clean "$mnt"
qemount mount --raw "$tmp/mbr.img" "$mnt"
expect 11 "$mnt: already a qemount mount point (of $tmp/mbr.img; qemount umount $mnt first)" \
  qemount mount "$tmp/whole.img" "$mnt"
qemount umount "$mnt"
assert_clean "$mnt"
# Two started at once: one mounts, the other is refused.
qemount mount "$tmp/mbr.img" "$mnt" 2>"$tmp/err1" & first=$!
qemount mount "$tmp/whole.img" "$mnt" 2>"$tmp/err2" & second=$!
s1=0; wait $first || s1=$?
s2=0; wait $second || s2=$?
case "$s1 $s2" in
  "0 16"|"0 11"|"16 0"|"11 0") ;;
  *) fail "two mounts at once on $mnt exited $s1 and $s2: $(cat "$tmp/err1" "$tmp/err2")" ;;
esac
# Mounts starting at once on different directories all succeed: one
# that is cleaning stale states must not take another's state, created a
# moment ago, for a broken set-up.
pids=()
for i in 1 2 3 4 5 6; do
  mkdir "$tmp/many$i"
  qemount mount "$tmp/mbr.img" "$tmp/many$i" 2>"$tmp/many$i.err" & pids+=($!)
done
for i in 1 2 3 4 5 6; do
  wait "${pids[i - 1]}" || fail "one of six mounts at once failed: $(cat "$tmp/many$i.err")"
done
for i in 1 2 3 4 5 6; do
  qemount umount "$tmp/many$i" || fail "umount $tmp/many$i failed"
done
[ "$(grep -c " $mnt " /proc/self/mountinfo)" = 1 ] ||
  fail "not exactly one mount on $mnt: $(grep " $mnt " /proc/self/mountinfo)"
qemount umount "$mnt"
assert_clean "$mnt"

# The kernel refuses the filesystem: a valid ext4 superblock over
# garbage group descriptors.  This one gets as far as mount(2), so
# nbdkit, nbdfuse and a loop device were running and must be gone.
cp "$tmp/whole.img" "$tmp/broken.img"
dumpe2fs -h "$tmp/broken.img" > "$tmp/dumpe2fs" 2>/dev/null
bs=$(sed -n 's/^Block size: *//p' "$tmp/dumpe2fs")
first=$(sed -n 's/^First block: *//p' "$tmp/dumpe2fs")
dd if=/dev/urandom of="$tmp/broken.img" bs="$bs" seek=$((first + 1)) count=1 \
   conv=notrunc status=none
fails 12 "broken.img: the kernel refused to mount the ext4 filesystem" mount "$tmp/broken.img" "$mnt"

# Paths the host kernel cannot take, without the helper VM (its own
# test is test-qemount-vm.sh).
export QEMOUNT_GUEST_DIR="$tmp/no-guest"
fails 13 "--via vm: the helper VM is not built in $tmp/no-guest (qemount guest build makes it)" mount --via vm "$tmp/mbr.img" "$mnt"
if command -v mkfs.vfat >/dev/null && ! grep -qw vfat /proc/filesystems; then
  truncate -s 16M "$tmp/vfat.img"
  mkfs.vfat "$tmp/vfat.img" >/dev/null
  fails 13 "the filesystem is vfat, which the host kernel does not mount (it is not in /proc/filesystems): that needs the helper VM, which is not built (qemount guest build)" mount "$tmp/vfat.img" "$mnt"
else
  echo "SKIP (one case): no mkfs.vfat, or this kernel mounts vfat itself"
fi

# A read-only view through an overlay needs one.
fails 3 "$tmp/ovl: No such file or directory" mount --overlay "$tmp/ovl" "$tmp/mbr.img" "$mnt"

# Usage.
fails 2 "--partition 0: must be a partition number from 1" mount --partition 0 "$tmp/mbr.img" "$mnt"
fails 2 "--raw exports the disk itself: --fstype does not apply" mount --raw --fstype ext4 "$tmp/mbr.img" "$mnt"
# (the usage follows these messages)
expect 2 "mount: missing DIR" qemount mount "$tmp/mbr.img"
expect 2 "mount: unexpected argument 'extra'" qemount mount "$tmp/mbr.img" "$mnt" extra
expect 2 "umount: missing DIR" qemount umount
expect 2 "extract: missing -o FILE" qemount extract "$tmp/mbr.img"
expect 2 "list: unexpected argument 'extra'" qemount list extra
assert_clean "$mnt"

# umount of what qemount did not mount.
fails 15 "$mnt: not mounted by qemount" umount "$mnt"

# A busy DIR is not torn down; once free, it is.  The fuser command in
# the message is quoted for the shell.
busydir="$tmp/it's-busy"
mkdir "$busydir"
qemount mount "$tmp/mbr.img" "$busydir"
( cd "$busydir" && exec sleep 30 ) &
busy=$!
sleep 0.2
expect 16 "$busydir: busy: a process is using it (see fuser -vm '$tmp/it'\\''s-busy')" \
  qemount umount "$busydir"
mountpoint -q "$busydir" || fail "a busy DIR was unmounted"
kill $busy; wait $busy 2>/dev/null || :
qemount umount "$busydir"
assert_clean "$busydir"

# A killed nbdkit: list says stale, umount cleans up...
qemount mount "$tmp/mbr.img" "$mnt"
pids=$(mount_pids "$mnt")
nbdkit_pid=$(echo $pids | cut -d' ' -f1)
kill -9 "$nbdkit_pid"
gone "$nbdkit_pid"
qemount list | grep -q "stale: nbdkit is not running" ||
  fail "qemount list does not say the mount is stale: $(qemount list)"
qemount umount "$mnt" || fail "umount after nbdkit was killed failed"
assert_clean "$mnt" $pids

# ... and so does the next mount, of any directory.
qemount mount "$tmp/mbr.img" "$mnt"
pids=$(mount_pids "$mnt")
nbdkit_pid=$(echo $pids | cut -d' ' -f1)
kill -9 "$nbdkit_pid"
gone "$nbdkit_pid"
mkdir "$tmp/mnt2"
expect 0 "cleaning up after the broken mount of $tmp/mbr.img on $mnt: nbdkit is not running" \
  qemount mount "$tmp/whole.img" "$tmp/mnt2"
mountpoint -q "$mnt" && fail "the broken mount on $mnt is still there"
qemount umount "$tmp/mnt2"
assert_clean "$mnt" $pids

echo "PASS: failures have their exit status and message and leave nothing"
