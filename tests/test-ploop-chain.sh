#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# ploop snapshot chains and the options around them: backing=no serves
# the top delta alone, descriptors are recognised in every form XML
# allows, broken descriptors are refused, the in-use flag warns.  (The merged content of good chains is checked by
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

# The chain's descriptor in every form XML allows (gen-test-images
# writes them) is the same chain, probed and with format=ploop, through
# nbdkit and through the image layer alone, and qemount info calls it
# ploop: the descriptor is recognised by its root element wherever that
# starts.
expected="$IMAGES/ploop-chain/root.hdd.2.expected.raw"
root_offset () { grep -abo '<Parallels_disk_image' "$1" | cut -d: -f1; }
[ "$(root_offset "$IMAGES/ploop-chain/DiskDescriptor-decl-64.xml")" -gt 64 ] ||
  fail "DiskDescriptor-decl-64.xml: the root element starts within 64 bytes"
for form in comment decl-4096; do
  [ "$(root_offset "$IMAGES/ploop-chain/DiskDescriptor-$form.xml")" -gt 4096 ] ||
    fail "DiskDescriptor-$form.xml: the root element starts within 4096 bytes"
done
for form in standalone comment bom crlf decl-64 decl-4096 mixed; do
  xml="$IMAGES/ploop-chain/DiskDescriptor-$form.xml"
  for format in auto ploop; do
    serve file="$xml" format=$format || { cat "$tmp/err" >&2; fail "$form format=$format: refused"; }
    expect_same "$expected" "$form format=$format"
    qemount_read -f $format "$xml" >"$tmp/out" 2>"$tmp/err" ||
      { cat "$tmp/err" >&2; fail "qemount-read $form -f $format: refused"; }
    expect_same "$expected" "qemount-read $form -f $format"
  done
  "$top_builddir/server/qemount" info "$xml" >"$tmp/info" 2>"$tmp/err" ||
    { cat "$tmp/err" >&2; fail "qemount info $form: failed"; }
  grep -Eq '^format: +ploop ' "$tmp/info" ||
    { cat "$tmp/info" >&2; fail "qemount info $form: not shown as ploop"; }
done

# XML that is not a descriptor, and a descriptor too large to be one:
# probed, the file's own bytes (raw); with format=ploop, refused saying why.
printf '<?xml version="1.0"?>\n<Storage><Image><File>root.hdd</File></Image></Storage>\n' \
  > "$tmp/other.xml"
{ printf '<Parallels_disk_image>'; head -c 1048576 /dev/zero | tr '\0' ' '
  printf '</Parallels_disk_image>\n'; } > "$tmp/big.xml"
for case in "other.xml|not a ploop DiskDescriptor.xml (root element is <Storage>, not Parallels_disk_image)" \
            "big.xml|descriptor is larger than 1048576 bytes"; do
  name=${case%%|*} message=${case#*|}
  serve file="$tmp/$name"
  expect_same "$tmp/$name" "$name probed"
  if serve file="$tmp/$name" format=ploop; then fail "$name format=ploop: accepted"; fi
  expect_message "$tmp/$name: $message" "$name format=ploop"
  if qemount_read -f ploop "$tmp/$name" >/dev/null 2>"$tmp/err"; then
    fail "qemount-read $name -f ploop: accepted"
  fi
  expect_message "$tmp/$name: $message" "qemount-read $name -f ploop"
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
echo "PASS: chains, backing=no, descriptor forms, broken descriptors, in-use flag"
