#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# APFS through the helper VM, with the linux-apfs-rw module build-guest
# builds from Debian's apfs-dkms: an empty container from mkapfs filled
# through a --rw mount with an overlay and committed (vm_fill_via_vm),
# apfsck on the result, extracted, then the same container in a GPT
# partition mounted read-only with --volume and the volume's name (mkapfs
# calls it "untitled"; qemount info reads it on the host): every file
# compared with the tree that went in, each time
# (tests/test-qemount-apfs.sh checks what --volume refuses, without the
# VM).
source ./tests/qemount-functions.sh
source ./tests/vm-functions.sh
requires_guest
requires mkapfs
requires apfsck
requires sfdisk

qemount guest info > "$tmp/guest.info"
why=$(sed -n 's/^unavailable apfs: //p' "$tmp/guest.info")
grep -qE '^filesystems .*\bapfs\b' "$tmp/guest.info" ||
  fail "the helper VM has no apfs${why:+: $why}"

vm_tree "$tmp/tree"
vm_manifest "$tmp/tree" > "$tmp/tree.manifest"
why=$(vm_make_fs apfs "$tmp/tree" "$tmp/apfs.img") || fail "$why"
apfsck "$tmp/apfs.img" > "$tmp/apfsck.out" 2>&1 ||
  fail "apfsck finds the container written through the helper VM broken: $(cat "$tmp/apfsck.out")"

qemount extract "$tmp/apfs.img" -o "$tmp/apfs.tar" || fail "extract failed"
vm_unpack "$tmp/apfs.tar" "$tmp/x" || fail "the tar does not unpack"
vm_manifest "$tmp/x" > "$tmp/got.manifest"
diff -u "$tmp/tree.manifest" "$tmp/got.manifest" ||
  fail "extract: the files differ from what went in"

# The committed container as partition 1 of a GPT disk.
in_gpt "$tmp/apfs.img" "$tmp/gpt.img" 7c3457ef-0000-11aa-aa11-00306543ecac
qemount info "$tmp/gpt.img" > "$tmp/info.out"
grep -qE '^ +1 .* Apple APFS +apfs \(volumes 0 "untitled"\)$' "$tmp/info.out" ||
  fail "qemount info does not show the APFS partition: $(cat "$tmp/info.out")"

mkdir "$tmp/mnt"
qemount mount --via vm --volume untitled "$tmp/gpt.img" "$tmp/mnt" ||
  fail "mount failed"
vm_manifest "$tmp/mnt" > "$tmp/got.manifest"
diff -u "$tmp/tree.manifest" "$tmp/got.manifest" ||
  fail "mount: the files differ from what went in"
# Read-only without --rw: the module was not told readwrite.
if touch "$tmp/mnt/new" 2> /dev/null; then
  fail "a read-only APFS mount took a new file"
fi
pids=$(pgrep -f -- "$QEMOUNT_RUNTIME_DIR" | tr '\n' ' ')
qemount umount "$tmp/mnt" || fail "umount failed"
vm_assert_clean "$tmp/mnt" $pids
