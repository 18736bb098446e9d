#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# qemount mount --rw: writes go to a copy-on-write overlay, never to the
# image.  With --overlay PATH they survive umount and come back with the
# same overlay; without it they are gone at umount.  An overlay made for
# another image is refused.  Needs the plugin's overlay= (nbdkit without
# -r): this test fails, not skips, if the plugin lacks it.
source ./tests/qemount-functions.sh
setup_mount_test convert

for ext in img qcow2 hdd; do
  image="$tmp/mbr.$ext"
  ovl="$tmp/changes.$ext.ovl"
  before=$(sha256sum < "$image")

  qemount mount --rw --overlay "$ovl" "$image" "$mnt" ||
    fail "$ext: mount --rw --overlay failed"
  findmnt -n -o OPTIONS "$mnt" | grep -q '^rw' || fail "$ext: not mounted read-write"
  echo "written through qemount" > "$mnt/new.txt"
  seq 1 100 > "$mnt/dir/sub/numbers.txt"
  pids=$(mount_pids "$mnt")
  qemount umount "$mnt" || fail "$ext: umount failed"
  assert_clean "$mnt" $pids
  [ -s "$ovl" ] || fail "$ext: no overlay file $ovl"

  qemount mount --rw --overlay "$ovl" "$image" "$mnt" ||
    fail "$ext: mount again with the same overlay failed"
  [ "$(cat "$mnt/new.txt")" = "written through qemount" ] ||
    fail "$ext: the new file did not come back with the overlay"
  seq 1 100 | cmp - "$mnt/dir/sub/numbers.txt" ||
    fail "$ext: the changed file did not come back with the overlay"
  qemount umount "$mnt"

  # Read-only with the overlay: the image as changed, the overlay kept as is.
  ovl_sum=$(sha256sum < "$ovl")
  qemount mount --overlay "$ovl" "$image" "$mnt" ||
    fail "$ext: read-only mount with --overlay failed"
  findmnt -n -o OPTIONS "$mnt" | grep -q '^ro' || fail "$ext: --overlay without --rw is not read-only"
  [ "$(cat "$mnt/new.txt")" = "written through qemount" ] ||
    fail "$ext: a read-only mount with --overlay does not show its writes"
  qemount umount "$mnt"
  [ "$(sha256sum < "$ovl")" = "$ovl_sum" ] || fail "$ext: a read-only mount changed the overlay"

  # Read-only without the overlay: the image as it was.
  qemount mount "$image" "$mnt"
  [ ! -e "$mnt/new.txt" ] || fail "$ext: the write reached the image"
  manifest "$mnt" | diff -u "$tmp/tree.manifest" - || fail "$ext: the image changed"
  qemount umount "$mnt"
  [ "$(sha256sum < "$image")" = "$before" ] || fail "$ext: the image file changed"

  # Ephemeral: the writes go away with the mount.
  qemount mount --rw "$image" "$mnt" || fail "$ext: mount --rw failed"
  echo gone > "$mnt/ephemeral.txt"
  qemount umount "$mnt"
  qemount mount "$image" "$mnt"
  [ ! -e "$mnt/ephemeral.txt" ] || fail "$ext: an ephemeral write survived"
  qemount umount "$mnt"
  [ "$(sha256sum < "$image")" = "$before" ] || fail "$ext: the image file changed"
  assert_clean "$mnt"
done

# A read-only mount through an overlay needs the overlay to exist.
status=0
qemount mount --overlay "$tmp/none.ovl" "$tmp/mbr.img" "$mnt" 2>"$tmp/err" || status=$?
[ "$status" = 3 ] || fail "read-only --overlay with a missing overlay: status $status, not 3"
grep -qF "$tmp/none.ovl: No such file or directory" "$tmp/err" ||
  { cat "$tmp/err" >&2; fail "read-only --overlay with a missing overlay: unclear error"; }
[ ! -e "$tmp/none.ovl" ] || fail "a read-only mount created the overlay"
assert_clean "$mnt"

# --raw --rw: writes to DIR/disk land in the overlay.
qemount mount --raw --rw --overlay "$tmp/raw.ovl" "$tmp/mbr.img" "$mnt"
printf 'qemount' | dd of="$mnt/disk" bs=1 seek=100000 conv=notrunc status=none
qemount umount "$mnt"
qemount mount --raw --rw --overlay "$tmp/raw.ovl" "$tmp/mbr.img" "$mnt"
[ "$(dd if="$mnt/disk" bs=1 skip=100000 count=7 status=none)" = qemount ] ||
  fail "--raw --rw: the write did not come back with the overlay"
qemount umount "$mnt"
assert_clean "$mnt"

# An overlay belongs to one image.
expect 1 "$tmp/changes.img.ovl: overlay belongs to a different base image" \
  qemount mount --rw --overlay "$tmp/changes.img.ovl" "$tmp/whole.img" "$mnt"
assert_clean "$mnt"
echo "PASS: --rw with persistent and ephemeral overlays; the image untouched"
