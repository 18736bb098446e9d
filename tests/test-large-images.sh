#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Images with a virtual size above 4 GiB and data on both sides of 2 GiB
# and 4 GiB (tests/images/LARGE): served with the size QEMU reads, every
# byte equal to QEMU's reading (qemu-img compare against the export,
# which skips what the extents call zero), extents consistent with
# qemu-img map, and random reads.  Kept out of MANIFEST, whose tests
# checksum every byte: these are sparse and cheap only when read that way.
source ./tests/functions.sh
requires nbdkit
requires nbdinfo
requires qemu-img
$PYTHON -c 'import nbd' 2>/dev/null || skip "python3-libnbd is not installed"
[ -s "$IMAGES/LARGE" ] || fail "no large test images: run make check"

export expected qemu_map
n=0
while read -r image format; do
  qemu_format=$format
  [ "$format" = vhd ] && qemu_format=vpc
  expected="$tmp/expected.raw"
  qemu_map="$tmp/map.json"
  rm -f "$expected"
  qemu-img convert -f "$qemu_format" -O raw "$IMAGES/$image" "$expected"
  qemu-img map -f "$qemu_format" --output=json "$IMAGES/$image" >"$qemu_map"
  [ "$(stat -c %s "$expected")" -gt $((4 << 30)) ] ||
    fail "$image: not larger than 4 GiB"

  qemount_nbdkit -r --run '
    size=$(nbdinfo --size "$uri")
    [ "$size" = "$(stat -c %s "$expected")" ] ||
      { echo "size $size, QEMU reads $(stat -c %s "$expected")" >&2; exit 1; }
    qemu-img compare -q -f raw -F raw "$uri" "$expected" &&
    '"$PYTHON $top_srcdir"'/tests/nbd-check.py extents "$uri" "$expected" \
      --qemu-map "$qemu_map" &&
    '"$PYTHON $top_srcdir"'/tests/nbd-check.py reads "$uri" "$expected" \
      --count 50 --conns 2' -- file="$IMAGES/$image" </dev/null ||
    fail "$image ($format): differs from QEMU's reading"
  n=$((n + 1))
done < "$IMAGES/LARGE"
echo "PASS: $n large images read as QEMU reads them"
