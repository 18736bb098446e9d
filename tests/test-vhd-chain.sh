#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# VHD differencing disks name their parent by paths (parent locators) and
# by UUID: the first path that exists is opened, as the backing policy
# allows, and must have the UUID.  Locator order and fallbacks, a wrong,
# a missing and an outside parent, backing=no, and a parent loop.
source ./tests/functions.sh

chain="$IMAGES/vhd-chain"
[ -f "$chain/mid.vhd" ] || fail "no test images: run make check"
mkvhd () { $PYTHON "$top_srcdir/scripts/mkvhd.py" "$@"; }
uuid_of () { $PYTHON -c 'import sys, uuid; print(uuid.UUID(bytes=open(sys.argv[1], "rb").read()[-512:][68:84]))' "$1"; }
lower="$IMAGES/src/chainbase.raw"
want="$chain/mid.vhd.expected.raw"

expect_content ()               # expect_content WHAT ARGS...
{
  local what="$1"
  shift
  qemount_read "$@" >"$tmp/out" 2>"$tmp/err" ||
    { cat "$tmp/err" >&2; fail "$what: failed"; }
  cmp -s "$tmp/out" "$want" || fail "$what: content differs"
}

mkdir "$tmp/c" "$tmp/elsewhere"
cp "$chain/base.vhd" "$tmp/c/real.vhd"
cp "$chain/fixed.vhd" "$tmp/c/other.vhd"

# The relative Windows path first; then the file name of the absolute
# one; then the name in the header.
mkvhd --lower "$lower" --parent "$tmp/c/real.vhd" \
  --locator 'W2ku:C:\VMs\other.vhd' --locator 'W2ru:.\real.vhd' \
  "$want" "$tmp/c/w2ru.vhd"
expect_content "W2ru before W2ku" "$tmp/c/w2ru.vhd"
mkvhd --lower "$lower" --parent "$tmp/c/real.vhd" \
  --locator 'W2ru:.\sub\gone.vhd' --locator 'W2ku:C:\VMs\real.vhd' \
  "$want" "$tmp/c/w2ku.vhd"
expect_content "W2ku's file name when W2ru is missing" "$tmp/c/w2ku.vhd"
mkvhd --lower "$lower" --parent "$tmp/c/real.vhd" --parent-name real.vhd \
  "$want" "$tmp/c/name.vhd"
expect_content "the header's parent name" "$tmp/c/name.vhd"

# The first path that exists is the parent: another disk there is an
# error naming both UUIDs, not a reason to look further.
mkvhd --lower "$lower" --parent "$tmp/c/real.vhd" \
  --locator 'W2ru:other.vhd' --parent-name real.vhd "$want" "$tmp/c/wrong.vhd"
expect_read_failure "wrong parent" \
  "parent $tmp/c/other.vhd has the UUID {$(uuid_of "$tmp/c/other.vhd")}, but this differencing disk was made on {$(uuid_of "$tmp/c/real.vhd")}" \
  "$tmp/c/wrong.vhd"

mkvhd --lower "$lower" --parent "$tmp/c/real.vhd" \
  --locator 'W2ru:.\gone.vhd' --parent-name gone2.vhd "$want" "$tmp/c/missing.vhd"
expect_read_failure "missing parent" \
  "not found; it names 'gone.vhd' (W2ru), 'gone2.vhd' (parent name)" \
  "$tmp/c/missing.vhd"

# A parent in another directory: only backing=yes follows it.
cp "$chain/base.vhd" "$tmp/elsewhere/real.vhd"
mkvhd --lower "$lower" --parent "$tmp/c/real.vhd" \
  --locator 'W2ru:..\elsewhere\real.vhd' "$want" "$tmp/c/outside.vhd"
expect_read_failure "parent outside the directory" "outside the image's directory" \
  "$tmp/c/outside.vhd"
expect_content "parent outside, backing=yes" -b yes "$tmp/c/outside.vhd"

# backing=no: not followed, and the user is told.
qemount_read -b no "$tmp/c/w2ru.vhd" >"$tmp/out" 2>"$tmp/err" ||
  { cat "$tmp/err" >&2; fail "backing=no: failed"; }
grep -qF "is not followed (backing=no)" "$tmp/err" || fail "backing=no: no warning"
cmp -s "$tmp/out" "$want" && fail "backing=no: read the parent"

# Two differencing disks, each the other's parent.
mkdir "$tmp/loop"
mkvhd --lower "$lower" --parent "$tmp/c/real.vhd" "$want" "$tmp/loop/b.vhd"
mkvhd --lower "$lower" --parent "$tmp/c/real.vhd" \
  --parent-uuid "$(uuid_of "$tmp/loop/b.vhd")" --locator 'W2ru:b.vhd' \
  "$want" "$tmp/loop/a.vhd"
mkvhd --lower "$lower" --parent "$tmp/c/real.vhd" \
  --parent-uuid "$(uuid_of "$tmp/loop/a.vhd")" --locator 'W2ru:a.vhd' \
  "$want" "$tmp/loop/b.vhd"
expect_read_failure "parent loop" "backing chain loop" "$tmp/loop/a.vhd"

echo "PASS: VHD parents found by locator and checked by UUID"
