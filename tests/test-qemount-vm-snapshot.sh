#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# qemount extract --snapshot: the tar of an ext4 in a qcow2 holds the
# files as they were when the internal snapshot was taken, not the ones
# written after it (the helper VM reads what nbdkit serves with
# snapshot=).
source ./tests/qemount-functions.sh
source ./tests/vm-functions.sh
requires_guest
requires mkfs.ext4

snapshotted_ext4 32M vm_tree vm_manifest

qemount extract --snapshot s1 "$tmp/fs.qcow2" -o "$tmp/s1.tar" ||
  fail "extract --snapshot s1 failed"
vm_unpack "$tmp/s1.tar" "$tmp/x" || fail "the tar does not unpack"
vm_manifest "$tmp/x" > "$tmp/got.manifest"
diff -u "$tmp/t1.manifest" "$tmp/got.manifest" ||
  fail "extract --snapshot s1: not the files of s1"
expect 18 "no snapshot called 'nope' (it has 's1' (id 1))" \
  qemount extract --snapshot nope "$tmp/fs.qcow2" -o "$tmp/nope.tar"
[ ! -e "$tmp/nope.tar" ] || fail "a refused extract left its output"
vm_assert_clean
