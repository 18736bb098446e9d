#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Extents (base:allocation) of every image: they cover the disk, what
# they call zero is zero, and for the formats QEMU reads, the zero flag
# matches "qemu-img map" (an independent reading of the same map).  Where
# qemu-img map cannot tell (it calls all of a VHDX data), the generator
# left IMAGE.map.json in its form, from a reading of its own.
source ./tests/functions.sh
requires nbdkit
requires qemu-img
$PYTHON -c 'import nbd' 2>/dev/null || skip "python3-libnbd is not installed"

export expected qemu_map
compared=0
while read -r image format expected; do
  expected="$IMAGES/$expected"
  qemu_map=""
  if [ -f "$IMAGES/$image.map.json" ]; then
    qemu_map="$IMAGES/$image.map.json"
    compared=$((compared + 1))
  else
    case "$format" in
      qcow2|ploop|raw)
        # qemu reads v1 and v2 ploop images alike (as "parallels"), but
        # not DiskDescriptor.xml chains.
        case "$image" in *.xml) ;; *)
          qemu_format=$format
          [ "$format" = ploop ] && qemu_format=parallels
          qemu_map="$tmp/map.json"
          qemu-img map -U -f "$qemu_format" --output=json "$IMAGES/$image" >"$qemu_map"
          compared=$((compared + 1))
        esac ;;
      vhd)
        # Only vhd/ holds images QEMU reads as we do (see
        # scripts/gen-test-images).
        case "$image" in vhd/*)
          qemu_map="$tmp/map.json"
          qemu-img map -U -f vpc --output=json "$IMAGES/$image" >"$qemu_map"
          compared=$((compared + 1))
        esac ;;
      vdi)
        # Only vdi/ holds images QEMU reads (see scripts/gen-test-images).
        case "$image" in vdi/*)
          qemu_map="$tmp/map.json"
          qemu-img map -U -f vdi --output=json "$IMAGES/$image" >"$qemu_map"
          compared=$((compared + 1))
        esac ;;
    esac
  fi
  qemount_nbdkit -r --run "$PYTHON $top_srcdir/tests/nbd-check.py extents \"\$uri\" \"\$expected\" \${qemu_map:+--qemu-map \"\$qemu_map\"}" -- \
    file="$IMAGES/$image" </dev/null ||
    fail "$image ($format): extents are wrong"
done < <(images_manifest)
[ "$compared" -gt 0 ] || fail "no image was compared with qemu-img map"
