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
    # The images QEMU reads as we do, and its name for their format: not
    # ploop DiskDescriptor.xml chains (v1 and v2 deltas it reads alike),
    # of VHD and VDI only those in vhd/ and vdi/, and VMDK but for the
    # descriptor with extents QEMU does not read (see
    # scripts/gen-test-images).
    qemu_format=""
    case "$format:$image" in
      *:*.xml) ;;
      qcow2:*|raw:*) qemu_format=$format ;;
      ploop:*) qemu_format=parallels ;;
      vhd:vhd/*) qemu_format=vpc ;;
      vdi:vdi/*) qemu_format=vdi ;;
      vmdk:vmdk/multi.vmdk) ;;         # QEMU skips its ZERO and RDONLY extents
      vmdk:*) qemu_format=vmdk ;;
    esac
    if [ -n "$qemu_format" ]; then
      qemu_map="$tmp/map.json"
      qemu-img map -U -f "$qemu_format" --output=json "$IMAGES/$image" >"$qemu_map"
      compared=$((compared + 1))
    fi
  fi
  qemount_nbdkit -r --run "$PYTHON $top_srcdir/tests/nbd-check.py extents \"\$uri\" \"\$expected\" \${qemu_map:+--qemu-map \"\$qemu_map\"}" -- \
    file="$IMAGES/$image" </dev/null ||
    fail "$image ($format): extents are wrong"
done < <(images_manifest)
[ "$compared" -gt 0 ] || fail "no image was compared with qemu-img map"
