#!/usr/bin/env bash
# ploop snapshot chains and the options around them: backing=no serves
# the top delta alone, broken descriptors are refused, the in-use flag
# warns.  (The merged content of good chains is checked by
# test-decode-all.sh from the manifest.)
source ./tests/functions.sh
requires nbdkit
requires nbdcopy
images_manifest >/dev/null

export tmp
serve ()                        # serve PLUGIN-ARGS...: copy to $tmp/out
{
  rm -f "$tmp/out"
  qemount_nbdkit -r --run 'nbdcopy "$uri" "$tmp/out"' -- "$@" </dev/null 2>"$tmp/err"
}
expect_same ()                  # expect_same EXPECTED-FILE WHAT
{
  cmp -s "$tmp/out" "$1" || fail "$2: output differs from $(basename "$1")"
}
expect_message ()               # expect_message TEXT WHAT
{
  grep -qF -- "$1" "$tmp/err" || { cat "$tmp/err" >&2; fail "$2: no '$1' in the messages"; }
}

for chain in ploop-chain ploop-chain-plain; do
  serve file="$IMAGES/$chain/DiskDescriptor.xml"
  expect_same "$IMAGES/$chain/root.hdd.2.expected.raw" "$chain"
  # The deltas alone differ from the chain, so the test above is not
  # passed by serving only the top.
  ! cmp -s "$IMAGES/$chain/root.hdd.2.expected.raw" "$IMAGES/$chain/root.hdd.2.nobacking.expected.raw" ||
    fail "$chain: the top delta alone already equals the chain"

  serve file="$IMAGES/$chain/DiskDescriptor.xml" backing=no
  expect_same "$IMAGES/$chain/root.hdd.2.nobacking.expected.raw" "$chain backing=no"
  expect_message "warning: $IMAGES/$chain/DiskDescriptor.xml: backing=no: serving only the top delta" "$chain backing=no"
done

# A lower delta on its own is just that snapshot... of its own data:
# ploop deltas carry no parent reference, so a delta served directly
# reads its holes as zeros, while the base holds the first snapshot.
serve file="$IMAGES/ploop-chain/root.hdd"
expect_same "$IMAGES/ploop-chain/root.hdd.expected.raw" "base delta"

if serve file="$IMAGES/ploop-chain-loop/DiskDescriptor.xml"; then fail "loop accepted"; fi
expect_message "DiskDescriptor.xml: snapshot chain loops at" "loop"
if serve file="$IMAGES/ploop-chain-missing/DiskDescriptor.xml"; then fail "missing parent accepted"; fi
expect_message "has no Image with that GUID" "missing parent"

for dirty in v1-c64k-dirty v2-c64k-dirty; do
  serve file="$IMAGES/ploop/$dirty.hdd"
  expect_same "$IMAGES/ploop/$dirty.hdd.expected.raw" "$dirty"
  expect_message "warning: $IMAGES/ploop/$dirty.hdd: image is marked in use" "$dirty"
done
for clean in v1-c64k v2-c64k; do
  serve file="$IMAGES/ploop/$clean.hdd"
  ! grep -q warning "$tmp/err" || fail "$clean: unexpected warning: $(cat "$tmp/err")"
done

# qcow2 counterparts from the generator: backing=no and a backing file in
# another directory.
serve file="$IMAGES/qcow2-chain/top.qcow2" backing=no
expect_same "$IMAGES/qcow2-chain/top.qcow2.nobacking.expected.raw" "qcow2 backing=no"
if serve file="$IMAGES/qcow2-xdir/top/top.qcow2"; then fail "qcow2 backing outside the directory accepted"; fi
expect_message "is outside the image's directory" "qcow2-xdir"
serve file="$IMAGES/qcow2-xdir/top/top.qcow2" backing=yes
expect_same "$IMAGES/qcow2-xdir/top/top.qcow2.expected.raw" "qcow2-xdir backing=yes"
echo "PASS: chains, backing=no, broken descriptors, in-use flag"
