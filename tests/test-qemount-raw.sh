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
echo "PASS: --raw for raw, qcow2, ploop, a partition, qsnap streams, --uid/--gid"
