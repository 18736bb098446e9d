#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The helper VM restored from its saved state: the first mount boots it
# and saves it; later mounts restore it (--verbose says so), read, write
# through --rw --overlay with the host's clock, and two at once each see
# their own disk.  A damaged, short or stale state is named by qemount
# guest info; a short one makes a mount say so in one line, boot, mount
# all the same and save the guest again.
source ./tests/qemount-functions.sh
source ./tests/vm-functions.sh
requires_guest
requires mkfs.ext4

# A guest directory of our own, copied (not linked): this test damages
# its saved state and touches its kernel.
mkdir "$tmp/guest"
cp "$QEMOUNT_GUEST_DIR"/{vmlinux,initrd,info} "$tmp/guest/"
export QEMOUNT_GUEST_DIR=$tmp/guest
state=$tmp/guest/vm-state.tcg
mnt=$tmp/mnt mnt2=$tmp/mnt2
mkdir "$mnt" "$mnt2" "$tmp/a" "$tmp/b"
echo "disk a" > "$tmp/a/which"
echo "disk b" > "$tmp/b/which"
seq 1 5000 > "$tmp/b/numbers"
truncate -s 32M "$tmp/a.img"
truncate -s 48M "$tmp/b.img"
mkfs.ext4 -q -F -d "$tmp/a" "$tmp/a.img"
mkfs.ext4 -q -F -d "$tmp/b" "$tmp/b.img"

# mount_restored IMG MNT [OPTIONS]: a mount from the saved state, and no
# notice.
mount_restored ()
{
  local img=$1 m=$2
  shift 2
  qemount --verbose mount "$img" "$m" --via vm --accel tcg "$@" \
    2> "$tmp/restore.err" || { cat "$tmp/restore.err" >&2; fail "mount of $img failed"; }
  grep -q "restored the helper VM from $state" "$tmp/restore.err" ||
    { cat "$tmp/restore.err" >&2; fail "$img: the guest was not restored"; }
  if grep -q "warning" "$tmp/restore.err"; then
    cat "$tmp/restore.err" >&2
    fail "$img: a restored mount gave a warning"
  fi
}

# No state yet: the first mount boots, quietly, and saves the guest.
qemount mount "$tmp/a.img" "$mnt" --via vm --accel tcg 2> "$tmp/err" ||
  { cat "$tmp/err" >&2; fail "the first mount failed"; }
[ ! -s "$tmp/err" ] || { cat "$tmp/err" >&2; fail "the first mount said something"; }
[ "$(cat "$mnt/which")" = "disk a" ] || fail "the first mount does not show disk a"
qemount umount "$mnt" || fail "umount failed"
[ -s "$state" ] || fail "the first mount saved no state in $state"
qemount guest info | grep -qx "saved tcg $state, [0-9]* MiB" ||
  fail "qemount guest info does not show the state: $(qemount guest info)"
echo "# state: $(du -m "$state" | cut -f1) MiB"

# Restored: read, write with the host's clock, remount, read the write.
mount_restored "$tmp/a.img" "$mnt" --rw --overlay "$tmp/a.ovl"
[ "$(cat "$mnt/which")" = "disk a" ] || fail "a restored mount does not show disk a"
echo "written in a restored guest" > "$mnt/new.txt" || fail "cannot write"
mtime=$(stat -c %Y "$mnt/new.txt") now=$(date +%s)
[ $((now - mtime)) -le 5 ] && [ $((mtime - now)) -le 5 ] ||
  fail "new.txt has mtime $mtime, the host's clock says $now"
qemount umount "$mnt" || fail "umount after --rw failed"
mount_restored "$tmp/a.img" "$mnt" --rw --overlay "$tmp/a.ovl"
[ "$(cat "$mnt/new.txt")" = "written in a restored guest" ] ||
  fail "the write is not there after a remount"
[ "$(stat -c %Y "$mnt/new.txt")" = "$mtime" ] || fail "new.txt's mtime changed"
qemount umount "$mnt" || fail "umount failed"

# Two restored guests at once, each with its own disk (of its own size).
mount_restored "$tmp/a.img" "$mnt"
mount_restored "$tmp/b.img" "$mnt2"
[ "$(cat "$mnt/which")" = "disk a" ] || fail "$mnt does not show disk a"
[ "$(cat "$mnt2/which")" = "disk b" ] || fail "$mnt2 does not show disk b"
cmp -s "$mnt2/numbers" "$tmp/b/numbers" || fail "$mnt2/numbers differs"
[ ! -e "$mnt/numbers" ] || fail "$mnt shows disk b's file"
qemount umount "$mnt" || fail "umount failed"
qemount umount "$mnt2" || fail "umount failed"
vm_assert_clean "$mnt"

# Damaged: a flipped byte in the stream, found by its checksum.
cp "$state" "$tmp/good.state"
printf '\xff\xff\xff\xff' | dd of="$state" bs=1 seek=$(( $(stat -c %s "$state") / 2 )) \
  conv=notrunc status=none
qemount guest info | grep -qF "saved tcg $state is damaged: its checksum does not match" ||
  fail "guest info does not call a flipped state damaged: $(qemount guest info)"
# Stale: a kernel that is not the one it was saved with.
cp "$tmp/good.state" "$state"
touch -r "$tmp/guest/vmlinux" "$tmp/vmlinux.time"
touch -d "2001-02-03" "$tmp/guest/vmlinux"
qemount guest info | grep -qF "saved tcg $state is stale: made with another kernel" ||
  fail "guest info does not call the state stale: $(qemount guest info)"
touch -r "$tmp/vmlinux.time" "$tmp/guest/vmlinux"
# Short: the mount says so, boots, mounts, and saves the guest again.
truncate -s $(( $(stat -c %s "$state") / 2 )) "$state"
qemount mount "$tmp/b.img" "$mnt" --via vm --accel tcg 2> "$tmp/err" ||
  { cat "$tmp/err" >&2; fail "a mount with a short state failed"; }
[ "$(cat "$mnt/which")" = "disk b" ] || fail "the fallback mount does not show disk b"
cat "$tmp/err"
[ "$(wc -l < "$tmp/err")" = 1 ] &&
  grep -qxF "qemount: warning: $state is damaged: it is not as long as its header says: booting the helper VM instead, and saving it again" "$tmp/err" ||
  fail "not the one-line notice"
qemount umount "$mnt" || fail "umount failed"
qemount guest info | grep -qx "saved tcg $state, [0-9]* MiB" ||
  fail "the state was not saved again: $(qemount guest info)"
mount_restored "$tmp/b.img" "$mnt"
qemount umount "$mnt" || fail "umount failed"
vm_assert_clean "$mnt"
