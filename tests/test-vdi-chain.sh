#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# VDI differencing images name their parent by UUID only: the parent is
# the VDI file with that UUID in the image's directory, or with
# backing=yes also one directory up, where VirtualBox keeps the base of
# the differencing images in a VM's Snapshots/.  The backing policies, a
# missing, an ambiguous and a changed parent, and a parent loop.
source ./tests/functions.sh
requires qemu-img

vbox="$IMAGES/vdi-vbox/VM"
snap="$vbox/Snapshots/{5a1b2c3d-0000-4000-8000-000000000001}.vdi"
chain="$IMAGES/vdi-chain"
[ -f "$snap" ] || fail "no test images: run make check"
mkvdi () { $PYTHON "$top_srcdir/scripts/mkvdi.py" "$@"; }


# VirtualBox's layout: only backing=yes looks one directory up.
expect_read_failure "Snapshots/ under backing=samedir" \
  "not found: no VDI file with that UUID in the image's directory (use backing=yes" "$snap"
qemount_read -b yes "$snap" | cmp -s - "$snap.expected.raw" ||
  fail "Snapshots/ under backing=yes: content differs"

# backing=no: the parent is not looked for, and the user is told.
qemount_read -b no "$snap" >"$tmp/out" 2>"$tmp/err" ||
  { cat "$tmp/err" >&2; fail "backing=no: failed"; }
grep -qF "is not looked for (backing=no)" "$tmp/err" ||
  fail "backing=no: no warning"
cmp -s "$tmp/out" "$snap.expected.raw" && fail "backing=no: read the parent"

# A private copy of the chain to break in different ways.
mkdir "$tmp/c"
cp "$chain/base.vdi" "$chain/mid.vdi" "$tmp/c/"
qemount_read "$tmp/c/mid.vdi" | cmp -s - "$chain/mid.vdi.expected.raw" ||
  fail "copied chain: content differs"

# A hard link to the parent is the same file, not a second parent.
ln "$tmp/c/base.vdi" "$tmp/c/base-link.vdi"
qemount_read "$tmp/c/mid.vdi" | cmp -s - "$chain/mid.vdi.expected.raw" ||
  fail "hard-linked parent: content differs"
rm "$tmp/c/base-link.vdi"

# Two files with the parent's UUID: which one is meant cannot be told.
cp "$tmp/c/base.vdi" "$tmp/c/base-copy.vdi"
expect_read_failure "two parents" "have the parent's UUID" "$tmp/c/mid.vdi"
rm "$tmp/c/base-copy.vdi"

# A symbolic link to a parent elsewhere is what the samedir policy refuses.
mkdir "$tmp/elsewhere"
mv "$tmp/c/base.vdi" "$tmp/elsewhere/"
ln -s ../elsewhere/base.vdi "$tmp/c/base.vdi"
expect_read_failure "parent outside the directory" "outside the image's directory" \
  "$tmp/c/mid.vdi"
qemount_read -b yes "$tmp/c/mid.vdi" | cmp -s - "$chain/mid.vdi.expected.raw" ||
  fail "symlinked parent under backing=yes: content differs"
rm "$tmp/c/base.vdi"

expect_read_failure "missing parent" "not found" "$tmp/c/mid.vdi"

# A parent changed after the differencing image was made on it.
mv "$tmp/elsewhere/base.vdi" "$tmp/c/"
mkvdi --lower "$chain/mid.vdi.expected.raw" --parent "$tmp/c/mid.vdi" \
  --stale-parent "$chain/top.vdi.expected.raw" "$tmp/c/top.vdi"
qemount_read "$tmp/c/top.vdi" 2>"$tmp/err" | cmp -s - "$chain/top.vdi.expected.raw" ||
  fail "stale parent: content differs"
grep -qF "was changed after this differencing image was made on it" "$tmp/err" ||
  fail "stale parent: no warning"

# Two differencing images, each the other's parent.
mkdir "$tmp/loop"
mkvdi --uuid 11111111-0000-4000-8000-000000000001 \
  --parent-uuid 22222222-0000-4000-8000-000000000002 \
  "$chain/mid.vdi.expected.raw" "$tmp/loop/a.vdi"
mkvdi --uuid 22222222-0000-4000-8000-000000000002 \
  --parent-uuid 11111111-0000-4000-8000-000000000001 \
  "$chain/mid.vdi.expected.raw" "$tmp/loop/b.vdi"
expect_read_failure "parent loop" "backing chain loop" "$tmp/loop/a.vdi"

echo "PASS: VDI parents found by UUID as the backing policy allows"
