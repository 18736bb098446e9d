#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# DMG against second readers: QEMU (zlib images only) and dmg2img (zero,
# raw, ignore, ADC, zlib, bzip2 chunks; not LZMA, and only with the
# trailer at the very end) read scripts/mkdmg.py's images as we do, so
# the generator writes what Apple's readers read.  Also: the trailer
# found behind appended bytes but not beyond the bound, and the
# subformat.  (Every manifest image is
# compared with its raw source by test-decode-all.sh.)
source ./tests/functions.sh
requires qemu-img
requires dmg2img
requires nbdkit
images_manifest >/dev/null
MKDMG="/usr/bin/python3 $top_srcdir/scripts/mkdmg.py"
d="$IMAGES/dmg"

# same_as_qemount WHAT FILE IMAGE: FILE holds what qemount reads in IMAGE.
same_as_qemount ()
{
  qemount_read "$3" > "$tmp/ours" || fail "$1: qemount-read failed"
  cmp "$tmp/ours" "$2" || fail "$1: qemount and the second reader differ"
}

for image in zlib.dmg zlib-tiny.dmg zlib-trailing.dmg; do
  qemu-img convert -f dmg -O raw "$d/$image" "$tmp/qemu.raw" ||
    fail "$image: qemu-img convert failed"
  same_as_qemount "$image (qemu-img)" "$tmp/qemu.raw" "$d/$image"
done

# dmg2img writes the partitions in order, as one disk.
$MKDMG --types zlib,bzip2,adc,raw --chunk-size 65536 --partitions 3 \
  --comments --ignore "$IMAGES/src/small.raw" "$tmp/mixed.dmg"
for image in zlib.dmg zlib-tiny.dmg bzip2.dmg adc.dmg raw.dmg "$tmp/mixed.dmg"; do
  case $image in /*) path=$image ;; *) path=$d/$image ;; esac
  rm -f "$tmp/dmg2img.raw"
  dmg2img -s "$path" "$tmp/dmg2img.raw" >/dev/null 2>"$tmp/err" ||
    { cat "$tmp/err" >&2; fail "$image: dmg2img failed"; }
  same_as_qemount "$image (dmg2img)" "$tmp/dmg2img.raw" "$path"
done

# Probed, and named as hdiutil names it, by the chunk type used most.
if [ -x "$top_builddir/server/qemount" ]; then
  for pair in zlib.dmg:UDZO bzip2.dmg:UDBZ lzma.dmg:ULMO adc.dmg:UDCO raw.dmg:UDRW; do
    image=${pair%%:*} want=${pair#*:}
    "$top_builddir/server/qemount" info --json "$d/$image" > "$tmp/info" 2>&1 ||
      { cat "$tmp/info" >&2; fail "$image: qemount info failed"; }
    grep -q "\"format\": *\"dmg\"" "$tmp/info" || { cat "$tmp/info" >&2; fail "$image: not probed as dmg"; }
    grep -q "\"subformat\": *\"$want\"" "$tmp/info" || { cat "$tmp/info" >&2; fail "$image: subformat is not $want"; }
  done
fi

# The trailer is searched for within the last 8 KiB + 512 bytes: found
# behind 8000 appended bytes, not behind 9000 (then the file is raw).
head -c 2560 "$IMAGES/src/tiny.raw" > "$tmp/tiny.raw"
$MKDMG --types zlib --trailing 8000 "$tmp/tiny.raw" "$tmp/t8000.dmg"
qemount_read "$tmp/t8000.dmg" | cmp - "$tmp/tiny.raw" ||
  fail "trailer 8000 bytes before the end: not read"
$MKDMG --types zlib --trailing 9000 "$tmp/tiny.raw" "$tmp/t9000.dmg"
size=$(qemount_read "$tmp/t9000.dmg" | wc -c)
[ "$size" -eq "$(stat -c %s "$tmp/t9000.dmg")" ] ||
  fail "trailer 9000 bytes before the end: not read as raw"
expect_read_failure "format=dmg on a trailer too far" \
  "no koly trailer in the last 8704 bytes" -f dmg "$tmp/t9000.dmg"

echo "PASS: DMG images agree with qemu-img and dmg2img"
