#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# qemount info: every documented field of --json, checked with jq against
# what built the images (sizes, sfdisk's partition table, the mkfs
# labels), for raw, qcow2, ploop, a qcow2 chain and a dirty ploop; the
# human output; the failure classes; --help and --version.
source ./tests/qemount-functions.sh
requires jq
make_images
convert_images mbr gpt

# json IMAGE FILTER: jq -e FILTER on qemount info --json IMAGE.
json ()
{
  qemount info --json "$1" > "$tmp/info.json" 2>"$tmp/info.err" ||
    { cat "$tmp/info.err" >&2; fail "info --json $1 failed"; }
  jq -e "$2" "$tmp/info.json" >/dev/null ||
    { cat "$tmp/info.json" >&2; fail "$(basename "$1"): not true: $2"; }
}

# The fields every image has, with their types.
for image in "$tmp"/{mbr,gpt}.{img,qcow2,hdd} "$tmp/whole.img"; do
  json "$image" '(.image | type == "string") and (.format | type == "string")
    and (.subformat | type == "string" or type == "null")
    and (.version | type == "number" or type == "null")
    and (.virtual_size | type == "number") and (.block_size | type == "number")
    and (.allocated_bytes | type == "number") and (.dirty | type == "boolean")
    and (.streams | type == "array")
    and (.chain | type == "array" and length >= 1)
    and (.chain[] | (.path, .format | type == "string")
         and (.virtual_size, .block_size, .allocated_bytes | type == "number")
         and (.dirty | type == "boolean"))
    and (.partition_table | type == "string" or type == "null")
    and (.partition_table_id | type == "string" or type == "null")
    and (.filesystem | type == "object" or type == "null")
    and (.partitions | type == "array")
    and all(.partitions[]; (.number, .start, .size | type == "number")
         and (.type | type == "string") and (.extended, .logical | type == "boolean")
         and (.filesystem | type == "object" or type == "null"))'
  json "$image" ".image == \"$image\" and .chain[0].path == \"$image\""
done

# Format, version, sizes.
size=$(stat -c %s "$tmp/mbr.img")
json "$tmp/mbr.img" ".format == \"raw\" and .version == null and .virtual_size == $size
  and .dirty == false and (.chain | length) == 1 and .allocated_bytes > 0
  and .allocated_bytes <= $size"
json "$tmp/mbr.qcow2" ".format == \"qcow2\" and .version == 3 and .virtual_size == $size
  and .block_size == 65536 and .allocated_bytes > 0"
json "$tmp/mbr.hdd" ".format == \"ploop\" and .version == 2 and .virtual_size == $size"

# Partitions as sfdisk wrote them, filesystems as mkfs made them.
for image in mbr gpt; do
  sfdisk --json "$tmp/$image.img" |
    jq -c '[.partitiontable.partitions[] | {start: (.start * 512), size: (.size * 512)}]' \
    > "$tmp/want"
  for ext in img qcow2 hdd; do
    qemount info --json "$tmp/$image.$ext" |
      jq -c '[.partitions[] | {start, size}]' > "$tmp/got"
    cmp -s "$tmp/want" "$tmp/got" ||
      fail "$image.$ext: partitions $(cat "$tmp/got"), sfdisk says $(cat "$tmp/want")"
  done
done
json "$tmp/mbr.qcow2" '.partition_table == "dos" and .filesystem == null
  and [.partitions[].number] == [1, 2, 5]
  and .partitions[0].type == "0x82" and .partitions[0].filesystem.type == "swap"
  and .partitions[0].filesystem.usage == "other"
  and .partitions[1].extended and .partitions[1].filesystem == null
  and .partitions[2].logical and .partitions[2].type_name == "Linux"
  and .partitions[2].filesystem.type == "ext4"
  and .partitions[2].filesystem.usage == "filesystem"
  and .partitions[2].filesystem.label == "logical"'
json "$tmp/gpt.hdd" '.partition_table == "gpt" and (.partition_table_id | length) == 36
  and [.partitions[].filesystem.type] == ["ext2", "xfs", "btrfs"]
  and [.partitions[].filesystem.label] == ["ext2fs", "xfsfs", "btrfsfs"]
  and [.partitions[].name] == ["ext2part", "xfspart", "btrfspart"]
  and all(.partitions[]; .type == "0fc63daf-8483-4772-8e79-3d69d8477de4"
                         and .type_name == "Linux filesystem")'
json "$tmp/whole.img" '.partition_table == null and .partitions == []
  and .filesystem.type == "ext4" and .filesystem.label == "whole"
  and (.filesystem.uuid | length) == 36'

# A chain: the top layer allocates little, the chain lists both.
qemu-img create -q -f qcow2 -b mbr.qcow2 -F qcow2 "$tmp/top.qcow2"
json "$tmp/top.qcow2" "(.chain | length) == 2 and .chain[1].path == \"$tmp/mbr.qcow2\"
  and .chain[1].format == \"qcow2\" and .allocated_bytes == 0
  and .chain[1].allocated_bytes > 0 and .partitions[2].filesystem.type == \"ext4\""

# The dirty flag, from the generated test images.
if [ -s "$IMAGES/MANIFEST" ]; then
  json "$IMAGES/ploop/v2-c64k-dirty.hdd" '.dirty == true and .chain[0].dirty == true'
  json "$IMAGES/ploop/v2-c64k.hdd" '.dirty == false'
else
  echo "SKIP (one case): no generated test images in $IMAGES for the dirty flag"
fi

# A qsnap with two streams: the disk is the one shown.
if /usr/bin/python3 -c "import lz4.block, xxhash, zstandard" 2>/dev/null; then
  head -c 1M /dev/urandom > "$tmp/memory.raw"
  /usr/bin/python3 "$top_srcdir/tests/mkqsnap.py" "$tmp/snap.qsnap" \
    --stream disk="$tmp/mbr.img" --stream memory="$tmp/memory.raw"
  json "$tmp/snap.qsnap" '.format == "qsnap" and .streams == ["disk", "memory"]
    and .partitions[2].filesystem.label == "logical"'
  qemount info "$tmp/snap.qsnap" | grep -qE '^streams: +disk \(shown here\), memory$' ||
    fail "info does not show the streams"
else
  echo "SKIP (one case): python3 lz4/xxhash/zstandard missing: no qsnap to make"
fi
json "$tmp/mbr.qcow2" '.streams == []'

# The human output: aligned "label: value" lines and a partition table.
qemount info "$tmp/gpt.qcow2" > "$tmp/human" || fail "info failed"
for line in "^image: +$tmp/gpt.qcow2\$" "^format: +qcow2 \\(version 3\\)\$" \
            "^virtual size: +450 MiB \\(471859200 bytes\\)\$" \
            "^cluster size: +64 KiB \\(65536 bytes\\)\$" "^allocated: +" \
            "^dirty: +no\$" "^chain: +1 image\$" "^partition table: +gpt \\(id " \
            "^ +2 +17 MiB +300 MiB +Linux filesystem +xfs +xfsfs\$"; do
  grep -qE "$line" "$tmp/human" || { cat "$tmp/human"; fail "no line like '$line'"; }
done
[ "$(grep -E '^[a-z ]+: ' "$tmp/human" | cut -c18 | sort -u)" = " " ] ||
  { cat "$tmp/human"; fail "the values are not aligned"; }

# Failures.
expect 3 "$tmp/missing: No such file or directory" qemount info "$tmp/missing"
printf 'QED\0' > "$tmp/fake.qed"
expect 5 "unknown format: the file is a QED image" qemount info "$tmp/fake.qed"
expect 5 "unknown format 'qed'" qemount info --format qed "$tmp/mbr.img"
qemount info --format raw "$tmp/fake.qed" >/dev/null || fail "--format raw refused"
# The subformat, in the words of the tools that write it: QEMU's
# subformat options here (a variant a format does not have is null).
while read -r format options subformat line; do
  qemu-img create -q -f "$format" -o "$options" "$tmp/sub.$format" 8M
  json "$tmp/sub.$format" ".subformat == $subformat"
  qemount info "$tmp/sub.$format" | grep -qx "format: *$line" ||
    fail "$format $options: the human output does not say 'format: $line'"
done <<'EOF'
vpc subformat=fixed "fixed" vhd fixed
vpc subformat=dynamic "dynamic" vhd dynamic
vdi static=on "static" vdi static
vdi static=off "dynamic" vdi dynamic
vhdx subformat=fixed "fixed" vhdx fixed (version 1)
vhdx subformat=dynamic "dynamic" vhdx dynamic (version 1)
qcow2 compat=1.1 null qcow2 (version 3)
vmdk subformat=monolithicSparse "monolithicSparse" vmdk monolithicSparse (version 1)
vmdk subformat=streamOptimized "streamOptimized" vmdk streamOptimized (version 3)
vmdk subformat=twoGbMaxExtentFlat "twoGbMaxExtentFlat" vmdk twoGbMaxExtentFlat
EOF

printf 'QFI\373\0\0\0\3' > "$tmp/bad.qcow2"
truncate -s 64K "$tmp/bad.qcow2"
expect 6 "bad.qcow2" qemount info "$tmp/bad.qcow2"
expect 2 "usage: qemount info" qemount info
expect 2 "unknown command 'frobnicate'" qemount frobnicate
qemount --version | grep -qE '^qemount [0-9]' || fail "--version"
for cmd in "" info mount umount list; do
  qemount $cmd --help | grep -q "^usage: qemount" || fail "qemount $cmd --help"
done

if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null && id nobody >/dev/null 2>&1; then
  chmod 755 "$tmp"
  cp "$tmp/whole.img" "$tmp/secret.img"
  chmod 600 "$tmp/secret.img"
  expect 4 "$tmp/secret.img: Permission denied" as_nobody "$QEMOUNT" info "$tmp/secret.img"
else
  echo "SKIP (one case): no root and setpriv to read as another user"
fi
# A FAT-like boot sector ends in an MBR's 0x55AA: an exFAT (or FAT, NTFS)
# filesystem on the whole disk is that filesystem, not an empty table.
if command -v mkfs.exfat >/dev/null; then
  truncate -s 32M "$tmp/exfat.img"
  mkfs.exfat "$tmp/exfat.img" >/dev/null
  qemount info --json "$tmp/exfat.img" > "$tmp/exfat.json"
  jq -e '.partition_table == null and .filesystem.type == "exfat"' "$tmp/exfat.json" >/dev/null ||
    { cat "$tmp/exfat.json" >&2; fail "whole-disk exfat not recognized"; }
else
  echo "SKIP (one case): mkfs.exfat (exfatprogs) is not installed"
fi
echo "PASS: qemount info fields, human output, failures"
