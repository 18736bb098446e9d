#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Every test image, decoded through nbdkit and a real NBD client
# (nbdcopy) and through the image layer alone, equals its raw source.
source ./tests/functions.sh
requires nbdkit
requires nbdcopy

export out="$tmp/out"
count=0
while read -r image format expected; do
  want=$(sha256sum < "$IMAGES/$expected")
  rm -f "$tmp/out"

  qemount_nbdkit -r --run 'nbdcopy "$uri" "$out"' -- \
    file="$IMAGES/$image" 2>"$tmp/err" </dev/null ||
    { cat "$tmp/err" >&2; fail "$image: nbdkit/nbdcopy failed"; }
  got=$(sha256sum < "$tmp/out")
  [ "$got" = "$want" ] || fail "$image ($format): nbdcopy output differs from $expected"

  qemount_read "$IMAGES/$image" >"$tmp/out" 2>"$tmp/err" ||
    { cat "$tmp/err" >&2; fail "$image: qemount-read failed"; }
  got=$(sha256sum < "$tmp/out")
  [ "$got" = "$want" ] || fail "$image ($format): qemount-read output differs from $expected"

  count=$((count + 1))
done < <(images_manifest)

[ "$count" -gt 0 ] || fail "no images in the manifest"
echo "PASS: $count images decode to their raw source"
