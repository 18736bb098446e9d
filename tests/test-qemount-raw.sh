#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# qemount mount --raw: the disk (or one partition) as the plain file
# DIR/disk, byte for byte what the image holds; one file per stream for
# a qsnap with a memory stream; --uid/--gid; umount leaves DIR empty and
# nothing behind.  Without root: --raw works (where FUSE lets users in)
# and the kernel path says what it would need.
source ./tests/qemount-functions.sh
[ -c /dev/fuse ] || skip "no /dev/fuse"
requires nbdfuse
requires nbdkit
make_images mbr-only
convert_images mbr
mnt="$tmp/mnt"
mkdir "$mnt"

# raw_mount IMAGE EXPECTED [OPTIONS...]
raw_mount ()
{
  local image=$1 expected=$2 pids
  shift 2
  qemount mount --raw "$image" "$mnt" "$@" ||
    fail "$(basename "$image") --raw $*: mount failed"
  [ "$(ls "$mnt")" = disk ] || fail "--raw: $mnt holds $(ls "$mnt")"
  cmp "$mnt/disk" "$expected" ||
    fail "$(basename "$image") --raw $*: DIR/disk differs from the expected raw disk"
  pids=$(mount_pids "$mnt")
  qemount umount "$mnt" || fail "--raw umount failed"
  [ -z "$(ls -A "$mnt")" ] || fail "--raw: $mnt is not empty after umount"
  assert_clean "$mnt" $pids
}

for ext in img qcow2 hdd; do
  raw_mount "$tmp/mbr.$ext" "$tmp/mbr.img"
done
# Partition 5 (logical) alone: 40 MiB from 6 MiB on.
dd if="$tmp/mbr.img" of="$tmp/p5.raw" bs=1M skip=6 count=40 status=none
raw_mount "$tmp/mbr.qcow2" "$tmp/p5.raw" --partition 5

# --partition N serves exactly the range libblkid found (qemount info's
# start and size): the state records it, nbdkit's offset filter is given
# it, and DIR/disk is those bytes of the image.  MBR and GPT, first and
# later partitions; the GPT partitions hold random bytes, so a range off
# by any amount differs.
truncate -s 8M "$tmp/gpt.img"
head -c 8M /dev/urandom | dd of="$tmp/gpt.img" conv=notrunc status=none
sfdisk -q "$tmp/gpt.img" <<EOF2
label: gpt
start=2048, size=2048, type=linux
start=4096, size=3072, type=linux
start=8192, size=6144, type=linux
EOF2
# check_range IMAGE RAW N: RAW is IMAGE as a raw disk.
check_range ()
{
  local image=$1 raw=$2 n=$3 start size state pid cmd
  start=$(qemount info --json "$image" | jq ".partitions[] | select(.number == $n) | .start")
  size=$(qemount info --json "$image" | jq ".partitions[] | select(.number == $n) | .size")
  [ -n "$start" ] && [ -n "$size" ] || fail "$image: no partition $n in qemount info"
  qemount mount --raw "$image" "$mnt" --partition "$n" ||
    fail "$(basename "$image") --partition $n: mount failed"
  state=$(qemount list --json | jq -r --arg d "$mnt" '.[] | select(.mountpoint == $d) | .state_dir')
  grep -qx "partition_start=$start" "$state/state" &&
    grep -qx "partition_size=$size" "$state/state" ||
    fail "$(basename "$image") --partition $n: the state does not record start $start and size $size: $(cat "$state/state")"
  pid=$(qemount list --json | jq -r --arg d "$mnt" '.[] | select(.mountpoint == $d) | .nbdkit_pid')
  cmd=" $(tr '\0' ' ' < "/proc/$pid/cmdline")"
  case "$cmd" in
    *" --filter=offset "*" offset=$start range=$size "*) ;;
    *) fail "$(basename "$image") --partition $n: nbdkit runs as:$cmd" ;;
  esac
  dd if="$raw" of="$tmp/part.raw" bs=512 skip=$((start / 512)) \
    count=$((size / 512)) status=none
  cmp "$mnt/disk" "$tmp/part.raw" ||
    fail "$(basename "$image") --partition $n: DIR/disk is not bytes $start to $((start + size)) of the image"
  qemount umount "$mnt" || fail "umount failed"
  assert_clean "$mnt" "$pid"
}
check_range "$tmp/mbr.img" "$tmp/mbr.img" 1
check_range "$tmp/mbr.qcow2" "$tmp/mbr.img" 5
check_range "$tmp/gpt.img" "$tmp/gpt.img" 1
check_range "$tmp/gpt.img" "$tmp/gpt.img" 3

# --uid/--gid: the file belongs to them.
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
  qemount mount --raw --uid nobody --gid "$(id -g nobody)" "$tmp/mbr.img" "$mnt"
  [ "$(stat -c %u:%g "$mnt/disk")" = "$(id -u nobody):$(id -g nobody)" ] ||
    fail "--uid/--gid: DIR/disk belongs to $(stat -c %u:%g "$mnt/disk")"
  qemount umount "$mnt"
  assert_clean "$mnt"
fi

# A qsnap with a memory stream: DIR/disk and DIR/memory.
if /usr/bin/python3 -c "import lz4.block, xxhash, zstandard" 2>/dev/null; then
  head -c 3M /dev/urandom > "$tmp/memory.raw"
  /usr/bin/python3 "$top_srcdir/tests/mkqsnap.py" "$tmp/snap.qsnap" \
    --stream disk="$tmp/mbr.img" --stream memory="$tmp/memory.raw"
  qemount mount --raw "$tmp/snap.qsnap" "$mnt"
  [ "$(ls "$mnt" | tr '\n' ' ')" = "disk memory " ] ||
    fail "qsnap --raw: $mnt holds $(ls "$mnt")"
  cmp "$mnt/disk" "$tmp/mbr.img" || fail "qsnap --raw: DIR/disk differs"
  cmp "$mnt/memory" "$tmp/memory.raw" || fail "qsnap --raw: DIR/memory differs"
  pids=$(mount_pids "$mnt")
  qemount umount "$mnt"
  [ -z "$(ls -A "$mnt")" ] || fail "qsnap --raw: $mnt is not empty after umount"
  assert_clean "$mnt" $pids
else
  echo "SKIP (one case): python3 lz4/xxhash/zstandard missing: no qsnap to make"
fi

# Without root, and without the helper VM (test-qemount-vm.sh has it).
export QEMOUNT_GUEST_DIR="$tmp/no-guest"
requires_nobody
mkdir -m 0777 "$tmp/nmnt"
cp "$tmp/mbr.img" "$tmp/pub.img"
chmod 644 "$tmp/pub.img"
expect 13 "mounting through the host kernel needs root; without root that needs the helper VM, which is not built (qemount guest build; --raw works without root)" \
  as_nobody "$QEMOUNT" mount "$tmp/pub.img" "$tmp/nmnt"
expect 14 "--via kernel: mounting through the host kernel needs root" \
  as_nobody "$QEMOUNT" mount --via kernel "$tmp/pub.img" "$tmp/nmnt"
if ! as_nobody test -r /dev/fuse -a -w /dev/fuse; then
  echo "SKIP (one case): /dev/fuse is $(stat -c %A /dev/fuse) here: FUSE is for root only, so --raw cannot work without root"
else
  mkdir -m 0700 "$tmp/run-nobody"
  chown nobody "$tmp/run-nobody" "$tmp/nmnt"
  as_nobody "$QEMOUNT" mount --raw "$tmp/pub.img" "$tmp/nmnt" || fail "--raw as nobody failed"
  # FUSE lets only the mounting user in (no allow_other): compare as nobody.
  as_nobody cmp "$tmp/nmnt/disk" "$tmp/pub.img" || fail "--raw as nobody: DIR/disk differs"
  as_nobody "$QEMOUNT" umount "$tmp/nmnt" || fail "--raw umount as nobody failed"
  [ -z "$(ls -A "$tmp/nmnt")" ] || fail "--raw as nobody: DIR not empty after umount"
  [ -z "$(ls -A "$tmp/run-nobody")" ] || fail "--raw as nobody: state left"
fi
echo "PASS: --raw for raw, qcow2, ploop, a partition (the range libblkid found), qsnap streams, --uid/--gid"
