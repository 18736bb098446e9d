#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# build-guest where the apfs module cannot be built (its headers package
# does not exist): the guest is built all the same, and its info says
# why there is no APFS.  A stand-in kernel package (a tiny ELF in an XZ
# stream, a module) and apfs-dkms package in a private cache keep it to
# seconds and off the network.
source ./tests/functions.sh
requires apt-cache
requires dpkg-deb
requires xz
pkg=$(apt-cache depends "linux-image-$(dpkg --print-architecture)" 2> /dev/null |
      sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
[ -n "$pkg" ] || skip "apt-cache does not know the kernel package (apt-get update?)"

# make_deb NAME DIR: DIR as the package NAME, in the cache.
make_deb ()
{
  mkdir -p "$2/DEBIAN"
  printf 'Package: %s\nVersion: 0\nArchitecture: all\nMaintainer: qemount tests <none@example.org>\nDescription: stand-in\n' \
    "$1" > "$2/DEBIAN/control"
  dpkg-deb -b -Zxz "$2" "$tmp/cache/${1}_0_all.deb" > /dev/null ||
    fail "dpkg-deb cannot build the stand-in $1"
}
mkdir -p "$tmp/cache" "$tmp/k/boot" "$tmp/k/lib/modules/0.0-stand-in/kernel/fs" "$tmp/src"
{ head -c 64 /dev/zero; printf '\177ELF stand-in kernel' | xz -c; } \
  > "$tmp/k/boot/vmlinuz-0.0-stand-in"
echo 'not a module' > "$tmp/k/lib/modules/0.0-stand-in/kernel/fs/ext4.ko"
make_deb "$pkg" "$tmp/k"
make_deb apfs-dkms "$tmp/src"

QEMOUNT_DEB_CACHE=$tmp/cache QEMOUNT_APFS_HEADERS=qemount-no-such-headers \
  QEMOUNT_SFTP_RELAY=$top_builddir/guests/linux/qemount-sftp-relay \
  QEMOUNT_RESUME=$top_builddir/guests/linux/qemount-resume \
  "$top_srcdir/guests/linux/build-guest" "$tmp/guest" 2> "$tmp/err" || {
  cat "$tmp/err" >&2
  fail "build-guest failed without the apfs module's headers"
}
[ -s "$tmp/guest/initrd" ] && [ -s "$tmp/guest/vmlinux" ] ||
  fail "build-guest made no initrd or vmlinux"
cat "$tmp/guest/info"
grep -qx 'filesystems ext2 ext3 ext4' "$tmp/guest/info" ||
  fail "info does not list the stand-in's filesystems (and only them)"
grep -qx 'unavailable apfs: apt-get download qemount-no-such-headers failed' \
  "$tmp/guest/info" || fail "info does not say why there is no apfs"
