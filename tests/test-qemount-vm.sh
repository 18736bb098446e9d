#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# qemount mount --via vm and qemount extract, through the helper VM:
# a few filesystems (the full list is scripts/vm-matrix) in raw, qcow2
# and ploop images, each mounted and compared file by file with the tree
# that went in, extracted to tar and compared again; a write through the
# overlay; a filesystem the guest refuses; and nothing left behind.
source ./tests/qemount-functions.sh
source ./tests/vm-functions.sh
requires_guest

vm_tree "$tmp/tree"
# Owners, a mode, an mtime, an xattr and an ACL for extract to keep;
# without them (not root, or $tmp takes no xattrs) those checks are not
# run, and each "ok" line says so.
attrs_why=$(vm_tree_attrs "$tmp/tree") || echo "# metadata checks not run: $attrs_why"
vm_tree_plain "$tmp/tree" "$tmp/plain"
vm_manifest "$tmp/tree" > "$tmp/tree.manifest"
vm_manifest "$tmp/plain" > "$tmp/plain.manifest"
mnt="$tmp/mnt"
mkdir "$mnt" "$tmp/x"

# check FS FORMAT: make, mount via the VM, compare, umount, extract,
# compare.
check ()
{
  local fs=$1 format=$2 img="$tmp/$1.img" ref="$tmp/tree" why pids
  vm_plain "$fs" && ref="$tmp/plain"
  why=$(vm_make_fs "$fs" "$ref" "$img") || { echo "skip $fs: $why"; return 0; }
  case "$format" in
    qcow2) qemu-img convert -O qcow2 "$img" "$tmp/$fs.qcow2"; img="$tmp/$fs.qcow2" ;;
    ploop) qemu-img convert -O parallels "$img" "$tmp/$fs.hdd"; img="$tmp/$fs.hdd" ;;
  esac

  qemount mount "$img" "$mnt" --via vm || fail "$fs ($format): mount failed"
  findmnt -n -o FSTYPE "$mnt" | grep -qx fuse.sshfs ||
    fail "$fs: $mnt is not an sshfs mount"
  vm_manifest "$mnt" > "$tmp/got.manifest"
  diff -u "$ref.manifest" "$tmp/got.manifest" ||
    fail "$fs ($format): the files differ from what went in"
  [ "$(stat -c %u "$mnt/hello.txt")" = "$(id -u)" ] ||
    fail "$fs: files are not owned by the invoking user"
  touch "$mnt/new" 2>/dev/null && fail "$fs: a read-only mount took a write"
  qemount list | grep -qF "$mnt  $img" || fail "qemount list does not show $mnt"
  pids=$(pgrep -f -- "$QEMOUNT_RUNTIME_DIR" | tr '\n' ' ')
  qemount umount "$mnt" || fail "$fs: umount failed"
  vm_assert_clean "$mnt" $pids

  qemount extract "$img" -o "$tmp/$fs.tar" || fail "$fs: extract failed"
  ls "$tmp" | grep -q "^$fs\.tar\.tmp" && fail "$fs: extract left a temporary file"
  vm_unpack "$tmp/$fs.tar" "$tmp/x" || fail "$fs: the tar does not unpack"
  vm_manifest "$tmp/x" > "$tmp/got.manifest"
  diff -u "$ref.manifest" "$tmp/got.manifest" ||
    fail "$fs: the extracted files differ from what went in"
  if ! vm_plain "$fs" && [ "$fs" != iso9660 ]; then
    tar -tvf "$tmp/$fs.tar" | grep -q '^h.*hardlink-numbers.txt\|^h.*numbers.txt link to' ||
      fail "$fs: the tar has no hard link"
  fi
  check_metadata "$fs" "$format"
  vm_assert_clean
  echo "ok $fs ($format)${attrs_why:+ (metadata not checked)}"
}

# check_metadata FS FORMAT: the unpacked extract in $tmp/x keeps the
# owners, mode, mtime, xattr, ACL and hard link that FS holds; for ext4
# also read straight from the tar's listing.
check_metadata ()
{
  local fs=$1 format=$2 kept k
  [ -z "$attrs_why" ] || return 0
  kept=$(vm_kept "$tmp/x")
  for k in $(vm_keeps "$fs"); do
    [[ " $kept " = *" $k "* ]] ||
      fail "$fs ($format): the extract lost the $k (kept: ${kept:-nothing})"
  done
  [ "$fs" = ext4 ] || return 0
  TZ=UTC tar --xattrs --acls --numeric-owner --full-time -tvvf "$tmp/$fs.tar" \
    > "$tmp/list" || fail "ext4: cannot list the tar"
  grep -A 2 -E '^-rw-r-----[*+]? +1234/5678 +25 2001-02-03 04:05:06 \./hello\.txt$' \
    "$tmp/list" | grep -qx '  x: *5 user\.qemount' ||
    fail "ext4: the tar lacks hello.txt as 1234/5678, 0640, 2001-02-03 04:05:06 with user.qemount"
  grep -A 2 -E ' \./random\.bin$' "$tmp/list" | grep -q '^  a: .*user:1234:r--' ||
    fail "ext4: the tar lacks random.bin's ACL user:1234:r--"
  grep -qE '^h.* \./(hardlink-numbers|nested/deeper/numbers)\.txt link to ' "$tmp/list" ||
    fail "ext4: the tar stores no hard link"
}

check ext4 raw
check vfat qcow2
check iso9660 ploop
check squashfs raw
check ntfs raw

# extract --path, to standard output.
qemount extract "$tmp/ext4.img" --path /nested/deeper --path "/name with spaces.txt" \
  -o - > "$tmp/part.tar" || fail "extract --path failed"
tar -tf "$tmp/part.tar" | sort > "$tmp/part.list"
printf '%s\n' "./name with spaces.txt" ./nested/deeper/ ./nested/deeper/numbers.txt |
  diff -u - "$tmp/part.list" || fail "extract --path: wrong members"
expect 1 "no such path" qemount extract "$tmp/ext4.img" --path /nope -o "$tmp/none.tar"
ls "$tmp" | grep -q '^none\.tar' && fail "a failed extract left a file"
vm_assert_clean

# --rw writes go to the overlay, not the image.
sum=$(sha256sum < "$tmp/ext4.img")
qemount mount "$tmp/ext4.img" "$mnt" --via vm --rw --overlay "$tmp/ext4.ovl" ||
  fail "--rw mount failed"
echo "written in the VM" > "$mnt/new.txt" || fail "cannot write through the VM"
qemount umount "$mnt" || fail "umount after --rw failed"
[ "$(sha256sum < "$tmp/ext4.img")" = "$sum" ] || fail "--rw changed the image"
qemount mount "$tmp/ext4.img" "$mnt" --via vm --rw --overlay "$tmp/ext4.ovl" ||
  fail "mount with the overlay again failed"
[ "$(cat "$mnt/new.txt")" = "written in the VM" ] || fail "the write is not in the overlay"
qemount umount "$mnt"
vm_assert_clean "$mnt"

# A filesystem the guest refuses: a clear error within seconds, nothing
# left.
head -c 16M /dev/zero > "$tmp/zero.img"
start=$(date +%s)
expect 12 "refused to mount xfs" qemount mount "$tmp/zero.img" "$mnt" --via vm --fstype xfs
[ $(( $(date +%s) - start )) -lt 20 ] || fail "the refusal took $(( $(date +%s) - start )) s"
vm_assert_clean "$mnt"
