#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Containers through the helper VM: LVM with two logical volumes (qcow2),
# one member of an md RAID1 mirror (ploop), LUKS2 (raw) and LVM inside
# LUKS (raw), each mounted with qemount mount and compared file by file
# with the tree that went in, or extracted to tar and compared; the
# choice of logical volume and its errors; the passphrase from a file,
# from standard input, wrong, or missing; never on a command line; a
# write through LVM on LUKS into the overlay; nothing left behind.
# The images are made without the host's device-mapper or md
# (tests/vm-containers.sh).  A dozen boots of the guest.
source ./tests/qemount-functions.sh
source ./tests/vm-functions.sh
source ./tests/vm-containers.sh
requires mkfs.ext4
requires_guest
"$QEMOUNT" guest info | grep -q '^containers lvm md luks$' ||
  skip "the helper VM opens no containers: $("$QEMOUNT" guest info | grep containers)"

vm_tree "$tmp/tree"
vm_manifest "$tmp/tree" > "$tmp/tree.manifest"
vm_make_fs ext4 "$tmp/tree" "$tmp/fs.ext4" >/dev/null || fail "cannot make ext4"
# Another filesystem for the first logical volume: mounting the wrong
# one shows.
mkdir "$tmp/other"
echo "the other volume" > "$tmp/other/other.txt"
truncate -s 8M "$tmp/other.ext4"
mkfs.ext4 -q -F -d "$tmp/other" "$tmp/other.ext4"
mnt="$tmp/mnt"
mkdir "$mnt"

# compare DIR WHAT: DIR holds the tree.
compare ()
{
  vm_manifest "$1" > "$tmp/got.manifest"
  diff -u "$tmp/tree.manifest" "$tmp/got.manifest" ||
    fail "$2: the files differ from what went in"
}

# extract_compare IMAGE WHAT OPTIONS...: extract, unpack, compare.
extract_compare ()
{
  local img=$1 what=$2
  shift 2
  rm -rf "$tmp/x" && mkdir "$tmp/x"
  qemount extract "$img" "$@" -o "$tmp/x.tar" || fail "$what: extract failed"
  tar -C "$tmp/x" -xf "$tmp/x.tar" || fail "$what: the tar does not unpack"
  compare "$tmp/x" "$what (extract)"
  rm -f "$tmp/x.tar"
  vm_assert_clean
}

# LVM: two logical volumes, in qcow2.
if why=$(vm_make_lvm "$tmp/lvm.img" vg0 lv1:"$tmp/other.ext4" lv2:"$tmp/fs.ext4"); then
  qemu-img convert -O qcow2 "$tmp/lvm.img" "$tmp/lvm.qcow2"
  sum=$(sha256sum < "$tmp/lvm.qcow2")
  qemount mount "$tmp/lvm.qcow2" "$mnt" --lv vg0/lv2 || fail "lvm: mount --lv vg0/lv2 failed"
  findmnt -n -o FSTYPE "$mnt" | grep -qx fuse.sshfs || fail "lvm: not mounted through the VM"
  compare "$mnt" "lvm vg0/lv2"
  touch "$mnt/new" 2>/dev/null && fail "lvm: a read-only mount took a write"
  qemount umount "$mnt" || fail "lvm: umount failed"
  vm_assert_clean "$mnt"
  [ "$(sha256sum < "$tmp/lvm.qcow2")" = "$sum" ] || fail "lvm: the image changed"
  extract_compare "$tmp/lvm.qcow2" "lvm vg0/lv2" --lv vg0/lv2
  expect 8 "several logical volumes: vg0/lv1 vg0/lv2; choose one with --lv VG/LV" \
    qemount mount "$tmp/lvm.qcow2" "$mnt"
  vm_assert_clean "$mnt"
  expect 8 "no logical volume vg0/nope; there are: vg0/lv1 vg0/lv2" \
    qemount extract "$tmp/lvm.qcow2" --lv vg0/nope -o "$tmp/none.tar"
  ls "$tmp" | grep -q '^none\.tar' && fail "a failed extract left a file"
  vm_assert_clean
  # No device-mapper on the host: --lv implies the helper VM, and with
  # --via kernel it is a usage error, before anything starts.
  expect 2 "use --via vm" qemount mount "$tmp/lvm.qcow2" "$mnt" --lv vg0/lv2 --via kernel
  expect 2 "--lv vg0/a b: must be VG/LV" qemount mount "$tmp/lvm.qcow2" "$mnt" --lv "vg0/a b"
  vm_assert_clean "$mnt"
  echo "ok lvm (qcow2)"
else
  echo "skip lvm: $why"
fi

# md RAID1: a single member of a two-disk mirror, in ploop.
vm_make_md "$tmp/md.img" "$tmp/fs.ext4" >/dev/null || fail "cannot make the md member"
qemu-img convert -O parallels "$tmp/md.img" "$tmp/md.hdd"
sum=$(sha256sum < "$tmp/md.hdd")
qemount mount "$tmp/md.hdd" "$mnt" || fail "md: mount failed"
compare "$mnt" "md"
qemount umount "$mnt" || fail "md: umount failed"
vm_assert_clean "$mnt"
[ "$(sha256sum < "$tmp/md.hdd")" = "$sum" ] || fail "md: the image changed"
extract_compare "$tmp/md.hdd" "md"
echo "ok md raid1 (ploop)"

# LUKS2, raw.  A passphrase with a space and no newline.
pass="qemount test passphrase $$"
printf '%s' "$pass" > "$tmp/key"
printf '%s' "not $pass" > "$tmp/badkey"
why=$(vm_make_luks "$tmp/luks.img" "$tmp/fs.ext4" "$tmp/key") || fail "cannot make LUKS: $why"
qemount mount "$tmp/luks.img" "$mnt" --key-file "$tmp/key" || fail "luks: mount failed"
compare "$mnt" "luks"
# Nowhere on a command line (QEMU's shows the guest's) or in an
# environment, while it is mounted.
for f in /proc/[0-9]*/cmdline /proc/[0-9]*/environ; do
  { tr '\0' '\n' < "$f"; } 2>/dev/null | grep -qF "$pass" &&
    fail "luks: the passphrase is in $f: $(tr '\0' ' ' < "${f%/*}/cmdline")"
done
pgrep -f -- "$QEMOUNT_RUNTIME_DIR" | grep -qx "$(cat "$QEMOUNT_RUNTIME_DIR"/mount.*/qemu.pid)" ||
  fail "luks: no QEMU to look at"
grep -rlF "$pass" "$QEMOUNT_RUNTIME_DIR" && fail "luks: the passphrase is in a file"
qemount umount "$mnt" || fail "luks: umount failed"
vm_assert_clean "$mnt"
# From standard input.
extract_compare "$tmp/luks.img" "luks, key on stdin" --key-file - < "$tmp/key"
# Wrong: a clear error within seconds, nothing left.
start=$(date +%s)
expect 17 "wrong passphrase for LUKS" qemount mount "$tmp/luks.img" "$mnt" --key-file "$tmp/badkey"
[ $(( $(date +%s) - start )) -lt 30 ] || fail "luks: the refusal took $(( $(date +%s) - start )) s"
vm_assert_clean "$mnt"
# None, and no terminal to ask on: refused before anything starts.
expect 17 "is LUKS-encrypted: give --key-file" qemount mount "$tmp/luks.img" "$mnt" < /dev/null
expect 17 "is LUKS-encrypted: give --key-file" qemount extract "$tmp/luks.img" -o "$tmp/none.tar" < /dev/null
vm_assert_clean "$mnt"
# Typed at the terminal (script(1) makes one), not echoed; the LUKS
# container in the only partition of a GPT disk.
if command -v script >/dev/null && command -v sfdisk >/dev/null; then
  truncate -s $(( $(stat -c %s "$tmp/luks.img") + 2097152 )) "$tmp/gpt.img"
  echo "label: gpt
start=2048, size=$(( $(stat -c %s "$tmp/luks.img") / 512 ))" | sfdisk -q "$tmp/gpt.img"
  dd if="$tmp/luks.img" of="$tmp/gpt.img" bs=512 seek=2048 conv=notrunc,sparse status=none
  { sleep 1; printf '%s\n' "$pass"; } |
    script -qec "$QEMOUNT mount $tmp/gpt.img $mnt" /dev/null > "$tmp/tty.out" ||
    { cat "$tmp/tty.out"; fail "luks: mount with the passphrase typed failed"; }
  grep -q "Passphrase for $tmp/gpt.img: " "$tmp/tty.out" || fail "luks: no prompt"
  grep -qF "$pass" "$tmp/tty.out" && fail "luks: the passphrase was echoed"
  compare "$mnt" "luks in a partition"
  qemount umount "$mnt" || fail "luks: umount failed"
  vm_assert_clean "$mnt"
fi
echo "ok luks (raw)"

# LVM inside LUKS, raw, one logical volume (chosen without --lv):
# written through into the overlay, the image untouched.
if why=$(vm_make_lvm "$tmp/pv.img" vgc root:"$tmp/fs.ext4"); then
  vm_make_luks "$tmp/lvm-luks.img" "$tmp/pv.img" "$tmp/key" >/dev/null ||
    fail "cannot make LUKS around LVM"
  sum=$(sha256sum < "$tmp/lvm-luks.img")
  qemount mount "$tmp/lvm-luks.img" "$mnt" --key-file "$tmp/key" --rw --overlay "$tmp/w.ovl" ||
    fail "lvm in luks: mount --rw failed"
  compare "$mnt" "lvm in luks"
  echo "written in the VM" > "$mnt/new.txt" || fail "lvm in luks: cannot write"
  qemount umount "$mnt" || fail "lvm in luks: umount failed"
  vm_assert_clean "$mnt"
  [ "$(sha256sum < "$tmp/lvm-luks.img")" = "$sum" ] || fail "lvm in luks: --rw changed the image"
  rm -rf "$tmp/x" && mkdir "$tmp/x"
  # The overlay only goes with a mount: read the write back through one.
  qemount mount "$tmp/lvm-luks.img" "$mnt" --key-file - --lv vgc/root --rw \
    --overlay "$tmp/w.ovl" < "$tmp/key" || fail "lvm in luks: mount with the overlay failed"
  [ "$(cat "$mnt/new.txt")" = "written in the VM" ] || fail "lvm in luks: the write is not in the overlay"
  qemount umount "$mnt"
  vm_assert_clean "$mnt"
  echo "ok lvm in luks (raw, --rw)"
else
  echo "skip lvm in luks: $why"
fi
